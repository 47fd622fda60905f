/**
 * The onnxruntime session tuner on the real test models (../shared/models): it measures on this CPU
 * and keeps the fastest, a restart takes the choice from the cache, the overrides skip measuring,
 * a bad cache file costs a warning, not the start. One timed run per candidate and one intra-op
 * thread (three sessions per model) keep the measuring cheap.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig, type InferenceConfig } from '../config/config.js';
import { AnalyzerPool } from './analyzer-pool.js';
import { FaceAnalyzer } from './face-analyzer.js';
import type { CandidateTime, ModelRole, Tuning } from './session-choice.js';
import { captureLog } from '../../test/support/log-capture.js';
import { modelsToMeasure, tuneSessions, type TuneModel } from './session-tuner.js';

const SHARED = path.resolve(import.meta.dirname, '../../../shared');
const MODELS_DIR = path.join(SHARED, 'models');
const model = (file: string, size: number): TuneModel => ({ file: path.join(MODELS_DIR, file), inputSize: [size, size] });
const TEST_PACK: Record<ModelRole, TuneModel> = { detector: model('det_500m.onnx', 640), embedder: model('mbf512_faceplugin.onnx', 112) };

interface Line {
  level: number;
  msg: string;
  model?: string;
  source?: string;
  choice?: string;
  candidates?: Record<string, number>;
}

/** A debug-level logger whose lines are kept: "model loaded on CPU" is logged for each session made. */
const capture = () => captureLog<Line>('debug');

const sessionsMade = (lines: Line[]): number => lines.filter((l) => l.msg === 'model loaded on CPU').length;

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'facematch-tuning-'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

function inference(cache: string, env: Record<string, string> = {}): InferenceConfig {
  return parseConfig({
    FACEMATCH_MODEL_PACK: 'test',
    FACEMATCH_MODELS_DIR: MODELS_DIR,
    FACEMATCH_INTRA_OP_THREADS: '1',
    FACEMATCH_TUNING_CACHE: cache,
    ...env,
  }).inference;
}

async function tune(config: InferenceConfig, models = TEST_PACK): Promise<{ tuning: Tuning; lines: Line[] }> {
  const { log, lines } = capture();
  const tuning = await tuneSessions(config, models, log, { runs: 1 });
  return { tuning, lines: lines() };
}

