// Property tests: random sequences of multi-region writes, reads, discards, write-zeroes, flushes
// and fault changes over 1–3 RAM devices wrapped in fault devices with random small limits
// (forcing splits by sectors, segments and logical blocks), some needing aligned memory (the
// O_DIRECT bounce path), some completing out of order; random memory types; all three call
// forms; the same sequences also run over real files and real loop block devices (512- and
// 4096-byte sectors), buffered and O_DIRECT. After every request the model (test/helpers/model.ts) must agree on every byte of every
// device, every byte of caller memory, every error bit, every reported error, and every request
// each device saw (op, sector, count, segments, flags, ioprio, injected fault).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { readFileSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import {
  createRamDevice, dmIo, dmIoBlocking, dmIoClientCreate, dmIoClientDestroy, IoError,
  openFileDevice, SECTOR_SIZE, type BlockDevice, type DeviceOp, type DmIoMemory, type DmIoRegion,
  type DmIoRequest, type DmIoResult,
} from '../src/index.js';
import {
  createFaultDevice, type FaultDevice, type FaultOp, type FaultRange,
} from '../src/testing.js';
import { DirectDevice, pattern, peek } from './helpers/devices.js';
import { tempDir } from './helpers/tmp.js';
import { attachLoop, detachLoop, requireLoopOrSkip } from './helpers/loop.js';
import {
  backingArrays, fillLogical, logicalChunks, pageList, readLogical,
} from './helpers/memory.js';
import { runModel, type ModelChunk, type ModelDevice, type ModelRegion } from './helpers/model.js';

const NUM_RUNS = Number(process.env.DMIO_PROPERTY_RUNS ?? 150);

interface DeviceSpec {
  bigBlocks: boolean;
  sizeBlocks: number;
  maxSectors: number;
  maxSegments: number;
  maxDiscard: number;
  maxWriteZeroes: number;
  direct: boolean;
  delayed: boolean;
}

interface MemorySpec {
  type: 'page-list' | 'bvec' | 'vm' | 'kmem' | 'circular';
  offsetSectors: number;
  bvecSectors: number[];
  bvecOffsets: number[];
  kmemOffset: number;
  circularPages: number;
}

interface IoStep {
  kind: 'io';
  op: DeviceOp;
  regions: Array<{ device: number; sector: number; count: number }>;
  preflush: boolean;
  fua: boolean;
  syncFlag: boolean | undefined;
  ioprio: number | undefined;
  form: 'promise' | 'notify' | 'blocking';
  memory: MemorySpec;
  seed: number;
}

interface FaultStep {
  kind: 'faults';
  device: number;
  ranges: FaultRange[];
  down: boolean;
}

const deviceArb: fc.Arbitrary<DeviceSpec> = fc.record({
  bigBlocks: fc.integer({ min: 0, max: 4 }).map((n) => n === 0),
  sizeBlocks: fc.integer({ min: 2, max: 12 }),
  maxSectors: fc.integer({ min: 1, max: 20 }),
  maxSegments: fc.integer({ min: 1, max: 5 }),
  maxDiscard: fc.integer({ min: 0, max: 20 }),
  maxWriteZeroes: fc.integer({ min: 0, max: 20 }),
  direct: fc.integer({ min: 0, max: 3 }).map((n) => n === 0),
  delayed: fc.integer({ min: 0, max: 3 }).map((n) => n === 0),
});

const memoryArb: fc.Arbitrary<MemorySpec> = fc.record({
  type: fc.constantFrom('page-list', 'bvec', 'vm', 'kmem', 'circular'),
  offsetSectors: fc.integer({ min: 0, max: 7 }),
  bvecSectors: fc.array(fc.integer({ min: 1, max: 9 }), { minLength: 1, maxLength: 6 }),
  bvecOffsets: fc.array(fc.integer({ min: 0, max: 700 }), { maxLength: 6 }),
  kmemOffset: fc.integer({ min: 0, max: 700 }),
  circularPages: fc.integer({ min: 1, max: 3 }),
});

