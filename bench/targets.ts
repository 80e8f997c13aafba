// Owns the targets of issue 5, checked on the medians of this run. Each check names the two
// sides it divides; when a side did not run, the check says so and counts as neither met nor
// missed. Ratios read "above 1 means dmio is better" (see stats.ts) except the two that are
// plain quantities: workload 3's time ratio and workload 5's RSS.

import type { Series, TargetCheck, WorkloadId } from './model.js';
import { formatValue } from './recorder.js';
import { median, ratioDmioOver } from './stats.js';
import { randomCaseName } from './workloads/random-io.js';
import { SERVE_CASES, SERVE_DMIO_VARIANT } from './workloads/serve.js';
import { SPARSE_CASES, SPARSE_DMIO_VARIANT } from './workloads/sparse-copy.js';
import { DURABLE_DMIO_VARIANT, durableCaseName } from './workloads/durable-copy.js';
import { STACK_CASES, STACK_VARIANTS } from './workloads/stacks.js';

/**
 * Most peak RSS `dmio serve` may reach with 16 connections writing and reading (MiB): the
 * runtime, the pool of free request buffers (64 MiB) and the requests in flight of 16
 * nbdcopy connections (16 × 64 × 256 KiB = 256 MiB), with room to spare.
 */
export const SERVE_RSS_MIB_MAX = 512;

/** Looks series up by workload, case and variant. */
class SeriesIndex {
  readonly #all: readonly Series[];

  constructor(all: readonly Series[]) {
    this.#all = all;
  }

