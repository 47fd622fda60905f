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

/**
 * The time to give every span this process starts and ends (`startTime`, `end(...)`): epoch
 * milliseconds from one monotonic clock. The SDK anchors each span on its own `Date.now()` reading
 * (whole milliseconds, and the wall clock drifts against the monotonic one), so a child span timed
 * by it can appear to end up to a few milliseconds after its parent; with one clock for all spans,
 * a child that ends first is shown ending first.
 */
export const spanTime = (): number => performance.timeOrigin + performance.now();
