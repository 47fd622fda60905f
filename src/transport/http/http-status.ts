import type { ErrorCode } from '../../domain/errors.js';

/** HTTP status for each error code; exhaustive, so a new code fails to compile until mapped. */
export function httpStatus(code: ErrorCode): number {
  switch (code) {
    case 'INVALID_ARGUMENT':
    case 'IMAGE_EMPTY':
    case 'IMAGE_UNSUPPORTED':
    case 'IMAGE_CORRUPT':
    case 'SOURCE_FORBIDDEN':
      return 400;
    case 'NO_FACE':
      return 422;
    case 'IMAGE_TOO_LARGE':
    case 'SOURCE_TOO_LARGE':
      return 413;
    case 'SOURCE_NOT_FOUND':
    case 'NOT_FOUND':
      return 404;
    case 'SOURCE_UNREACHABLE':
      return 502;
    case 'OVERLOADED':
      return 429;
    case 'CANCELLED':
      return 499;
    case 'BACKEND_UNAVAILABLE':
      return 503;
    case 'MODEL_NOT_FOUND':
    case 'MODEL_MISMATCH':
    case 'MODEL_CHECKSUM_MISMATCH':
    case 'EMBEDDER_MISMATCH':
    case 'CONFIG_INVALID':
    case 'INTERNAL':
      return 500;
  }
}
