// Owns which build of the library the bench workers measure: the compiled dist/ that users run
// (bench/run.ts builds it before any workload), never src/ through tsx, whose transform wraps
// every closure the hot path creates and so would charge dmio for the loader. Types still come
// from src/, so the bench typechecks without a build.

import type * as Library from '../../src/index.js';

const distUrl = new URL('../../dist/index.js', import.meta.url);

/** The compiled library. */
export const lib = (await import(distUrl.href)) as typeof Library;
