import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { Server, ServerCredentials, type Metadata, type ServiceDefinition } from '@grpc/grpc-js';
import { propagation, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Span } from '@opentelemetry/api';
import { InMemorySpanExporter } from '@opentelemetry/sdk-trace-base';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { parseConfig } from '../config/config.js';
import { ATTR, stageSpan } from './attributes.js';
import { createLogger } from './logger.js';
import { setupTracing, type Tracing } from './tracing.js';

const open: Tracing[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((t) => t.shutdown()));
});

function traced(env: Record<string, string>, o: Parameters<typeof setupTracing>[0] = {}): { tracing: Tracing; spans: InMemorySpanExporter } {
  const spans = new InMemorySpanExporter();
  const tracing = setupTracing({ config: parseConfig(env).tracing, exporter: spans, version: '1.2.3', ...o });
  open.push(tracing);
  return { tracing, spans };
}

/** A request: a root span with `stages` children, failing or lasting as told. */
async function request(tracing: Tracing, o: { fail?: boolean; ms?: number; parent?: string } = {}): Promise<string> {
  const parent = o.parent ? propagation.extract(ROOT_CONTEXT, { traceparent: o.parent }) : ROOT_CONTEXT;
  return tracing.tracer.startActiveSpan('request', { kind: SpanKind.SERVER }, parent, async (root: Span) => {
    for (const stage of ['fetch', 'detect'] as const) tracing.tracer.startSpan(stageSpan(stage)).end();
    if (o.ms) await new Promise((r) => setTimeout(r, o.ms));
    if (o.fail) root.setStatus({ code: SpanStatusCode.ERROR, message: 'boom' });
    root.end();
    return root.spanContext().traceId;
  });
}

const traceIds = (spans: InMemorySpanExporter): Set<string> => new Set(spans.getFinishedSpans().map((s) => s.spanContext().traceId));

