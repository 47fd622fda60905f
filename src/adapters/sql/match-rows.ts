/**
 * Rows of the photos, faces and matches tables, and their checks and mappings: one definition for
 * both SQL match stores (PGlite and PostgreSQL run the same migrations).
 */
import { InvalidArgumentError } from '../../domain/errors.js';
import type { Box, Landmarks } from '../../domain/face.js';
import type { FaceRecord, MatchRecord, PhotoKind, PhotoRecord } from '../../domain/photo.js';

export interface PhotoRow {
  photo_id: string;
  event_id: string;
  kind: PhotoKind;
  user_id: string | null;
  source_url: string;
  width: number;
  height: number;
  annotated_key: string | null;
  processed_at: Date;
}

export interface FaceRow {
  face_id: string;
  photo_id: string;
  idx: number;
  box_x: number;
  box_y: number;
  box_width: number;
  box_height: number;
  score: number;
  landmarks: Landmarks;
}

export interface MatchRow {
  face_id: string;
  photo_id: string;
  user_id: string;
  event_id: string;
  similarity: number;
  matched_at: Date;
}

export const PHOTO_COLUMNS = 'photo_id, event_id, kind, user_id, source_url, width, height, annotated_key, processed_at';
export const MATCH_COLUMNS = 'face_id, photo_id, user_id, event_id, similarity, matched_at';

export function checkPhoto(p: PhotoRecord): void {
  if (!p.photoId || !p.eventId) throw new InvalidArgumentError('photo needs photoId and eventId');
  if (p.kind !== 'ACTION_SHOT' && p.kind !== 'FACECAM') throw new InvalidArgumentError(`unknown photo kind ${String(p.kind)}`);
  if (p.kind === 'FACECAM' && !p.userId) throw new InvalidArgumentError(`facecam photo ${p.photoId} has no user`);
  if (!Number.isInteger(p.width) || !Number.isInteger(p.height) || p.width < 0 || p.height < 0) {
    throw new InvalidArgumentError(`photo ${p.photoId} has an invalid size ${p.width}x${p.height}`);
  }
  if (!(p.processedAt instanceof Date) || Number.isNaN(p.processedAt.getTime())) throw new InvalidArgumentError(`photo ${p.photoId} has an invalid processedAt`);
}

export function checkFace(f: FaceRecord): void {
  const numbers = [f.box.x, f.box.y, f.box.width, f.box.height, f.score, ...f.landmarks.flat()];
  if (f.landmarks.length !== 5 || !numbers.every(Number.isFinite)) throw new InvalidArgumentError(`face ${f.faceId} has an invalid box, score or landmarks`);
}

export function checkMatch(m: MatchRecord): void {
  if (!m.faceId || !m.userId) throw new InvalidArgumentError('match needs faceId and userId');
  if (!Number.isFinite(m.similarity)) throw new InvalidArgumentError(`match of ${m.faceId} has an invalid similarity`);
  if (!(m.matchedAt instanceof Date) || Number.isNaN(m.matchedAt.getTime())) throw new InvalidArgumentError(`match of ${m.faceId} has an invalid matchedAt`);
}

export function faceJson(f: FaceRecord): Record<string, unknown> {
  return {
    face_id: f.faceId,
    idx: f.index,
    box_x: f.box.x,
    box_y: f.box.y,
    box_width: f.box.width,
    box_height: f.box.height,
    score: f.score,
    landmarks: f.landmarks,
  };
}

export function matchJson(m: MatchRecord): Record<string, unknown> {
  return { face_id: m.faceId, user_id: m.userId, similarity: m.similarity, matched_at: m.matchedAt.toISOString() };
}

/** An offer as the kept-offers statement reads it (match-statements.ts). */
export function offerJson(m: MatchRecord): Record<string, unknown> {
  return { ...matchJson(m), photo_id: m.photoId, event_id: m.eventId };
}

export function toPhoto(r: PhotoRow): PhotoRecord {
  const photo: PhotoRecord = {
    photoId: r.photo_id,
    eventId: r.event_id,
    kind: r.kind,
    sourceUrl: r.source_url,
    width: r.width,
    height: r.height,
    processedAt: r.processed_at,
  };
  if (r.user_id !== null) photo.userId = r.user_id;
  if (r.annotated_key !== null) photo.annotatedKey = r.annotated_key;
  return photo;
}

export function toFace(r: FaceRow): FaceRecord {
  const box: Box = { x: r.box_x, y: r.box_y, width: r.box_width, height: r.box_height };
  return { faceId: r.face_id, photoId: r.photo_id, index: r.idx, box, score: r.score, landmarks: r.landmarks };
}

export function toMatch(r: MatchRow): MatchRecord {
  return {
    photoId: r.photo_id,
    faceId: r.face_id,
    userId: r.user_id,
    eventId: r.event_id,
    similarity: r.similarity,
    matchedAt: r.matched_at,
  };
}

/** Checks a photo's replacement: its faces belong to it with unique ids and indexes, each matched at most once. */
export function checkReplacement(photo: PhotoRecord, faces: readonly FaceRecord[], matches: readonly MatchRecord[]): void {
  checkPhoto(photo);
  const faceIds = new Set<string>();
  const indexes = new Set<number>();
  for (const f of faces) {
    if (f.photoId !== photo.photoId) throw new InvalidArgumentError(`face ${f.faceId} belongs to photo ${f.photoId}, not ${photo.photoId}`);
    if (!f.faceId || faceIds.has(f.faceId)) throw new InvalidArgumentError(`face id ${JSON.stringify(f.faceId)} is empty or repeated`);
    if (!Number.isInteger(f.index) || f.index < 0 || indexes.has(f.index)) throw new InvalidArgumentError(`face index ${f.index} is invalid or repeated`);
    checkFace(f);
    faceIds.add(f.faceId);
    indexes.add(f.index);
  }
  const matched = new Set<string>();
  for (const m of matches) {
    checkMatch(m);
    if (!faceIds.has(m.faceId) || m.photoId !== photo.photoId) throw new InvalidArgumentError(`match of ${m.faceId} is not of a face of photo ${photo.photoId}`);
    if (m.eventId !== photo.eventId) throw new InvalidArgumentError(`match of ${m.faceId} is in event ${m.eventId}, its photo in ${photo.eventId}`);
    if (matched.has(m.faceId)) throw new InvalidArgumentError(`face ${m.faceId} has more than one match`);
    matched.add(m.faceId);
  }
}
