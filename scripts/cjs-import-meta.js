// Injected by esbuild into the CommonJS CLI bundle (scripts/build-cli.mjs): stands in for
// `import.meta.url`, which CommonJS lacks, with the bundle file's own URL. The library's
// modules use it to find package.json and to make a `require` for koffi and built-ins.
export const importMetaUrl = require('node:url').pathToFileURL(__filename).href;
