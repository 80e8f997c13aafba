// Owns the library's table call for text: `openTable(text)` opens a table given as text with
// `openDevice` opening its devices. Like `openDevice`, it sits above src/stacks: the stacks
// layer is given the opener of its devices as a parameter and never imports this folder.

import type { BlockDevice } from '../devices/block-device.js';
import { openTableText, type OpenTableOptions } from '../stacks/open-table.js';
import type { TableDevice } from '../stacks/table-device.js';
import { openDevice, type OpenDeviceOptions } from './open-device.js';

/** Options of `openTable`. */
export interface OpenTableTextOptions extends OpenTableOptions {
  /** Options for opening the devices the table names (`create` is ignored). */
  device?: Omit<OpenDeviceOptions, 'create' | 'readOnly'>;
}

/**
 * Opens a device-mapper table given as text: `START LENGTH TARGET ARGS...` lines in 512-byte
 * sectors, `#` comments. Device arguments are any device spec, `table:PATH` included.
 *
 * @throws TableError (`DMIO_ERR_INVALID_TABLE`, `DMIO_ERR_TABLE_CYCLE`) naming the line; any
 * error of opening a device the table names. Nothing is left open when it throws.
 * @example
 * const device = await openTable('0 2048 linear mem:1M 0\n2048 2048 zero\n');
 * console.log(formatTableReport(device, 'table').join('\n'));
 * await device.close();
 */
export function openTable(text: string, options: OpenTableTextOptions = {}): Promise<TableDevice> {
  const { device: deviceOptions = {}, ...tableOptions } = options;
  const open = (spec: string, readOnly: boolean): Promise<BlockDevice> =>
    openDevice(spec, { ...deviceOptions, readOnly });
  return openTableText(text, open, tableOptions);
}
