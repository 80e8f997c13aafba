// Owns `dmio copy - DEST...`: stdin, of unknown length, copied to every destination with
// kcopyd's stream copy (dmKcopydCopyStream: 8 MiB segments read ahead, bounded memory). The copy
// ends at EOF, or after --length. Image files are created or extended sparse to hold --length
// (or STREAM_IMAGE_CAP_BYTES without it) and cut back to the input written to each at the end
// (after an interrupt or failure too); any other destination must hold the first sector and
// fails with ENOSPC when the input passes its end, while the others complete. Stdin that is a
// destination is refused (exit 2) before anything is opened. An input ending inside a sector
// is zero-padded to a whole sector when every destination is a new image file (said on
// stderr; the files are then cut to its exact length), and otherwise refused (a read error,
// its last segment not written): padding would overwrite bytes the input never gave. Stdin
// is the context's (a test's stream has no descriptor, so the destination check is skipped).
// Holes are kept as in a copy from a device (sparse-choice.ts): zero blocks of the input are
// not written to new image files, and become write-zeroes on the others.

import { closeSync, fdatasyncSync, ftruncateSync, openSync, statSync } from 'node:fs';
import {
  dmIoClientCreate, dmIoClientDestroy, dmKcopydClientCreate, dmKcopydClientDestroy,
  dmKcopydCopyStream, SECTOR_SIZE, sectorsToBytes, type BlockDevice, type KcopydStreamResult,
} from '../../index.js';
import { destroyOnThrow } from '../destroy-on-throw.js';
import { tell, type CliContext } from '../context.js';
import { closeAll } from '../devices.js';
import { watchInterrupts } from '../interrupt.js';
import { kcopydDestinations } from '../kcopyd-outcome.js';
import { createProgress, finalStates, type ProgressMode } from '../progress.js';
import { printReport, type DestinationReport } from '../report.js';
import { checkSpec } from '../devices.js';
import type { SourceHashes } from '../verify.js';
import { destinationIdentity, fdIdentity, sameIdentity } from '../same-storage.js';
import { UsageError } from '../exit-status.js';
import { openDestinations } from './open-regions.js';
import { sparseOption, type GrownFile, type SparseFlags } from '../sparse-choice.js';
import { beforeVerify, createSourceHashes, reopenForVerify } from './verify-reopen.js';

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
  /** What to do with holes (sparse-choice.ts), as for a copy from a device. */
  readonly sparseFlags: SparseFlags;
}

/** Copies stdin to the destinations; returns the exit status. */
export async function copyStream(cli: CliContext, plan: StreamCopyPlan): Promise<number> {
  for (const spec of plan.destSpecs) checkSpec(spec, true);
  refuseStdinAsDestination(cli, plan.destSpecs);
  const capSectors = plan.lengthSectors ?? STREAM_IMAGE_CAP_BYTES / SECTOR_SIZE;
  const opened: BlockDevice[] = [];
  const grown: GrownFile[] = [];
  try {
    const dests = await openDestinations(cli, plan.destSpecs, plan.destSector, capSectors,
      plan.direct, opened, { sectorFlag: '--dest-sector', growth: 'stream', grown,
        writeBehind: plan.flush });
    const sparse = sparseOption(plan.sparseFlags, plan.destSpecs, dests, plan.destSector, grown);
    const kc = dmKcopydClientCreate({ subJobSectors: plan.subJobSectors });
    const { hashes, progress } = await destroyOnThrow(kc, async () => ({
      hashes: plan.verify ? await createSourceHashes(0, kc.subJobSectors) : null,
      progress: await createProgress(cli,
        plan.lengthSectors === null ? 0 : sectorsToBytes(capSectors), plan.progressMode, 'copy',
        plan.destSpecs),
    }));
    const startMs = performance.now();
    const interrupts = watchInterrupts(cli);
    let result: KcopydStreamResult;
    try {
      result = await dmKcopydCopyStream(kc, cli.stdin,
        dests.map((device) => ({ device, sector: plan.destSector })), {
          maxBytes: sectorsToBytes(capSectors), flush: plan.flush,
          // Zero padding would overwrite bytes of an existing destination the input never gave.
          partialSector: plan.destSpecs.every((_, index) => grown.some((file) =>
            file.index === index && file.oldSizeBytes === null)) ? 'zero-pad' : 'refuse',
          signal: interrupts.signal, onProgress: (doneBytes) => progress.update(doneBytes),
          ...(hashes === null ? {} : { onChunkRead: hashes.onChunkRead }),
          ...(sparse === undefined ? {} : { sparse }),
        });
    } finally {
      await dmKcopydClientDestroy(kc);
      interrupts.dispose();
    }
    // A cancelled copy may leave a read of stdin pending (a stalled producer): let it go, so
    // the process exits now rather than when the producer does.
    if (result.aborted) cli.stdin.destroy();
    const copiedBytes = result.inputBytes + result.paddedBytes;
    const destinations = kcopydDestinations(plan.destSpecs, result, copiedBytes);
    const seconds = (performance.now() - startMs) / 1000;
    const verifying = hashes !== null && !result.aborted && !result.readErr;
    if (verifying) {
      await verifyAll(cli, { plan, dests, opened, destinations,
        countSectors: copiedBytes / SECTOR_SIZE, hashes });
    }
    cutBack(grown, sectorsToBytes(plan.destSector), result, plan.flush);
    if (result.paddedBytes > 0) {
      tell(cli, `dmio: the input ended ${SECTOR_SIZE - result.paddedBytes} bytes into a ` +
        `sector: its last sector was written padded with ${result.paddedBytes} zero bytes, ` +
        'and the new image files were cut to what was written of the input\n');
    }
    progress.stop(finalStates(destinations));
    const status = printReport(cli, { readError: result.readErr, writeErrorBits: result.writeErr,
      destinations, bytes: result.inputBytes, seconds, flushed: plan.flush,
      interrupted: interrupts.received }, plan.json, {
      verb: 'copied', source: { spec: 'stdin', error: readErrorText(result, grown, plan) },
      verified: verifying });
    return interrupts.exitStatus() ?? status;
  } finally {
    await closeAll(opened);
  }
}

