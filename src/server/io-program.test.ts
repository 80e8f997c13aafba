// Tests the two runners of the server's I/O programs: the same command sequence, run with
// `runIoProgram` on one file and with `runIoProgramBlocking` on an identical one, gives the same
// answers and leaves the same bytes. Also: a step that throws reaches the program (whose
// finally releases its lock), `RangeLock.acquireBlocking` refuses a range held on its thread,
// and `ThreadWriteGate.enterBlocking` waits for another thread's merge.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { Worker } from 'node:worker_threads';
import { dmIoClientCreate, dmIoClientDestroy, type DmIoClient } from '../core/client.js';
import type { BlockDevice, DeviceExtent } from '../devices/block-device.js';
import { openFileDevice } from '../devices/file-device.js';
import { tempDir } from '../../test/helpers/tmp.js';
import { pattern } from '../../test/helpers/requests.js';
import { blockStatusProgram } from './block-status.js';
import type { NbdFailure } from './errno-map.js';
import {
  flushProgram, readProgram, trimProgram, writeProgram, zeroProgram, type ZeroFlags,
} from './export-io.js';
import { runIoProgram, runIoProgramBlocking, type IoProgram } from './io-program.js';
import { ServedExport } from './nbd-export.js';
import { RangeLock } from './range-lock.js';
import { createWriteGateState, ThreadWriteGate } from './thread-write-gate.js';

const DEVICE_BYTES = 1024 * 1024;

/** A READ's outcome, with its bytes as a digest. */
function* readDigest(
  served: ServedExport, offsetBytes: number, lengthBytes: number,
): IoProgram<{ failure: NbdFailure | null; sha256: string }> {
  const target = new Uint8Array(lengthBytes);
  const failure = yield* readProgram(served, offsetBytes, target);
  return { failure, sha256: createHash('sha256').update(target).digest('hex') };
}

function zeroFlags(flags: Partial<ZeroFlags>): ZeroFlags {
  return { fua: false, noHole: false, fastZero: false, ...flags };
}

/** The commands both runners run, in order, each as a fresh program. */
const COMMANDS: ReadonlyArray<readonly [string, (served: ServedExport) => IoProgram<unknown>]> = [
  ['aligned write', (s) => writeProgram(s, 4096, pattern(8192, 1), false)],
  ['aligned read', (s) => readDigest(s, 4096, 8192)],
  ['partial write (merge), FUA', (s) => writeProgram(s, 1000, pattern(300, 2), true)],
  ['partial write inside one block', (s) => writeProgram(s, 5000, pattern(17, 3), false)],
  ['unaligned read', (s) => readDigest(s, 700, 5000)],
  ['write past the end', (s) => writeProgram(s, DEVICE_BYTES - 2048, pattern(4096, 4), false)],
  ['partial write past the end', (s) => writeProgram(s, DEVICE_BYTES - 100, pattern(200, 5),
    false)],
  ['read past the end', (s) => readDigest(s, DEVICE_BYTES - 512, 1024)],
  ['zero', (s) => zeroProgram(s, 1000, 20_000, zeroFlags({}))],
  ['zero NO_HOLE, FUA', (s) => zeroProgram(s, 40_000, 70_000,
    zeroFlags({ noHole: true, fua: true }))],
  ['zero FAST_ZERO', (s) => zeroProgram(s, 131_072, 65_536, zeroFlags({ fastZero: true }))],
  ['zero NO_HOLE FAST_ZERO', (s) => zeroProgram(s, 262_144, 4096,
    zeroFlags({ noHole: true, fastZero: true }))],
  ['trim, FUA', (s) => trimProgram(s, 3 * 512 + 7, 50_000, true)],
  ['trim inside one block', (s) => trimProgram(s, 600_001, 100, false)],
  ['flush', () => flushProgram()],
  ['empty FUA write', (s) => writeProgram(s, 0, new Uint8Array(0), true)],
  ['read everything', (s) => readDigest(s, 0, DEVICE_BYTES)],
];

/** A file device on an image of patterned bytes, its export, and its path. */
async function openExport(
  t: TestContext, directory: string, name: string,
): Promise<{ served: ServedExport; path: string }> {
  const path = join(directory, name);
  fs.writeFileSync(path, pattern(DEVICE_BYTES, 9));
  const device = await openFileDevice(path);
  t.after(() => device.close());
  return { served: new ServedExport({ name: '', device }), path };
}

