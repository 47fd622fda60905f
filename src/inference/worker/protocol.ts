/** Messages between the main thread and an inference worker. */
import type { DecodeConfig, InferenceConfig } from '../../config/config.js';
import type { ErrorCode } from '../../domain/errors.js';
import type { DrawnFace, FaceAnalysis, Picture } from '../../domain/face.js';
import type { AnnotateOptions } from '../annotate.js';
import type { Tuning } from '../session-choice.js';
import type { SharedFaces } from '../shared-embedding.js';

export interface WorkerData {
  /** Which worker (./entry.ts). */
  entry: 'analyzer.worker';
  inference: InferenceConfig;
  decode: DecodeConfig;
  logLevel: string;
  /** Pictures handed back are shrunk to fit this many pixels on their longer side (0: as decoded). */
  pictureMaxSide: number;
  /** Session settings the first worker chose; absent in the first worker (it chooses them). */
  tuning?: Tuning;
  /** The pool has other workers: offer a photo's faces to them (../shared-embedding.ts). */
  shareFaces?: boolean;
  /**
   * One Int32: the pool's idle workers while no photo waits (0 otherwise), kept by the pool. While
   * it is above 0 the worker's detector (and a lone face's embedder) runs on every core (../spare-cores.ts).
   */
  spare?: SharedArrayBuffer;
}

/** To an idle worker: embed faces of another worker's photo while some are left. */
export interface HelpRequest {
  help: SharedFaces;
}

/** From a worker: the faces of its photo are offered to idle workers. */
export interface ShareOffer {
  kind: 'share';
  task: SharedFaces;
}

/** From a helper: it has stopped taking faces of the offered photo (none left, or told to stop). */
export interface HelpDone {
  kind: 'helped';
  faces: number;
}

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

export type WorkerMessage = WorkerReply | ShareOffer | HelpDone;

export interface WorkerReady {
  ready: true;
  pack: { name: string };
  threshold: number;
  dimension: number;
  provider: 'cpu' | 'cuda';
  tuning: Tuning;
}

export interface WorkerFailed {
  ready: false;
  error: { code: ErrorCode; message: string };
}

/** To the drawing worker: the source (transferred) and what to draw over it. */
export interface DrawRequest {
  id: number;
  source: Uint8Array | Picture;
  faces: readonly DrawnFace[];
  options: AnnotateOptions;
}

export type DrawReply =
  | { id: number; ok: true; jpeg: Uint8Array }
  | { id: number; ok: false; error: { code: ErrorCode; message: string } };
