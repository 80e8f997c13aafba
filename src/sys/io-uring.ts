// Owns one io_uring instance of dmio's own, set up through koffi (io_uring_setup, mmap), whose
// submission entries are written straight into the shared ring memory from JavaScript. Without a
// kernel polling thread, every entry prepared while the current JavaScript task runs goes to the
// kernel with one io_uring_enter, from a microtask. With one (SQPOLL) each entry is published as
// it is prepared, so the kernel works alongside the JavaScript, and a system call is needed only
// to wake the thread when it has gone to sleep; optionally (`spinUs`) a batch published from a
// wake-up's callbacks then busy-waits briefly for the next completion instead of sleeping in the
// event loop, at most SPIN_BUDGET_MS per wake-up. A ring without a polling thread is set up with
// COOP_TASKRUN where the kernel has it, so a completion does not interrupt the JavaScript running
// on this thread but is posted at its next system call (docs/performance.md: O_DIRECT writes to a
// loop device measured about a fifth to a half faster). Completions are read straight out of the
// completion ring when the ring's descriptor turns readable, through a libuv poll handle
// (koffi.node.poll), so a burst of completions costs one event-loop wake-up and a batch of
// requests at most one system call, where Node's `fs` pays a threadpool hand-off (or an io_uring
// round trip) per request.
//
// Invariants: a completion callback never runs inside `prepareTransfer` (only from the poll
// callback, from a later microtask's wait for completions, or a later turn when the kernel
// refuses a batch), and one that throws has its error rethrown on a later tick while the batch
// goes on; an entry's memory (the caller's buffer and its iovec slot) stays referenced until its
// completion; at most `entries` requests are in flight, so the completion ring (twice as large)
// never overflows; the poll handle keeps the process alive only while requests are in flight.
// Little-endian hosts only (x86-64, arm64), checked at setup.

import assert from '../assert.js';
import { KIB } from '../constants.js';
import os from 'node:os';
import { errnoName } from './errno-name.js';
import { libcLibrary, SysError } from './libc.js';
import { BufferAddresses, writeWord64 } from './native-memory.js';

type Koffi = typeof import('koffi').default;
type NativeFunction = ReturnType<ReturnType<Koffi['load']>['func']>;
type PollHandle = ReturnType<Koffi['node']['poll']>;

/** Linux system call numbers, the same on x86-64 and arm64 (the unified table). */
const SYS_IO_URING_SETUP = 425;
const SYS_IO_URING_ENTER = 426;

const IORING_OP_READV = 1;
const IORING_OP_WRITEV = 2;
const IORING_OP_READ = 22;
const IORING_OP_WRITE = 23;
const IORING_ENTER_GETEVENTS = 1;
/** Submission-entry flag (byte 1 of the first word): run the request on a kernel io-wq worker. */
const IOSQE_ASYNC = 1 << 4;
/** Keep submitting the rest of a batch when one entry fails to start (5.18). */
const IORING_SETUP_SUBMIT_ALL = 1 << 7;
const IORING_SETUP_CLAMP = 1 << 4;
const IORING_SETUP_SQPOLL = 1 << 1;
/**
 * Completions are posted when this thread next enters the kernel (any system call, such as the
 * event loop's wait) instead of interrupting it with an inter-processor signal each (5.19).
 */
const IORING_SETUP_COOP_TASKRUN = 1 << 8;
const EINVAL = 22;
const IORING_SQ_NEED_WAKEUP = 1;
const IORING_ENTER_SQ_WAKEUP = 2;
const IORING_FEAT_SINGLE_MMAP = 1;
const IORING_FEAT_NODROP = 1 << 1;
const IORING_OFF_SQ_RING = 0;
const IORING_OFF_CQ_RING = 0x8000000;
const IORING_OFF_SQES = 0x10000000;
const PROT_READ_WRITE = 0x3;
const MAP_SHARED_POPULATE = 0x1 | 0x8000;
const PARAMS_BYTES = 120;
const SQE_WORDS = 16;
/** The submission entry's ioprio field is 16 bits (`__u16 ioprio`). */
const IOPRIO_FIELD_MAX = 0xffff;
const CQE_BYTES = 16;

/**
 * The smallest read `offloadBusyReads` hands to a kernel worker (64 KiB): copying less out of
 * the page cache costs less than waking the worker (docs/performance.md, "Serve reads on the
 * kernel's workers").
 */
