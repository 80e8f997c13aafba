// Owns one export as the server offers it: its name and description, the device behind it,
// whether it is read-only, and what it tells clients — size, transmission flags and block
// sizes. Every connection to an export shares the one device object (and so its cache), which
// is what makes CAN_MULTI_CONN true: a flush through any connection flushes the device that
// every connection's writes went to.

import type { BlockDevice } from '../devices/block-device.js';
import { FileDevice } from '../devices/file-device.js';
import {
  NBD_FLAG_CAN_MULTI_CONN, NBD_FLAG_HAS_FLAGS, NBD_FLAG_READ_ONLY, NBD_FLAG_SEND_DF,
  NBD_FLAG_SEND_FAST_ZERO, NBD_FLAG_SEND_FLUSH, NBD_FLAG_SEND_FUA, NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
} from '../nbd/protocol.js';
import { SERVER_PREFERRED_BLOCK_BYTES_MIN, SERVER_REQUEST_BYTES_MAX } from './limits.js';
import { RangeLock } from './range-lock.js';
import type { ThreadWriteGate } from './thread-write-gate.js';
import type { BlockSizes } from './wire.js';
import { sectorsToBytes } from '../units.js';

/** One export of an NBD server, as given to `createNbdServer`. */
export interface NbdExportOptions {
  /** The name clients ask for ("" is the default export); at most 4096 bytes of UTF-8. */
  name: string;
  /** An open device; the server never closes it. */
  device: BlockDevice;
  /** Text shown by `nbdinfo --list` (at most 4096 bytes). */
  description?: string;
  /** Refuse writes, trims and zeroes with EPERM even when the device is writable. */
  readOnly?: boolean;
}

/** An export being served. */
export class ServedExport {
  readonly name: string;
  readonly description: string;
  readonly device: BlockDevice;
  readonly readOnly: boolean;
  /** Orders read-modify-writes against other writes to the same blocks. */
  readonly lock: RangeLock;

  /** `gate` orders merges across the threads of a threaded server (thread-write-gate.ts). */
  constructor(options: NbdExportOptions, gate: ThreadWriteGate | null = null) {
    this.lock = new RangeLock(gate);
    this.name = options.name;
    this.description = options.description ?? '';
    this.device = options.device;
    this.readOnly = options.readOnly === true || options.device.readOnly;
  }

  /** The export's size in bytes. */
  get sizeBytes(): number {
    return sectorsToBytes(this.device.sizeSectors);
  }

  /** The device's logical block: the unit of every request the server sends it. */
  get blockBytes(): number {
    return this.device.limits.logicalBlockBytes;
  }

  /**
   * True when a WRITE_ZEROES may use the device's write-zeroes. With NO_HOLE only where that
   * never deallocates: RAM, and files zeroed with fallocate(ZERO_RANGE), which keeps blocks
   * allocated. Elsewhere (punched holes, BLKZEROOUT that may unmap, an NBD export) NO_HOLE
   * gets written zeros.
   */
  zeroesNatively(noHole: boolean): boolean {
    const device = this.device;
    if (device.limits.maxWriteZeroesSectors === 0) return false;
    if (!noHole || device.kind === 'ram' || device.kind === 'null') return true;
    return device instanceof FileDevice && device.methods.zeroes[0] === 'zero-range';
  }

  /**
   * True when zeroing is cheap, as FAST_ZERO demands: native write-zeroes whose first method
   * is not itself a write of zeros (a file device's last resort).
   */
  zeroesFast(noHole: boolean): boolean {
    const device = this.device;
    if (!this.zeroesNatively(noHole)) return false;
    return !(device instanceof FileDevice) || device.methods.zeroes[0] !== 'write';
  }

  /**
   * The transmission flags, truthful for this device. Flush and FUA are always honoured (a
   * device without a volatile cache satisfies both at once); DF only once structured replies
   * were negotiated; trim and zero only when writable.
   */
  transmissionFlags(structuredReplies: boolean): number {
    let flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
      NBD_FLAG_CAN_MULTI_CONN;
    if (structuredReplies) flags |= NBD_FLAG_SEND_DF;
    if (this.readOnly) flags |= NBD_FLAG_READ_ONLY;
    else flags |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
    return flags;
  }

  /**
   * Block sizes to advertise. A client that asked for them must then send whole logical
   * blocks; one that did not may send any byte range (the server merges partial blocks).
   */
  blockSizes(clientAsked: boolean): BlockSizes {
    const { logicalBlockBytes, physicalBlockBytes } = this.device.limits;
    return {
      minimumBytes: clientAsked ? logicalBlockBytes : 1,
      preferredBytes: Math.max(SERVER_PREFERRED_BLOCK_BYTES_MIN, physicalBlockBytes),
      maximumBytes: SERVER_REQUEST_BYTES_MAX,
    };
  }
}
