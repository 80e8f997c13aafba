// Owns the CLI's exit statuses and the usage error (exit 2). It imports nothing from the
// library, so the program's entry (main.ts) can map outcomes to statuses without loading it.

/** Exit status: everything succeeded. */
export const EXIT_OK = 0;
/** Exit status: an I/O error on the source or a destination (the others still completed). */
export const EXIT_IO_ERROR = 1;
/** Exit status: bad usage or arguments, detected before anything was written. */
export const EXIT_USAGE = 2;

/** Bad usage: the message names the problem; the CLI exits with status 2. */
export class UsageError extends Error {
  /** `options.cause` keeps the library error behind the message, for callers that look. */
  constructor(message: string, options: ErrorOptions = {}) {
    super(message, options);
    this.name = 'UsageError';
  }
}
