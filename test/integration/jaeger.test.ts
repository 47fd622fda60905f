/**
 * The test Jaeger (`scripts/test-env up jaeger`: Jaeger v2, OTLP receivers and the query API on
 * loopback) takes the spans facematch's own exporter setup sends, and gives them back from the query
 * API the end-to-end run and the latency report read (`/api/v3/traces`):
 *
 *   - the exporter is configured the way the service is, from OTEL_EXPORTER_OTLP_ENDPOINT
 *     (parseConfig, then setupTracing), and sends OTLP/HTTP to FACEMATCH_TEST_JAEGER_OTLP_HTTP;
 *   - a search by service name and time window finds the trace, with its resource (service.name),
 *     its scope (the facematch tracer), every span's name, parent, attributes and error status;
 *   - the same trace comes back by its id, and a search that matches nothing answers 404.
 *
 * The answers are OTLP JSON with ids in hex (not protobuf JSON's base64) and numeric enums.
 *
 * Needs FACEMATCH_TEST_JAEGER_OTLP_HTTP and FACEMATCH_TEST_JAEGER_QUERY (from `scripts/test-env env
 * jaeger`); skipped without them.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { SpanStatusCode } from '@opentelemetry/api';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/config.js';
import { ATTR, SPAN, stageSpan, TRACER_NAME } from '../../src/telemetry/attributes.js';
import { setupTracing } from '../../src/telemetry/tracing.js';

const OTLP_HTTP = process.env.FACEMATCH_TEST_JAEGER_OTLP_HTTP;
const QUERY = process.env.FACEMATCH_TEST_JAEGER_QUERY;
if (!OTLP_HTTP || !QUERY) console.warn('jaeger.test.ts skipped: needs the test Jaeger (scripts/test-env up jaeger; npm run test:integration)');

/** The OTLP JSON the query API answers with (the parts read here). */
interface AnyValue {
  stringValue?: string;
  intValue?: string | number;
  boolValue?: boolean;
}
interface KeyValue {
  key: string;
  value: AnyValue;
}
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  attributes?: KeyValue[];
  status?: { code?: number; message?: string };
}
interface TracesData {
  resourceSpans?: {
    resource?: { attributes?: KeyValue[] };
    scopeSpans?: { scope?: { name?: string }; spans?: OtlpSpan[] }[];
  }[];
}

const attr = (attrs: KeyValue[] | undefined, key: string): string | number | boolean | undefined => {
  const v = attrs?.find((a) => a.key === key)?.value;
  if (!v) return undefined;
  if (v.intValue !== undefined) return Number(v.intValue);
  return v.stringValue ?? v.boolValue;
};

async function query(pathAndQuery: string): Promise<{ status: number; body: { result?: TracesData; error?: { message?: string } } }> {
  const res = await fetch(`${QUERY}${pathAndQuery}`, { signal: AbortSignal.timeout(10_000) });
  return { status: res.status, body: (await res.json()) as { result?: TracesData } };
}

/** GET /api/v3/traces for one service in [since, now + 1 min] (the memory store needs num_traces). */
function findTraces(service: string, since: Date): Promise<Awaited<ReturnType<typeof query>>> {
  const q = new URLSearchParams({
    'query.service_name': service,
    'query.start_time_min': since.toISOString(),
    'query.start_time_max': new Date(Date.now() + 60_000).toISOString(),
    'query.num_traces': '20',
  });
  return query(`/api/v3/traces?${q.toString()}`);
}

describe.skipIf(!OTLP_HTTP || !QUERY)('the test Jaeger and facematch exporter setup', () => {
  // A service name of this run only, so that earlier runs' traces in the same Jaeger never match.
  const service = `facematch-jaeger-test-${randomUUID().slice(0, 8)}`;
  const photoId = `photo-${randomUUID().slice(0, 8)}`;
  const since = new Date(Date.now() - 1000);
  const sent = { traceId: '', rootSpanId: '', stageSpanId: '' };

  beforeAll(async () => {
    // The service's path: the OTEL_* variable the chart sets, parsed by the service's config.
    const config = parseConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: OTLP_HTTP });
    expect(config.otlpTracesEndpoint).toBe(`${OTLP_HTTP}/v1/traces`);
    const tracing = setupTracing({ ...(config.otlpTracesEndpoint ? { otlpEndpoint: config.otlpTracesEndpoint } : {}), serviceName: service });
    tracing.tracer.startActiveSpan(SPAN.processPhoto, (root) => {
      root.setAttribute(ATTR.photoId, photoId);
      root.setAttribute(ATTR.faces, 3);
      sent.traceId = root.spanContext().traceId;
      sent.rootSpanId = root.spanContext().spanId;
      tracing.tracer.startActiveSpan(stageSpan('decode'), (stage) => {
        sent.stageSpanId = stage.spanContext().spanId;
        stage.setStatus({ code: SpanStatusCode.ERROR, message: 'unsupported image' });
        stage.end();
      });
      root.end();
    });
    await tracing.shutdown(); // flushes the batch processor: the spans are sent when this resolves
  });

  it('finds the trace by service name, with its resource, scope, spans, parents, attributes and error status', async () => {
    // The collector's batch processor holds spans up to 200 ms before they reach the store.
    let found: Awaited<ReturnType<typeof findTraces>> | undefined;
    for (let i = 0; i < 40; i++) {
      found = await findTraces(service, since);
      if (found.status === 200) break;
      await sleep(250);
    }
    expect(found?.status, JSON.stringify(found?.body)).toBe(200);
    const resourceSpans = found?.body.result?.resourceSpans ?? [];
    expect(resourceSpans.map((r) => attr(r.resource?.attributes, 'service.name'))).toEqual(expect.arrayContaining([service]));
    const scopes = resourceSpans.flatMap((r) => r.scopeSpans ?? []);
    expect(new Set(scopes.map((s) => s.scope?.name))).toEqual(new Set([TRACER_NAME]));
    const spans = scopes.flatMap((s) => s.spans ?? []);
    expect(spans).toHaveLength(2);

    const root = spans.find((s) => s.name === SPAN.processPhoto);
    const stage = spans.find((s) => s.name === stageSpan('decode'));
    expect(root?.traceId).toBe(sent.traceId);
    expect(root?.spanId).toBe(sent.rootSpanId);
    expect(root?.parentSpanId ?? '').toBe('');
    expect(attr(root?.attributes, ATTR.photoId)).toBe(photoId);
    expect(attr(root?.attributes, ATTR.faces)).toBe(3);

    expect(stage?.traceId).toBe(sent.traceId);
    expect(stage?.spanId).toBe(sent.stageSpanId);
    expect(stage?.parentSpanId).toBe(sent.rootSpanId);
    expect(stage?.status?.code).toBe(2); // STATUS_CODE_ERROR
    expect(stage?.status?.message).toBe('unsupported image');
  });

  it('gives the same trace back by its id', async () => {
    const byId = await query(`/api/v3/traces/${sent.traceId}`);
    expect(byId.status).toBe(200);
    const spans = (byId.body.result?.resourceSpans ?? []).flatMap((r) => r.scopeSpans ?? []).flatMap((s) => s.spans ?? []);
    expect(spans.map((s) => s.name).sort()).toEqual([SPAN.processPhoto, stageSpan('decode')].sort());
    expect(new Set(spans.map((s) => s.traceId))).toEqual(new Set([sent.traceId]));
  });

  it('answers 404 to a search that matches nothing', async () => {
    const none = await findTraces(`${service}-nobody`, since);
    expect(none.status).toBe(404);
    expect(none.body.error?.message).toBe('No traces found');
  });
});
