/**
 * The face model and the annotator the use cases need. Two implementations each: the service's
 * worker pools (AnalyzerPool, DrawWorker) and the in-process FaceAnalyzer / annotate() that the CLI
 * and the tests use.
 */
import type { DrawnFace, FaceAnalysis, Picture } from '../domain/face.js';

export interface FaceModel {
  readonly threshold: number;
  readonly pack: { name: string };
  /**
   * With `keepPicture`, the decoded pixels come back too (to draw the annotated copy on). With
   * `signal`, a photo still queued is dropped when it aborts, and the call rejects at once.
   */
  analyze(bytes: Uint8Array, what?: string, options?: { keepPicture?: boolean; signal?: AbortSignal }): Promise<FaceAnalysis>;
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
