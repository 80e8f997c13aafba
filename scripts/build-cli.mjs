// Builds the CLI's single-file bundle and its V8 code cache; run by `npm run build` after tsc.
// The bundle is CommonJS (dist/cli/dmio.cjs) so that the launcher can compile it with a code
// cache (node:vm), which ES modules cannot use on Node 20: loading goes from about 16 ms to 8,
// and the whole `dmio --version` from about 55 to 47 ms. The cache (dist/cli/dmio.cache) is made
// by scripts/make-code-cache.cjs in a child process. The bundle's last line names its SHA-256
// (bin/dmio.cjs `markBundle`), the cache starts with that name, and the launcher uses the cache
// only when the two match (V8 itself checks only the source's length). The bundle may hold no
// dynamic `import()`: a vm.Script has no loader for it.

import { build } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

/** Most time the copy that makes the cache may take before the build goes on without one. */
const CODE_CACHE_TIMEOUT_MS = 60_000;

rmSync(`${root}dist/cli/dmio.cache`, { force: true });
rmSync(`${root}dist/cli/dmio.js`, { force: true }); // The ES module bundle of older builds.
/** Gives commander a lazy node:child_process (scripts/lazy-child-process.cjs): 3-4 ms a start. */
const lazyChildProcess = {
  name: 'lazy-child-process',
  setup(pluginBuild) {
    pluginBuild.onResolve({ filter: /^(node:)?child_process$/ }, (args) =>
      (args.importer.includes(`${sep}node_modules${sep}commander${sep}`) ?
        { path: `${root}scripts/lazy-child-process.cjs` } : undefined));
  },
};

await build({
  entryPoints: [`${root}src/cli/main.ts`],
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  external: ['koffi'],
  define: { 'import.meta.url': 'importMetaUrl' },
  inject: [`${root}scripts/cjs-import-meta.js`],
  plugins: [lazyChildProcess],
  outfile: `${root}dist/cli/dmio.cjs`,
  logLevel: 'warning',
});

const bundleText = readFileSync(`${root}dist/cli/dmio.cjs`, 'utf8');
if (/\bimport\(/.test(bundleText)) {
  throw new Error('dist/cli/dmio.cjs holds a dynamic import(), which the launcher cannot load');
}
const { markBundle } = createRequire(import.meta.url)('../bin/dmio.cjs');
writeFileSync(`${root}dist/cli/dmio.cjs`, markBundle(bundleText));

// A failure leaves the CLI working, only without the cache (the launcher checks for it).
const env = { ...process.env };
delete env.NODE_OPTIONS;
const made = spawnSync(process.execPath, [`${root}scripts/make-code-cache.cjs`],
  { env, stdio: ['ignore', 'ignore', 'inherit'], timeout: CODE_CACHE_TIMEOUT_MS });
if (made.status !== 0) {
  process.stderr.write(`build-cli: no code cache made (exit ${String(made.status)}, ` +
    `${String(made.signal)}); dmio works without it and starts about 8 ms slower\n`);
}
