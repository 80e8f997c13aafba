// Owns `dmio copy`: one region of SOURCE to up to 8 destinations with kcopyd. Every argument is
// checked, the source opened and every range checked before any destination file is created;
// missing image files are created with the size the copy needs. With --verify the source is
// hashed chunk by chunk while copying and every destination read back afterwards. `-` as the
// source is stdin (copy-stream.ts); `-` as the only destination is stdout (copy-stdout.ts),
// which takes the same path with a stream sink device written in offset order and the report
// on stderr.

import type { Command } from 'commander';
import {
  DM_KCOPYD_MAX_REGIONS, dmIoClientCreate, dmIoClientDestroy, dmKcopydClientCreate,
  dmKcopydClientDestroy, dmKcopydCopy, dmKcopydThrottleCreate, FileDevice, KCOPYD_SPLIT_COUNT,
  KCOPYD_SUB_JOB_SECTORS_MAX, PAGE_SIZE, SECTOR_SIZE, sectorsToBytes, type BlockDevice,
  type KcopydResult, type KcopydSparseOptions,
} from '../../index.js';
import { parseSparseBytes, sparseOption, type GrownFile, type SparseFlags } from '../sparse-choice.js';
import { destroyOnThrow } from '../destroy-on-throw.js';
import type { CliContext, RunCommand } from '../context.js';
import { openDestinations, openSource, refuseSourceOverlap } from './open-regions.js';
import { copyStream, refuseStreamFlags } from './copy-stream.js';
import {
  notFlushedText, openStdoutDestination, refuseStdoutUse, STDOUT_SPEC, type StdoutDestination,
} from './copy-stdout.js';
import { closeAll } from '../devices.js';
import { createProgress, finalStates, parseProgressMode, type ProgressMode } from '../progress.js';
import { watchInterrupts } from '../interrupt.js';
import { kcopydDestinations } from '../kcopyd-outcome.js';
import { printReport, type DestinationReport, type RunReport } from '../report.js';
import { STDOUT_NAME } from '../stdout.js';
import type { SourceHashes } from '../verify.js';
import { beforeVerify, createSourceHashes, reopenForVerify } from './verify-reopen.js';
import {
  parseBytes, parseLengthSectors, parsePercent, parseSector, type LengthOptions,
} from '../usage.js';
import { EXIT_IO_ERROR, UsageError } from '../exit-status.js';

/** The flags of `dmio copy`, as commander hands them over. */
interface CopyFlags extends LengthOptions, SparseFlags {
  sourceSector: string;
  destSector: string;
  ignoreErrors?: boolean;
  writeSeq?: boolean;
  throttle?: string;
  subJobSize?: string;
  direct?: boolean;
  verify?: boolean;
  json?: boolean;
  progress?: string | boolean;
  offload: boolean;
  flush: boolean;
  preallocate?: boolean;
}

/** Adds `copy` to the program. */
export function registerCopy(program: Command, run: RunCommand): void {
  program.command('copy')
    .description('copy one region of SOURCE to up to 8 destinations with kcopyd')
    .argument('<source>',
      'device spec to read (path, file:, mem:, zero:, random:, nbd://), or - for stdin')
    .argument('<dest...>',
      `1 to ${DM_KCOPYD_MAX_REGIONS} destination specs; missing image files are created; ` +
      '- alone for stdout')
    .option('--source-sector <N>', 'first source sector (512-byte units)', '0')
    .option('--dest-sector <N>', 'first sector on every destination', '0')
    .option('--count <SECTORS>', 'sectors to copy (default: to the end of the source)')
    .option('--length <SIZE>', 'bytes to copy, with K/M/G/T suffixes (alternative to --count)')
    .option('--ignore-errors', 'keep going after errors; unreadable parts are written as zeros')
    .option('--write-seq',
      'write destinations in ascending offset order (turns --ignore-errors off)')
    .option('--throttle <PCT>', 'keep I/O in flight at most PCT percent of the time (100 = off)')
    .option('--sub-job-size <SIZE>',
      'chunk size, a multiple of 4K up to 4M (default 1M; 4M when copying file to file)')
    .option('--direct', 'open files and block devices with O_DIRECT')
    .option('--verify', 'read every destination back (bypassing the page cache) and compare')
    .option('--sparse <SIZE>', 'keep holes: the source\'s holes and zero blocks of SIZE are ' +
      'not written as data (new files keep them as holes, others get write-zeroes); 0 writes ' +
      'every byte', '4K')
    .option('--allocated', 'write holes as zeros: fully allocated destinations')
    .option('--target-is-zero', 'the destinations already read zeros: write nothing over holes')
    .option('--preallocate', 'allocate new and extended image files in full before copying')
    .option('--no-offload',
      'always copy through memory; by default file-to-file chunks use copy_file_range')
    .option('--no-flush', 'report success without flushing the destinations first')
    .option('--json', 'print one JSON object with the outcome')
    .option('--progress <MODE>',
      'FD: write N/100 lines to that descriptor; json: JSON lines on stderr')
    .option('--no-progress', 'no progress bar even on a terminal')
    .action((source: string, dests: string[], flags: CopyFlags) =>
      run((cli) => copy(cli, source, dests, flags)));
}

