/**
 * The public entry `dmio/testing`: the fault device, for testing storage code against
 * failing disks. `createFaultDevice(inner, options)` wraps any `BlockDevice` and fails chosen
 * sectors and operations (dm-error), goes up and down (dm-flakey), delays completions
 * (dm-delay) and records every request it sees (`trace`). It is an entry of its own so that
 * test tooling is never part of what `dmio` exports.
 *
 * @example
 * ```ts
 * import { openDevice } from 'dmio';
 * import { createFaultDevice } from 'dmio/testing';
 * const ram = await openDevice('mem:1M');
 * const flaky = createFaultDevice(ram, { ranges: [{ sector: 8, countSectors: 8 }] });
 * ```
 *
 * @packageDocumentation
 */

export { createFaultDevice, FaultDevice } from './devices/fault-device.js';
export type {
  FaultDeviceOptions, FaultSpec, FaultRange, FaultOp, TraceEntry,
} from './devices/fault-device.js';
