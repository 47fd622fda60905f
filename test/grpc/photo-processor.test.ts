/**
 * The PhotoBatch controller's gRPC client (GrpcPhotoProcessor) against the real service in-process
 * (real models, embedded stores, loopback sockets): outcomes of real photos, the service's error
 * codes, the transport's failures, cancellation, deadlines and the trace context it carries.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createTcpServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SpanKind, trace } from '@opentelemetry/api';
import { InMemorySpanExporter, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FacematchClients } from '../../src/adapters/grpc-client/client.js';
import { GrpcPhotoProcessor, PROCESS_PHOTO_CLIENT_SPAN } from '../../src/adapters/grpc-client/grpc.photo-processor.js';
import { serve, type Serving } from '../../src/bin/serve.js';
import { PhotoKind } from '../../src/gen/facematch/v1/facematch.js';
import { PhotoProcessError, type PhotoRequest } from '../../src/ports/photo-processor.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { SPAN } from '../../src/telemetry/attributes.js';
import { LOOPBACK_SERVICE, photoServer } from '../../e2e/support.js';
import { testConfig } from '../support/shared.js';

const EVENT = 'grpc-client';

let dataDir: string;
let photos: Awaited<ReturnType<typeof photoServer>>;
/** Accepts connections and never answers: a call fetching from it stays in flight. */
let silent: HttpServer;
let silentBase: string;
let serving: Serving;
let address: string;
const clients = new FacematchClients();
const spans = new InMemorySpanExporter();
let processor: GrpcPhotoProcessor;

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'facematch-grpc-client-'));
  photos = await photoServer();
  silent = createHttpServer(() => undefined);
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  silentBase = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`;
  serving = await serve(testConfig({ FACEMATCH_DATA_DIR: dataDir, ...LOOPBACK_SERVICE }), createLogger('silent'), { exporter: spans });
  address = `127.0.0.1:${serving.grpcPort}`;
  processor = GrpcPhotoProcessor.forAddress(clients, address);
});
afterAll(async () => {
  clients.close();
  await serving?.stop();
  silent?.closeAllConnections();
  await new Promise<void>((r) => (silent ? silent.close(() => r()) : r()));
  await photos?.close();
  await rm(dataDir, { recursive: true, force: true });
});

const shot = (photoId: string, file: string): PhotoRequest => ({ photoId, imageUrl: `${photos.base}/${file}`, eventId: EVENT, kind: 'ACTION_SHOT' });
const facecam = (userId: string, file: string): PhotoRequest => ({ ...shot(`selfie-${userId}`, file), kind: 'FACECAM', userId });
const hanging = (photoId: string): PhotoRequest => ({ ...shot(photoId, ''), imageUrl: `${silentBase}/never.jpg` });
const live = (): AbortSignal => new AbortController().signal;

const rejection = async (p: Promise<unknown>): Promise<PhotoProcessError> => {
  try {
    await p;
  } catch (error) {
    expect(error).toBeInstanceOf(PhotoProcessError);
    return error as PhotoProcessError;
  }
  throw new Error('expected the call to fail');
};

const inFlight = async (): Promise<number> => {
  const text = await (await fetch(`http://127.0.0.1:${serving.httpPort}/metrics`)).text();
  return Number(/^facematch_in_flight (\d+)/m.exec(text)?.[1]);
};

describe('outcomes of real photos', () => {
  it('counts the faces, and as matched: the enrolled users an action shot shows, the action-shot faces a facecam finds', async () => {
    // Obama enrols first: no action shot yet, nothing to find.
    expect(await processor.process(facecam('obama', 'faces/facerec_obama/obama.jpg'), live())).toEqual({ faces: 1, matched: 0 });
    // Three faces (Obama, Biden and a girl at the lower right), one of them enrolled.
    expect(await processor.process(shot('obama-and-biden', 'groups/facerec_obama_and_biden.jpg'), live())).toEqual({ faces: 3, matched: 1 });
    // Biden enrols after: his face in that action shot becomes his.
    expect(await processor.process(facecam('biden', 'faces/facerec_biden/biden.jpg'), live())).toEqual({ faces: 1, matched: 1 });
    // Processed again, the action shot now shows both.
    expect(await processor.process(shot('obama-and-biden', 'groups/facerec_obama_and_biden.jpg'), live())).toEqual({ faces: 3, matched: 2 });
  });
});

describe('failures', () => {
  it("rejects with the service's own code and message for a file that is not an image", async () => {
    const e = await rejection(processor.process(shot('text', 'text.jpg'), live()));
    expect(e.code).toBe('IMAGE_UNSUPPORTED');
    expect(e.message.length).toBeGreaterThan(0);
    const missing = await rejection(processor.process(shot('missing', 'groups/no-such-photo.jpg'), live()));
    expect(missing.code).toBe('SOURCE_NOT_FOUND');
    const selfieWithoutFace = await rejection(processor.process({ ...facecam('nobody', 'blank.png') }, live()));
    expect(selfieWithoutFace.code).toBe('NO_FACE');
  });

  it('rejects with UNAVAILABLE when nothing listens on the port', async () => {
    const closed = createTcpServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const t0 = performance.now();
    const e = await rejection(GrpcPhotoProcessor.forAddress(clients, `127.0.0.1:${port}`).process(shot('nowhere', 'groups/facerec_obama_and_biden.jpg'), live()));
    expect(e.code).toBe('UNAVAILABLE');
    // At once, not at the 120 s deadline.
    expect(performance.now() - t0).toBeLessThan(5_000);
  });

  it('rejects with DEADLINE_EXCEEDED when the service does not answer in time', async () => {
    const quick = GrpcPhotoProcessor.forAddress(clients, address, { deadlineMs: 100 });
    const t0 = performance.now();
    const e = await rejection(quick.process(hanging('too-slow'), live()));
    const ms = performance.now() - t0;
    expect(e.code).toBe('DEADLINE_EXCEEDED');
    expect(ms).toBeGreaterThanOrEqual(90);
    expect(ms).toBeLessThan(2_000);
  });
});

