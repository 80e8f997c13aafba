#!/usr/bin/env node
// The `dmio` command: runs the CLI that `npm run build` compiled (tsc) and bundled (esbuild,
// a few modules instead of the ~140 it is built from; see docs/cli.md "Start-up").
import { runCli } from '../dist/bundle/dmio.js';

await runCli();
