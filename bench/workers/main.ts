// Owns a worker process's life: it reads its jobs (JSON) from argv, runs them one after
// another, and prints one JSON line per job to stdout, a measurement or an error. The parent
// chose this process's environment (UV_USE_IO_URING), which is why the jobs run here and not
// in the parent.

import { runFsCopy } from './fs-copy.js';
import type { WorkerJob, WorkerMeasurement, WorkerResult } from './jobs.js';
import { runMirrorWrite } from './mirror-write.js';
import { runNbdStream } from './nbd-stream.js';
import { runRandomIo } from './random-io.js';

function runJob(job: WorkerJob): Promise<WorkerMeasurement> {
  switch (job.kind) {
    case 'random-io':
      return runRandomIo(job);
    case 'mirror-write':
      return runMirrorWrite(job);
    case 'nbd-stream':
      return runNbdStream(job);
    case 'fs-copy':
      return runFsCopy(job);
  }
}

async function main(): Promise<void> {
  const jobs = JSON.parse(process.argv[2] ?? '[]') as WorkerJob[];
  for (const job of jobs) {
    let result: WorkerResult;
    try {
      result = await runJob(job);
    } catch (error) {
      const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
      result = { error: message };
    }
    process.stdout.write(`${JSON.stringify(result)}\n`);
  }
}

await main();