const ioArb: fc.Arbitrary<IoStep> = fc.record({
  kind: fc.constant('io' as const),
  op: fc.constantFrom<DeviceOp>('write', 'write', 'write', 'read', 'read', 'discard',
    'write-zeroes'),
  regions: fc.array(fc.record({
    device: fc.nat({ max: 2 }),
    sector: fc.nat({ max: 110 }),
    count: fc.oneof(fc.integer({ min: 0, max: 24 }), fc.constant(0)),
  }), { minLength: 0, maxLength: 4 }),
  preflush: fc.integer({ min: 0, max: 3 }).map((n) => n === 0),
  fua: fc.boolean(),
  syncFlag: fc.option(fc.boolean(), { nil: undefined }),
  // Priorities the kernel accepts (0, or class 1-3 with level 0-7); others are refused at the
  // boundary (dm-io-validation.test.ts).
  ioprio: fc.option(fc.oneof(fc.constant(0), fc.tuple(fc.integer({ min: 1, max: 3 }),
    fc.integer({ min: 0, max: 7 })).map(([ioClass, level]) => (ioClass << 13) | level)),
  { nil: undefined }),
  form: fc.constantFrom('promise', 'notify', 'blocking'),
  memory: memoryArb,
  seed: fc.nat(),
});

const faultOps: FaultOp[] = ['read', 'write', 'discard', 'write-zeroes', 'flush'];

const faultArb: fc.Arbitrary<FaultStep> = fc.record({
  kind: fc.constant('faults' as const),
  device: fc.nat({ max: 2 }),
  ranges: fc.array(fc.record({
    sector: fc.nat({ max: 100 }),
    countSectors: fc.integer({ min: 1, max: 16 }),
    ops: fc.option(fc.subarray(faultOps, { minLength: 1 }), { nil: undefined }),
    errno: fc.option(fc.constantFrom('EIO', 'ENOSPC', 'EREMOTEIO'), { nil: undefined }),
  }).map((range) => {
    const clean: FaultRange = { sector: range.sector, countSectors: range.countSectors };
    return { ...clean, ...(range.ops === undefined ? {} : { ops: range.ops }),
      ...(range.errno === undefined ? {} : { errno: range.errno }) };
  }), { maxLength: 2 }),
  down: fc.integer({ min: 0, max: 5 }).map((n) => n === 0),
});

const scenarioArb = fc.record({
  devices: fc.array(deviceArb, { minLength: 1, maxLength: 3 }),
  inflightMax: fc.integer({ min: 1, max: 8 }),
  reservedPages: fc.integer({ min: 1, max: 6 }),
  steps: fc.array(fc.oneof({ arbitrary: ioArb, weight: 4 }, { arbitrary: faultArb, weight: 1 }),
    { minLength: 1, maxLength: 12 }),
});

/** A small deterministic delay for some requests, so completions come back out of order. */
function delayFor(request: { sector: number; countSectors: number }): number {
  return ((request.sector * 7 + request.countSectors * 3) % 4 === 0) ? 1 : 0;
}

/** What backs each device under its fault device: RAM, or a real file (buffered or O_DIRECT). */
type Backend = 'ram' | 'file' | 'file-direct' | 'loop' | 'loop-direct';

/** A device of the scenario: what dm-io addresses, and how to read all its bytes back. */
interface Built {
  faults: FaultDevice[];
  models: ModelDevice[];
  readAll: Array<() => Uint8Array>;
  close: () => Promise<void>;
}

async function buildDevices(specs: readonly DeviceSpec[], backend: Backend,
  directory: string, run: number): Promise<Built> {
  const built: Built = { faults: [], models: [], readAll: [], close: async () => {} };
  const closers: Array<() => Promise<void>> = [];
  for (const [index, spec] of specs.entries()) {
    const sizeSectors = spec.sizeBlocks * 8;
    let inner: BlockDevice;
    let innerName: string;
    if (backend === 'ram') {
      const ram = createRamDevice({ sizeBytes: sizeSectors * SECTOR_SIZE, name: `ram${index}`,
        limits: { logicalBlockBytes: spec.bigBlocks ? 4096 : 512 } });
      inner = spec.direct ? new DirectDevice(ram) : ram;
      innerName = ram.name;
      built.readAll.push(() => peek(ram, 0, sizeSectors));
    } else if (backend === 'file' || backend === 'file-direct') {
      const path = join(directory, `run${run}-dev${index}.img`);
      const file = await openFileDevice(path, { create: { sizeBytes: sizeSectors * SECTOR_SIZE },
        direct: backend === 'file-direct' });
      inner = file;
      innerName = file.name;
      built.readAll.push(() => Uint8Array.from(readFileSync(path)));
      closers.push(async () => {
        await file.close();
        await rm(path);
      });
    } else {
      const [loopDevice, readBack, close] = await openLoopBacked(join(directory,
        `run${run}-dev${index}.img`), sizeSectors, spec.bigBlocks, backend === 'loop-direct');
      inner = loopDevice;
      innerName = loopDevice.name;
      built.readAll.push(readBack);
      closers.push(close);
    }
    const blockBytes = inner.limits.logicalBlockBytes;
    const bigBlocks = blockBytes > SECTOR_SIZE;
    const maxSectors = bigBlocks ? 8 * (1 + (spec.maxSectors % 3)) : spec.maxSectors;
    // With 4096-byte blocks a request needs up to 8 segments of 512 bytes to hold one block.
    const maxSegments = bigBlocks ? 8 + (spec.maxSegments % 3) : spec.maxSegments;
    const limits = { maxSectorsPerRequest: maxSectors, maxSegmentsPerRequest: maxSegments,
      maxDiscardSectors: spec.maxDiscard, maxWriteZeroesSectors: spec.maxWriteZeroes };
    built.faults.push(createFaultDevice(inner, { name: `dev${index}`, limits,
      ...(spec.delayed ? { delayMs: delayFor } : {}) }));
    built.models.push({
      name: `dev${index}`, innerName, sizeSectors, logicalBlockBytes: blockBytes,
      maxSectorsPerRequest: maxSectors, maxSegmentsPerRequest: maxSegments,
      maxDiscardSectors: spec.maxDiscard, maxWriteZeroesSectors: spec.maxWriteZeroes,
      direct: inner.limits.memoryAlignmentBytes > 0,
      bytes: new Uint8Array(sizeSectors * SECTOR_SIZE), ranges: [], down: false,
    });
  }
  built.close = async () => {
    for (const close of closers) await close();
  };
  return built;
}

