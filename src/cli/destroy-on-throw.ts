// Owns the set-up step between creating a command's kcopyd client and the `try` whose
// `finally` destroys it: what fails there (a feature module's import, the progress bar) must
// not leave the client and its page pool behind.

import { dmKcopydClientDestroy, type KcopydClient } from '../index.js';

/** Runs `setUp`; if it throws, destroys `kc` and rethrows. */
export async function destroyOnThrow<T>(kc: KcopydClient, setUp: () => Promise<T>): Promise<T> {
  try {
    return await setUp();
  } catch (error) {
    await dmKcopydClientDestroy(kc);
    throw error;
  }
}
