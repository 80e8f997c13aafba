// Owns `dmio zero`: zeros one region of every destination with kcopyd (write-zeroes where all
// destinations support it, else writes from one shared zero page). Without a length, the
// region runs to the end of the smallest destination; missing image files need a length.

import type { Command } from 'commander';
import {
  DM_KCOPYD_MAX_REGIONS, dmKcopydClientCreate, dmKcopydClientDestroy, dmKcopydZero,
  sectorsToBytes, type BlockDevice, type KcopydResult,
} from '../../index.js';
import type { CliContext, RunCommand } from '../context.js';
import { checkSpec, closeAll, openForCli } from '../devices.js';
import { createProgress, finalStates, parseProgressMode } from '../progress.js';
import { watchInterrupts } from '../interrupt.js';
import { kcopydDestinations } from '../kcopyd-outcome.js';
import { printReport } from '../report.js';
import { parseLengthSectors, parseSector, type LengthOptions } from '../usage.js';
import { UsageError } from '../exit-status.js';
import { openDestinations } from './open-regions.js';

interface ZeroFlags extends LengthOptions {
  sector: string;
  json?: boolean;
  progress?: string | boolean;
  flush: boolean;
}

/** Adds `zero` to the program. */
export function registerZero(program: Command, run: RunCommand): void {
  program.command('zero')
    .description('write zeros to one region of up to 8 destinations with kcopyd')
    .argument('<dest...>', `1 to ${DM_KCOPYD_MAX_REGIONS} device specs`)
    .option('--sector <N>', 'first sector (512-byte units)', '0')
    .option('--count <SECTORS>',
      'sectors to zero (default: to the end of the smallest destination)')
    .option('--length <SIZE>', 'bytes to zero, with K/M/G/T suffixes (alternative to --count)')
    .option('--no-flush', 'report success without flushing the destinations first')
    .option('--json', 'print one JSON object with the outcome')
    .option('--progress <MODE>',
      'FD: write N/100 lines to that descriptor; json: JSON lines on stderr')
    .option('--no-progress', 'no progress bar even on a terminal')
    .action((dests: string[], flags: ZeroFlags) => run((cli) => zero(cli, dests, flags)));
}

async function zero(cli: CliContext, specs: string[], flags: ZeroFlags): Promise<number> {
  if (specs.length > DM_KCOPYD_MAX_REGIONS) {
    throw new UsageError(`${specs.length} destinations; at most ${DM_KCOPYD_MAX_REGIONS}`);
  }
  const sector = parseSector(flags.sector, '--sector');
  const lengthSectors = parseLengthSectors(flags);
  const progressMode = parseProgressMode(flags.progress, flags.json === true);
  for (const spec of specs) checkSpec(spec, lengthSectors !== null);
  const opened: BlockDevice[] = [];
  try {
    const countSectors = lengthSectors ?? await smallestRemaining(cli, specs, sector, opened);
    const totalBytes = sectorsToBytes(countSectors);
    // Zeroing never grows an existing destination: a region past its end is bad usage.
    const dests = await openDestinations(cli, specs, sector, countSectors, false, opened,
      { growth: 'create-only' });
    const progress = await createProgress(cli, totalBytes, progressMode, 'zero', specs);
    const kc = dmKcopydClientCreate();
    const startMs = performance.now();
    const interrupts = watchInterrupts(cli);
    let result: KcopydResult;
    try {
      const regions = dests.map((device) => ({ device, sector, count: countSectors }));
      result = await dmKcopydZero(kc, regions, {
        onProgress: (doneBytes) => progress.update(doneBytes),
        // A failed destination is dropped and the healthy ones are still finished.
        dropFailedDestinations: true,
        // Durable before success: every destination written to is flushed after its last write.
        flush: flags.flush,
        signal: interrupts.signal,
      });
    } catch (error) {
      progress.stop();
      throw error;
    } finally {
      await dmKcopydClientDestroy(kc);
      interrupts.dispose();
    }
    const destinations = kcopydDestinations(specs, result, totalBytes);
    progress.stop(finalStates(destinations));
    const status = printReport(cli, { readError: false, writeErrorBits: result.writeErr,
      destinations, bytes: totalBytes, seconds: (performance.now() - startMs) / 1000,
      flushed: flags.flush, interrupted: interrupts.received }, flags.json === true,
    { verb: 'zeroed' });
    return interrupts.exitStatus() ?? status;
  } finally {
    await closeAll(opened);
  }
}

/** Sectors from `sector` to the end of the smallest destination, probing each read-only. */
async function smallestRemaining(
  cli: CliContext, specs: readonly string[], sector: number, opened: BlockDevice[],
): Promise<number> {
  let smallest = Number.MAX_SAFE_INTEGER;
  for (const spec of specs) {
    const device = await openForCli(cli, { spec, options: { readOnly: true } });
    opened.push(device);
    smallest = Math.min(smallest, device.sizeSectors);
    await device.close();
  }
  if (sector > smallest) {
    throw new UsageError(`--sector ${sector} is past the end (${smallest} sectors)`);
  }
  return smallest - sector;
}
