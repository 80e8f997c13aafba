// The real `dmio` binary refusing a copy whose source and a destination share storage through
// a `table:` device spec (nested tables included), and two destinations that do: dmio does not
// map ranges through a table, so any shared file is refused with exit 2 before anything is
// written, whatever the ranges. A table sharing nothing with its destination still copies.

import assert from 'node:assert/strict';
import { linkSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileHash, runDmio, type CliRun } from './cli-helpers.js';
import { tempDir } from './helpers/tmp.js';

const MIB = 1024 * 1024;
const SHARED = /uses? the same storage.*cannot tell whether the ranges overlap through the table/s;

function assertRefused(run: CliRun, message: RegExp = SHARED): void {
  assert.equal(run.status, 2, `exit status; stderr: ${run.stderr}`);
  assert.match(run.stderr, message);
  assert.doesNotMatch(run.stdout, /copied/);
}

function randomFile(path: string, sizeBytes: number, seed: number): void {
  const bytes = Buffer.alloc(sizeBytes);
  let state = seed >>> 0 || 1;
  for (let index = 0; index < sizeBytes; index += 1) {
    state = (state * 1103515245 + 12345) >>> 0;
    bytes[index] = state >>> 24;
  }
  writeFileSync(path, bytes);
}

/** Size and sha256 of each path, to check that a refusal changed nothing. */
function hashes(paths: readonly string[]): string[] {
  return paths.map((path) => `${statSync(path).size}:${fileHash(path)}`);
}

describe('copy through a table: onto storage the table uses', () => {
  it('refuses a table source onto its own file, and the reverse, leaving bytes unchanged',
    async (t) => {
      const dir = await tempDir(t);
      const image = join(dir, 'tb.img');
      randomFile(image, 64 * MIB, 7);
      const table = join(dir, 't.table');
      writeFileSync(table, `0 131072 linear ${image} 0\n`);
      const before = hashes([image, table]);
      const range = ['--source-sector', '0', '--dest-sector', '2048', '--count', '65536',
        '--verify'];
      assertRefused(await runDmio(['copy', `table:${table}`, image, ...range]));
      assertRefused(await runDmio(['copy', image, `table:${table}`, ...range]));
      // Ranges that would not overlap on the file are refused too: they are not mapped.
      assertRefused(await runDmio(['copy', `table:${table}`, `file:${image}`, '--source-sector',
        '0', '--dest-sector', '65536', '--count', '1024']));
      assert.deepEqual(hashes([image, table]), before, 'not one byte changed');
    });

  it('sees through nested tables, hard links and a table on each side', async (t) => {
    const dir = await tempDir(t);
    const image = join(dir, 'tb.img');
    const other = join(dir, 'other.img');
    randomFile(image, 8 * MIB, 9);
    randomFile(other, 8 * MIB, 10);
    linkSync(image, join(dir, 'hard.img'));
    const inner = join(dir, 'inner.table');
    const outer = join(dir, 'outer.table');
    const second = join(dir, 'second.table');
    writeFileSync(inner, `0 8192 linear ${join(dir, 'hard.img')} 0\n`);
    writeFileSync(outer, `0 8192 linear ${other} 0\n8192 8192 linear table:${inner} 0\n`);
    writeFileSync(second, `0 4096 linear ${image} 8192\n`);
    const files = [image, other, inner, outer, second];
    const before = hashes(files);
    assertRefused(await runDmio(['copy', `table:${outer}`, image, '--dest-sector', '0',
      '--count', '2048']));
    assertRefused(await runDmio(['copy', `table:${outer}`, `table:${second}`, '--count',
      '2048']));
    assertRefused(await runDmio(['copy', other, `table:${outer}`, '--count', '2048']));
    assert.deepEqual(hashes(files), before, 'not one byte changed');
  });

  it('refuses two destinations sharing storage through a table', async (t) => {
    const dir = await tempDir(t);
    const source = join(dir, 'src.img');
    const image = join(dir, 'tb.img');
    randomFile(source, 4 * MIB, 11);
    randomFile(image, 64 * MIB, 12);
    const table = join(dir, 't.table');
    writeFileSync(table, `0 131072 linear ${image} 0\n`);
    const before = hashes([source, image, table]);
    assertRefused(await runDmio(['copy', source, `table:${table}`, image, '--dest-sector',
      '0']), /use the same storage.*cannot tell whether the ranges overlap through the table/s);
    assertRefused(await runDmio(['zero', image, `table:${table}`, '--count', '8']),
      /use the same storage/);
    assert.deepEqual(hashes([source, image, table]), before, 'not one byte changed');
  });

  it('copies from a table that shares no storage with the destination', async (t) => {
    const dir = await tempDir(t);
    const image = join(dir, 'tb.img');
    const out = join(dir, 'out.img');
    randomFile(image, 8 * MIB, 13);
    const table = join(dir, 't.table');
    writeFileSync(table, `0 16384 linear ${image} 0\n`);
    const run = await runDmio(['copy', `table:${table}`, out, '--verify']);
    assert.equal(run.status, 0, run.stderr);
    assert.deepEqual(readFileSync(out), readFileSync(image));
  });
});

describe('dmio read through a table', () => {
  it('--output naming storage under the table being read is refused, untouched', async (t) => {
    const dir = await tempDir(t);
    const backing = join(dir, 'under.img');
    randomFile(backing, 4 * MIB, 11);
    const table = join(dir, 'r.table');
    writeFileSync(table, `0 8192 linear ${backing} 0\n`);
    const before = fileHash(backing);
    const run = await runDmio(['read', `table:${table}`, '--sector', '0', '--length', '1M',
      '--output', backing]);
    assertRefused(run);
    assert.equal(fileHash(backing), before);
  });
});
