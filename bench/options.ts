// Owns the bench's command line: which workloads to run, how big, how long and how often. Two
// presets: the default (1 GiB data, 3 repetitions, 0.5 s per random-I/O run: about 10 minutes
// in all on 2 cores) and `--quick` (64 MiB, 1 repetition, short runs: about 1-3 minutes for
// everything). Any explicit option overrides the preset.

import { parseArgs } from 'node:util';
import { parseSize } from '../src/index.js';
import type { WorkloadId } from './model.js';
import type { Engine } from './proc.js';

/** Everything a bench run is told. */
export interface BenchOptions {
  readonly quick: boolean;
  readonly workloads: readonly WorkloadId[];
  /** Repetitions per variant; medians are over these. */
  readonly reps: number;
  /** Data size of workloads 1-4 (file, loop device, copy source, NBD export). */
  readonly sizeBytes: number;
  /** Workload 1: measured time per run, and the uncounted warm-up before it. */
  readonly durationMs: number;
  readonly warmupMs: number;
  /** Workload 1: `file` (buffered, page cache) and/or `loop` (loop device, O_DIRECT). */
  readonly targets: readonly ('file' | 'loop')[];
  readonly ops: readonly ('read' | 'write')[];
  readonly depths: readonly number[];
  /** fio engines compared in workload 1. */
  readonly fioEngines: readonly string[];
  /** libuv engines the Node and dmio variants run under. */
  readonly engines: readonly Engine[];
  /** Workload 5: copy sizes whose peak RSS is measured. */
  readonly rssSizesBytes: readonly number[];
  /** Scratch directory (created and removed by the bench). */
  readonly scratchParent: string;
  /** Where the JSON results go. */
  readonly resultsPath: string | null;
  /** May the bench `apt-get install` missing peers? */
  readonly install: boolean;
}

export const USAGE = `usage: npm run bench -- [options]
  --quick               small and short: 64M, 1 repetition, 250 ms runs (about 1-3 minutes)
  --workloads 1,2,3,4,5,6,7 which workloads (default all; 6 is dmio serve, 7 device stacks)
  --reps N              repetitions per variant; the table shows medians (default 3, quick 1)
  --size SIZE           data size of workloads 1-4 and 6 (default 1G, quick 64M)
  --duration-ms MS      workload 1: measured time per run (default 500, quick 250)
  --warmup-ms MS        workload 1: uncounted time before it (default 100, quick 50)
  --targets file,loop   workload 1 targets (default both)
  --ops read,write      workload 1 directions (default both)
  --qd 1,32             workload 1 queue depths (default 1,32)
  --fio-engines LIST    workload 1 fio engines (default io_uring,libaio,psync)
  --engines LIST        libuv engines for Node/dmio: threadpool,uring (default both)
  --rss-sizes LIST      workload 5 copy sizes (default 256M,4G, quick 32M,512M)
  --dir PATH            parent of the scratch directory (default /tmp)
  --results PATH        JSON output (default bench/results/bench-<time>.json; "-" for none)
  --no-install          never apt-get install missing peers
  --help`;

function list(text: string | undefined, fallback: readonly string[]): string[] {
  if (text === undefined) return [...fallback];
  return text.split(',').map((item) => item.trim()).filter((item) => item.length > 0);
}

function oneOf<T extends string>(
  values: readonly string[], allowed: readonly T[], name: string,
): T[] {
  for (const value of values) {
    if (!(allowed as readonly string[]).includes(value)) {
      throw new Error(`--${name}: ${JSON.stringify(value)} is not one of ${allowed.join(', ')}`);
    }
  }
  return values as T[];
}

function positiveInt(text: string | undefined, fallback: number, name: string): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new Error(`--${name}: want a positive integer`);
  }
  return value;
}

/** Parses the bench's arguments; returns null after printing usage for `--help`. */
export function parseBenchArgs(argv: readonly string[]): BenchOptions | null {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      quick: { type: 'boolean' }, workloads: { type: 'string' }, reps: { type: 'string' },
      size: { type: 'string' }, 'duration-ms': { type: 'string' }, 'warmup-ms': { type: 'string' },
      targets: { type: 'string' }, ops: { type: 'string' }, qd: { type: 'string' },
      'fio-engines': { type: 'string' }, engines: { type: 'string' },
      'rss-sizes': { type: 'string' },
      dir: { type: 'string' }, results: { type: 'string' }, 'no-install': { type: 'boolean' },
      help: { type: 'boolean' },
    },
  });
  if (values.help === true) {
    process.stdout.write(`${USAGE}\n`);
    return null;
  }
  const quick = values.quick === true;
  const workloads = list(values.workloads, ['1', '2', '3', '4', '5', '6', '7']).map(Number);
  for (const id of workloads) {
    if (![1, 2, 3, 4, 5, 6, 7].includes(id)) throw new Error(`--workloads: no workload ${id}`);
  }
  return {
    quick,
    workloads: workloads as WorkloadId[],
    reps: positiveInt(values.reps, quick ? 1 : 3, 'reps'),
    sizeBytes: parseSize(values.size ?? (quick ? '64M' : '1G'), '--size'),
    durationMs: positiveInt(values['duration-ms'], quick ? 250 : 500, 'duration-ms'),
    warmupMs: positiveInt(values['warmup-ms'], quick ? 50 : 100, 'warmup-ms'),
    targets: oneOf(list(values.targets, ['file', 'loop']), ['file', 'loop'] as const, 'targets'),
    ops: oneOf(list(values.ops, ['read', 'write']), ['read', 'write'] as const, 'ops'),
    depths: list(values.qd, ['1', '32']).map((text) => positiveInt(text, 1, 'qd')),
    fioEngines: list(values['fio-engines'], ['io_uring', 'libaio', 'psync']),
    engines: oneOf(list(values.engines, ['threadpool', 'uring']), ['threadpool', 'uring'] as const,
      'engines'),
    rssSizesBytes: list(values['rss-sizes'], quick ? ['32M', '512M'] : ['256M', '4G'])
      .map((text) => parseSize(text, '--rss-sizes')),
    scratchParent: values.dir ?? '/tmp',
    resultsPath: values.results === '-' ? null : values.results ?? defaultResultsPath(),
    install: values['no-install'] !== true,
  };
}

function defaultResultsPath(): string {
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  return `bench/results/bench-${stamp}.json`;
}
