// Owns workload 3: copy a cached file (random bytes) to 1 and to 3 destination files with
// `dmio copy`, and with the peers dd, cp, qemu-img convert, nbdcopy and plain Node `fs`. For
// 3 destinations the single-destination peers run 3 times in a row; dmio and Node copy once
// to all 3. Before each run the source is read whole (cached) and the destinations are
// removed, so every tool creates and allocates its files the same way; they are removed again
// after the run (dropping their dirty pages unwritten) and the file system is synced untimed.
// Times are whole commands (wall) for the
// programs, including `dmio copy` with its Node start-up; figures are MiB/s of source data.
// Each destination count is also copied durably (durable-copy.ts), and each repetition ends
// with the sparse image case (sparse-copy.ts).

import type { BenchContext } from '../context.js';
import { peerMissing } from '../context.js';
import type { Role, Timer } from '../model.js';
import { removeAll, removeAndSettle, warmFile } from '../page-cache.js';
import { repetitionOrder } from '../order.js';
import { runChecked, runWorker } from '../proc.js';
import { isWorkerError } from '../workers/jobs.js';
import { runDurableCopyCase } from './durable-copy.js';
import { runSparseCopyCase } from './sparse-copy.js';

const CHUNK_BYTES = 1024 * 1024;
const CACHE_NOTE = 'source read whole before each run; destinations removed before and after';

/** A single-destination program: its argv for one copy, and the peer it needs. */
interface PeerCopier {
  readonly label: string;
  readonly command: string;
  readonly args: (source: string, target: string) => string[];
}

const PEER_COPIERS: readonly PeerCopier[] = [
  {
    label: 'dd bs=1M', command: 'dd',
    args: (s, t) => [`if=${s}`, `of=${t}`, 'bs=1M', 'status=none'],
  },
  { label: 'cp', command: 'cp', args: (s, t) => ['--reflink=never', s, t] },
  {
    label: 'qemu-img convert', command: 'qemu-img',
    args: (s, t) => ['convert', '-f', 'raw', '-O', 'raw', s, t],
  },
  { label: 'nbdcopy', command: 'nbdcopy', args: (s, t) => [s, t] },
];

/** The case names used in the table and by the targets. */
export function copyCaseName(targetCount: number): string {
  return targetCount === 1 ? 'copy → 1 dest' : `copy → ${targetCount} dests`;
}

/** Runs workload 3. */
export async function runCopyWorkload(context: BenchContext): Promise<void> {
  const { options, resources, recorder } = context;
  const source = resources.dataFile('w3-source.img', options.sizeBytes);
  for (let rep = 0; rep < options.reps; rep += 1) {
    recorder.note(`w3 repetition ${rep + 1}/${options.reps}`);
    for (const targetCount of [1, 3]) {
      const targets = Array.from({ length: targetCount },
        (_, i) => resources.file(`w3-dest-${i}.img`));
      await runCopyCase(context, source, targets, rep);
      await runDurableCopyCase(context, source, targetCount, rep);
    }
    await runSparseCopyCase(context, rep);
  }
}

/**
 * Runs every variant of one case once, in another order each repetition
 * (`repetitionOrder`): whichever ran first after a pause was up to 5x slower here.
 */
async function runCopyCase(
  context: BenchContext, source: string, targets: readonly string[], rep: number,
): Promise<void> {
  const { options, recorder } = context;
  const caseName = copyCaseName(targets.length);
  const sizeMiB = options.sizeBytes / CHUNK_BYTES;
  const record = (
    variant: string, role: Role, timer: Timer, seconds: number, cpuUs: number | null = null,
  ): void =>
    recorder.add({ workload: 3, caseName, variant, role, unit: 'MiB/s', timer, cache: CACHE_NOTE },
      sizeMiB / seconds, cpuUs === null ? null : cpuUs / sizeMiB);
  const timed = async (fn: () => Promise<void>): Promise<number> => {
    warmFile(source);
    removeAll(targets);
    const startMs = performance.now();
    try {
      await fn();
      return (performance.now() - startMs) / 1000;
    } finally {
      await removeAndSettle(targets);
    }
  };
  const runPeer = async (peer: PeerCopier): Promise<void> => {
    const label = targets.length === 1 ? peer.label : `${peer.label} ×${targets.length}`;
    const missing = peerMissing(context, peer.command);
    if (missing !== null) {
      recorder.skip(3, caseName, label, missing);
      return;
    }
    try {
      const seconds = await timed(async () => {
        for (const target of targets) await runChecked(peer.command, peer.args(source, target));
      });
      record(label, 'peer', 'wall', seconds);
    } catch (error) {
      recorder.skip(3, caseName, label, String(error));
    }
  };
  const runners: Array<() => Promise<void>> = [
    () => runDmioCopy(context, caseName, source, targets, timed, record),
    ...PEER_COPIERS.map((peer) => () => runPeer(peer)),
    () => runNodeCopy(context, caseName, source, targets, record),
  ];
  for (const runner of repetitionOrder(runners, rep)) await runner();
}

type RecordFn = (
  variant: string, role: Role, timer: Timer, seconds: number, cpuUs?: number | null,
) => void;

async function runDmioCopy(
  context: BenchContext, caseName: string, source: string, targets: readonly string[],
  timed: (fn: () => Promise<void>) => Promise<number>, record: RecordFn,
): Promise<void> {
  if ('missing' in context.dmioCli) {
    context.recorder.skip(3, caseName, 'dmio copy', context.dmioCli.missing);
    return;
  }
  const [program = 'dmio', ...rest] = context.dmioCli.argv;
  let reportedSeconds: number | null = null;
  try {
    const seconds = await timed(async () => {
      // Like the peers here, which do not sync: `dmio copy` flushes by default (issue 16).
      const args = [...rest, 'copy', source, ...targets, '--json', '--no-progress', '--no-flush'];
      const result = await runChecked(program, args);
      reportedSeconds = secondsFromJson(result.stdout);
    });
    record('dmio copy', 'dmio', 'wall', seconds);
    if (reportedSeconds !== null) {
      record('dmio copy, its own --json seconds', 'diagnostic', 'in-process', reportedSeconds);
    }
  } catch (error) {
    context.recorder.skip(3, caseName, 'dmio copy', String(error));
  }
}

function secondsFromJson(stdout: string): number | null {
  try {
    const parsed = JSON.parse(stdout.slice(stdout.indexOf('{'))) as { seconds?: unknown };
    return typeof parsed.seconds === 'number' && parsed.seconds > 0 ? parsed.seconds : null;
  } catch {
    return null;
  }
}

async function runNodeCopy(
  context: BenchContext, caseName: string, source: string, targets: readonly string[],
  record: RecordFn,
): Promise<void> {
  for (const engine of context.options.engines) {
    const label = `node fs cb, 8 in flight ${engine === 'uring' ? 'uring' : 'def'}`;
    warmFile(source);
    removeAll(targets);
    const [result] = await runWorker([{ kind: 'fs-copy', source, targets,
      sizeBytes: context.options.sizeBytes, chunkBytes: CHUNK_BYTES, depth: 8 }], engine);
    await removeAndSettle(targets);
    if (result === undefined || isWorkerError(result)) {
      context.recorder.skip(3, caseName, label, result?.error ?? 'no result');
    } else {
      record(label, 'peer', 'in-process', result.elapsedMs / 1000, result.cpuUs);
    }
  }
}
