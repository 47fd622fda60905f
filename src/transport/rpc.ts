/**
 * The RPCs of facematch.v1.FacematchService, once for every transport (connect-es is the model:
 * one implementation, several protocols). For each method the table gives its request and response
 * messages (the generated codecs), the checks of its request, its handler, and whether it counts
 * against the in-flight bound. `invoke` runs one call the same way whatever carried it: the checks
 * before any work, the bound, the caller's AbortSignal, the metrics, one error mapping and one log
 * line. The gRPC server hands it the decoded message; the HTTP server the same message built from
 * its proto3 JSON form (proto-json.ts); both map the typed error code to their status in one
 * exhaustive switch (grpc-status.ts, http-status.ts).
 */
import {
  CancelledError,
  InvalidArgumentError,
  errorFromJSON,
  toFacematchError,
  type ErrorCode,
  type FacematchError,
} from '../domain/errors.js';
import { ECHO_CHARS, MAX_ID_LENGTH, MAX_SEARCH_LIMIT, MAX_URL_LENGTH, checkId } from '../domain/ids.js';
import type { PhotoKind as DomainKind } from '../domain/photo.js';
import {
  DeletePhotoRequest,
  DeletePhotoResponse,
  type FacematchServiceService,
  ForgetUserRequest,
  ForgetUserResponse,
  ListEventPhotosRequest,
  ListEventPhotosResponse,
  ListUserPhotosRequest,
  ListUserPhotosResponse,
  type MessageFns,
  PhotoKind,
  ProcessPhotoRequest,
  ProcessPhotoResponse,
  SearchCollection,
  SearchFacesRequest,
  SearchFacesResponse,
  photoKindToJSON,
  searchCollectionToJSON,
} from '../gen/facematch/v1/facematch.js';
import { checkPageToken, pageSize, type FaceMatch, type MatchingService, type ProcessPhotoResult } from '../services/matching.service.js';
import type { Logger } from '../telemetry/logger.js';
import { httpStatus } from './http/http-status.js';
import type { InFlightLimiter } from './in-flight.js';
import type { Metrics } from './metrics.js';

export interface RpcDeps {
  service: MatchingService;
  limiter: InFlightLimiter;
  metrics: Metrics;
  log: Logger;
}

export type Transport = 'grpc' | 'http';

export interface Method<Req, Res> {
  /** The RPC's name in the proto, in metrics and in logs. */
  readonly name: string;
  readonly request: MessageFns<Req>;
  readonly response: MessageFns<Res>;
  /** Counted against FACEMATCH_MAX_IN_FLIGHT: the RPCs that fetch and analyse an image. */
  readonly limited: boolean;
  /** Checks and bounds every field, before any work; throws InvalidArgumentError. */
  validate(req: Req): void;
  /** The work, on a validated request; `signal` aborts when the caller goes away. */
  handle(req: Req, signal: AbortSignal): Promise<Res>;
}

type Service = typeof FacematchServiceService;
type RequestOf<K extends keyof Service> = Parameters<Service[K]['requestSerialize']>[0];
type ResponseOf<K extends keyof Service> = Parameters<Service[K]['responseSerialize']>[0];

/** One entry per RPC, keyed like the generated service definition. */
export type RpcTable = { [K in keyof Service]: Method<RequestOf<K>, ResponseOf<K>> };

const KINDS: Partial<Record<PhotoKind, DomainKind>> = {
  [PhotoKind.PHOTO_KIND_ACTION_SHOT]: 'ACTION_SHOT',
  [PhotoKind.PHOTO_KIND_FACECAM]: 'FACECAM',
};
const TO_WIRE: Record<DomainKind, PhotoKind> = {
  ACTION_SHOT: PhotoKind.PHOTO_KIND_ACTION_SHOT,
  FACECAM: PhotoKind.PHOTO_KIND_FACECAM,
};
const COLLECTIONS: Partial<Record<SearchCollection, 'users' | 'action_shots'>> = {
  [SearchCollection.SEARCH_COLLECTION_USERS]: 'users',
  [SearchCollection.SEARCH_COLLECTION_ACTION_SHOTS]: 'action_shots',
};
const MAX_UINT32 = 0xffff_ffff;

