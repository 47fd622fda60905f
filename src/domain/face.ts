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

export interface StageTimings {
  decodeMs: number;
  detectMs: number;
  alignMs: number;
  embedMs: number;
}

/** When a pipeline stage ran, in milliseconds since the epoch (fractional), for tracing. */
export interface StageSpan {
  stage: 'decode' | 'detect' | 'align' | 'embed';
  start: number;
  end: number;
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
  timings: StageTimings;
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
