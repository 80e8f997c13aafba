// Owns starting `dmio serve` for tests: the built binary (npm run build), ready once it
// printed its URI line, stopped with a signal (SIGKILL after 10 s) and its exit status kept.
// Also runs external clients (nbdinfo, nbdcopy, qemu-img, ...) with a timeout.
//
//   const served = await startDmioServe(['mem:64M', '--socket', sock]);
//   await run('nbdinfo', ['--json', served.uri]);
//   assert.equal(await served.stop(), 0);

import { spawn, type ChildProcess } from 'node:child_process';
import { DMIO_BIN } from '../cli-helpers.js';

/** A running `dmio serve`. */
export interface DmioServe {
  /** The line it printed: the URI (or JSON with --json). */
  readonly line: string;
  readonly uri: string;
  readonly child: ChildProcess;
  /** Everything it wrote on stderr so far. */
  stderr(): string;
  /** Sends `signal` (default SIGTERM) and resolves with the exit status. Idempotent. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Starts `dmio serve ...args`; rejects if it exits or stays silent for `readyTimeoutMs`. */
export function startDmioServe(args: readonly string[], readyTimeoutMs = 20_000): Promise<DmioServe> {
  const child = spawn(process.execPath, [DMIO_BIN, 'serve', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.stderr.setEncoding('utf8').on('data', (text: string) => { stderr += text; });
  let stopping: Promise<number | null> | null = null;
  const stop = (signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> => {
    stopping ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    })();
    return stopping;
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`dmio serve did not start in ${readyTimeoutMs} ms\n${stderr}`));
    }, readyTimeoutMs);
    child.stdout.setEncoding('utf8').on('data', (text: string) => {
      stdout += text;
      const newline = stdout.indexOf('\n');
      if (newline < 0) return;
      clearTimeout(timer);
      const line = stdout.slice(0, newline);
      const uri = line.startsWith('{') ? (JSON.parse(line) as { uri: string }).uri : line;
      resolve({ line, uri, child, stderr: () => stderr, stop });
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`dmio serve exited with ${code}\n${stderr}`));
    });
  });
}

/** What a client run produced. */
export interface ToolRun {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `command args` to completion (SIGKILL after `timeoutMs`). */
export function runTool(
  command: string, args: readonly string[], timeoutMs = 30_000, env?: Record<string, string>,
): Promise<ToolRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      stdio: ['ignore', 'pipe', 'pipe'], ...(env === undefined ? {} : { env: { ...process.env, ...env } }),
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => { stdout += text; });
    child.stderr.setEncoding('utf8').on('data', (text: string) => { stderr += text; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

/** Like `runTool`, but rejects unless the exit status is 0. */
export async function runToolOk(
  command: string, args: readonly string[], timeoutMs = 30_000, env?: Record<string, string>,
): Promise<ToolRun> {
  const result = await runTool(command, args, timeoutMs, env);
  if (result.status !== 0) {
    throw new Error(`${command} ${args.join(' ')} exited with ${result.status}\n${result.stderr}`);
  }
  return result;
}
