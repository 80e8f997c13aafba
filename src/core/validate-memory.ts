// Owns validation of caller memory for a dm-io request: a known type, a well-formed shape,
// chunk lengths that are whole sectors (the kernel's sector-truncation trap), and enough bytes
// for the longest region. Walks are bounded by the bytes needed, so a circular page list (the
// kcopyd zero page) is accepted and never walked forever.

import { MEMORY_TYPES, type Bvec, type DmIoMemory, type PageListNode } from '../memory/types.js';
import { PAGE_SIZE, SECTOR_SIZE } from '../constants.js';
import { InvalidArgTypeError, InvalidRequestError } from '../errors.js';
import { validateBytes, validateIntegerInRange, validateOptionsObject } from '../validate.js';

/** Validates `memory` for a transfer of up to `bytesNeeded` bytes and returns it typed. */
export function validateMemory(memory: unknown, name: string, bytesNeeded: number): DmIoMemory {
  validateOptionsObject(memory, name);
  const typed = memory as DmIoMemory;
  // One switch over MEMORY_TYPES: its default is the unknown type.
  switch (typed.type) {
    case 'page-list':
      validatePageList(typed.list, typed.offset, name, bytesNeeded);
      return typed;
    case 'bvec':
      validateBvecs(typed.bvecs, name, bytesNeeded);
      return typed;
    case 'vm':
      validateLinear(typed.data, 0, name, bytesNeeded);
      return typed;
    case 'kmem':
      validateLinear(typed.data, typed.offset ?? 0, name, bytesNeeded);
      return typed;
    default: {
      const type: unknown = (memory as { type?: unknown }).type;
      throw new InvalidRequestError('DMIO_ERR_UNKNOWN_MEMORY_TYPE', `${name}.type`,
        `unknown memory type ${JSON.stringify(type)}; expected one of ${MEMORY_TYPES.join(', ')}`);
    }
  }
}

function validatePageList(
  list: unknown, offset: unknown, name: string, bytesNeeded: number,
): void {
  const offsetBytes = validateIntegerInRange(offset, `${name}.offset`, 0, PAGE_SIZE - 1);
  requireSectorMultiple(offsetBytes, `${name}.offset`);
  const pagesNeeded = Math.ceil((offsetBytes + bytesNeeded) / PAGE_SIZE);
  let node: unknown = list;
  for (let index = 0; index < pagesNeeded; index += 1) {
    if (node === null || node === undefined) {
      throw new InvalidRequestError('DMIO_ERR_BUFFER_TOO_SHORT', `${name}.list`,
        `the page list holds ${index} pages from offset ${offsetBytes}; ` +
        `${bytesNeeded} bytes need ${pagesNeeded}`);
    }
    const typedNode = validatePageNode(node, `${name}.list[${index}]`);
    node = typedNode.next;
    // Back at the head: a circular list supplies pages without end, all of them checked.
    if (node === list) return;
  }
}

function validatePageNode(node: unknown, name: string): PageListNode {
  validateOptionsObject(node, name);
  const page = validateBytes((node as { page?: unknown }).page, `${name}.page`);
  if (page.length !== PAGE_SIZE) {
    throw new InvalidRequestError('DMIO_ERR_INVALID_ARG_VALUE', `${name}.page`,
      `a page-list page holds exactly ${PAGE_SIZE} bytes, got ${page.length}`);
  }
  const next = (node as { next?: unknown }).next;
  if (next !== null && (typeof next !== 'object' || next === undefined)) {
    throw new InvalidArgTypeError(`${name}.next`, 'a page-list node or null', next);
  }
  return node as PageListNode;
}

function validateBvecs(bvecs: unknown, name: string, bytesNeeded: number): void {
  if (!Array.isArray(bvecs)) throw new InvalidArgTypeError(`${name}.bvecs`, 'an array', bvecs);
  let totalBytes = 0;
  for (let index = 0; index < bvecs.length; index += 1) {
    totalBytes += validateBvec(bvecs[index], `${name}.bvecs[${index}]`);
  }
  if (totalBytes < bytesNeeded) {
    throw new InvalidRequestError('DMIO_ERR_BUFFER_TOO_SHORT', `${name}.bvecs`,
      `the vectors hold ${totalBytes} bytes, the request needs ${bytesNeeded}`);
  }
}

function validateBvec(bvec: unknown, name: string): number {
  validateOptionsObject(bvec, name);
  const { page, len, offset } = bvec as Partial<Bvec>;
  const bytes = validateBytes(page, `${name}.page`);
  const lengthBytes = validateIntegerInRange(len, `${name}.len`, 1, bytes.length);
  const offsetBytes = validateIntegerInRange(offset, `${name}.offset`, 0, bytes.length);
  requireSectorMultiple(lengthBytes, `${name}.len`);
  if (offsetBytes + lengthBytes > bytes.length) {
    throw new InvalidRequestError('DMIO_ERR_BUFFER_TOO_SHORT', name,
      `offset ${offsetBytes} + len ${lengthBytes} runs past the page's ${bytes.length} bytes`);
  }
  return lengthBytes;
}

function validateLinear(data: unknown, offset: unknown, name: string, bytesNeeded: number): void {
  // Argument names are built only for an error: the common request allocates none.
  const bytes = data instanceof Uint8Array ? data : validateBytes(data, `${name}.data`);
  const offsetBytes = offset === 0 ? 0 :
    validateIntegerInRange(offset, `${name}.offset`, 0, bytes.length);
  if (bytes.length - offsetBytes < bytesNeeded) {
    throw new InvalidRequestError('DMIO_ERR_BUFFER_TOO_SHORT', `${name}.data`,
      `${bytes.length - offsetBytes} bytes from offset ${offsetBytes}, ` +
      `the request needs ${bytesNeeded}`);
  }
}

function requireSectorMultiple(valueBytes: number, name: string): void {
  if (valueBytes % SECTOR_SIZE !== 0) {
    throw new InvalidRequestError('DMIO_ERR_MISALIGNED', name,
      `${valueBytes} is not a multiple of ${SECTOR_SIZE} bytes`);
  }
}
