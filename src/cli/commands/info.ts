// Owns `dmio info`: what a device is and what it can do — size in bytes (the true size, which
// may end in a partial block) and in addressable sectors, logical and physical block size,
// request limits, and which of discard, write-zeroes, flush and FUA it supports — as text or as
// one JSON object. For a `table:` device also each segment's `dmsetup status` and `dmsetup
// table` line (the table is opened read-only: a mirror does not resync, a writecache writes no
// metadata, so the status is what the files hold). With `--map`, the device's allocation
// instead (extent-map.ts), as `nbdinfo --map` prints it.

import type { Command } from 'commander';
import bytes from 'bytes';
import { formatTableReport, sectorsToBytes, TableDevice } from '../../index.js';
import type { CliContext, RunCommand } from '../context.js';
import { checkSpec, closeAll, openForCli, sizeBytesOf } from '../devices.js';
import { EXIT_OK } from '../exit-status.js';
import { writeExtentMap } from '../extent-map.js';

/** Adds `info` to the program. */
export function registerInfo(program: Command, run: RunCommand): void {
  program.command('info')
    .description('show a device\'s size, block sizes, limits and capabilities')
    .argument('<device>', 'device spec')
    .option('--json', 'print one JSON object (with --map: one array)')
    .option('--map', 'print which ranges hold data, hole or zeros, as nbdinfo --map')
    .action((spec: string, flags: { json?: boolean; map?: boolean }) =>
      run((cli) => info(cli, spec, flags.json === true, flags.map === true)));
}

async function info(cli: CliContext, spec: string, json: boolean, map: boolean): Promise<number> {
  checkSpec(spec, false);
  const out = cli.stdout.stream;
  const device = await openForCli(cli, { spec, options: { readOnly: true } });
  try {
    if (map) {
      await writeExtentMap(cli, device, json);
      return EXIT_OK;
    }
    const { limits } = device;
    // `info` opens read-only to touch nothing; zero: and random: can never be written.
    const writable = device.kind !== 'zero' && device.kind !== 'random';
    const summary = {
      device: spec,
      kind: device.kind,
      sizeBytes: sizeBytesOf(device),
      sizeSectors: device.sizeSectors,
      logicalBlockBytes: limits.logicalBlockBytes,
      physicalBlockBytes: limits.physicalBlockBytes,
      limits: {
        maxSectorsPerRequest: limits.maxSectorsPerRequest,
        maxSegmentsPerRequest: limits.maxSegmentsPerRequest,
        maxDiscardSectors: limits.maxDiscardSectors,
        maxWriteZeroesSectors: limits.maxWriteZeroesSectors,
        memoryAlignmentBytes: limits.memoryAlignmentBytes,
      },
      supports: {
        discard: writable && limits.maxDiscardSectors > 0,
        writeZeroes: writable && limits.maxWriteZeroesSectors > 0,
        flush: limits.flush,
        fua: limits.fua,
      },
      ...(device instanceof TableDevice ? { table: tableSummary(device) } : {}),
    };
    if (json) {
      out.write(`${JSON.stringify(summary)}\n`);
      return EXIT_OK;
    }
    const yesNo = (value: boolean): string => (value ? 'yes' : 'no');
    const tailBytes = summary.sizeBytes - sectorsToBytes(summary.sizeSectors);
    out.write([
      `device:            ${spec} (${device.kind})`,
      `size:              ${summary.sizeBytes} bytes (${bytes(summary.sizeBytes)}), ` +
        `${summary.sizeSectors} sectors` +
        (tailBytes > 0 ? ` (the last ${tailBytes} bytes are not a whole block)` : ''),
      `logical block:     ${limits.logicalBlockBytes} bytes`,
      `physical block:    ${limits.physicalBlockBytes} bytes`,
      `max request:       ${limits.maxSectorsPerRequest} sectors, ` +
        `${limits.maxSegmentsPerRequest} segments`,
      `memory alignment:  ${limits.memoryAlignmentBytes} bytes`,
      `discard:           ${yesNo(summary.supports.discard)} ` +
        `(max ${limits.maxDiscardSectors} sectors)`,
      `write-zeroes:      ${yesNo(summary.supports.writeZeroes)} ` +
        `(max ${limits.maxWriteZeroesSectors} sectors)`,
      `flush:             ${yesNo(limits.flush)}`,
      `fua:               ${yesNo(limits.fua)}`,
      ...(summary.table === undefined ? [] : [
        'table:', ...summary.table.table.map((line) => `  ${line}`),
        'status:', ...summary.table.status.map((line) => `  ${line}`),
      ]),
      '',
    ].join('\n'));
    return EXIT_OK;
  } finally {
    await closeAll([device]);
  }
}

/** A table's segments as `dmsetup table` and `dmsetup status` print them. */
function tableSummary(device: TableDevice): { table: string[]; status: string[] } {
  return { table: formatTableReport(device, 'table'), status: formatTableReport(device, 'status') };
}
