// Owns everything a run creates outside its own memory: the scratch directory, data files,
// loop devices and NBD servers (nbdkit, qemu-nbd, `dmio serve`). Each acquisition pushes its
// release onto a stack that the entry point unwinds in reverse order on success, failure or
// Ctrl-C, so a loop device is always detached and a server always stopped. Servers listen on
// a Unix socket in the scratch directory only.

import fs from 'node:fs';
import path from 'node:path';
import { randomFillSync } from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { allocAligned } from '../src/index.js';
import { runChecked } from './proc.js';

const FILL_CHUNK_BYTES = 1024 * 1024;
const NBDKIT_START_TIMEOUT_MS = 10_000;

/** A server started by `Resources.server`. */
export interface StartedServer {
  /** `nbd+unix:///?socket=...`. */
  readonly uri: string;
  readonly pid: number;
  /** Stops it (SIGTERM) and waits for its exit; also done at release. Idempotent. */
  stop(): Promise<void>;
}

/** Releases run in reverse order of acquisition, each at most once. */
export class Resources {
  readonly scratchDir: string;
  readonly #releases: { name: string; release: () => Promise<void> | void }[] = [];
  readonly #dataFiles = new Map<string, number>();

  constructor(scratchParent: string) {
    this.scratchDir = fs.mkdtempSync(path.join(scratchParent, 'dmio-bench-'));
    this.defer('scratch directory',
      () => fs.rmSync(this.scratchDir, { recursive: true, force: true }));
  }

  /** Registers a release to run at `releaseAll`. */
  defer(name: string, release: () => Promise<void> | void): void {
    this.#releases.push({ name, release });
  }

  /** Runs every release, newest first; reports failures and keeps going. */
  async releaseAll(): Promise<void> {
    for (let entry = this.#releases.pop(); entry !== undefined; entry = this.#releases.pop()) {
      try {
        await entry.release();
      } catch (error) {
        process.stderr.write(`bench: releasing ${entry.name} failed: ${String(error)}\n`);
      }
    }
  }

  /** A scratch path (not created). */
  file(name: string): string {
    return path.join(this.scratchDir, name);
  }

  /**
   * A scratch file `name` of exactly `sizeBytes` random bytes, created once per run. Random so
   * no tool can skip zeroes or compress.
   */
  dataFile(name: string, sizeBytes: number): string {
    const filePath = this.file(name);
    if (this.#dataFiles.get(name) === sizeBytes) return filePath;
    const buffer = allocAligned(FILL_CHUNK_BYTES);
    const fd = fs.openSync(filePath, 'w');
    try {
      for (let doneBytes = 0; doneBytes < sizeBytes; doneBytes += FILL_CHUNK_BYTES) {
        randomFillSync(buffer);
        const lengthBytes = Math.min(FILL_CHUNK_BYTES, sizeBytes - doneBytes);
        fs.writeSync(fd, buffer, 0, lengthBytes, doneBytes);
      }
      fs.fdatasyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    this.#dataFiles.set(name, sizeBytes);
    return filePath;
  }

  /** Attaches `imagePath` as a loop device (`losetup -f --show`); detached at release. */
  async loopDevice(imagePath: string): Promise<string> {
    const { stdout } = await runChecked('losetup', ['-f', '--show', imagePath]);
    const devicePath = stdout.trim();
    if (!/^\/dev\/loop\d+$/.test(devicePath)) {
      throw new Error(`losetup printed ${JSON.stringify(stdout)}`);
    }
    this.defer(`loop device ${devicePath}`, async () => {
      await runChecked('losetup', ['-d', devicePath]);
    });
    return devicePath;
  }

  /**
   * Starts `nbdkit memory SIZE` on a Unix socket in the scratch directory and returns its URI
   * (`nbd+unix:///?socket=...`). It exits with this process and is stopped at release.
   */
  async nbdkitMemory(name: string, sizeBytes: number): Promise<string> {
    const socketPath = this.file(`${name}.sock`);
    const server = await this.server(name, 'nbdkit', ['--foreground', '--exit-with-parent',
      '--unix', socketPath, 'memory', `size=${sizeBytes}`], socketPath);
    return server.uri;
  }

  /**
   * Starts `file args` as an NBD server that listens on `socketPath` (which the arguments
   * must name) and resolves once the socket exists. Stopped at release if not before.
   */
  async server(
    name: string, file: string, args: readonly string[], socketPath: string,
  ): Promise<StartedServer> {
    const child = spawn(file, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => { stderr += chunk.toString('utf8'); });
    let stopping: Promise<void> | null = null;
    const stop = (): Promise<void> => (stopping ??= stopChild(child));
    this.defer(`${file} ${name}`, stop);
    const deadlineMs = Date.now() + NBDKIT_START_TIMEOUT_MS;
    while (!fs.existsSync(socketPath)) {
      if (child.exitCode !== null || Date.now() > deadlineMs) {
        await stop();
        throw new Error(`${file} did not start: ${stderr.trim().slice(0, 400)}`);
      }
      await sleep(20);
    }
    return { uri: `nbd+unix:///?socket=${socketPath}`, pid: child.pid ?? 0, stop };
  }
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  await exited;
}
