// Owns the kcopyd client: its job lists, its one worker, its pages and its private dm-io
// client. A job's state is the list it is on:
//   pagesJobs    copy jobs waiting for buffer pages;
//   ioJobs       jobs that have pages (or write zeros, or offload the copy) and wait to issue
//                their I/O;
//   completeJobs jobs whose callback must run (sub-jobs report to their master from here);
//   callbackJobs jobs completed from outside the worker (prepared callbacks, zero-length jobs),
//                moved to the tail of completeJobs at the start of every pass, so producers
//                that keep adding cannot keep one pass running for ever.
// A pass drains them in this order, and the order matters: completing jobs gives pages back
// for the pages phase, and the pages phase feeds the I/O phase. Handlers answer 'done' (next
// job), 'later' (put the job back at the head and stop this list: backpressure) or 'error'
// (the job failed: it completes, and this list stops for this pass).
//
// The worker is woken by every push from a completion and by every submission. Wakes while a
// pass runs are coalesced into one more pass; two passes never run at once. Passes start from
// `setImmediate`, never inside a device completion or a caller's call, so every user callback
// of a client runs serially from its worker and never re-entrantly.

import assert from '../assert.js';
import { PAGE_SIZE } from '../constants.js';
import { dmIoClientCreate, dmIoClientDestroy, type DmIoClient } from '../core/client.js';
import { StateError } from '../errors.js';
import { allocAlignedPages } from '../memory/aligned.js';
import type { PageListNode } from '../memory/types.js';
import { KCOPYD_SPLIT_COUNT, KCOPYD_WRITE_ERR_ALL } from './constants.js';
import {
  completeCancelled, ioJobBlocked, issueIo, popIoJob, runCompleteJob, runPagesJob,
} from './job-handlers.js';
import { JobList } from './job-list.js';
import type { KcopydJob } from './job.js';
import { PageReserve, type KcopydPageSource } from './page-reserve.js';
import { throttleStart, type KcopydThrottle } from './throttle.js';

/** What a handler answers. */
export type HandlerResult = 'done' | 'later' | 'error';

/** The validated settings a client is built from. */
export interface KcopydClientSettings {
  readonly throttle: KcopydThrottle | null;
  readonly subJobSectors: number;
  readonly jobsMax: number;
  readonly freshSource: KcopydPageSource | null;
  readonly freshPagesMax: number;
  readonly ioClient: DmIoClient | null;
  readonly sleep: (ms: number) => Promise<void>;
}

/** A kcopyd client. Create with `dmKcopydClientCreate`, release with `dmKcopydClientDestroy`. */
export class KcopydClient {
  /** Sectors per sub-job: copies longer than this are split. */
  readonly subJobSectors: number;
  /** Most outstanding jobs (copies, zeroes, prepared callbacks). */
  readonly jobsMax: number;
  /** The shared throttle, or `null`. */
  readonly throttle: KcopydThrottle | null;
  /** @internal */ readonly pagesJobs: JobList<KcopydJob>;
  /** @internal */ readonly ioJobs: JobList<KcopydJob>;
  /** @internal */ readonly completeJobs: JobList<KcopydJob>;
  /** @internal */ readonly callbackJobs: JobList<KcopydJob>;
  /** @internal */ readonly pages: PageReserve;
  /** @internal */ readonly io: DmIoClient;
  /** @internal The circular one-page list of zeros that zero jobs write from. */
  readonly zeroList: PageListNode;
  /** @internal */ readonly sleep: (ms: number) => Promise<void>;
  readonly #ownsIo: boolean;
  #masterJobs = 0;
  #jobs = 0;
  #destroyed = false;
  #drained: Array<() => void> = [];
  #idleWaiters: Array<() => void> = [];
  #wakeRequested = false;
  #workerActive = false;
  #passes = 0;

  /** @internal Use `dmKcopydClientCreate`. */
  constructor(settings: KcopydClientSettings) {
    this.subJobSectors = settings.subJobSectors;
    this.jobsMax = settings.jobsMax;
    this.throttle = settings.throttle;
    this.sleep = settings.sleep;
    const capacity = settings.jobsMax * (1 + KCOPYD_SPLIT_COUNT);
    this.pagesJobs = new JobList('pagesJobs', capacity);
    this.ioJobs = new JobList('ioJobs', capacity);
    this.completeJobs = new JobList('completeJobs', capacity);
    this.callbackJobs = new JobList('callbackJobs', capacity);
    const reservedPages = Math.ceil((settings.subJobSectors * 512) / PAGE_SIZE);
    this.pages = new PageReserve(reservedPages, settings.freshSource, settings.freshPagesMax);
    this.#ownsIo = settings.ioClient === null;
    this.io = settings.ioClient ?? dmIoClientCreate();
    const zeroPage = allocAlignedPages(1)[0];
    assert.ok(zeroPage !== undefined);
    const zeroList: PageListNode = { page: zeroPage, next: null };
    zeroList.next = zeroList;
    this.zeroList = zeroList;
  }

  /** Jobs counted now: masters, sub-jobs in flight and prepared callbacks. */
  get jobs(): number {
    return this.#jobs;
  }

  /** Outstanding caller-visible jobs (copies, zeroes, prepared callbacks). */
  get masterJobs(): number {
    return this.#masterJobs;
  }

