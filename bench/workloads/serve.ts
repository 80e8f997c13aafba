// Owns workload 6: `dmio serve FILE` against `nbdkit file FILE` and `qemu-nbd -f raw FILE`,
// each serving one image file on a Unix socket, with nbdcopy (4 connections, its default
// 64 requests of 256 KiB each) writing a cached random file into the image and reading the
// image to `null:`. All three servers run for the whole workload and take turns, in another
// order each repetition; each run is timed by the wall clock of nbdcopy, and the server's own
// CPU time (all threads, from /proc) is recorded per MiB. Before a write the source is read
// whole and the image's dirty pages are written back; before a read the image is read whole.
//
// Each server's first write and first read after it starts are recorded as rows of their own
// ("first … after start", no target), and the repetitions the targets read come after them:
// a server's first gibibytes measure its start-up (V8 compiles dmio's JavaScript while it
// serves them, in every connection thread: about 1.5 s of CPU over the first 3 GiB with two
// threads; docs/performance.md, "Serve: first runs and steady state"), the repetitions what
// it serves once running.
//
// Then memory with 16 connections: each server is started afresh, nbdcopy writes and reads
// the image with `--connections=16`, and the server's peak RSS (VmHWM) is recorded. dmio's
// must stay under SERVE_RSS_MIB_MAX (targets.ts), whatever the size.

import fs from 'node:fs';
import type { BenchContext } from '../context.js';
import { peerMissing } from '../context.js';
import type { Role } from '../model.js';
import { repetitionOrder } from '../order.js';
import { prepareNbdcopyRun, warmFile } from '../page-cache.js';
import { runChecked } from '../proc.js';
import type { StartedServer } from '../resources.js';

const MiB = 1024 * 1024;
/** Connections of the throughput runs (what nbdcopy uses against a multi-conn server). */
const CONNECTIONS = 4;
/** Connections of the memory runs: dmio serve's default cap. */
const RSS_CONNECTIONS = 16;
/** Clock ticks per second of /proc/PID/stat times (USER_HZ, 100 on Linux). */
const TICKS_PER_SECOND = 100;

/** The case names of workload 6 (targets.ts finds its rows by them). */
export const SERVE_CASES = {
  write: `serve: nbdcopy write, ${CONNECTIONS} conns, file image`,
  read: `serve: nbdcopy read, ${CONNECTIONS} conns, file image`,
  rss: `serve: peak server RSS, ${RSS_CONNECTIONS} conns write+read`,
  firstWrite: `serve: first nbdcopy write after start, ${CONNECTIONS} conns, file image`,
  firstRead: `serve: first nbdcopy read after start, ${CONNECTIONS} conns, file image`,
} as const;

/** The case each operation's runs are recorded under: the first run after start, or later. */
const CASE_OF = {
  first: { write: SERVE_CASES.firstWrite, read: SERVE_CASES.firstRead },
  later: { write: SERVE_CASES.write, read: SERVE_CASES.read },
} as const;

/** The dmio row of workload 6. */
export const SERVE_DMIO_VARIANT = 'dmio serve';

/** One server of the comparison: how to start it on a socket. */
interface ServerKind {
  readonly label: string;
  readonly role: Role;
  /** argv (file first) serving `image` on `socketPath`, or why it cannot run. */
  argv(image: string, socketPath: string, connections: number): readonly string[] | string;
}

function serverKinds(context: BenchContext): ServerKind[] {
  const cli = context.dmioCli;
  return [
    {
      label: SERVE_DMIO_VARIANT, role: 'dmio',
      argv: (image, socketPath, connections) => 'missing' in cli ? cli.missing :
        [...cli.argv, 'serve', image, '--socket', socketPath, '--max-connections',
          String(connections)],
    },
    {
      label: 'nbdkit file', role: 'peer',
      argv: (image, socketPath) => peerMissing(context, 'nbdkit') ??
        ['nbdkit', '--foreground', '--exit-with-parent', '--unix', socketPath, 'file', image],
    },
    {
      label: 'qemu-nbd -f raw', role: 'peer',
      argv: (image, socketPath, connections) => peerMissing(context, 'qemu-nbd') ??
        ['qemu-nbd', '-f', 'raw', '--persistent', `--shared=${connections}`, '--socket',
          socketPath, image],
    },
  ];
}

