// Property test of kcopyd's failure report: random copies and zero jobs over 1–4 RAM
// destinations behind fault devices that fail random write ranges, with random completion
// delays (so chunks finish out of order), in every mode (the kernel's default, ignoreError,
// writeSeq, dropFailedDestinations and their mixes), sometimes cancelled part-way by the
// signal or by a throwing onProgress. Whatever happens: writtenBytes[d] is exactly what the
// fault device let through; a destination whose writtenBytes is the total has a clear bit and
// holds the source (or zeros) byte for byte; with dropFailedDestinations every destination
// without faults is complete; a cancelled job's clear bits mean complete; every page is back.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import type { DmIoRegion } from '../src/core/request.js';
import { createFaultDevice, type FaultDevice, type FaultRange } from '../src/devices/fault-device.js';
import type { KcopydResult } from '../src/kcopyd/job.js';
import { dmKcopydClientCreate, dmKcopydClientDestroy } from '../src/kcopyd/kcopyd.js';
import { dmKcopydCopy, dmKcopydZero } from '../src/kcopyd/submit.js';
import type { KcopydJobOptions } from '../src/kcopyd/validate-job.js';
import { patternDevice, readBytes } from './kcopyd-helpers.js';

const NUM_RUNS = Number(process.env.DMIO_PROPERTY_RUNS ?? 150);

const destArb = fc.record({
  faults: fc.array(fc.record({ sector: fc.nat(319), countSectors: fc.integer({ min: 1, max: 24 }) }),
    { maxLength: 2 }),
  delaySeed: fc.nat(7),
  writeZeroes: fc.boolean(),
});

const scenarioArb = fc.record({
  subJobSectors: fc.constantFrom(8, 16, 32),
  countSectors: fc.integer({ min: 0, max: 40 }).map((blocks) => blocks * 8),
  kind: fc.constantFrom('copy', 'zero'),
  dests: fc.array(destArb, { minLength: 1, maxLength: 4 }),
  ignoreError: fc.boolean(),
  writeSeq: fc.boolean(),
  drop: fc.boolean(),
  cancel: fc.option(fc.record({ afterChunks: fc.nat(6), how: fc.constantFrom('signal', 'throw') }),
    { nil: null }),
  sourceDelaySeed: fc.nat(7),
});

type Scenario = typeof scenarioArb extends fc.Arbitrary<infer T> ? T : never;

/** A completion delay of 0–3 ms that varies with the sector, so chunks finish out of order. */
function delayOf(seed: number): (request: { sector: number }) => number {
  return (request) => ((request.sector >> 3) * (seed + 3) + seed) % 4;
}

function tracedWriteBytes(device: FaultDevice): number {
  return device.trace.filter((entry) => (entry.op === 'write' || entry.op === 'write-zeroes') &&
    entry.injected === null).reduce((sum, entry) => sum + entry.countSectors * 512, 0);
}

async function runScenario(scenario: Scenario): Promise<void> {
  const count = scenario.countSectors;
  const totalBytes = count * 512;
  const sourceInner = patternDevice(Math.max(count, 8), 1);
  const source = createFaultDevice(sourceInner, { delayMs: delayOf(scenario.sourceDelaySeed) });
  const dests = scenario.dests.map((spec, index) => createFaultDevice(
    patternDevice(Math.max(count, 8), 10 + index), {
      ranges: spec.faults.map((fault): FaultRange => ({ ...fault, ops: ['write', 'write-zeroes'] })),
      delayMs: delayOf(spec.delaySeed),
      limits: spec.writeZeroes ? {} : { maxWriteZeroesSectors: 0 },
    }));
  const regions: DmIoRegion[] = dests.map((device) => ({ device, sector: 0, count }));
  const controller = new AbortController();
  let progressCalls = 0;
  const options: KcopydJobOptions = {
    ignoreError: scenario.ignoreError, writeSeq: scenario.writeSeq,
    dropFailedDestinations: scenario.drop, signal: controller.signal,
    onProgress: () => {
      progressCalls += 1;
      const cancel = scenario.cancel;
      if (cancel === null || progressCalls !== cancel.afterChunks + 1) return;
      if (cancel.how === 'throw') throw new Error('progress threw');
      controller.abort('stop');
    },
  };
  const kc = dmKcopydClientCreate({ subJobSectors: scenario.subJobSectors });
  const result: KcopydResult = scenario.kind === 'copy' ?
    await dmKcopydCopy(kc, { device: source, sector: 0, count }, regions, options) :
    await dmKcopydZero(kc, regions, options);
  await dmKcopydClientDestroy(kc); // every job done, every page back

  const expected = scenario.kind === 'copy' ? readBytes(sourceInner, 0, count) :
    new Uint8Array(totalBytes);
  assert.equal(result.readErr, false, 'no source faults');
  if (scenario.cancel === null) assert.equal(result.aborted, false);
  dests.forEach((dest, index) => {
    const writtenBytes = result.writtenBytes[index];
    const bit = ((result.writeErr >> BigInt(index)) & 1n) !== 0n;
    assert.equal(writtenBytes, tracedWriteBytes(dest), `destination ${index}: exact`);
    const complete = writtenBytes === totalBytes;
    if (complete) {
      assert.equal(bit, false, `destination ${index}: complete, so its bit is clear`);
      assert.ok(Buffer.from(readBytes(dest, 0, count)).equals(Buffer.from(expected)),
        `destination ${index}: complete, byte for byte`);
    }
    const healthy = scenario.dests[index]!.faults.length === 0;
    if (scenario.drop && healthy && !result.aborted) {
      assert.ok(complete, `destination ${index}: no faults, so drop mode completes it`);
    }
    if (healthy && !scenario.dests.some((spec) => spec.faults.length > 0) && !result.aborted) {
      assert.ok(complete, `destination ${index}: no faults anywhere`);
    }
    if (result.aborted) {
      assert.equal(bit, !complete, `destination ${index}: cancelled, bit ⇔ incomplete`);
    }
  });
}

test('kcopyd reports every destination truthfully under random write failures, in every mode',
  async () => {
    await fc.assert(fc.asyncProperty(scenarioArb, runScenario), { numRuns: NUM_RUNS });
  });
