// Owns `dmio zero`: zeros one region of every destination with kcopyd (write-zeroes where all
// destinations support it, else writes from one shared zero page). Without a length, the
// region runs to the end of the smallest destination; missing image files need a length.

import type { Command } from 'commander';
import type { BlockDevice } from '../../devices/block-device.js';
import { DM_KCOPYD_MAX_REGIONS } from '../../kcopyd/constants.js';
import { dmKcopydClientCreate, dmKcopydClientDestroy } from '../../kcopyd/kcopyd.js';
import type { KcopydResult } from '../../kcopyd/job.js';
import { dmKcopydZero } from '../../kcopyd/submit.js';
import { checkSpec, closeAll, openForCli } from '../devices.js';
import { createProgress, finalStates, parseProgressMode } from '../progress.js';
import { watchInterrupts } from '../interrupt.js';
import { kcopydDestinations } from '../kcopyd-outcome.js';
import { printReport } from '../report.js';
import { parseLengthSectors, parseSector, UsageError, type LengthOptions } from '../usage.js';
import { openDestinations } from './open-regions.js';

interface ZeroFlags extends LengthOptions {
  sector: string;
  json?: boolean;
  progress?: string | boolean;
  flush: boolean;
}

/** Adds `zero` to the program. */
export function registerZero(program: Command, run: (work: () => Promise<number>) => void): void {
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
    .action((dests: string[], flags: ZeroFlags) => run(() => zero(dests, flags)));
}

async function zero(specs: string[], flags: ZeroFlags): Promise<number> {
  if (specs.length > DM_KCOPYD_MAX_REGIONS) {
    throw new UsageError(`${specs.length} destinations; at most ${DM_KCOPYD_MAX_REGIONS}`);
  }
  const sector = parseSector(flags.sector, '--sector');
  const lengthSectors = parseLengthSectors(flags);
  const progressMode = parseProgressMode(flags.progress, flags.json === true);
  for (const spec of specs) checkSpec(spec, lengthSectors !== null);
  const opened: BlockDevice[] = [];
  try {
    const countSectors = lengthSectors ?? await smallestRemaining(specs, sector, opened);
    // Zeroing never grows an existing destination: a region past its end is bad usage.
    const dests = await openDestinations(specs, sector, countSectors, false, opened,
      { growth: 'create-only' });
    const progress = await createProgress(countSectors * 512, progressMode, 'zero', specs);
    const kc = dmKcopydClientCreate();
    const startMs = performance.now();
    const interrupts = watchInterrupts();
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
    const destinations = kcopydDestinations(specs, result, countSectors * 512);
    progress.stop(finalStates(destinations));
    const status = printReport({ readError: false, writeErrorBits: result.writeErr,
      destinations, bytes: countSectors * 512, seconds: (performance.now() - startMs) / 1000,
      flushed: flags.flush, interrupted: interrupts.received }, flags.json === true,
    { verb: 'zeroed' });
    return interrupts.exitStatus() ?? status;
  } finally {
    await closeAll(opened);
  }
}

/** Sectors from `sector` to the end of the smallest destination, probing each read-only. */
async function smallestRemaining(
  specs: readonly string[], sector: number, opened: BlockDevice[],
): Promise<number> {
  let smallest = Number.MAX_SAFE_INTEGER;
  for (const spec of specs) {
    const device = await openForCli({ spec, options: { readOnly: true } });
    opened.push(device);
    smallest = Math.min(smallest, device.sizeSectors);
    await device.close();
  }
  if (sector > smallest) {
    throw new UsageError(`--sector ${sector} is past the end (${smallest} sectors)`);
  }
  return smallest - sector;
}
