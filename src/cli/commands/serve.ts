// Owns `dmio serve`: an NBD server for dmio devices. DEVICE is the default export (named by
// --export-name, "" by default); each --export NAME=DEVICE adds one more. It listens on a Unix
// socket or on TCP (127.0.0.1:10809 unless --listen names another address: nothing is exposed
// beyond the machine unless asked), and once it accepts, prints exactly one line on stdout —
// the URI a client should use (or, with --json, one JSON object holding it) — so scripts can
// wait for it. SIGINT or SIGTERM stops it: no new connections, requests in flight finish,
// devices are flushed and closed, exit 0. For each `table:` export it reports the tables'
// `dmsetup status` lines on stderr at the start, when they change, and on SIGUSR1. Streams and
// signals are the context's.

import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  IoUringEngine, TableDevice, watchTableStatus, type BlockDevice, type FileEngine,
  type TableStatusWatch,
} from '../../index.js';
import {
  createNbdServer, SERVER_THREADS_MAX, threadableDevice, type NbdListenAddress,
  type NbdServerTlsOptions,
} from '../../server.js';
import { tell, type CliContext, type RunCommand } from '../context.js';
import { checkSpec, closeAll, openForCli } from '../devices.js';
import { EXIT_IO_ERROR, EXIT_OK, UsageError } from '../exit-status.js';

interface ServeFlags {
  socket?: string;
  listen?: string;
  exportName: string;
  export: string[];
  readOnly?: boolean;
  maxConnections: string;
  direct?: boolean;
  json?: boolean;
  tls: string;
  tlsCertificates?: string;
  tlsPsk?: string;
  tlsVerifyPeer?: boolean;
  threads?: string;
}

/** The address used without --socket or --listen: loopback only, the IANA NBD port. */
const DEFAULT_LISTEN = '127.0.0.1:10809';

/** Most connection threads chosen without --threads. */
const THREADS_AUTO_MAX = 4;

/** The longest export name, in bytes: the NBD protocol's limit (NBD_MAX_STRING). */
const EXPORT_NAME_BYTES_MAX = 4 * 1024;

/** Adds `serve` to the program. */
export function registerServe(program: Command, run: RunCommand): void {
  program.command('serve')
    .description('serve devices over NBD until SIGINT or SIGTERM')
    .argument('<device>', 'device spec of the default export')
    .option('--socket <PATH>', 'listen on a Unix socket')
    .option('--listen <HOST:PORT>', `listen on TCP (default ${DEFAULT_LISTEN}; port 0 picks one)`)
    .option('--export-name <NAME>', 'name of the default export', '')
    .option('--export <NAME=DEVICE>', 'another export (repeatable)',
      (value: string, list: string[]) => [...list, value], [] as string[])
    .option('--read-only', 'refuse writes, trims and zeroes (EPERM)')
    .option('--max-connections <N>', 'connections served at once', '16')
    .option('--direct', 'open files and block devices with O_DIRECT')
    .option('--json', 'print one JSON object instead of the URI line')
    .option('--tls <MODE>', 'off, on (offered) or require', 'off')
    .option('--tls-certificates <DIR>', 'x509: ca-cert.pem, server-cert.pem, server-key.pem')
    .option('--tls-psk <FILE>', 'pre-shared keys, one username:hexkey a line')
    .option('--tls-verify-peer', 'x509: require a client certificate signed by the CA')
    .option('--threads <N>', 'connection threads (default: the cores, at most ' +
      `${THREADS_AUTO_MAX}, when every export is a file, a block device or a table of linear, ` +
      'zero and error targets over those; 0: none)')
    .action((spec: string, flags: ServeFlags) => run((cli) => serve(cli, spec, flags)));
}

/** One export to open: its name and device spec. */
interface ExportPlan {
  readonly name: string;
  readonly spec: string;
}

