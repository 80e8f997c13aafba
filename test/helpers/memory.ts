// Builders for the four memory types and an independent view of them: `logicalChunks` lists
// the byte ranges a memory presents, in transfer order, computed from the memory's documented
// shape (not through the library's cursor). Tests use it to fill memory with chosen logical
// bytes, to read back what a transfer left there, and to predict how requests are cut.

import { PAGE_SIZE, type Bvec, type DmIoMemory, type PageListNode } from '../../src/index.js';

/** A page list of `pageCount` fresh pages (optionally circular), each filled with `fill`. */
export function pageList(pageCount: number, options: { circular?: boolean; fill?: number } = {}):
PageListNode {
  const nodes: PageListNode[] = [];
  for (let index = 0; index < pageCount; index += 1) {
    nodes.push({ page: new Uint8Array(PAGE_SIZE).fill(options.fill ?? 0), next: null });
  }
  for (let index = 0; index + 1 < nodes.length; index += 1) {
    (nodes[index] as PageListNode).next = nodes[index + 1] ?? null;
  }
  const first = nodes[0];
  const last = nodes[nodes.length - 1];
  if (first === undefined || last === undefined) throw new Error('a page list needs a page');
  if (options.circular === true) last.next = first;
  return first;
}

/** Bio vectors of the given lengths, each in its own page with `offset` bytes before it. */
export function bvecs(lengths: readonly number[], offsets: readonly number[] = [],
  fill = 0): Bvec[] {
  return lengths.map((len, index) => {
    const offset = offsets[index] ?? 0;
    const page = new Uint8Array(Math.max(PAGE_SIZE, offset + len)).fill(fill);
    return { page, len, offset };
  });
}

/**
 * The views a memory presents, in transfer order, up to `bytesMax` bytes: a page list's first
 * page from its offset, then whole pages (following cycles); each bvec's own bytes; a vm buffer
 * cut at 4 KiB boundaries from its start; a kmem buffer cut every 4 KiB from its offset.
 */
export function logicalChunks(memory: DmIoMemory, bytesMax: number): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  let totalBytes = 0;
  const add = (view: Uint8Array): boolean => {
    const take = Math.min(view.length, bytesMax - totalBytes);
    if (take <= 0) return false;
    chunks.push(view.subarray(0, take));
    totalBytes += take;
    return totalBytes < bytesMax;
  };
  switch (memory.type) {
    case 'page-list': {
      let node: PageListNode | null = memory.list;
      let offset = memory.offset;
      while (node !== null && add(node.page.subarray(offset))) {
        node = node.next;
        offset = 0;
      }
      break;
    }
    case 'bvec':
      for (const bvec of memory.bvecs) {
        if (!add(bvec.page.subarray(bvec.offset, bvec.offset + bvec.len))) break;
      }
      break;
    case 'vm':
    case 'kmem': {
      const start = memory.type === 'kmem' ? memory.offset ?? 0 : 0;
      for (let at = start; at < memory.data.length; at += PAGE_SIZE) {
        if (!add(memory.data.subarray(at, Math.min(at + PAGE_SIZE, memory.data.length)))) break;
      }
      break;
    }
  }
  return chunks;
}

/** Writes `bytes` into the memory's logical order (the first `bytes.length` logical bytes). */
export function fillLogical(memory: DmIoMemory, bytes: Uint8Array): void {
  let at = 0;
  for (const chunk of logicalChunks(memory, bytes.length)) {
    chunk.set(bytes.subarray(at, at + chunk.length));
    at += chunk.length;
  }
  if (at !== bytes.length) throw new Error(`memory holds only ${at} of ${bytes.length} bytes`);
}

/** The first `lengthBytes` logical bytes of a memory. */
export function readLogical(memory: DmIoMemory, lengthBytes: number): Uint8Array {
  const out = new Uint8Array(lengthBytes);
  let at = 0;
  for (const chunk of logicalChunks(memory, lengthBytes)) {
    out.set(chunk, at);
    at += chunk.length;
  }
  if (at !== lengthBytes) throw new Error(`memory holds only ${at} of ${lengthBytes} bytes`);
  return out;
}

/** Every distinct backing array of a memory, for before/after snapshots. */
export function backingArrays(memory: DmIoMemory): Uint8Array[] {
  const arrays = new Set<Uint8Array>();
  switch (memory.type) {
    case 'page-list': {
      let node: PageListNode | null = memory.list;
      while (node !== null && !arrays.has(node.page)) {
        arrays.add(node.page);
        node = node.next;
      }
      break;
    }
    case 'bvec':
      for (const bvec of memory.bvecs) arrays.add(bvec.page);
      break;
    case 'vm':
    case 'kmem':
      arrays.add(memory.data);
      break;
  }
  return [...arrays];
}
