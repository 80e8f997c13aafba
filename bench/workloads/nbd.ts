import type { BenchContext } from '../context.js';

export function runNbdWorkload(_context: BenchContext): Promise<void> {
  return Promise.resolve();
}
