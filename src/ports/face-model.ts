/**
 * The face model and the annotator the use cases need. Two implementations each: the service's
 * worker pools (AnalyzerPool, DrawWorker) and the in-process FaceAnalyzer / annotate() that the CLI
 * and the tests use.
 */
import type { DrawnFace, FaceAnalysis, Picture } from '../domain/face.js';

export interface AnalyzeOptions {
  keepPicture?: boolean;
  signal?: AbortSignal;
  handOver?: boolean;
}

export interface FaceModel {
  readonly threshold: number;
  readonly pack: { name: string };
  /**
   * With `keepPicture`, the decoded pixels come back too (to draw the annotated copy on). With
   * `signal`, a photo still queued is dropped when it aborts, and the call rejects at once. With
   * `handOver` the caller gives the bytes up: an implementation may take their buffer instead of
   * copying it (the caller's array is then empty), and returns the picture whenever it is asked for
   * one, so that nothing needs the bytes afterwards.
   */
  analyze(bytes: Uint8Array, what?: string, options?: AnalyzeOptions): Promise<FaceAnalysis>;
}

/**
 * Draws faces over the photo (of the given upright size) and encodes a JPEG, from the decoded
 * pixels the model handed back or else from the encoded bytes.
 */
export type Annotator = (
  source: Uint8Array | Picture,
  faces: readonly DrawnFace[],
  size: { width: number; height: number },
) => Promise<Uint8Array>;