export const OFFLOAD_READ_BYTES_MIN = 64 * KIB;

/** The longest idle time a polling thread may be given (`sq_thread_idle` is 32 bits). */
export const SQPOLL_IDLE_MS_MAX = 0xffffffff;

/** Rounds of reaping and submitting one wake-up may run before it yields to the loop. */
const REAP_ROUNDS_MAX = 4;

/** The most time one wake-up may spend waiting for completions before the loop turns. */
const SPIN_BUDGET_MS = 1;
/** The largest `spinUs` a ring accepts. */
const SPIN_US_MAX = 1000;
/** Completion-ring checks between two reads of the clock while spinning. */
const SPIN_POLLS_PER_CLOCK = 64;

/** The most submission entries a ring is set up with here. */
const URING_ENTRIES_MAX = 4096;

/** Iovecs one entry can carry; vectors longer than this go elsewhere. */
export const URING_IOVECS_PER_ENTRY_MAX = 16;

/** How a ring is set up. */
export interface IoUringOptions {
  /**
   * Above 0: a kernel thread polls the submission ring and sleeps after this long without
   * work (SQPOLL). Entries are then published one by one, as they are prepared.
   */
  readonly sqPollIdleMs?: number;
  /**
   * With a polling thread only: how long a wake-up busy-waits for the next completion while
   * completion callbacks keep the ring fed (0, the default: never). Cached reads complete
   * within microseconds of their submission, so waiting beats sleeping and being woken.
   */
  readonly spinUs?: number;
  /**
   * Only for a ring without a polling thread (`create` refuses it with `sqPollIdleMs` above
   * 0): a read of at least OFFLOAD_READ_BYTES_MIN prepared while
   * another request is in flight on the ring goes to one of the kernel's io-wq workers
   * (IOSQE_ASYNC), so copying it out of the page cache runs on another core instead of inside
   * this thread's io_uring_enter; a read prepared while the ring is idle, or a small one, still
   * runs inline, where the hand-off would cost more than it saves (default false).
   */
  readonly offloadBusyReads?: boolean;
}

/** Completion of one entry: bytes moved (0 or more) or a negated errno, as the kernel says. */
export type UringCallback = (result: number) => void;

interface UringBindings {
  readonly koffi: Koffi;
  readonly setup: NativeFunction;
  readonly enter: NativeFunction;
  readonly mmap: NativeFunction;
  readonly munmap: NativeFunction;
  readonly close: NativeFunction;
}

/** The system calls a ring needs, bound once per ring (rings are few and long-lived). */
function bindings(): UringBindings {
  const { koffi, library } = libcLibrary();
  // syscall(2) is variadic; fixed prototypes are safe on x86-64 and arm64 Linux, where the
  // variadic integer arguments travel in the same registers.
  const setup = library.func('long syscall(long number, unsigned int entries, void *params)');
  const enter = library.func('long syscall(long number, int fd, unsigned int toSubmit, ' +
    'unsigned int minComplete, unsigned int flags, void *sig, size_t sigBytes)');
  const mmap = library.func(
    'void *mmap(void *address, size_t length, int prot, int flags, int fd, int64_t offset)');
  const munmap = library.func('int munmap(void *address, size_t length)');
  const close = library.func('int close(int fd)');
  return { koffi, setup, enter, mmap, munmap, close };
}

function failure(native: UringBindings, syscall: string): SysError {
  return new SysError(native.koffi.errno(), syscall);
}

/** Calls io_uring_setup with `flags`: the descriptor (or -1 and the errno) and the params. */
function setupRing(
  native: UringBindings, entries: number, flags: number, sqPollIdleMs: number,
): { fd: number; errno: number; view: DataView } {
  const params = new Uint8Array(PARAMS_BYTES);
  const view = new DataView(params.buffer);
  view.setUint32(8, flags, true);
  view.setUint32(16, sqPollIdleMs, true);
  const fd = Number(native.setup(SYS_IO_URING_SETUP, entries, params));
  return { fd, errno: fd < 0 ? native.koffi.errno() : 0, view };
}

/** The word indexes of the ring's shared counters, from io_uring_params. */
interface RingLayout {
  readonly sqHead: number;
  readonly sqTail: number;
  readonly sqMask: number;
  readonly cqHead: number;
  readonly cqTail: number;
  readonly cqMask: number;
  readonly cqesByte: number;
}

