// Owns what kcopyd does when its dm-io client refuses I/O as busy. dm-io refuses a request
// whose device requests would overflow the client's waiting queue (`queuedMax`) with
// DMIO_ERR_CLIENT_BUSY, thrown synchronously with nothing submitted. kcopyd's private client is
// sized for it, but a caller may give kcopyd a shared `ioClient` that other users fill; for
// kcopyd that is back-pressure, not an I/O error: the job that met it waits and is retried
// when the client may have room (the client, kcopyd-client.ts, puts it back on its list and
// wakes itself on its next completion or on a timer). These helpers only submit and time.

import { submitPlan } from '../core/dm-io.js';
import type { DmIoResult } from '../core/io-tracker.js';
import type { DmIoPlan } from '../core/request.js';
import { isDmIoError } from '../errors.js';
import { KCOPYD_BUSY_RETRY_MS_MAX, KCOPYD_BUSY_RETRY_MS_MIN } from './constants.js';

/**
 * Submits `plan` and answers true, or answers false when the client was busy: then nothing was
 * submitted and `complete` never runs. Every other throw propagates.
 */
export function trySubmitPlan(plan: DmIoPlan, complete: (result: DmIoResult) => void): boolean {
  try {
    submitPlan(plan, complete);
    return true;
  } catch (error) {
    if (isDmIoError(error, 'DMIO_ERR_CLIENT_BUSY')) return false;
    throw error;
  }
}

/** The wait after `previousMs` (0 for the first refusal): doubling, from the minimum to the cap. */
export function nextBusyRetryMs(previousMs: number): number {
  return Math.min(Math.max(2 * previousMs, KCOPYD_BUSY_RETRY_MS_MIN), KCOPYD_BUSY_RETRY_MS_MAX);
}
