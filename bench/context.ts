// Owns what every workload receives: the options, the peers found, the recorder, the
// resources of the run, and how to start the `dmio` CLI (or why it cannot be started yet).

import type { BenchOptions } from './options.js';
import type { PeerReport } from './peers.js';
import type { Recorder } from './recorder.js';
import type { Resources } from './resources.js';

/** How to run `dmio`: the argv prefix (`bin/dmio.js`, executed), or why there is none. */
export type DmioCli = { readonly argv: readonly string[] } | { readonly missing: string };

/** Shared by all workloads of one run. */
export interface BenchContext {
  readonly options: BenchOptions;
  readonly peers: PeerReport;
  readonly recorder: Recorder;
  readonly resources: Resources;
  readonly dmioCli: DmioCli;
}

/** The reason a peer program cannot run, or null when it can. */
export function peerMissing(context: BenchContext, command: string): string | null {
  return context.peers.missing[command] ?? null;
}
