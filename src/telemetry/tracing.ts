/**
 * OpenTelemetry tracing: a Node tracer provider (AsyncLocalStorage context, so stage spans nest
 * under the request's span) exporting over OTLP/HTTP to Jaeger or any collector when an endpoint is
 * configured. Tests pass an in-memory exporter instead.
 */
import { trace, type Tracer } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  BatchSpanProcessor,
  SimpleSpanProcessor,
  type SpanExporter,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';
import { TRACER_NAME } from './attributes.js';

export interface Tracing {
  tracer: Tracer;
  shutdown(): Promise<void>;
}

export interface TracingOptions {
  /** OTLP/HTTP traces endpoint, e.g. http://jaeger:4318/v1/traces. */
  otlpEndpoint?: string;
  /** Spans go here synchronously (tests: InMemorySpanExporter). */
  exporter?: SpanExporter;
  version?: string;
  /** service.name of the spans: 'facematch' (the service) or 'facematch-controller'. */
  serviceName?: string;
}

export function setupTracing(o: TracingOptions): Tracing {
  const spanProcessors: SpanProcessor[] = [];
  if (o.exporter) spanProcessors.push(new SimpleSpanProcessor(o.exporter));
  if (o.otlpEndpoint) spanProcessors.push(new BatchSpanProcessor(new OTLPTraceExporter({ url: o.otlpEndpoint })));
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: o.serviceName ?? 'facematch', [ATTR_SERVICE_VERSION]: o.version ?? '0.0.0' }),
    spanProcessors,
  });
  provider.register();
  return {
    tracer: trace.getTracer(TRACER_NAME),
    shutdown: () => provider.shutdown(),
  };
}
