/**
 * The use cases of facematch, one file each: process a photo (enrol a selfie or match an action
 * shot: process-photo.service.ts), list a user's photos, list an event's photos, search by face,
 * delete a photo, forget a user. This facade builds them on one set of dependencies (ports only)
 * and is what the transports and the CLI call.
 */
import type { UserPhoto } from '../ports/match-store.js';
import { DeletePhotoService } from './delete-photo.service.js';
import { ForgetUserService, type ForgetUserResult } from './forget-user.service.js';
import { ListEventPhotosService, type EventPhotosPage } from './list-event-photos.service.js';
import { ListUserPhotosService } from './list-user-photos.service.js';
import { ProcessPhotoService, type ProcessPhotoRequest, type ProcessPhotoResult } from './process-photo.service.js';
import { SearchFacesService } from './search-faces.service.js';
import { Tracing, type FaceMatch, type ServiceDeps } from './use-case.js';

export type { ProcessPhotoRequest, ProcessPhotoResult } from './process-photo.service.js';
export type { ForgetUserResult } from './forget-user.service.js';
export { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, checkPageToken, pageSize, type EventPhotosPage } from './list-event-photos.service.js';
export { annotatedKey, type FaceMatch, type ProcessedFace, type ServiceDeps } from './use-case.js';

export class MatchingService {
  private readonly threshold: number;
  private readonly processing: ProcessPhotoService;
  private readonly searching: SearchFacesService;
  private readonly listing: ListUserPhotosService;
  private readonly listingEvent: ListEventPhotosService;
  private readonly deleting: DeletePhotoService;
  private readonly forgetting: ForgetUserService;

  constructor(d: ServiceDeps) {
    this.threshold = d.threshold ?? d.model.threshold;
    const t = new Tracing(d.tracer);
    const now = d.now ?? (() => new Date());
    this.processing = new ProcessPhotoService(d, t, this.threshold, now);
    this.searching = new SearchFacesService(d, t, this.threshold);
    this.listing = new ListUserPhotosService(d, t);
    this.listingEvent = new ListEventPhotosService(d, t);
    this.deleting = new DeletePhotoService(d, t);
    this.forgetting = new ForgetUserService(d, t);
  }

  get matchThreshold(): number {
    return this.threshold;
  }

  processPhoto(req: ProcessPhotoRequest): Promise<ProcessPhotoResult> {
    return this.processing.run(req);
  }

  /** Photos the user appears in, each once, best similarity first. */
  listUserPhotos(userId: string, eventId?: string): Promise<UserPhoto[]> {
    return this.listing.run(userId, eventId);
  }

  /** A page of the event's photos in photo id order, after `pageToken`; `pageSize` 0 means the default. */
  listEventPhotos(eventId: string, pageSize: number, pageToken?: string): Promise<EventPhotosPage> {
    return this.listingEvent.run(eventId, pageSize, pageToken);
  }

  /** The largest face of an image, searched among enrolled users or action-shot faces of an event. */
  searchFaces(imageUrl: string, eventId: string | undefined, limit: number, target: 'users' | 'action_shots', signal?: AbortSignal): Promise<FaceMatch[]> {
    return this.searching.run(imageUrl, eventId, limit, target, signal);
  }

  /** Removes a photo: its vectors, annotated image and records. False when it was not known. */
  deletePhoto(photoId: string): Promise<boolean> {
    return this.deleting.run(photoId);
  }

  /** Biometric erasure: every sample vector, facecam image and match of the user. */
  forgetUser(userId: string): Promise<ForgetUserResult> {
    return this.forgetting.run(userId);
  }
}
