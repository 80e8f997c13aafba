// The package's public surface, imported by its own name after `npm run build` (Node resolves
// `dmio` and `dmio/...` to this package through package.json `exports`): what each entry
// exports, that an entry re-exports the same classes (so `instanceof` holds across entries),
// that internals cannot be imported, and that every entry declares its types.

import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PACKAGE = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  name: string;
  exports: Record<string, string | { types: string; import: string }>;
};

/** Imports `specifier` at run time (a variable, so the typecheck does not need dist/ built). */
async function load(specifier: string): Promise<Record<string, unknown>> {
  return await import(specifier) as Record<string, unknown>;
}

/** The sorted names an entry exports at run time. */
async function namesOf(specifier: string): Promise<string[]> {
  return Object.keys(await load(specifier)).sort();
}

const LEGACY = ['dmIoAsync', 'dmIoAsyncBvec', 'dmIoAsyncVm', 'dmIoGet', 'dmIoPut', 'dmIoSync',
  'dmIoSyncBvec', 'dmIoSyncVm'];
const TESTING = ['FaultDevice', 'createFaultDevice'];
const SERVER = ['NbdServer', 'SERVER_THREADS_MAX', 'createNbdServer', 'threadableDevice'];
const DEVICE_KIT = ['EXTENTS_PER_QUERY_MAX', 'IoError', 'NotSupportedError', 'PAGE_SIZE',
  'SECTOR_SHIFT', 'SECTOR_SIZE',
  'allocAligned', 'bytesToSectorsCeil', 'bytesToSectorsFloor', 'isAlignedView', 'isZeroRange',
  'pastEndError',
  'requestError', 'requestPastEnd', 'sectorsToBytes', 'segmentsBytes'];

describe('package exports', () => {
  it('declare exactly dmio and dmio/devices, legacy, server, testing, each with types', () => {
    assert.deepEqual(Object.keys(PACKAGE.exports).sort(),
      ['.', './devices', './legacy', './package.json', './server', './testing']);
    for (const [subpath, target] of Object.entries(PACKAGE.exports)) {
      if (subpath === './package.json') continue;
      assert.ok(typeof target === 'object', subpath);
      for (const file of [target.types, target.import]) {
        assert.ok(existsSync(join(ROOT, file)), `${subpath}: ${file} (run npm run build)`);
      }
      assert.match(readFileSync(join(ROOT, target.types), 'utf8'), /@packageDocumentation/,
        `${subpath} has its TSDoc`);
    }
  });

  it('dmio/legacy holds the six legacy calls and dmIoGet/dmIoPut', async () => {
    assert.deepEqual(await namesOf(`${PACKAGE.name}/legacy`), LEGACY);
  });

  it('dmio/testing holds the fault device', async () => {
    assert.deepEqual(await namesOf(`${PACKAGE.name}/testing`), TESTING);
    const types = readFileSync(join(ROOT, 'dist', 'testing.d.ts'), 'utf8');
    for (const name of ['FaultDeviceOptions', 'FaultSpec', 'FaultRange', 'FaultOp', 'TraceEntry']) {
      assert.match(types, new RegExp(`\\b${name}\\b`), name);
    }
  });

  it('dmio/server holds the NBD server', async () => {
    assert.deepEqual(await namesOf(`${PACKAGE.name}/server`), SERVER);
    const types = readFileSync(join(ROOT, 'dist', 'server.d.ts'), 'utf8');
    for (const name of ['NbdServerOptions', 'NbdListenAddress', 'NbdExportOptions',
      'NbdServerTlsOptions', 'NbdServerCertificates']) {
      assert.match(types, new RegExp(`\\b${name}\\b`), name);
    }
  });

  it('dmio/devices holds the kit for writing a BlockDevice', async () => {
    assert.deepEqual(await namesOf(`${PACKAGE.name}/devices`), DEVICE_KIT);
    const types = readFileSync(join(ROOT, 'dist', 'devices.d.ts'), 'utf8');
    for (const name of ['BlockDevice', 'DeviceLimits', 'DeviceRequest', 'DeviceDone',
      'RequestFlags', 'DeviceExtent', 'ExtentsDone']) {
      assert.match(types, new RegExp(`\\b${name}\\b`), name);
    }
  });

  it('dmio holds dm-io, kcopyd, devices and errors, not what the other entries hold', async () => {
    const names = await namesOf(PACKAGE.name);
    for (const name of ['dmIo', 'dmIoBlocking', 'dmIoClientCreate', 'dmIoClientDestroy',
      'DmIoClient', 'failedRegions', 'openDevice', 'openFileDevice', 'createRamDevice',
      'openNbdDevice', 'openTable', 'dmKcopydClientCreate', 'dmKcopydCopy', 'dmKcopydZero',
      'KcopydClient', 'DmIoError', 'IoError', 'ERROR_CODES', 'isDmIoError',
      'SECTOR_SIZE', 'parseSize', 'deviceExtents', 'isSparseBlockBytes']) {
      assert.ok(names.includes(name), `dmio exports ${name}`);
    }
    for (const name of [...LEGACY, ...TESTING, ...SERVER, 'requestError', 'pastEndError',
      'requestPastEnd', 'segmentsBytes']) {
      assert.ok(!names.includes(name), `${name} is not in dmio but in its own entry`);
    }
    // Internals of the layers and the CLI's process entry are not public.
    for (const name of ['createCursor', 'PagePool', 'validateRegion', 'submitPlan', 'runCli',
      'main', 'keepClosedStdoutClosed', 'InflightLimiter']) {
      assert.ok(!names.includes(name), `${name} is internal`);
    }
  });

  it('entries share their classes: an IoError of one is an IoError of the other', async () => {
    const main = await load(PACKAGE.name);
    const devices = await load(`${PACKAGE.name}/devices`);
    assert.equal(devices.IoError, main.IoError);
    assert.equal(devices.SECTOR_SIZE, main.SECTOR_SIZE);
  });

  it('refuses deep imports of internals and of the CLI', async () => {
    for (const subpath of ['dist/core/dispatch.js', 'dist/index.js', 'cli', 'src/index.ts']) {
      const specifier = `${PACKAGE.name}/${subpath}`;
      await assert.rejects(load(specifier), { code: 'ERR_PACKAGE_PATH_NOT_EXPORTED' }, specifier);
    }
  });
});
