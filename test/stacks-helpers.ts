// Test devices for the stacks suites: RAM "disks" that outlive the tables opened on them (a
// table closes its devices; a KeptDevice only marks itself closed), each open wrapped in a fault
// device so a test can fail a leg or a cache mid-run.

import {
  createRamDevice, type BlockDevice, type DeviceDone, type DeviceRequest, type IoError,
  type RamDevice,
} from '../src/index.js';
import { createFaultDevice, type FaultDevice } from '../src/testing.js';

/** A device the table may close without losing the RAM device behind it (a "disk"). */
export class KeptDevice implements BlockDevice {
  readonly kind = 'ram' as const;
  readonly canBlock = true;
  readonly #ram: RamDevice;
  #closed = false;

  constructor(ram: RamDevice) {
    this.#ram = ram;
  }

  get name(): string { return this.#ram.name; }
  get sizeSectors(): number { return this.#ram.sizeSectors; }
  get readOnly(): boolean { return false; }
  get limits(): BlockDevice['limits'] { return this.#ram.limits; }
  get closed(): boolean { return this.#closed; }
  submit(request: DeviceRequest, done: DeviceDone): void { this.#ram.submit(request, done); }
  submitSync(request: DeviceRequest): IoError | null { return this.#ram.submitSync(request); }
  close(): Promise<void> {
    this.#closed = true;
    return Promise.resolve();
  }
}

/** Named RAM "disks" that outlive the tables opened on them; each open wraps a fault device. */
export function devicePool(sizes: Record<string, number> = {}, defaultSectors = 4096): {
  open: (spec: string) => Promise<BlockDevice>;
  fault: (name: string) => FaultDevice;
  ram: (name: string) => RamDevice;
} {
  const rams = new Map<string, RamDevice>();
  const faults = new Map<string, FaultDevice>();
  const ram = (name: string): RamDevice => {
    let device = rams.get(name);
    if (device === undefined) {
      device = createRamDevice({ sizeBytes: (sizes[name] ?? defaultSectors) * 512, name });
      rams.set(name, device);
    }
    return device;
  };
  return {
    ram,
    fault: (name) => faults.get(name) as FaultDevice,
    open: (spec) => {
      const fault = createFaultDevice(new KeptDevice(ram(spec)), { name: spec });
      faults.set(spec, fault);
      return Promise.resolve(fault);
    },
  };
}

