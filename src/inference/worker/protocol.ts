/** Messages between the main thread and an inference worker. */
import type { ErrorCode } from '../../domain/errors.js';
import type { FaceAnalysis } from '../../domain/face.js';

export interface AnalyzeRequest {
  id: number;
  /** Transferred, not copied. */
  bytes: Uint8Array;
  what?: string;
  /** Send the decoded pixels back (transferred) with the analysis. */
  keepPicture?: boolean;
}

export type WorkerReply =
  | { id: number; ok: true; analysis: FaceAnalysis }
  | { id: number; ok: false; error: { code: ErrorCode; message: string } };

export interface WorkerReady {
  ready: true;
  pack: { name: string };
  threshold: number;
  dimension: number;
  provider: 'cpu' | 'cuda';
}

export interface WorkerFailed {
  ready: false;
  error: { code: ErrorCode; message: string };
}