  find(workload: WorkloadId, caseName: string, variant: string): Series | null {
    return this.#all.find((series) => series.workload === workload &&
      series.caseName === caseName && series.variant === variant) ?? null;
  }

  /** The series with the best median among those `accept` lets through. */
  best(workload: WorkloadId, caseName: string, accept: (series: Series) => boolean): Series | null {
    let best: Series | null = null;
    for (const series of this.#all) {
      if (series.workload !== workload || series.caseName !== caseName || !accept(series)) continue;
      if (best === null ||
          (ratioDmioOver(median(series.samples), median(best.samples), series.unit) ?? 0) > 1) {
        best = series;
      }
    }
    return best;
  }

  cases(workload: WorkloadId): string[] {
    return [...new Set(this.#all.filter((s) => s.workload === workload).map((s) => s.caseName))];
  }
}

function describe(series: Series | null, fallback: string): string {
  return series === null ? `${fallback}: did not run` :
    `${series.variant} ${formatValue(median(series.samples), series.unit)}`;
}

function ratioCheck(
  workload: WorkloadId, name: string, dmio: Series | null, other: Series | null,
  threshold: number, otherName: string,
): TargetCheck {
  const value = dmio === null || other === null ? null :
    ratioDmioOver(median(dmio.samples), median(other.samples), dmio.unit);
  return {
    workload, name, value, comparison: '>=', threshold,
    met: value === null ? null : value >= threshold,
    detail: `${describe(dmio, 'dmio')} vs ${describe(other, otherName)}`,
  };
}

function plainCheck(
  workload: WorkloadId, name: string, value: number | null, comparison: '>=' | '<=',
  threshold: number, detail: string,
): TargetCheck {
  const met = value === null ? null : comparison === '>=' ? value >= threshold : value <= threshold;
  return { workload, name, value, comparison, threshold, met, detail };
}

const isDmio = (series: Series): boolean => series.role === 'dmio';
const isPeer = (series: Series): boolean => series.role === 'peer';

function randomIoTargets(index: SeriesIndex): TargetCheck[] {
  const checks: TargetCheck[] = [];
  for (const op of ['read', 'write'] as const) {
    const caseName = randomCaseName(op, 32, 'loop');
    if (!index.cases(1).includes(caseName)) continue;
    checks.push(ratioCheck(1, `best dmio / fio io_uring, ${caseName}`,
      index.best(1, caseName, isDmio), index.find(1, caseName, 'fio io_uring'), 0.9,
      'fio io_uring'));
  }
  for (const caseName of index.cases(1)) {
    for (const tag of ['def', 'uring']) {
      const raw = index.find(1, caseName, `node fs cb ${tag}`);
      if (raw === null) continue;
      const dmio = index.best(1, caseName, (s) => isDmio(s) && s.variant.endsWith(` ${tag}`));
      checks.push(ratioCheck(1, `dmio ${tag} / node fs cb ${tag}, ${caseName}`, dmio, raw, 1.0,
        `node fs cb ${tag}`));
    }
    const sync = index.find(1, caseName, 'node fs sync');
    if (sync !== null) {
      checks.push(ratioCheck(1, `dmio blocking / node fs sync, ${caseName}`,
        index.find(1, caseName, 'dmio blocking'), sync, 1.0, 'node fs sync'));
    }
  }
  return checks;
}

function copyTargets(index: SeriesIndex): TargetCheck[] {
  const checks: TargetCheck[] = [];
  const one = index.find(3, 'copy → 1 dest', 'dmio copy');
  const three = index.find(3, 'copy → 3 dests', 'dmio copy');
  if (index.cases(3).includes('copy → 1 dest')) {
    // The peers are programs (dd, cp, qemu-img, nbdcopy), timed like `dmio copy` by
    // the wall clock; the in-process Node loop is a reference row, not a target.
    checks.push(ratioCheck(3, 'dmio copy / fastest program peer, copy → 1 dest', one,
      index.best(3, 'copy → 1 dest', (s) => isPeer(s) && s.timer === 'wall'), 1.0,
      'fastest program peer'));
  }
  if (index.cases(3).includes('copy → 3 dests')) {
    const value = one === null || three === null ? null :
      median(one.samples) / median(three.samples);
    checks.push(plainCheck(3, 'dmio copy: time for 3 dests / time for 1 dest', value, '<=', 1.5,
      `${describe(one, 'dmio copy → 1')} vs ${describe(three, 'dmio copy → 3')} ` +
      '(source MiB/s)'));
  }
  checks.push(...sparseCopyTargets(index), ...durableCopyTargets(index));
  return checks;
}

/**
 * Issue 17's durable rows: to 1 destination dmio at least as fast as the fastest peer; to 3,
 * dmio's time at most the fastest peer's for the same three copies (the same ratio, >= 1).
 */
function durableCopyTargets(index: SeriesIndex): TargetCheck[] {
  const checks: TargetCheck[] = [];
  for (const targetCount of [1, 3]) {
    const caseName = durableCaseName(targetCount);
    if (!index.cases(3).includes(caseName)) continue;
    checks.push(ratioCheck(3, `dmio copy / fastest peer, ${caseName}`,
      index.find(3, caseName, DURABLE_DMIO_VARIANT), index.best(3, caseName, isPeer), 1.0,
      'fastest peer'));
  }
  return checks;
}

/** Issue 17's sparse image row: dmio at least as fast as nbdcopy and cp, allocating as little. */
function sparseCopyTargets(index: SeriesIndex): TargetCheck[] {
  const checks: TargetCheck[] = [];
  const isHolePeer = (series: Series): boolean => isPeer(series) &&
    (series.variant === 'nbdcopy' || series.variant.startsWith('cp '));
  if (index.cases(3).includes(SPARSE_CASES.time)) {
    checks.push(ratioCheck(3, `dmio copy / faster of nbdcopy and cp, ${SPARSE_CASES.time}`,
      index.find(3, SPARSE_CASES.time, SPARSE_DMIO_VARIANT),
      index.best(3, SPARSE_CASES.time, isHolePeer), 1.0, 'faster of nbdcopy and cp'));
  }
  const dmio = index.find(3, SPARSE_CASES.allocated, SPARSE_DMIO_VARIANT);
  const peers = index.cases(3).includes(SPARSE_CASES.allocated) ?
    ['nbdcopy', 'cp --sparse=always'].map((variant) => index.find(3, SPARSE_CASES.allocated, variant))
      .filter((series): series is Series => series !== null) : [];
  if (dmio !== null && peers.length > 0) {
    const least = Math.min(...peers.map((series) => median(series.samples)));
    checks.push(plainCheck(3, 'sparse image: MiB dmio allocates beyond the least of nbdcopy and cp',
      median(dmio.samples) - least, '<=', 1,
      `${describe(dmio, 'dmio copy')} vs ${peers.map((series) => describe(series, '')).join(', ')}`));
  }
  return checks;
}

function serveTargets(index: SeriesIndex): TargetCheck[] {
  const checks: TargetCheck[] = [];
  for (const caseName of [SERVE_CASES.write, SERVE_CASES.read]) {
    if (!index.cases(6).includes(caseName)) continue;
    checks.push(ratioCheck(6, `dmio serve / faster peer, ${caseName}`,
      index.find(6, caseName, SERVE_DMIO_VARIANT), index.best(6, caseName, isPeer), 0.9,
      'faster peer'));
  }
  const rss = index.find(6, SERVE_CASES.rss, SERVE_DMIO_VARIANT);
  if (rss !== null) {
    checks.push(plainCheck(6, SERVE_CASES.rss, median(rss.samples), '<=', SERVE_RSS_MIB_MAX,
      describe(rss, SERVE_DMIO_VARIANT)));
  }
  return checks;
}

/**
 * Issue 19's rows: linear and mirror against the raw file served the same way (linear on
 * connection threads, as files are; a mirror on the event loop, whose state has one owner),
 * the writecache against its origin.
 */
function stackTargets(index: SeriesIndex): TargetCheck[] {
  const checks: TargetCheck[] = [];
  for (const caseName of [STACK_CASES.write, STACK_CASES.read]) {
    if (!index.cases(7).includes(caseName)) continue;
    // Each stack against the raw file served the same way (workloads/stacks.ts).
    checks.push(ratioCheck(7, `linear / raw file on threads, ${caseName}`,
      index.find(7, caseName, STACK_VARIANTS.linear),
      index.find(7, caseName, STACK_VARIANTS.rawThreaded), 0.9, 'raw file'));
    checks.push(ratioCheck(7, `2-leg mirror / raw file on the event loop, ${caseName}`,
      index.find(7, caseName, STACK_VARIANTS.mirror),
      index.find(7, caseName, STACK_VARIANTS.raw), 0.8, 'raw file'));
  }
  if (index.cases(7).includes(STACK_CASES.writecache)) {
    checks.push(ratioCheck(7, `writecache / origin alone, ${STACK_CASES.writecache}`,
      index.find(7, STACK_CASES.writecache, STACK_VARIANTS.writecache),
      index.find(7, STACK_CASES.writecache, STACK_VARIANTS.origin), 5, 'origin alone'));
  }
  return checks;
}

function rssTargets(index: SeriesIndex): TargetCheck[] {
  const sizes = index.cases(5).map((caseName) => index.find(5, caseName, 'dmio copy'))
    .filter((series): series is Series => series !== null);
  const checks = sizes.map((series) => plainCheck(5, `peak RSS, ${series.caseName}`,
    median(series.samples), '<=', 150, describe(series, 'dmio copy')));
  const first = sizes[0];
  const last = sizes[sizes.length - 1];
  if (first !== undefined && last !== undefined && first !== last) {
    checks.push(plainCheck(5, `RSS growth ${last.caseName} / ${first.caseName}`,
      median(last.samples) / median(first.samples), '<=', 1.1,
      `${describe(last, 'large')} vs ${describe(first, 'small')}`));
  }
  return checks;
}

/** Every target of issue 5 that this run has data for. */
export function checkTargets(all: readonly Series[]): TargetCheck[] {
  const index = new SeriesIndex(all);
  const checks = randomIoTargets(index);
  for (const caseName of index.cases(2)) {
    checks.push(ratioCheck(2, `best dmio / best fio, ${caseName}`, index.best(2, caseName, isDmio),
      index.best(2, caseName, (s) => s.variant.startsWith('fio')), 0.9, 'fio'));
  }
  checks.push(...copyTargets(index));
  for (const caseName of index.cases(4)) {
    checks.push(ratioCheck(4, `best dmio / nbdcopy, ${caseName}`, index.best(4, caseName, isDmio),
      index.find(4, caseName, 'nbdcopy'), 0.8, 'nbdcopy'));
    // Issue 17: the command against the command, both timed by the wall clock.
    checks.push(ratioCheck(4, `dmio copy / nbdcopy, ${caseName}`,
      index.find(4, caseName, 'dmio copy'), index.find(4, caseName, 'nbdcopy'), 0.9, 'nbdcopy'));
  }
  checks.push(...rssTargets(index));
  checks.push(...serveTargets(index));
  checks.push(...stackTargets(index));
  return checks;
}
