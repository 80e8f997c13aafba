// Owns calling user code from a loop that must keep going: a callback that throws has its
// error rethrown on a later tick (so it still surfaces as an uncaught exception), and the loop
// that called it carries on with its other work. kcopyd's worker and inline-read batches use it.

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
