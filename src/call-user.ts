// Owns calling user code from a loop that must keep going: a callback that throws has its
// error rethrown on a later tick (so it still surfaces as an uncaught exception), and the loop
// that called it carries on with its other work. It suits callbacks that run after the work
// they report is over: kcopyd's completion callbacks and the inline-read batches (dm-io's
// notify). kcopyd's onProgress and onChunkRead do not use it: a throw there cancels their job.

/** Runs `call`; a throw is rethrown on a later tick instead of unwinding the caller. */
export function callUser(call: () => void): void {
  try {
    call();
  } catch (error) {
    process.nextTick(() => {
      throw error;
    });
  }
}
