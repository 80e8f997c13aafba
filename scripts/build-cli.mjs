// Builds the CLI's single-file bundle and its V8 code cache; run by `npm run build` after tsc.
// The bundle is CommonJS (dist/cli/dmio.cjs) so that the launcher can compile it with a code
// cache (node:vm), which ES modules cannot use on Node 20: loading goes from about 16 ms to 8,
// and the whole `dmio --version` from about 55 to 40 ms. The cache (dist/cli/dmio.cache) is made
// by running one small copy through the bundle in a child process, so the functions a copy uses
// are compiled in it too; it starts with the SHA-256 of the bundle it was made from, and the
// launcher uses it only when that matches (V8 itself checks only the source's length).

import { build } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

rmSync(`${root}dist/cli/dmio.cache`, { force: true });
await build({
  entryPoints: [`${root}src/cli/main.ts`],
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  external: ['koffi'],
  define: { 'import.meta.url': 'importMetaUrl' },
  inject: [`${root}scripts/cjs-import-meta.js`],
  outfile: `${root}dist/cli/dmio.cjs`,
  logLevel: 'warning',
});

// No NODE_OPTIONS: V8 accepts a cache only under the flags it was made with, and `dmio` runs
// without any. A failure leaves the CLI working, only without the cache (the launcher checks).
const env = { ...process.env, DMIO_CLI_MAKE_CODE_CACHE: '1', DMIO_CLI_FROM_SOURCE: '0' };
delete env.NODE_OPTIONS;
const made = spawnSync(process.execPath, [`${root}bin/dmio.cjs`],
  { env, stdio: ['ignore', 'ignore', 'inherit'] });
if (made.status !== 0) {
  process.stderr.write(`build-cli: no code cache made (exit ${String(made.status)}); ` +
    'dmio works without it and starts about 10 ms slower\n');
}
