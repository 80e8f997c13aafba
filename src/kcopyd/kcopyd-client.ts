// Owns the kcopyd state machine: a client's job lists, its one worker, its pages, its private
// dm-io client, and every move of a job from one list to another (no other file touches a
// list). A job's state is the list it is on:
//   pagesJobs    copy jobs waiting for buffer pages;
//   ioJobs       jobs that have pages (or write zeros, or offload the copy) and wait to issue
//                their I/O;
//   completeJobs jobs whose completion must run (a sub-job's completion takes its next chunk);
//   callbackJobs jobs completed from outside the worker (fired prepared callbacks, zero-length
//                jobs) and masters whose flush the dm-io client refused as busy, moved to the
//                tail of completeJobs at the start of every pass, so producers that keep
//                adding cannot keep one pass running for ever.
// A job on no list is in flight (dm-io, an offload, a flush) or waiting for its slot's turn.
// A pass drains the lists in this order, and the order matters: completing jobs gives pages
// back for the pages phase, and the pages phase feeds the I/O phase. A job that cannot go on
// (no pages; WRITE_SEQ out of order) stays in place and its list stops for this pass.
//
// A busy dm-io client (DMIO_ERR_CLIENT_BUSY: a shared `ioClient` whose queue other users
// filled) is back-pressure, not an error (busy-retry.ts): the job whose read or write it
// refused goes back to the head of ioJobs, its throttle count and WRITE_SEQ turn given back,
// and that list stops for this pass; a refused flush waits on callbackJobs. The worker retries
// on its next wake: any completion of kcopyd's own, or a timer whose wait doubles per refusal
// up to KCOPYD_BUSY_RETRY_MS_MAX, one timer at a time. Nothing fails and nothing spins: a job
// waits until the client takes its I/O, or until it is cancelled.
//
// The worker is woken by every push from a completion and by every submission. Wakes while a
// pass runs are coalesced into one more pass; two passes never run at once. Passes start from
// `setImmediate`, never inside a device completion or a caller's call, so every user callback
// of a client runs serially from its worker and never re-entrantly.

