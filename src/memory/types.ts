// Owns the shapes of caller memory a dm-io request can name: a page list, an array of bio
// vectors, or one contiguous buffer (`vm`, `kmem`). The region loop never sees these shapes;
// it walks them through a cursor (cursor.ts).

/** One node of a page list. `page` holds exactly `PAGE_SIZE` bytes; lists may be circular. */
export interface PageListNode {
  /** The page's bytes: exactly `PAGE_SIZE` long. */
  page: Uint8Array;
  /** The next node, or `null` at the end of the list. */
  next: PageListNode | null;
}

/** One bio vector: `len` bytes of `page` starting at byte `offset`. */
export interface Bvec {
  /** The memory the vector points into. */
  page: Uint8Array;
  /** Bytes this vector contributes; a multiple of 512. */
  len: number;
  /** Byte offset of the vector's first byte inside `page`. */
  offset: number;
}

/** A page list walked from byte `offset` of its first page, whole pages after that. */
export interface PageListMemory {
  type: 'page-list';
  /** The first node. */
  list: PageListNode;
  /** Byte offset into the first page; a multiple of 512 below `PAGE_SIZE`. */
  offset: number;
}

/** An array of bio vectors, each contributing its own bytes in order. */
export interface BvecMemory {
  type: 'bvec';
  /** The vectors, walked in order. */
  bvecs: readonly Bvec[];
}

/** One contiguous buffer, walked in `PAGE_SIZE` chunks from its start (the kernel's vmalloc). */
export interface VmMemory {
  type: 'vm';
  /** The buffer. */
  data: Uint8Array;
}

/** One contiguous buffer walked from byte `offset` (the kernel's kmalloc memory). */
export interface KmemMemory {
  type: 'kmem';
  /** The buffer. */
  data: Uint8Array;
  /** Byte offset inside `data` where the transfer starts (default 0). */
  offset?: number;
}

/** Any memory a dm-io request may carry. */
export type DmIoMemory = PageListMemory | BvecMemory | VmMemory | KmemMemory;

/** The memory type names, one source of truth for the type and its validator. */
export const MEMORY_TYPES = ['page-list', 'bvec', 'vm', 'kmem'] as const;
