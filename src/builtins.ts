// Owns loading the Node built-in modules that only some runs need, on first use instead of at
// start-up: `node:net` (NBD), `node:crypto` (the CLI's --verify), `node:readline` (its verify
// gate), `node:worker_threads` (the io_uring's main-thread check) and `node:assert` (a failed
// internal assertion). Importing them eagerly cost the CLI about 5 ms of each start, some 2% of
// a 1 GiB copy. Built-ins load synchronously through `require`, so callers stay synchronous.

import { createRequire } from 'node:module';

const load = createRequire(import.meta.url);

/** `node:net`. */
export function nodeNet(): typeof import('node:net') {
  return load('node:net') as typeof import('node:net');
}

/** `node:crypto`. */
export function nodeCrypto(): typeof import('node:crypto') {
  return load('node:crypto') as typeof import('node:crypto');
}

/** `node:readline`. */
export function nodeReadline(): typeof import('node:readline') {
  return load('node:readline') as typeof import('node:readline');
}

/** `node:worker_threads`. */
export function nodeWorkerThreads(): typeof import('node:worker_threads') {
  return load('node:worker_threads') as typeof import('node:worker_threads');
}

/** `node:assert`. */
export function nodeAssert(): typeof import('node:assert') {
  return load('node:assert') as typeof import('node:assert');
}
