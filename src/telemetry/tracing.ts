/**
 * OpenTelemetry tracing: a Node tracer provider (AsyncLocalStorage context, so stage spans nest
 * under the request's span), configured by the standard OTEL_* variables that src/config parses and
 * hands in here (nothing below reads process.env):
 *
 *  - export: OTLP over http/protobuf (the default), http/json or gRPC, to the configured endpoint,
 *    with its headers and timeout; no endpoint, no export. Tests pass an in-memory exporter.
 *  - resource: service.name (facematch / facematch-controller, or OTEL_SERVICE_NAME),
 *    service.version, service.instance.id (a UUID per process), OTEL_RESOURCE_ATTRIBUTES (the chart
 *    sets k8s.pod.name and k8s.namespace.name there), and what the caller adds: the model pack and
 *    the execution provider, which may be a promise (the provider is known once the models loaded).
 *  - head sampling: OTEL_TRACES_SAMPLER (+ _ARG), parent-based always-on by default.
 *  - the tail rule (TailSpanProcessor below): a trace the head sampler did not keep is recorded
 *    anyway, held in memory until its local root span ends, and exported if that request failed or
 *    was slow; otherwise dropped. Bounded: at most `maxTraces` traces of `maxSpansPerTrace` spans.
 */
import { randomUUID } from 'node:crypto';
import { Metadata } from '@grpc/grpc-js';
import {
  ProxyTracerProvider,
  SpanStatusCode,
  trace,
  TraceFlags,
  type Attributes,
  type AttributeValue,
  type Context,
  type Link,
  type SpanKind,
  type Tracer,
} from '@opentelemetry/api';
import { OTLPTraceExporter as OtlpGrpcExporter } from '@opentelemetry/exporter-trace-otlp-grpc';
import { OTLPTraceExporter as OtlpJsonExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as OtlpProtoExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { defaultResource, resourceFromAttributes, type Resource } from '@opentelemetry/resources';
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BatchSpanProcessor,
  ParentBasedSampler,
  SamplingDecision,
  SimpleSpanProcessor,
  TraceIdRatioBasedSampler,
  type ReadableSpan,
  type Sampler,
  type SamplingResult,
  type Span,
  type SpanExporter,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { ATTR_SERVICE_INSTANCE_ID, ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';
import type { SamplerName, TracingConfig } from '../config/config.js';
import { ATTR, DEFAULT_SERVICE_NAME, TRACER_NAME } from './attributes.js';

export interface Tracing {
  tracer: Tracer;
  /** The spans' resource (its async attributes resolve when the caller's promises do). */
  resource: Resource | undefined;
  /** What the tail rule did so far (undefined when it is off). */
  tail: TailStats | undefined;
  forceFlush(): Promise<void>;
  shutdown(): Promise<void>;
}

export interface TracingOptions {
  /** parseConfig(...).tracing; absent: sampler always on, tail rule off, no export but `otlpEndpoint`. */
  config?: TracingConfig;
  /** OTLP/HTTP (protobuf) traces URL, e.g. http://jaeger:4318/v1/traces, when `config` gives none. */
  otlpEndpoint?: string;
  /** Spans go here synchronously (tests: InMemorySpanExporter), behind the same sampling. */
  exporter?: SpanExporter;
  version?: string;
  /** service.name unless OTEL_SERVICE_NAME is set: 'facematch' (the service) or 'facematch-controller'. */
  serviceName?: string;
  /** More resource attributes (facematch.model_pack, facematch.provider); a promise is waited for before export. */
  resource?: Record<string, AttributeValue | Promise<AttributeValue | undefined> | undefined>;
  /** Bounds of the tail rule's buffer. */
  tail?: { maxTraces?: number; maxSpansPerTrace?: number };
  /** The tracer's name (its spans' instrumentation scope); default `facematch`. */
  tracerName?: string;
}

export function headSampler(name: SamplerName, ratio: number): Sampler {
  switch (name) {
    case 'always_on':
      return new AlwaysOnSampler();
    case 'always_off':
      return new AlwaysOffSampler();
    case 'traceidratio':
      return new TraceIdRatioBasedSampler(ratio);
    case 'parentbased_always_on':
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
    case 'parentbased_always_off':
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    case 'parentbased_traceidratio':
      return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio) });
  }
}

/**
 * The head sampler's decision, except that a span it would not record is recorded (not sampled):
 * the tail rule needs the spans of every request to export a failed or slow one. The trace flags
 * the callee sees are the head sampler's (sampled or not), so sampling downstream is unchanged.
 */
export class RecordAllSampler implements Sampler {
  constructor(private readonly head: Sampler) {}

