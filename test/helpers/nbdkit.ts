// Owns starting and stopping local NBD servers for tests: nbdkit (foreground, --exit-with-parent,
// a private Unix socket, ready once its pidfile is written) and qemu-nbd (ready once its socket
// accepts a connection). Each server lives in its own temporary directory, removed by `stop()`.
// Servers listen only on Unix sockets here, never on a network address.
//
//   const server = await startNbdkit(['memory', '64M']);
//   const device = await openNbdDevice(server.uri);
//   ...; await server.stop();

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import path from 'node:path';
import type { TestContext } from 'node:test';

/** A running server. */
export interface NbdServer {
  /** `nbd+unix:///EXPORT?socket=PATH` for the server. */
  readonly uri: string;
  /** The Unix socket. */
  readonly socketPath: string;
  /** The server's temporary directory (also free for the test's own files). */
  readonly dir: string;
  /** The server process. */
  readonly child: ChildProcess;
  /** Resolves with the exit code (or null after a signal) once the process exited. */
  readonly exited: Promise<number | null>;
  /** Sends `signal` (default SIGTERM), waits for exit, removes the directory. Idempotent. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** Options of `startNbdkit`. */
export interface StartOptions {
  /** Export name to put in the URI (default ""). */
  readonly exportName?: string;
  /** Give up waiting for readiness after this long (default 10000 ms). */
  readonly readyTimeoutMs?: number;
  /** An existing directory to use instead of a fresh one (it is still removed by stop()). */
  readonly dir?: string;
}

/** True when `command` is on PATH. */
export function hasTool(command: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;
}

/**
 * Returns true when every tool is installed. Otherwise: under CI (`CI=true`) the test fails,
 * elsewhere it is skipped with the reason, and the function returns false.
 */
export function requireTools(t: TestContext, ...commands: string[]): boolean {
  const missing = commands.filter((command) => !hasTool(command));
  if (missing.length === 0) return true;
  const reason = `not installed: ${missing.join(', ')}`;
  if (process.env['CI'] === 'true') throw new Error(`CI requires ${reason}`);
  t.skip(reason);
  return false;
}

/** A fresh temporary directory for one server or test. */
export function makeTempDir(prefix = 'dmio-nbd-'): string {
  return mkdtempSync(path.join(tmpdir(), prefix));
}

/** The URI of a Unix-socket server. */
export function unixUri(socketPath: string, exportName = ''): string {
  return `nbd+unix:///${encodeURIComponent(exportName)}?socket=${encodeURI(socketPath)}`;
}

/**
 * Starts `nbdkit -f --exit-with-parent -U SOCK -P PIDFILE ...args`; `args` holds options,
 * filters, the plugin and its parameters, e.g. `['--filter=delay', 'memory', '16M', 'rdelay=1s']`.
 */
export async function startNbdkit(args: readonly string[], options: StartOptions = {}): Promise<NbdServer> {
  const dir = options.dir ?? makeTempDir();
  const socketPath = path.join(dir, 'nbd.sock');
  const pidPath = path.join(dir, 'nbd.pid');
  // nbdkit removes neither on exit; a stale pidfile would look ready at once.
  rmSync(socketPath, { force: true });
  rmSync(pidPath, { force: true });
  const child = spawn('nbdkit', ['-f', '--exit-with-parent', '-U', socketPath, '-P', pidPath, ...args],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  const ready = (): boolean => existsSync(pidPath) && readFileSync(pidPath, 'utf8').trim() !== '';
  return started(child, dir, socketPath, ready, options);
}

/**
 * Starts `qemu-nbd -k SOCK ...args` (args end with the image, e.g.
 * `['-f', 'raw', '--shared=4', '--persistent', image]`).
 */
export async function startQemuNbd(args: readonly string[], options: StartOptions = {}): Promise<NbdServer> {
  const dir = options.dir ?? makeTempDir();
  const socketPath = path.join(dir, 'qemu.sock');
  rmSync(socketPath, { force: true });
  const child = spawn('qemu-nbd', ['-k', socketPath, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  // The socket file appears at bind(), before listen(): probe with a real connection.
  return started(child, dir, socketPath, () => existsSync(socketPath) && canConnect(socketPath), options);
}

function canConnect(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createConnection({ path: socketPath });
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}

async function started(
  child: ChildProcess,
  dir: string,
  socketPath: string,
  ready: () => boolean | Promise<boolean>,
  options: StartOptions,
): Promise<NbdServer> {
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    if (stderr.length < 65536) stderr += chunk.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let hasExited = false;
  void exited.then(() => { hasExited = true; });
  const deadline = Date.now() + (options.readyTimeoutMs ?? 10000);
  while (!(await ready())) {
    if (hasExited || Date.now() > deadline) {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`server did not start: ${hasExited ? 'exited' : 'timed out'}\n${stderr}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  let stopping: Promise<void> | null = null;
  const stop = (signal: NodeJS.Signals = 'SIGTERM'): Promise<void> => {
    stopping ??= (async () => {
      if (!hasExited) child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
      rmSync(dir, { recursive: true, force: true });
    })();
    return stopping;
  };
  return { uri: unixUri(socketPath, options.exportName ?? ''), socketPath, dir, child, exited, stop };
}
