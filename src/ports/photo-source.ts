import type { PhotoKind } from './photo-processor.js';

/** One photo of a batch's source. */
export interface SourcePhoto {
  /**
   * Where the listing stands once this photo is behind it: `list(position)` lists the photos after
   * it. For S3 it is the object key (StartAfter); for a URL list, the index; for an event, the
   * photo id. At most 4096 characters (it is stored in status.cursor).
   */
  position: string;
  /** The photo id to process it under (derived from the source: see photoIdFor). */
  photoId: string;
  imageUrl: string;
  /** An event source keeps each photo's recorded kind and user; the others take the batch's. */
  kind?: PhotoKind;
  userId?: string;
}

export interface SourcePage {
  photos: SourcePhoto[];
  /** The token of the next page; absent on the last page. */
  next?: string;
}

/**
 * A batch's photos, page by page, always in the same order (S3 lists keys in UTF-8 order). A page
 * token is either a page's `next` or any photo's `position`: the listing continues after it, so a
 * batch resumes from its cursor. Throws a FacematchError (SOURCE_NOT_FOUND for a missing bucket,
 * BACKEND_UNAVAILABLE when the store cannot be reached).
 */
export interface PhotoSource {
  list(pageToken: string | undefined, signal: AbortSignal): Promise<SourcePage>;
}
