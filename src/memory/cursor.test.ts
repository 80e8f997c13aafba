// Unit tests of the memory cursor: chunk boundaries per memory type, clone independence, and
// circular page lists.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PAGE_SIZE } from '../constants.js';
import { createCursor, type MemoryCursor } from './cursor.js';
import type { PageListNode } from './types.js';

function lengths(cursor: MemoryCursor, totalBytes: number, stepBytes = totalBytes): number[] {
  const out: number[] = [];
  for (let done = 0; done < totalBytes;) {
    const view = cursor.take(Math.min(stepBytes, totalBytes - done));
    out.push(view.length);
    done += view.length;
  }
  return out;
}

function list(pageCount: number, circular = false): PageListNode {
  const nodes: PageListNode[] = Array.from({ length: pageCount }, (_, index) => ({
    page: new Uint8Array(PAGE_SIZE).fill(index + 1), next: null,
  }));
  nodes.forEach((node, index) => { node.next = nodes[index + 1] ?? null; });
  if (circular) (nodes[pageCount - 1] as PageListNode).next = nodes[0] ?? null;
  return nodes[0] as PageListNode;
}

test('page list: first chunk from the offset to the page end, then whole pages', () => {
  const cursor = createCursor({ type: 'page-list', list: list(3), offset: 512 });
  assert.deepEqual(lengths(cursor, 3584 + 4096 + 1024), [3584, 4096, 1024]);
});

test('page list: a take never crosses a page and respects the maximum', () => {
  const cursor = createCursor({ type: 'page-list', list: list(2), offset: 1024 });
  assert.deepEqual(lengths(cursor, 7168, 2048), [2048, 1024, 2048, 2048]);
});

test('page list: a circular list yields its pages forever', () => {
  const cursor = createCursor({ type: 'page-list', list: list(2, true), offset: 0 });
  const firstBytes = [];
  for (let index = 0; index < 5; index += 1) firstBytes.push(cursor.take(PAGE_SIZE)[0]);
  assert.deepEqual(firstBytes, [1, 2, 1, 2, 1]);
});

test('bvec: each vector is its own chunk; the last may be partly taken', () => {
  const page = new Uint8Array(8192);
  const cursor = createCursor({ type: 'bvec', bvecs: [
    { page, len: 1024, offset: 100 }, { page, len: 3072, offset: 0 },
    { page, len: 4096, offset: 4096 }] });
  const first = cursor.take(8192);
  assert.equal(first.byteOffset, 100);
  assert.equal(first.length, 1024);
  assert.deepEqual(lengths(cursor, 5120), [3072, 2048]);
});

test('vm: contiguous memory comes as views as long as asked, up to the buffer end', () => {
  const data = new Uint8Array(10000);
  const cursor = createCursor({ type: 'vm', data });
  const first = cursor.take(9728);
  assert.equal(first.byteOffset, 0);
  assert.equal(first.length, 9728);
  assert.equal(first.buffer, data.buffer, 'a view, not a copy');
  assert.equal(cursor.take(4096).length, 272, 'the rest of the buffer');
});

test('kmem: the walk starts at the offset', () => {
  const data = new Uint8Array(10000);
  const cursor = createCursor({ type: 'kmem', data, offset: 100 });
  const first = cursor.take(8192);
  assert.equal(first.byteOffset, 100);
  assert.equal(first.length, 8192);
  assert.equal(cursor.take(8192).length, 10000 - 100 - 8192);
});

test('clone is independent: both walk the same bytes from the same place', () => {
  const cursor = createCursor({ type: 'page-list', list: list(3), offset: 512 });
  cursor.take(1024);
  const copy = cursor.clone();
  const a = cursor.take(PAGE_SIZE);
  const b = copy.take(PAGE_SIZE);
  assert.equal(a.byteOffset, b.byteOffset);
  assert.equal(a.buffer, b.buffer);
  cursor.take(PAGE_SIZE);
  assert.equal(copy.take(PAGE_SIZE)[0], 2, 'the clone did not move with the original');
});