describe('resource', () => {
  it('service name and version, an instance id, the pod from OTEL_RESOURCE_ATTRIBUTES, the model pack and the provider once known', async () => {
    let provider!: (p: string) => void;
    const { tracing, spans } = traced(
      { OTEL_RESOURCE_ATTRIBUTES: 'k8s.pod.name=facematch-abc,k8s.namespace.name=photos' },
      { resource: { [ATTR.modelPack]: 'buffalo_l', [ATTR.provider]: new Promise<string>((r) => (provider = r)) } },
    );
    provider('cpu');
    await tracing.resource?.waitForAsyncAttributes?.();
    await request(tracing);
    const r = spans.getFinishedSpans()[0]!.resource.attributes;
    expect(r).toMatchObject({
      'service.name': 'facematch',
      'service.version': '1.2.3',
      'k8s.pod.name': 'facematch-abc',
      'k8s.namespace.name': 'photos',
      'facematch.model_pack': 'buffalo_l',
      'facematch.provider': 'cpu',
    });
    expect(r['service.instance.id']).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('service.name: OTEL_SERVICE_NAME, else one in OTEL_RESOURCE_ATTRIBUTES, else the default', async () => {
    const name = async (env: Record<string, string>): Promise<unknown> => {
      const { tracing, spans } = traced(env, { serviceName: 'facematch-controller' });
      await request(tracing);
      return spans.getFinishedSpans()[0]!.resource.attributes['service.name'];
    };
    expect(await name({ OTEL_SERVICE_NAME: 'facematch-eu', OTEL_RESOURCE_ATTRIBUTES: 'service.name=other' })).toBe('facematch-eu');
    expect(await name({ OTEL_RESOURCE_ATTRIBUTES: 'service.name=other' })).toBe('other');
    expect(await name({})).toBe('facematch-controller');
  });

  it('OTEL_SDK_DISABLED: no spans, no ids', async () => {
    const { tracing, spans } = traced({ OTEL_SDK_DISABLED: 'true' });
    await request(tracing, { fail: true });
    expect(spans.getFinishedSpans()).toHaveLength(0);
    tracing.tracer.startActiveSpan('x', (s) => {
      expect(s.isRecording()).toBe(false);
      s.end();
    });
  });
});

describe('sampling', () => {
  const sampledParent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
  const unsampledParent = '00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00';
  const headOnly = { FACEMATCH_TRACE_KEEP_FAILED: 'false', FACEMATCH_TRACE_SLOW_MS: '0' };

  it('parentbased_traceidratio 0: a root is not kept, a caller that sampled is followed, one that did not is too', async () => {
    const { tracing, spans } = traced({ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0', ...headOnly });
    await request(tracing);
    await request(tracing, { parent: unsampledParent });
    expect(spans.getFinishedSpans()).toHaveLength(0);
    const id = await request(tracing, { parent: sampledParent });
    expect([...traceIds(spans)]).toEqual([id]);
    expect(spans.getFinishedSpans()).toHaveLength(3);
  });

  it('traceidratio 0.5 keeps about half of the roots', async () => {
    const { tracing, spans } = traced({ OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.5', ...headOnly });
    for (let i = 0; i < 400; i++) await request(tracing);
    const kept = traceIds(spans).size;
    expect(kept).toBeGreaterThan(140);
    expect(kept).toBeLessThan(260);
  });

  it('the tail rule keeps a failed or slow request the head sampler dropped, whole, and drops the rest', async () => {
    const { tracing, spans } = traced({ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0', FACEMATCH_TRACE_SLOW_MS: '60' });
    await request(tracing);
    await request(tracing, { ms: 5 });
    expect(spans.getFinishedSpans()).toHaveLength(0);
    const failed = await request(tracing, { fail: true });
    const slow = await request(tracing, { ms: 80 });
    // Under a caller that did not sample: its part is missing, this process's is there.
    const remote = await request(tracing, { parent: unsampledParent, fail: true });
    expect(traceIds(spans)).toEqual(new Set([failed, slow, remote]));
    const roots = spans.getFinishedSpans().filter((s) => s.name === 'request');
    expect(Object.fromEntries(roots.map((r) => [r.spanContext().traceId, r.attributes[ATTR.keptBy]]))).toEqual({
      [failed]: 'failed',
      [slow]: 'slow',
      [remote]: 'failed',
    });
    // Whole: the root and its two stage spans, parented as they were.
    for (const id of [failed, slow]) {
      const trace = spans.getFinishedSpans().filter((s) => s.spanContext().traceId === id);
      const root = trace.find((s) => s.name === 'request')!;
      expect(trace.map((s) => s.name).sort()).toEqual(['facematch.stage.detect', 'facematch.stage.fetch', 'request']);
      for (const s of trace.filter((x) => x !== root)) expect(s.parentSpanContext?.spanId).toBe(root.spanContext().spanId);
    }
    expect(tracing.tail).toMatchObject({ keptFailed: 2, keptSlow: 1, dropped: 2 });
  });

  it('a failure on a child span is enough to keep the trace', () => {
    const { tracing, spans } = traced({ OTEL_TRACES_SAMPLER: 'always_off' });
    const id = tracing.tracer.startActiveSpan('request', (root) => {
      tracing.tracer.startActiveSpan(stageSpan('fetch'), (s) => {
        s.setStatus({ code: SpanStatusCode.ERROR });
        s.end();
      });
      root.end();
      return root.spanContext().traceId;
    });
    expect([...traceIds(spans)]).toEqual([id]);
  });

  it('holds a bounded number of traces and spans while their roots run', () => {
    const { tracing, spans } = traced({ OTEL_TRACES_SAMPLER: 'always_off' }, { tail: { maxTraces: 3, maxSpansPerTrace: 2 } });
    const roots = Array.from({ length: 5 }, () => tracing.tracer.startSpan('request'));
    for (const root of roots) {
      for (let i = 0; i < 4; i++) tracing.tracer.startSpan('child', {}, trace.setSpan(ROOT_CONTEXT, root)).end();
    }
    expect(tracing.tail).toMatchObject({ evicted: 2, overflowSpans: 5 * 2 });
    for (const root of roots) {
      root.setStatus({ code: SpanStatusCode.ERROR });
      root.end();
    }
    // The two evicted traces come back as their root alone; the other three with two children each.
    expect(spans.getFinishedSpans()).toHaveLength(5 + 3 * 2);
  });
});

describe('logs', () => {
  it('every line logged inside a span carries its trace and span ids', () => {
    const { tracing } = traced({});
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
        done();
      },
    });
    const log = createLogger('info', sink);
    log.info('outside');
    const ids = tracing.tracer.startActiveSpan('request', (span) => {
      log.warn({ code: 'IMAGE_UNSUPPORTED' }, 'request refused');
      span.end();
      return span.spanContext();
    });
    expect(lines[0]).not.toHaveProperty('trace_id');
    expect(lines[1]).toMatchObject({ trace_id: ids.traceId, span_id: ids.spanId, trace_flags: '01', code: 'IMAGE_UNSUPPORTED' });
  });
});

describe('export', () => {
  it.each([
    ['http/protobuf', 'application/x-protobuf'],
    ['http/json', 'application/json'],
  ])('OTLP %s to OTEL_EXPORTER_OTLP_ENDPOINT/v1/traces, with the configured headers', async (protocol, contentType) => {
    const received: { url: string; headers: IncomingHttpHeaders; body: Buffer }[] = [];
    const collector = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        received.push({ url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks) });
        res.writeHead(200, { 'content-type': contentType }).end(protocol === 'http/json' ? '{}' : '');
      });
    });
    await new Promise<void>((r) => collector.listen(0, '127.0.0.1', r));
    try {
      const endpoint = `http://127.0.0.1:${(collector.address() as AddressInfo).port}`;
      const tracing = setupTracing({
        config: parseConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: protocol, OTEL_EXPORTER_OTLP_HEADERS: 'x-api-key=k%3D1' }).tracing,
      });
      const id = await request(tracing);
      await tracing.shutdown();
      expect(received).toHaveLength(1);
      expect(received[0]!.url).toBe('/v1/traces');
      expect(received[0]!.headers['content-type']).toBe(contentType);
      expect(received[0]!.headers['x-api-key']).toBe('k=1');
      // The span names travel in either encoding; JSON carries the trace id in hex.
      expect(received[0]!.body.toString('latin1')).toContain(stageSpan('detect'));
      if (protocol === 'http/json') expect(received[0]!.body.toString()).toContain(id);
    } finally {
      await new Promise<void>((r) => collector.close(() => r()));
    }
  });

  it('OTLP gRPC to OTEL_EXPORTER_OTLP_ENDPOINT as is, the headers as metadata', async () => {
    const received: { metadata: Metadata; body: Buffer }[] = [];
    const server = new Server();
    const definition: ServiceDefinition = {
      Export: {
        path: '/opentelemetry.proto.collector.trace.v1.TraceService/Export',
        requestStream: false,
        responseStream: false,
        requestSerialize: (b: Buffer) => b,
        requestDeserialize: (b: Buffer) => b,
        responseSerialize: () => Buffer.alloc(0),
        responseDeserialize: (b: Buffer) => b,
      },
    };
    server.addService(definition, {
      Export: (call: { metadata: Metadata; request: Buffer }, done: (e: null, r: Buffer) => void) => {
        received.push({ metadata: call.metadata, body: call.request });
        done(null, Buffer.alloc(0));
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
    );
    try {
      const tracing = setupTracing({
        config: parseConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', OTEL_EXPORTER_OTLP_HEADERS: 'x-api-key=abc' }).tracing,
      });
      await request(tracing);
      await tracing.shutdown();
      expect(received).toHaveLength(1);
      expect(received[0]!.metadata.get('x-api-key')).toEqual(['abc']);
      expect(received[0]!.body.toString('latin1')).toContain(stageSpan('fetch'));
    } finally {
      server.forceShutdown();
    }
  });
});

