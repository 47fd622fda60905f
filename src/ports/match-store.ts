/** Photos, their faces and the match records: relational, transactional (PGlite / PostgreSQL). */
import type { FaceRecord, MatchRecord, PhotoRecord } from '../domain/photo.js';

export interface UserPhoto {
  photoId: string;
  eventId: string;
  /** Best similarity of the user to a face in that photo. */
  similarity: number;
}

export interface MatchStore {
  /** Applies migrations; idempotent. */
  init(): Promise<void>;
  /**
   * Replaces everything recorded for the photo (its row, faces and the matches of its faces) in
   * one transaction: a reprocess never leaves duplicates or a mix of old and new.
   */
  replacePhoto(photo: PhotoRecord, faces: readonly FaceRecord[], matches: readonly MatchRecord[]): Promise<void>;
  /**
   * Records matches of action-shot faces to a user (after an enrolment), keeping for each face only
   * its best user: a match replaces the face's current one only if its similarity is higher.
   * Returns the matches that were written. An offer to a face whose photo is not recorded yet (an
   * action shot between its vector write and its record) is kept and applied by that photo's
   * replacePhoto, so a match is not lost to the race; facecam faces are never matched.
   */
  offerMatches(matches: readonly MatchRecord[]): Promise<MatchRecord[]>;
  getPhoto(photoId: string): Promise<{ photo: PhotoRecord; faces: FaceRecord[]; matches: MatchRecord[] } | undefined>;
  /** The photo's record alone (one read: what a reprocess needs to know of the photo's last version). */
  photoRecord(photoId: string): Promise<PhotoRecord | undefined>;
  /** Each photo once, best similarity first. */
  photosOfUser(userId: string, eventId?: string): Promise<UserPhoto[]>;
  /**
   * Up to `limit` photos of the event whose id comes after `after` (all of them without it), in
   * photo id order: byte order, which for ids (ASCII) is JavaScript's string order.
   */
  photosOfEvent(eventId: string, after: string | undefined, limit: number): Promise<PhotoRecord[]>;
  /** The facecam photos a user enrolled with. */
  samplesOfUser(userId: string): Promise<PhotoRecord[]>;
  /** Removes the photo, its faces and matches; returns the removed record. */
  deletePhoto(photoId: string): Promise<PhotoRecord | undefined>;
  /** Removes the user's matches and facecam photos; returns the facecam photos removed. */
  forgetUser(userId: string): Promise<PhotoRecord[]>;
  ping(): Promise<void>;
  close(): Promise<void>;
}
