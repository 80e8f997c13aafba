// Makes the CLI's V8 code cache (dist/cli/dmio.cache), run by scripts/build-cli.mjs in a child
// process without NODE_OPTIONS (V8 accepts a cache only under the flags it was made with): it
// loads the bundle exactly as the launcher does, runs one small copy through it so that the
// functions a copy uses are compiled too, and writes the bundle's name (the SHA-256 on its last
// line, written by scripts/build-cli.mjs) followed by the cache.
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { loadBundle, bundleId, CACHE } = require('../bin/dmio.cjs');

async function makeCodeCache() {
  const { cli, script, code } = loadBundle(false);
  const id = bundleId(code);
  if (id === undefined) throw new Error('dist/cli/dmio.cjs has no name line (markBundle)');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmio-code-cache-'));
  try {
    const images = ['a.img', 'b.img'].map((name) => path.join(dir, name));
    const status = await cli.main(['copy', 'random:4M,seed=1', ...images, '--verify', '--json']);
    if (status !== 0) throw new Error(`the copy that warms the code cache exited ${status}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  fs.writeFileSync(CACHE, Buffer.concat([Buffer.from(id, 'latin1'), script.createCachedData()]));
}

makeCodeCache().then(() => process.exit(0), (error) => {
  process.stderr.write(`make-code-cache: ${error instanceof Error ? error.stack : error}\n`);
  process.exit(1);
});
