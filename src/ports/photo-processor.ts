import type { ErrorCode } from '../domain/errors.js';

/** The kind of a photo, as ProcessPhoto takes it. */
export type PhotoKind = 'ACTION_SHOT' | 'FACECAM';

/** One ProcessPhoto call, as the PhotoBatch controller makes it. */
export interface PhotoRequest {
  photoId: string;
  imageUrl: string;
  eventId: string;
  kind: PhotoKind;
  /** The enrolling user; required for a FACECAM. */
  userId?: string;
}

/** What a processed photo gave: the faces found and the enrolled users matched. */
export interface PhotoOutcome {
  faces: number;
  matched: number;
}

/**
 * The codes a processor fails with: the service's own (ErrorCode, carried in its status details),
 * or, when the call never got an answer from it, the transport's: UNAVAILABLE (no connection),
 * DEADLINE_EXCEEDED (no answer in time), RESOURCE_EXHAUSTED (a proxy shed the call).
 */
export type ProcessFailureCode = ErrorCode | 'UNAVAILABLE' | 'DEADLINE_EXCEEDED' | 'RESOURCE_EXHAUSTED';

/** The one error a PhotoProcessor throws: a code the caller can act on, and the original cause. */
export class PhotoProcessError extends Error {
  constructor(
    readonly code: ProcessFailureCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'PhotoProcessError';
  }
}

/**
 * The facematch service as the controller sees it (the gRPC client adapter implements it).
 * Throws PhotoProcessError; when `signal` aborts, the call is cancelled and it throws
 * PhotoProcessError('CANCELLED').
 */
export interface PhotoProcessor {
  process(request: PhotoRequest, signal: AbortSignal): Promise<PhotoOutcome>;
}
