/**
 * The service's traces as Jaeger gets them (real models, embedded stores, loopback sockets, an
 * in-memory exporter behind the service's own tracing setup): the gRPC and REST SERVER spans with
 * their semantic-convention attributes, the caller's W3C traceparent over gRPC metadata and HTTP
 * headers, the use case and one span per stage with the photo's ids and face counts, failures
 * recorded with their code, log lines that lead to their trace, and the controller's one trace per
 * photo through the real gRPC client.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { InMemorySpanExporter, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FacematchClients } from '../../src/adapters/grpc-client/client.js';
import { GrpcPhotoProcessor } from '../../src/adapters/grpc-client/grpc.photo-processor.js';
import { tracedProcessor } from '../../src/bin/controller.js';
import { serve, type Serving } from '../../src/bin/serve.js';
import type { PhotoBatch } from '../../src/controller/reconciler.js';
import { PhotoKind } from '../../src/gen/facematch/v1/facematch.js';
import { ATTR, CONTROLLER_SPAN, CONTROLLER_TRACER_NAME, httpSpan, rpcSpan, SPAN, stageSpan } from '../../src/telemetry/attributes.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { api, client, LOOPBACK_SERVICE, photoServer, type Client } from '../../e2e/support.js';
import { testConfig } from '../support/shared.js';

const EVENT = 'tracing';
const spans = new InMemorySpanExporter();
const logs: Record<string, unknown>[] = [];
let dataDir: string;
let photos: Awaited<ReturnType<typeof photoServer>>;
let serving: Serving;
let c: Client;
let rpc: ReturnType<typeof api>;
const clients = new FacematchClients();

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'facematch-tracing-'));
  photos = await photoServer();
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) logs.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  serving = await serve(
    testConfig({ FACEMATCH_DATA_DIR: dataDir, ...LOOPBACK_SERVICE, OTEL_RESOURCE_ATTRIBUTES: 'k8s.pod.name=facematch-0,k8s.namespace.name=photos' }),
    createLogger('info', sink),
    { exporter: spans },
  );
  c = client(serving.grpcPort);
  rpc = api(c);
});
afterAll(async () => {
  c?.close();
  clients.close();
  await serving?.stop();
  await photos?.close();
  await rm(dataDir, { recursive: true, force: true });
});

const of = (traceId: string): ReadableSpan[] => spans.getFinishedSpans().filter((s) => s.spanContext().traceId === traceId);
const one = (list: ReadableSpan[], name: string): ReadableSpan => {
  const found = list.filter((s) => s.name === name);
  expect(found, name).toHaveLength(1);
  return found[0]!;
};
const parentOf = (s: ReadableSpan): string | undefined => s.parentSpanContext?.spanId;
const shot = (photoId: string, file: string) => ({
  photoId,
  imageUrl: `${photos.base}/${file}`,
  eventId: EVENT,
  kind: PhotoKind.PHOTO_KIND_ACTION_SHOT,
  userId: '',
});
/** The SERVER span whose use case handled `photoId`. */
const serverOf = (photoId: string): ReadableSpan => {
  const useCase = spans.getFinishedSpans().find((s) => s.name === SPAN.processPhoto && s.attributes[ATTR.photoId] === photoId)!;
  expect(useCase, `${SPAN.processPhoto} of ${photoId}`).toBeDefined();
  const server = of(useCase.spanContext().traceId).find((s) => s.spanContext().spanId === parentOf(useCase));
  expect(server, `the parent of ${photoId}'s use case`).toBeDefined();
  return server!;
};

describe('a gRPC ProcessPhoto', () => {
  it('is a SERVER span with the RPC attributes, over the use case and one span per stage carrying the ids and face counts', async () => {
    const res = await rpc.processPhoto(shot('traced-group', 'groups/facerec_obama_and_biden.jpg'));
    const server = serverOf('traced-group');
    expect(server.name).toBe(rpcSpan('ProcessPhoto'));
    expect(server.kind).toBe(SpanKind.SERVER);
    expect(server.parentSpanContext).toBeUndefined();
    expect(server.attributes).toMatchObject({
      'rpc.system': 'grpc',
      'rpc.service': 'facematch.v1.FacematchService',
      'rpc.method': 'ProcessPhoto',
      'rpc.grpc.status_code': 0,
    });
    // The resource: name, version, the pod (OTEL_RESOURCE_ATTRIBUTES), the pack and the provider used.
    expect(server.resource.attributes).toMatchObject({
      'service.name': 'facematch',
      'k8s.pod.name': 'facematch-0',
      'k8s.namespace.name': 'photos',
      [ATTR.modelPack]: serving.app.config.inference.modelPack,
      [ATTR.provider]: 'cpu',
    });

    const spansOf = of(server.spanContext().traceId);
    const useCase = one(spansOf, SPAN.processPhoto);
    expect(parentOf(useCase)).toBe(server.spanContext().spanId);
    const faces = res.faces.length;
    expect(faces).toBeGreaterThanOrEqual(2);
    const stages = ['fetch', 'decode', 'detect', 'align', 'embed', 'store', 'search', 'draw', 'upload', 'record'] as const;
    for (const stage of stages) {
      const s = one(spansOf, stageSpan(stage));
      expect(parentOf(s), stage).toBe(useCase.spanContext().spanId);
      expect(s.attributes, stage).toMatchObject({ [ATTR.photoId]: 'traced-group', [ATTR.eventId]: EVENT });
    }
    for (const stage of ['detect', 'align', 'embed', 'store'] as const) expect(one(spansOf, stageSpan(stage)).attributes[ATTR.faces], stage).toBe(faces);
    // Nobody is enrolled in this event: no match.
    expect(one(spansOf, stageSpan('search')).attributes[ATTR.matches]).toBe(0);
    expect(one(spansOf, stageSpan('record')).attributes).toMatchObject({ [ATTR.faces]: faces, [ATTR.matches]: 0 });
  });

  it("a failure: the code on the SERVER span (a caller's fault: status unset), exception and ERROR on the use case, and the log line leads to the trace", async () => {
    await expect(rpc.processPhoto(shot('traced-text', 'text.jpg'))).rejects.toThrow();
    const server = serverOf('traced-text');
    expect(server.attributes).toMatchObject({ 'rpc.grpc.status_code': 3, [ATTR.errorCode]: 'IMAGE_UNSUPPORTED', 'error.type': 'IMAGE_UNSUPPORTED' });
    expect(server.status.code).toBe(SpanStatusCode.UNSET);
    const useCase = one(of(server.spanContext().traceId), SPAN.processPhoto);
    expect(useCase.status.code).toBe(SpanStatusCode.ERROR);
    expect(useCase.attributes[ATTR.errorCode]).toBe('IMAGE_UNSUPPORTED');
    expect(useCase.events.map((e) => e.name)).toContain('exception');
    const line = logs.find((l) => l.code === 'IMAGE_UNSUPPORTED' && l.rpc === 'ProcessPhoto');
    expect(line).toMatchObject({ trace_id: server.spanContext().traceId, span_id: server.spanContext().spanId, trace_flags: '01' });
  });
});

