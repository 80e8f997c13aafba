// The architecture test: imports flow one way through the layers of src/, and no module keeps
// mutable state at top level except the documented default instances listed below. It reads
// the import statements of every src/**/*.ts (tests excluded) with the TypeScript parser; the
// helpers are checked first on small sources, so a rule that silently matches nothing fails.

import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import {
  cyclesOf, exportedNames, importedNames, importGraph, importsOf, layerOf, moduleStateOf,
  sourceFiles, type ImportEdge,
} from './helpers/source-graph.js';

const ROOT = 'src';

/**
 * The floors of src/, lowest first. A module may import its own layer and layers of a lower
 * rank, never a higher one or another layer of the same rank. Files directly in src/ are
 * generic helpers at rank 0 (errors, constants, units, size, validation, the limiter, assert),
 * except the public entry files of package.json's `exports`, which sit on top.
 */
const LAYER_RANKS: ReadonlyMap<string, number> = new Map([
  ['sys', 1],        // libc and io_uring through koffi
  ['memory', 1],     // cursors over the four memory kinds, aligned memory, the page pool
  ['devices', 2],    // the BlockDevice contract and the devices that need no network
  ['nbd', 3],        // the NBD client: a BlockDevice over a socket
  ['core', 3],       // dm-io: request, dispatch, client
  ['kcopyd', 4],     // the copy engine, on dm-io
  ['stacks', 5],     // device-mapper targets, on dm-io and kcopyd
  ['server', 6],     // the NBD server, on dm-io; its threads open tables again (stacks)
  ['open', 6],       // device specs: openDevice and openTable pick a device layer
  ['cli', 8],        // the dmio command, on the public API only
]);
const ENTRY_RANK = 7;

/**
 * Layers built on the library as a user would be: what they take from the engine layers below
 * must be public API (exported by an entry file). The exceptions are named with their reason.
 */
const PUBLIC_API_USERS = ['stacks', 'server'];
const ENGINE_LAYERS = ['core', 'kcopyd', 'memory', 'devices', 'nbd', 'sys'];
const PAST_THE_API_ALLOWED: ReadonlyMap<string, string> = new Map([
  ['src/nbd/protocol.ts', 'the NBD wire constants, shared by the client and the server'],
  ['src/sys/socket-options.ts', 'the server sizes its Unix sockets\' send buffer (SO_SNDBUF)'],
  ['src/sys/socket-handoff.ts', 'the server hands accepted sockets to its connection threads'],
  ['src/sys/socket-poll.ts', 'the server\'s polling threads poll, receive and send on their sockets'],
]);

/** Layers that know nothing of the engines, protocols and tools built on them. */
const FOUNDATION_LAYERS = ['devices', 'memory', 'sys'];
const UPPER_LAYERS = ['core', 'kcopyd', 'nbd', 'server', 'stacks', 'open', 'cli'];

/**
 * Module-level mutable state that is allowed: each entry is an explicit default instance,
 * shared by the callers that do not pass their own, documented where it is declared. Add an
 * entry only with its reason; everything else hangs off a client, a device or a server.
 */
const DEFAULT_INSTANCES: ReadonlyArray<{ file: string; name: string; why: string }> = [
  { file: 'src/core/legacy.ts', name: 'defaultLegacyPool',
    why: 'dm_io_get/dm_io_put and the six legacy calls share one pool: the interface is global' },
  { file: 'src/devices/file-engine.ts', name: 'defaultEngine',
    why: 'defaultFileEngine(): the engine file devices share unless given their own' },
  { file: 'src/devices/copy-slots.ts', name: 'defaultSlots',
    why: 'defaultCopySlots(): the copy offload bound devices share unless given their own' },
  { file: 'src/devices/file-special-ops.ts', name: 'zeroBuffer',
    why: 'the read-only zero buffer every device writes zeros from, made on first use' },
  { file: 'src/sys/libc.ts', name: 'loaded', why: 'the C library and its bindings, loaded once' },
  { file: 'src/sys/socket-poll.ts', name: 'instance',
    why: 'the socket calls a polling thread binds once (each thread loads its own), with the ' +
      'scratch every sendNow rewrites and the addresses of buffers, facts about each buffer' },
  { file: 'src/memory/aligned.ts', name: 'alignedBuffers',
    why: 'a WeakSet brand of the ArrayBuffers allocAligned made (only it adds, nothing removes): ' +
      'a fact about each buffer that no client can change, not state shared between clients' },
];

