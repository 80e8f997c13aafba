// The entry point of `npm run bench`: parses options, finds the peers and the dmio CLI, runs
// the chosen workloads in order, then prints the results table, the skipped variants and the
// target checks, and writes the JSON file. Every resource the run acquired (scratch files,
// loop devices, nbdkit) is released on the way out, also after a failure or Ctrl-C.

import path from 'node:path';
import os from 'node:os';
import type { BenchContext } from './context.js';
import { buildDist, locateDmioCli } from './dmio-cli.js';
import type { WorkloadId } from './model.js';
import { parseBenchArgs, USAGE } from './options.js';
import { detectPeers } from './peers.js';
import { REPO_ROOT } from './proc.js';
import { Recorder } from './recorder.js';
import {
  describeMachine, formatCacheNotes, formatSkips, formatTable, formatTargets, writeResults,
} from './report.js';
import { Resources } from './resources.js';
import { median } from './stats.js';
import { checkTargets } from './targets.js';
import { runCopyWorkload } from './workloads/copy.js';
import { runMirrorWriteWorkload } from './workloads/mirror-write.js';
import { runNbdWorkload } from './workloads/nbd.js';
import { runRandomIoWorkload } from './workloads/random-io.js';
import { runRssWorkload } from './workloads/rss.js';
import { runServeWorkload } from './workloads/serve.js';
import { runStacksWorkload } from './workloads/stacks.js';

const WORKLOADS: Readonly<Record<WorkloadId, (context: BenchContext) => Promise<void>>> = {
  1: runRandomIoWorkload, 2: runMirrorWriteWorkload, 3: runCopyWorkload, 4: runNbdWorkload,
  5: runRssWorkload, 6: runServeWorkload, 7: runStacksWorkload,
};

const log = (line: string): void => {
  process.stderr.write(`${line}\n`);
};

async function main(): Promise<number> {
  let options;
  try {
    options = parseBenchArgs(process.argv.slice(2));
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    process.stderr.write(`bench: ${message}\n${USAGE}\n`);
    return 2;
  }
  if (options === null) return 0;
  const startedAt = new Date().toISOString();
  const machine = describeMachine();
  log(`dmio bench: ${machine.cpuCount}x ${machine.cpuModel}, ${machine.memoryGiB} GiB, Linux ` +
    `${machine.kernel}, Node ${machine.node}, load ${machine.loadAverageStart.join(' ')}`);
  const peers = await detectPeers(options.install);
  for (const [command, reason] of Object.entries(peers.missing)) {
    log(`peer skipped: ${command}: ${reason}`);
  }
  const resources = new Resources(options.scratchParent);
  const release = (): void => {
    void resources.releaseAll().then(() => process.exit(130));
  };
  process.once('SIGINT', release);
  process.once('SIGTERM', release);
  const recorder = new Recorder(log);
  const workloadSeconds: Record<string, number> = {};
  try {
    const buildError = await buildDist(log);
    if (buildError !== null) throw new Error(buildError);
    const needsCli = options.workloads.some((id) => id >= 3);
    const dmioCli = needsCli ? await locateDmioCli() : { missing: 'not needed' };
    if ('missing' in dmioCli && needsCli) log(`dmio CLI unavailable: ${dmioCli.missing}`);
    const context: BenchContext = { options, peers, recorder, resources, dmioCli };
    for (const id of options.workloads) {
      log(`workload ${id}`);
      const startMs = performance.now();
      await WORKLOADS[id](context);
      workloadSeconds[id] = Math.round((performance.now() - startMs) / 100) / 10;
      log(`workload ${id} took ${workloadSeconds[id]} s`);
    }
  } finally {
    await resources.releaseAll();
  }
  machine.loadAverageEnd = os.loadavg().map((load) => Number(load.toFixed(2)));
  const targets = checkTargets(recorder.series);
  const load = `start ${machine.loadAverageStart.join(' ')}, ` +
    `end ${machine.loadAverageEnd.join(' ')}`;
  process.stdout.write(`\n## Results (medians of ${options.reps})\n\n` +
    `${formatTable(recorder.series)}\n\n` +
    `## Page cache\n\n${formatCacheNotes(recorder.series)}\n\n` +
    `## Skipped\n\n${formatSkips(recorder.skips)}\n\n## Targets\n\n${formatTargets(targets)}\n\n` +
    `load average: ${load}; ` +
    `seconds per workload: ${JSON.stringify(workloadSeconds)}\n`);
  if (options.resultsPath !== null) {
    const filePath = path.resolve(REPO_ROOT, options.resultsPath);
    writeResults(filePath, {
      startedAt, finishedAt: new Date().toISOString(), machine, options, peers,
      series: recorder.series.map((series) => ({ ...series, median: median(series.samples) })),
      skips: recorder.skips, targets, workloadSeconds,
    });
    process.stdout.write(`results: ${path.relative(process.cwd(), filePath)}\n`);
  }
  return 0;
}

process.exitCode = await main();
