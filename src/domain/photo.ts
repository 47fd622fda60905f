/** Photos, stored faces and match records: the values the matching service keeps. */
import type { Box, Landmarks } from './face.js';

export type PhotoKind = 'ACTION_SHOT' | 'FACECAM';

export const DEFAULT_EVENT = 'default';

export interface PhotoRecord {
  photoId: string;
  eventId: string;
  kind: PhotoKind;
  /** The enrolling user, for a facecam. */
  userId?: string;
  sourceUrl: string;
  width: number;
  height: number;
  /** Where the annotated copy is. */
  annotatedKey?: string;
  processedAt: Date;
}

export interface FaceRecord {
  /** `${photoId}/${index}`: deterministic, so a retry replaces instead of duplicating. */
  faceId: string;
  photoId: string;
  index: number;
  box: Box;
  score: number;
  landmarks: Landmarks;
}

/** One face of an action shot recognised as one user. A face has at most one match: its best user. */
export interface MatchRecord {
  photoId: string;
  faceId: string;
  userId: string;
  eventId: string;
  similarity: number;
  matchedAt: Date;
}

export const faceId = (photoId: string, index: number): string => `${photoId}/${index}`;
/** A user's enrolment sample: one per facecam photo. */
export const sampleId = (userId: string, photoId: string): string => `${userId}/${photoId}`;
