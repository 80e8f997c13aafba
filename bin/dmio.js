#!/bin/sh
":" //; unset NODE_EXTRA_CA_CERTS; exec node "$0" "$@"
// The two lines above are shell, read only when this file is executed: they start Node on this
// same file (JavaScript sees a string and a comment) without NODE_EXTRA_CA_CERTS, whose
// certificates Node 20 parses at start-up whether or not anything uses TLS (30-50 ms with a
// large bundle, more than loading all of dmio). dmio never opens a TLS connection.
//
// Runs the dmio CLI: the built single-file bundle dist/cli/dmio.js when it exists (an
// installed package, or a clone after `npm install`, whose `prepare` builds it; one file loads
// about 50 ms faster than the library's seventy modules), else the TypeScript source through
// tsx, so a fresh checkout works before any build. DMIO_CLI_FROM_SOURCE=1 forces the source
// (most CLI tests set it, so they test the code as it is now).
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';

const built = fileURLToPath(new URL('../dist/cli/dmio.js', import.meta.url));
let entry;
if (existsSync(built) && process.env.DMIO_CLI_FROM_SOURCE !== '1') {
  entry = await import(pathToFileURL(built).href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  entry = await import(new URL('../src/cli/main.ts', import.meta.url).href);
}
await entry.runCli();