/**
 * A real loop block device over a fresh image (512- or 4096-byte sectors), opened buffered or
 * with O_DIRECT. Its bytes are read back through the block device itself, which is coherent
 * with both buffered and direct writes to it.
 */
async function openLoopBacked(imagePath: string, sizeSectors: number, bigBlocks: boolean,
  direct: boolean): Promise<[BlockDevice, () => Uint8Array, () => Promise<void>]> {
  await writeFile(imagePath, new Uint8Array(sizeSectors * SECTOR_SIZE));
  const loopPath = await attachLoop(imagePath, { sectorSize: bigBlocks ? 4096 : 512 });
  try {
    const device = await openFileDevice(loopPath, { direct });
    assert.equal(device.kind, 'block');
    return [device, () => Uint8Array.from(readFileSync(loopPath)), async () => {
      await device.close();
      await detachLoop(loopPath);
      await rm(imagePath);
    }];
  } catch (error) {
    await detachLoop(loopPath);
    throw error;
  }
}

/** Chunk lengths, each marked when it continues the previous chunk in the same memory. */
function modelChunks(views: readonly Uint8Array[]): ModelChunk[] {
  return views.map((view, index) => {
    const previous = index > 0 ? views[index - 1] : undefined;
    return {
      bytes: view.length,
      joinsPrevious: previous !== undefined && previous.buffer === view.buffer &&
        previous.byteOffset + previous.length === view.byteOffset,
    };
  });
}

/** Regions made valid for their devices: aligned to blocks, not overlapping on one device. */
function normaliseRegions(step: IoStep, models: readonly ModelDevice[]): ModelRegion[] {
  const regions: ModelRegion[] = [];
  const source = step.op === 'read' ? step.regions.slice(0, 1) : step.regions;
  for (const raw of source) {
    const device = raw.device % models.length;
    const model = models[device] as ModelDevice;
    const blockSectors = model.logicalBlockBytes / SECTOR_SIZE;
    const sector = Math.min(raw.sector, model.sizeSectors + 8);
    const aligned = sector - (sector % blockSectors);
    let count = raw.count - (raw.count % blockSectors);
    const overlapping = regions.some((other) => other.device === device && other.count > 0 &&
      count > 0 && aligned < other.sector + other.count && other.sector < aligned + count);
    if (overlapping) count = 0;
    regions.push({ device, sector: aligned, count });
  }
  return regions;
}