const invalid = (message: string): never => {
  throw new InvalidArgumentError(message);
};

function checkUrl(value: string): void {
  if (!value) invalid('image_url is required');
  if (value.length > MAX_URL_LENGTH) invalid(`image_url is ${value.length} characters long; the limit is ${MAX_URL_LENGTH}`);
}

function checkOptionalId(what: string, value: string): void {
  if (value) checkId(what, value);
}

const match = (m: FaceMatch) => ({ userId: m.userId ?? '', photoId: m.photoId, faceId: m.faceId, similarity: m.similarity });

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
      matches: f.matches.map(match),
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
    matches: r.matches.map(match),
  };
}

/** The RPC table on a service. */
export function rpcTable(d: RpcDeps): RpcTable {
  const s = d.service;
  return {
    processPhoto: {
      name: 'ProcessPhoto',
      request: ProcessPhotoRequest,
      response: ProcessPhotoResponse,
      limited: true,
      validate(r) {
        checkId('photo_id', r.photoId);
        checkUrl(r.imageUrl);
        checkOptionalId('event_id', r.eventId);
        const kind = KINDS[r.kind] ?? invalid(`kind must be PHOTO_KIND_ACTION_SHOT or PHOTO_KIND_FACECAM, got ${photoKindToJSON(r.kind)}`);
        if (kind === 'FACECAM') checkId('user_id (required for a FACECAM)', r.userId);
        // Ignored for an action shot, but bounded all the same.
        else if (r.userId.length > MAX_ID_LENGTH) invalid(`user_id is longer than ${MAX_ID_LENGTH} characters`);
      },
      async handle(r, signal) {
        const kind = KINDS[r.kind]!;
        const result = await s.processPhoto({
          photoId: r.photoId,
          imageUrl: r.imageUrl,
          kind,
          ...(r.eventId ? { eventId: r.eventId } : {}),
          ...(kind === 'FACECAM' ? { userId: r.userId } : {}),
          signal,
        });
        d.metrics.observeStages(result.timings);
        d.metrics.faces.inc(result.faces.length);
        return toWire(result);
      },
    },
    listUserPhotos: {
      name: 'ListUserPhotos',
      request: ListUserPhotosRequest,
      response: ListUserPhotosResponse,
      limited: false,
      validate(r) {
        checkId('user_id', r.userId);
        checkOptionalId('event_id', r.eventId);
      },
      async handle(r) {
        return { photos: await s.listUserPhotos(r.userId, r.eventId || undefined) };
      },
    },
    listEventPhotos: {
      name: 'ListEventPhotos',
      request: ListEventPhotosRequest,
      response: ListEventPhotosResponse,
      limited: false,
      validate(r) {
        checkId('event_id', r.eventId);
        pageSize(r.pageSize);
        checkPageToken(r.pageToken);
      },
      async handle(r) {
        const page = await s.listEventPhotos(r.eventId, r.pageSize, r.pageToken || undefined);
        return {
          photos: page.photos.map((p) => ({ photoId: p.photoId, sourceUrl: p.sourceUrl, kind: TO_WIRE[p.kind], userId: p.userId ?? '' })),
          nextPageToken: page.next ?? '',
        };
      },
    },
    searchFaces: {
      name: 'SearchFaces',
      request: SearchFacesRequest,
      response: SearchFacesResponse,
      limited: true,
      validate(r) {
        checkUrl(r.imageUrl);
        checkOptionalId('event_id', r.eventId);
        if (!Number.isInteger(r.limit) || r.limit < 0 || r.limit > MAX_UINT32) invalid(`limit must be a whole number from 0 to ${MAX_UINT32}`);
        if (!COLLECTIONS[r.collection]) {
          invalid(`collection must be SEARCH_COLLECTION_USERS or SEARCH_COLLECTION_ACTION_SHOTS, got ${searchCollectionToJSON(r.collection)}`);
        }
      },
      async handle(r, signal) {
        const limit = Math.min(r.limit || 10, MAX_SEARCH_LIMIT);
        const matches = await s.searchFaces(r.imageUrl, r.eventId || undefined, limit, COLLECTIONS[r.collection]!, signal);
        return { matches: matches.map(match) };
      },
    },
    deletePhoto: {
      name: 'DeletePhoto',
      request: DeletePhotoRequest,
      response: DeletePhotoResponse,
      limited: false,
      validate: (r) => void checkId('photo_id', r.photoId),
      handle: async (r) => ({ deleted: await s.deletePhoto(r.photoId) }),
    },
    forgetUser: {
      name: 'ForgetUser',
      request: ForgetUserRequest,
      response: ForgetUserResponse,
      limited: false,
      validate: (r) => void checkId('user_id', r.userId),
      handle: (r) => s.forgetUser(r.userId),
    },
  };
}

