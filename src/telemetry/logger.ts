import { isSpanContextValid, trace } from '@opentelemetry/api';
import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger };

/**
 * The active span's ids on every line logged inside it (the names OpenTelemetry's pino
 * instrumentation uses): `trace_id` leads from a log line to its trace in Jaeger, `trace_flags` says
 * whether the head sampler kept it ("01"; "00": only kept if the request failed or was slow).
 */
export function traceFields(): Record<string, string> {
  const ctx = trace.getActiveSpan()?.spanContext();
  if (!ctx || !isSpanContextValid(ctx)) return {};
  return { trace_id: ctx.traceId, span_id: ctx.spanId, trace_flags: `0${ctx.traceFlags.toString(16)}`.slice(-2) };
}

/** JSON lines on stderr, so that stdout stays free for the CLI's own output. */
export function createLogger(level: string, destination: DestinationStream = pino.destination(2)): Logger {
  return pino({ level, base: { service: 'facematch' }, mixin: traceFields }, destination);
}