async function serve(cli: CliContext, spec: string, flags: ServeFlags): Promise<number> {
  const plans = exportPlans(spec, flags);
  const address = listenAddress(flags);
  const connectionsMax = parseCount(flags.maxConnections, '--max-connections', 1, 1024);
  const tls = tlsOptions(flags);
  const threadsAsked = flags.threads === undefined ? null :
    parseCount(flags.threads, '--threads', 0, SERVER_THREADS_MAX);
  for (const plan of plans) checkSpec(plan.spec, false);
  const devices: BlockDevice[] = [];
  const engine = new IoUringEngine({ sqPollIdleMs: 0, inlineWrites: true });
  try {
    for (const plan of plans) {
      devices.push(await openForCli(cli, {
        spec: plan.spec, options: serveOpenOptions(flags, engine),
      }));
    }
    const threads = connectionThreads(threadsAsked, devices);
    const server = createNbdServer({
      exports: plans.map((plan, index) => ({
        name: plan.name, device: devices[index] as BlockDevice, description: plan.spec,
        readOnly: flags.readOnly === true,
      })),
      connectionsMax,
      threads,
      ...(tls === undefined ? {} : { tls }),
      log: (message) => tell(cli, `dmio serve: ${message}\n`),
    });
    const watch = watchTables(cli, plans, devices);
    const stopped = stopOnSignal(cli, () => {
      watch?.stop();
      return server.close();
    });
    let listener;
    try {
      listener = await server.listen(address);
    } catch (error) {
      // A signal while the connection threads started: the server closed before it listened.
      if ((error as { code?: unknown }).code === 'DMIO_ERR_DEVICE_CLOSED') return await stopped;
      throw new UsageError(`cannot listen on ${describe(address)}: ${(error as Error).message}`);
    }
    const boundPort = 'port' in address ? (listener.address() as { port: number }).port : 0;
    const uri = clientUri(address, boundPort, plans[0]?.name ?? '', server.tlsMode !== 'off');
    cli.stdout.stream.write(flags.json === true ?
      `${JSON.stringify({ uri, exports: plans.map((plan) => plan.name), tls: server.tlsMode,
        threads })}\n` :
      `${uri}\n`);
    return await stopped;
  } finally {
    await closeAll(devices);
    engine.close();
  }
}

/**
 * How exports are opened: files and block devices on the server's own io_uring engine, whose
 * rings have no kernel polling thread (`engine`, closed by the caller after the devices). An
 * NBD READ is large (nbdcopy asks 256 KiB) and copying it from the page cache costs the same
 * wherever it runs, but with a polling thread it runs there, on a core the client needs; without
 * one the copy runs inside the one io_uring_enter that submits a batch (docs/performance.md,
 * "Serve"). Buffered WRITEs go to that ring as well rather than a threadpool thread each ("Serve
 * writes"). O_DIRECT exports use the same engine's direct ring.
 */
function serveOpenOptions(flags: ServeFlags, engine: FileEngine): { readOnly: boolean;
  direct: boolean; engine: FileEngine } {
  return { readOnly: flags.readOnly === true, direct: flags.direct === true, engine };
}

/**
 * How many connection threads: --threads, or by default one per core (at most
 * THREADS_AUTO_MAX) when threads can open every export again (`threadableDevice`: files,
 * block devices, tables of linear, zero and error targets over those), none otherwise. See
 * docs/performance.md, "Serve on connection threads".
 */
function connectionThreads(asked: number | null, devices: readonly BlockDevice[]): number {
  const reopenable = devices.every(threadableDevice);
  if (asked !== null) {
    if (asked > 0 && !reopenable) {
      throw new UsageError('--threads: every export must be a file, a block device or a table ' +
        'of linear, zero and error targets over those (mem:, nbd:, tables with other targets ' +
        'and the like live on the main thread)');
    }
    return asked;
  }
  return reopenable ? Math.min(os.availableParallelism(), THREADS_AUTO_MAX) : 0;
}

/**
 * Reports the status of every table export on stderr (at once, on change, on SIGUSR1); null,
 * with no SIGUSR1 handler, when no export is a table.
 */
function watchTables(
  cli: CliContext, plans: readonly ExportPlan[], devices: readonly BlockDevice[],
): TableStatusWatch | null {
  const tables = plans.flatMap((plan, index) => {
    const device = devices[index];
    return device instanceof TableDevice ? [{ label: `export '${plan.name}'`, device }] : [];
  });
  if (tables.length === 0) return null;
  const watch = watchTableStatus(tables, (line) => tell(cli, `dmio serve: status ${line}\n`));
  const onUsr1 = (): void => watch.report();
  cli.signals.on('SIGUSR1', onUsr1);
  return { report: watch.report, stop: () => {
    cli.signals.off('SIGUSR1', onUsr1);
    watch.stop();
  } };
}

/** Resolves with the exit status once a signal arrived and `close` finished. */
function stopOnSignal(cli: CliContext, close: () => Promise<void>): Promise<number> {
  return new Promise((resolve) => {
    const onSignal = (): void => {
      cli.signals.off('SIGINT', onSignal);
      cli.signals.off('SIGTERM', onSignal);
      close().then(() => resolve(EXIT_OK), (error: unknown) => {
        tell(cli, `dmio serve: ${(error as Error).message}\n`);
        resolve(EXIT_IO_ERROR);
      });
    };
    cli.signals.on('SIGINT', onSignal);
    cli.signals.on('SIGTERM', onSignal);
  });
}

