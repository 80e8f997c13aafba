#!/usr/bin/env node
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
