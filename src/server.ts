/**
 * The public entry `dmio/server`: the NBD server, which makes any `BlockDevice` an NBD export
 * that qemu, nbdcopy, fio and the kernel can use (what `dmio serve` runs). The caller opens
 * the devices (with `openDevice` from `dmio`) and closes them after `server.close()`; the
 * server negotiates fixed newstyle with structured replies, `base:allocation` and STARTTLS
 * (x509 or PSK), and sends every request through one dm-io client. It is an entry of its own
 * so that programs that only do I/O (and `dmio copy`) do not load the server and its TLS.
 *
 * @example
 * ```ts
 * import { openDevice } from 'dmio';
 * import { createNbdServer } from 'dmio/server';
 * const device = await openDevice('disk.img');
 * const server = createNbdServer({ exports: [{ name: 'disk', device }] });
 * await server.listen({ socketPath: '/tmp/nbd.sock' });
 * ```
 *
 * @packageDocumentation
 */

export { createNbdServer, NbdServer, SERVER_THREADS_MAX } from './server/nbd-server.js';
export { threadableDevice } from './server/thread-exports.js';
export type { NbdServerOptions, NbdListenAddress } from './server/nbd-server.js';
export type { NbdExportOptions } from './server/nbd-export.js';
export type { NbdServerTlsOptions, NbdServerCertificates } from './server/tls.js';
