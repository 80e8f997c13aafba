// The NBD server with connection threads (`threads` option, `dmio serve --threads`): connections
// spread over the threads and each sees every byte the others wrote; nbdcopy's four
// connections write a file that is whole after close; partial-block writes from connections on
// different threads to the same blocks keep every byte (the write gate); the connection cap
// counts connections on threads; only files, block devices and tables of linear, zero and error
// targets over those can be threaded (a linear table on threads keeps every byte on its legs);
// a thread opens a read-only leg read-only, and never serves a descriptor reused by another file.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { after, before, describe, test } from 'node:test';
import {
  createRamDevice, dmIo, dmIoClientCreate, dmIoClientDestroy, openDevice, openFileDevice,
  openTableText, type BlockDevice,
} from '../src/index.js';
import { createNbdServer, threadableDevice, type NbdServer } from '../src/server.js';
import { NBD_CMD_READ, NBD_CMD_WRITE } from '../src/nbd/protocol.js';
import { makeTempDir } from './helpers/nbdkit.js';
import { RawClient } from './helpers/raw-nbd-client.js';
import { runDmio } from './cli-helpers.js';
import { runToolOk, startDmioServe } from './helpers/dmio-serve.js';
import { requireLoopOrSkip, withLoopDevice } from './helpers/loop.js';

const MiB = 1024 * 1024;
const SIMPLE_REPLY_MAGIC = 0x67446698;