/**
 * Runs one call: `parse` yields the request (a decode or JSON failure is the caller's mistake), the
 * request is checked, and the handler runs, within the in-flight bound for a limited method. A
 * caller that goes away (`signal`) frees its slot at once and gets CancelledError; the handler sees
 * the same signal and stops its work. A failure comes back as a FacematchError fit to send (see
 * `forCaller`), once counted and logged.
 */
export async function invoke<Req, Res>(
  d: RpcDeps,
  m: Method<Req, Res>,
  parse: () => Req | Promise<Req>,
  transport: Transport,
  signal: AbortSignal,
): Promise<Res> {
  const t0 = performance.now();
  const seconds = () => (performance.now() - t0) / 1000;
  try {
    const req = await parse();
    m.validate(req);
    if (signal.aborted) throw cancelled();
    const res = m.limited ? await d.limiter.run(() => m.handle(req, signal), signal) : await m.handle(req, signal);
    d.metrics.observe(m.name, transport, 'OK', seconds());
    return res;
  } catch (error) {
    const e = forCaller(error);
    d.metrics.observe(m.name, transport, e.code, seconds());
    logFailure(d.log, { rpc: m.name, transport }, e, error);
    throw e;
  }
}

export const cancelled = (): CancelledError => new CancelledError('the caller went away or its deadline passed');

/** Longest error message sent back. */
const MAX_MESSAGE = 512;

/**
 * The error as a caller may see it: a message in which no run of characters without a space is
 * longer than about ECHO_CHARS (so an echoed id or URL shows only its start), at most MAX_MESSAGE
 * characters. A megabyte echoed into a gRPC trailer would exceed the peer's header limit and take
 * down every call on the connection.
 */
export function forCaller(error: unknown): FacematchError {
  const e = toFacematchError(error);
  const message = shorten(e.message);
  return message === e.message ? e : errorFromJSON({ code: e.code, message });
}

export function shorten(message: string): string {
  const short = message
    .split(/(\s+)/)
    .map((word) => (word.length > ECHO_CHARS + 8 ? `${word.slice(0, ECHO_CHARS)}…` : word))
    .join('');
  return short.length > MAX_MESSAGE ? `${short.slice(0, MAX_MESSAGE)}…` : short;
}

/** How a failure is logged: the caller's doing at warn without a stack, ours at error with one. */
export function severity(code: ErrorCode): 'error' | 'warn' | 'info' {
  if (code === 'CANCELLED') return 'info';
  const status = httpStatus(code);
  return status === 500 || status === 503 ? 'error' : 'warn';
}

export function logFailure(log: Logger, fields: Record<string, string>, e: FacematchError, original: unknown): void {
  const level = severity(e.code);
  if (level !== 'error') {
    log[level]({ ...fields, code: e.code, reason: e.message }, 'request refused');
    return;
  }
  const cause = original instanceof Error ? original.cause : undefined;
  const stack = original instanceof Error ? original.stack?.split('\n').slice(1).join('\n') : undefined;
  log.error(
    {
      ...fields,
      code: e.code,
      err: { type: original instanceof Error ? original.name : typeof original, message: e.message, stack },
      ...(cause instanceof Error ? { cause: shorten(cause.message) } : {}),
    },
    'request failed',
  );
}
