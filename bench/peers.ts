// Owns the peers: finding fio, dd, cp, qemu-img, qemu-nbd, nbdcopy, nbdkit and GNU time, installing the
// missing ones from Debian when allowed (root, apt-get), and saying which are missing so every
// variant that needs one is reported as skipped with the reason, never silently dropped.

import { runCommand } from './proc.js';

/** A program the bench may run, and the Debian package that provides it. */
export interface PeerProgram {
  readonly command: string;
  readonly debianPackage: string;
}

export const PEER_PROGRAMS: readonly PeerProgram[] = [
  { command: 'fio', debianPackage: 'fio' },
  { command: 'dd', debianPackage: 'coreutils' },
  { command: 'cp', debianPackage: 'coreutils' },
  { command: 'qemu-img', debianPackage: 'qemu-utils' },
  { command: 'qemu-nbd', debianPackage: 'qemu-utils' },
  { command: 'nbdcopy', debianPackage: 'libnbd-bin' },
  { command: 'nbdkit', debianPackage: 'nbdkit' },
  { command: 'losetup', debianPackage: 'mount' },
  { command: '/usr/bin/time', debianPackage: 'time' },
];

/** Which peers exist, their versions, and why the others do not. */
export interface PeerReport {
  readonly found: Readonly<Record<string, string>>;
  readonly missing: Readonly<Record<string, string>>;
}

async function locate(command: string): Promise<boolean> {
  const result = await runCommand('sh', ['-c', `command -v ${command}`]);
  return result.exitCode === 0;
}

async function versionOf(command: string): Promise<string> {
  const flag = command === '/usr/bin/time' ? '-V' : '--version';
  const result = await runCommand(command, [flag]);
  const text = `${result.stdout}\n${result.stderr}`.split('\n').find((line) => line.trim() !== '');
  return (text ?? 'present').trim().slice(0, 80);
}

async function install(packages: readonly string[]): Promise<string | null> {
  if (process.getuid?.() !== 0) return 'not root, cannot apt-get install';
  const update = await runCommand('apt-get', ['update', '-qq']);
  if (update.exitCode !== 0) return `apt-get update failed: ${update.stderr.trim().slice(0, 200)}`;
  const result = await runCommand('apt-get', ['install', '-y', '-qq', ...packages], {
    env: { DEBIAN_FRONTEND: 'noninteractive' },
  });
  if (result.exitCode === 0) return null;
  return `apt-get install failed: ${result.stderr.trim().slice(0, 200)}`;
}

/** Finds every peer, installing missing ones first when `allowInstall`. */
export async function detectPeers(allowInstall: boolean): Promise<PeerReport> {
  let absent: PeerProgram[] = [];
  for (const peer of PEER_PROGRAMS) if (!(await locate(peer.command))) absent.push(peer);
  let installFailure: string | null = allowInstall ? null : 'installing disabled (--no-install)';
  if (absent.length > 0 && allowInstall) {
    installFailure = await install([...new Set(absent.map((peer) => peer.debianPackage))]);
    const still: PeerProgram[] = [];
    for (const peer of absent) if (!(await locate(peer.command))) still.push(peer);
    absent = still;
  }
  const found: Record<string, string> = {};
  const missing: Record<string, string> = {};
  for (const peer of PEER_PROGRAMS) {
    if (absent.includes(peer)) {
      const why = installFailure ?? 'install did not provide it';
      missing[peer.command] = `not installed (package ${peer.debianPackage}; ${why})`;
    } else {
      found[peer.command] = await versionOf(peer.command);
    }
  }
  return { found, missing };
}
