// Example: mirror one write to three image files with a single multi-region dm-io request,
// one of them behind a fault injector that fails part of it, then read every image back and
// print the error bitset. Run with `npm run example` (it creates ./dmio-example/*.img).

import { mkdir } from 'node:fs/promises';
import {
  dmIo, dmIoClientCreate, dmIoClientDestroy, failedRegions, openDevice, type BlockDevice,
} from '../src/index.js';
import { createFaultDevice } from '../src/testing.js';

const IMAGE_BYTES = 16 * 1024 * 1024;
const directory = process.argv[2] ?? 'dmio-example';

await mkdir(directory, { recursive: true });
const images: BlockDevice[] = [];
for (const name of ['a', 'b', 'c']) {
  images.push(await openDevice(`${directory}/${name}.img`, { create: { sizeBytes: IMAGE_BYTES } }));
}
// The third mirror leg fails writes to sectors 2048-2055, as a disk with a bad spot would.
const [first, second, third] = images as [BlockDevice, BlockDevice, BlockDevice];
const flaky = createFaultDevice(third, { ranges: [{ sector: 2048, countSectors: 8, ops: ['write'] }] });

const client = dmIoClientCreate();
const data = Buffer.alloc(4 * 1024 * 1024);
for (let index = 0; index < data.length; index += 1) data[index] = (index * 7) & 0xff;

const regions = [first, second, flaky].map((device) => ({ device, sector: 0, count: data.length / 512 }));
const { errorBits, errors } = await dmIo({ op: 'write', mem: { type: 'vm', data }, client }, regions);
console.log(`mirrored ${data.length} bytes to ${regions.length} images`);
console.log(`errorBits = 0b${errorBits.toString(2).padStart(regions.length, '0')}`);
for (const index of failedRegions(errorBits)) {
  console.log(`  region ${index} failed: ${errors[index]?.message}`);
}

for (const [index, device] of images.entries()) {
  const back = Buffer.alloc(data.length);
  const read = await dmIo({ op: 'read', mem: { type: 'vm', data: back }, client },
    [{ device, sector: 0, count: back.length / 512 }]);
  const same = read.errorBits === 0n && back.equals(data);
  console.log(`  ${device.name}: ${same ? 'identical to the data written' : 'differs'}`);
}
await dmIoClientDestroy(client);
await Promise.all(images.map((device) => device.close()));