describe('cancellation', () => {
  it('rejects with CANCELLED as soon as the signal aborts, and the service stops the call', async () => {
    const controller = new AbortController();
    const pending = rejection(processor.process(hanging('aborted'), controller.signal));
    // Wait until the service holds the call, then abort.
    while ((await inFlight()) === 0) await new Promise((r) => setTimeout(r, 10));
    const t0 = performance.now();
    controller.abort();
    const e = await pending;
    const ms = performance.now() - t0;
    expect(e.code).toBe('CANCELLED');
    expect(ms).toBeLessThan(50);
    // The cancel reached the service: it gave the call's slot back.
    const deadline = Date.now() + 5_000;
    while ((await inFlight()) !== 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(await inFlight()).toBe(0);
    console.info(`aborted mid-call: rejected ${ms.toFixed(2)} ms after abort()`);
  });

  it('makes no call when the signal is already aborted', async () => {
    const before = photos.hits();
    const spansBefore = spans.getFinishedSpans().length;
    const e = await rejection(processor.process(shot('never-sent', 'groups/facerec_obama_and_biden.jpg'), AbortSignal.abort()));
    expect(e.code).toBe('CANCELLED');
    await new Promise((r) => setTimeout(r, 100));
    expect(photos.hits()).toBe(before);
    expect(spans.getFinishedSpans().length).toBe(spansBefore);
  });
});

describe('trace context', () => {
  const named = (name: string, photoId: string): ReadableSpan => {
    const found = spans.getFinishedSpans().filter((s) => s.name === name && s.attributes['facematch.photo_id'] === photoId);
    expect(found, `${name} of ${photoId}`).toHaveLength(1);
    return found[0]!;
  };

  /** The service's SERVER span: the parent of the use case's span. */
  const serverSpanOf = (useCase: ReadableSpan): ReadableSpan => {
    const found = spans.getFinishedSpans().find((s) => s.spanContext().spanId === useCase.parentSpanContext?.spanId);
    expect(found, 'the SERVER span above the use case').toBeDefined();
    return found!;
  };

  it("makes the service's ProcessPhoto span a child of a CLIENT span under the caller's span", async () => {
    const tracer = trace.getTracer('photo-batch-test');
    const batchSpan = await tracer.startActiveSpan('photo-batch', async (span) => {
      await processor.process(shot('traced', 'groups/facerec_two_people.jpg'), live());
      span.end();
      return span;
    });
    const client = named(PROCESS_PHOTO_CLIENT_SPAN, 'traced');
    const server = named(SPAN.processPhoto, 'traced');
    expect(client.kind).toBe(SpanKind.CLIENT);
    expect(client.attributes).toMatchObject({
      'rpc.system': 'grpc',
      'rpc.service': 'facematch.v1.FacematchService',
      'rpc.method': 'ProcessPhoto',
      'rpc.grpc.status_code': 0,
      'server.address': '127.0.0.1',
      'server.port': serving.grpcPort,
    });
    expect(client.parentSpanContext?.spanId).toBe(batchSpan.spanContext().spanId);
    expect(server.spanContext().traceId).toBe(batchSpan.spanContext().traceId);
    // The use case runs under the service's SERVER span, whose parent is the CLIENT span.
    const rpcServer = serverSpanOf(server);
    expect(rpcServer.kind).toBe(SpanKind.SERVER);
    expect(rpcServer.parentSpanContext?.spanId).toBe(client.spanContext().spanId);
  });

  it('marks the CLIENT span of a failed call with the error code', async () => {
    await rejection(processor.process(shot('traced-bad', 'text.jpg'), live()));
    const client = named(PROCESS_PHOTO_CLIENT_SPAN, 'traced-bad');
    expect(client.attributes['error.type']).toBe('IMAGE_UNSUPPORTED');
    expect(client.status.code).toBe(2); // ERROR
  });

  it('the link travels in the metadata: a call without it starts a trace of its own (no in-process leak)', async () => {
    const c = clients.get(address);
    const tracer = trace.getTracer('photo-batch-test');
    const outer = await tracer.startActiveSpan('outer', async (span) => {
      await new Promise((resolve, reject) =>
        c.processPhoto(
          { photoId: 'untraced', imageUrl: `${photos.base}/groups/facerec_two_people.jpg`, eventId: EVENT, kind: PhotoKind.PHOTO_KIND_ACTION_SHOT, userId: '' },
          (err, res) => (err ? reject(err) : resolve(res)),
        ),
      );
      span.end();
      return span;
    });
    const server = named(SPAN.processPhoto, 'untraced');
    expect(server.spanContext().traceId).not.toBe(outer.spanContext().traceId);
    expect(serverSpanOf(server).parentSpanContext).toBeUndefined();
  });
});
