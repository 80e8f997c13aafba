// Owns `dmio copy - DEST...`: stdin, of unknown length, copied to every destination with
// kcopyd's stream copy (dmKcopydCopyStream: 8 MiB segments read ahead, bounded memory). The copy
// ends at EOF, or after --length. Image files are created or extended sparse to hold --length
// (or STREAM_IMAGE_CAP_BYTES without it) and cut back to the bytes received at the end; any
// other destination must hold the first sector and fails with ENOSPC when the input passes its
// end, while the others complete. An input ending inside a sector is zero-padded to a whole
// sector on the devices (said on stderr); image files are then cut to its exact length.

import { closeSync, fdatasyncSync, ftruncateSync, openSync, statSync } from 'node:fs';
import { dmIoClientCreate, dmIoClientDestroy } from '../../core/client.js';
import type { BlockDevice } from '../../devices/block-device.js';
import { dmKcopydClientCreate, dmKcopydClientDestroy } from '../../kcopyd/kcopyd.js';
import { dmKcopydCopyStream, type KcopydStreamResult } from '../../kcopyd/stream.js';
import { closeAll } from '../devices.js';
import { watchInterrupts } from '../interrupt.js';
import { kcopydDestinations } from '../kcopyd-outcome.js';
import { createProgress, finalStates, type ProgressMode } from '../progress.js';
import { printReport, type DestinationReport } from '../report.js';
import { checkSpec } from '../devices.js';
import { SourceHashes, verifyDestination } from '../verify.js';
import { UsageError } from '../usage.js';
import { openDestinations } from './open-regions.js';
import { reopenForVerify } from './verify-reopen.js';

/**
 * The size new or short image files get while a stream without --length is copied (1 TiB,
 * sparse: nothing is allocated); they are cut back to the bytes received when it ends.
 */
const STREAM_IMAGE_CAP_BYTES = 1024 ** 4;

/** What `dmio copy -` was asked. */
export interface StreamCopyPlan {
  readonly destSpecs: readonly string[];
  readonly destSector: number;
  readonly lengthSectors: number | null;
  readonly subJobSectors: number;
  readonly direct: boolean;
  readonly verify: boolean;
  readonly flush: boolean;
  readonly json: boolean;
  readonly progressMode: ProgressMode;
}

/** Copies stdin to the destinations; returns the exit status. */
export async function copyStream(plan: StreamCopyPlan): Promise<number> {
  for (const spec of plan.destSpecs) checkSpec(spec, true);
  const capSectors = plan.lengthSectors ?? STREAM_IMAGE_CAP_BYTES / 512;
  const opened: BlockDevice[] = [];
  const grown: Array<{ readonly path: string; readonly oldSizeBytes: number | null }> = [];
  try {
    const dests = await openDestinations(plan.destSpecs, plan.destSector, capSectors,
      plan.direct, opened, { sectorFlag: '--dest-sector', growth: 'stream', grown });
    const kc = dmKcopydClientCreate({ subJobSectors: plan.subJobSectors });
    const hashes = plan.verify ? new SourceHashes(0, kc.subJobSectors) : null;
    const progress = await createProgress(capSectors === STREAM_IMAGE_CAP_BYTES / 512 ? 0 :
      capSectors * 512, plan.progressMode, 'copy', plan.destSpecs);
    const startMs = performance.now();
    const interrupts = watchInterrupts();
    let result: KcopydStreamResult;
    try {
      result = await dmKcopydCopyStream(kc, process.stdin,
        dests.map((device) => ({ device, sector: plan.destSector })), {
          maxBytes: capSectors * 512, partialSector: 'zero-pad', flush: plan.flush,
          signal: interrupts.signal, onProgress: (doneBytes) => progress.update(doneBytes),
          ...(hashes === null ? {} : { onChunkRead: hashes.onChunkRead }),
        });
    } finally {
      await dmKcopydClientDestroy(kc);
      interrupts.dispose();
    }
    const copiedBytes = result.inputBytes + result.paddedBytes;
    const destinations = kcopydDestinations(plan.destSpecs, result, copiedBytes);
    const seconds = (performance.now() - startMs) / 1000;
    const verifying = hashes !== null && !result.aborted && !result.readErr;
    if (verifying) {
      await verifyAll(plan, dests, opened, destinations, copiedBytes / 512, hashes);
    }
    cutBack(grown, plan.destSector * 512 + result.inputBytes, plan.flush);
    if (result.paddedBytes > 0) {
      process.stderr.write(`dmio: the input ended ${512 - result.paddedBytes} bytes into a ` +
        `sector: devices got its last sector padded with ${result.paddedBytes} zero bytes ` +
        '(image files were cut to its exact length)\n');
    }
    progress.stop(finalStates(destinations));
    const status = printReport({ readError: result.readErr, writeErrorBits: result.writeErr,
      destinations, bytes: result.inputBytes, seconds, flushed: plan.flush,
      interrupted: interrupts.received }, plan.json, {
      verb: 'copied', source: { spec: 'stdin', error: readErrorText(result) },
      verified: verifying });
    return interrupts.exitStatus() ?? status;
  } finally {
    await closeAll(opened);
  }
}

function readErrorText(result: KcopydStreamResult): string | null {
  const error = result.readError;
  if (error === undefined) return null;
  const cause = error.cause instanceof Error ? `: ${error.cause.message}` : '';
  return `${error.message}${cause}`;
}

/**
 * Cuts every image file the copy created or extended back to `endBytes` (never below its old
 * size), and makes the new size durable when flushing.
 */
function cutBack(
  grown: ReadonlyArray<{ readonly path: string; readonly oldSizeBytes: number | null }>,
  endBytes: number, flush: boolean,
): void {
  for (const file of grown) {
    const sizeBytes = Math.max(file.oldSizeBytes ?? 0, endBytes);
    if (statSync(file.path).size <= sizeBytes) continue;
    const fd = openSync(file.path, 'r+');
    try {
      ftruncateSync(fd, sizeBytes);
      if (flush) fdatasyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }
}

async function verifyAll(
  plan: StreamCopyPlan, dests: BlockDevice[], opened: BlockDevice[],
  destinations: DestinationReport[], countSectors: number, hashes: SourceHashes,
): Promise<void> {
  const client = dmIoClientCreate();
  try {
    for (let index = 0; index < dests.length; index += 1) {
      const report = destinations[index]!;
      if (!report.ok) continue;
      const device = await reopenForVerify(plan.destSpecs[index]!, dests, index, opened);
      const problem = await verifyDestination(client, device, plan.destSector, countSectors,
        hashes);
      if (problem !== null) destinations[index] = { ...report, ok: false, error: problem };
    }
  } finally {
    await dmIoClientDestroy(client);
  }
}

/** Refuses the flags a stream copy cannot honour. */
export function refuseStreamFlags(flags: { sourceSector: string; ignoreErrors?: boolean;
  writeSeq?: boolean; }): void {
  if (flags.sourceSector !== '0') throw new UsageError('--source-sector: stdin cannot seek');
  if (flags.ignoreErrors === true) {
    throw new UsageError('--ignore-errors: stdin is read once; a failed read cannot be skipped');
  }
  if (flags.writeSeq === true) throw new UsageError('--write-seq is not supported with stdin');
}