async function copy(
  cli: CliContext, sourceSpec: string, destSpecs: string[], flags: CopyFlags,
): Promise<number> {
  if (destSpecs.length > DM_KCOPYD_MAX_REGIONS) {
    throw new UsageError(`${destSpecs.length} destinations; at most ${DM_KCOPYD_MAX_REGIONS}`);
  }
  const sourceSector = parseSector(flags.sourceSector, '--source-sector');
  const destSector = parseSector(flags.destSector, '--dest-sector');
  const lengthSectors = parseLengthSectors(flags);
  const throttlePercent = flags.throttle === undefined ? 100 :
    parsePercent(flags.throttle, '--throttle');
  const chosenSubJobSectors = parseSubJobSectors(flags.subJobSize);
  const progressMode = parseProgressMode(flags.progress, flags.json === true);
  const direct = flags.direct === true;
  parseSparseBytes(flags);
  const toStdout = destSpecs.includes(STDOUT_SPEC);
  if (toStdout) refuseStdoutUse(cli, sourceSpec, destSpecs, flags, progressMode);
  if (sourceSpec === '-') {
    refuseStreamFlags(flags);
    return copyStream(cli, { destSpecs, destSector, lengthSectors, direct,
      subJobSectors: chosenSubJobSectors ?? CLI_SUB_JOB_SECTORS_DEFAULT,
      verify: flags.verify === true, flush: flags.flush, json: flags.json === true,
      progressMode, sparseFlags: flags });
  }
  const devices: BlockDevice[] = [];
  try {
    const { device: source, countSectors } = await openSource(cli, sourceSpec,
      toStdout ? [] : destSpecs, { sector: sourceSector, lengthSectors, direct }, devices);
    const stdout = toStdout ?
      openStdoutDestination(cli, sourceSpec, countSectors, flags.flush) : null;
    if (stdout !== null) devices.push(stdout.device);
    else refuseSourceOverlap(sourceSpec, sourceSector, destSpecs, destSector, countSectors);
    const grown: GrownFile[] = [];
    const dests = stdout !== null ? [stdout.device] : await openDestinations(cli, destSpecs,
      destSector, countSectors, direct, devices, { sectorFlag: '--dest-sector', grown,
        preallocate: flags.preallocate === true, writeBehind: flags.flush });
    const subJobSectors = chosenSubJobSectors ?? defaultSubJobSectors(source, dests, flags);
    const sparse = stdout !== null ? undefined :
      sparseOption(flags, destSpecs, dests, destSector, grown);
    return await runCopy(cli, { sourceSpec, source, sourceSector,
      destSpecs: stdout !== null ? [STDOUT_NAME] : destSpecs, dests, destSector, countSectors,
      throttlePercent, subJobSectors, progressMode, flags, opened: devices, stdout, sparse });
  } finally {
    await closeAll(devices);
  }
}

/**
 * The CLI's chunk size when `--sub-job-size` is not given and the copy goes through memory:
 * 1 MiB, as `dd bs=1M`. The library keeps the kernel's 512 KiB; on local files 1 MiB chunks
 * halve the per-chunk hand-offs and measured 10-25% faster here (docs/performance.md).
 */
