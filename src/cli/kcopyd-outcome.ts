// Owns turning a kcopyd result into the CLI's per-destination report, truthfully: a destination
// is ok only when kcopyd wrote every byte of the region to it and the source was read without
// error. A clear write bit alone proves nothing: a job that stops early (a failed source read,
// an interrupt) leaves destinations whose bit is clear but which are incomplete, and with
// --ignore-errors a complete destination may hold zeros where the source could not be read.
// A destination whose final flush failed counts no bytes (kcopyd's flush: true) and says so.

import type { KcopydResult } from '../index.js';
import type { DestinationReport } from './report.js';

/** One report per destination spec, from the result of a copy or zero of `totalBytes`. */
export function kcopydDestinations(
  specs: readonly string[], result: KcopydResult, totalBytes: number,
): DestinationReport[] {
  return specs.map((device, index) => {
    const bytesWritten = result.writtenBytes[index] ?? 0;
    const failed = ((result.writeErr >> BigInt(index)) & 1n) === 1n;
    if (failed) {
      const error = result.writeErrors[index];
      const message = error?.message ?? 'write failed';
      // Only a flush is a request of zero sectors (the job's flush: true).
      const flush = (error as { countSectors?: unknown } | undefined)?.countSectors === 0;
      return { device, ok: false, bytesWritten,
        error: flush ? `flush failed: ${message}` : message };
    }
    if (bytesWritten < totalBytes) {
      const why = result.readErr ? 'the copy stopped when reading the source failed' :
        'the job ended before every byte was written';
      return { device, ok: false, bytesWritten, error: `incomplete: ${why}` };
    }
    if (result.readErr) {
      return { device, ok: false, bytesWritten,
        error: 'written, but the parts of the source that could not be read are zeros here' };
    }
    return { device, ok: true, bytesWritten, error: null };
  });
}
