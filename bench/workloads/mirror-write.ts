import type { BenchContext } from '../context.js';

export function runMirrorWriteWorkload(_context: BenchContext): Promise<void> {
  return Promise.resolve();
}