describe('a REST call', () => {
  it("is a SERVER span `POST /v1/photos` with the HTTP attributes, the child of the caller's traceparent header", async () => {
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const parentId = '00f067aa0ba902b7';
    const res = await fetch(`http://127.0.0.1:${serving.httpPort}/v1/photos`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', traceparent: `00-${traceId}-${parentId}-01` },
      body: JSON.stringify({ photoId: 'traced-rest', imageUrl: `${photos.base}/groups/facerec_two_people.jpg`, eventId: EVENT, kind: 'ACTION_SHOT' }),
    });
    expect(res.status).toBe(200);
    const server = one(of(traceId), httpSpan('POST', '/v1/photos'));
    expect(server.kind).toBe(SpanKind.SERVER);
    expect(parentOf(server)).toBe(parentId);
    expect(server.parentSpanContext?.isRemote).toBe(true);
    expect(server.attributes).toMatchObject({
      'http.request.method': 'POST',
      'http.route': '/v1/photos',
      'url.path': '/v1/photos',
      'url.scheme': 'http',
      'http.response.status_code': 200,
    });
    expect(parentOf(one(of(traceId), SPAN.processPhoto))).toBe(server.spanContext().spanId);
  });

  it('a refused one carries its status and code; without a traceparent it starts a trace', async () => {
    const res = await fetch(`http://127.0.0.1:${serving.httpPort}/v1/users/${'x'.repeat(300)}/photos`);
    expect(res.status).toBe(400);
    const server = spans.getFinishedSpans().find((s) => s.name === httpSpan('GET', '/v1/users/{userId}/photos'))!;
    expect(server.parentSpanContext).toBeUndefined();
    expect(server.attributes).toMatchObject({ 'http.response.status_code': 400, [ATTR.errorCode]: 'INVALID_ARGUMENT' });
    expect(server.status.code).toBe(SpanStatusCode.UNSET);
  });
});

describe('the controller', () => {
  it('makes one trace per photo: its photo span, the gRPC CLIENT span, the service SERVER span and the stages, linked to the batch run', async () => {
    const batch = { key: 'photos/traced', uid: 'u1', generation: 1, spec: { eventId: EVENT }, status: {} } as unknown as PhotoBatch;
    // The process's global provider is the service's here: one exporter sees both sides.
    const traced = tracedProcessor(batch, GrpcPhotoProcessor.forAddress(clients, `127.0.0.1:${serving.grpcPort}`), {
      tracer: trace.getTracer(CONTROLLER_TRACER_NAME),
    });
    const signal = new AbortController().signal;
    for (const id of ['batch-a', 'batch-b']) {
      await traced.processor.process({ photoId: id, imageUrl: `${photos.base}/groups/facerec_two_people.jpg`, eventId: EVENT, kind: 'ACTION_SHOT' }, signal);
    }
    traced.end({ outcome: 'complete', progress: { processed: 2, matched: 0, failed: 0 } } as Parameters<typeof traced.end>[0]);
    const run = one(spans.getFinishedSpans(), CONTROLLER_SPAN.batch);
    const traces = ['batch-a', 'batch-b'].map((id) => {
      const photo = spans.getFinishedSpans().find((s) => s.name === CONTROLLER_SPAN.photo && s.attributes[ATTR.photoId] === id)!;
      expect(photo.parentSpanContext).toBeUndefined();
      expect(photo.links.map((l) => l.context.spanId)).toEqual([run.spanContext().spanId]);
      const spansOf = of(photo.spanContext().traceId);
      const clientSpan = spansOf.find((s) => s.kind === SpanKind.CLIENT)!;
      const server = spansOf.find((s) => s.kind === SpanKind.SERVER)!;
      expect(parentOf(clientSpan)).toBe(photo.spanContext().spanId);
      expect(parentOf(server)).toBe(clientSpan.spanContext().spanId);
      expect(parentOf(one(spansOf, SPAN.processPhoto))).toBe(server.spanContext().spanId);
      expect(spansOf.filter((s) => s.name.startsWith('facematch.stage.')).length).toBe(10);
      return photo.spanContext().traceId;
    });
    expect(new Set([...traces, run.spanContext().traceId]).size).toBe(3);
  });
});
