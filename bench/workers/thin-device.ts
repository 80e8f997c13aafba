// Owns a diagnostic BlockDevice: the thinnest device that satisfies the interface over a file
// descriptor, with one callback `fs.read`/`fs.write` (or `readv`/`writev`) per request and no
// request engine. Running `dmIo` over it measures the dm-io core alone (validation, plan,
// cursor, tracker, client); comparing it with `dmIo` over the real file backend shows what the
// backend adds. It is never used outside the bench.

import fs from 'node:fs';
import type { BlockDevice, DeviceDone, DeviceLimits, DeviceRequest } from '../../src/index.js';
import { lib } from './lib.js';

const { IoError } = lib;

const THIN_LIMITS_BUFFERED: DeviceLimits = {
  logicalBlockBytes: 512, physicalBlockBytes: 4096, maxSectorsPerRequest: 2048,
  maxSegmentsPerRequest: 256, maxDiscardSectors: 0, maxWriteZeroesSectors: 0,
  memoryAlignmentBytes: 0, flush: false, fua: false,
};

/** A device over `fd` that passes each request straight to one `fs` call. */
export class ThinFsDevice implements BlockDevice {
  readonly name: string;
  readonly kind = 'file' as const;
  readonly sizeSectors: number;
  readonly readOnly = false;
  readonly limits: DeviceLimits;
  readonly closed = false;
  readonly canBlock = false;
  readonly #fd: number;

  constructor(name: string, fd: number, sizeBytes: number, direct: boolean) {
    this.name = name;
    this.#fd = fd;
    this.sizeSectors = Math.floor(sizeBytes / 512);
    this.limits = direct ? { ...THIN_LIMITS_BUFFERED, memoryAlignmentBytes: 4096 } :
      THIN_LIMITS_BUFFERED;
  }

  submit(request: DeviceRequest, done: DeviceDone): void {
    const positionBytes = request.sector * 512;
    const callback = (error: NodeJS.ErrnoException | null): void => {
      done(error === null ? null : new IoError({
        errno: error.code ?? 'EIO', syscall: request.op, device: this.name,
        sector: request.sector, countSectors: request.countSectors, cause: error,
      }));
    };
    const [first] = request.segments;
    if (request.segments.length === 1 && first !== undefined) {
      if (request.op === 'read') fs.read(this.#fd, first, 0, first.length, positionBytes, callback);
      else fs.write(this.#fd, first, 0, first.length, positionBytes, callback);
    } else if (request.op === 'read') {
      fs.readv(this.#fd, request.segments, positionBytes, callback);
    } else {
      fs.writev(this.#fd, request.segments, positionBytes, callback);
    }
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
