// Writecache through the real `dmio serve` (origin and cache are image files): a writer in this
// process writes 4 KiB blocks over NBD and flushes every few batches, recording what each
// completed flush covered; `dmio serve` is killed with SIGKILL mid-run. After a restart every
// block reads back as of the last completed flush (or as a version written after it: a write
// acknowledged after the flush may or may not have reached the cache). Then, with everything
// written back, the origin file alone holds exactly what the stack reads.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { openDevice, type BlockDevice, type TableDevice } from '../src/index.js';
import type { WritecacheTarget } from '../src/stacks/writecache-target.js';
import { startDmioServe } from './helpers/dmio-serve.js';
import { deviceRequest, submitted } from './helpers/requests.js';
import { tempDir } from './helpers/tmp.js';

const MiB = 1024 * 1024;
const BLOCK = 4096;
const BLOCKS = 2048; // 8 MiB of origin written over
const ORIGIN_SECTORS = BLOCKS * 8;

/** A block's bytes for (block, version): both numbers repeated, never all zero. */
function content(blockNumber: number, version: number): Uint8Array {
  const data = new Uint8Array(BLOCK);
  const view = new DataView(data.buffer);
  for (let offset = 0; offset < BLOCK; offset += 8) {
    view.setUint32(offset, blockNumber + 1, true);
    view.setUint32(offset + 4, version, true);
  }
  return data;
}

function versionOf(data: Uint8Array, blockNumber: number): number {
  const view = new DataView(data.buffer, data.byteOffset, data.length);
  if (data.every((byte) => byte === 0)) return 0;
  assert.equal(view.getUint32(0, true), blockNumber + 1, `block ${blockNumber} holds another block's data`);
  const version = view.getUint32(4, true);
  assert.ok(Buffer.from(data).equals(Buffer.from(content(blockNumber, version))), `block ${blockNumber} is torn`);
  return version;
}

/** What the writer knows: versions written per block, and the last completed flush's view. */
interface Journal {
  /** Every version written to each block, in issue order, with the flush count at issue. */
  readonly writes: Map<number, Array<{ version: number; afterFlush: number }>>;
  /** Completed flushes; `durable` is the latest version per block the last one covered. */
  flushes: number;
  durable: Map<number, number>;
}

/** Writes batches of 8 distinct random blocks, flushing every 4 batches, until it fails. */
async function writer(device: BlockDevice, journal: Journal, deadlineMs: number): Promise<void> {
  let version = 0;
  let seed = 0x9e3779b9;
  const random = (): number => { // xorshift32
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    seed >>>= 0;
    return seed;
  };
  const completed = new Map<number, number>();
  for (let batch = 0; performance.now() < deadlineMs; batch += 1) {
    // Eight different blocks: two writes to one block in flight at once may land in either
    // order (NBD orders nothing among concurrent requests), so the model could not say which
    // version a flush covered.
    const blockNumbers = new Set<number>();
    while (blockNumbers.size < 8) blockNumbers.add(random() % BLOCKS);
    const writes = [...blockNumbers].map((blockNumber) => {
      version += 1;
      const entry = { version, afterFlush: journal.flushes };
      const list = journal.writes.get(blockNumber) ?? [];
      list.push(entry);
      journal.writes.set(blockNumber, list);
      return { blockNumber, version };
    });
    const errors = await Promise.all(writes.map(({ blockNumber, version: v }) =>
      submitted(device, deviceRequest('write', blockNumber * 8, 8, [content(blockNumber, v)]))));
    if (errors.some((error) => error !== null)) return;
    for (const { blockNumber, version: v } of writes) {
      if ((completed.get(blockNumber) ?? 0) < v) completed.set(blockNumber, v);
    }
    if (batch % 4 === 3) {
      const covered = new Map(completed);
      if (await submitted(device, deviceRequest('write', 0, 0, [], { preflush: true })) !== null) return;
      journal.flushes += 1;
      journal.durable = covered;
    }
  }
}

test('kill -9 of dmio serve: every block as of the last completed flush; writeback leaves the origin right', async (t) => {
  const dir = await tempDir(t);
  const origin = join(dir, 'origin.img');
  const cache = join(dir, 'cache.img');
  for (const [path, sizeBytes] of [[origin, 16 * MiB], [cache, 2 * MiB]] as const) {
    await writeFile(path, '');
    await truncate(path, sizeBytes);
  }
  const tablePath = join(dir, 'wc.table');
  // Commits only on flush; a low watermark so writeback runs while the writer writes.
  await writeFile(tablePath, `0 ${ORIGIN_SECTORS} writecache s ${origin} ${cache} 4096 ` +
    '8 autocommit_time 3600000 high_watermark 40 low_watermark 20 pause_writeback 0\n');
  const socket = join(dir, 's.sock');
  const served = await startDmioServe([`table:${tablePath}`, '--socket', socket]);
  const journal: Journal = { writes: new Map(), flushes: 0, durable: new Map() };
  const client = await openDevice(served.uri, { requestTimeoutMs: 5000 });
  const writing = writer(client, journal, performance.now() + 10_000);
  await new Promise((resolve) => setTimeout(resolve, 1500));
  assert.equal(await served.stop('SIGKILL'), null);
  await writing;
  await client.close().catch(() => undefined);
  assert.ok(journal.flushes >= 3, `the writer completed flushes before the kill (${journal.flushes})`);
  t.diagnostic(`${journal.flushes} flushes, ${journal.writes.size} blocks written, ` +
    `${journal.durable.size} covered by the last flush`);

  // The killed server left its socket file behind; the restart listens on a new one.
  const again = await startDmioServe([`table:${tablePath}`, '--socket', join(dir, 's2.sock')]);
  const reader = await openDevice(again.uri);
  const seen = new Map<number, number>();
  try {
    const data = new Uint8Array(BLOCKS * BLOCK);
    assert.equal(await submitted(reader, deviceRequest('read', 0, ORIGIN_SECTORS, [data])), null);
    for (let blockNumber = 0; blockNumber < BLOCKS; blockNumber += 1) {
      const version = versionOf(data.subarray(blockNumber * BLOCK, (blockNumber + 1) * BLOCK), blockNumber);
      const durable = journal.durable.get(blockNumber) ?? 0;
      const later = (journal.writes.get(blockNumber) ?? [])
        .filter((entry) => entry.version > durable).map((entry) => entry.version);
      assert.ok(version === durable || later.includes(version),
        `block ${blockNumber}: read version ${version}, flushed ${durable}, later ${later.join(',')}`);
      seen.set(blockNumber, version);
    }
  } finally {
    await reader.close();
    assert.equal(await again.stop(), 0);
  }

  // Write everything back; the origin file alone then holds what the stack read.
  const stack = await openDevice(`table:${tablePath}`) as TableDevice;
  try {
    const target = stack.targets[0] as WritecacheTarget;
    t.diagnostic(`after the restart: status ${target.status()}`);
    await target.writeBackAll();
  } finally {
    await stack.close();
  }
  const originBytes = readFileSync(origin);
  for (const [blockNumber, version] of seen) {
    const bytes = originBytes.subarray(blockNumber * BLOCK, (blockNumber + 1) * BLOCK);
    assert.equal(versionOf(bytes, blockNumber), version, `origin block ${blockNumber}`);
  }
});
