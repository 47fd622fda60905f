/**
 * onnxruntime session creation: CPU by default, CUDA when configured, with a logged fallback to the
 * CPU when the CUDA provider cannot load (no GPU, no CUDA/cuDNN libraries in the image).
 */
import * as ort from 'onnxruntime-node';
import type { OrtLevel } from '../config/config.js';
import type { Logger } from '../telemetry/logger.js';
import { ModelMismatchError } from '../domain/errors.js';

export interface SessionOptions {
  device: 'cpu' | 'cuda';
  cudaDeviceId: number;
  intraOpThreads: number;
  interOpThreads: number;
  /** Graph optimisation level on the CPU; default all (CUDA always gets all). */
  graphOptimizationLevel?: OrtLevel;
  /**
   * Whether idle intra-op threads spin (onnxruntime's default) or sleep: sleeping ones leave the
   * cores to other workers' sessions.
   */
  spinning?: boolean;
}

export interface LoadedSession {
  session: ort.InferenceSession;
  /** The provider that actually runs the model. */
  provider: 'cpu' | 'cuda';
}

function baseOptions(o: SessionOptions): ort.InferenceSession.SessionOptions {
  return {
    graphOptimizationLevel: o.device === 'cuda' ? 'all' : (o.graphOptimizationLevel ?? 'all'),
    // Severity 3 = errors only: SCRFD exports declare 640x640 output shapes and warn on every run at
    // any other input size.
    logSeverityLevel: 3,
    ...(o.intraOpThreads > 0 ? { intraOpNumThreads: o.intraOpThreads } : {}),
    ...(o.interOpThreads > 0 ? { interOpNumThreads: o.interOpThreads } : {}),
    // The Node binding joins the keys with dots: the session config entry session.intra_op.allow_spinning.
    ...(o.spinning === false ? { extra: { session: { intra_op: { allow_spinning: '0' } } } } : {}),
  };
}

export async function createSession(file: string, o: SessionOptions, log: Logger): Promise<LoadedSession> {
  const opts = baseOptions(o);
  if (o.device === 'cuda') {
    try {
      const session = await ort.InferenceSession.create(file, {
        ...opts,
        executionProviders: [{ name: 'cuda', deviceId: o.cudaDeviceId }],
      });
      log.info({ model: file, provider: 'cuda', deviceId: o.cudaDeviceId }, 'model loaded on CUDA');
      return { session, provider: 'cuda' };
    } catch (error) {
      log.warn(
        { model: file, err: error instanceof Error ? error.message : String(error) },
        'CUDA execution provider unavailable, falling back to CPU',
      );
    }
  }
  try {
    const session = await ort.InferenceSession.create(file, { ...opts, executionProviders: ['cpu'] });
    log.debug({ model: file, provider: 'cpu' }, 'model loaded on CPU');
    return { session, provider: 'cpu' };
  } catch (cause) {
    throw new ModelMismatchError(`${file} is not a loadable ONNX model: ${(cause as Error).message}`, { cause });
  }
}

export interface TensorInfo {
  name: string;
  /** Dimensions; a string or -1 is symbolic (dynamic). */
  shape: readonly (number | string)[];
}

function info(meta: readonly ort.InferenceSession.ValueMetadata[]): TensorInfo[] {
  return meta.map((m) => ({ name: m.name, shape: m.isTensor ? m.shape : [] }));
}

export function inputsOf(session: ort.InferenceSession): TensorInfo[] {
  return info(session.inputMetadata);
}

export function outputsOf(session: ort.InferenceSession): TensorInfo[] {
  return info(session.outputMetadata);
}

export const isFixed = (d: number | string | undefined): d is number => typeof d === 'number' && d > 0;
