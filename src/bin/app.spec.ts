/**
 * The service's start order (createApp, startOrder): on a cold onnxruntime tuning cache the first
 * inference worker measures the session settings on a quiet process, and the stores open only once
 * it is done; with the choices cached, tuning off, on CUDA or with the levels pinned, both start at
 * once. The detector's level is pinned so that only the small test embedder is measured (about a
 * second); the real test models (../shared/models), embedded stores in a temporary folder.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { trace } from '@opentelemetry/api';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { parseConfig, type Config } from '../config/config.js';
import { AnalyzerPool } from '../inference/analyzer-pool.js';
import { captureLog } from '../../test/support/log-capture.js';
import { createApp, startOrder } from './app.js';

const SHARED = path.resolve(import.meta.dirname, '../../../shared');
const PHOTO = path.join(SHARED, 'testdata', 'groups', 'facerec_obama_and_biden.jpg');

interface Line {
  msg: string;
  order?: string;
  reason?: string;
}

const capture = () => captureLog<Line>('info');

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'facematch-app-'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));
afterEach(() => {
  vi.restoreAllMocks();
});

function config(name: string, env: Record<string, string> = {}): Config {
  return parseConfig({
    FACEMATCH_MODEL_PACK: 'test',
    FACEMATCH_MODELS_DIR: path.join(SHARED, 'models'),
    FACEMATCH_INTRA_OP_THREADS: '1',
    FACEMATCH_ORT_TUNING: 'auto',
    FACEMATCH_ORT_OPTIMIZATION: 'detector=all',
    FACEMATCH_TUNING_CACHE: path.join(dir, name, 'ort-tuning.json'),
    FACEMATCH_DATA_DIR: path.join(dir, name, 'data'),
    ...env,
  });
}

const tracer = trace.getTracer('app.spec');
const startLine = (lines: Line[]): Line | undefined => lines.find((l) => l.msg === 'start order chosen');

describe('start order', () => {
  it('a first start measures on a quiet process: the stores open after the pool is ready; a restart takes the cache and starts both at once', async () => {
    const first = capture();
    const app = await createApp(config('cold'), first.log, { tracer, inferenceWorkers: 1 });
    try {
      expect(app.analyzer.tuning.embedder.source).toBe('measured');
      const lines = first.lines();
      expect(startLine(lines)).toMatchObject({ order: 'inference pool, then stores', reason: expect.stringContaining('of the embedder (no choice in the tuning cache') as string });
      const msgs = lines.map((l) => l.msg);
      expect(msgs.indexOf('inference workers ready')).toBeGreaterThan(-1);
      expect(msgs.indexOf('stores open')).toBeGreaterThan(msgs.indexOf('inference workers ready'));
      expect((await app.ready()).ok).toBe(true);
    } finally {
      await app.close();
    }

    const again = capture();
    const restarted = await createApp(config('cold'), again.log, { tracer, inferenceWorkers: 1 });
    try {
      expect(restarted.analyzer.tuning.embedder.source).toBe('cache');
      expect(startLine(again.lines())).toMatchObject({ order: 'inference pool and stores together', reason: expect.stringContaining('come from the tuning cache') as string });
      const result = await restarted.analyzer.analyze(await readFile(PHOTO));
      expect(result.faces).toHaveLength(3);
    } finally {
      await restarted.close();
    }
  });

  it('another thread budget is measured again, so the pool starts first again; tuning off, CUDA and pinned levels start both at once', async () => {
    // The cache of the first test holds the embedder at one thread.
    expect(await startOrder(config('cold'), 1)).toMatchObject({ poolFirst: false });
    expect(await startOrder(config('cold', { FACEMATCH_INTRA_OP_THREADS: '2' }), 1)).toMatchObject({ poolFirst: true });
    // Pinning the embedder too leaves nothing to measure.
    expect(await startOrder(config('cold', { FACEMATCH_INTRA_OP_THREADS: '2', FACEMATCH_ORT_OPTIMIZATION: 'detector=all,embedder=all' }), 1)).toEqual({
      poolFirst: false,
      reason: 'no onnxruntime tuning: both levels pinned by FACEMATCH_ORT_OPTIMIZATION',
    });
    const empty = config('never-written');
    expect(await startOrder(empty, 1)).toMatchObject({ poolFirst: true });
    expect(await startOrder({ ...empty, inference: { ...empty.inference, ortTuning: 'off' } }, 1)).toEqual({
      poolFirst: false,
      reason: 'no onnxruntime tuning: FACEMATCH_ORT_TUNING=off',
    });
    expect(await startOrder({ ...empty, inference: { ...empty.inference, device: 'cuda' } }, 1)).toMatchObject({ poolFirst: false, reason: 'no onnxruntime tuning: CUDA' });
  });

  it('stores that fail to open after the pool started fail the start, and the pool is closed', async () => {
    const blocker = path.join(dir, 'a-file');
    await writeFile(blocker, '');
    const started: AnalyzerPool[] = [];
    const start = AnalyzerPool.start.bind(AnalyzerPool);
    vi.spyOn(AnalyzerPool, 'start').mockImplementation(async (...args) => {
      const pool = await start(...args);
      started.push(pool);
      return pool;
    });
    const { log, lines } = capture();
    await expect(createApp(config('failing', { FACEMATCH_DATA_DIR: path.join(blocker, 'data') }), log, { tracer, inferenceWorkers: 1 })).rejects.toThrow(`embedded database at ${path.join(blocker, 'data', 'db')}`);
    expect(startLine(lines())).toMatchObject({ order: 'inference pool, then stores' });
    expect(started).toHaveLength(1);
    await expect(started[0]!.analyze(await readFile(PHOTO))).rejects.toThrow('the inference pool is closed');
  });
});