describe('onnxruntime session tuning', () => {
  const cache = (): string => path.join(dir, 'cache', 'ort-tuning.json');
  let first: Tuning;

  it('measures every candidate level on this CPU, keeps one no slower than the static choice, logs it with each time', async () => {
    // What a service's start asks before it starts (it then opens its stores after the pool).
    expect(await modelsToMeasure(inference(cache()), TEST_PACK)).toEqual(['detector', 'embedder']);
    const { tuning, lines } = await tune(inference(cache()));
    first = tuning;
    let rematches = 0;
    for (const role of ['detector', 'embedder'] as const) {
      const t = tuning[role];
      expect(t.source).toBe('measured');
      // One thread: the levels only (a second step tries thread layouts when there are several).
      const levels = t.candidates.filter((c) => c.step === 'levels');
      const rematch = t.candidates.filter((c) => c.step === 'rematch');
      expect(levels.map((c) => c.choice.level)).toEqual(['all', 'basic', 'extended']);
      for (const c of t.candidates) expect(c.ms).toBeGreaterThan(0);
      // Another level than all only after beating it twice: in the levels and in a rematch.
      if (t.choice.level !== 'all') {
        const won = (pair: CandidateTime[]): boolean => pair[1]!.ms < pair[0]!.ms;
        expect(levels.find((c) => c.choice.level === t.choice.level)!.ms).toBeLessThan(levels[0]!.ms);
        expect(rematch.map((c) => c.choice.level)).toEqual(['all', t.choice.level]);
        expect(won(rematch)).toBe(true);
      }
      // A rematch is the incumbent and the step's winner, and only when the winner was not the incumbent.
      expect(rematch.length === 0 || (rematch.length === 2 && rematch[0]!.choice.level === 'all')).toBe(true);
      rematches += rematch.length / 2;
      expect(t.choice).toMatchObject({ threads: 1, spinning: true });
      const logged = lines.find((l) => l.msg === 'onnxruntime session settings chosen' && l.model === role);
      expect(logged).toMatchObject({ level: 30, source: 'measured', choice: expect.stringMatching(new RegExp(`^${t.choice.level}, 1 thread`)) as string });
      expect(Object.keys(logged!.candidates!)).toHaveLength(t.candidates.length);
    }
    expect(tuning.detector.shapes).toEqual([[1, 3, 640, 640]]);
    expect(tuning.embedder.shapes[0]).toEqual([1, 3, 112, 112]);
    expect(sessionsMade(lines)).toBe(6 + 2 * rematches);
    const written = JSON.parse(await readFile(cache(), 'utf8')) as { entries: Record<string, unknown> };
    expect(Object.keys(written.entries)).toHaveLength(2);
  });

  it('a second start with the same cache takes the choices from it without measuring', async () => {
    expect(await modelsToMeasure(inference(cache()), TEST_PACK)).toEqual([]);
    const { tuning, lines } = await tune(inference(cache()));
    expect(tuning.detector).toMatchObject({ source: 'cache', choice: first.detector.choice, candidates: first.detector.candidates });
    expect(tuning.embedder).toMatchObject({ source: 'cache', choice: first.embedder.choice });
    expect(sessionsMade(lines)).toBe(0);
    expect(lines.filter((l) => l.msg === 'onnxruntime session settings chosen').map((l) => l.source)).toEqual(['cache', 'cache']);
  });

  it('another model, or another thread budget, is measured again; the rest still comes from the cache', async () => {
    expect(await modelsToMeasure(inference(cache()), { ...TEST_PACK, detector: model('det_2.5g.onnx', 640) })).toEqual(['detector']);
    expect(await modelsToMeasure(inference(cache(), { FACEMATCH_INTRA_OP_THREADS: '2', FACEMATCH_ORT_OPTIMIZATION: 'detector=all' }), TEST_PACK)).toEqual(['embedder']);
    const other = await tune(inference(cache()), { ...TEST_PACK, detector: model('det_2.5g.onnx', 640) });
    expect(other.tuning.detector.source).toBe('measured');
    expect(other.tuning.embedder.source).toBe('cache');
    // Two threads: the embedder is measured again, now with the thread layouts too (the detector is pinned, not measured).
    const threads = await tune(inference(cache(), { FACEMATCH_INTRA_OP_THREADS: '2', FACEMATCH_ORT_OPTIMIZATION: 'detector=all' }));
    expect(threads.tuning.detector.source).toBe('override');
    expect(threads.tuning.embedder.source).toBe('measured');
    const layouts = threads.tuning.embedder.candidates.filter((c) => c.step === 'layouts').map((c) => c.choice);
    expect(layouts).toEqual([
      expect.objectContaining({ threads: 2, spinning: true }),
      expect.objectContaining({ threads: 1, spinning: true }),
      expect.objectContaining({ threads: 2, spinning: false }),
    ]);
    const written = JSON.parse(await readFile(cache(), 'utf8')) as { entries: Record<string, unknown> };
    expect(Object.keys(written.entries)).toHaveLength(4);
  });

  it('FACEMATCH_ORT_OPTIMIZATION, FACEMATCH_ORT_TUNING=off and CUDA skip the measuring', async () => {
    for (const env of [{ FACEMATCH_ORT_OPTIMIZATION: 'detector=all,embedder=extended' }, { FACEMATCH_ORT_TUNING: 'off' }, { FACEMATCH_DEVICE: 'cuda' }] as Record<string, string>[]) {
      expect(await modelsToMeasure(inference(path.join(dir, 'unused.json'), env), TEST_PACK)).toEqual([]);
    }
    const pinned = await tune(inference(path.join(dir, 'unused.json'), { FACEMATCH_ORT_OPTIMIZATION: 'detector=all,embedder=extended' }));
    expect(pinned.tuning.detector).toMatchObject({ source: 'override', choice: { level: 'all', threads: 1, spinning: true }, candidates: [] });
    expect(pinned.tuning.embedder).toMatchObject({ source: 'override', choice: { level: 'extended' } });
    const off = await tune(inference(path.join(dir, 'unused.json'), { FACEMATCH_ORT_TUNING: 'off' }));
    expect(off.tuning.detector).toMatchObject({ source: 'static', choice: { level: 'all' } });
    expect(off.tuning.embedder).toMatchObject({ source: 'static', choice: { level: 'all' } });
    // CUDA: the level is not tuned (all), the CPU fallback included.
    const cuda = await tune(inference(path.join(dir, 'unused.json'), { FACEMATCH_DEVICE: 'cuda' }));
    expect(cuda.tuning.detector).toMatchObject({ source: 'static', choice: { level: 'all' } });
    expect(sessionsMade([...pinned.lines, ...off.lines, ...cuda.lines])).toBe(0);
    await expect(readFile(path.join(dir, 'unused.json'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('a corrupt cache file is ignored with a warning, measured again and replaced', async () => {
    const file = path.join(dir, 'corrupt.json');
    await writeFile(file, '{"version": 1, "entries": {"x": tru');
    const { tuning, lines } = await tune(inference(file, { FACEMATCH_ORT_OPTIMIZATION: 'detector=all' }));
    expect(lines.find((l) => l.level === 40)?.msg).toBe('onnxruntime tuning cache ignored; measuring again');
    expect(tuning.embedder.source).toBe('measured');
    const again = await tune(inference(file, { FACEMATCH_ORT_OPTIMIZATION: 'detector=all' }));
    expect(again.tuning.embedder.source).toBe('cache');
    expect(again.lines.filter((l) => l.level >= 40)).toEqual([]);
  });

  it('a cache that cannot be written costs a warning, not the start', async () => {
    const blocker = path.join(dir, 'a-file');
    await writeFile(blocker, '');
    const { tuning, lines } = await tune(inference(path.join(blocker, 'ort-tuning.json'), { FACEMATCH_ORT_OPTIMIZATION: 'detector=all' }));
    expect(tuning.embedder.source).toBe('measured');
    expect(lines.filter((l) => l.level === 40).map((l) => l.msg)).toContain('onnxruntime tuning cache not written; the next start measures again');
  });

  it('an analyzer on other levels finds the same faces, with the same embeddings, as on the static ones', async () => {
    const decode = { maxPixels: 150_000_000, maxSide: 2560 };
    const unused = path.join(dir, 'unused.json');
    const { log } = capture();
    const tuned = await FaceAnalyzer.load(inference(unused, { FACEMATCH_ORT_OPTIMIZATION: 'detector=extended,embedder=basic' }), decode, log);
    const plain = await FaceAnalyzer.load(inference(unused, { FACEMATCH_ORT_TUNING: 'off' }), decode, log);
    expect(tuned.tuning.detector.choice.level).toBe('extended');
    expect(tuned.tuning.embedder.choice.level).toBe('basic');
    const photo = await readFile(path.join(SHARED, 'testdata', 'groups', 'facerec_obama_and_biden.jpg'));
    const [a, b] = [await tuned.analyze(photo), await plain.analyze(photo)];
    expect(a.faces.length).toBe(b.faces.length);
    expect(a.faces.length).toBeGreaterThanOrEqual(2);
    a.faces.forEach((face, i) => {
      const other = b.faces[i]!;
      expect(face.box.x).toBeCloseTo(other.box.x, 1);
      const cosine = face.embedding.reduce((sum, v, k) => sum + v * other.embedding[k]!, 0);
      expect(cosine).toBeGreaterThan(0.999);
    });
  });

  it('a pool of workers gets the choices of its first worker (here from the cache of the first test), and every worker runs', async () => {
    const config = inference(cache());
    const { log } = capture();
    const photo = await readFile(path.join(SHARED, 'testdata', 'groups', 'facerec_obama_and_biden.jpg'));
    const pool = await AnalyzerPool.start(config, { maxPixels: 150_000_000, maxSide: 2560 }, 2, log, 'silent');
    try {
      expect(pool.tuning.detector).toMatchObject({ source: 'cache', choice: first.detector.choice });
      expect(pool.tuning.embedder).toMatchObject({ source: 'cache', choice: first.embedder.choice });
      // Two photos at once: one in each worker.
      const results = await Promise.all([pool.analyze(photo), pool.analyze(photo)]);
      expect(results.map((r) => r.faces.length)).toEqual([3, 3]);
    } finally {
      await pool.close();
    }
  });
});