function buildMemory(spec: MemorySpec, op: DeviceOp, lengthBytes: number): DmIoMemory {
  const pagesFor = (bytes: number): number => Math.max(1, Math.ceil(bytes / 4096));
  const type = spec.type === 'circular' && op === 'read' ? 'page-list' : spec.type;
  switch (type) {
    case 'page-list': {
      const offset = spec.offsetSectors * SECTOR_SIZE;
      return { type, list: pageList(pagesFor(offset + lengthBytes)), offset };
    }
    case 'circular': {
      const offset = spec.offsetSectors * SECTOR_SIZE;
      return { type: 'page-list', list: pageList(spec.circularPages, { circular: true }),
        offset };
    }
    case 'bvec': {
      const bvecs = [];
      let totalBytes = 0;
      for (let index = 0; totalBytes < lengthBytes || index === 0; index += 1) {
        const len = (spec.bvecSectors[index % spec.bvecSectors.length] ?? 1) * SECTOR_SIZE;
        const offset = spec.bvecOffsets[index % Math.max(1, spec.bvecOffsets.length)] ?? 0;
        bvecs.push({ page: new Uint8Array(offset + len + 64), len, offset });
        totalBytes += len;
      }
      return { type, bvecs };
    }
    case 'vm':
      return { type, data: new Uint8Array(lengthBytes + 100) };
    case 'kmem':
      return { type, data: new Uint8Array(spec.kmemOffset + lengthBytes + 100),
        offset: spec.kmemOffset };
  }
}

/** Runs one dm-io request in the chosen form; checks the callback is once and deferred. */
async function runForm(
  form: IoStep['form'], request: DmIoRequest, regions: DmIoRegion[],
): Promise<DmIoResult> {
  if (form === 'blocking') return dmIoBlocking(request, regions);
  if (form === 'promise') return dmIo(request, regions);
  return new Promise<DmIoResult>((resolve, reject) => {
    let returned = false;
    let calls = 0;
    dmIo({ ...request, notify: { fn: (bits, context, result) => {
      calls += 1;
      if (!returned) reject(new Error('notify ran inside dmIo'));
      if (calls > 1) reject(new Error('notify ran twice'));
      if (context !== 'ctx' || bits !== result.errorBits) reject(new Error('bad notify args'));
      setTimeout(() => resolve(result), 2);
    }, context: 'ctx' } }, regions);
    returned = true;
  });
}

async function runIoStep(
  step: IoStep, built: Built, reservedPages: number, client: ReturnType<typeof dmIoClientCreate>,
): Promise<void> {
  const { faults, models } = built;
  const regions = normaliseRegions(step, models);
  const maxCount = Math.max(0, ...regions.map((region) => region.count));
  const lengthBytes = maxCount * SECTOR_SIZE;
  const dataOp = step.op === 'read' || step.op === 'write';
  const memory = dataOp && lengthBytes > 0 ? buildMemory(step.memory, step.op, lengthBytes) :
    undefined;
  let data: Uint8Array | null = null;
  let before: Uint8Array[] = [];
  if (memory !== undefined) {
    for (const array of backingArrays(memory)) array.set(pattern(array.length, step.seed + 1));
    if (step.op === 'write') {
      fillLogical(memory, pattern(lengthBytes, step.seed));
      data = readLogical(memory, lengthBytes); // A circular list aliases: read what it holds.
    }
    before = backingArrays(memory).map((array) => array.slice());
  }
  const flags = { preflush: step.preflush, fua: step.fua,
    ...(step.syncFlag === undefined ? {} : { sync: step.syncFlag }) };
  const sync = step.form === 'notify' ? step.syncFlag ?? false : true;
  const outcome = runModel(models, {
    op: step.op, regions, flags: { sync, preflush: step.preflush, fua: step.fua },
    ...(step.ioprio === undefined ? {} : { ioprio: step.ioprio }),
    chunks: memory === undefined ? [] : modelChunks(logicalChunks(memory, lengthBytes)),
    data, reservedPages,
  });

  for (const device of faults) device.clearTrace();
  const request: DmIoRequest = { op: step.op, flags, client,
    ...(memory === undefined ? {} : { mem: memory }),
    ...(step.ioprio === undefined ? {} : { ioprio: step.ioprio }) };
  const result = await runForm(step.form,
    request, regions.map((region) => ({ device: faults[region.device] as FaultDevice,
      sector: region.sector, count: region.count })));

  assert.equal(result.errorBits, outcome.errorBits, 'error bits');
  assert.equal(result.errors.length, regions.length);
  for (const [index, error] of result.errors.entries()) {
    const allowed = outcome.errors[index] ?? [];
    if (allowed.length === 0) {
      assert.equal(error, undefined, `region ${index} has no error`);
      continue;
    }
    assert.ok(error instanceof IoError, `region ${index} has an IoError`);
    assert.equal(error.regionIndex, index);
    const seen = { code: error.code, errno: error.errno, device: error.device,
      sector: error.sector, countSectors: error.countSectors };
    assert.ok(allowed.some((expected) => JSON.stringify(expected) === JSON.stringify(seen)),
      `region ${index}: ${JSON.stringify(seen)} not in ${JSON.stringify(allowed)}`);
  }
  for (const [index, device] of faults.entries()) {
    const expected = (outcome.requests.get(index) ?? []).map((entry) => ({
      op: entry.op, sector: entry.sector, countSectors: entry.countSectors,
      segmentCount: entry.segmentCount, flags: entry.flags, ioprio: entry.ioprio,
      injected: entry.injected,
    }));
    assert.deepEqual(device.trace.map((entry) => ({ ...entry, flags: { ...entry.flags } })),
      expected, `requests seen by dev${index}`);
    const model = models[index] as ModelDevice;
    const readAll = built.readAll[index] as () => Uint8Array;
    assert.ok(Buffer.from(readAll()).equals(Buffer.from(model.bytes)), `bytes of dev${index}`);
  }
  if (memory !== undefined) {
    const after = backingArrays(memory);
    if (outcome.readBytes !== null) {
      // Expected memory: what it held before, with the transfer's bytes replaced.
      const expectedArrays = new Map(after.map((array, index) => [array, before[index]]));
      const scratch = remap(memory, expectedArrays as Map<Uint8Array, Uint8Array>);
      fillLogical(scratch, outcome.readBytes);
      before = backingArrays(scratch);
    }
    for (const [index, array] of after.entries()) {
      assert.ok(Buffer.from(array).equals(Buffer.from(before[index] as Uint8Array)),
        `caller memory array ${index} (${memory.type})`);
    }
  }
  assert.equal(client.inflight, 0);
  assert.equal(client.freePages, reservedPages, 'every pool page came back');
}