function exportPlans(spec: string, flags: ServeFlags): ExportPlan[] {
  const plans: ExportPlan[] = [{ name: flags.exportName, spec }];
  for (const entry of flags.export) {
    const equals = entry.indexOf('=');
    if (equals < 0) throw new UsageError(`--export ${entry}: expected NAME=DEVICE`);
    plans.push({ name: entry.slice(0, equals), spec: entry.slice(equals + 1) });
  }
  const names = new Set<string>();
  for (const plan of plans) {
    if (names.has(plan.name)) throw new UsageError(`export name '${plan.name}' is given twice`);
    if (Buffer.byteLength(plan.name) > EXPORT_NAME_BYTES_MAX) {
      throw new UsageError(`export names are at most ${EXPORT_NAME_BYTES_MAX} bytes`);
    }
    names.add(plan.name);
  }
  return plans;
}

function listenAddress(flags: ServeFlags): NbdListenAddress {
  if (flags.socket !== undefined && flags.listen !== undefined) {
    throw new UsageError('--socket and --listen are alternatives; give one of them');
  }
  if (flags.socket !== undefined) return { socketPath: path.resolve(flags.socket) };
  const text = flags.listen ?? DEFAULT_LISTEN;
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(text);
  if (match === null) throw new UsageError(`--listen ${text}: expected HOST:PORT or [IPV6]:PORT`);
  const host = match[1] ?? match[2] ?? '';
  return { host, port: parseCount(match[3] ?? '', '--listen port', 0, 65535) };
}

function tlsOptions(flags: ServeFlags): NbdServerTlsOptions | undefined {
  const mode = flags.tls;
  if (mode !== 'off' && mode !== 'on' && mode !== 'require') {
    throw new UsageError(`--tls ${mode}: expected off, on or require`);
  }
  if (mode === 'off') {
    if (flags.tlsCertificates !== undefined || flags.tlsPsk !== undefined) {
      throw new UsageError('--tls-certificates and --tls-psk need --tls=on or --tls=require');
    }
    return undefined;
  }
  if ((flags.tlsCertificates === undefined) === (flags.tlsPsk === undefined)) {
    throw new UsageError(`--tls=${mode} needs exactly one of --tls-certificates and --tls-psk`);
  }
  if (flags.tlsPsk !== undefined) return { mode, psk: readPskFile(flags.tlsPsk) };
  const dir = flags.tlsCertificates ?? '';
  const read = (name: string, optional = false): Buffer | undefined => {
    try {
      return readFileSync(path.join(dir, name));
    } catch (error) {
      if (optional) return undefined;
      throw new UsageError(`--tls-certificates: cannot read ${path.join(dir, name)}: ` +
        `${(error as Error).message}`);
    }
  };
  const crl = read('ca-crl.pem', true);
  return {
    mode,
    certificates: {
      ca: read('ca-cert.pem') as Buffer, cert: read('server-cert.pem') as Buffer,
      key: read('server-key.pem') as Buffer, ...(crl === undefined ? {} : { crl }),
      verifyPeer: flags.tlsVerifyPeer === true,
    },
  };
}

/** Reads nbdkit's PSK file: one `username:hexkey` a line, empty lines skipped. */
function readPskFile(file: string): Map<string, Uint8Array> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new UsageError(`--tls-psk: cannot read ${file}: ${(error as Error).message}`);
  }
  const keys = new Map<string, Uint8Array>();
  for (const [index, rawLine] of text.split('\n').entries()) {
    const line = rawLine.replace(/\r$/, '');
    if (line === '') continue;
    const colon = line.indexOf(':');
    const user = line.slice(0, colon);
    const hex = line.slice(colon + 1);
    if (colon <= 0 || user.length > 128 || !/^(?:[0-9a-fA-F]{2}){1,256}$/.test(hex)) {
      throw new UsageError(`--tls-psk: ${file} line ${index + 1} is not username:hexkey`);
    }
    keys.set(user, Buffer.from(hex, 'hex'));
  }
  if (keys.size === 0) throw new UsageError(`--tls-psk: ${file} holds no keys`);
  return keys;
}

/** The URI a client uses, as libnbd spells it. */
function clientUri(address: NbdListenAddress, port: number, exportName: string, tls: boolean): string {
  const name = encodeURIComponent(exportName);
  if ('socketPath' in address) {
    return `${tls ? 'nbds' : 'nbd'}+unix:///${name}?socket=${encodeURI(address.socketPath)}`;
  }
  const host = address.host.includes(':') ? `[${address.host}]` : address.host;
  return `${tls ? 'nbds' : 'nbd'}://${host}:${port}/${name}`;
}

function describe(address: NbdListenAddress): string {
  return 'socketPath' in address ? address.socketPath : `${address.host}:${address.port}`;
}

function parseCount(text: string, flag: string, min: number, max: number): number {
  const value = /^\d+$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new UsageError(`${flag}: ${JSON.stringify(text)} is not an integer from ${min} to ${max}`);
  }
  return value;
}
