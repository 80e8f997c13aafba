// The kcopyd throttle on virtual time: unthrottled runs never sleep, 50 % keeps a serial
// device about half busy, 0 % delays each I/O by at most ten 100 ms sleeps and still
// finishes, and one throttle shared by two clients limits them together.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isDmIoError } from '../src/errors.js';
import { dmKcopydClientCreate, dmKcopydClientDestroy } from '../src/kcopyd/kcopyd.js';
import type { KcopydClient } from '../src/kcopyd/kcopyd-client.js';
import { dmKcopydCopy } from '../src/kcopyd/submit.js';
import { dmKcopydThrottleCreate, type KcopydThrottle } from '../src/kcopyd/throttle.js';
import { SerialDevice, VirtualClock } from './kcopyd-helpers.js';

const SERVICE_MS = 10;

function client(clock: VirtualClock, throttle: KcopydThrottle | null): KcopydClient {
  return dmKcopydClientCreate({ subJobSectors: 8, throttle, sleep: clock.sleep });
}

async function copyOn(kc: KcopydClient, device: SerialDevice, sectors: number): Promise<void> {
  const result = await dmKcopydCopy(kc, { device, sector: 0, count: sectors },
    [{ device, sector: sectors, count: sectors }], {});
  assert.equal(result.writeErr, 0n);
}

describe('kcopyd throttle', () => {
  it('100 (off) never sleeps: the device is busy all the time', async () => {
    const clock = new VirtualClock();
    const throttle = dmKcopydThrottleCreate(100, { now: clock.now });
    const device = new SerialDevice('disk', 4096, clock, SERVICE_MS);
    const kc = client(clock, throttle);
    await copyOn(kc, device, 800);
    await dmKcopydClientDestroy(kc);
    assert.equal(clock.sleeps, 0);
    assert.equal(device.busyMs, clock.nowMs);
    assert.equal(throttle.ioJobs, 0);
  });

  it('50 under continuous load keeps the device about half busy', async () => {
    const clock = new VirtualClock();
    const throttle = dmKcopydThrottleCreate(50, { now: clock.now });
    const device = new SerialDevice('disk', 8192, clock, SERVICE_MS);
    const kc = client(clock, throttle);
    await copyOn(kc, device, 2400);
    await dmKcopydClientDestroy(kc);
    const duty = device.busyMs / clock.nowMs;
    if (process.env.KCOPYD_TEST_VERBOSE) console.log({ duty, nowMs: clock.nowMs });
    assert.ok(clock.nowMs > 5000, `a long enough run: ${clock.nowMs} ms`);
    assert.ok(duty > 0.4 && duty < 0.6, `duty cycle ${duty.toFixed(3)}`);
  });

  it('0 delays each I/O by at most 10 sleeps of 100 ms, and copying still completes', async () => {
    const clock = new VirtualClock();
    const throttle = dmKcopydThrottleCreate(0, { now: clock.now });
    const device = new SerialDevice('disk', 1024, clock, SERVICE_MS);
    const kc = client(clock, throttle);
    let sleepsSinceIo = 0;
    let sleepsMax = 0;
    const submit = device.submit.bind(device);
    device.submit = (req, done) => {
      sleepsMax = Math.max(sleepsMax, sleepsSinceIo);
      sleepsSinceIo = 0;
      submit(req, done);
    };
    const sleep = clock.sleep;
    const counting = async (ms: number): Promise<void> => {
      assert.equal(ms, 100);
      sleepsSinceIo += 1;
      await sleep(ms);
    };
    const kc0 = dmKcopydClientCreate({ subJobSectors: 8, throttle, sleep: counting });
    await copyOn(kc0, device, 80);
    await dmKcopydClientDestroy(kc0);
    await dmKcopydClientDestroy(kc);
    assert.equal(device.requests, 20);
    assert.ok(sleepsMax >= 1 && sleepsMax <= 10, `most sleeps before one I/O: ${sleepsMax}`);
  });

  it('a throttle shared by two clients limits them together', async () => {
    async function run(shared: boolean): Promise<number> {
      const clock = new VirtualClock();
      const first = dmKcopydThrottleCreate(50, { now: clock.now });
      const second = shared ? first : dmKcopydThrottleCreate(50, { now: clock.now });
      const device = new SerialDevice('disk', 8192, clock, SERVICE_MS);
      const a = client(clock, first);
      const b = client(clock, second);
      await Promise.all([
        dmKcopydCopy(a, { device, sector: 0, count: 1200 }, [{ device, sector: 4000, count: 1200 }]),
        dmKcopydCopy(b, { device, sector: 1200, count: 1200 }, [{ device, sector: 5200, count: 1200 }]),
      ]);
      await Promise.all([dmKcopydClientDestroy(a), dmKcopydClientDestroy(b)]);
      return device.busyMs / clock.nowMs;
    }
    const together = await run(true);
    const apart = await run(false);
    if (process.env.KCOPYD_TEST_VERBOSE) console.log({ together, apart });
    assert.ok(together > 0.4 && together < 0.6, `shared duty ${together.toFixed(3)}`);
    assert.ok(apart > together + 0.1, `separate throttles let more through: ${apart.toFixed(3)}`);
  });

  it('validates the percent', () => {
    assert.throws(() => dmKcopydThrottleCreate(101), (e) => isDmIoError(e, 'DMIO_ERR_OUT_OF_RANGE'));
    const throttle = dmKcopydThrottleCreate(30);
    assert.throws(() => { throttle.percent = -1; }, (e) => isDmIoError(e, 'DMIO_ERR_OUT_OF_RANGE'));
    throttle.percent = 100;
    assert.equal(throttle.active, false);
  });
});
