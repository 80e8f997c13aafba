// Owns parsing the payloads of INFO, GO and the META_CONTEXT options, strictly: every length
// inside a payload is checked against what is left of it, strings are bounded and may hold no
// NUL or invalid UTF-8, and the parts must use up the payload exactly. A payload that breaks
// any rule yields `null`, which the handshake answers with NBD_REP_ERR_INVALID.

import { SERVER_STRING_BYTES_MAX } from './limits.js';

/** An INFO or GO request: the export asked for and the info types requested. */
export interface InfoRequest {
  readonly exportName: string;
  readonly infoTypes: readonly number[];
}

/** A LIST_ or SET_META_CONTEXT request. */
export interface MetaRequest {
  readonly exportName: string;
  readonly queries: readonly string[];
}

/** Parses `u32 nlen, name, u16 n, n x u16`; `null` when malformed. */
export function parseInfoRequest(payload: Buffer): InfoRequest | null {
  if (payload.length < 6) return null;
  const nameBytes = payload.readUInt32BE(0);
  if (nameBytes > payload.length - 6) return null;
  const exportName = decodeString(payload.subarray(4, 4 + nameBytes));
  if (exportName === null) return null;
  const count = payload.readUInt16BE(4 + nameBytes);
  if (payload.length !== 4 + nameBytes + 2 + 2 * count) return null;
  const infoTypes: number[] = [];
  for (let index = 0; index < count; index += 1) {
    infoTypes.push(payload.readUInt16BE(4 + nameBytes + 2 + 2 * index));
  }
  return { exportName, infoTypes };
}

/** Parses `u32 nlen, name, u32 nq, nq x (u32 qlen, query)`; `null` when malformed. */
export function parseMetaRequest(payload: Buffer): MetaRequest | null {
  if (payload.length < 8) return null;
  const nameBytes = payload.readUInt32BE(0);
  if (nameBytes > payload.length - 8) return null;
  const exportName = decodeString(payload.subarray(4, 4 + nameBytes));
  if (exportName === null) return null;
  const count = payload.readUInt32BE(4 + nameBytes);
  let at = 8 + nameBytes;
  // Each query takes at least 4 bytes: a count beyond that is malformed, whatever follows.
  if (count > (payload.length - at) / 4) return null;
  const queries: string[] = [];
  for (let index = 0; index < count; index += 1) {
    if (payload.length - at < 4) return null;
    const queryBytes = payload.readUInt32BE(at);
    at += 4;
    if (queryBytes > payload.length - at) return null;
    const query = decodeString(payload.subarray(at, at + queryBytes));
    if (query === null) return null;
    queries.push(query);
    at += queryBytes;
  }
  return at === payload.length ? { exportName, queries } : null;
}

/** Decodes a protocol string; `null` when too long, not UTF-8, or holding a NUL. */
export function decodeString(bytes: Uint8Array): string | null {
  if (bytes.length > SERVER_STRING_BYTES_MAX || bytes.includes(0)) return null;
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return null;
  }
}
