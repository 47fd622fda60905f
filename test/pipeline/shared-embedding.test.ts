/**
 * A crowd photo's faces embedded by every idle inference worker (src/inference/shared-embedding.ts):
 * the same embeddings as one worker alone, and other photos not held up. A helper's failure or death
 * is src/inference/shared-embedding.spec.ts's.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FaceAnalysis } from '../../src/domain/face.js';
import { AnalyzerPool } from '../../src/inference/analyzer-pool.js';
import { FaceAnalyzer } from '../../src/inference/face-analyzer.js';
import { ATTR } from '../../src/telemetry/attributes.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { expectSameFaces as expectSame } from '../support/same-faces.js';
import { group, read, testConfig } from '../support/shared.js';

const CROWD = 'insightface-rest_lumia.jpg';
const SMALL = 'faceapi_bbt1.jpg';
const log = createLogger('warn');
// One intra-op thread everywhere: the reference and the workers run identical sessions.
const config = testConfig({ FACEMATCH_INTRA_OP_THREADS: '1' });

const sharedFaces = (a: FaceAnalysis): number => a.stages.find((s) => s.stage === 'embed')?.attributes?.[ATTR.sharedFaces] ?? 0;

/** The pool's worker slots (private): to see who is helping. */
interface SlotView {
  helping?: unknown;
}
const slotsOf = (pool: AnalyzerPool): SlotView[] => (pool as unknown as { slots: SlotView[] }).slots;

describe('a photo’s faces embedded by several inference workers', () => {
  let alone: FaceAnalyzer;
  let reference: Map<string, FaceAnalysis>;
  let crowd: Buffer;
  let small: Buffer;

  beforeAll(async () => {
    alone = await FaceAnalyzer.load(config.inference, config.decode, log);
    [crowd, small] = await Promise.all([read(group(CROWD)), read(group(SMALL))]);
    reference = new Map([
      [CROWD, await alone.analyze(crowd)],
      [SMALL, await alone.analyze(small)],
    ]);
  });

  // Bit for bit: who embedded a face changes nothing.
  const expectSameFaces = (got: FaceAnalysis, name: string): void => expectSame(got, reference.get(name)!);

  describe('in a pool of two workers', () => {
    let pool: AnalyzerPool;
    beforeAll(async () => {
      pool = await AnalyzerPool.start(config.inference, config.decode, 2, log);
    });
    afterAll(() => pool.close());

    it('gives a crowd photo the embeddings one worker alone gives, with the idle worker taking part', async () => {
      expect(reference.get(CROWD)!.faces.length).toBeGreaterThan(100);
      const got = await pool.analyze(crowd);
      expectSameFaces(got, CROWD);
      expect(sharedFaces(got)).toBeGreaterThan(0);
      expect(sharedFaces(got)).toBeLessThan(got.faces.length);
    });

    it('takes bytes handed over without a copy, and copies bytes that are not, or that share their buffer', async () => {
      const handed = new Uint8Array(small);
      expectSameFaces(await pool.analyze(handed, SMALL, { handOver: true }), SMALL);
      expect(handed.byteLength).toBe(0); // moved to the worker
      const kept = new Uint8Array(small);
      expectSameFaces(await pool.analyze(kept, SMALL), SMALL);
      expect(kept.byteLength).toBe(small.length);
      // A view into a larger buffer: handing it over must not take (and empty) the rest of that buffer.
      const larger = new Uint8Array(small.length + 16);
      larger.set(small, 8);
      expectSameFaces(await pool.analyze(larger.subarray(8, 8 + small.length), SMALL, { handOver: true }), SMALL);
      expect(larger.byteLength).toBe(small.length + 16);
    });

    it('does not hold up a photo that arrives meanwhile: the helper turns to it', async () => {
      const order: string[] = [];
      const big = pool.analyze(crowd).then((a) => (order.push(CROWD), a));
      // The second photo arrives once the crowd's faces are being shared.
      while (!slotsOf(pool).some((s) => s.helping)) await new Promise((r) => setTimeout(r, 5));
      const next = pool.analyze(small).then((a) => (order.push(SMALL), a));
      const [b, n] = await Promise.all([big, next]);
      expect(order).toEqual([SMALL, CROWD]);
      expectSameFaces(b, CROWD);
      expectSameFaces(n, SMALL);
    });
  });
});
