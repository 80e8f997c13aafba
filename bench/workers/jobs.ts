// Owns the messages between the bench and its worker processes: what a worker is asked to run
// (a job, serialised as JSON on its command line) and what it reports (one JSON line per job
// on stdout). Jobs are plain data so the parent never shares state with a worker.

/**
 * How workload 1 drives 4 KiB random I/O:
 * - `fs-cb`: callback `fs.read`/`fs.write`, `depth` in flight (the raw Node reference);
 * - `fs-sync`: `fs.readSync`/`fs.writeSync`, depth 1;
 * - `dmio-notify`: `dmIo` with a notify callback, `depth` requests in flight;
 * - `dmio-promise`: `dmIo` Promise form, `depth` awaiting loops;
 * - `dmio-blocking`: `dmIoBlocking`, depth 1;
 * - `core-thin`: `dmIo` (notify) over a bench-local device that only calls `fs.read`/`fs.write`:
 *   the dm-io core's cost without the file backend's.
 */
export type RandomVariant =
  'fs-cb' | 'fs-sync' | 'dmio-notify' | 'dmio-promise' | 'dmio-blocking' | 'core-thin';

/** Workload 1: random I/O of `blockBytes` at random aligned offsets below `spanBytes`. */
export interface RandomIoJob {
  readonly kind: 'random-io';
  readonly variant: RandomVariant;
  /** The file or block device to address. */
  readonly path: string;
  /** Open with O_DIRECT. */
  readonly direct: boolean;
  /** A file read whole before the run to warm the page cache, or null. */
  readonly warmPath: string | null;
  readonly op: 'read' | 'write';
  /** Requests in flight. */
  readonly depth: number;
  readonly blockBytes: number;
  readonly spanBytes: number;
  /** Run this long before counting. */
  readonly warmupMs: number;
  /** Count completions for this long. */
  readonly durationMs: number;
  /** Seed of the offset generator, so every variant walks the same offsets. */
  readonly seed: number;
}

/** Workload 2: sequential writes of `chunkBytes` mirrored to every path. */
export interface MirrorWriteJob {
  readonly kind: 'mirror-write';
  /**
   * `dmio`: one 3-region `dmIo` per chunk with `kmem` memory (walked in 4 KiB pages: one
   * 256-buffer `writev` per file); `dmio-bvec`: the same with the chunk as one bio vector (one
   * 1 MiB `write` per file); `fs-cb`: one callback `fs.write` per file.
   */
  readonly variant: 'dmio' | 'dmio-bvec' | 'fs-cb';
  readonly paths: readonly string[];
  readonly sizeBytes: number;
  readonly chunkBytes: number;
  /** Chunks in flight. */
  readonly depth: number;
}

/** Workload 4: read or write a whole NBD export through dmio's NBD device. */
export interface NbdStreamJob {
  readonly kind: 'nbd-stream';
  readonly op: 'read' | 'write';
  readonly uri: string;
  readonly sizeBytes: number;
  readonly chunkBytes: number;
  readonly depth: number;
}

/** Workload 3's plain Node peer: copy `source` to every target with callback `fs`. */
export interface FsCopyJob {
  readonly kind: 'fs-copy';
  readonly source: string;
  readonly targets: readonly string[];
  readonly sizeBytes: number;
  readonly chunkBytes: number;
  /** Chunks in flight. */
  readonly depth: number;
}

/** Anything a worker can run. */
export type WorkerJob = RandomIoJob | MirrorWriteJob | NbdStreamJob | FsCopyJob;

/** What a job measured: operations (or bytes) done in `elapsedMs`. */
export interface WorkerMeasurement {
  readonly ops: number;
  readonly bytes: number;
  readonly elapsedMs: number;
  /** CPU time of the whole process (all threads) over the same window, in microseconds. */
  readonly cpuUs: number;
}

/** One job's outcome. */
export type WorkerResult = WorkerMeasurement | { readonly error: string };

/** True when the job failed. */
export function isWorkerError(result: WorkerResult): result is { readonly error: string } {
  return 'error' in result;
}
