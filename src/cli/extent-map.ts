// Owns `dmio info --map`: a device's allocation from its first sector to its last, asked in
// bounded `deviceExtents` queries (each from where the previous answer ended), with
// neighbouring extents of the same kind merged (a hole split across two answers or two table
// segments prints once). Output is written after each query and awaited, so memory holds one
// answer and one pending extent, never the whole map. Text is nbdinfo --map's layout: offset
// and length in bytes, the NBD base:allocation type (hole 1 | zero 2) and its description;
// `--json` is one array of `{offsetBytes, lengthBytes, hole, zero}`, an object a line.

import { Buffer } from 'node:buffer';
import { type BlockDevice, type DeviceExtent, deviceExtents, sectorsToBytes } from '../index.js';
import type { CliContext } from './context.js';
import { writeStdout } from './stdout.js';

/** nbdinfo's descriptions of the base:allocation types 0 to 3. */
const TYPE_DESCRIPTIONS = ['data', 'hole', 'zero', 'hole,zero'] as const;

/** Writes the map of `device` to stdout, as text or as a JSON array. */
export async function writeExtentMap(
  cli: CliContext, device: BlockDevice, json: boolean,
): Promise<void> {
  const merger = new ExtentMerger(json ? jsonLine : textLine);
  let sector = 0;
  if (json) await writeText(cli, '[');
  while (sector < device.sizeSectors) {
    const extents = await deviceExtents(device, sector, device.sizeSectors - sector);
    const text = merger.add(extents);
    const last = extents[extents.length - 1] as DeviceExtent;
    sector = last.sector + last.countSectors;
    if (text.length > 0) await writeText(cli, text);
  }
  const tail = merger.end();
  await writeText(cli, json ? `${tail}\n]\n` : tail);
}

/** Merges neighbouring extents of one kind; formats each merged extent once it is complete. */
class ExtentMerger {
  readonly #format: (extent: DeviceExtent, index: number) => string;
  #pending: DeviceExtent | null = null;
  #printedCount = 0;

  constructor(format: (extent: DeviceExtent, index: number) => string) {
    this.#format = format;
  }

  /** Takes the next answer; returns the text of the extents it completed. */
  add(extents: readonly DeviceExtent[]): string {
    let text = '';
    for (const extent of extents) {
      const pending = this.#pending;
      if (pending !== null && sameKind(pending, extent)) {
        this.#pending = { ...pending, countSectors: pending.countSectors + extent.countSectors };
        continue;
      }
      if (pending !== null) text += this.#print(pending);
      this.#pending = extent;
    }
    return text;
  }

  /** The text of the last extent, once the device's end is reached. */
  end(): string {
    return this.#pending === null ? '' : this.#print(this.#pending);
  }

  #print(extent: DeviceExtent): string {
    const text = this.#format(extent, this.#printedCount);
    this.#printedCount += 1;
    return text;
  }
}

function sameKind(left: DeviceExtent, right: DeviceExtent): boolean {
  return left.hole === right.hole && left.zero === right.zero;
}

/** The NBD base:allocation type number: `NBD_STATE_HOLE` (1) | `NBD_STATE_ZERO` (2). */
function nbdType(extent: DeviceExtent): 0 | 1 | 2 | 3 {
  return ((extent.hole ? 1 : 0) | (extent.zero ? 2 : 0)) as 0 | 1 | 2 | 3;
}

/** One line as `nbdinfo --map` prints it. */
function textLine(extent: DeviceExtent): string {
  const type = nbdType(extent);
  const offsetBytes = String(sectorsToBytes(extent.sector)).padStart(10);
  const lengthBytes = String(sectorsToBytes(extent.countSectors)).padStart(10);
  return `${offsetBytes}  ${lengthBytes}  ${String(type).padStart(3)}  ` +
    `${TYPE_DESCRIPTIONS[type]}\n`;
}

/** One element of the JSON array, on its own line; `index` decides the separating comma. */
function jsonLine(extent: DeviceExtent, index: number): string {
  return `${index === 0 ? '' : ','}\n${JSON.stringify({
    offsetBytes: sectorsToBytes(extent.sector), lengthBytes: sectorsToBytes(extent.countSectors),
    hole: extent.hole, zero: extent.zero,
  })}`;
}

function writeText(cli: CliContext, text: string): Promise<void> {
  return writeStdout(cli, Buffer.from(text, 'utf8'));
}
