/**
 * What the transports do to their SERVER spans (names and attributes in attributes.ts): a failure
 * always carries its stable code (facematch.error_code, and the semantic conventions' error.type);
 * it is an exception event and status ERROR when it is the server's fault (gRPC: UNKNOWN,
 * DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS; HTTP: 5xx), as the RPC and HTTP
 * semantic conventions say for server spans. A caller's mistake (INVALID_ARGUMENT, a photo without
 * a face) leaves the SERVER span's status unset; the use case's span below it is ERROR all the same.
 */
import { SpanStatusCode, type Span } from '@opentelemetry/api';
import { ATTR_ERROR_TYPE } from '@opentelemetry/semantic-conventions';
import { ATTR } from './attributes.js';

export function recordFailure(span: Span, failure: { code: string; message: string }, fault: boolean, original?: unknown): void {
  span.setAttributes({ [ATTR_ERROR_TYPE]: failure.code, [ATTR.errorCode]: failure.code });
  if (!fault) return;
  span.recordException(original instanceof Error ? original : { name: failure.code, message: failure.message });
  span.setStatus({ code: SpanStatusCode.ERROR, message: `${failure.code}: ${failure.message}` });
}
