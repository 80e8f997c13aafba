// Owns the text grammar of a device-mapper table: one `START LENGTH TARGET ARGS...` line per
// segment, in 512-byte sectors; `#` starts a comment; blank lines are ignored. Arguments are
// split on runs of spaces and tabs, and a backslash makes the next character literal (so `a\ b`
// is one argument), as the kernel's `dm_split_args`. Numbers are strict: the whole token is
// decimal digits. Segments must start at 0 and follow each other with no gap and no overlap;
// every refusal is a TableError naming the line.

import { TableError } from '../errors.js';
import { sectorsToBytes } from '../units.js';

/** One parsed line of a table. */
export interface TableLine {
  /** 1-based line number in the text, for errors. */
  readonly lineNumber: number;
  /** First sector of the segment on the table device. */
  readonly startSector: number;
  /** Sectors the segment covers (> 0). */
  readonly lengthSectors: number;
  /** The target type, e.g. `linear`. */
  readonly target: string;
  /** The target's arguments, split and unescaped. */
  readonly args: readonly string[];
}

/** Where a table came from, for error messages: a file path or `<text>`. */
export type TableSource = string;

/**
 * Parses table text into contiguous lines covering `0..size`.
 *
 * @throws TableError (`DMIO_ERR_INVALID_TABLE`) naming the line: a malformed number, a zero
 * length, a start that leaves a gap or overlaps the previous segment, a segment end beyond a
 * safe byte offset, or a table with no segments at all.
 */
export function parseTableText(text: string, source: TableSource): TableLine[] {
  const lines: TableLine[] = [];
  let nextSector = 0;
  const rawLines = text.split('\n');
  for (let index = 0; index < rawLines.length; index += 1) {
    const lineNumber = index + 1;
    const words = splitArgs(stripComment(rawLines[index] ?? ''));
    if (words.length === 0) continue;
    const [startText = '', lengthText, target, ...args] = words;
    if (lengthText === undefined || target === undefined) {
      throw new TableError('DMIO_ERR_INVALID_TABLE', source, lineNumber,
        'expected START LENGTH TARGET [ARGS...]');
    }
    const startSector = parseNumberArg(startText, 'start', source, lineNumber);
    const lengthSectors = parseNumberArg(lengthText, 'length', source, lineNumber);
    if (lengthSectors === 0) {
      throw new TableError('DMIO_ERR_INVALID_TABLE', source, lineNumber, 'zero-length target');
    }
    if (startSector !== nextSector) {
      throw new TableError('DMIO_ERR_INVALID_TABLE', source, lineNumber,
        startSector < nextSector ?
          `overlap: starts at sector ${startSector}, but the previous segment ends at ${nextSector}` :
          `gap in table: starts at sector ${startSector}, expected ${nextSector}`);
    }
    nextSector = startSector + lengthSectors;
    if (!Number.isSafeInteger(sectorsToBytes(nextSector))) {
      throw new TableError('DMIO_ERR_INVALID_TABLE', source, lineNumber,
        'the segment ends beyond a safe byte offset');
    }
    lines.push({ lineNumber, startSector, lengthSectors, target, args });
  }
  if (lines.length === 0) {
    throw new TableError('DMIO_ERR_INVALID_TABLE', source, 0, 'the table has no segments');
  }
  return lines;
}

/** Removes a `#` comment; a backslash-escaped `\#` is kept. */
function stripComment(line: string): string {
  for (let index = 0; index < line.length; index += 1) {
    const char = line[index];
    if (char === '\\') index += 1;
    else if (char === '#') return line.slice(0, index);
  }
  return line;
}

/**
 * Splits on runs of spaces, tabs and carriage returns; a backslash makes the next character
 * literal; a trailing lone backslash is kept.
 */
export function splitArgs(line: string): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  for (let index = 0; index < line.length; index += 1) {
    const char = line[index] as string;
    if (char === '\\') {
      const next = line[index + 1];
      word += next ?? '\\';
      index += 1;
      inWord = true;
    } else if (char === ' ' || char === '\t' || char === '\r') {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
    } else {
      word += char;
      inWord = true;
    }
  }
  if (inWord) words.push(word);
  return words;
}

/**
 * Parses a strict unsigned decimal (the whole token, no sign, no suffix).
 *
 * @throws TableError naming `what` and the line.
 */
export function parseNumberArg(
  text: string, what: string, source: TableSource, lineNumber: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  const value = /^\d+$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(value) || value > max) {
    throw new TableError('DMIO_ERR_INVALID_TABLE', source, lineNumber,
      `invalid ${what} ${JSON.stringify(text)}` +
      (max < Number.MAX_SAFE_INTEGER ? ` (an unsigned integer up to ${max})` : ' (an unsigned integer)'));
  }
  return value;
}
