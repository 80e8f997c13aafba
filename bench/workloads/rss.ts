import type { BenchContext } from '../context.js';

export function runRssWorkload(_context: BenchContext): Promise<void> {
  return Promise.resolve();
}
