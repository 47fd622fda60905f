/**
 * The `event` source of a PhotoBatch: every photo the service has recorded for the event, listed
 * page by page with ListEventPhotos, each to be processed again as it was recorded (same photo id,
 * same source URL, same kind, a facecam for its user): how an event moves to a new model pack.
 * A photo's position is its id, which is also a page token of the RPC, so a batch resumes from its
 * cursor. A failure is a FacematchError: the service's own code (its `facematch-error-code`
 * trailer), else from the gRPC status (UNAVAILABLE and a passed deadline: BackendUnavailableError).
 */
import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { context, propagation } from '@opentelemetry/api';
import {
  BackendUnavailableError,
  CancelledError,
  InternalError,
  OverloadedError,
  errorFromJSON,
  type ErrorCode,
  type FacematchError,
} from '../../domain/errors.js';
import { PhotoKind, type EventPhoto, type ListEventPhotosResponse } from '../../gen/facematch/v1/facematch.js';
import type { PhotoSource, SourcePage, SourcePhoto } from '../../ports/photo-source.js';
import type { FacematchClient } from './client.js';
import { ERROR_CODE_TRAILER } from './grpc.photo-processor.js';

export interface EventPhotoSourceOptions {
  /** Photos per ListEventPhotos call; default 100 (the service allows up to 1000). */
  pageSize?: number;
  /** Each call's deadline, from when it starts; default 30 s. */
  deadlineMs?: number;
}

/** The one method of the generated client this adapter needs (a unit test may hand it a small fake). */
export type ListEventPhotosClient = Pick<FacematchClient, 'listEventPhotos'>;

export class EventPhotoSource implements PhotoSource {
  private readonly pageSize: number;
  private readonly deadlineMs: number;

  constructor(
    private readonly client: ListEventPhotosClient,
    private readonly eventId: string,
    options: EventPhotoSourceOptions = {},
  ) {
    this.pageSize = options.pageSize ?? 100;
    this.deadlineMs = options.deadlineMs ?? 30_000;
  }

  list(pageToken: string | undefined, signal: AbortSignal): Promise<SourcePage> {
    if (signal.aborted) return Promise.reject(this.cancelled('before its ListEventPhotos call'));
    const metadata = new Metadata();
    // The batch's trace goes on in the service's span of the call.
    propagation.inject(context.active(), metadata, { set: (m, key, value) => m.set(key, value) });
    const request = { eventId: this.eventId, pageSize: this.pageSize, pageToken: pageToken ?? '' };

    return new Promise<SourcePage>((resolve, reject) => {
      let settled = false;
      const settle = (outcome: { page: SourcePage } | { error: FacematchError }): void => {
        if (settled) return;
        settled = true;
        signal.removeEventListener('abort', onAbort);
        if ('page' in outcome) resolve(outcome.page);
        else reject(outcome.error);
      };
      let call: ReturnType<ListEventPhotosClient['listEventPhotos']> | undefined;
      const onAbort = (): void => {
        call?.cancel();
        settle({ error: this.cancelled('while its ListEventPhotos call was in flight') });
      };
      try {
        call = this.client.listEventPhotos(request, metadata, { deadline: Date.now() + this.deadlineMs }, (error, res) => {
          if (error) return settle({ error: toFacematchError(error, this.eventId) });
          try {
            settle({ page: toPage(res) });
          } catch (e) {
            settle({ error: e as FacematchError });
          }
        });
      } catch (error) {
        // grpc-js throws at once on a closed client.
        const message = `ListEventPhotos of event ${this.eventId} could not start: ${error instanceof Error ? error.message : String(error)}`;
        settle({ error: new InternalError(message, { cause: error }) });
        return;
      }
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  private cancelled(when: string): CancelledError {
    return new CancelledError(`listing the photos of event ${this.eventId} was cancelled ${when}`);
  }
}

/** A page of the answer; InternalError for a photo the port cannot carry (an unknown kind, a facecam without its user). */
export function toPage(res: ListEventPhotosResponse): SourcePage {
  const page: SourcePage = { photos: res.photos.map(toSourcePhoto) };
  if (res.nextPageToken) page.next = res.nextPageToken;
  return page;
}

function toSourcePhoto(p: EventPhoto): SourcePhoto {
  const base = { position: p.photoId, photoId: p.photoId, imageUrl: p.sourceUrl };
  switch (p.kind) {
    case PhotoKind.PHOTO_KIND_ACTION_SHOT:
      return { ...base, kind: 'ACTION_SHOT' };
    case PhotoKind.PHOTO_KIND_FACECAM:
      if (!p.userId) throw new InternalError(`ListEventPhotos answered facecam ${p.photoId} without its user`);
      return { ...base, kind: 'FACECAM', userId: p.userId };
    case PhotoKind.PHOTO_KIND_UNSPECIFIED:
    case PhotoKind.UNRECOGNIZED:
      break;
  }
  throw new InternalError(`ListEventPhotos answered photo ${p.photoId} with kind ${String(p.kind)}`);
}

/**
 * What a failed call becomes: the service's error when its trailer names a code; otherwise from
 * the status: UNAVAILABLE (no connection, or a proxy without a healthy upstream) and
 * DEADLINE_EXCEEDED (no answer in time) BackendUnavailableError, RESOURCE_EXHAUSTED (a proxy shed
 * the call) OverloadedError, CANCELLED CancelledError, anything else InternalError naming it.
 */
export function toFacematchError(error: ServiceError, eventId: string): FacematchError {
  const trailer = error.metadata?.get(ERROR_CODE_TRAILER)[0];
  if (typeof trailer === 'string' && /^[A-Z_]+$/.test(trailer)) {
    const typed = errorFromJSON({ code: trailer as ErrorCode, message: error.details });
    // errorFromJSON answers InternalError for a code it does not know (a newer service's).
    if (typed.code === trailer) return typed;
  }
  const what = `ListEventPhotos of event ${eventId}`;
  switch (error.code) {
    case status.UNAVAILABLE:
      return new BackendUnavailableError(`${what}: the service is unavailable: ${error.details}`, { cause: error });
    case status.DEADLINE_EXCEEDED:
      return new BackendUnavailableError(`${what}: no answer before the deadline: ${error.details}`, { cause: error });
    case status.RESOURCE_EXHAUSTED:
      return new OverloadedError(`${what}: ${error.details}`, { cause: error });
    case status.CANCELLED:
      return new CancelledError(`${what}: ${error.details}`, { cause: error });
    case status.OK:
    case status.UNKNOWN:
    case status.INVALID_ARGUMENT:
    case status.NOT_FOUND:
    case status.ALREADY_EXISTS:
    case status.PERMISSION_DENIED:
    case status.FAILED_PRECONDITION:
    case status.ABORTED:
    case status.OUT_OF_RANGE:
    case status.UNIMPLEMENTED:
    case status.INTERNAL:
    case status.DATA_LOSS:
    case status.UNAUTHENTICATED:
      break;
  }
  // Those, and a number outside the enum (a peer of a later gRPC version).
  const unknown = trailer === undefined ? '' : ` (unknown ${ERROR_CODE_TRAILER} ${String(trailer)})`;
  return new InternalError(`${what} failed with gRPC status ${status[error.code] ?? String(error.code)}${unknown}: ${error.details}`, { cause: error });
}
