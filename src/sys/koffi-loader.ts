// Owns loading koffi. koffi's own entry point finds its prebuilt native module by reading the
// Node binary's ELF header (glibc or musl), walks a list of per-platform packages, and wraps a
// few deprecated functions: 8-11 ms of a CLI run's start here, against 2-3 ms for loading the
// native module itself. Where npm put the prebuilt glibc binary beside koffi (x64 and arm64
// Linux, the process linked against glibc) this loads that binary directly; anywhere else, or
// if the direct load fails, it falls back to `require('koffi')`, which behaves the same but
// slower.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

type Koffi = typeof import('koffi').default;

/** How koffi was loaded: its native module directly, or through its package's loader. */
export type KoffiLoadPath = 'direct' | 'package';

/** Architectures whose glibc prebuilt binary this module knows the place of. */
const DIRECT_ARCHES: readonly string[] = ['x64', 'arm64'];

/**
 * The specifier of the prebuilt glibc native module for this process, or undefined when this
 * process is not a glibc Linux one on a known architecture. `mapsText` is the text of
 * `/proc/self/maps` (a glibc process maps `libc.so.6`; a musl one `ld-musl-*`).
 */
export function directKoffiSpecifier(
  platform: string, arch: string, mapsText: string,
): string | undefined {
  if (platform !== 'linux' || !DIRECT_ARCHES.includes(arch)) return undefined;
  if (!mapsText.includes('/libc.so.6') || mapsText.includes('/ld-musl-')) return undefined;
  return `@koromix/koffi-linux-${arch}/linux_${arch}/koffi.node`;
}

/** Whether `candidate` looks like koffi's native module (what koffi's own loader checks). */
function isKoffiNative(candidate: unknown): candidate is Koffi {
  if (typeof candidate !== 'object' || candidate === null) return false;
  const native = candidate as { version?: unknown; load?: unknown; errno?: unknown };
  return typeof native.version === 'string' && typeof native.load === 'function' &&
    typeof native.errno === 'function';
}

function loadDirect(require: NodeJS.Require): Koffi | undefined {
  let mapsText: string;
  try {
    mapsText = readFileSync('/proc/self/maps', 'latin1');
  } catch {
    return undefined;
  }
  const specifier = directKoffiSpecifier(process.platform, process.arch, mapsText);
  if (specifier === undefined) return undefined;
  try {
    const native: unknown = require(specifier);
    return isKoffiNative(native) ? native : undefined;
  } catch {
    return undefined; // Not installed where npm puts it (pnpm, a bundler): the package's way.
  }
}

/** koffi, loaded once per call (callers cache it), and how it was found. */
export function loadKoffi(): { koffi: Koffi; via: KoffiLoadPath } {
  const require = createRequire(import.meta.url);
  const direct = loadDirect(require);
  if (direct !== undefined) return { koffi: direct, via: 'direct' };
  return { koffi: require('koffi') as Koffi, via: 'package' };
}