/** Polls `check` until it holds (or fails after `timeoutMs`). */
async function waitFor(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('NBD server with connection threads', () => {
  let dir = '';
  let image = '';
  let socketPath = '';
  let device: BlockDevice | null = null;
  let server: NbdServer | null = null;
  const logged: string[] = [];

  before(async () => {
    dir = makeTempDir('dmio-serve-threads-');
    image = path.join(dir, 'disk.img');
    socketPath = path.join(dir, 's.sock');
    device = await openFileDevice(image, { create: { sizeBytes: 32 * MiB } });
    server = createNbdServer({ exports: [{ name: '', device }], threads: 2, connectionsMax: 5,
      log: (message) => logged.push(message) });
    await server.listen({ socketPath });
  });

  after(async () => {
    await server?.close();
    await device?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('four connections spread over two threads, and each reads what the others wrote', async () => {
    const live = server as NbdServer;
    const remote = await openDevice(`nbd+unix:///?socket=${socketPath}`,
      { nbd: { connections: 4 } });
    const client = dmIoClientCreate();
    try {
      await waitFor(() => live.connectionCount === 4, 'four connections');
      assert.deepEqual(await live.connectionCountsByThread(), [2, 2]);
      const chunks = Array.from({ length: 16 }, () => randomBytes(256 * 1024));
      // Written in parallel, so every connection (and both threads) carries some.
      await Promise.all(chunks.map(async (data, index) => {
        const result = await dmIo({ op: 'write', mem: { type: 'vm', data }, client },
          [{ device: remote, sector: index * 512, count: 512 }]);
        assert.equal(result.errorBits, 0n);
      }));
      await Promise.all(chunks.map(async (data, index) => {
        const back = Buffer.alloc(data.length);
        const result = await dmIo({ op: 'read', mem: { type: 'vm', data: back }, client },
          [{ device: remote, sector: index * 512, count: 512 }]);
        assert.equal(result.errorBits, 0n);
        assert.ok(back.equals(data), `chunk ${index} reads back through any connection`);
      }));
    } finally {
      await dmIoClientDestroy(client);
      await remote.close();
    }
    await waitFor(() => live.connectionCount === 0, 'the connections to end');
    assert.deepEqual(await live.connectionCountsByThread(), [0, 0]);
  });

  test('nbdcopy with four connections writes the whole file', async () => {
    const source = path.join(dir, 'source.img');
    fs.writeFileSync(source, randomBytes(32 * MiB));
    await runToolOk('nbdcopy', ['--connections=4', '--flush', source,
      `nbd+unix:///?socket=${socketPath}`], 60_000);
    assert.ok(fs.readFileSync(image).equals(fs.readFileSync(source)), 'the image is the source');
  });

  test('partial-block writes from two threads to the same blocks keep every byte', async () => {
    const live = server as NbdServer;
    const even = await RawClient.transmitting(socketPath);
    const odd = await RawClient.transmitting(socketPath);
    try {
      await waitFor(async () => (await live.connectionCountsByThread()).join() === '1,1',
        'one connection on each thread');
      const regionBytes = 2048;
      const rounds = 4;
      const writers = [{ client: even, first: 0, value: 0xaa }, { client: odd, first: 1, value: 0xbb }];
      for (let round = 0; round < rounds; round += 1) {
        // Every one-byte write of both clients is sent before any reply is read, so the two
        // threads merge into the same 512-byte blocks at the same time.
        for (const writer of writers) {
          for (let offset = writer.first; offset < regionBytes; offset += 2) {
            writer.client.request(NBD_CMD_WRITE, BigInt(offset), 1, 0, BigInt(offset + 1));
            writer.client.send(Buffer.from([writer.value + round]));
          }
        }
        for (const writer of writers) {
          for (let count = 0; count < regionBytes / 2; count += 1) {
            const reply = await writer.client.read(16, 20_000);
            assert.equal(reply.readUInt32BE(0), SIMPLE_REPLY_MAGIC);
            assert.equal(reply.readUInt32BE(4), 0, 'the write succeeds');
          }
        }
        const written = Buffer.alloc(regionBytes);
        const fd = fs.openSync(image, 'r');
        fs.readSync(fd, written, 0, regionBytes, 0);
        fs.closeSync(fd);
        for (let offset = 0; offset < regionBytes; offset += 1) {
          const expected = (offset % 2 === 0 ? 0xaa : 0xbb) + round;
          if (written[offset] !== expected) {
            assert.fail(`round ${round}: byte ${offset} is ${written[offset]}, not ${expected}`);
          }
        }
      }
    } finally {
      even.destroy();
      odd.destroy();
    }
    await waitFor(() => live.connectionCount === 0, 'the connections to end');
  });

  test('the connection cap counts connections on threads', async () => {
    const live = server as NbdServer;
    const clients = await Promise.all(Array.from({ length: 5 }, () => RawClient.negotiating(socketPath)));
    try {
      await waitFor(() => live.connectionCount === 5, 'five connections');
      const extra = await RawClient.connect(socketPath);
      assert.equal(await extra.closedBy(3000), true, 'the sixth is closed at once');
      assert.ok(logged.some((line) => line.includes('5 already open')), logged.join('\n'));
      assert.equal(live.connectionCount, 5);
    } finally {
      for (const client of clients) client.destroy();
    }
    await waitFor(() => live.connectionCount === 0, 'the connections to end');
  });
});

test('threads: only open files and block devices, and a count from 0 to 64', async () => {
  const ram = await createRamDevice({ sizeBytes: MiB });
  const dir = makeTempDir('dmio-serve-threads-');
  const file = await openFileDevice(path.join(dir, 'f.img'), { create: { sizeBytes: MiB } });
  try {
    assert.throws(() => createNbdServer({ exports: [{ name: '', device: ram }], threads: 1 }),
      { code: 'DMIO_ERR_INVALID_ARG_VALUE', argument: 'options.exports[0].device' });
    for (const threads of [-1, 65, 1.5]) {
      assert.throws(() => createNbdServer({ exports: [{ name: '', device: file }], threads }),
        { argument: 'options.threads' });
    }
    const idle = createNbdServer({ exports: [{ name: '', device: file }], threads: 0 });
    assert.deepEqual(await idle.connectionCountsByThread(), []);
    await idle.close();
    await file.close();
    assert.throws(() => createNbdServer({ exports: [{ name: '', device: file }], threads: 1 }),
      { code: 'DMIO_ERR_INVALID_ARG_VALUE' }, 'a closed device cannot be opened again');
  } finally {
    await ram.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('dmio serve --threads: refused for RAM, reported in --json, 0 serves on the main thread', async () => {
  const refused = await runDmio(['serve', 'mem:1M', '--threads', '1', '--socket', '/nonexistent/s']);
  assert.equal(refused.status, 2, refused.stderr);
  assert.match(refused.stderr,
    /--threads: every export must be a file, a block device or a table of linear, zero and error/);
  const bad = await runDmio(['serve', 'mem:1M', '--threads', '65']);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--threads: "65" is not an integer from 0 to 64/);

  const dir = makeTempDir('dmio-serve-threads-');
  const image = path.join(dir, 'disk.img');
  fs.writeFileSync(image, randomBytes(MiB));
  try {
    for (const [args, threads] of [[['--threads', '3'], 3], [['--threads', '0'], 0]] as const) {
      const served = await startDmioServe([image, '--socket', path.join(dir, `s${threads}.sock`),
        '--json', ...args]);
      try {
        assert.equal((JSON.parse(served.line) as { threads: number }).threads, threads);
        const copy = path.join(dir, `copy${threads}.img`);
        await runToolOk('nbdcopy', [served.uri, copy]);
        assert.ok(fs.readFileSync(copy).equals(fs.readFileSync(image)));
      } finally {
        assert.equal(await served.stop(), 0);
      }
      // The built bundle holds every thread's entry module: threads that cannot load one fall
      // back to the main thread, which serves right but says so.
      assert.doesNotMatch(served.stderr(), /did not start/);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('dmio serve of a loop device (4096-byte sectors) on threads: nbdcopy both ways, --flush', async (t) => {
  if (!requireLoopOrSkip(t)) return;
  const dir = makeTempDir('dmio-serve-threads-');
  const image = path.join(dir, 'backing.img');
  fs.writeFileSync(image, Buffer.alloc(8 * MiB));
  const source = path.join(dir, 'source.img');
  fs.writeFileSync(source, randomBytes(8 * MiB));
  try {
    await withLoopDevice(image, { sectorSize: 4096 }, async (loopPath) => {
      // Buffered, then with O_DIRECT (every request through aligned memory, on the threads).
      for (const direct of [false, true]) {
        fs.writeFileSync(source, randomBytes(8 * MiB));
        const served = await startDmioServe([loopPath, '--socket', path.join(dir, 's.sock'),
          '--json', '--threads', '2', ...(direct ? ['--direct'] : [])]);
        try {
          assert.equal((JSON.parse(served.line) as { threads: number }).threads, 2);
          const info = await runToolOk('nbdinfo', ['--json', served.uri]);
          const exported = (JSON.parse(info.stdout) as { exports: Array<Record<string, unknown>> })
            .exports[0];
          assert.equal(exported?.['export-size'], 8 * MiB);
          assert.equal(exported?.['block_size_minimum'], 4096, 'the loop device\'s logical block');
          await runToolOk('nbdcopy', ['--connections=4', '--flush', source, served.uri], 60_000);
          const back = path.join(dir, 'back.img');
          await runToolOk('nbdcopy', ['--connections=4', served.uri, back], 60_000);
          assert.ok(fs.readFileSync(back).equals(fs.readFileSync(source)), 'read back through NBD');
        } finally {
          assert.equal(await served.stop(), 0);
        }
        assert.doesNotMatch(served.stderr(), /did not start/);
        const onDevice = Buffer.alloc(8 * MiB);
        const fd = fs.openSync(loopPath, 'r');
        try {
          fs.readSync(fd, onDevice, 0, onDevice.length, 0);
        } finally {
          fs.closeSync(fd);
        }
        assert.ok(onDevice.equals(fs.readFileSync(source)), 'the block device holds the source');
      }
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a linear table on two threads: connections spread, every byte lands on its leg', async () => {
  const dir = makeTempDir('dmio-serve-threads-');
  const legA = path.join(dir, 'a.img');
  const legB = path.join(dir, 'b.img');
  fs.writeFileSync(legA, Buffer.alloc(4 * MiB));
  fs.writeFileSync(legB, Buffer.alloc(8 * MiB));
  // 4 MiB of b, then all of a, then 1 MiB of zero target, then 2 MiB of b from its 4 MiB.
  const tablePath = path.join(dir, 'lin.table');
  fs.writeFileSync(tablePath, `0 8192 linear ${legB} 0\n8192 8192 linear ${legA} 0\n` +
    `16384 2048 zero\n18432 4096 linear ${legB} 8192\n`);
  const table = await openDevice(`table:${tablePath}`);
  const socketPath = path.join(dir, 's.sock');
  const server = createNbdServer({ exports: [{ name: '', device: table }], threads: 2 });
  const source = randomBytes(11 * MiB);
  try {
    assert.equal(threadableDevice(table), true);
    await server.listen({ socketPath });
    const uri = `nbd+unix:///?socket=${socketPath}`;
    const remote = await openDevice(uri, { nbd: { connections: 4 } });
    try {
      await waitFor(() => server.connectionCount === 4, 'four connections');
      assert.deepEqual(await server.connectionCountsByThread(), [2, 2]);
    } finally {
      await remote.close();
    }
    const sourcePath = path.join(dir, 'source.img');
    fs.writeFileSync(sourcePath, source);
    await runToolOk('nbdcopy', ['--connections=4', '--flush', sourcePath, uri], 60_000);
    const back = path.join(dir, 'back.img');
    await runToolOk('nbdcopy', ['--connections=4', uri, back], 60_000);
    const read = fs.readFileSync(back);
    assert.ok(read.subarray(0, 8 * MiB).equals(source.subarray(0, 8 * MiB)), 'the linear parts');
    assert.ok(read.subarray(8 * MiB, 9 * MiB).equals(Buffer.alloc(MiB)), 'the zero target reads zeros');
    assert.ok(read.subarray(9 * MiB).equals(source.subarray(9 * MiB)), 'the last linear part');
  } finally {
    await server.close();
    await table.close();
  }
  try {
    const a = fs.readFileSync(legA);
    const b = fs.readFileSync(legB);
    assert.ok(a.equals(source.subarray(4 * MiB, 8 * MiB)), 'leg a holds the second segment');
    assert.ok(b.subarray(0, 4 * MiB).equals(source.subarray(0, 4 * MiB)), 'leg b, first segment');
    assert.ok(b.subarray(4 * MiB, 6 * MiB).equals(source.subarray(9 * MiB)), 'leg b, last segment');
    assert.ok(b.subarray(6 * MiB).equals(Buffer.alloc(2 * MiB)), 'nothing written past the table');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('threads open a table\'s read-only leg read-only again, and refuse a file that is not the server\'s', async () => {
  const dir = makeTempDir('dmio-serve-threads-');
  const legPath = path.join(dir, 'ro.img');
  fs.writeFileSync(legPath, Buffer.alloc(MiB, 0x11));
  const client = dmIoClientCreate();
  try {
    // A writable table over a leg opened read-only: writes fail on threads as they do here.
    const table = await openTableText(`0 2048 linear ${legPath} 0`,
      (spec) => openFileDevice(spec, { readOnly: true }), { readOnly: false });
    const socketPath = path.join(dir, 'ro.sock');
    const server = createNbdServer({ exports: [{ name: '', device: table }], threads: 2 });
    try {
      await server.listen({ socketPath });
      const remote = await openDevice(`nbd+unix:///?socket=${socketPath}`, { nbd: { connections: 2 } });
      try {
        await waitFor(() => server.connectionCount === 2, 'two connections');
        assert.deepEqual(await server.connectionCountsByThread(), [1, 1]);
        const results = await Promise.all([0, 1].map(() => dmIo({ op: 'write',
          mem: { type: 'vm', data: Buffer.alloc(64 * 1024, 0x22) }, client },
        [{ device: remote, sector: 0, count: 128 }])));
        for (const result of results) assert.equal(result.errorBits, 1n, 'the write failed');
      } finally {
        await remote.close();
      }
    } finally {
      await server.close().catch(() => undefined);
      await table.close();
    }
    assert.ok(fs.readFileSync(legPath).equals(Buffer.alloc(MiB, 0x11)), 'the leg is unchanged');

    // The server's file closed before it listens, and another file of the same size opened:
    // the threads must not serve whatever that descriptor now is.
    const first = await openFileDevice(path.join(dir, 'first.img'), { create: { sizeBytes: MiB } });
    const logged: string[] = [];
    const moved = createNbdServer({ exports: [{ name: '', device: first }], threads: 1,
      log: (message) => logged.push(message) });
    await first.close();
    const otherPath = path.join(dir, 'other.img');
    fs.writeFileSync(otherPath, Buffer.alloc(MiB, 0x55));
    const other = await openFileDevice(otherPath);
    const movedSocket = path.join(dir, 'moved.sock');
    try {
      await moved.listen({ socketPath: movedSocket });
      const remote = await openDevice(`nbd+unix:///?socket=${movedSocket}`);
      try {
        const back = Buffer.alloc(4096);
        await dmIo({ op: 'read', mem: { type: 'vm', data: back }, client },
          [{ device: remote, sector: 0, count: 8 }]);
        assert.ok(!back.equals(Buffer.alloc(4096, 0x55)), 'the other file is not served');
      } finally {
        await remote.close();
      }
      assert.ok(logged.some((line) => /connection threads did not start/.test(line)),
        logged.join('\n'));
    } finally {
      await moved.close().catch(() => undefined);
      await other.close();
    }
  } finally {
    await dmIoClientDestroy(client);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('threads: tables with targets that keep state, or over RAM, are refused; the CLI serves them unthreaded', async () => {
  const dir = makeTempDir('dmio-serve-threads-');
  const legs = ['a.img', 'b.img'].map((name) => path.join(dir, name));
  for (const leg of legs) fs.writeFileSync(leg, Buffer.alloc(MiB));
  const tables: Record<string, string> = {
    striped: `0 4096 striped 2 128 ${legs[0]} 0 ${legs[1]} 0\n`,
    mirror: `0 2048 mirror core 2 256 nosync 2 ${legs[0]} 0 ${legs[1]} 0\n`,
    ram: '0 2048 linear mem:1M 0\n',
  };
  try {
    for (const [kind, text] of Object.entries(tables)) {
      const tablePath = path.join(dir, `${kind}.table`);
      fs.writeFileSync(tablePath, text);
      const table = await openDevice(`table:${tablePath}`);
      try {
        assert.equal(threadableDevice(table), false, kind);
        assert.throws(() => createNbdServer({ exports: [{ name: '', device: table }], threads: 1 }),
          { code: 'DMIO_ERR_INVALID_ARG_VALUE', argument: 'options.exports[0].device' }, kind);
      } finally {
        await table.close();
      }
    }
    const stripedPath = path.join(dir, 'striped.table');
    const refused = await runDmio(['serve', `table:${stripedPath}`, '--threads', '1',
      '--socket', path.join(dir, 'never.sock')]);
    assert.equal(refused.status, 2, refused.stderr);
    assert.match(refused.stderr, /tables with other targets/);
    const served = await startDmioServe([`table:${stripedPath}`, '--socket',
      path.join(dir, 's.sock'), '--json']);
    try {
      assert.equal((JSON.parse(served.line) as { threads: number }).threads, 0);
    } finally {
      assert.equal(await served.stop(), 0);
    }
    const linearPath = path.join(dir, 'linear.table');
    fs.writeFileSync(linearPath, `0 2048 linear ${legs[0]} 0\n`);
    const linear = await startDmioServe([`table:${linearPath}`, '--socket',
      path.join(dir, 'l.sock'), '--json']);
    try {
      const threads = (JSON.parse(linear.line) as { threads: number }).threads;
      assert.ok(threads >= 1, `a linear table is threaded by default (${threads})`);
      await runToolOk('nbdcopy', [linear.uri, path.join(dir, 'copy.img')]);
    } finally {
      assert.equal(await linear.stop(), 0);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

describe('connection threads when things go wrong', () => {
  let dir = '';
  let device: BlockDevice | null = null;

  before(async () => {
    dir = makeTempDir('dmio-serve-threads-');
    device = await openFileDevice(path.join(dir, 'disk.img'), { create: { sizeBytes: 4 * MiB } });
  });

  after(async () => {
    await device?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('close() while the threads start: listen() rejects and nothing listens', async () => {
    const socketPath = path.join(dir, 'early.sock');
    const server = createNbdServer({ exports: [{ name: '', device: device as BlockDevice }],
      threads: 2 });
    const refused = assert.rejects(server.listen({ socketPath }), { code: 'DMIO_ERR_DEVICE_CLOSED' });
    await server.close();
    await refused;
    await assert.rejects(RawClient.connect(socketPath), 'no listener is left behind');
  });

  test('threads that cannot start: logged, the main thread serves, the others stop', async () => {
    // Six threads, four times: while the first fails, the others are still loading their
    // modules, where terminating them (as a first version did) aborted the whole process.
    for (let round = 0; round < 4; round += 1) {
      const socketPath = path.join(dir, `fallback${round}.sock`);
      const logged: string[] = [];
      const server = createNbdServer({ exports: [{ name: '', device: device as BlockDevice }],
        threads: 6, log: (message) => logged.push(message) });
      // The file grows after the server's device was opened: a thread's opening would differ.
      fs.truncateSync(path.join(dir, 'disk.img'), 8 * MiB);
      try {
        await server.listen({ socketPath });
        assert.ok(logged.some((line) => line.includes('connection threads did not start')),
          logged.join('\n'));
        const info = await runToolOk('nbdinfo', ['--size', `nbd+unix:///?socket=${socketPath}`]);
        assert.equal(Number(info.stdout.trim()), 4 * MiB, 'served by the main thread\'s device');
        assert.deepEqual(await server.connectionCountsByThread(), [], 'no thread runs');
      } finally {
        await server.close();
        fs.truncateSync(path.join(dir, 'disk.img'), 4 * MiB);
      }
    }
  });

  test('a thread that never stops is left behind after its grace period', async () => {
    const socketPath = path.join(dir, 'stuck.sock');
    const logged: string[] = [];
    const server = createNbdServer({ exports: [{ name: '', device: device as BlockDevice }],
      threads: 1, shutdownGraceMs: 0, log: (message) => logged.push(message) });
    await server.listen({ socketPath });
    const original = Worker.prototype.postMessage;
    // The thread never hears of the shutdown, so it would serve on forever.
    Worker.prototype.postMessage = function dropShutdown(this: Worker, message: unknown): void {
      if ((message as { type?: string }).type !== 'shutdown') original.call(this, message);
    };
    try {
      const startMs = Date.now();
      await server.close();
      const tookMs = Date.now() - startMs;
      assert.ok(tookMs >= 4000 && tookMs < 15_000, `close() took ${tookMs} ms`);
      assert.ok(logged.some((line) => line.includes('did not stop in time and was left behind')),
        logged.join('\n'));
    } finally {
      Worker.prototype.postMessage = original;
    }
  });

  test('a polling thread that dies with connections: its clients are closed, others go on', async () => {
    const socketPath = path.join(dir, 'dies-later.sock');
    const server = createNbdServer({ exports: [{ name: '', device: device as BlockDevice }],
      threads: 2 });
    await server.listen({ socketPath });
    const original = Worker.prototype.postMessage;
    let doomedThread: Worker | null = null;
    Worker.prototype.postMessage = function note(this: Worker, ...args: unknown[]): void {
      if ((args[0] as { type?: string }).type === 'transmission') doomedThread ??= this;
      (original as (...rest: unknown[]) => void).apply(this, args);
    };
    try {
      const doomed = await RawClient.transmitting(socketPath);
      doomed.request(NBD_CMD_READ, 0n, 4096, 0, 1n);
      assert.equal((await doomed.chunk()).cookie, 1n, 'served by its thread');
      assert.ok(doomedThread !== null);
      // Idle in its poll loop: the termination lands when the poll returns (within 1 s).
      await (doomedThread as Worker).terminate();
      assert.equal(await doomed.closedBy(5000), true, 'the dead thread\'s connection is closed');
      await waitFor(() => server.connectionCount === 0, 'the lost connection to be uncounted');
      const info = await runToolOk('nbdinfo', ['--size', `nbd+unix:///?socket=${socketPath}`]);
      assert.equal(Number(info.stdout.trim()), 4 * MiB, 'the live thread serves');
    } finally {
      Worker.prototype.postMessage = original;
      await server.close();
    }
  });

  // Both drivers: threads that poll take a connection after its handshake ('transmission'),
  // threads with an event loop (a table export) take it at accept ('connection').
  for (const driver of ['polling', 'event-loop'] as const) {
    test(`${driver === 'polling' ? 'a' : 'an'} ${driver} thread that dies before taking its connection: the client is closed, others go on`, async () => {
      const socketPath = path.join(dir, `dies-${driver === 'polling' ? 'p' : 'e'}.sock`);
      const exported = driver === 'polling' ? device as BlockDevice :
        await openTableText(`0 8192 linear ${path.join(dir, 'disk.img')} 0`,
          (spec) => openFileDevice(spec), { readOnly: false });
      const server = createNbdServer({ exports: [{ name: '', device: exported }], threads: 2 });
      await server.listen({ socketPath });
      const original = Worker.prototype.postMessage;
      const handOver = driver === 'polling' ? 'transmission' : 'connection';
      let killed = 0;
      // The first connection meant for a thread is never delivered: the thread ends instead.
      Worker.prototype.postMessage = function dieInstead(this: Worker, message: unknown): void {
        if ((message as { type?: string }).type === handOver && killed === 0) {
          killed += 1;
          void this.terminate();
          return;
        }
        original.call(this, message);
      };
      try {
        const doomed = driver === 'polling' ? await RawClient.transmitting(socketPath) :
          await RawClient.connect(socketPath);
        assert.equal(await doomed.closedBy(5000), true, 'the untaken descriptor is closed');
        await waitFor(() => server.connectionCount === 0, 'the lost connection to be uncounted');
        assert.deepEqual((await server.connectionCountsByThread()).sort(), [0, 0]);
        const info = await runToolOk('nbdinfo', ['--size', `nbd+unix:///?socket=${socketPath}`]);
        assert.equal(Number(info.stdout.trim()), 4 * MiB, 'the live thread serves');
      } finally {
        Worker.prototype.postMessage = original;
        await server.close();
        if (exported !== device) await exported.close();
      }
    });
  }
});
