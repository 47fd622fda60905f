/**
 * Typed failures a caller can act on. Every error carries a stable `code` from one union; transports
 * map codes to gRPC/HTTP status in one exhaustive switch each, and the CLI prints `{code, message}`.
 */
export type ErrorCode =
  | 'INVALID_ARGUMENT'
  | 'IMAGE_EMPTY'
  | 'IMAGE_UNSUPPORTED'
  | 'IMAGE_CORRUPT'
  | 'IMAGE_TOO_LARGE'
  | 'SOURCE_NOT_FOUND'
  | 'SOURCE_UNREACHABLE'
  | 'SOURCE_TOO_LARGE'
  | 'NO_FACE'
  | 'MODEL_NOT_FOUND'
  | 'MODEL_MISMATCH'
  | 'MODEL_CHECKSUM_MISMATCH'
  | 'EMBEDDER_MISMATCH'
  | 'CONFIG_INVALID'
  | 'NOT_FOUND'
  | 'BACKEND_UNAVAILABLE'
  | 'OVERLOADED'
  | 'CANCELLED'
  | 'SOURCE_FORBIDDEN'
  | 'INTERNAL';

export abstract class FacematchError extends Error {
  abstract readonly code: ErrorCode;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }

  toJSON(): { code: ErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

export class InvalidArgumentError extends FacematchError {
  readonly code = 'INVALID_ARGUMENT';
}

/** The bytes are empty: nothing to decode. */
export class EmptyImageError extends FacematchError {
  readonly code = 'IMAGE_EMPTY';
}

/** The bytes are not an image in a format we decode (JPEG, PNG, WebP, GIF, TIFF, AVIF). */
export class UnsupportedImageError extends FacematchError {
  readonly code = 'IMAGE_UNSUPPORTED';
}

/** A known format whose data is damaged or truncated. */
export class CorruptImageError extends FacematchError {
  readonly code = 'IMAGE_CORRUPT';
}

/** More pixels than the configured limit (decompression-bomb guard). */
export class ImageTooLargeError extends FacematchError {
  readonly code = 'IMAGE_TOO_LARGE';
}

export class SourceNotFoundError extends FacematchError {
  readonly code = 'SOURCE_NOT_FOUND';
}

export class SourceUnreachableError extends FacematchError {
  readonly code = 'SOURCE_UNREACHABLE';
}

/** The download is larger than the configured byte limit. */
export class SourceTooLargeError extends FacematchError {
  readonly code = 'SOURCE_TOO_LARGE';
}

/** An operation that needs a face (compare, enrol) got an image without one. */
export class NoFaceError extends FacematchError {
  readonly code = 'NO_FACE';
}

export class ModelNotFoundError extends FacematchError {
  readonly code = 'MODEL_NOT_FOUND';
}

/** The ONNX file's inputs/outputs do not fit the model pack manifest. */
export class ModelMismatchError extends FacematchError {
  readonly code = 'MODEL_MISMATCH';
}

export class ModelChecksumError extends FacematchError {
  readonly code = 'MODEL_CHECKSUM_MISMATCH';
}

/**
 * The vector store holds embeddings of another embedder than the configured model pack's: vectors of
 * two embedders must never be compared. Raised at start; the message names both.
 */
export class EmbedderMismatchError extends FacematchError {
  readonly code = 'EMBEDDER_MISMATCH';
}

export class ConfigError extends FacematchError {
  readonly code = 'CONFIG_INVALID';
}

/** A photo or user id that is not known. */
export class NotFoundError extends FacematchError {
  readonly code = 'NOT_FOUND';
}

/** A store (vector, object, match) cannot be reached; the message names it. */
export class BackendUnavailableError extends FacematchError {
  readonly code = 'BACKEND_UNAVAILABLE';
}

/** Too much work in flight: try again later. */
export class OverloadedError extends FacematchError {
  readonly code = 'OVERLOADED';
}

/** The caller went away or its deadline passed; the work stopped at a stage boundary. */
export class CancelledError extends FacematchError {
  readonly code = 'CANCELLED';
}

/** A URL to a private, loopback or link-local address that is not allow-listed (SSRF guard). */
export class SourceForbiddenError extends FacematchError {
  readonly code = 'SOURCE_FORBIDDEN';
}

export class InternalError extends FacematchError {
  readonly code = 'INTERNAL';
}

/** Wraps anything thrown into a FacematchError so callers see one shape. */
export function toFacematchError(error: unknown): FacematchError {
  if (error instanceof FacematchError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new InternalError(message, { cause: error });
}

const BY_CODE: Record<ErrorCode, new (message: string) => FacematchError> = {
  INVALID_ARGUMENT: InvalidArgumentError,
  IMAGE_EMPTY: EmptyImageError,
  IMAGE_UNSUPPORTED: UnsupportedImageError,
  IMAGE_CORRUPT: CorruptImageError,
  IMAGE_TOO_LARGE: ImageTooLargeError,
  SOURCE_NOT_FOUND: SourceNotFoundError,
  SOURCE_UNREACHABLE: SourceUnreachableError,
  SOURCE_TOO_LARGE: SourceTooLargeError,
  SOURCE_FORBIDDEN: SourceForbiddenError,
  NO_FACE: NoFaceError,
  NOT_FOUND: NotFoundError,
  BACKEND_UNAVAILABLE: BackendUnavailableError,
  OVERLOADED: OverloadedError,
  CANCELLED: CancelledError,
  MODEL_NOT_FOUND: ModelNotFoundError,
  MODEL_MISMATCH: ModelMismatchError,
  MODEL_CHECKSUM_MISMATCH: ModelChecksumError,
  EMBEDDER_MISMATCH: EmbedderMismatchError,
  CONFIG_INVALID: ConfigError,
  INTERNAL: InternalError,
};

/** Rebuilds a typed error from its JSON form (errors crossing a worker-thread boundary). */
export function errorFromJSON(json: { code: ErrorCode; message: string }): FacematchError {
  const Ctor = BY_CODE[json.code] ?? InternalError;
  return new Ctor(json.message);
}
