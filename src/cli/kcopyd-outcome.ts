// Owns turning a kcopyd result into the CLI's per-destination report, truthfully: a destination
// is ok only when kcopyd wrote every byte of the region to it and the source was read without
// error. A clear write bit alone proves nothing: a job that stops early (a failed source read,
// an interrupt) leaves destinations whose bit is clear but which are incomplete, and with
// --ignore-errors a complete destination may hold zeros where the source could not be read.

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
      const message = result.writeErrors[index]?.message ?? 'write failed';
      return { device, ok: false, bytesWritten, error: message };
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