const CLI_SUB_JOB_SECTORS_DEFAULT = (1024 * 1024) / SECTOR_SIZE;

/**
 * The chunk size when `--sub-job-size` is not given: the largest (4 MiB) when every device is
 * a buffered regular file and offload is on, since offloaded chunks take no pages and fewer,
 * larger `copy_file_range` calls measured 10% faster for one destination and 30-40% for three;
 * otherwise `CLI_SUB_JOB_SECTORS_DEFAULT`.
 */
function defaultSubJobSectors(
  source: BlockDevice, dests: readonly BlockDevice[], flags: CopyFlags,
): number {
  const offloading = flags.offload && flags.verify !== true && flags.writeSeq !== true &&
    [source, ...dests].every((device) => device instanceof FileDevice && device.copyOffload);
  return offloading ? KCOPYD_SUB_JOB_SECTORS_MAX : CLI_SUB_JOB_SECTORS_DEFAULT;
}

/**
 * Fresh pages for the kcopyd client of one copy: one sub-job's worth per sub-job the copy can
 * have in flight beside the one the client's reserve holds, at most kcopyd's default
 * (`KCOPYD_SPLIT_COUNT` - 1 sub-jobs). A copy of one sub-job (1 MiB by default) needs none, so
 * it does not allocate and slice the 7 MiB the default pool would hold.
 */
function freshPagesFor(countSectors: number, subJobSectors: number): number {
  const subJobs = Math.ceil(countSectors / subJobSectors);
  const extraSubJobs = Math.min(KCOPYD_SPLIT_COUNT - 1, Math.max(0, subJobs - 1));
  return extraSubJobs * sectorsToBytes(subJobSectors) / PAGE_SIZE;
}

/** The `--sub-job-size` given, in sectors, or null for the default. */
function parseSubJobSectors(text: string | undefined): number | null {
  if (text === undefined) return null;
  const sizeBytes = parseBytes(text, '--sub-job-size');
  if (sizeBytes === 0 || sizeBytes % PAGE_SIZE !== 0 ||
    sizeBytes > sectorsToBytes(KCOPYD_SUB_JOB_SECTORS_MAX)) {
    throw new UsageError(`--sub-job-size: ${sizeBytes} bytes; expected a multiple of 4K ` +
      `from 4K to ${sectorsToBytes(KCOPYD_SUB_JOB_SECTORS_MAX) / 1024}K`);
  }
  return sizeBytes / SECTOR_SIZE;
}

interface CopyPlan {
  readonly sourceSpec: string;
  readonly source: BlockDevice;
  readonly sourceSector: number;
  readonly destSpecs: readonly string[];
  readonly dests: BlockDevice[];
  readonly destSector: number;
  readonly countSectors: number;
  readonly throttlePercent: number;
  readonly subJobSectors: number;
  readonly progressMode: ProgressMode;
  readonly flags: CopyFlags;
  /** Every device opened, closed by the caller at the end. */
  readonly opened: BlockDevice[];
  /** Stdout, when it is the one destination (`dests` is then its sink device). */
  readonly stdout: StdoutDestination | null;
  /** What each destination does with holes, or undefined to write every byte. */
  readonly sparse: KcopydSparseOptions | undefined;
}

