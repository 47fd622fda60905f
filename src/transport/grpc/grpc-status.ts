import { status } from '@grpc/grpc-js';
import type { ErrorCode } from '../../domain/errors.js';

/**
 * gRPC status for each error code; exhaustive, so a new code fails to compile until mapped.
 * UNAVAILABLE and RESOURCE_EXHAUSTED (overload) are the retryable ones (Envoy's retry policy).
 */
export function grpcStatus(code: ErrorCode): status {
  switch (code) {
    case 'INVALID_ARGUMENT':
    case 'IMAGE_EMPTY':
    case 'IMAGE_UNSUPPORTED':
    case 'IMAGE_CORRUPT':
    case 'SOURCE_FORBIDDEN':
      return status.INVALID_ARGUMENT;
    case 'NO_FACE':
    case 'SOURCE_NOT_FOUND':
    case 'SOURCE_UNREACHABLE':
      return status.FAILED_PRECONDITION;
    case 'IMAGE_TOO_LARGE':
    case 'SOURCE_TOO_LARGE':
    case 'OVERLOADED':
      return status.RESOURCE_EXHAUSTED;
    case 'NOT_FOUND':
      return status.NOT_FOUND;
    case 'CANCELLED':
      return status.CANCELLED;
    case 'BACKEND_UNAVAILABLE':
      return status.UNAVAILABLE;
    case 'MODEL_NOT_FOUND':
    case 'MODEL_MISMATCH':
    case 'MODEL_CHECKSUM_MISMATCH':
    case 'EMBEDDER_MISMATCH':
    case 'CONFIG_INVALID':
    case 'INTERNAL':
      return status.INTERNAL;
  }
}
