/**
 * Per-CPU tuning of the onnxruntime CPU sessions (issue 14). The fastest graph optimisation level
 * differs by model and by CPU: on an AVX-512 Xeon the test embedder runs about 3x faster at
 * `extended` than at `all` while the SCRFD detector is the other way round; on an AMD EPYC `all`
 * is fast for both. So at start each model is measured on this CPU, with its real input shapes, under
 * a few candidate settings, and the fastest is kept:
 *
 * 1. the levels all, basic and extended, with the configured thread count (all, the static choice,
 *    is one of them, so the winner is never slower than it as measured; and it stays unless another
 *    is faster by more than 5%, so that timing noise does not move a model off it);
 * 2. with the winning level, when the session has more than one intra-op thread: one thread, and
 *    the configured threads without spinning (idle threads sleep instead of busy-waiting).
 *
 * The candidates of a step are timed in turns (one untimed then one timed run of each, in rotating
 * order, repeated), so a burst of load elsewhere on the machine slows them alike; each gets one
 * untimed warm-up run first.
 * The result is cached per CPU model, core count, onnxruntime version, model file (name, size,
 * mtime), input size and thread count, so a restart does not measure again. Caveats: timings
 * taken on a busy machine (load average above the core count: a warning says so) are cached too;
 * and the spinning candidate is measured alone, so its gain (cores left to the other workers) shows
 * only when the machine is busy.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, loadavg } from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { z } from 'zod';
import { ORT_LEVELS, type InferenceConfig, type OrtLevel } from '../config/config.js';
import type { Logger } from '../telemetry/logger.js';
import { createSession, inputsOf, isFixed } from './onnx-session.js';
import { describeChoice, mayMeasure, sessionOptionsFor, type CandidateTime, type ModelRole, type ModelTuning, type SessionChoice, type Tuning } from './session-choice.js';

export interface TuneModel {
  file: string;
  /** The pack's [width, height]. */
  inputSize: readonly [number, number];
}

export interface TuneOptions {
  /** Timed runs per candidate (after one warm-up run); default 5. */
  runs?: number;
}

/** The levels measured ('disabled' is never faster on these CNNs and would cost a session more). */
const TUNED_LEVELS: readonly OrtLevel[] = ['basic', 'extended', 'all'];
/** The batch an embedder with a dynamic batch axis is also timed at (a group photo's faces). */
const EMBED_BATCH = 8;
/**
 * About how long a step's timed rounds may take: a slow model (ArcFace R50 at batch 1 + 8 is about
 * 0.5 s a pass) gets fewer than the asked runs, but at least MIN_RUNS (unless fewer are asked).
 */
const STEP_BUDGET_MS = 4000;
const MIN_RUNS = 2;
/** How much faster (a share) a candidate must be to replace the static choice or the step 1 winner. */
const MARGIN = 0.1;
/** Bumped when the candidates or the timing change, so that old cache entries are not used. */
const TUNER_VERSION = 3;

const choiceSchema = z.object({ level: z.enum(ORT_LEVELS), threads: z.number().int().min(0), spinning: z.boolean() });
const entrySchema = z.object({
  choice: choiceSchema,
  candidates: z.array(z.object({ choice: choiceSchema, ms: z.number(), step: z.enum(['levels', 'layouts', 'rematch']).optional() })),
  shapes: z.array(z.array(z.number())),
  /** Timed runs per candidate (fewer than asked for a slow model: STEP_BUDGET_MS). */
  runs: z.number().int().optional(),
  measuredAt: z.string(),
  /** The 1-minute load average when the measuring ended (above the core count: disturbed timings). */
  loadAverage: z.number().optional(),
});
const cacheSchema = z.object({ version: z.literal(1), entries: z.record(entrySchema) });
type CacheFile = z.infer<typeof cacheSchema>;
type CacheEntry = z.infer<typeof entrySchema>;