async function runCopy(cli: CliContext, plan: CopyPlan): Promise<number> {
  const { flags } = plan;
  const throttle = plan.throttlePercent < 100 ? dmKcopydThrottleCreate(plan.throttlePercent) : null;
  const kc = dmKcopydClientCreate({
    throttle, subJobSectors: plan.subJobSectors,
    freshPages: freshPagesFor(plan.countSectors, plan.subJobSectors),
  });
  const totalBytes = sectorsToBytes(plan.countSectors);
  const { hashes, progress } = await destroyOnThrow(kc, async () => ({
    hashes: flags.verify === true ?
      await createSourceHashes(plan.sourceSector, kc.subJobSectors) : null,
    progress: await createProgress(cli, totalBytes, plan.progressMode, 'copy', plan.destSpecs),
  }));
  const startMs = performance.now();
  const interrupts = watchInterrupts(cli);
  let result: KcopydResult;
  try {
    result = await dmKcopydCopy(kc, { device: plan.source, sector: plan.sourceSector,
      count: plan.countSectors }, plan.dests.map((device) => ({ device, sector: plan.destSector,
      count: plan.countSectors })), {
      ignoreError: flags.ignoreErrors === true,
      // A stream takes its bytes in order: kcopyd issues the writes in offset order.
      writeSeq: flags.writeSeq === true || plan.stdout !== null,
      copyOffload: flags.offload,
      ...(plan.sparse === undefined ? {} : { sparse: plan.sparse }),
      // A failed destination is dropped and the healthy ones are still finished.
      dropFailedDestinations: true,
      // Durable before success: kcopyd flushes every destination it wrote to (a failed or
      // interrupted one too: what it got is kept) after its last write.
      flush: flags.flush,
      signal: interrupts.signal,
      onProgress: (doneBytes) => progress.update(doneBytes),
      ...(hashes === null ? {} : { onChunkRead: hashes.onChunkRead }),
    });
  } catch (error) {
    progress.stop();
    throw error;
  } finally {
    await dmKcopydClientDestroy(kc);
    interrupts.dispose();
  }
  const destinations = kcopydDestinations(plan.destSpecs, result, totalBytes);
  const seconds = (performance.now() - startMs) / 1000;
  const verifying = hashes !== null && !result.aborted &&
    (!result.readErr || flags.ignoreErrors === true);
  if (verifying) await verifyAll(cli, plan, destinations, hashes);
  progress.stop(finalStates(destinations));
  const status = reportCopy(cli, plan, { readError: result.readErr, writeErrorBits: result.writeErr,
    destinations, bytes: totalBytes, seconds, offloadCalls: offloadCalls(plan.dests),
    flushed: flags.flush && (plan.stdout === null || plan.stdout.flushes),
    interrupted: interrupts.received }, result, verifying);
  return interrupts.exitStatus() ?? status;
}

/**
 * Prints the copy's report and returns its status. To stdout it goes to stderr; a failed stdout
 * is named once by `main` with its errno, and a reader that went away (EPIPE) makes no report
 * at all unless --json asked for one, as `dmio read | head` says nothing.
 */
function reportCopy(
  cli: CliContext, plan: CopyPlan, report: RunReport, result: KcopydResult, verifying: boolean,
): number {
  const streamError = plan.stdout?.device.streamError ?? null;
  const json = plan.flags.json === true;
  if ((streamError as NodeJS.ErrnoException | null)?.code === 'EPIPE' && !json) {
    return EXIT_IO_ERROR;
  }
  return printReport(cli, report, json, {
    verb: 'copied', source: { spec: plan.sourceSpec, error: result.readError?.message ?? null },
    verified: verifying,
    ...(plan.stdout === null ? {} : {
      channel: 'stderr', notFlushedWhy: notFlushedText(plan.stdout, plan.flags.flush),
      failuresToldElsewhere: streamError === null ? [] : [0],
    }),
  });
}

/** copy_file_range calls made into the destinations (copy offload). */
function offloadCalls(dests: readonly BlockDevice[]): number {
  let calls = 0;
  for (const dest of dests) if (dest instanceof FileDevice) calls += dest.stats.copyRanges;
  return calls;
}

async function verifyAll(
  cli: CliContext, plan: CopyPlan, destinations: DestinationReport[], hashes: SourceHashes,
): Promise<void> {
  await beforeVerify(cli);
  const client = dmIoClientCreate();
  try {
    for (let index = 0; index < plan.dests.length; index += 1) {
      const report = destinations[index]!;
      if (!report.ok) continue;
      const device = await reopenForVerify(cli, plan.destSpecs[index]!, plan.dests, index,
        plan.opened);
      const problem = await hashes.verifyDestination(client, device, plan.destSector,
        plan.countSectors);
      if (problem !== null) destinations[index] = { ...report, ok: false, error: problem };
    }
  } finally {
    await dmIoClientDestroy(client);
  }
}
