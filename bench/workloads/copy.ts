import type { BenchContext } from '../context.js';

export function runCopyWorkload(_context: BenchContext): Promise<void> {
  return Promise.resolve();
}
