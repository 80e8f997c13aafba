#!/usr/bin/env node
// The `dmio` command: runs the CLI that `npm run build` (tsc) compiled into dist/. Nothing else
// happens here; what a start costs is described in docs/cli.md ("Start-up").
import { runCli } from '../dist/cli/main.js';

await runCli();
