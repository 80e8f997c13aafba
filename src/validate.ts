// Owns the one-line validators used at the public boundary. Each checks one argument, names
// it in the error, and returns the value typed. Inside the library, assertions replace them.

import {
  IOPRIO_CLASS_MAX, IOPRIO_CLASS_SHIFT, IOPRIO_LEVELS, IOPRIO_MAX,
} from './constants.js';
import { InvalidArgTypeError, OutOfRangeError } from './errors.js';

/** Throws unless `value` is a plain object (or `undefined` when `optional`). */
export function validateOptionsObject(value: unknown, name: string): void {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InvalidArgTypeError(name, 'an object', value);
  }
}

/** Returns `value` when it is a safe integer in `[min, max]`. */
export function validateIntegerInRange(
  value: unknown, name: string, min: number, max: number,
): number {
  if (typeof value !== 'number') throw new InvalidArgTypeError(name, 'a number', value);
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new OutOfRangeError(name, `an integer from ${min} to ${max}`, value);
  }
  return value;
}

/** Returns `value` when it is a safe, non-negative integer. */
export function validateUnsigned(value: unknown, name: string): number {
  return validateIntegerInRange(value, name, 0, Number.MAX_SAFE_INTEGER);
}

/** Returns `value` when it is a boolean, or `fallback` when it is `undefined`. */
export function validateBoolean(value: unknown, name: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw new InvalidArgTypeError(name, 'a boolean', value);
  return value;
}

/** Returns `value` when it is one of `allowed`. */
export function validateOneOf<T extends string>(
  value: unknown, name: string, allowed: readonly T[],
): T {
  if (typeof value !== 'string') {
    throw new InvalidArgTypeError(name, `one of ${allowed.join(', ')}`, value);
  }
  if (!(allowed as readonly string[]).includes(value)) {
    throw new OutOfRangeError(name, `one of ${allowed.join(', ')}`, value);
  }
  return value as T;
}

/** Returns `value` when it is a function. */
export function validateFunction<T extends (...args: never[]) => unknown>(
  value: unknown, name: string,
): T {
  if (typeof value !== 'function') throw new InvalidArgTypeError(name, 'a function', value);
  return value as T;
}

/** Returns `value` when it is a Uint8Array (Buffer included). */
export function validateBytes(value: unknown, name: string): Uint8Array {
  if (!(value instanceof Uint8Array)) {
    throw new InvalidArgTypeError(name, 'a Uint8Array or Buffer', value);
  }
  return value;
}

/**
 * True when `value` is an I/O priority the kernel accepts (its `ioprio_check_cap` rules): 0
 * (class NONE), or class RT (1), BE (2) or IDLE (3) shifted by 13 with a level from 0 to 7.
 */
export function isIoprio(value: unknown): value is number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) return false;
  if (value < 0 || value > IOPRIO_MAX) return false;
  const ioClass = value >> IOPRIO_CLASS_SHIFT;
  const data = value & ((1 << IOPRIO_CLASS_SHIFT) - 1);
  if (ioClass === 0) return data === 0;
  return ioClass <= IOPRIO_CLASS_MAX && data < IOPRIO_LEVELS;
}

/** Returns `value` when it is an I/O priority the kernel accepts (see `isIoprio`). */
export function validateIoprio(value: unknown, name: string): number {
  if (typeof value !== 'number') throw new InvalidArgTypeError(name, 'a number', value);
  if (!isIoprio(value)) {
    throw new OutOfRangeError(name, '0, or class 1-3 (RT, BE, IDLE) << 13 | level 0-7', value);
  }
  return value;
}