/** The public entry files: package.json `exports` targets, mapped from dist/ back to src/. */
function entryFiles(): Set<string> {
  const manifest = JSON.parse(readFileSync('package.json', 'utf8')) as { exports?: unknown };
  const targets: string[] = [];
  const collect = (value: unknown): void => {
    if (typeof value === 'string') targets.push(value);
    else if (value !== null && typeof value === 'object') Object.values(value).forEach(collect);
  };
  collect(manifest.exports);
  const entries = new Set<string>();
  for (const target of targets) {
    const match = /^\.\/dist\/(src\/)?(.+)\.js$/.exec(target);
    if (match !== null) entries.add(path.join(ROOT, `${match[2]}.ts`));
  }
  return entries;
}

function rankOf(file: string, entries: ReadonlySet<string>): number {
  if (entries.has(file)) return ENTRY_RANK;
  const layer = layerOf(ROOT, file);
  if (layer.endsWith('.ts')) return 0;
  const rank = LAYER_RANKS.get(layer);
  assert.ok(rank !== undefined, `${file}: layer ${layer}/ has no rank in LAYER_RANKS; give it one`);
  return rank;
}

function describeEdges(edges: readonly ImportEdge[]): string {
  return edges.map((edge) => `  ${edge.from} -> ${edge.to}`).join('\n');
}

describe('the checker itself', () => {
  test('reads static, re-export, type-only and dynamic imports, resolving .js to .ts', () => {
    const text = [
      "import { a } from './a.js';",
      "import type { B } from '../devices/b.js';",
      "export { c } from './c/index.js';",
      "import koffi from 'koffi';",
      "// import { no } from './comment.js';",
      "const d = await import('../core/d.js');",
      "const s = \"import { no } from './string.js'\";",
    ].join('\n');
    const edges = importsOf('src/nbd/x.ts', text);
    assert.deepEqual(edges.map((edge) => [edge.to, edge.typeOnly]), [
      ['src/nbd/a.ts', false], ['src/devices/b.ts', true], ['src/nbd/c/index.ts', false],
      ['src/core/d.ts', false],
    ]);
  });

  test('finds every kind of module-level mutable state, and not constants', () => {
    const text = [
      'let counter = 0;',
      'const cache = new Map<string, number>();',
      'const names = new Set([1]);',
      'const scratch = new BigUint64Array(2);',
      'const state: { ring?: number } = {};',
      'const limiter = new InflightLimiter({ max: 4 });',
      'const TABLE: ReadonlyMap<string, number> = new Map([["a", 1]]);',
      'const EMPTY = new Uint8Array(0);',
      'const LIST = [1, 2];',
      'export function f(): void {',
      '  cache.set("a", 1);',
      '  scratch[0] = 1n;',
      '  state.ring = 3;',
      '  const local = new Map(); local.set(1, 1);',
      '  TABLE.get("a"); LIST.map((x) => x);',
      '}',
    ].join('\n');
    const names = moduleStateOf('src/x.ts', text).map((state) => state.name).sort();
    assert.deepEqual(names, ['cache', 'counter', 'limiter', 'scratch', 'state']);
  });

  test('reads the names imported from a module and the names an entry file exports', () => {
    const imports = importedNames('src/stacks/x.ts', [
      "import { dmIo, type DmIoRequest as Request } from '../core/dm-io.js';",
      "import assert from '../assert.js';",
      "import * as kcopyd from '../kcopyd/kcopyd.js';",
    ].join('\n'));
    assert.deepEqual(imports, [
      { to: 'src/core/dm-io.ts', names: ['dmIo', 'DmIoRequest'] },
      { to: 'src/assert.ts', names: ['default'] },
      { to: 'src/kcopyd/kcopyd.ts', names: ['*'] },
    ]);
    const exported = exportedNames('src/index.ts', [
      "export { dmIo, type DmIoRequest } from './core/dm-io.js';",
      "export type { BlockDevice } from './devices/block-device.js';",
      'export const VERSION = 1;',
      'export function helper(): void {}',
      'function hidden(): void {}',
    ].join('\n'));
    assert.deepEqual([...exported].sort(), ['BlockDevice', 'DmIoRequest', 'VERSION', 'dmIo', 'helper']);
  });

  test('finds cycles, and only cycles', () => {
    assert.deepEqual(cyclesOf([['a', 'b'], ['b', 'c'], ['c', 'a'], ['c', 'd'], ['d', 'd']]),
      [['a', 'b', 'c']]);
    assert.deepEqual(cyclesOf([['a', 'b'], ['a', 'c'], ['b', 'c']]), []);
  });

  test('knows the tree: every layer has a rank, every relative import resolves', () => {
    const files = sourceFiles(ROOT);
    assert.ok(files.length > 100, `only ${files.length} source files found under ${ROOT}/`);
    const entries = entryFiles();
    assert.ok(entries.has(path.join(ROOT, 'index.ts')), 'package.json exports src/index.ts');
    for (const entry of entries) assert.ok(existsSync(entry), `${entry} (package.json exports)`);
    for (const file of files) rankOf(file, entries);
    const missing = importGraph(ROOT).filter((edge) => !existsSync(edge.to));
    assert.deepEqual(missing, [], `imports of files that do not exist:\n${describeEdges(missing)}`);
  });
});

