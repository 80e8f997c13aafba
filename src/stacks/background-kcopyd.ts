// Owns the kcopyd client a target's background copies run on (mirror resync, writecache
// writeback): one per target, made on first use over the table's dm-io client, under the
// table's copy throttle when it is below 100 percent (the kernel's default is unthrottled).

import type { DmIoClient } from '../core/client.js';
import { dmKcopydClientCreate } from '../kcopyd/kcopyd.js';
import type { KcopydClient } from '../kcopyd/kcopyd-client.js';
import { dmKcopydThrottleCreate } from '../kcopyd/throttle.js';

/** Creates the kcopyd client for a target's background copies. */
export function createBackgroundKcopyd(ioClient: DmIoClient, throttlePercent: number): KcopydClient {
  return dmKcopydClientCreate({
    ioClient,
    ...(throttlePercent < 100 ? { throttle: dmKcopydThrottleCreate(throttlePercent) } : {}),
  });
}