/**
 * Reads the cache; a missing file is an empty cache, an unreadable or corrupt one is ignored (with
 * `problem` set, to warn about: the next measurement overwrites it).
 */
async function readCache(file: string): Promise<{ cache: CacheFile; problem?: string }> {
  const empty: CacheFile = { version: 1, entries: {} };
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    const missing = (error as NodeJS.ErrnoException).code === 'ENOENT';
    return missing ? { cache: empty } : { cache: empty, problem: `unreadable: ${(error as Error).message}` };
  }
  try {
    return { cache: cacheSchema.parse(JSON.parse(text)) };
  } catch (error) {
    return { cache: empty, problem: `corrupt: ${error instanceof z.ZodError ? 'unexpected content' : (error as Error).message}` };
  }
}

/** Adds entries to the cache file (re-read first: another process may have added its own), atomically. */
async function writeCache(file: string, add: Record<string, CacheEntry>, log: Logger): Promise<void> {
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    const { cache } = await readCache(file);
    const next: CacheFile = { version: 1, entries: { ...cache.entries, ...add } };
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(tmp, `${JSON.stringify(next, null, 2)}\n`);
    await rename(tmp, file);
  } catch (error) {
    await rm(tmp, { force: true }).catch(() => undefined);
    log.warn({ cache: file, err: (error as Error).message }, 'onnxruntime tuning cache not written; the next start measures again');
  }
}

