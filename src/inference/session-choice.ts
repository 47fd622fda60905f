/**
 * The session settings the tuner (./session-tuner.ts) chooses, without onnxruntime itself: the
 * inference pool reads them on the main thread, which does not load the native binding.
 */
import { availableParallelism } from 'node:os';
import type { InferenceConfig, OrtLevel } from '../config/config.js';
import type { SessionOptions } from './onnx-session.js';

export type ModelRole = 'detector' | 'embedder';

/** The settings of one model's session. */
export interface SessionChoice {
  level: OrtLevel;
  /** Intra-op threads; 0: onnxruntime's default (one per physical core). */
  threads: number;
  /** Idle intra-op threads spin (onnxruntime's default) rather than sleep. */
  spinning: boolean;
}

export interface CandidateTime {
  choice: SessionChoice;
  /** Median over the timed runs of one pass over the input shapes, in ms. */
  ms: number;
  /** Which timing it came from: the levels, the thread layouts, or a winner's rematch against the incumbent. */
  step?: 'levels' | 'layouts' | 'rematch';
}

export interface ModelTuning {
  choice: SessionChoice;
  /**
   * measured: on this start; cache: measured on an earlier start on the same CPU; static: no tuning
   * (FACEMATCH_ORT_TUNING=off, or CUDA); override: FACEMATCH_ORT_OPTIMIZATION names the model.
   */
  source: 'measured' | 'cache' | 'static' | 'override';
  /** Each candidate's time (measured or cache); step 2 re-times the step 1 winner. */
  candidates: CandidateTime[];
  /** The input shapes timed, e.g. [[1,3,640,640]]. */
  shapes: number[][];
  /** Time spent choosing on this start (measuring, or reading the cache), ms. */
  tuneMs: number;
}

export interface Tuning {
  detector: ModelTuning;
  embedder: ModelTuning;
}

/** The session options of a model with this choice. */
export function sessionOptionsFor(inference: InferenceConfig, choice: SessionChoice): SessionOptions {
  return {
    device: inference.device,
    cudaDeviceId: inference.cudaDeviceId,
    intraOpThreads: choice.threads,
    interOpThreads: inference.interOpThreads,
    graphOptimizationLevel: choice.level,
    spinning: choice.spinning,
  };
}

/** e.g. "extended, 2 threads, no spinning". */
export function describeChoice(c: SessionChoice): string {
  const threads = c.threads === 0 ? 'default threads' : `${c.threads} thread${c.threads === 1 ? '' : 's'}`;
  return `${c.level}, ${threads}${c.spinning ? '' : ', no spinning'}`;
}

/**
 * Whether choosing may measure (tuning on, on the CPU, and a model not pinned by
 * FACEMATCH_ORT_OPTIMIZATION): then a pool lets its first worker choose alone.
 */
export function mayMeasure(inference: InferenceConfig): boolean {
  const { detector, embedder } = inference.ortOptimization;
  return inference.ortTuning === 'auto' && inference.device === 'cpu' && !(detector && embedder);
}

/**
 * The intra-op threads of each session in a pool of `workers`: the configured count, else the cores
 * shared out (at least one). The tuning cache is keyed by it.
 */
export function workerThreads(intraOpThreads: number, workers: number): number {
  return intraOpThreads || Math.max(1, Math.floor(availableParallelism() / Math.max(1, workers)));
}