  shouldSample(context: Context, traceId: string, name: string, kind: SpanKind, attributes: Attributes, links: Link[]): SamplingResult {
    const result = this.head.shouldSample(context, traceId, name, kind, attributes, links);
    return result.decision === SamplingDecision.NOT_RECORD ? { ...result, decision: SamplingDecision.RECORD } : result;
  }

  toString(): string {
    return `RecordAll{${this.head.toString()}}`;
  }
}

export interface TailStats {
  /** Local traces exported because they failed, or were slow. */
  keptFailed: number;
  keptSlow: number;
  /** Local traces the head sampler did not keep and the tail rule dropped. */
  dropped: number;
  /** Buffered traces evicted (the buffer was full) before their root ended, and spans over a trace's bound. */
  evicted: number;
  overflowSpans: number;
}

const ms = (t: readonly [number, number]): number => t[0] * 1e3 + t[1] / 1e6;

/** `span` with the sampled flag set (an exporting processor skips unsampled spans), and `extra` attributes. */
function asSampled(span: ReadableSpan, extra?: Attributes): ReadableSpan {
  const context = { ...span.spanContext(), traceFlags: span.spanContext().traceFlags | TraceFlags.SAMPLED };
  return {
    name: span.name,
    kind: span.kind,
    spanContext: () => context,
    ...(span.parentSpanContext ? { parentSpanContext: span.parentSpanContext } : {}),
    startTime: span.startTime,
    endTime: span.endTime,
    status: span.status,
    attributes: extra ? { ...span.attributes, ...extra } : span.attributes,
    links: span.links,
    events: span.events,
    duration: span.duration,
    ended: span.ended,
    resource: span.resource,
    instrumentationScope: span.instrumentationScope,
    droppedAttributesCount: span.droppedAttributesCount,
    droppedEventsCount: span.droppedEventsCount,
    droppedLinksCount: span.droppedLinksCount,
  };
}

/**
 * The tail rule, in process. Sampled spans go straight on to `next`. An unsampled span (recorded
 * thanks to RecordAllSampler) waits in a buffer keyed by its trace until the local root of that trace
 * ends: the span with no parent, or a remote one (the service's SERVER span, the controller's photo
 * span). The root then decides for all of them: if it or any buffered span has status ERROR
 * (`keepFailed`), or the root lasted `slowMs` or more (0: never), they are exported (marked sampled,
 * the root with facematch.trace.kept = failed | slow); otherwise dropped.
 *
 * Memory is bounded: at most `maxTraces` traces wait (the oldest is evicted beyond) and a trace holds
 * at most `maxSpansPerTrace` spans (a ProcessPhoto call makes about 15). Spans that end after their
 * root are dropped. What it cannot do: the callers' part of a trace they did not sample is not
 * there (the exported part hangs under a parent span nobody exported).
 */
export class TailSpanProcessor implements SpanProcessor {
  readonly stats: TailStats = { keptFailed: 0, keptSlow: 0, dropped: 0, evicted: 0, overflowSpans: 0 };
  private readonly waiting = new Map<string, ReadableSpan[]>();
  private readonly maxTraces: number;
  private readonly maxSpansPerTrace: number;

  constructor(
    private readonly next: SpanProcessor,
    private readonly rule: { keepFailed: boolean; slowMs: number; maxTraces?: number; maxSpansPerTrace?: number },
  ) {
    this.maxTraces = rule.maxTraces ?? 1024;
    this.maxSpansPerTrace = rule.maxSpansPerTrace ?? 256;
  }

  /** Traces waiting for their root (tests). */
  get buffered(): number {
    return this.waiting.size;
  }

  onStart(span: Span, parentContext: Context): void {
    this.next.onStart(span, parentContext);
  }

  onEnd(span: ReadableSpan): void {
    const ctx = span.spanContext();
    if (ctx.traceFlags & TraceFlags.SAMPLED) {
      this.next.onEnd(span);
      return;
    }
    const localRoot = !span.parentSpanContext || span.parentSpanContext.isRemote === true;
    const spans = this.waiting.get(ctx.traceId);
    if (!localRoot) {
      if (spans) {
        if (spans.length < this.maxSpansPerTrace) spans.push(span);
        else this.stats.overflowSpans++;
        return;
      }
      if (this.waiting.size >= this.maxTraces) {
        const oldest = this.waiting.keys().next().value as string;
        this.waiting.delete(oldest);
        this.stats.evicted++;
      }
      this.waiting.set(ctx.traceId, [span]);
      return;
    }
    this.waiting.delete(ctx.traceId);
    const children = spans ?? [];
    const failed = this.rule.keepFailed && [span, ...children].some((s) => s.status.code === SpanStatusCode.ERROR);
    const slow = this.rule.slowMs > 0 && ms(span.duration) >= this.rule.slowMs;
    if (!failed && !slow) {
      this.stats.dropped++;
      return;
    }
    if (failed) this.stats.keptFailed++;
    else this.stats.keptSlow++;
    for (const child of children) this.next.onEnd(asSampled(child));
    this.next.onEnd(asSampled(span, { [ATTR.keptBy]: failed ? 'failed' : 'slow' }));
  }