/** An answer with the device's path replaced, so two devices' messages compare equal. */
function comparable(answer: unknown, path: string): unknown {
  return JSON.parse(JSON.stringify(answer ?? null).replaceAll(path, '<device>'));
}

function newClient(t: TestContext): DmIoClient {
  const client = dmIoClientCreate();
  t.after(() => dmIoClientDestroy(client));
  return client;
}

test('the blocking and the async runner give the same answers and bytes', async (t) => {
  const directory = await tempDir(t);
  const client = newClient(t);
  const viaAsync = await openExport(t, directory, 'async.img');
  const viaBlocking = await openExport(t, directory, 'blocking.img');
  for (const [name, command] of COMMANDS) {
    const asyncAnswer = await runIoProgram(client, viaAsync.served, command(viaAsync.served));
    const blockingAnswer = runIoProgramBlocking(client, viaBlocking.served,
      command(viaBlocking.served));
    assert.deepEqual(comparable(blockingAnswer, viaBlocking.path),
      comparable(asyncAnswer, viaAsync.path), name);
    assert.equal(viaAsync.served.lock.heldCount, 0, `${name}: no range left held`);
    assert.equal(viaBlocking.served.lock.heldCount, 0, `${name}: no range left held`);
  }
  assert.ok(fs.readFileSync(viaBlocking.path).equals(fs.readFileSync(viaAsync.path)));
});

test('the sequence means what it says: merges keep their neighbours, failures fail', async (t) => {
  const directory = await tempDir(t);
  const { served } = await openExport(t, directory, 'check.img');
  const client = newClient(t);
  const answers = COMMANDS.map(([, command]) =>
    runIoProgramBlocking(client, served, command(served)));
  const expected = pattern(DEVICE_BYTES, 9);
  expected.set(pattern(8192, 1), 4096);
  expected.set(pattern(300, 2), 1000);
  expected.set(pattern(17, 3), 5000);
  const digest = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');
  assert.deepEqual(answers[1], { failure: null, sha256: digest(pattern(8192, 1)) });
  assert.deepEqual(answers[4], { failure: null, sha256: digest(expected.subarray(700, 5700)) });
  for (const index of [5, 6, 7]) {
    assert.notEqual((answers[index] as { failure?: unknown } | null)?.failure ?? answers[index],
      null, `${COMMANDS[index]?.[0]} fails`);
  }
  for (const index of [0, 2, 3, 8, 9, 12, 13, 14, 15]) {
    assert.equal(answers[index], null, `${COMMANDS[index]?.[0]} succeeds`);
  }
  const target = new Uint8Array(21_000);
  assert.equal(runIoProgramBlocking(client, served, readProgram(served, 0, target)), null);
  assert.ok(Buffer.from(target.subarray(0, 1000)).equals(expected.subarray(0, 1000)), 'kept');
  assert.ok(target.subarray(1000).every((byte) => byte === 0), 'zeroed');
});

test('a step that throws is thrown into the program; its finally releases the range', async (t) => {
  const directory = await tempDir(t);
  const { served } = await openExport(t, directory, 'throw.img');
  const client = newClient(t);
  const held = served.lock.acquire(0, 4096, false);
  assert.equal(typeof held, 'function');
  // The merge's exclusive range conflicts with the shared one held: a bug on a blocking thread.
  assert.throws(() => runIoProgramBlocking(client, served,
    writeProgram(served, 100, pattern(10, 1), false)), /conflicts with one held on this thread/);
  (held as () => void)();
  assert.equal(served.lock.heldCount, 0);

  let released = false;
  function* holdsThenFails(): IoProgram<string> {
    const release = (yield { kind: 'lock', startBytes: 0, endBytes: 512, exclusive: true }) as
      () => void;
    try {
      yield { kind: 'lock', startBytes: 0, endBytes: 512, exclusive: true };
      return 'granted twice';
    } finally {
      release();
      released = true;
    }
  }
  assert.throws(() => runIoProgramBlocking(client, served, holdsThenFails()), /conflicts/);
  assert.ok(released);
  assert.equal(served.lock.heldCount, 0);
});

