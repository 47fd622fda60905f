/**
 * What bench/pipeline.bench.ts and bench/service.bench.ts share: paths, environment settings,
 * statistics and number formatting, the text tables, the machine's CPU load, the JSON report, and
 * the recording and bare replay of onnxruntime run() calls.
 */
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { GROUPS_DIR, REPO, SHARED } from '../test/support/shared.js';

// ---------------------------------------------------------------------------------------------
// Paths and settings

/** The repository, ../shared (FACEMATCH_SHARED_DIR overrides it) and its group photos: as the tests see them. */
export { GROUPS_DIR, REPO, SHARED };

/** Where the benches write their JSON reports (git ignores it). */
export const OUT_DIR = path.join(REPO, 'bench', 'out');

/** The positive integer in environment variable `name`, or `fallback` when it is unset. */
export function positiveEnv(name: string, fallback: number): number {
  const v = Number.parseInt(process.env[name] ?? String(fallback), 10);
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} must be a positive integer`);
  return v;
}

/** The photos in GROUPS_DIR (JPEG, PNG, WebP), in name order. */
export async function groupPhotos(): Promise<string[]> {
  return (await readdir(GROUPS_DIR)).filter((f) => /\.(jpe?g|png|webp)$/i.test(f)).sort();
}

/** Writes `report` as indented JSON to OUT_DIR/`file`; returns that path relative to the repository. */
export async function writeReport(file: string, report: unknown): Promise<string> {
  await mkdir(OUT_DIR, { recursive: true });
  const outFile = path.join(OUT_DIR, file);
  await writeFile(outFile, `${JSON.stringify(report, null, 2)}\n`);
  return path.relative(REPO, outFile);
}

// ---------------------------------------------------------------------------------------------
// Statistics and formatting

/** Median (mean of the two middle values for an even count); NaN for none. */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((p, q) => p - q);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Nearest-rank percentile (`p` in 0..100); NaN for none. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

export const sum = (xs: readonly number[]): number => xs.reduce((p, q) => p + q, 0);

/** `x` rounded to `digits` decimals, as a number (for the JSON reports). */
export const round = (x: number, digits = 1): number => Number(x.toFixed(digits));

/** Every value of `o` rounded to `digits` decimals, keys in the same order. */
export const roundValues = (o: Readonly<Record<string, number>>, digits = 2): Record<string, number> =>
  Object.fromEntries(Object.entries(o).map(([k, v]) => [k, round(v, digits)]));

/** A share (0..1) rounded to 3 decimals; null when unknown. */
export const roundShare = (x: number | null | undefined): number | null => (x === null || x === undefined ? null : round(x, 3));

/** One decimal for the tables; `-` for NaN (nothing measured). */
export const f1 = (x: number): string => (Number.isNaN(x) ? '-' : x.toFixed(1));

/** A share (0..1) as a whole percentage; `unknown` when there is none. */
export const pct = (x: number | null | undefined, unknown = '?'): string =>
  x === null || x === undefined ? unknown : `${(x * 100).toFixed(0)}%`;

/** A plain-text table: the first column left-aligned, the others right-aligned, two spaces apart. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

// ---------------------------------------------------------------------------------------------
// The machine and its load

/** `2 x AMD EPYC`: the CPU count and model, for the benches' first line. */
export function cpuDescription(cpus = os.cpus()): string {
  return `${cpus.length} x ${cpus[0]?.model ?? 'unknown CPU'}`;
}

/** The `machine` fields the JSON reports start with. */
export function machineInfo(cpus = os.cpus()): { cpu_model: string; cpu_count: number; platform: string; node: string; onnxruntime: string } {
  return {
    cpu_model: cpus[0]?.model ?? 'unknown',
    cpu_count: cpus.length,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    node: process.version,
    onnxruntime: ort.env.versions.common,
  };
}

export interface CpuSnapshot {
  /** Busy CPU time of the whole machine, ms. */
  machineMs: number;
  /** CPU time of this process (its worker threads included: inference workers, libvips), ms. */
  ownMs: number;
  /** performance.now() when taken. */
  wallMs: number;
}

/**
 * CPU time of the whole machine (Linux /proc/stat, USER_HZ = 100) and of this process, so that
 * the share used by other processes between two snapshots can be reported; null elsewhere.
 */
export async function cpuSnapshot(): Promise<CpuSnapshot | null> {
  try {
    const fields = (await readFile('/proc/stat', 'utf8')).split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    const idle = (fields[3] ?? 0) + (fields[4] ?? 0);
    const busy = fields.slice(0, 8).reduce((p, q) => p + q, 0) - idle;
    const own = process.cpuUsage();
    return { machineMs: busy * 10, ownMs: (own.user + own.system) / 1000, wallMs: performance.now() };
  } catch {
    return null;
  }
}

/**
 * Shares of all the machine's cores used by this process and by the others between two snapshots,
 * and this process's CPU time (ms); null when either snapshot is. process.cpuUsage() is per
 * process, so it is exact even when the machine is busy; /proc/stat ticks are 10 ms.
 */
export function cpuShares(a: CpuSnapshot | null, b: CpuSnapshot | null): { own: number; other: number; ownMs: number } | null {
  if (!a || !b) return null;
  const capacity = (b.wallMs - a.wallMs) * os.cpus().length;
  const own = b.ownMs - a.ownMs;
  return { own: own / capacity, other: Math.max(0, b.machineMs - a.machineMs - own) / capacity, ownMs: own };
}

/** Above this share of the cores used by other processes, a bench warns that its timings are noisy. */
export const BUSY_SHARE = 0.1;

/** Whether any of these shares of other processes' CPU use is above BUSY_SHARE (unknown ones are not). */
export const busy = (...otherShares: (number | null | undefined)[]): boolean => otherShares.some((x) => (x ?? 0) > BUSY_SHARE);

// ---------------------------------------------------------------------------------------------
// Recording the pipeline's own run() calls and replaying them bare
//
// The bare baseline must run exactly what the pipeline ran: the same sessions, the same number of
// calls, tensors of the same shapes and contents (close-up retries, sideways re-detections and one
// embedder run per face for a fixed-batch embedder all included). Re-deriving that from
// detectDecoded() would re-implement the pipeline's control flow, so instead, during one analyze()
// only, InferenceSession.prototype.run is wrapped to copy every feed and note its session. Timed
// runs go unwrapped. The bare pass then replays the copies with session.run(), timed the same way
// as the detector's and embedder's runMs counters (performance.now() around the awaited call, so
// onnxruntime-node's setImmediate hop is in both).

export interface RecordedRun {
  session: ort.InferenceSession;
  feeds: Record<string, ort.Tensor>;
  /** Input dims (of the last feed), for reporting. */
  dims: readonly number[];
}

type RunFn = ort.InferenceSession['run'];
const sessionProto = (ort.InferenceSession as unknown as { prototype: { run: RunFn } }).prototype;
const originalRun = sessionProto.run;

/** Runs `fn` with every InferenceSession.run() call recorded (float32 feeds copied), in call order. */
export async function recordRuns<T>(fn: () => Promise<T>): Promise<{ value: T; runs: RecordedRun[] }> {
  const runs: RecordedRun[] = [];
  sessionProto.run = function (this: ort.InferenceSession, feeds: ort.InferenceSession.FeedsType, ...rest: unknown[]) {
    const copy: Record<string, ort.Tensor> = {};
    let dims: readonly number[] = [];
    for (const [name, t] of Object.entries(feeds)) {
      if (t.type !== 'float32') throw new Error(`unexpected ${t.type} feed "${name}"`);
      copy[name] = new ort.Tensor('float32', (t.data as Float32Array).slice(), t.dims);
      dims = t.dims;
    }
    runs.push({ session: this, feeds: copy, dims });
    return (originalRun as (...args: unknown[]) => ReturnType<RunFn>).call(this, feeds, ...rest);
  };
  try {
    return { value: await fn(), runs };
  } finally {
    sessionProto.run = originalRun;
  }
}

/**
 * Replays recorded calls one after another; returns the summed run() time (ms) of the `detector`
 * session's calls (by default the first call's session: the pipeline starts with the detector),
 * of the others (the embedder's) and of all.
 */
export async function replay(
  runs: readonly RecordedRun[],
  detector: ort.InferenceSession | undefined = runs[0]?.session,
): Promise<{ det: number; emb: number; total: number }> {
  let det = 0;
  let emb = 0;
  let total = 0;
  for (const r of runs) {
    const t0 = performance.now();
    const out = await r.session.run(r.feeds);
    const ms = performance.now() - t0;
    if (r.session === detector) det += ms;
    else emb += ms;
    total += ms;
    for (const t of Object.values(out)) t.dispose();
  }
  return { det, emb, total };
}
