// Owns making `dmio write` durable before it reports success (copy and zero ask kcopyd's
// `flush: true`, which does the same): one dm-io write whose
// regions are all zero-count with PREFLUSH, one region per destination (the kernel mirror's
// idiom for flushing its legs). Files and block devices answer with fdatasync, NBD exports with
// NBD_CMD_FLUSH, in-process devices have nothing to flush. Each destination's flush error comes
// back on its own bit, so one device that cannot flush does not hide the others.

import { dmIo, dmIoClientCreate, dmIoClientDestroy, type BlockDevice } from '../index.js';
import type { DestinationReport } from './report.js';

/**
 * Flushes each device whose `wanted` entry is true; resolves with one entry per device: the
 * flush error's message, or null (flushed, or not asked to).
 */
export async function flushDevices(
  devices: readonly BlockDevice[], wanted: readonly boolean[],
): Promise<Array<string | null>> {
  const indexes = devices.map((_, index) => index).filter((index) => wanted[index] === true);
  const outcome = new Array<string | null>(devices.length).fill(null);
  if (indexes.length === 0) return outcome;
  const client = dmIoClientCreate();
  try {
    const { errorBits, errors } = await dmIo({
      op: 'write', mem: { type: 'kmem', data: new Uint8Array(0) }, client,
      flags: { preflush: true },
    }, indexes.map((index) => ({ device: devices[index]!, sector: 0, count: 0 })));
    indexes.forEach((deviceIndex, regionIndex) => {
      if (((errorBits >> BigInt(regionIndex)) & 1n) === 1n) {
        outcome[deviceIndex] = errors[regionIndex]?.message ?? 'flush failed';
      }
    });
  } finally {
    await dmIoClientDestroy(client);
  }
  return outcome;
}

/**
 * The reports with every destination whose flush failed marked not ok and counting no bytes,
 * as kcopyd's `flush: true` does: after a failed flush nothing written there is known to be on
 * stable storage. An earlier error is kept as the reason.
 */
export function withFlushErrors(
  destinations: readonly DestinationReport[], flushErrors: ReadonlyArray<string | null>,
): DestinationReport[] {
  return destinations.map((destination, index) => {
    const problem = flushErrors[index] ?? null;
    if (problem === null) return destination;
    return { ...destination, ok: false, bytesWritten: 0,
      error: destination.error ?? `flush failed: ${problem}` };
  });
}

/** Bit d set ⇔ device d's flush failed. */
export function flushErrorBits(flushErrors: ReadonlyArray<string | null>): bigint {
  let bits = 0n;
  flushErrors.forEach((problem, index) => {
    if (problem !== null) bits |= 1n << BigInt(index);
  });
  return bits;
}
