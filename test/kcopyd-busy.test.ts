// kcopyd on a shared dm-io client that other users fill: a chunk whose I/O the client refuses
// (DMIO_ERR_CLIENT_BUSY, its waiting queue full) waits and is retried when the client has
// room, never failing the job and never leaving it unsettled. Copies complete byte-exact,
// WRITE_SEQ order holds, a flush the client refuses is retried, every page comes back, and a
// job cancelled or a client destroyed during the wait settles.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { dmIoClientCreate, dmIoClientDestroy, type DmIoClient } from '../src/core/client.js';
import { dmIo } from '../src/core/dm-io.js';
import type { BlockDevice, DeviceDone, DeviceRequest } from '../src/devices/block-device.js';
import { isDmIoError } from '../src/errors.js';
import { dmKcopydClientCreate, dmKcopydClientDestroy } from '../src/kcopyd/kcopyd.js';
import { dmKcopydThrottleCreate } from '../src/kcopyd/throttle.js';
import type { KcopydResult } from '../src/kcopyd/job.js';
import { dmKcopydCopy, dmKcopydZero } from '../src/kcopyd/submit.js';
import { hashOf, patternDevice, ProbeDevice, ramDevice, readBytes } from './kcopyd-helpers.js';

/** A RAM device whose requests are parked until the test opens it. */
class HoldDevice extends ProbeDevice {
  readonly #parked: Array<() => void> = [];
  #open = false;

  constructor(sectors: number) {
    super(ramDevice(sectors, 'hold'));
  }