/** One mapping of ring memory, for munmap at close. */
interface Mapping {
  readonly pointer: unknown;
  readonly lengthBytes: number;
}

/** One io_uring: a submission ring of `entries` slots and its completion ring. */
export class IoUring {
  /** Submission slots; also the most requests in flight. */
  readonly entries: number;
  /**
   * Set up with COOP_TASKRUN: completions are posted at this thread's next system call rather
   * than by interrupting it (rings without a polling thread, on kernels that have it).
   */
  readonly coopTaskrun: boolean;
  readonly #native: UringBindings;
  readonly #fd: number;
  readonly #mappings: Mapping[];
  readonly #ring: Uint32Array;
  readonly #ringSigned: Int32Array;
  readonly #sqes: Uint32Array;
  readonly #layout: RingLayout;
  readonly #iovecs: Uint32Array;
  readonly #iovecBase: number;
  /** Callback and memory of each slot in flight, indexed by slot (the entry's user_data). */
  readonly #callbacks: Array<UringCallback | undefined>;
  readonly #memory: Array<unknown>;
  readonly #freeSlots: number[];
  readonly #poll: PollHandle;
  /** Addresses of the buffers seen so far (native-memory.ts). */
  readonly #addresses: BufferAddresses;
  #sqTail: number;
  #unsubmitted = 0;
  #flushScheduled = false;
  #inflight = 0;
  #closed = false;
  #reaping = false;
  /** Entries taken back out of the ring whose failure completes on the next turn. */
  #deferred = 0;
  readonly #sqPoll: boolean;
  readonly #sqFlagsWord: number;
  /** How long a wake-up waits for the next completion before sleeping again; 0: never. */
  readonly #spinMs: number;
  /** Until when this event-loop turn may still busy-wait for completions (performance.now). */
  #spinUntilMs = 0;
  /** Reads prepared behind others go to the kernel's workers (`offloadBusyReads`). */
  readonly #offloadBusyReads: boolean;
  /**
   * Counters for diagnostics: wake-ups, io_uring_enter calls, completions, the waits for
   * completions (`spinUs`) that found one, and reads handed to the kernel's workers
   * (`offloadBusyReads`).
   */
  readonly counters = { wakeups: 0, enters: 0, completions: 0, spinHits: 0, offloadedReads: 0 };