/** The same memory shape over other arrays (for computing expected contents). */
function remap(memory: DmIoMemory, to: Map<Uint8Array, Uint8Array>): DmIoMemory {
  const get = (array: Uint8Array): Uint8Array => to.get(array) ?? array;
  switch (memory.type) {
    case 'page-list': {
      const nodes = new Map<unknown, { page: Uint8Array; next: null | object }>();
      const copy = (node: typeof memory.list): typeof memory.list => {
        const existing = nodes.get(node);
        if (existing !== undefined) return existing as typeof memory.list;
        const fresh = { page: get(node.page), next: null as typeof memory.list | null };
        nodes.set(node, fresh);
        fresh.next = node.next === null ? null : copy(node.next);
        return fresh;
      };
      return { type: 'page-list', list: copy(memory.list), offset: memory.offset };
    }
    case 'bvec':
      return { type: 'bvec', bvecs: memory.bvecs.map((bvec) => ({ ...bvec,
        page: get(bvec.page) })) };
    case 'vm':
      return { type: 'vm', data: get(memory.data) };
    case 'kmem':
      return { type: 'kmem', data: get(memory.data),
        ...(memory.offset === undefined ? {} : { offset: memory.offset }) };
  }
}

type Scenario = typeof scenarioArb extends fc.Arbitrary<infer T> ? T : never;

async function runScenario(
  scenario: Scenario, backend: Backend, directory: string, run: number,
): Promise<void> {
  const built = await buildDevices(scenario.devices, backend, directory, run);
  const client = dmIoClientCreate({ inflightMax: scenario.inflightMax,
    reservedPages: scenario.reservedPages });
  try {
    for (const step of scenario.steps) {
      if (step.kind === 'faults') {
        const index = step.device % built.faults.length;
        (built.faults[index] as FaultDevice).setFaults({ ranges: step.ranges, down: step.down });
        const model = built.models[index] as ModelDevice;
        model.ranges = step.ranges;
        model.down = step.down;
        continue;
      }
      await runIoStep(step, built, scenario.reservedPages, client);
    }
    await dmIoClientDestroy(client);
  } finally {
    await built.close();
  }
}

const BACKENDS: ReadonlyArray<readonly [Backend, number]> = [
  ['ram', NUM_RUNS],
  ['file', Math.max(1, Math.round(NUM_RUNS / 4))],
  ['file-direct', Math.max(1, Math.round(NUM_RUNS / 4))],
  ['loop', Math.max(1, Math.round(NUM_RUNS / 6))],
  ['loop-direct', Math.max(1, Math.round(NUM_RUNS / 6))],
];

for (const [backend, numRuns] of BACKENDS) {
  test(`random dm-io sequences over ${backend} devices agree with the model on every byte ` +
    'and every error bit', async (t) => {
    if (backend.startsWith('loop') && !requireLoopOrSkip(t)) return;
    const directory = await tempDir(t);
    let run = 0;
    await fc.assert(fc.asyncProperty(scenarioArb, async (scenario) => {
      run += 1;
      await runScenario(scenario, backend, directory, run);
    }), { numRuns });
  });
}
