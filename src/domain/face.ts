/** Plain value types of the face pipeline. Coordinates are pixels of the upright (EXIF-applied) image. */

export interface Box {
  x: number;
  y: number;
  width: number;
  height: number;
}

export type Point = readonly [number, number];

/** Left eye, right eye, nose tip, left mouth corner, right mouth corner (from the viewer's side). */
export type Landmarks = readonly [Point, Point, Point, Point, Point];

export interface DetectedFace {
  box: Box;
  score: number;
  landmarks: Landmarks;
}

export interface Face extends DetectedFace {
  /** L2-normalised embedding. */
  embedding: Float32Array;
}

/** The stages of processing a photo, in order: one span each, one timing each. */
export const STAGES = ['fetch', 'decode', 'detect', 'align', 'embed', 'store', 'search', 'draw', 'upload', 'record'] as const;
export type Stage = (typeof STAGES)[number];
/** The stages the face model runs (decode to embed). */
export type ModelStage = Extract<Stage, 'decode' | 'detect' | 'align' | 'embed'>;

/** When a stage ran, in milliseconds since the epoch (fractional): for tracing and timings alike. */
export interface StageSpan {
  stage: ModelStage;
  start: number;
  end: number;
  /** Span attributes of this stage only (the embed stage: faces embedded by other workers). */
  attributes?: Record<string, number>;
}

/** Milliseconds per stage (a stage that did not run is absent), and the whole request's. */
export type StageTimes = Partial<Record<Stage, number>> & { total: number };

/** Milliseconds of one stage in `spans` (0 if it did not run). */
export function stageMs(spans: readonly StageSpan[], stage: ModelStage): number {
  return spans.reduce((ms, s) => (s.stage === stage ? ms + s.end - s.start : ms), 0);
}

/** A face as drawn on the annotated copy. */
export interface DrawnFace extends DetectedFace {
  label?: string;
  /** Drawn in a second colour (e.g. a matched face). */
  highlight?: boolean;
}

/**
 * Decoded pixels of the upright photo (8-bit RGB, interleaved), possibly smaller than the original
 * (decoding shrinks large photos). Handed on so that drawing the annotated copy needs no second decode.
 */
export interface Picture {
  data: Uint8Array;
  width: number;
  height: number;
}

export interface FaceAnalysis {
  width: number;
  height: number;
  /** Largest face first. */
  faces: Face[];
  /** When each model stage ran. */
  stages: StageSpan[];
  /** The decoded photo, when the caller asked to keep it. */
  picture?: Picture;
}

export function cosine(a: Float32Array, b: Float32Array): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    dot += x * y;
    na += x * x;
    nb += y * y;
  }
  return dot / Math.sqrt(na * nb);
}