  forceFlush(): Promise<void> {
    return this.next.forceFlush();
  }

  shutdown(): Promise<void> {
    this.waiting.clear();
    return this.next.shutdown();
  }
}

/** Several processors as one (the tail rule sits in front of all of them). */
class FanOut implements SpanProcessor {
  constructor(private readonly all: SpanProcessor[]) {}
  onStart(span: Span, parentContext: Context): void {
    for (const p of this.all) p.onStart(span, parentContext);
  }
  onEnd(span: ReadableSpan): void {
    for (const p of this.all) p.onEnd(span);
  }
  async forceFlush(): Promise<void> {
    await Promise.all(this.all.map((p) => p.forceFlush()));
  }
  async shutdown(): Promise<void> {
    await Promise.all(this.all.map((p) => p.shutdown()));
  }
}

function otlpExporter(e: NonNullable<TracingConfig['export']>): SpanExporter {
  switch (e.protocol) {
    case 'grpc': {
      const metadata = new Metadata();
      for (const [k, v] of Object.entries(e.headers)) metadata.set(k, v);
      return new OtlpGrpcExporter({ url: e.endpoint, metadata, timeoutMillis: e.timeoutMs });
    }
    case 'http/json':
      return new OtlpJsonExporter({ url: e.endpoint, headers: e.headers, timeoutMillis: e.timeoutMs });
    case 'http/protobuf':
      return new OtlpProtoExporter({ url: e.endpoint, headers: e.headers, timeoutMillis: e.timeoutMs });
  }
}

export function setupTracing(o: TracingOptions): Tracing {
  const c = o.config;
  const tracerName = o.tracerName ?? TRACER_NAME;
  if (c?.disabled) {
    // OTEL_SDK_DISABLED: a tracer of nothing (its spans are non-recording, without ids of their own).
    return {
      tracer: new ProxyTracerProvider().getTracer(tracerName),
      resource: undefined,
      tail: undefined,
      forceFlush: () => Promise.resolve(),
      shutdown: () => Promise.resolve(),
    };
  }
  const exporting: SpanProcessor[] = [];
  if (o.exporter) exporting.push(new SimpleSpanProcessor(o.exporter));
  const target = c?.export ?? (o.otlpEndpoint ? { endpoint: o.otlpEndpoint, protocol: 'http/protobuf' as const, headers: {}, timeoutMs: 10_000 } : undefined);
  if (target) exporting.push(new BatchSpanProcessor(otlpExporter(target)));

  const head = headSampler(c?.sampler.name ?? 'parentbased_always_on', c?.sampler.ratio ?? 1);
  const tailOn = !!c && (c.keepFailed || c.slowMs > 0);
  const next = exporting.length === 1 ? exporting[0]! : new FanOut(exporting);
  const tail = tailOn
    ? new TailSpanProcessor(next, { keepFailed: c.keepFailed, slowMs: c.slowMs, ...(o.tail ?? {}) })
    : undefined;

  const resource = defaultResource()
    .merge(
      resourceFromAttributes({
        [ATTR_SERVICE_NAME]: o.serviceName ?? DEFAULT_SERVICE_NAME.service,
        [ATTR_SERVICE_VERSION]: o.version ?? '0.0.0',
        [ATTR_SERVICE_INSTANCE_ID]: randomUUID(),
      }),
    )
    .merge(resourceFromAttributes(c?.resourceAttributes ?? {}))
    .merge(resourceFromAttributes({ ...(c?.serviceName ? { [ATTR_SERVICE_NAME]: c.serviceName } : {}), ...(o.resource ?? {}) }));

  const provider = new NodeTracerProvider({
    resource,
    sampler: tail ? new RecordAllSampler(head) : head,
    spanProcessors: tail ? [tail] : exporting,
  });
  // The global provider (for code that asks the API for a tracer), the W3C trace context and baggage
  // propagator and the AsyncLocalStorage context manager. Only the first provider of a process
  // becomes the global one: each Tracing hands out its own provider's tracer, so two in one process
  // (tests: a service and a controller) keep their own service.name.
  provider.register();
  return {
    tracer: provider.getTracer(tracerName, o.version),
    resource,
    tail: tail?.stats,
    forceFlush: () => provider.forceFlush(),
    shutdown: async () => {
      const global = trace.getTracerProvider();
      if (global instanceof ProxyTracerProvider && global.getDelegate() === provider) trace.disable();
      await provider.shutdown();
    },
  };
}
