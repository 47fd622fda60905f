/**
 * Two analyses of one photo found the same faces: boxes, scores and landmarks equal, embeddings bit
 * for bit. How the pool's tests show that who ran a model (which worker, which session) changes
 * nothing in the answer.
 */
import { expect } from 'vitest';
import type { FaceAnalysis } from '../../src/domain/face.js';

export function expectSameFaces(got: FaceAnalysis, want: FaceAnalysis): void {
  expect(got.faces.map((f) => [f.box, f.score, f.landmarks])).toEqual(want.faces.map((f) => [f.box, f.score, f.landmarks]));
  expect(got.faces.map((f) => [...f.embedding])).toEqual(want.faces.map((f) => [...f.embedding]));
}
