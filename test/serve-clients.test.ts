// `dmio serve` against real NBD clients, each started by the test on a private Unix socket (or
// 127.0.0.1 with a port the OS picks): nbdinfo (--json, --list), nbdcopy both ways with four
// connections and --flush, qemu-img info/convert/compare, qemu-io writes, zeroes and pattern
// reads, fio random writes verified with crc32c, and dmio's own NBD client. A read-only export
// refuses writes. Every byte is checked in the image file the server exported.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { dmIo, dmIoClientCreate, dmIoClientDestroy, openDevice } from '../src/index.js';
import { startDmioServe, runTool, runToolOk, type DmioServe } from './helpers/dmio-serve.js';
import { hasTool, makeTempDir, requireTools } from './helpers/nbdkit.js';
import { rmSync } from 'node:fs';

const MiB = 1024 * 1024;
const IMAGE_BYTES = 8 * MiB;

describe('dmio serve with real clients', () => {
  let dir = '';
  let image = '';
  let served: DmioServe | null = null;
  const uri = (): string => served?.uri ?? '';

  before(async () => {
    dir = makeTempDir('dmio-serve-');
    image = path.join(dir, 'disk.img');
    writeFileSync(image, Buffer.alloc(IMAGE_BYTES));
    served = await startDmioServe([image, '--socket', path.join(dir, 's.sock'),
      '--export-name', 'disk', '--export', 'ram=mem:4M']);
  });

  after(async () => {
    if (served !== null) assert.equal(await served.stop(), 0, served.stderr());
    rmSync(dir, { recursive: true, force: true });
  });

  test('prints the URI of the default export', () => {
    assert.equal(uri(), `nbd+unix:///disk?socket=${path.join(dir, 's.sock')}`);
  });

  test('nbdinfo --json reports size, flags and block sizes', async (t) => {
    if (!requireTools(t, 'nbdinfo')) return;
    const { stdout } = await runToolOk('nbdinfo', ['--json', uri()]);
    const info = JSON.parse(stdout) as { exports: Array<Record<string, unknown>> };
    const disk = info.exports[0] ?? {};
    assert.equal(disk['export-name'], 'disk');
    assert.equal(disk['export-size'], IMAGE_BYTES);
    assert.equal(disk['is_read_only'], false);
    assert.equal(disk['can_flush'], true);
    assert.equal(disk['can_fua'], true);
    assert.equal(disk['can_trim'], true);
    assert.equal(disk['can_zero'], true);
    assert.equal(disk['can_multi_conn'], true);
    assert.equal(disk['block_size_minimum'], 512);
    assert.equal(disk['block_size_maximum'], 32 * MiB);
    assert.deepEqual(disk['contexts'], ['base:allocation']);
  });

  test('nbdinfo --list names every export', async (t) => {
    if (!requireTools(t, 'nbdinfo')) return;
    const { stdout } = await runToolOk('nbdinfo', ['--list', '--json',
      `nbd+unix:///?socket=${path.join(dir, 's.sock')}`]);
    const list = JSON.parse(stdout) as { exports: Array<Record<string, unknown>> };
    assert.deepEqual(list.exports.map((entry) => entry['export-name']), ['disk', 'ram']);
    assert.equal(list.exports[1]?.['export-size'], 4 * MiB);
    assert.equal(list.exports[1]?.['description'], 'mem:4M');
  });

  test('nbdcopy writes with 4 connections and --flush, and reads back', async (t) => {
    if (!requireTools(t, 'nbdcopy')) return;
    const source = path.join(dir, 'source.img');
    const data = randomBytes(IMAGE_BYTES);
    data.fill(0, 2 * MiB, 3 * MiB); // a zero run: nbdcopy sends WRITE_ZEROES for it
    writeFileSync(source, data);
    await runToolOk('nbdcopy', ['--connections=4', '--flush', source, uri()]);
    assert.ok(readFileSync(image).equals(data), 'the image holds what nbdcopy wrote');
    const back = path.join(dir, 'back.img');
    await runToolOk('nbdcopy', ['--connections=4', uri(), back]);
    assert.ok(readFileSync(back).equals(data), 'nbdcopy read back the same bytes');
  });

  test('qemu-img info, convert and compare', async (t) => {
    if (!requireTools(t, 'qemu-img')) return;
    const { stdout } = await runToolOk('qemu-img', ['info', '--output=json', uri()]);
    assert.equal((JSON.parse(stdout) as { 'virtual-size': number })['virtual-size'], IMAGE_BYTES);
    const source = path.join(dir, 'qemu-source.img');
    const data = randomBytes(IMAGE_BYTES);
    writeFileSync(source, data);
    await runToolOk('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', source, uri()]);
    assert.equal((await runTool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', source, uri()])).status, 0);
    assert.ok(readFileSync(image).equals(data));
    const other = path.join(dir, 'other.img');
    writeFileSync(other, randomBytes(IMAGE_BYTES));
    assert.equal((await runTool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', other, uri()])).status, 1);
  });

  test('qemu-io: pattern write, write-zeroes, pattern read, partial blocks', async (t) => {
    if (!requireTools(t, 'qemu-io')) return;
    await runToolOk('qemu-io', ['-f', 'raw', '-t', 'writeback',
      '-c', 'write -P 0xab 0 1M', '-c', 'write -z 1M 1M', '-c', 'read -P 0xab 0 1M',
      '-c', 'read -P 0 1M 1M', '-c', 'write -f -P 0x11 2M 4k', '-c', 'write -z -n 3M 64k',
      '-c', 'write -z -u 4M 64k', '-c', 'discard 5M 64k', '-c', 'flush', uri()]);
    const bytes = readFileSync(image);
    assert.ok(bytes.subarray(0, MiB).every((byte) => byte === 0xab));
    assert.ok(bytes.subarray(MiB, 2 * MiB).every((byte) => byte === 0));
    assert.ok(bytes.subarray(2 * MiB, 2 * MiB + 4096).every((byte) => byte === 0x11));
    assert.ok(bytes.subarray(3 * MiB, 3 * MiB + 65536).every((byte) => byte === 0));
    assert.ok(bytes.subarray(4 * MiB, 4 * MiB + 65536).every((byte) => byte === 0));
  });

  test('fio random writes verified with crc32c', async (t) => {
    if (!requireTools(t, 'fio')) return;
    const { stdout } = await runToolOk('fio', ['--name=v', '--ioengine=nbd', `--uri=${uri()}`,
      '--rw=randwrite', '--bs=4k', '--iodepth=16', '--size=4M', '--verify=crc32c',
      '--do_verify=1', '--verify_state_save=0', '--output-format=json'], 60_000);
    const job = (JSON.parse(stdout.slice(stdout.indexOf('{'))) as { jobs: Array<{ error: number }> }).jobs[0];
    assert.equal(job?.error, 0);
  });

  test("dmio's own NBD client reads and writes through dm-io", async () => {
    const device = await openDevice(`nbd+unix:///ram?socket=${path.join(dir, 's.sock')}`,
      { nbd: { connections: 2 } });
    const client = dmIoClientCreate();
    try {
      const data = randomBytes(MiB);
      const written = await dmIo({ op: 'write', mem: { type: 'vm', data }, client, flags: { fua: true } },
        [{ device, sector: 2048, count: 2048 }]);
      assert.equal(written.errorBits, 0n);
      const back = Buffer.alloc(MiB);
      const read = await dmIo({ op: 'read', mem: { type: 'vm', data: back }, client },
        [{ device, sector: 2048, count: 2048 }]);
      assert.equal(read.errorBits, 0n);
      assert.ok(back.equals(data));
      const zeroed = await dmIo({ op: 'write-zeroes', client }, [{ device, sector: 2048, count: 8 }]);
      assert.equal(zeroed.errorBits, 0n);
      const past = await dmIo({ op: 'read', mem: { type: 'vm', data: back }, client },
        [{ device, sector: 8192 - 8, count: 16 }]);
      assert.equal(past.errorBits, 1n, 'a read past the end fails');
    } finally {
      await dmIoClientDestroy(client);
      await device.close();
    }
  });
});

test('dmio serve over loopback TCP on a port the OS picks', async (t) => {
  if (!requireTools(t, 'nbdinfo')) return;
  const served = await startDmioServe(['mem:1M', '--listen', '127.0.0.1:0', '--json']);
  try {
    assert.match(served.uri, /^nbd:\/\/127\.0\.0\.1:\d+\/$/);
    assert.equal((JSON.parse(served.line) as { tls: string }).tls, 'off');
    const { stdout } = await runToolOk('nbdinfo', ['--size', served.uri]);
    assert.equal(stdout.trim(), String(MiB));
  } finally {
    assert.equal(await served.stop('SIGINT'), 0);
  }
});

test('a read-only export refuses writes with EPERM', async (t) => {
  const dir = makeTempDir('dmio-serve-ro-');
  const image = path.join(dir, 'ro.img');
  writeFileSync(image, Buffer.alloc(MiB, 7));
  const served = await startDmioServe([image, '--socket', path.join(dir, 's.sock'), '--read-only']);
  try {
    if (hasTool('nbdinfo')) {
      const { stdout } = await runToolOk('nbdinfo', ['--json', served.uri]);
      const info = JSON.parse(stdout) as { exports: Array<Record<string, unknown>> };
      assert.equal(info.exports[0]?.['is_read_only'], true);
      assert.equal(info.exports[0]?.['can_trim'], false);
    }
    if (hasTool('qemu-io')) {
      const result = await runTool('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 4k', served.uri]);
      assert.notEqual(result.status, 0);
    } else if (!requireTools(t, 'qemu-io')) return;
    const device = await openDevice(served.uri);
    const client = dmIoClientCreate();
    try {
      assert.equal(device.readOnly, true);
      const back = Buffer.alloc(4096);
      const read = await dmIo({ op: 'read', mem: { type: 'vm', data: back }, client },
        [{ device, sector: 0, count: 8 }]);
      assert.equal(read.errorBits, 0n);
      assert.ok(back.every((byte) => byte === 7));
    } finally {
      await dmIoClientDestroy(client);
      await device.close();
    }
    assert.ok(readFileSync(image).every((byte) => byte === 7), 'nothing was written');
  } finally {
    assert.equal(await served.stop(), 0);
    rmSync(dir, { recursive: true, force: true });
  }
});
