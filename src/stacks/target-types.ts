// Owns the registry of target types: the name a table line uses and the parser that turns its
// arguments into a plan. A name not listed here is an unknown target.

import { parseDelay } from './delay-target.js';
import { parseError } from './error-target.js';
import { parseFlakey } from './flakey-target.js';
import { parseLinear } from './linear-target.js';
import { parseMirror } from './mirror-parse.js';
import { parseStriped } from './striped-target.js';
import { parseWritecache } from './writecache-parse.js';
import type { TargetParser } from './target.js';
import { parseZero } from './zero-target.js';

/** Every target type a table may name. */
export const TARGET_TYPES: ReadonlyMap<string, TargetParser> = new Map<string, TargetParser>([
  ['linear', parseLinear],
  ['striped', parseStriped],
  ['zero', parseZero],
  ['error', parseError],
  ['flakey', parseFlakey],
  ['delay', parseDelay],
  ['mirror', parseMirror],
  ['writecache', parseWritecache],
]);
