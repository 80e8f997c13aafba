// Tests loading koffi: which processes may load the prebuilt glibc binary directly, that the
// direct load happens where npm installed it (this machine, CI) and gives a koffi that calls
// into libc, and that it is the same native module koffi's own loader finds.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import { directKoffiSpecifier, loadKoffi } from './koffi-loader.js';
import { libcLibrary } from './libc.js';

const GLIBC_MAPS = '7f00-7f01 r-xp 00000000 fe:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n';
const MUSL_MAPS = '7f00-7f01 r-xp 00000000 fe:01 1 /lib/ld-musl-x86_64.so.1\n';

test('the direct load is only for glibc Linux on x64 and arm64', () => {
  assert.equal(directKoffiSpecifier('linux', 'x64', GLIBC_MAPS),
    '@koromix/koffi-linux-x64/linux_x64/koffi.node');
  assert.equal(directKoffiSpecifier('linux', 'arm64', GLIBC_MAPS),
    '@koromix/koffi-linux-arm64/linux_arm64/koffi.node');
  assert.equal(directKoffiSpecifier('linux', 'x64', MUSL_MAPS), undefined, 'musl');
  assert.equal(directKoffiSpecifier('linux', 'x64', GLIBC_MAPS + MUSL_MAPS), undefined,
    'a process with both is not trusted to be glibc');
  assert.equal(directKoffiSpecifier('linux', 'ia32', GLIBC_MAPS), undefined);
  assert.equal(directKoffiSpecifier('darwin', 'arm64', GLIBC_MAPS), undefined);
});

test('koffi loads directly where npm installed it, and calls into libc', () => {
  const { koffi, via } = loadKoffi();
  const require = createRequire(import.meta.url);
  const specifier = directKoffiSpecifier(process.platform, process.arch,
    readFileSync('/proc/self/maps', 'latin1'));
  assert.ok(specifier !== undefined, 'this suite runs on glibc Linux (x64 or arm64)');
  assert.equal(via, 'direct', `${specifier} is installed, so it is loaded without koffi's loader`);
  assert.equal(libcLibrary().via, 'direct', 'the libc bindings use the same loader');
  const getpid = koffi.load('libc.so.6').func('int getpid()');
  assert.equal(getpid(), process.pid);
  // The package's own loader finds the very same native module (Node caches it by path).
  const viaPackage = (require('koffi') as { default: unknown }).default;
  assert.equal(viaPackage, koffi);
});
