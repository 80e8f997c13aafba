// Owns the output of a run: one Markdown table of medians with a ratio column (the best dmio
// variant of the same case divided by each row, above 1 meaning dmio is better), the list of
// skipped variants with reasons, the target checks, and the JSON file with every sample, the
// options, the peers and the machine. The Markdown is what docs/performance.md quotes.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { BenchOptions } from './options.js';
import type { PeerReport } from './peers.js';
import type { Series, Skip, TargetCheck } from './model.js';
import { formatValue } from './recorder.js';
import { median, range, ratioDmioOver } from './stats.js';

/** The machine a run happened on, with its load before and after. */
export interface MachineInfo {
  readonly cpuModel: string;
  readonly cpuCount: number;
  readonly memoryGiB: number;
  readonly kernel: string;
  readonly node: string;
  readonly loadAverageStart: readonly number[];
  loadAverageEnd: readonly number[];
}

/** Describes this machine now. */
export function describeMachine(): MachineInfo {
  return {
    cpuModel: os.cpus()[0]?.model ?? 'unknown', cpuCount: os.cpus().length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30), kernel: os.release(), node: process.version,
    loadAverageStart: os.loadavg().map((load) => Number(load.toFixed(2))), loadAverageEnd: [],
  };
}

function bestDmio(all: readonly Series[], series: Series): Series | null {
  let best: Series | null = null;
  for (const other of all) {
    if (other.workload !== series.workload || other.caseName !== series.caseName) continue;
    if (other.role !== 'dmio') continue;
    if (best === null ||
        (ratioDmioOver(median(other.samples), median(best.samples), other.unit) ?? 0) > 1) {
      best = other;
    }
  }
  return best;
}

/** A value without its unit, for ranges. */
function bare(value: number, unit: Series['unit']): string {
  return formatValue(value, unit).split(' ')[0] ?? '';
}

/** The results table, Markdown, one row per series in the order they ran. */
export function formatTable(all: readonly Series[]): string {
  const lines = [
    '| W | case | variant | median | min–max | n | best dmio ÷ this | CPU µs/op or /MiB ' +
      '| timer |',
    '|---|---|---|---|---|---|---|---|---|',
  ];
  for (const series of all) {
    const [low, high] = range(series.samples);
    const best = bestDmio(all, series);
    const ratio = best === null ? null :
      ratioDmioOver(median(best.samples), median(series.samples), series.unit);
    const cpu = series.cpuUsPerUnit.length === 0 ? '—' : median(series.cpuUsPerUnit).toFixed(2);
    const variant = series.role === 'dmio' ? `**${series.variant}**` :
      series.role === 'diagnostic' ? `_${series.variant}_` : series.variant;
    lines.push(`| ${series.workload} | ${series.caseName} | ${variant} | ` +
      `${formatValue(median(series.samples), series.unit)} | ` +
      `${bare(low, series.unit)}–${bare(high, series.unit)} | ` +
      `${series.samples.length} | ${ratio === null ? '—' : ratio.toFixed(2)} | ` +
      `${cpu} | ${series.timer} |`);
  }
  return lines.join('\n');
}

/** The target checks, Markdown. */
export function formatTargets(checks: readonly TargetCheck[]): string {
  const lines = ['| W | target | value | goal | met | medians |', '|---|---|---|---|---|---|'];
  for (const check of checks) {
    const met = check.met === null ? 'n/a' : check.met ? 'yes' : '**no**';
    const value = check.value === null ? '—' : check.value.toFixed(2);
    lines.push(`| ${check.workload} | ${check.name} | ${value} | ` +
      `${check.comparison} ${check.threshold} | ${met} | ${check.detail} |`);
  }
  return lines.join('\n');
}

/** The skipped variants, one line per variant and reason, with the cases it affected. */
export function formatSkips(skips: readonly Skip[]): string {
  if (skips.length === 0) return 'nothing skipped';
  const grouped = new Map<string, string[]>();
  for (const skip of skips) {
    const key = `w${skip.workload} | ${skip.variant}: ${skip.reason}`;
    grouped.set(key, [...(grouped.get(key) ?? []), skip.caseName]);
  }
  return [...grouped.entries()].map(([key, cases]) => `- ${key} (${cases.join('; ')})`).join('\n');
}

/** The page-cache preparation of each workload's cases, one line per distinct note. */
export function formatCacheNotes(all: readonly Series[]): string {
  const notes = new Map<string, string>();
  for (const series of all) notes.set(`w${series.workload}: ${series.cache}`, '');
  return [...notes.keys()].map((note) => `- ${note}`).join('\n');
}

/** Everything a run produced, as written to the JSON file. */
export interface BenchResults {
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly machine: MachineInfo;
  readonly options: BenchOptions;
  readonly peers: PeerReport;
  readonly series: readonly (Series & { readonly median: number })[];
  readonly skips: readonly Skip[];
  readonly targets: readonly TargetCheck[];
  /** Wall seconds each workload took, by workload id. */
  readonly workloadSeconds: Readonly<Record<string, number>>;
}

/** Writes `results` to `filePath` (creating its directory) and to `latest.json` beside it. */
export function writeResults(filePath: string, results: BenchResults): void {
  fs.mkdirSync(path.dirname(filePath), { recursive: true });
  const text = `${JSON.stringify(results, null, 2)}\n`;
  fs.writeFileSync(filePath, text);
  fs.writeFileSync(path.join(path.dirname(filePath), 'latest.json'), text);
}
