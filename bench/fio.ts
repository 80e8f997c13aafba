// Owns running fio: builds one job from a small description, runs it with JSON output and
// returns IOPS and bandwidth. Two defaults of fio would distort the comparison and are turned
// off: `invalidate=1` (fio drops the file's page cache before the job, which would make a
// "cached" run cold) and the random map (`norandommap`, as the Node side does not keep one).

import { runCommand } from './proc.js';

/** One fio run. */
export interface FioJob {
  /** One or more files (several run as separate jobs, one per file, in one group). */
  readonly paths: readonly string[];
  readonly rw: 'randread' | 'randwrite' | 'write';
  readonly blockBytes: number;
  readonly engine: string;
  readonly depth: number;
  /** Parallel jobs per file (psync at queue depth > 1). */
  readonly jobsPerFile: number;
  readonly direct: boolean;
  /** Bytes per file to address (also the amount written by `write`). */
  readonly sizeBytes: number;
  /** Time-based runs: measured time and uncounted ramp; null for size-based runs. */
  readonly timing: { readonly durationMs: number; readonly warmupMs: number } | null;
}

/** What fio reported for the whole group. */
export interface FioResult {
  readonly iops: number;
  readonly bytesPerSecond: number;
  /** The group's runtime in ms (the slowest job). */
  readonly runtimeMs: number;
  readonly bytes: number;
}

function fioArgs(job: FioJob): string[] {
  const args = [
    '--output-format=json', '--group_reporting=1', `--rw=${job.rw}`, `--bs=${job.blockBytes}`,
    `--ioengine=${job.engine}`, `--iodepth=${job.depth}`, `--numjobs=${job.jobsPerFile}`,
    `--direct=${job.direct ? 1 : 0}`, `--size=${job.sizeBytes}`, '--invalidate=0',
    '--norandommap=1', '--randrepeat=0', '--thread=1', '--end_fsync=0',
  ];
  if (job.engine === 'io_uring-sqpoll') {
    args.splice(5, 1, '--ioengine=io_uring', '--sqthread_poll=1');
  }
  if (job.timing !== null) {
    args.push('--time_based=1', `--runtime=${job.timing.durationMs}ms`,
      `--ramp_time=${job.timing.warmupMs}ms`);
  }
  job.paths.forEach((path, index) => args.push(`--name=job${index}`, `--filename=${path}`));
  return args;
}

/** Runs `job`; throws with fio's own message when it fails. */
export async function runFio(job: FioJob): Promise<FioResult> {
  const result = await runCommand('fio', fioArgs(job));
  const start = result.stdout.indexOf('{');
  if (result.exitCode !== 0 || start < 0) {
    const output = (result.stderr || result.stdout).trim().slice(0, 400);
    throw new Error(`fio exited ${String(result.exitCode)}: ${output}`);
  }
  const report = JSON.parse(result.stdout.slice(start)) as {
    jobs: { read: FioSide; write: FioSide; error: number }[];
  };
  const group = report.jobs[0];
  if (group === undefined) throw new Error('fio reported no jobs');
  if (group.error !== 0) throw new Error(`fio job error ${group.error}`);
  const side = job.rw === 'randread' ? group.read : group.write;
  return {
    iops: side.iops, bytesPerSecond: side.bw_bytes, runtimeMs: side.runtime, bytes: side.io_bytes,
  };
}

interface FioSide {
  readonly iops: number;
  readonly bw_bytes: number;
  readonly runtime: number;
  readonly io_bytes: number;
}
