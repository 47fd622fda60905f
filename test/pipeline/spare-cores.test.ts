/**
 * The wide sessions (src/inference/spare-cores.ts): a photo alone in the pool has its detector runs,
 * and the embedder run of a lone face, on every core; photos that wait keep them on their worker's
 * share; and which session ran changes nothing in the answer.
 */
import { availableParallelism } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FaceAnalysis } from '../../src/domain/face.js';
import { AnalyzerPool } from '../../src/inference/analyzer-pool.js';
import { FaceAnalyzer } from '../../src/inference/face-analyzer.js';
import { ATTR } from '../../src/telemetry/attributes.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { expectSameFaces as expectSame } from '../support/same-faces.js';
import { group, identities, read, testConfig } from '../support/shared.js';

const log = createLogger('warn');
// One intra-op thread a worker: the wide session has every core (more than one here).
const config = testConfig({ FACEMATCH_INTRA_OP_THREADS: '1' });
const TURNED = 'hpc203_s_l.jpg';
const SMALL = 'faceapi_bbt1.jpg';
/** A selfie: one face. */
const SELFIE = identities()[0]!.files[0]!;

const runs = (a: FaceAnalysis): { all: number; wide: number } => {
  const attributes = a.stages.find((s) => s.stage === 'detect')?.attributes ?? {};
  return { all: attributes[ATTR.detectorRuns] ?? 0, wide: attributes[ATTR.wideDetectorRuns] ?? 0 };
};
const wideEmbeds = (a: FaceAnalysis): number => a.stages.find((s) => s.stage === 'embed')?.attributes?.[ATTR.wideEmbedderRuns] ?? 0;

describe.runIf(availableParallelism() > 1)('the detector on spare cores', () => {
  let reference: Map<string, FaceAnalysis>;
  let photos: Map<string, Buffer>;

  beforeAll(async () => {
    const alone = await FaceAnalyzer.load(config.inference, config.decode, log);
    photos = new Map([
      [TURNED, await read(group(TURNED))],
      [SMALL, await read(group(SMALL))],
      [SELFIE, await read(SELFIE)],
    ]);
    reference = new Map();
    for (const [name, bytes] of photos) reference.set(name, await alone.analyze(bytes));
  });

  const expectSameFaces = (got: FaceAnalysis, name: string): void => expectSame(got, reference.get(name)!);

  describe('in a pool of two workers', () => {
    let pool: AnalyzerPool;
    beforeAll(async () => {
      pool = await AnalyzerPool.start(config.inference, config.decode, 2, log);
    });
    afterAll(() => pool.close());

    it('runs a photo alone on every core, every one of its detector runs, with the faces a one-thread analyzer finds bit for bit', async () => {
      for (const name of [TURNED, SMALL]) {
        const got = await pool.analyze(photos.get(name)!);
        expectSameFaces(got, name);
        const { all, wide } = runs(got);
        expect(all, name).toBeGreaterThan(0);
        expect(wide, name).toBe(all);
      }
      // The orientation search of the low-scoring photo is two runs, both wide.
      expect(runs(await pool.analyze(photos.get(TURNED)!)).all).toBe(2);
    });

    it('embeds the one face of a photo alone on every core, the embedding bit for bit a one-thread session’s', async () => {
      const got = await pool.analyze(photos.get(SELFIE)!);
      expect(got.faces).toHaveLength(1);
      expectSameFaces(got, SELFIE);
      expect(wideEmbeds(got)).toBe(1);
      // Several faces are shared between the workers instead (src/inference/shared-embedding.ts).
      expect(wideEmbeds(await pool.analyze(photos.get(SMALL)!))).toBe(0);
    });

    it('keeps the runs of photos that wait for a worker on one core each', async () => {
      const small = photos.get(SMALL)!;
      // Four at once on two workers: the first three start while a photo waits or both work.
      const got = await Promise.all(Array.from({ length: 4 }, () => pool.analyze(small)));
      for (const [i, a] of got.slice(0, 3).entries()) {
        expect(runs(a), `photo ${i + 1}`).toEqual({ all: 1, wide: 0 });
      }
      for (const a of got) expectSameFaces(a, SMALL);
      // A selfie's embedder run starts after its detection: the first two embed while two photos
      // wait. The third may legitimately go wide (the fourth can be done by then, its worker idle).
      const selfies = await Promise.all(Array.from({ length: 4 }, () => pool.analyze(photos.get(SELFIE)!)));
      expect(selfies.slice(0, 2).map(wideEmbeds)).toEqual([0, 0]);
      for (const a of selfies) expectSameFaces(a, SELFIE);
    });
  });

  it('has no wide session with FACEMATCH_SPARE_CORES=false', async () => {
    const off = testConfig({ FACEMATCH_INTRA_OP_THREADS: '1', FACEMATCH_SPARE_CORES: 'false' });
    const pool = await AnalyzerPool.start(off.inference, off.decode, 2, log);
    try {
      const got = await pool.analyze(photos.get(SMALL)!);
      expect(runs(got)).toEqual({ all: 1, wide: 0 });
      expect(wideEmbeds(await pool.analyze(photos.get(SELFIE)!))).toBe(0);
    } finally {
      await pool.close();
    }
  });
});
