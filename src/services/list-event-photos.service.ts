/**
 * ListEventPhotos: every photo recorded for an event, a page at a time in photo id order, with what
 * it was processed from (source URL, kind, a facecam's user): what processing the event again needs.
 * A page token is the last photo id of the page before (any photo id will do: the listing continues
 * after it), so a listing resumes from wherever its caller stopped, and pages never overlap.
 */
import { InvalidArgumentError } from '../domain/errors.js';
import { checkId, quote } from '../domain/ids.js';
import type { PhotoRecord } from '../domain/photo.js';
import { ATTR, SPAN } from '../telemetry/attributes.js';
import type { ServiceDeps, Tracing } from './use-case.js';

/** Photos of a page when the caller does not say. */
export const DEFAULT_PAGE_SIZE = 100;
/** The largest page: a bigger one is refused. */
export const MAX_PAGE_SIZE = 1000;

export interface EventPhotosPage {
  /** In photo id order (byte order). */
  photos: PhotoRecord[];
  /** The token of the next page; absent on the last one. */
  next?: string;
}

/** The page size to use: 0 (not set) is the default; throws InvalidArgumentError outside 0..MAX_PAGE_SIZE. */
export function pageSize(requested: number): number {
  if (!Number.isInteger(requested) || requested < 0 || requested > MAX_PAGE_SIZE) {
    throw new InvalidArgumentError(`page_size must be a whole number from 0 (meaning ${DEFAULT_PAGE_SIZE}) to ${MAX_PAGE_SIZE}, got ${requested}`);
  }
  return requested || DEFAULT_PAGE_SIZE;
}

/** A page token is a photo id; throws InvalidArgumentError for anything else. Empty: the first page. */
export function checkPageToken(token: string): void {
  if (!token) return;
  try {
    checkId('page_token', token);
  } catch (error) {
    throw new InvalidArgumentError(`page_token ${quote(token)} is not a page token of this listing (a photo_id)`, { cause: error });
  }
}

export class ListEventPhotosService {
  constructor(
    private readonly d: ServiceDeps,
    private readonly t: Tracing,
  ) {}

  /** One page of the event's photos, after `pageToken` (empty or absent: from the start). */
  async run(eventIdIn: string, requestedSize: number, pageToken?: string): Promise<EventPhotosPage> {
    const eventId = checkId('event_id', eventIdIn);
    const size = pageSize(requestedSize);
    checkPageToken(pageToken ?? '');
    return this.t.inSpan(SPAN.listEventPhotos, { [ATTR.eventId]: eventId }, async () => {
      // One more than the page: whether there is a next page, without a call that answers nothing.
      const photos = await this.d.matches.photosOfEvent(eventId, pageToken || undefined, size + 1);
      if (photos.length <= size) return { photos };
      const page = photos.slice(0, size);
      return { photos: page, next: page.at(-1)!.photoId };
    });
  }
}
