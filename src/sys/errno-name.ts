// Owns the translation of numeric errno values into their names (`EIO`, `EOPNOTSUPP`, ...),
// the form every IoError and OpenError carries. Linux gives some numbers two names; the table
// picks the one the rest of the library matches on.

import { constants } from 'node:os';

/** For numbers with two names, the name the library uses. */
const PREFERRED_NAMES: ReadonlySet<string> = new Set(['EOPNOTSUPP', 'EAGAIN']);

/** Number → name, built once when the module loads; never written afterwards. */
const NAME_BY_NUMBER: ReadonlyMap<number, string> = buildNameTable();

function buildNameTable(): Map<number, string> {
  const table = new Map<number, string>();
  for (const [name, value] of Object.entries(constants.errno)) {
    const existing = table.get(value);
    if (existing === undefined || PREFERRED_NAMES.has(name)) table.set(value, name);
  }
  return table;
}

/**
 * The errno name for a positive errno number, such as `errnoName(5) === 'EIO'`. Unknown numbers
 * map to `EIO`, so a caller always gets a name it can report.
 */
export function errnoName(errnoNumber: number): string {
  return NAME_BY_NUMBER.get(errnoNumber) ?? 'EIO';
}

/** The errno number for a name, or undefined when this platform has no such errno. */
export function errnoNumber(name: string): number | undefined {
  return (constants.errno as Record<string, number | undefined>)[name];
}