/** What a measurement depends on: the same key on another start gives the same choice. */
async function cacheKey(role: ModelRole, model: TuneModel, threads: number): Promise<string> {
  const s = await stat(model.file);
  return [
    `v${TUNER_VERSION}`,
    cpus()[0]?.model.trim() ?? 'unknown cpu',
    `${availableParallelism()} cores`,
    `onnxruntime ${ort.env.versions.node ?? ort.env.versions.common}`,
    role,
    `${path.basename(model.file)} ${s.size} bytes mtime ${Math.round(s.mtimeMs)}`,
    `input ${model.inputSize[0]}x${model.inputSize[1]}`,
    `${threads} threads`,
  ].join(' | ');
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** The input shapes a model is timed with: the pack's size, and a batch for a dynamic batch axis. */
function shapesOf(session: ort.InferenceSession, role: ModelRole, model: TuneModel): number[][] {
  const shape = inputsOf(session)[0]?.shape ?? [];
  const [w, h] = model.inputSize;
  const one = [1, 3, h, w];
  return role === 'embedder' && !isFixed(shape[0]) ? [one, [EMBED_BATCH, 3, h, w]] : [one];
}

/** A fixed pseudo-random fill in [-1, 1] (what a normalised photo looks like to the model). */
function feedsFor(session: ort.InferenceSession, shapes: number[][]): Record<string, ort.Tensor>[] {
  const name = inputsOf(session)[0]!.name;
  return shapes.map((shape) => {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    let x = 12345;
    for (let i = 0; i < data.length; i++) {
      x = (x * 1103515245 + 12345) >>> 0;
      data[i] = (x / 0xffffffff) * 2 - 1;
    }
    return { [name]: new ort.Tensor('float32', data, shape) };
  });
}

/**
 * Times each choice: sessions created, one warm-up pass each, then `runs` rounds of one untimed and
 * one timed pass of each in rotating order. Returns the median pass time of each, and the shapes timed. (Exported
 * for bench/ort-tuning.bench.ts, which re-times the choice against the static one.)
 */
export async function timeChoices(
  inference: InferenceConfig,
  role: ModelRole,
  model: TuneModel,
  choices: readonly SessionChoice[],
  runs: number,
  log: Logger,
): Promise<{ ms: number[]; shapes: number[][]; rounds: number }> {
  const sessions: ort.InferenceSession[] = [];
  try {
    for (const choice of choices) {
      sessions.push((await createSession(model.file, { ...sessionOptionsFor(inference, choice), device: 'cpu' }, log)).session);
    }
    const shapes = shapesOf(sessions[0]!, role, model);
    const feeds = feedsFor(sessions[0]!, shapes);
    const pass = async (session: ort.InferenceSession): Promise<number> => {
      const t0 = performance.now();
      for (const feed of feeds) await session.run(feed);
      return performance.now() - t0;
    };
    const warmUp: number[] = [];
    for (const session of sessions) warmUp.push(await pass(session));
    // A large model (or a busy machine) gets fewer rounds, so that a step stays near STEP_BUDGET_MS.
    const affordable = Math.floor(STEP_BUDGET_MS / (2 * sessions.length * Math.max(1, ...warmUp)));
    const rounds = Math.min(runs, Math.max(MIN_RUNS, affordable));
    const times: number[][] = sessions.map(() => []);
    for (let round = 0; round < rounds; round++) {
      for (let k = 0; k < sessions.length; k++) {
        const i = (round + k) % sessions.length;
        // An untimed pass first: the intra-op threads of the session timed just before may still be
        // spinning, and timed straight after them a session ran about 2x slower here.
        await pass(sessions[i]!);
        times[i]!.push(await pass(sessions[i]!));
      }
    }
    return { ms: times.map(median), shapes, rounds };
  } finally {
    await Promise.all(sessions.map((s) => s.release()));
  }
}

/**
 * The fastest of `timed`, where `timed[0]` is the incumbent: another replaces it only when it is
 * faster by more than MARGIN, so that timing noise does not move a model off the static choice.
 */
function fastest(timed: readonly CandidateTime[]): CandidateTime {
  return timed.reduce((best, c) => (c.ms < best.ms * (1 - MARGIN) ? c : best));
}

/** Measures the candidates (see the file comment) and returns the fastest, with every time. */
async function measure(
  inference: InferenceConfig,
  role: ModelRole,
  model: TuneModel,
  runs: number,
  log: Logger,
): Promise<CacheEntry> {
  const threads = inference.intraOpThreads;
  // The static choice (all) first: the incumbent.
  const levels = ['all', ...TUNED_LEVELS.filter((l) => l !== 'all')].map((level): SessionChoice => ({ level: level as OrtLevel, threads, spinning: true }));
  const first = await timeChoices(inference, role, model, levels, runs, log);
  const candidates: CandidateTime[] = levels.map((choice, i) => ({ choice, ms: first.ms[i]!, step: 'levels' }));
  /**
   * A challenger that beat the incumbent is timed against it once more and wins only if it wins
   * again: a burst of other work (the stores opening beside the first worker at a service's start,
   * which now waits for the measuring: createApp's startOrder) once made `all` look 2.4x slower than
   * it is here and a 2x slower level win; other load on the machine can still do so.
   */
  const confirmed = async (incumbent: CandidateTime, winner: CandidateTime): Promise<CandidateTime> => {
    if (winner === incumbent) return winner;
    const again = await timeChoices(inference, role, model, [incumbent.choice, winner.choice], runs, log);
    const rematch: CandidateTime[] = [incumbent, winner].map((c, i) => ({ choice: c.choice, ms: again.ms[i]!, step: 'rematch' }));
    candidates.push(...rematch);
    return fastest(rematch);
  };
  let best = await confirmed(candidates[0]!, fastest(candidates));
  if ((threads || availableParallelism()) > 1) {
    const step = [best.choice, { ...best.choice, threads: 1 }, { ...best.choice, spinning: false }];
    const second = await timeChoices(inference, role, model, step, runs, log);
    const timed: CandidateTime[] = step.map((choice, i) => ({ choice, ms: second.ms[i]!, step: 'layouts' }));
    candidates.push(...timed);
    best = await confirmed(timed[0]!, fastest(timed));
  }
  const loadAverage = Math.round((loadavg()[0] ?? 0) * 100) / 100;
  if (loadAverage > availableParallelism()) {
    log.warn(
      { model: role, loadAverage, cores: availableParallelism(), cache: inference.tuningCache },
      'onnxruntime session settings measured on a busy machine; delete the tuning cache to measure again when it is quiet',
    );
  }
  return { choice: best.choice, candidates, shapes: first.shapes, runs: first.rounds, measuredAt: new Date().toISOString(), loadAverage };
}

/**
 * The models tuneSessions would measure with this configuration (tuning on, on the CPU, the level not
 * pinned, and no choice in the tuning cache for this CPU, model file, input size and threads), from
 * the cache alone, without measuring; none when every choice is fixed or cached. An unreadable or
 * corrupt cache counts as empty, as it does for tuneSessions.
 */
export async function modelsToMeasure(inference: InferenceConfig, models: Record<ModelRole, TuneModel>): Promise<ModelRole[]> {
  if (!mayMeasure(inference)) return [];
  const { cache } = await readCache(inference.tuningCache);
  const roles: ModelRole[] = [];
  for (const role of ['detector', 'embedder'] as const) {
    if (inference.ortOptimization[role]) continue;
    if (!cache.entries[await cacheKey(role, models[role], inference.intraOpThreads)]) roles.push(role);
  }
  return roles;
}

/**
 * The session settings of the detector and the embedder: fixed (tuning off, CUDA, an explicit
 * level), from the cache, or measured now (one model after the other, never concurrently) and
 * cached. Each choice is logged at info with the time of every candidate.
 */
export async function tuneSessions(
  inference: InferenceConfig,
  models: Record<ModelRole, TuneModel>,
  log: Logger,
  options: TuneOptions = {},
): Promise<Tuning> {
  const runs = Math.max(1, options.runs ?? 5);
  const configured: SessionChoice = { level: 'all', threads: inference.intraOpThreads, spinning: true };
  const fixed = (level: OrtLevel, source: ModelTuning['source']): ModelTuning => ({
    choice: { ...configured, level },
    source,
    candidates: [],
    shapes: [],
    tuneMs: 0,
  });
  let cache: CacheFile | undefined;
  const tuneOne = async (role: ModelRole): Promise<ModelTuning> => {
    const level = inference.ortOptimization[role];
    if (level) return fixed(level, 'override');
    if (inference.ortTuning === 'off' || inference.device === 'cuda') return fixed('all', 'static');
    const t0 = performance.now();
    const key = await cacheKey(role, models[role], inference.intraOpThreads);
    if (!cache) {
      const read = await readCache(inference.tuningCache);
      if (read.problem) log.warn({ cache: inference.tuningCache, problem: read.problem }, 'onnxruntime tuning cache ignored; measuring again');
      cache = read.cache;
    }
    const hit = cache.entries[key];
    const entry = hit ?? (await measure(inference, role, models[role], runs, log));
    // Written as soon as each model is measured: a start cut short (a startup probe) keeps it.
    if (!hit) await writeCache(inference.tuningCache, { [key]: entry }, log);
    const tuning: ModelTuning = {
      choice: entry.choice,
      source: hit ? 'cache' : 'measured',
      candidates: entry.candidates,
      shapes: entry.shapes,
      tuneMs: performance.now() - t0,
    };
    log.info(
      {
        model: role,
        file: path.basename(models[role].file),
        choice: describeChoice(tuning.choice),
        source: tuning.source,
        candidates: Object.fromEntries(tuning.candidates.map((c, i) => [`${i + 1}. ${describeChoice(c.choice)}`, Math.round(c.ms * 100) / 100])),
        shapes: tuning.shapes.map((s) => s.join('x')),
        ...(entry.runs === undefined ? {} : { runs: entry.runs }),
        tuneMs: Math.round(tuning.tuneMs),
      },
      'onnxruntime session settings chosen',
    );
    return tuning;
  };
  const detector = await tuneOne('detector');
  const embedder = await tuneOne('embedder');
  return { detector, embedder };
}