function readErrorText(result: KcopydStreamResult, grown: readonly GrownFile[],
  plan: StreamCopyPlan): string | null {
  const error = result.readError;
  if (error === undefined) return null;
  const cause = error.cause instanceof Error ? `: ${error.cause.message}` : '';
  const partial = result.inputBytes % SECTOR_SIZE !== 0 && /into a sector/.test(cause);
  if (!partial) return `${error.message}${cause}`;
  const existing = plan.destSpecs.filter((_, index) =>
    !grown.some((file) => file.index === index && file.oldSizeBytes === null));
  return `${error.message}${cause}: a partial last sector is not written over an existing ` +
    `destination (${existing.join(', ')}), whose bytes past the input would be lost; the ` +
    'input\'s last segment was not written (give a whole number of sectors, or a new file)';
}


/**
 * Refuses stdin that is one of the destinations (the same regular file or block device), before
 * anything is opened for writing: a destination extended ahead of the input would be read
 * back as input, endlessly, and any other write would overwrite what is still to be read.
 */
function refuseStdinAsDestination(cli: CliContext, specs: readonly string[]): void {
  const stdin = cli.stdinFd === null ? null : fdIdentity(cli.stdinFd);
  if (stdin === null) return;
  for (const spec of specs) {
    if (!sameIdentity(stdin, destinationIdentity(spec))) continue;
    throw new UsageError(`stdin is ${spec} itself, a destination: the copy would read back ` +
      'what it writes; copy from the file by name instead (dmio copy FILE DEST)');
  }
}

/**
 * Cuts every image file the copy created or extended back to the input written to it (from
 * `startBytes`; never past the input's end nor below the file's old size), so a file that got
 * part of the input is not left looking longer than what it holds; the new size is made
 * durable when flushing.
 */
function cutBack(
  grown: readonly GrownFile[], startBytes: number, result: KcopydStreamResult, flush: boolean,
): void {
  for (const file of grown) {
    const writtenBytes = Math.min(result.writtenBytes[file.index] ?? 0, result.inputBytes);
    const sizeBytes = Math.max(file.oldSizeBytes ?? 0, startBytes + writtenBytes);
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

/** What the read-back of a stream copy needs. */
interface StreamVerify {
  readonly plan: StreamCopyPlan;
  readonly dests: BlockDevice[];
  readonly opened: BlockDevice[];
  readonly destinations: DestinationReport[];
  readonly countSectors: number;
  readonly hashes: SourceHashes;
}

async function verifyAll(cli: CliContext, verify: StreamVerify): Promise<void> {
  const { plan, dests, opened, destinations, countSectors, hashes } = verify;
  await beforeVerify(cli);
  const client = dmIoClientCreate();
  try {
    for (let index = 0; index < dests.length; index += 1) {
      const report = destinations[index]!;
      if (!report.ok) continue;
      const device = await reopenForVerify(cli, plan.destSpecs[index]!, dests, index, opened);
      const problem = await hashes.verifyDestination(client, device, plan.destSector,
        countSectors);
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