  /** @internal Use `IoUring.create`. */
  private constructor(
    native: UringBindings, fd: number, params: DataView, entries: number, spinUs: number,
    offloadBusyReads: boolean,
  ) {
    this.entries = entries;
    this.#spinMs = spinUs / 1000;
    this.#native = native;
    this.#addresses = new BufferAddresses(native.koffi);
    this.#fd = fd;
    this.#mappings = [];
    this.#sqPoll = (params.getUint32(8, true) & IORING_SETUP_SQPOLL) !== 0;
    this.coopTaskrun = (params.getUint32(8, true) & IORING_SETUP_COOP_TASKRUN) !== 0;
    this.#offloadBusyReads = offloadBusyReads;
    this.#sqFlagsWord = params.getUint32(56, true) / 4;
    try {
      const features = params.getUint32(20, true);
      assert.ok((features & IORING_FEAT_NODROP) !== 0, 'io_uring without NODROP');
      const sqRingBytes = params.getUint32(64, true) + entries * 4;
      const cqRingBytes = params.getUint32(100, true) + params.getUint32(4, true) * CQE_BYTES;
      const single = (features & IORING_FEAT_SINGLE_MMAP) !== 0;
      const ringBytes = single ? Math.max(sqRingBytes, cqRingBytes) : sqRingBytes;
      const ring = this.#map(ringBytes, IORING_OFF_SQ_RING);
      const cqRing = single ? ring : this.#map(cqRingBytes, IORING_OFF_CQ_RING);
      assert.ok(cqRing === ring, 'io_uring without a single mapping is not supported');
      this.#ring = new Uint32Array(ring);
      // The parameters give the byte offsets of the ring's fields; the masks are read there.
      this.#layout = {
        sqHead: params.getUint32(40, true) / 4, sqTail: params.getUint32(44, true) / 4,
        sqMask: this.#ring[params.getUint32(48, true) / 4] as number,
        cqHead: params.getUint32(80, true) / 4, cqTail: params.getUint32(84, true) / 4,
        cqMask: this.#ring[params.getUint32(88, true) / 4] as number,
        cqesByte: params.getUint32(100, true),
      };
      this.#ringSigned = new Int32Array(ring);
      this.#sqes = new Uint32Array(this.#map(entries * SQE_WORDS * 4, IORING_OFF_SQES));
      // Slot i of the submission array always names entry i: no indirection to maintain.
      const arrayWord = params.getUint32(64, true) / 4;
      for (let index = 0; index < entries; index += 1) this.#ring[arrayWord + index] = index;
    } catch (error) {
      this.#unmapAll();
      throw error;
    }
    this.#sqTail = Atomics.load(this.#ring, this.#layout.sqTail);
    this.#iovecs = new Uint32Array(entries * URING_IOVECS_PER_ENTRY_MAX * 4);
    this.#iovecBase = Number(native.koffi.address(this.#iovecs));
    this.#callbacks = new Array<UringCallback | undefined>(entries).fill(undefined);
    this.#memory = new Array<unknown>(entries).fill(undefined);
    this.#freeSlots = [];
    for (let slot = entries - 1; slot >= 0; slot -= 1) this.#freeSlots.push(slot);
    this.#poll = native.koffi.node.poll(fd, { readable: true }, () => this.#reap());
    this.#poll.unref();
  }

  /**
   * Sets up a ring of `entries` submission slots (rounded up to a power of two by the kernel).
   * With `sqPollIdleMs` above 0 a kernel thread polls the submission ring and sleeps after
   * that long without work.
   * @throws SysError when the kernel or a sandbox refuses io_uring (ENOSYS, EPERM, EINVAL).
   */
  static create(entries: number, options: IoUringOptions = {}): IoUring {
    assert.ok(Number.isInteger(entries) && entries >= 1 && entries <= URING_ENTRIES_MAX, 'entries');
    const sqPollIdleMs = options.sqPollIdleMs ?? 0;
    assert.ok(Number.isInteger(sqPollIdleMs) && sqPollIdleMs >= 0 &&
      sqPollIdleMs <= SQPOLL_IDLE_MS_MAX, 'sqPollIdleMs');
    const spinUs = options.spinUs ?? 0;
    assert.ok(Number.isInteger(spinUs) && spinUs >= 0 && spinUs <= SPIN_US_MAX, 'spinUs');
    assert.ok(spinUs === 0 || sqPollIdleMs > 0, 'spinning needs a polling thread');
    const offloadBusyReads = options.offloadBusyReads ?? false;
    assert.ok(!offloadBusyReads || sqPollIdleMs === 0, 'offloading reads needs no polling thread');
    if (process.platform !== 'linux' || os.endianness() !== 'LE') {
      throw new SysError(38, 'io_uring_setup');
    }
    const native = bindings();
    const base = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CLAMP;
    let setup = sqPollIdleMs > 0 ? setupRing(native, entries, base | IORING_SETUP_SQPOLL,
      sqPollIdleMs) : setupRing(native, entries, base | IORING_SETUP_COOP_TASKRUN, 0);
    // A kernel older than 5.19 refuses COOP_TASKRUN: the same ring without it.
    if (setup.fd < 0 && setup.errno === EINVAL && sqPollIdleMs === 0) {
      setup = setupRing(native, entries, base, 0);
    }
    const { fd, view } = setup;
    if (fd < 0) throw new SysError(setup.errno, 'io_uring_setup');
    try {
      return new IoUring(native, fd, view, view.getUint32(0, true), spinUs, offloadBusyReads);
    } catch (error) {
      native.close(fd);
      throw error;
    }
  }

  #map(lengthBytes: number, offset: number): ArrayBuffer {
    const pointer: unknown = this.#native.mmap(null, lengthBytes, PROT_READ_WRITE,
      MAP_SHARED_POPULATE, this.#fd, offset);
    const address = BigInt(this.#native.koffi.address(pointer) as number | bigint);
    if (address === 0n || address === 0xffffffffffffffffn) {
      throw failure(this.#native, 'mmap io_uring');
    }
    this.#mappings.push({ pointer, lengthBytes });
    return this.#native.koffi.view(pointer, lengthBytes);
  }

  #unmapAll(): void {
    for (const mapping of this.#mappings.splice(0)) {
      this.#native.munmap(mapping.pointer, mapping.lengthBytes);
    }
  }

  /** Requests in flight (prepared and not yet completed). */
  get inflight(): number {
    return this.#inflight;
  }

  /** True when another request can be prepared now. */
  get hasRoom(): boolean {
    return !this.#closed && this.#freeSlots.length > 0;
  }

  /**
   * Prepares a read or write of `buffers` (one or up to `URING_IOVECS_PER_ENTRY_MAX`) at
   * `positionBytes` of `fd`, with I/O priority `ioprio` (the entry's ioprio field: class << 13
   * | level, as ioprio_set takes it; 0 lets the kernel use the submitting thread's priority,
   * and a value the kernel refuses completes with -EINVAL, or -EPERM for the real-time class
   * without CAP_SYS_ADMIN or CAP_SYS_NICE); it goes to the kernel with the rest of this task's batch, and
   * `callback` runs from the event loop once it completes. Returns false, having done nothing,
   * when no slot is free, the vector is too long or a buffer's memory could move (an
   * ArrayBuffer of 64 bytes or less, which V8 may keep in its heap).
   */
  prepareTransfer(
    fd: number, op: 'read' | 'write', buffers: readonly Uint8Array[], positionBytes: number,
    ioprio: number, callback: UringCallback,
  ): boolean {
    assert.ok(Number.isInteger(ioprio) && ioprio >= 0 && ioprio <= IOPRIO_FIELD_MAX,
      'ioprio fits the entry\'s 16-bit field');
    const count = buffers.length;
    if (count === 0 || count > URING_IOVECS_PER_ENTRY_MAX || !this.hasRoom) return false;
    if (!outsideHeap(buffers)) return false;
    const slot = this.#freeSlots.pop() as number;
    let opcode: number;
    let address: number;
    let length: number;
    let transferBytes = 0;
    if (count === 1) {
      const only = buffers[0] as Uint8Array;
      opcode = op === 'read' ? IORING_OP_READ : IORING_OP_WRITE;
      address = this.#addresses.addressOf(only);
      length = only.length;
      transferBytes = length;
      this.#memory[slot] = only;
    } else {
      opcode = op === 'read' ? IORING_OP_READV : IORING_OP_WRITEV;
      const firstWord = slot * URING_IOVECS_PER_ENTRY_MAX * 4;
      for (let index = 0; index < count; index += 1) {
        const buffer = buffers[index] as Uint8Array;
        const word = firstWord + index * 4;
        writeWord64(this.#iovecs, word, this.#addresses.addressOf(buffer));
        this.#iovecs[word + 2] = buffer.length;
        this.#iovecs[word + 3] = 0;
        transferBytes += buffer.length;
      }
      address = this.#iovecBase + firstWord * 4;
      length = count;
      this.#memory[slot] = buffers;
    }
    this.#callbacks[slot] = callback;
    let flags = 0;
    if (op === 'read' && this.#offloadBusyReads && this.#inflight - this.#deferred > 0 &&
      transferBytes >= OFFLOAD_READ_BYTES_MIN) {
      flags = IOSQE_ASYNC;
      this.counters.offloadedReads += 1;
    }
    this.#writeEntry(slot, opcode | (flags << 8) | (ioprio << 16), fd, positionBytes, address,
      length);
    return true;
  }

  /**
   * Writes one submission entry. `head` is its first word: opcode (byte 0), flags (byte 1:
   * IOSQE_ASYNC or none) and ioprio (bytes 2-3).
   */
  #writeEntry(
    slot: number, head: number, fd: number, offset: number, address: number, length: number,
  ): void {
    const entry = (this.#sqTail & this.#layout.sqMask) * SQE_WORDS;
    const sqes = this.#sqes;
    sqes[entry] = head >>> 0;
    sqes[entry + 1] = fd;
    writeWord64(sqes, entry + 2, offset);
    writeWord64(sqes, entry + 4, address);
    sqes[entry + 6] = length;
    sqes[entry + 7] = 0;
    sqes[entry + 8] = slot;
    sqes.fill(0, entry + 9, entry + SQE_WORDS);
    this.#sqTail = (this.#sqTail + 1) >>> 0;
    // A polling thread takes each entry as soon as it is published, so the kernel works while
    // this thread runs the rest of the batch's JavaScript (publishing once per batch made the two
    // threads take turns: 0.27M against 0.71-0.74M cached 4 KiB reads at QD 32). Without one
    // the kernel reads the tail only inside io_uring_enter: one barrier per batch.
    if (this.#sqPoll) Atomics.store(this.#ring, this.#layout.sqTail, this.#sqTail);
    this.#unsubmitted += 1;
    this.#inflight += 1;
    if (this.#inflight === 1) this.#poll.ref();
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      queueMicrotask(() => this.#flush());
    }
  }

  /**
   * Submits every prepared entry with one io_uring_enter (with SQPOLL: wakes the kernel thread
   * if it sleeps). When the kernel is short of resources (EAGAIN, EBUSY) the entries stay
   * prepared and go with the next batch, or on the next turn; when it refuses the call for
   * any other reason they are taken back out of the ring and complete with that errno.
   */
  #flush(): void {
    this.#flushScheduled = false;
    if (this.#closed) return; // A flush queued before close: the ring memory is gone.
    Atomics.store(this.#ring, this.#layout.sqTail, this.#sqTail);
    if (this.#sqPoll) {
      this.#unsubmitted = 0;
      if ((Atomics.load(this.#ring, this.#sqFlagsWord) & IORING_SQ_NEED_WAKEUP) !== 0) {
        this.counters.enters += 1;
        this.#native.enter(SYS_IO_URING_ENTER, this.#fd, 0, 0, IORING_ENTER_SQ_WAKEUP, null, 0);
      }
      if (this.#spinMs > 0 && !this.#reaping) this.#spinForCompletions();
      return;
    }
    while (this.#unsubmitted > 0 && !this.#closed) {
      this.counters.enters += 1;
      const submitted = Number(this.#native.enter(SYS_IO_URING_ENTER, this.#fd,
        this.#unsubmitted, 0, 0, null, 0));
      if (submitted > 0) {
        this.#unsubmitted -= submitted;
        continue;
      }
      const errnoValue = submitted === 0 ? 11 : this.#native.koffi.errno();
      const code = errnoName(errnoValue);
      if (code === 'EINTR') continue;
      if (code === 'EAGAIN' || code === 'EBUSY') {
        this.#retryLater();
        return;
      }
      this.#failUnsubmitted(errnoValue);
      return;
    }
  }

  #retryLater(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => this.#flush());
  }

  /**
   * Takes the entries the kernel has not consumed back out of the submission ring (only this
   * thread writes it, and without SQPOLL the kernel reads it only inside io_uring_enter) and
   * completes them with `errnoValue` on the next turn.
   */
  #failUnsubmitted(errnoValue: number): void {
    const count = this.#unsubmitted;
    const slots: number[] = [];
    for (let back = count; back >= 1; back -= 1) {
      const entry = ((this.#sqTail - back) & this.#layout.sqMask) * SQE_WORDS;
      slots.push(this.#sqes[entry + 8] as number);
    }
    this.#sqTail = (this.#sqTail - count) >>> 0;
    Atomics.store(this.#ring, this.#layout.sqTail, this.#sqTail);
    this.#unsubmitted = 0;
    this.#deferred += count;
    setImmediate(() => {
      this.#deferred -= count;
      for (const slot of slots) this.#complete(slot, -errnoValue);
    });
  }

  /**
   * Runs the callbacks of every completion in the ring and submits what they prepared; the
   * system call that submits also runs the kernel's pending completion work, so while new
   * completions keep arriving this goes round again, a bounded number of times, before it
   * returns to the event loop.
   */
  #reap(): void {
    if (this.#closed || this.#reaping) return;
    this.counters.wakeups += 1;
    this.#reaping = true;
    if (this.#spinMs > 0) this.#spinUntilMs = performance.now() + SPIN_BUDGET_MS;
    try {
      for (let round = 0; round < REAP_ROUNDS_MAX; round += 1) {
        if (this.#reapReady() === 0) break;
        if (this.#unsubmitted === 0 || this.#sqPoll) break;
        this.#flush();
      }
    } catch (error) {
      rethrowLater(error); // An assertion: still surfaces, and the handle keeps working.
    } finally {
      this.#reaping = false;
    }
  }

  /**
   * With `spinUs`, after a batch was published from inside a wake-up's turn (its callbacks, or
   * the promise continuations they resolved, prepared new entries): waits up to `spinUs` for the
   * next completion and completes what arrived, rather than sleeping in the event loop and being
   * woken again. The callbacks then run from this microtask, never inside `prepareTransfer`;
   * what they prepare schedules the next flush, so the ring keeps going until the turn's
   * SPIN_BUDGET_MS is spent (set by each wake-up), then the event loop turns.
   */
  #spinForCompletions(): void {
    if (this.#inflight === this.#deferred || performance.now() >= this.#spinUntilMs) return;
    if (!this.#awaitCompletion(this.#spinUntilMs)) return;
    this.counters.spinHits += 1;
    this.#reaping = true;
    try {
      this.#reapReady();
    } catch (error) {
      rethrowLater(error);
    } finally {
      this.#reaping = false;
    }
  }

  /** Busy-waits up to `spinMs` (and not past `budgetEndMs`) for a completion to arrive. */
  #awaitCompletion(budgetEndMs: number): boolean {
    const ring = this.#ring;
    const { cqHead, cqTail } = this.#layout;
    const endMs = Math.min(performance.now() + this.#spinMs, budgetEndMs);
    for (let polls = 1; ; polls += 1) {
      if (Atomics.load(ring, cqTail) !== Atomics.load(ring, cqHead)) return true;
      if (polls % SPIN_POLLS_PER_CLOCK === 0 && performance.now() >= endMs) return false;
    }
  }

  /** Completes what the completion ring holds now; returns how many. */
  #reapReady(): number {
    const ring = this.#ring;
    const layout = this.#layout;
    let head = Atomics.load(ring, layout.cqHead);
    let count = 0;
    for (;;) {
      const tail = Atomics.load(ring, layout.cqTail);
      if (head === tail) return count;
      while (head !== tail) {
        const word = (layout.cqesByte + (head & layout.cqMask) * CQE_BYTES) / 4;
        const slot = ring[word] as number;
        const result = this.#ringSigned[word + 2] as number;
        head = (head + 1) >>> 0;
        Atomics.store(ring, layout.cqHead, head);
        count += 1;
        this.counters.completions += 1;
        this.#complete(slot, result);
      }
    }
  }

  #complete(slot: number, result: number): void {
    const callback = this.#callbacks[slot];
    assert.ok(callback !== undefined, 'a completion for a free io_uring slot');
    this.#callbacks[slot] = undefined;
    this.#memory[slot] = undefined;
    this.#freeSlots.push(slot);
    this.#inflight -= 1;
    if (this.#inflight === 0 && !this.#closed) this.#poll.unref();
    try {
      callback(result);
    } catch (error) {
      rethrowLater(error);
    }
  }

  /** Waits in the kernel for completions; only for a ring about to be closed. */
  #waitAll(): void {
    while (this.#inflight - this.#deferred > 0) {
      if (this.#unsubmitted > 0) this.#flush();
      if (this.#inflight - this.#deferred === 0) break;
      const result = Number(this.#native.enter(SYS_IO_URING_ENTER, this.#fd, 0, 1,
        IORING_ENTER_GETEVENTS, null, 0));
      if (result < 0 && errnoName(this.#native.koffi.errno()) !== 'EINTR') break;
      this.#reapReady();
    }
  }

  /**
   * Completes what is in flight (waiting in the kernel, callbacks included), then releases
   * the ring; nothing can be prepared afterwards. Idempotent; not from inside a callback.
   */
  close(): void {
    if (this.#closed) return;
    assert.ok(!this.#reaping, 'IoUring.close from inside a completion callback');
    this.#waitAll();
    this.#closed = true;
    this.#poll.close();
    this.#unmapAll();
    this.#native.close(this.#fd);
  }
}

/**
 * Rethrows `error` on a later tick. Nothing may escape the poll callback: koffi's handle then
 * stops delivering, so a callback's throw must surface as an uncaught exception from outside it
 * while the rest of the batch completes.
 */
function rethrowLater(error: unknown): void {
  process.nextTick(() => {
    throw error;
  });
}

/**
 * V8 keeps the memory of typed arrays of at most 64 bytes inside its moving heap; the kernel
 * uses an entry's memory after the call returns, so such memory never goes to the ring.
 */
const IN_HEAP_BYTES_MAX = 64;

function outsideHeap(buffers: readonly Uint8Array[]): boolean {
  for (const buffer of buffers) {
    if (buffer.buffer.byteLength <= IN_HEAP_BYTES_MAX) return false;
  }
  return true;
}

/** Errno name of a negative completion result. */
export function uringErrorCode(result: number): string {
  assert.ok(result < 0);
  return errnoName(-result);
}