describe('imports flow one way', () => {
  const edges = importGraph(ROOT);
  const entries = entryFiles();
  const across = edges.filter((edge) => layerOf(ROOT, edge.from) !== layerOf(ROOT, edge.to));

  test('the layer graph has no cycles', () => {
    const cycles = cyclesOf(across.map((edge) => [layerOf(ROOT, edge.from), layerOf(ROOT, edge.to)]));
    const detail = cycles.map((cycle) => {
      const members = new Set(cycle);
      const upward = across.filter((edge) => members.has(layerOf(ROOT, edge.from)) &&
        members.has(layerOf(ROOT, edge.to)) && rankOf(edge.to, entries) >= rankOf(edge.from, entries));
      return `cycle through ${cycle.join(', ')}; its imports against the ranks:\n${describeEdges(upward)}`;
    });
    assert.deepEqual(detail, []);
  });

  test('every import points to a lower layer', () => {
    const upward = across.filter((edge) => {
      const fromRank = rankOf(edge.from, entries);
      const toRank = rankOf(edge.to, entries);
      return fromRank === 0 ? toRank !== 0 : toRank >= fromRank;
    });
    assert.deepEqual(describeEdges(upward), '', 'imports to a layer of the same or a higher rank');
  });

  test('devices, memory and sys import nothing from the layers built on them', () => {
    const wrong = across.filter((edge) => FOUNDATION_LAYERS.includes(layerOf(ROOT, edge.from)) &&
      (UPPER_LAYERS.includes(layerOf(ROOT, edge.to)) || entries.has(edge.to)));
    assert.deepEqual(describeEdges(wrong), '');
  });

  test('the generic helpers at the bottom import only each other', () => {
    const wrong = edges.filter((edge) => rankOf(edge.from, entries) === 0 &&
      rankOf(edge.to, entries) !== 0);
    assert.deepEqual(describeEdges(wrong), '');
  });

  test('nbd/ and the device layers do not import openDevice; only the entry files do', () => {
    const openers = edges.filter((edge) => layerOf(ROOT, edge.to) === 'open' ||
      edge.to === path.join(ROOT, 'devices', 'open-device.ts'));
    const wrong = openers.filter((edge) =>
      !entries.has(edge.from) && layerOf(ROOT, edge.from) !== 'open');
    assert.deepEqual(describeEdges(wrong), '');
  });

  test('stacks and server take from the engine layers only public API', () => {
    const publicNames = new Set([...entries].flatMap((entry) =>
      [...exportedNames(entry, readFileSync(entry, 'utf8'))]));
    assert.ok(publicNames.has('dmIo') && publicNames.has('BlockDevice'), 'entry exports read');
    const wrong: string[] = [];
    for (const file of sourceFiles(ROOT)) {
      if (!PUBLIC_API_USERS.includes(layerOf(ROOT, file))) continue;
      for (const { to, names } of importedNames(file, readFileSync(file, 'utf8'))) {
        if (!ENGINE_LAYERS.includes(layerOf(ROOT, to)) || PAST_THE_API_ALLOWED.has(to)) continue;
        const internal = names.filter((name) => !publicNames.has(name));
        if (internal.length > 0) wrong.push(`${file} -> ${to}: ${internal.join(', ')}`);
      }
    }
    assert.deepEqual(wrong, []);
  });

  test('the CLI imports only the public entry files and itself', () => {
    const wrong = edges.filter((edge) => layerOf(ROOT, edge.from) === 'cli' &&
      layerOf(ROOT, edge.to) !== 'cli' && !entries.has(edge.to));
    assert.deepEqual(describeEdges(wrong), '');
  });
});

describe('module-level state', () => {
  test('none outside the documented default instances', () => {
    const allowed = new Set(DEFAULT_INSTANCES.map((entry) => `${entry.file}:${entry.name}`));
    const found = sourceFiles(ROOT)
      .flatMap((file) => moduleStateOf(file, readFileSync(file, 'utf8')))
      .filter((state) => !allowed.has(`${state.file}:${state.name}`))
      .map((state) => `${state.file}:${state.line} ${state.name}: ${state.why}`);
    assert.deepEqual(found, []);
  });

  test('every allowed default instance still exists', () => {
    for (const entry of DEFAULT_INSTANCES) {
      assert.ok(entry.why.length > 0, `${entry.file}:${entry.name} needs its reason`);
      const states = moduleStateOf(entry.file, readFileSync(entry.file, 'utf8'));
      assert.ok(states.some((state) => state.name === entry.name),
        `${entry.file}:${entry.name} is allowed but no longer module state: drop the entry`);
    }
  });
});