/** A device whose only capability is extents: sectors [0, 8) data, the rest a zeroed hole. */
function extentsDevice(): BlockDevice & Required<Pick<BlockDevice, 'extentsSync'>> {
  const answer = (sector: number, countSectors: number): DeviceExtent[] => {
    const endSector = sector + countSectors;
    if (sector >= 8) return [{ sector, countSectors, hole: true, zero: true }];
    const dataSectors = Math.min(8, endSector) - sector;
    const data = { sector, countSectors: dataSectors, hole: false, zero: false };
    if (endSector <= 8) return [data];
    return [data, { sector: 8, countSectors: endSector - 8, hole: true, zero: true }];
  };
  return {
    name: 'extents-only', kind: 'ram', sizeSectors: 64, readOnly: true, closed: false,
    canBlock: false,
    limits: {
      logicalBlockBytes: 512, physicalBlockBytes: 512, maxSectorsPerRequest: 8,
      maxSegmentsPerRequest: 1, maxDiscardSectors: 0, maxWriteZeroesSectors: 0,
      memoryAlignmentBytes: 0, flush: false, fua: false,
    },
    submit: () => assert.fail('not used'),
    extents: (sector, countSectors, done) => {
      setImmediate(() => done(null, answer(sector, countSectors)));
    },
    extentsSync: (sector, countSectors) => ({ error: null, extents: answer(sector, countSectors) }),
    close: () => Promise.resolve(),
  };
}

test('block status: both runners describe the same extents', async (t) => {
  const client = newClient(t);
  const device = extentsDevice();
  const served = new ServedExport({ name: '', device });
  for (const [offsetBytes, lengthBytes, reqOne] of [[300, 10_000, false], [0, 32_768, true],
    [4096, 512, false]] as const) {
    const asyncAnswer = await runIoProgram(client, served,
      blockStatusProgram(device, offsetBytes, lengthBytes, reqOne));
    const blockingAnswer = runIoProgramBlocking(client, served,
      blockStatusProgram(device, offsetBytes, lengthBytes, reqOne));
    assert.deepEqual(blockingAnswer, asyncAnswer);
    assert.equal(asyncAnswer.kind, 'extents');
  }
  const { extentsSync: _, ...withoutSync } = device;
  const noSync = new ServedExport({ name: '', device: withoutSync });
  const answer = runIoProgramBlocking(client, noSync,
    blockStatusProgram(withoutSync, 0, 512, false));
  assert.equal(answer.kind, 'failure');
  assert.match(answer.kind === 'failure' ? answer.failure.message : '', /no extentsSync/);
});

test('acquireBlocking refuses a range held on its thread, and shares shared ranges', () => {
  const lock = new RangeLock();
  const shared = lock.acquire(0, 4096, false) as () => void;
  assert.throws(() => lock.acquireBlocking(1024, 2048, true), /conflicts with one held/);
  const alsoShared = lock.acquireBlocking(0, 4096, false);
  assert.equal(lock.heldCount, 2);
  alsoShared();
  shared();
  const exclusive = lock.acquireBlocking(1024, 2048, true);
  assert.throws(() => lock.acquireBlocking(0, 1536, false), /conflicts with one held/);
  exclusive();
  assert.equal(lock.heldCount, 0);
});

test('enterBlocking waits until another thread\'s merge releases the gate', async (t) => {
  const state = createWriteGateState(2);
  const releasedFlag = new Int32Array(new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT));
  const tsx = JSON.stringify(import.meta.resolve('tsx/esm/api'));
  const gateModule = JSON.stringify(new URL('./thread-write-gate.ts', import.meta.url).href);
  // The worker holds the gate exclusively (slot 1), marks the flag, and releases after 50 ms.
  const worker = new Worker(`
    const { parentPort, workerData } = require('node:worker_threads');
    import(${tsx}).then((api) => { api.register(); return import(${gateModule}); })
      .then(async ({ ThreadWriteGate }) => {
        const release = await new ThreadWriteGate(workerData.state, 1).enter(true);
        parentPort.postMessage('held');
        setTimeout(() => {
          Atomics.store(workerData.releasedFlag, 0, 1);
          release();
        }, 50);
      });`, { eval: true, workerData: { state, releasedFlag } });
  t.after(() => worker.terminate());
  const [message] = await once(worker, 'message') as [unknown];
  assert.equal(message, 'held');
  const gate = new ThreadWriteGate(state, 0);
  const releaseWrite = gate.enterBlocking(false);
  assert.equal(Atomics.load(releasedFlag, 0), 1, 'entered only after the merge released');
  releaseWrite();
  const releaseMerge = gate.enterBlocking(true);
  releaseMerge();
});
