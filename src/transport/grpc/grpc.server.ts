/**
 * The gRPC server: FacematchService, the standard health service, server reflection, message size
 * limits, a bound on work in flight, and typed errors mapped to status codes (with the stable error
 * code in the `facematch-error-code` trailer).
 */
import path from 'node:path';
import {
  Metadata,
  Server,
  ServerCredentials,
  status,
  type ServerUnaryCall,
  type sendUnaryData,
  type ServiceError,
} from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import { PACKAGE_ROOT } from '../../config/config.js';
import { InvalidArgumentError, toFacematchError } from '../../domain/errors.js';
import type { PhotoKind as DomainKind } from '../../domain/photo.js';
import {
  FacematchServiceService,
  PhotoKind,
  SearchCollection,
  type FacematchServiceServer,
  type ProcessPhotoResponse,
} from '../../gen/facematch/v1/facematch.js';
import type { MatchingService, ProcessPhotoResult } from '../../services/matching.service.js';
import type { Logger } from '../../telemetry/logger.js';
import type { InFlightLimiter } from '../in-flight.js';
import type { Metrics } from '../metrics.js';
import { grpcStatus } from './grpc-status.js';

export const SERVICE_NAME = 'facematch.v1.FacematchService';
export const PROTO_FILE = path.join(PACKAGE_ROOT, 'proto', 'facematch', 'v1', 'facematch.proto');

export interface GrpcDeps {
  service: MatchingService;
  limiter: InFlightLimiter;
  metrics: Metrics;
  log: Logger;
  maxMessageBytes: number;
}

const KINDS: Partial<Record<PhotoKind, DomainKind>> = {
  [PhotoKind.PHOTO_KIND_ACTION_SHOT]: 'ACTION_SHOT',
  [PhotoKind.PHOTO_KIND_FACECAM]: 'FACECAM',
};
const TO_WIRE: Record<DomainKind, PhotoKind> = {
  ACTION_SHOT: PhotoKind.PHOTO_KIND_ACTION_SHOT,
  FACECAM: PhotoKind.PHOTO_KIND_FACECAM,
};

export function toWire(r: ProcessPhotoResult): ProcessPhotoResponse {
  const t = r.timings;
  return {
    photoId: r.photoId,
    eventId: r.eventId,
    kind: TO_WIRE[r.kind],
    width: r.width,
    height: r.height,
    faces: r.faces.map((f) => ({
      faceId: f.faceId,
      box: f.box,
      score: f.score,
      landmarks: f.landmarks.map(([x, y]) => ({ x, y })),
      matches: f.matches.map((m) => ({ userId: m.userId ?? '', photoId: m.photoId, faceId: m.faceId, similarity: m.similarity })),
    })),
    annotated: r.annotated,
    timings: {
      fetchMs: t.fetch ?? 0,
      decodeMs: t.decode ?? 0,
      detectMs: t.detect ?? 0,
      alignMs: t.align ?? 0,
      embedMs: t.embed ?? 0,
      storeMs: t.store ?? 0,
      searchMs: t.search ?? 0,
      drawMs: t.draw ?? 0,
      uploadMs: t.upload ?? 0,
      recordMs: t.record ?? 0,
      totalMs: t.total,
    },
    matches: r.matches.map((m) => ({ userId: m.userId ?? '', photoId: m.photoId, faceId: m.faceId, similarity: m.similarity })),
  };
}

/** Wraps a use case as a unary handler: deadline check, error mapping, metrics. */
function unary<Req, Res>(
  name: string,
  d: GrpcDeps,
  fn: (req: Req, signal: AbortSignal) => Promise<Res>,
): (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => void {
  return (call, callback) => {
    const t0 = performance.now();
    const controller = new AbortController();
    call.on('cancelled', () => controller.abort());
    fn(call.request, controller.signal)
      .then((res) => {
        d.metrics.observe(name, 'grpc', 'OK', (performance.now() - t0) / 1000);
        callback(null, res);
      })
      .catch((error: unknown) => {
        const e = toFacematchError(error);
        const code = grpcStatus(e.code);
        if (code === status.INTERNAL) d.log.error({ err: e, cause: (e.cause as Error | undefined)?.message, rpc: name }, 'rpc failed');
        d.metrics.observe(name, 'grpc', e.code, (performance.now() - t0) / 1000);
        const metadata = new Metadata();
        metadata.set('facematch-error-code', e.code);
        const err: Partial<ServiceError> = { code, details: e.message, message: e.message, metadata };
        callback(err);
      });
  };
}

export function facematchHandlers(d: GrpcDeps): FacematchServiceServer {
  const s = d.service;
  return {
    processPhoto: unary('ProcessPhoto', d, async (req, signal) => {
      const kind = KINDS[req.kind];
      if (!kind) throw new InvalidArgumentError(`kind must be PHOTO_KIND_ACTION_SHOT or PHOTO_KIND_FACECAM, got ${req.kind}`);
      const result = await d.limiter.run(() =>
        s.processPhoto({
          photoId: req.photoId,
          imageUrl: req.imageUrl,
          kind,
          ...(req.eventId ? { eventId: req.eventId } : {}),
          ...(req.userId ? { userId: req.userId } : {}),
          signal,
        }),
      );
      d.metrics.observeStages(result.timings);
      d.metrics.faces.inc(result.faces.length);
      return toWire(result);
    }),
    listUserPhotos: unary('ListUserPhotos', d, async (req) => ({
      photos: await s.listUserPhotos(req.userId, req.eventId || undefined),
    })),
    searchFaces: unary('SearchFaces', d, async (req, signal) => {
      const target =
        req.collection === SearchCollection.SEARCH_COLLECTION_USERS
          ? 'users'
          : req.collection === SearchCollection.SEARCH_COLLECTION_ACTION_SHOTS
            ? 'action_shots'
            : undefined;
      if (!target) throw new InvalidArgumentError('collection must be SEARCH_COLLECTION_USERS or SEARCH_COLLECTION_ACTION_SHOTS');
      const matches = await d.limiter.run(() => s.searchFaces(req.imageUrl, req.eventId || undefined, req.limit, target, signal));
      return { matches: matches.map((m) => ({ userId: m.userId ?? '', photoId: m.photoId, faceId: m.faceId, similarity: m.similarity })) };
    }),
    deletePhoto: unary('DeletePhoto', d, async (req) => ({ deleted: await s.deletePhoto(req.photoId) })),
    forgetUser: unary('ForgetUser', d, (req) => s.forgetUser(req.userId)),
  };
}

export interface RunningGrpc {
  server: Server;
  port: number;
  health: HealthImplementation;
}

export async function startGrpcServer(d: GrpcDeps, host: string, port: number): Promise<RunningGrpc> {
  const server = new Server({
    'grpc.max_receive_message_length': d.maxMessageBytes,
    'grpc.max_send_message_length': d.maxMessageBytes,
  });
  server.addService(FacematchServiceService, facematchHandlers(d));
  const health = new HealthImplementation({ '': 'NOT_SERVING', [SERVICE_NAME]: 'NOT_SERVING' });
  health.addToServer(server);
  const definition = loadSync(PROTO_FILE, { includeDirs: [path.join(PACKAGE_ROOT, 'proto')] });
  new ReflectionService(definition).addToServer(server);
  const bound = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${host.includes(':') ? `[${host}]` : host}:${port}`, ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return { server, port: bound, health };
}