import assert from '../assert.js';
import { PAGE_SIZE, SECTOR_SIZE } from '../constants.js';
import { dmIoClientCreate, dmIoClientDestroy, type DmIoClient } from '../core/client.js';
import type { DmIoResult } from '../core/io-tracker.js';
import type { DmIoPlan } from '../core/request.js';
import type { BlockDevice, DeviceExtent } from '../devices/block-device.js';
import { StateError } from '../errors.js';
import { allocAlignedPages } from '../memory/aligned.js';
import type { PageListMemory, PageListNode } from '../memory/types.js';
import { divCeil } from '../units.js';
import { callUser } from '../call-user.js';
import { nextBusyRetryMs, trySubmitPlan } from './busy-retry.js';
import { attachPages, chunkPages, readPlan, recordIoErrors, writePlan } from './chunk-io.js';
import { KCOPYD_SPLIT_COUNT, KCOPYD_WRITE_ERR_ALL } from './constants.js';
import { destinationsToFlush, flushPlan, recordFlush } from './flush.js';
import { JobList } from './job-list.js';
import type { KcopydJob } from './job.js';
import { mayLeaveIoList, restoreIoOrder, writeSeqBlocked } from './io-order.js';
import { issueOffload, offloadOutcome } from './offload.js';
import { creditWrites, dropFailedDests, jobCancelled, settleMaster } from './outcome.js';
import {
  cacheExtents, classifyChunk, endSparseChunk, extentRuns, foldStepResult, holesReadFromPages,
  looksUpExtents, nextDataRun, readRunPlan, sparseSteps, stepPlan, stepsResult, zeroFillHoles,
  zeroRuns,
} from './sparse.js';
import { PageReserve, type KcopydPageSource } from './page-reserve.js';
import { createSlots, foldChunk, lastSlotRetired, takeChunk } from './split.js';
import { throttleStart, type KcopydThrottle } from './throttle.js';

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
  readonly #pagesJobs: JobList<KcopydJob>;
  readonly #ioJobs: JobList<KcopydJob>;
  readonly #completeJobs: JobList<KcopydJob>;
  readonly #callbackJobs: JobList<KcopydJob>;
  readonly #pages: PageReserve;
  readonly #io: DmIoClient;
  readonly #ownsIo: boolean;
  /** A circular list of one zero page: zero jobs write from it, whatever their length. */
  readonly #zeroMemory: PageListMemory;
  readonly #sleep: (ms: number) => Promise<void>;
  #masterJobs = 0;
  #jobs = 0;
  #destroyed = false;
  #drained: Array<() => void> = [];
  #idleWaiters: Array<() => void> = [];
  #wakeRequested = false;
  #workerActive = false;
  #passes = 0;
  /** The wait before the next retry on a busy dm-io client; 0 once the client took I/O. */
  #busyRetryMs = 0;
  #busyRetryArmed = false;

  /** @internal Use `dmKcopydClientCreate`. */
  constructor(settings: KcopydClientSettings) {
    this.subJobSectors = settings.subJobSectors;
    this.jobsMax = settings.jobsMax;
    this.throttle = settings.throttle;
    this.#sleep = settings.sleep;
    const capacity = settings.jobsMax * (1 + KCOPYD_SPLIT_COUNT);
    this.#pagesJobs = new JobList('pagesJobs', capacity);
    this.#ioJobs = new JobList('ioJobs', capacity);
    this.#completeJobs = new JobList('completeJobs', capacity);
    this.#callbackJobs = new JobList('callbackJobs', capacity);
    const reservedPages = divCeil(settings.subJobSectors * SECTOR_SIZE, PAGE_SIZE);
    this.#pages = new PageReserve(reservedPages, settings.freshSource, settings.freshPagesMax);
    this.#ownsIo = settings.ioClient === null;
    this.#io = settings.ioClient ?? dmIoClientCreate();
    const zeroPage = allocAlignedPages(1)[0];
    assert.ok(zeroPage !== undefined);
    const zeroList: PageListNode = { page: zeroPage, next: null };
    zeroList.next = zeroList;
    this.#zeroMemory = { type: 'page-list', list: zeroList, offset: 0 };
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

  /** Buffer pages held by jobs now, from the reserve or the fresh source (diagnostics). */
  get pagesOut(): number {
    return this.#pages.pagesOut;
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

  /**
   * @internal Starts a validated copy or zero master (the caller checked `jobsMax`): counts
   * it, watches its signal, and queues it whole or as the first chunks of its slots.
   */
  submitJob(master: KcopydJob, signal: AbortSignal | null): void {
    assert.ok(master.kind === 'master' && master.list === null);
    this.#admit();
    if (signal !== null) this.#watchSignal(master, signal);
    if (master.countSectors <= this.subJobSectors) {
      this.#enqueue(master);
      return;
    }
    for (const slot of createSlots(master, this.subJobSectors)) this.#nextChunk(slot);
  }

  /** @internal Counts a prepared callback; firing it queues it for the worker. */
  prepareCallback(token: KcopydJob): void {
    assert.ok(token.kind === 'callback');
    this.#admit();
    token.fire = (readErr, writeErr) => {
      token.readErr = readErr;
      token.writeErr = writeErr;
      this.#callbackJobs.pushTail(token);
      this.#wake();
    };
  }

  /**
   * @internal Flushes `devices` at once (stream copies end with it); never rejects. While the
   * dm-io client is busy it retries after waits that double up to KCOPYD_BUSY_RETRY_MS_MAX.
   */
  async flushDevices(devices: readonly BlockDevice[]): Promise<DmIoResult> {
    for (let waitMs = nextBusyRetryMs(0); ; waitMs = nextBusyRetryMs(waitMs)) {
      const result = await new Promise<DmIoResult | null>((resolve) => {
        if (!trySubmitPlan(flushPlan(devices, this.#io), resolve)) resolve(null);
      });
      if (result !== null) return result;
      await this.#sleep(waitMs);
    }
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
    if (this.#jobs === 0 && !this.#workerActive) return this.#teardown();
    return new Promise((resolve, reject) => {
      this.#drained.push(() => this.#teardown().then(resolve, reject));
    });
  }

  #admit(): void {
    assert.ok(this.#masterJobs < this.jobsMax);
    this.#masterJobs += 1;
    this.#jobs += 1;
  }

  /**
   * Queues an unsplit job or a slot's chunk on the list its first phase is. A sparse copy whose
   * source reports extents looks the chunk up first (`map`, on ioJobs).
   */
  #enqueue(job: KcopydJob): void {
    if (job.countSectors === 0) {
      this.#callbackJobs.pushTail(job);
    } else if (looksUpExtents(job)) {
      job.afterMap = job.op;
      job.op = 'map';
      this.#ioJobs.pushTail(job);
    } else if (job.zero || job.op === 'offload') {
      this.#ioJobs.pushTail(job);
    } else {
      this.#pagesJobs.pushTail(job);
    }
    this.#wake();
  }

  /** A slot takes its master's next chunk, or retires; the last to retire ends the master. */
  #nextChunk(slot: KcopydJob): void {
    if (takeChunk(slot, this.subJobSectors)) {
      this.#jobs += 1;
      this.#enqueue(slot);
    } else if (lastSlotRetired(slot.master)) {
      this.#complete(slot.master);
    }
  }

  /** Queues `job` for its completion in the worker's next pass. */
  #complete(job: KcopydJob): void {
    this.#completeJobs.pushTail(job);
    this.#wake();
  }

  /** Marks `job` failed in its current phase and completes it. */
  #fail(job: KcopydJob): void {
    if (job.op === 'read') job.readErr = true;
    else job.writeErr = KCOPYD_WRITE_ERR_ALL;
    this.#complete(job);
  }

  #wake(): void {
    this.#wakeRequested = true;
    if (this.#workerActive) return;
    this.#workerActive = true;
    setImmediate(() => void this.#work());
  }

  async #work(): Promise<void> {
    try {
      while (this.#wakeRequested) {
        this.#wakeRequested = false;
        this.#passes += 1;
        this.#callbackJobs.spliceTo(this.#completeJobs);
        for (let job = this.#completeJobs.popHead(); job !== null;
          job = this.#completeJobs.popHead()) {
          this.#runComplete(job);
        }
        this.#runPagesJobs();
        await this.#runIoJobs();
      }
    } finally {
      this.#workerActive = false;
    }
    const idleWaiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const waiter of idleWaiters) waiter();
    if (this.#jobs === 0 && this.#drained.length > 0) this.#finishDestroy();
  }

  /**
   * Completes `job`: pages back; a master made with `flush: true` flushes first (it comes back
   * here when the flush is over); progress; a master is settled and its caller's callback runs;
   * a sub-job's slot takes its next chunk. Then the job is uncounted.
   */
  #runComplete(job: KcopydJob): void {
    job.chunkShown = false;
    endSparseChunk(job);
    if (job.grant !== null) {
      this.#pages.give(job.grant);
      job.grant = null;
    }
    if (job.kind === 'master' && this.#startFlush(job)) return;
    this.#reportProgress(job);
    if (job.kind === 'sub') {
      foldChunk(job);
      this.#nextChunk(job);
    } else {
      if (job.kind === 'master') settleMaster(job);
      const fn = job.fn;
      if (fn !== null) callUser(() => fn(job.readErr, job.writeErr, job.context, job.result()));
    }
    this.#jobFinished(job);
  }

  #reportProgress(job: KcopydJob): void {
    const master = job.master;
    if (job.kind === 'callback' || master.onProgress === null) return;
    if (job.kind === 'master' && master.slots !== null) return;
    master.doneSectors += job.countSectors;
    if (job.countSectors === 0 || master.aborted) return;
    try {
      master.onProgress(master.doneSectors * SECTOR_SIZE, master.countSectors * SECTOR_SIZE);
    } catch (error) {
      this.#abort(master, error);
    }
  }

  /**
   * Starts the master's flush when it asked for one and wrote something; true when it did or
   * when the busy dm-io client refused it: the master then waits on callbackJobs, back among
   * the completions of a later pass, and tries again.
   */
  #startFlush(master: KcopydJob): boolean {
    const flushed = destinationsToFlush(master);
    if (flushed.length === 0) return false;
    master.flushState = 'flushing';
    const devices = flushed.map((index) => master.dests[index]!.device);
    const issued = this.#trySubmit(flushPlan(devices, this.#io), (result) => {
      recordFlush(master, flushed, result);
      this.#complete(master);
    });
    if (!issued) {
      master.flushState = 'idle';
      this.#callbackJobs.pushTail(master);
    }
    return true;
  }

  /** Gives pages to the jobs waiting for them, in order, until the pages run out. */
  #runPagesJobs(): void {
    for (let job = this.#pagesJobs.head; job !== null; job = this.#pagesJobs.head) {
      if (jobCancelled(job)) {
        this.#pagesJobs.remove(job);
        this.#complete(job);
        continue;
      }
      const grant = this.#pages.take(chunkPages(job));
      if (grant === null) return;
      this.#pagesJobs.remove(job);
      attachPages(job, grant);
      // A mixed sparse chunk reads only its data runs; its holes are zeroed in the pages only
      // for what reads them there (a destination writing holes as data, onChunkRead).
      if (job.knownRuns !== null && holesReadFromPages(job)) zeroFillHoles(job, job.knownRuns);
      this.#ioJobs.pushTail(job);
    }
  }

  /**
   * Issues the I/O of the jobs ready for it. A job whose master was cancelled (or has no
   * destination left) completes without I/O; a WRITE_SEQ write whose master already failed
   * fails without I/O, and the list stops for this pass; any other job passes the throttle
   * gate (awaited only when the throttle makes it sleep) and is issued. A job the busy dm-io
   * client refused goes back first in line, and the list stops for this pass.
   */
  async #runIoJobs(): Promise<void> {
    for (let job = this.#takeIoJob(); job !== null; job = this.#takeIoJob()) {
      if (jobCancelled(job)) {
        this.#complete(job);
        continue;
      }
      if (writeSeqBlocked(job)) {
        this.#fail(job);
        return;
      }
      if (this.throttle !== null) {
        const gate = throttleStart(this.throttle, this.#sleep);
        if (gate !== null) await gate;
      }
      if (!this.#issue(job)) {
        restoreIoOrder(job);
        this.#ioJobs.pushHead(job);
        return;
      }
    }
  }

  /**
   * Takes the next job that may be issued off ioJobs, in list order (`mayLeaveIoList` says
   * which may: io-order.ts). An offloaded chunk whose master turned offload off meanwhile goes
   * to pagesJobs to be read instead, and the scan goes on.
   */
  #takeIoJob(): KcopydJob | null {
    let next: KcopydJob | null;
    for (let job = this.#ioJobs.head; job !== null; job = next) {
      next = job.listNext;
      if (!mayLeaveIoList(job)) continue;
      this.#ioJobs.remove(job);
      if (job.op === 'offload' && job.master.op !== 'offload') {
        job.op = 'read';
        this.#pagesJobs.pushTail(job);
        this.#wake();
        continue;
      }
      return job;
    }
    return null;
  }

  /**
   * Issues the job's read, write or offload; the throttle counted it as started. A data write
   * first shows its chunk to onChunkRead (once, even when retried), which may cancel the job:
   * it then completes without I/O. Returns false, with nothing issued and the throttle's count
   * given back, when the busy dm-io client refused the read or write; else true.
   */
  #issue(job: KcopydJob): boolean {
    if (job.op === 'map') {
      this.#lookUpChunk(job);
      return true;
    }
    if (job.op === 'write' && !job.zero && !job.chunkShown) {
      job.chunkShown = true;
      this.#reportChunkRead(job);
    }
    if (jobCancelled(job)) {
      this.throttle?.ioFinished();
      if (job.op === 'offload') job.master.offloadsInFlight -= 1;
      this.#complete(job);
      return true;
    }
    if (job.op === 'offload') {
      dropFailedDests(job);
      issueOffload(job, (failed, unsupported) => this.#offloadDone(job, failed, unsupported));
      return true;
    }
    job.ioDone ??= (result) => this.#ioDone(job, result);
    if (job.op !== 'read') dropFailedDests(job);
    const step = job.op === 'write' ? job.steps?.[job.stepIndex] : undefined;
    const readRun = job.op === 'read' ? job.knownRuns?.[job.readRunIndex] : undefined;
    const plan = readRun !== undefined ? readRunPlan(job, readRun, this.#io) :
      job.op === 'read' ? readPlan(job, this.#io) :
        step !== undefined ? stepPlan(job, step, this.#io, this.#zeroMemory) :
          writePlan(job, this.#io, this.#zeroMemory);
    if (this.#trySubmit(plan, job.ioDone)) return true;
    this.throttle?.ioFinished();
    return false;
  }

  /**
   * Submits `plan` to the dm-io client; false, nothing submitted, when the client is busy: a
   * retry is then due (`#retryWhenRoom`).
   */
  #trySubmit(plan: DmIoPlan, complete: (result: DmIoResult) => void): boolean {
    if (trySubmitPlan(plan, complete)) {
      this.#busyRetryMs = 0;
      return true;
    }
    this.#retryWhenRoom();
    return false;
  }

  /**
   * Makes sure the worker runs again after the busy client refused I/O. A completion of
   * kcopyd's own I/O wakes it anyway; for a client that only other users fill, a timer wakes it
   * after a wait that doubles with every refusal (nextBusyRetryMs) and starts over once the
   * client takes I/O. One timer at a time; it wakes nothing once every job is gone.
   */
  #retryWhenRoom(): void {
    this.#busyRetryMs = nextBusyRetryMs(this.#busyRetryMs);
    if (this.#busyRetryArmed) return;
    this.#busyRetryArmed = true;
    const retry = (): void => {
      this.#busyRetryArmed = false;
      if (this.#jobs > 0) this.#wake();
    };
    void this.#sleep(this.#busyRetryMs).then(retry, retry);
  }

  /**
   * Hands the chunk's data to onChunkRead (a chunk never read because it is a hole shows the
   * zero page in each of its pages); a throw cancels the job (this chunk is not written).
   */
  #reportChunkRead(job: KcopydJob): void {
    const master = job.master;
    const onChunkRead = master.onChunkRead;
    const pages = job.neverRead ?
      new Array<Uint8Array>(chunkPages(job)).fill(this.#zeroMemory.list.page) : job.grant?.pages;
    if (onChunkRead === null || pages === undefined || jobCancelled(job)) return;
    try {
      onChunkRead(job.sourceSector, job.countSectors, pages);
    } catch (error) {
      this.#abort(master, error);
    }
  }

  /**
   * dm-io's completion of a job's read or write: records errors and written bytes, then moves
   * the job on. A failed read without ignoreError completes the job, so nothing is written for
   * that chunk; a read that worked (or whose error is ignored) queues the write.
   */
  #ioDone(job: KcopydJob, stepOrChunk: DmIoResult): void {
    this.throttle?.ioFinished();
    let result = stepOrChunk;
    const step = job.op === 'write' ? job.steps?.[job.stepIndex] : undefined;
    if (step !== undefined && job.steps !== null) {
      foldStepResult(job, step, result);
      job.stepIndex += 1;
      if (job.stepIndex < job.steps.length) {
        this.#ioJobs.pushTail(job);
        this.#wake();
        return;
      }
      result = stepsResult(job);
    }
    if (job.op !== 'read') creditWrites(job, result.errorBits);
    if (result.errorBits !== 0n) recordIoErrors(job, result);
    if (job.op === 'read' && (result.errorBits === 0n || job.ignoreError)) {
      if (job.knownRuns !== null && nextDataRun(job)) {
        this.#ioJobs.pushTail(job);
        this.#wake();
        return;
      }
      job.op = 'write';
      this.#planSparseWrite(job);
      if (job.steps?.length === 0) {
        this.#holeWithoutWrites(job);
        return;
      }
      this.#ioJobs.pushTail(job);
      this.#wake();
      return;
    }
    this.#complete(job);
  }

  /**
   * A sparse chunk that is all hole for destinations that all skip holes: shown to
   * onChunkRead, credited as written (the destinations read zeros there), and complete.
   */
  #holeWithoutWrites(job: KcopydJob): void {
    if (!job.chunkShown) {
      job.chunkShown = true;
      this.#reportChunkRead(job);
    }
    dropFailedDests(job);
    if (!jobCancelled(job)) creditWrites(job, 0n);
    this.#complete(job);
  }

  /** A sparse copy's chunk that was read: its write steps when it holds zero blocks. */
  #planSparseWrite(job: KcopydJob): void {
    const sparse = job.master.sparse;
    if (sparse === null || job.grant === null) return;
    job.steps = sparseSteps(sparse, job.countSectors,
      zeroRuns(job.grant.pages, job.countSectors, sparse.blockBytes, job.knownRuns), false);
  }

  /**
   * A sparse copy's chunk before it is read: classified from the master's cached extents of
   * the source, or from a new bounded query from the chunk to the job's end. A query that
   * fails turns lookups off for the job: its chunks are read as without extents.
   */
  #lookUpChunk(job: KcopydJob): void {
    const master = job.master;
    const known = classifyChunk(master.extentCache, job.sourceSector, job.countSectors);
    const source = job.sourceDevice;
    if (known !== null || master.extentsOff || source?.extents === undefined) {
      this.throttle?.ioFinished();
      this.#afterLookUp(job, known ?? 'data');
      return;
    }
    if (master.extentWaiters !== null) {
      // One query per job at a time: its answer usually covers this chunk too.
      this.throttle?.ioFinished();
      master.extentWaiters.push(job);
      return;
    }
    master.extentWaiters = [];
    const endSector = master.sourceSector + master.countSectors;
    let settled = false;
    const answered = (error: unknown, extents: readonly DeviceExtent[]): void => {
      // A device that answers twice (or throws after answering) broke its contract: once only.
      if (settled) return;
      settled = true;
      this.throttle?.ioFinished();
      const cache = error === null ? cacheExtents(job.sourceSector, extents) : null;
      if (cache === null) master.extentsOff = true;
      else master.extentCache = cache;
      const waiters = master.extentWaiters ?? [];
      master.extentWaiters = null;
      this.#afterLookUp(job, master.extentsOff ? 'data' :
        classifyChunk(master.extentCache, job.sourceSector, job.countSectors) ?? 'mixed');
      for (const waiting of waiters) this.#afterWaiting(waiting);
    };
    try {
      source.extents(job.sourceSector, endSector - job.sourceSector, answered);
    } catch (error) {
      // A device that throws broke its contract; the chunk is read as without extents.
      setImmediate(answered, error, []);
    }
  }

  /** A chunk that waited for another chunk's query: decided now, or looked up again. */
  #afterWaiting(job: KcopydJob): void {
    const master = job.master;
    const known = classifyChunk(master.extentCache, job.sourceSector, job.countSectors);
    if (known !== null || master.extentsOff) {
      this.#afterLookUp(job, known ?? 'data');
      return;
    }
    this.#ioJobs.pushTail(job);
    this.#wake();
  }

  /**
   * Moves a looked-up chunk on: data goes the way it came (read, or offload); a mixed chunk is
   * read so its zero blocks are found; a hole is written in steps from no pages, or, when
   * every destination skips holes, is complete at once.
   */
  #afterLookUp(job: KcopydJob, kind: 'hole' | 'data' | 'mixed'): void {
    const sparse = job.master.sparse;
    if (kind === 'hole' && sparse !== null) {
      job.op = 'write';
      job.neverRead = true;
      dropFailedDests(job);
      job.steps = sparseSteps(sparse, job.countSectors, null, true);
      if (job.steps === null || job.steps.length === 0) {
        this.#holeWithoutWrites(job);
        return;
      }
      this.#ioJobs.pushTail(job);
    } else {
      job.op = kind === 'mixed' ? 'read' : job.afterMap;
      const cache = job.master.extentCache;
      if (kind === 'mixed' && cache !== null &&
          classifyChunk(cache, job.sourceSector, job.countSectors) === 'mixed') {
        job.knownRuns = extentRuns(cache, job.sourceSector, job.countSectors,
          job.master.sparse?.blockSectors ?? 1);
        job.readRunIndex = -1;
        nextDataRun(job);
      }
      if (job.op === 'offload') this.#ioJobs.pushTail(job);
      else this.#pagesJobs.pushTail(job);
    }
    this.#wake();
  }

  #offloadDone(job: KcopydJob, failed: boolean, unsupported: boolean): void {
    this.throttle?.ioFinished();
    if (offloadOutcome(job, failed, unsupported) === 'written') {
      this.#complete(job);
      return;
    }
    this.#pagesJobs.pushTail(job);
    this.#wake();
  }

  /** Cancels `master` when `signal` fires, until the job completes. */
  #watchSignal(master: KcopydJob, signal: AbortSignal): void {
    const listener = (): void => this.#abort(master, signal.reason);
    master.signal = signal;
    master.abortListener = listener;
    signal.addEventListener('abort', listener, { once: true });
  }

  /**
   * Cancels `master` with `reason` (the signal's reason, or what a callback threw), unless it is
   * already cancelled, queued for its completion or flushing after its last write: then the job
   * is over. It takes effect in the worker's next pass: queued chunks complete without I/O, no
   * new chunk starts.
   */
  #abort(master: KcopydJob, reason: unknown): void {
    if (master.aborted || master.list === this.#completeJobs ||
        master.list === this.#callbackJobs || master.flushState !== 'idle') {
      return;
    }
    master.aborted = true;
    master.abortReason = reason;
    this.#wake();
  }

  /** Ends one job's count, after its completion ran. */
  #jobFinished(job: KcopydJob): void {
    assert.ok(this.#jobs > 0);
    this.#jobs -= 1;
    if (job.kind !== 'sub') {
      assert.ok(this.#masterJobs > 0);
      this.#masterJobs -= 1;
    }
    if (this.#jobs === 0 && this.#drained.length > 0) this.#finishDestroy();
  }

  #finishDestroy(): void {
    if (this.#workerActive) return;
    const waiters = this.#drained;
    this.#drained = [];
    for (const waiter of waiters) waiter();
  }

  async #teardown(): Promise<void> {
    assert.equal(this.#jobs, 0);
    for (const list of [this.#pagesJobs, this.#ioJobs, this.#completeJobs, this.#callbackJobs]) {
      assert.equal(list.length, 0, `${list.name} is not empty at destroy`);
    }
    this.#pages.assertAllReturned();
    if (this.#ownsIo) await dmIoClientDestroy(this.#io);
  }
}