/** Runs workload 6. */
export async function runServeWorkload(context: BenchContext): Promise<void> {
  const { options, resources, recorder } = context;
  const missing = peerMissing(context, 'nbdcopy');
  if (missing !== null) {
    for (const name of Object.values(SERVE_CASES)) recorder.skip(6, name, 'all', missing);
    return;
  }
  const source = resources.dataFile('w6-source.img', options.sizeBytes);
  const image = resources.file('w6-image.img');
  fs.copyFileSync(source, image);
  const kinds = serverKinds(context);
  const running = new Map<string, StartedServer>();
  for (const kind of kinds) {
    const server = await start(context, kind, image, 'w6', CONNECTIONS);
    if (server !== null) running.set(kind.label, server);
  }
  const runRound = async (rep: number, runs: 'first' | 'later'): Promise<void> => {
    for (const op of ['write', 'read'] as const) {
      const runners = kinds.filter((kind) => running.has(kind.label)).map((kind) =>
        () => runThroughput(context, kind, running.get(kind.label) as StartedServer, op,
          CASE_OF[runs][op], source, image));
      for (const runner of repetitionOrder(runners, rep)) await runner();
    }
  };
  recorder.note('w6 first runs after start');
  await runRound(0, 'first');
  for (let rep = 0; rep < options.reps; rep += 1) {
    recorder.note(`w6 repetition ${rep + 1}/${options.reps}`);
    await runRound(rep, 'later');
  }
  for (const server of running.values()) await server.stop();
  for (let rep = 0; rep < options.reps; rep += 1) {
    for (const kind of repetitionOrder(kinds, rep)) await runPeakRss(context, kind, source, image);
  }
}

/** Starts one server, or records why it cannot run and returns null. */
async function start(
  context: BenchContext, kind: ServerKind, image: string, tag: string, connections: number,
): Promise<StartedServer | null> {
  const socketPath = context.resources.file(`${tag}-${kind.label.replace(/\W+/g, '-')}.sock`);
  fs.rmSync(socketPath, { force: true });
  const argv = kind.argv(image, socketPath, connections);
  if (typeof argv === 'string') {
    for (const name of Object.values(SERVE_CASES)) context.recorder.skip(6, name, kind.label, argv);
    return null;
  }
  const [file = '', ...args] = argv;
  try {
    return await context.resources.server(`${tag} ${kind.label}`, file, args, socketPath);
  } catch (error) {
    for (const name of Object.values(SERVE_CASES)) {
      context.recorder.skip(6, name, kind.label, String(error));
    }
    return null;
  }
}

async function runThroughput(
  context: BenchContext, kind: ServerKind, server: StartedServer, op: 'read' | 'write',
  caseName: string, source: string, image: string,
): Promise<void> {
  const { options, recorder } = context;
  const cache = op === 'write' ?
    'source read whole and the image written back before each run' :
    'image read whole before each run';
  const [from, to] = prepareNbdcopyRun(op, source, image, server.uri);
  try {
    const ticksBefore = cpuTicks(server.pid);
    const startMs = performance.now();
    await runChecked('nbdcopy', [`--connections=${CONNECTIONS}`, from, to]);
    const seconds = (performance.now() - startMs) / 1000;
    const cpuUs = (cpuTicks(server.pid) - ticksBefore) / TICKS_PER_SECOND * 1e6;
    const sizeMiB = options.sizeBytes / MiB;
    recorder.add({ workload: 6, caseName, variant: kind.label, role: kind.role, unit: 'MiB/s',
      timer: 'wall', cache }, sizeMiB / seconds, cpuUs / sizeMiB);
  } catch (error) {
    recorder.skip(6, caseName, kind.label, String(error));
  }
}

/** A fresh server, nbdcopy writing then reading with 16 connections, then its peak RSS. */
async function runPeakRss(
  context: BenchContext, kind: ServerKind, source: string, image: string,
): Promise<void> {
  const server = await start(context, kind, image, 'w6-rss', RSS_CONNECTIONS);
  if (server === null) return;
  try {
    warmFile(source);
    await runChecked('nbdcopy', [`--connections=${RSS_CONNECTIONS}`, source, server.uri]);
    await runChecked('nbdcopy', [`--connections=${RSS_CONNECTIONS}`, server.uri, 'null:']);
    context.recorder.add({ workload: 6, caseName: SERVE_CASES.rss, variant: kind.label,
      role: kind.role, unit: 'MiB', timer: 'wall',
      cache: 'source read whole before the write; server started afresh' }, peakRssMiB(server.pid));
  } catch (error) {
    context.recorder.skip(6, SERVE_CASES.rss, kind.label, String(error));
  } finally {
    await server.stop();
  }
}

/** User plus system clock ticks of process `pid`, all threads. */
function cpuTicks(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return Number(fields[11]) + Number(fields[12]);
}

/** Peak resident memory of process `pid` (VmHWM), in MiB. */
function peakRssMiB(pid: number): number {
  const match = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (match === null) throw new Error(`no VmHWM for process ${pid}`);
  return Number(match[1]) / 1024;
}
