// Stands in for node:child_process inside commander in the CLI bundle (scripts/build-cli.mjs).
// Commander requires it at load for executable subcommands (`spawn`), which dmio does not have,
// and loading it costs 3-4 ms of every start (it brings node:net and the streams with it). The
// real module loads on the first property read, so commander behaves the same if it ever spawns.
let real;
module.exports = new Proxy({}, {
  get(_target, key) {
    real ??= require('node:child_process');
    return real[key];
  },
});
