#!/bin/sh
":" //; unset NODE_EXTRA_CA_CERTS; true 2>/dev/null 3>&1 || exec 1</dev/null; exec node "$0" "$@"
// The two lines above are shell, read only when this file is executed: they start Node on this
// same file (JavaScript sees a string and a comment) without NODE_EXTRA_CA_CERTS, whose
// certificates Node 20 parses at start-up whether or not anything uses TLS (30-50 ms with a
// large bundle, more than loading all of dmio). dmio's TLS (nbds:// devices, `serve --tls`)
// trusts the CA of its tls-certificates directory, or the system's CAs, never that variable.
// When stdout is closed (`dmio read ... >&-`), fd 1 is opened read-only on /dev/null, so every
// write to stdout fails with EBADF as it would on the closed descriptor: Node would otherwise
// put a writable /dev/null there, and output that went nowhere would count as delivered.
//
// Runs the dmio CLI: the built single-file bundle dist/cli/dmio.cjs when it exists (an
// installed package, or a clone after `npm install`, whose `prepare` builds it), compiled with
// the V8 code cache dist/cli/dmio.cache when that was made from this very build of the bundle;
// else the TypeScript source through tsx, so a fresh checkout works before any build.
// DMIO_CLI_FROM_SOURCE=1 forces the source (most CLI tests set it, so they test the code as it
// is now). This file is CommonJS because an ES module launcher costs Node's module loader about
// 8 ms more at every start.
//
// The build ends the bundle with a line naming its SHA-256 (`markBundle`), and the cache starts
// with that name. V8 checks only the source's length, so without this a rebuilt bundle of the
// same length would run the old cached code. The launcher compares the names rather than
// hashing the bundle at every start (loading node:crypto and hashing took 4-6 ms); a bundle
// edited by hand keeps its old name, so after such an edit delete the cache or rebuild.
//
// DMIO_CLI_CODE_CACHE=report says on stderr whether the cache was used (for the tests);
// scripts/make-code-cache.cjs requires this file for `loadBundle` and makes the cache.
const fs = require('node:fs');
const path = require('node:path');

const BUNDLE = path.join(__dirname, '..', 'dist', 'cli', 'dmio.cjs');
const CACHE = path.join(__dirname, '..', 'dist', 'cli', 'dmio.cache');
const SOURCE = path.join(__dirname, '..', 'src', 'cli', 'main.ts');
/** The bundle's last line: this prefix, 64 hex digits of SHA-256, a newline. */
const ID_PREFIX = '//# dmioBundleSha256=';
const ID_LINE_BYTES = ID_PREFIX.length + 64 + 1;

/** The name (hex SHA-256) the build gave the bundle `code`, or undefined when it has none. */
function bundleId(code) {
  if (code.length < ID_LINE_BYTES) return undefined;
  const line = code.toString('latin1', code.length - ID_LINE_BYTES);
  if (!line.startsWith(ID_PREFIX) || !line.endsWith('\n')) return undefined;
  const id = line.slice(ID_PREFIX.length, -1);
  return /^[0-9a-f]{64}$/.test(id) ? id : undefined;
}

/** `text` with its name line appended: what the build writes as the bundle. */
function markBundle(text) {
  const digest = require('node:crypto').createHash('sha256').update(text).digest('hex');
  return `${text}${text.endsWith('\n') ? '' : '\n'}${ID_PREFIX}${digest}\n`;
}

/** The code cache made from the bundle `code`, or undefined. */
function readCache(code) {
  const id = bundleId(code);
  if (id === undefined) return undefined; // Not built by scripts/build-cli.mjs.
  let cache;
  try {
    cache = fs.readFileSync(CACHE);
  } catch {
    return undefined; // Not made (a build without it): compile as usual.
  }
  if (cache.length <= id.length || cache.toString('latin1', 0, id.length) !== id) {
    return undefined; // Made from another build of the bundle.
  }
  return cache.subarray(id.length);
}

/**
 * Compiles and runs the bundle as a CommonJS module, with the code cache when `useCache` and
 * one made from this bundle exists; returns its exports, its script and its bytes.
 */
function loadBundle(useCache) {
  const Module = require('node:module');
  const vm = require('node:vm');
  const code = fs.readFileSync(BUNDLE);
  const cachedData = useCache ? readCache(code) : undefined;
  const script = new vm.Script(Module.wrap(code.toString('utf8')),
    { filename: BUNDLE, cachedData });
  const bundleModule = { exports: {} };
  script.runInThisContext()(bundleModule.exports, Module.createRequire(BUNDLE), bundleModule,
    BUNDLE, path.dirname(BUNDLE));
  const cacheUsed = cachedData !== undefined && script.cachedDataRejected !== true;
  return { cli: bundleModule.exports, script, code, cacheUsed };
}

async function run() {
  if (fs.existsSync(BUNDLE) && process.env.DMIO_CLI_FROM_SOURCE !== '1') {
    const { cli, cacheUsed } = loadBundle(true);
    if (process.env.DMIO_CLI_CODE_CACHE === 'report') {
      process.stderr.write(`dmio: code cache ${cacheUsed ? 'used' : 'not used'}\n`);
    }
    await cli.runCli();
    return;
  }
  const { register } = await import('tsx/esm/api');
  register();
  const cli = await import(require('node:url').pathToFileURL(SOURCE).href);
  await cli.runCli();
}

if (require.main === module) {
  run().catch((error) => {
    process.stderr.write(`dmio: ${error instanceof Error ? error.stack : String(error)}\n`);
    process.exitCode = 1;
  });
}

module.exports = { loadBundle, bundleId, markBundle, CACHE, ID_PREFIX };