  /** Worker passes run so far (for tests and diagnostics). */
  get passes(): number {
    return this.#passes;
  }

  /** True once `dmKcopydClientDestroy` was called. */
  get destroyed(): boolean {
    return this.#destroyed;
  }

  /** @internal Throws `DMIO_ERR_KCOPYD_DESTROYED` once destroy began. */
  assertUsable(): void {
    if (this.#destroyed) {
      throw new StateError('DMIO_ERR_KCOPYD_DESTROYED', 'kcopyd client',
        'the client was destroyed');
    }
  }

  /** @internal Counts a new caller-visible job; the caller checked `jobsMax`. */
  admitMaster(): void {
    assert.ok(this.#masterJobs < this.jobsMax);
    this.#masterJobs += 1;
    this.#jobs += 1;
  }

  /** @internal Counts a sub-job dispatched by a split master. */
  countJob(): void {
    this.#jobs += 1;
  }

  /** @internal Queues an unsplit job or a sub-job on the list its phase starts on. */
  dispatch(job: KcopydJob): void {
    if (job.countSectors === 0) this.callbackJobs.pushTail(job);
    else if (job.zero || job.op === 'offload') this.ioJobs.pushTail(job);
    else this.pagesJobs.pushTail(job);
    this.wake();
  }

  /** @internal Asks for a worker pass; coalesced with any pass pending or running. */
  wake(): void {
    this.#wakeRequested = true;
    if (this.#workerActive) return;
    this.#workerActive = true;
    setImmediate(() => void this.#work());
  }

  /** @internal Ends one job's count, after its callback ran. */
  jobFinished(job: KcopydJob): void {
    assert.ok(this.#jobs > 0);
    this.#jobs -= 1;
    if (job.kind !== 'sub') {
      assert.ok(this.#masterJobs > 0);
      this.#masterJobs -= 1;
    }
    if (this.#jobs === 0 && this.#drained.length > 0) this.#finishDestroy();
  }

  /**
   * @internal Resolves once the worker has no pass running or requested: every job queued so
   * far has been taken as far as it can go without waiting for I/O in flight.
   */
  whenIdle(): Promise<void> {
    if (!this.#workerActive) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** @internal Stops new work and resolves once every job (prepared callbacks too) is done. */
  destroy(): Promise<void> {
    this.#destroyed = true;
    if (this.#jobs === 0 && !this.#workerActive) {
      return this.#teardown();
    }
    return new Promise((resolve, reject) => {
      this.#drained.push(() => this.#teardown().then(resolve, reject));
    });
  }

  async #work(): Promise<void> {
    try {
      while (this.#wakeRequested) {
        this.#wakeRequested = false;
        this.#passes += 1;
        this.callbackJobs.spliceTo(this.completeJobs);
        this.#processJobs(this.completeJobs, runCompleteJob);
        this.#processJobs(this.pagesJobs, runPagesJob);
        await this.#processIoJobs();
      }
    } finally {
      this.#workerActive = false;
    }
    const idleWaiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const waiter of idleWaiters) waiter();
    if (this.#jobs === 0 && this.#drained.length > 0) this.#finishDestroy();
  }

  #processJobs(
    list: JobList<KcopydJob>, handler: (kc: KcopydClient, job: KcopydJob) => HandlerResult,
  ): void {
    for (let job = list.popHead(); job !== null; job = list.popHead()) {
      const result = handler(this, job);
      if (result === 'done') continue;
      if (result === 'later') list.pushHead(job);
      else this.failJob(job);
      return;
    }
  }

  /**
   * The I/O list. A job whose master was cancelled (or has no destination left) completes
   * here without I/O; a WRITE_SEQ write whose master already failed fails here without I/O;
   * any other job passes the throttle gate (awaited only when the throttle makes it sleep) and
   * is issued. `issueIo` never answers 'later'.
   */
  async #processIoJobs(): Promise<void> {
    for (let job = popIoJob(this); job !== null; job = popIoJob(this)) {
      if (completeCancelled(this, job)) continue;
      if (ioJobBlocked(job)) {
        this.failJob(job);
        return;
      }
      if (this.throttle !== null) {
        const gate = throttleStart(this.throttle, this.sleep);
        if (gate !== null) await gate;
      }
      if (issueIo(this, job) === 'error') {
        this.failJob(job);
        return;
      }
    }
  }

  /** @internal Marks `job` failed in its current phase and completes it. */
  failJob(job: KcopydJob): void {
    if (job.op === 'read') job.readErr = true;
    else job.writeErr = KCOPYD_WRITE_ERR_ALL;
    this.completeJobs.pushTail(job);
    this.wake();
  }

  #finishDestroy(): void {
    if (this.#workerActive) return;
    const waiters = this.#drained;
    this.#drained = [];
    for (const waiter of waiters) waiter();
  }

  async #teardown(): Promise<void> {
    assert.equal(this.#jobs, 0);
    for (const list of [this.pagesJobs, this.ioJobs, this.completeJobs, this.callbackJobs]) {
      assert.equal(list.length, 0, `${list.name} is not empty at destroy`);
    }
    this.pages.assertAllReturned();
    if (this.#ownsIo) await dmIoClientDestroy(this.io);
  }
}