  override submit(req: DeviceRequest, done: DeviceDone): void {
    if (this.#open) super.submit(req, done);
    else this.#parked.push(() => super.submit(req, done));
  }

  /** Lets every parked request go on, and every later one through. */
  open(): void {
    this.#open = true;
    for (const go of this.#parked.splice(0)) go();
  }
}

/** A probe device that runs `afterDone` once, in a microtask after a completion it delivers. */
class HookDevice extends ProbeDevice {
  afterDone: (() => void) | null = null;

  override submit(req: DeviceRequest, done: DeviceDone): void {
    super.submit(req, (error) => {
      done(error);
      const hook = this.afterDone;
      this.afterDone = null;
      if (hook !== null) queueMicrotask(hook);
    });
  }
}

/** Another user of `client`: one write to `device` (not awaited here). */
function otherWrite(client: DmIoClient, device: BlockDevice, sector: number): Promise<unknown> {
  return dmIo({ op: 'write', client, mem: { type: 'vm', data: new Uint8Array(512) } },
    [{ device, sector, count: 1 }]);
}

/** Other users' writes to `hold` until `client` refuses one (its queue is then full). */
function fillUp(client: DmIoClient, hold: HoldDevice, others: Promise<unknown>[]): void {
  for (let sector = 0; ; sector += 1) {
    try {
      others.push(otherWrite(client, hold, sector % 64));
    } catch (error) {
      assert.ok(isDmIoError(error, 'DMIO_ERR_CLIENT_BUSY'));
      return;
    }
  }
}

/** A shared client with one request in flight and one waiting: its queue is full. */
function fullClient(): { client: DmIoClient; hold: HoldDevice; others: Promise<unknown>[] } {
  const client = dmIoClientCreate({ inflightMax: 1, queuedMax: 1, reservedPages: 1 });
  const hold = new HoldDevice(64);
  const others = [otherWrite(client, hold, 0), otherWrite(client, hold, 1)];
  assert.equal(client.inflight, 1);
  assert.equal(client.queued, 1);
  assert.throws(() => otherWrite(client, hold, 2),
    (error) => isDmIoError(error, 'DMIO_ERR_CLIENT_BUSY'), 'the shared client is full');
  return { client, hold, others };
}

/** Settles with the job's result, or with 'timeout' after `ms`. */
function within<T>(promise: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function regions(devices: readonly BlockDevice[], sector: number, count: number) {
  return devices.map((device) => ({ device, sector, count }));
}

describe('kcopyd on a busy shared dm-io client', () => {
  it('a copy waits while the client is full, then completes byte-exact', async () => {
    const { client, hold, others } = fullClient();
    const throttle = dmKcopydThrottleCreate(100);
    const kc = dmKcopydClientCreate({ ioClient: client, subJobSectors: 8, throttle });
    const source = new ProbeDevice(patternDevice(256, 31));
    const dests = [ramDevice(256, 'a'), ramDevice(256, 'b')];
    const shown: number[] = [];
    const copy = dmKcopydCopy(kc, { device: source, sector: 0, count: 256 },
      regions(dests, 0, 256), { onChunkRead: (sector) => shown.push(sector) });
    await pause(40);
    assert.equal(source.log.length, 0, 'nothing was issued while the client was full');
    assert.ok(kc.passes <= 12, `the worker does not spin while it waits (${kc.passes} passes)`);
    assert.equal(throttle.ioJobs, 0, 'a refused I/O gave its throttle count back');
    hold.open();
    const result = await within(copy, 3000);
    assert.notEqual(result, 'timeout', 'the copy settled once the client had room');
    const { readErr, writeErr } = result as KcopydResult;
    assert.equal(readErr, false);
    assert.equal(writeErr, 0n);
    for (const dest of dests) assert.equal(hashOf(dest, 0, 256), hashOf(source, 0, 256));
    assert.deepEqual([...shown].sort((a, b) => a - b),
      Array.from({ length: 32 }, (_, index) => index * 8), 'every chunk shown exactly once');
    await Promise.all(others);
    assert.equal(kc.pagesOut, 0);
    assert.equal(throttle.ioJobs, 0);
    await dmKcopydClientDestroy(kc); // asserts every list empty and every page back
    assert.equal(client.inflight + client.queued, 0);
    await dmIoClientDestroy(client);
  });

  it('kcopyd alone overflowing a small shared client keeps WRITE_SEQ order', async () => {
    const client = dmIoClientCreate({ inflightMax: 1, queuedMax: 1, reservedPages: 1 });
    const kc = dmKcopydClientCreate({ ioClient: client, subJobSectors: 8 });
    const slowFirst = (req: DeviceRequest): number => Math.max(1, 12 - req.sector / 8);
    const inner = patternDevice(128, 32);
    const source = new ProbeDevice(inner, slowFirst);
    const dest = new ProbeDevice(ramDevice(128, 'dest'), () => 1);
    const result = await within(dmKcopydCopy(kc, { device: source, sector: 0, count: 128 },
      regions([dest], 0, 128), { writeSeq: true }), 5000);
    assert.notEqual(result, 'timeout');
    assert.equal((result as KcopydResult).writeErr, 0n);
    const order = dest.log.map((entry) => entry.sector);
    assert.deepEqual(order, [...order].sort((a, b) => a - b), 'writes in offset order');
    assert.equal(order.length, 16);
    assert.equal(hashOf(dest, 0, 128), hashOf(inner, 0, 128));
    await dmKcopydClientDestroy(kc);
    await dmIoClientDestroy(client);
  });

  it('a flush the busy client refuses is retried; the zero job and its flush complete',
    async () => {
      const client = dmIoClientCreate({ inflightMax: 1, queuedMax: 1, reservedPages: 1 });
      const kc = dmKcopydClientCreate({ ioClient: client, subJobSectors: 8 });
      const hold = new HoldDevice(64);
      const dest = new HookDevice(patternDevice(64, 33), () => 2);
      const others: Promise<unknown>[] = [];
      // Once the job's only write completed, other users fill the client before the worker
      // runs the job's completion, so the flush it then issues is refused.
      dest.afterDone = () => fillUp(client, hold, others);
      const zero = dmKcopydZero(kc, regions([dest], 0, 8), { flush: true });
      while (dest.log.length === 0 || dest.inflight > 0) await pause(1);
      await pause(20);
      assert.equal(dest.log.length, 1, 'the write went; the flush waits for room');
      assert.equal(await within(zero, 1), 'timeout', 'the job waits, it did not fail');
      hold.open();
      const result = await within(zero, 3000);
      assert.notEqual(result, 'timeout');
      assert.equal((result as KcopydResult).writeErr, 0n);
      assert.ok(readBytes(dest, 0, 8).every((byte) => byte === 0));
      assert.ok(dest.log.some((entry) => entry.countSectors === 0), 'the flush reached the device');
      await Promise.all(others);
      await dmKcopydClientDestroy(kc);
      await dmIoClientDestroy(client);
    });

  it('the end flush of a stream copy waits for room instead of rejecting', async () => {
    const { client, hold, others } = fullClient();
    const kc = dmKcopydClientCreate({ ioClient: client });
    const dest = new ProbeDevice(ramDevice(64, 'dest'));
    const flushing = kc.flushDevices([dest]);
    assert.equal(await within(flushing, 20), 'timeout', 'waiting, not rejected');
    hold.open();
    const result = await within(flushing, 3000);
    assert.notEqual(result, 'timeout');
    assert.deepEqual(result, { errorBits: 0n, errors: [undefined] });
    assert.equal(dest.log.length, 1);
    await Promise.all(others);
    await dmKcopydClientDestroy(kc);
    await dmIoClientDestroy(client);
  });

  it('a job cancelled while it waits for room settles at once', async () => {
    const { client, hold, others } = fullClient();
    const kc = dmKcopydClientCreate({ ioClient: client, subJobSectors: 8 });
    const source = new ProbeDevice(patternDevice(64, 34));
    const controller = new AbortController();
    const copy = dmKcopydCopy(kc, { device: source, sector: 0, count: 64 },
      regions([ramDevice(64, 'dest')], 0, 64), { signal: controller.signal });
    await pause(10);
    controller.abort(new Error('stop'));
    const result = await within(copy, 1000);
    assert.notEqual(result, 'timeout', 'settled while the client was still full');
    assert.equal((result as KcopydResult).aborted, true);
    assert.equal(source.log.length, 0);
    await dmKcopydClientDestroy(kc); // the shared client is still full: kcopyd holds nothing
    assert.equal(kc.pagesOut, 0);
    hold.open();
    await Promise.all(others);
    await dmIoClientDestroy(client);
  });

  it('destroy during the wait resolves once the job completed', async () => {
    const { client, hold, others } = fullClient();
    const kc = dmKcopydClientCreate({ ioClient: client, subJobSectors: 8 });
    const source = patternDevice(64, 35);
    const dest = ramDevice(64, 'dest');
    let settled: KcopydResult | null = null;
    void dmKcopydCopy(kc, { device: source, sector: 0, count: 64 }, regions([dest], 0, 64), {})
      .then((result) => { settled = result; });
    await pause(10);
    const destroying = dmKcopydClientDestroy(kc);
    await pause(10);
    assert.equal(settled, null, 'still waiting for room');
    hold.open();
    assert.notEqual(await within(destroying, 3000), 'timeout');
    assert.ok(settled !== null);
    assert.equal((settled as KcopydResult).writeErr, 0n);
    assert.equal(hashOf(dest, 0, 64), hashOf(source, 0, 64));
    assert.equal(kc.pagesOut, 0);
    await Promise.all(others);
    await dmIoClientDestroy(client);
  });
});
