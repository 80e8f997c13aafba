#!/bin/sh
":" //; unset NODE_EXTRA_CA_CERTS; exec node "$0" "$@"
// The two lines above are shell, read only when this file is executed: they start Node on this
// same file (JavaScript sees a string and a comment) without NODE_EXTRA_CA_CERTS, whose
// certificates Node 20 parses at start-up whether or not anything uses TLS (30-50 ms with a
// large bundle, more than loading all of dmio). dmio never opens a TLS connection.
//
// Runs the dmio CLI: the built single-file bundle dist/cli/dmio.cjs when it exists (an
// installed package, or a clone after `npm install`, whose `prepare` builds it), compiled with
// the V8 code cache dist/cli/dmio.cache when that was made from this very bundle (its first 32
// bytes are the bundle's SHA-256); else the TypeScript source through tsx, so a fresh checkout
// works before any build. DMIO_CLI_FROM_SOURCE=1 forces the source (most CLI tests set it, so
// they test the code as it is now). This file is CommonJS because an ES module launcher costs
// Node's module loader about 8 ms more at every start.
//
// DMIO_CLI_CODE_CACHE=report says on stderr whether the cache was used (for the tests);
// scripts/make-code-cache.cjs requires this file for `loadBundle` and makes the cache.
const fs = require('node:fs');
const path = require('node:path');

const BUNDLE = path.join(__dirname, '..', 'dist', 'cli', 'dmio.cjs');
const CACHE = path.join(__dirname, '..', 'dist', 'cli', 'dmio.cache');
const SOURCE = path.join(__dirname, '..', 'src', 'cli', 'main.ts');
const DIGEST_BYTES = 32;

/** The code cache made from the bundle `code`, or undefined. */
function readCache(code) {
  let cache;
  try {
    cache = fs.readFileSync(CACHE);
  } catch {
    return undefined; // Not made (a build without it): compile as usual.
  }
  const digest = bundleDigest(code);
  if (cache.length <= DIGEST_BYTES || !cache.subarray(0, DIGEST_BYTES).equals(digest)) {
    return undefined; // Made from another bundle: V8 would not notice a same-length change.
  }
  return cache.subarray(DIGEST_BYTES);
}

/** The SHA-256 a code cache starts with: that of the bundle it was made from. */
function bundleDigest(code) {
  return require('node:crypto').createHash('sha256').update(code).digest();
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

module.exports = { loadBundle, bundleDigest, CACHE };
