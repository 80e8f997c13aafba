#!/usr/bin/env node
// The `dmio` command: runs the CLI that `npm run build` compiled (tsc) and bundled into one
// file (esbuild; one module loads in about half the time of the ~140 it is built from, see
// docs/cli.md "Start-up"). Nothing else happens here.
import { runCli } from '../dist/cli/dmio.js';

await runCli();