describe('span times', () => {
  it('a stage span ends inside its use-case span even when the wall clock steps back while it runs', async () => {
    const { Tracing: UseCaseTracing } = await import('../services/use-case.js');
    const { tracing, spans } = traced({});
    const t = new UseCaseTracing(tracing.tracer);
    const realNow = Date.now.bind(Date);
    let skew = 0;
    const clock = vi.spyOn(Date, 'now').mockImplementation(() => realNow() + skew);
    try {
      await t.inSpan('facematch.process_photo', {}, async () => {
        // NTP steps the wall clock back 5 ms between the use case's start and its last stage's.
        skew = -5;
        await t.stage('record', { times: { total: 0 } }, () => new Promise((r) => setTimeout(r, 10)));
      });
    } finally {
      clock.mockRestore();
    }
    const ms = (h: readonly [number, number]): number => h[0] * 1e3 + h[1] / 1e6;
    const finished = spans.getFinishedSpans();
    const parent = finished.find((s) => s.name === 'facematch.process_photo')!;
    const record = finished.find((s) => s.name === stageSpan('record'))!;
    expect(ms(record.startTime)).toBeGreaterThanOrEqual(ms(parent.startTime));
    expect(ms(record.endTime)).toBeLessThanOrEqual(ms(parent.endTime));
  });
});
