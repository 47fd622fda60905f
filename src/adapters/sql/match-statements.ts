/**
 * Every statement of the match store, written once for both SQL match stores (PGlite and
 * PostgreSQL run the same migrations). Each function runs on what it is given (a transaction, or
 * the store itself for single-statement reads); the stores add what their database needs around
 * them: PostgreSQL its advisory locks, isolation levels and retries, PGlite nothing.
 */
import type { FaceRecord, MatchRecord, PhotoRecord } from '../../domain/photo.js';
import type { UserPhoto } from '../../ports/match-store.js';
import {
  checkMatch,
  faceJson,
  MATCH_COLUMNS,
  matchJson,
  offerJson,
  PHOTO_COLUMNS,
  toFace,
  toMatch,
  toPhoto,
  type FaceRow,
  type MatchRow,
  type PhotoRow,
} from './match-rows.js';
import type { SqlTransaction } from './migrations.js';

/** What the statements need: a transaction, or a store that runs one statement. */
export type Sql = Pick<SqlTransaction, 'query'>;

/** How long a forgotten user's id is kept, to refuse matches from requests in flight at the erasure. */
export const FORGOTTEN_TTL = '1 hour';

/**
 * The photo, its faces and matches, replacing what it had (call it in one transaction). Matches of a
 * user erased meanwhile (forgotten_users, migration 0003) are left out; a facecam's enrolment lifts
 * its user's erasure.
 */
export async function writePhoto(tx: Sql, photo: PhotoRecord, faces: readonly FaceRecord[], matches: readonly MatchRecord[]): Promise<void> {
  // Cascades to the photo's faces and their matches.
  await tx.query('DELETE FROM photos WHERE photo_id = $1', [photo.photoId]);
  await tx.query(`INSERT INTO photos (${PHOTO_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, [
    photo.photoId,
    photo.eventId,
    photo.kind,
    photo.userId ?? null,
    photo.sourceUrl,
    photo.width,
    photo.height,
    photo.annotatedKey ?? null,
    photo.processedAt.toISOString(),
  ]);
  if (faces.length > 0) {
    await tx.query(
      `INSERT INTO faces (face_id, photo_id, idx, box_x, box_y, box_width, box_height, score, landmarks)
       SELECT f.face_id, $1, f.idx, f.box_x, f.box_y, f.box_width, f.box_height, f.score, f.landmarks
         FROM jsonb_to_recordset($2::jsonb) AS f(face_id text, idx integer, box_x double precision,
           box_y double precision, box_width double precision, box_height double precision,
           score double precision, landmarks jsonb)`,
      [photo.photoId, JSON.stringify(faces.map(faceJson))],
    );
  }
  if (photo.kind === 'FACECAM' && photo.userId !== undefined) {
    await tx.query('DELETE FROM forgotten_users WHERE user_id = $1', [photo.userId]);
  }
  if (matches.length > 0) {
    await tx.query(
      `INSERT INTO matches (${MATCH_COLUMNS})
       SELECT m.face_id, $1, m.user_id, $2, m.similarity, m.matched_at
         FROM jsonb_to_recordset($3::jsonb) AS m(face_id text, user_id text, similarity real, matched_at timestamptz)
        WHERE NOT EXISTS (SELECT 1 FROM forgotten_users g WHERE g.user_id = m.user_id)`,
      [photo.photoId, photo.eventId, JSON.stringify(matches.map(matchJson))],
    );
  }
  // Offers an enrolment made while this photo was not recorded yet (migration 0002) go, and become
  // matches where they beat the face's own (an action shot's faces only). One statement, one
  // snapshot: the offers applied are exactly the offers removed.
  await tx.query(
    `WITH o AS (DELETE FROM match_offers WHERE photo_id = $1 RETURNING face_id, user_id, similarity, offered_at)
     INSERT INTO matches (${MATCH_COLUMNS})
     SELECT DISTINCT ON (o.face_id) o.face_id, $1, o.user_id, $2, o.similarity, o.offered_at
       FROM o
       JOIN faces f ON f.face_id = o.face_id AND f.photo_id = $1
       JOIN photos p ON p.photo_id = $1 AND p.kind = 'ACTION_SHOT'
      WHERE NOT EXISTS (SELECT 1 FROM forgotten_users g WHERE g.user_id = o.user_id)
      ORDER BY o.face_id, o.similarity DESC, o.user_id
     ON CONFLICT (face_id) DO UPDATE SET user_id = EXCLUDED.user_id, event_id = EXCLUDED.event_id,
       similarity = EXCLUDED.similarity, matched_at = EXCLUDED.matched_at
      WHERE matches.similarity < EXCLUDED.similarity`,
    [photo.photoId, photo.eventId],
  );
}

/** The offers to make: checked, one per face (its best), as a statement may not update a row twice. */
export function bestOffers(matches: readonly MatchRecord[]): MatchRecord[] {
  const best = new Map<string, MatchRecord>();
  for (const m of matches) {
    checkMatch(m);
    const current = best.get(m.faceId);
    if (!current || m.similarity > current.similarity) best.set(m.faceId, m);
  }
  return [...best.values()];
}

/**
 * Offers `offered` (from bestOffers; call it in one transaction). Only faces of action shots that
 * exist are matched, with photo and event from the face's photo, and only where the face has no
 * match yet or a worse one; faces not recorded yet keep the offer (migration 0002) until their
 * photo is. Returns the matches written.
 */
export async function offerMatches(tx: Sql, offered: readonly MatchRecord[]): Promise<MatchRecord[]> {
  if (offered.length === 0) return [];
  const rows = await tx.query<{ face_id: string; photo_id: string; event_id: string }>(
    `INSERT INTO matches (${MATCH_COLUMNS})
     SELECT m.face_id, f.photo_id, m.user_id, p.event_id, m.similarity, m.matched_at
       FROM jsonb_to_recordset($1::jsonb) AS m(face_id text, user_id text, similarity real, matched_at timestamptz)
       JOIN faces f ON f.face_id = m.face_id
       JOIN photos p ON p.photo_id = f.photo_id AND p.kind = 'ACTION_SHOT'
      -- Rows locked in one order by every writer: two offers of the same faces cannot deadlock.
      ORDER BY m.face_id
     ON CONFLICT (face_id) DO UPDATE SET photo_id = EXCLUDED.photo_id, user_id = EXCLUDED.user_id,
       event_id = EXCLUDED.event_id, similarity = EXCLUDED.similarity, matched_at = EXCLUDED.matched_at
       WHERE matches.similarity < EXCLUDED.similarity
     RETURNING face_id, photo_id, event_id`,
    [JSON.stringify(offered.map(matchJson))],
  );
  await tx.query(
    `INSERT INTO match_offers (face_id, photo_id, user_id, event_id, similarity, offered_at)
     SELECT m.face_id, m.photo_id, m.user_id, m.event_id, m.similarity, m.matched_at
       FROM jsonb_to_recordset($1::jsonb) AS m(face_id text, photo_id text, user_id text, event_id text, similarity real, matched_at timestamptz)
      WHERE NOT EXISTS (SELECT 1 FROM faces f WHERE f.face_id = m.face_id)
      ORDER BY m.face_id, m.user_id
     ON CONFLICT (face_id, user_id) DO UPDATE SET similarity = EXCLUDED.similarity, offered_at = EXCLUDED.offered_at
      WHERE match_offers.similarity < EXCLUDED.similarity`,
    [JSON.stringify(offered.map(offerJson))],
  );
  const byFace = new Map(offered.map((m) => [m.faceId, m]));
  return rows.map((row) => ({ ...byFace.get(row.face_id)!, photoId: row.photo_id, eventId: row.event_id }));
}

/** The photo's own record, without its faces and matches (one statement). */
export async function photoRecord(q: Sql, photoId: string): Promise<PhotoRecord | undefined> {
  const [row] = await q.query<PhotoRow>(`SELECT ${PHOTO_COLUMNS} FROM photos WHERE photo_id = $1`, [photoId]);
  return row && toPhoto(row);
}

/** The photo with its faces and matches (call it in one transaction: one snapshot). */
export async function readPhoto(tx: Sql, photoId: string): Promise<{ photo: PhotoRecord; faces: FaceRecord[]; matches: MatchRecord[] } | undefined> {
  const [photo] = await tx.query<PhotoRow>(`SELECT ${PHOTO_COLUMNS} FROM photos WHERE photo_id = $1`, [photoId]);
  if (!photo) return undefined;
  const faces = await tx.query<FaceRow>('SELECT * FROM faces WHERE photo_id = $1 ORDER BY idx', [photoId]);
  const matches = await tx.query<MatchRow>(
    `SELECT m.face_id, m.photo_id, m.user_id, m.event_id, m.similarity, m.matched_at
       FROM matches m JOIN faces f ON f.face_id = m.face_id WHERE m.photo_id = $1 ORDER BY f.idx`,
    [photoId],
  );
  return { photo: toPhoto(photo), faces: faces.map(toFace), matches: matches.map(toMatch) };
}

export async function photosOfUser(q: Sql, userId: string, eventId?: string): Promise<UserPhoto[]> {
  const rows = await q.query<{ photo_id: string; event_id: string; similarity: number }>(
    `SELECT photo_id, event_id, max(similarity) AS similarity FROM matches
      WHERE user_id = $1 ${eventId === undefined ? '' : 'AND event_id = $2'}
      GROUP BY photo_id, event_id ORDER BY similarity DESC, photo_id`,
    eventId === undefined ? [userId] : [userId, eventId],
  );
  return rows.map((r) => ({ photoId: r.photo_id, eventId: r.event_id, similarity: r.similarity }));
}

/** See MatchStore.photosOfEvent; a range scan of photos_event_photo_idx (migration 0004). */
export async function photosOfEvent(q: Sql, eventId: string, after: string | undefined, limit: number): Promise<PhotoRecord[]> {
  const rows = await q.query<PhotoRow>(
    `SELECT ${PHOTO_COLUMNS} FROM photos
      WHERE event_id = $1 ${after === undefined ? '' : 'AND photo_id COLLATE "C" > $3'}
      ORDER BY photo_id COLLATE "C" LIMIT $2`,
    after === undefined ? [eventId, limit] : [eventId, limit, after],
  );
  return rows.map(toPhoto);
}

export async function samplesOfUser(q: Sql, userId: string): Promise<PhotoRecord[]> {
  const rows = await q.query<PhotoRow>(
    `SELECT ${PHOTO_COLUMNS} FROM photos WHERE user_id = $1 AND kind = 'FACECAM' ORDER BY processed_at, photo_id`,
    [userId],
  );
  return rows.map(toPhoto);
}

/** Removes the photo with its faces, matches and kept offers (call it in one transaction). */
export async function deletePhoto(tx: Sql, photoId: string): Promise<PhotoRecord | undefined> {
  await tx.query('DELETE FROM match_offers WHERE photo_id = $1', [photoId]);
  const [row] = await tx.query<PhotoRow>(`DELETE FROM photos WHERE photo_id = $1 RETURNING ${PHOTO_COLUMNS}`, [photoId]);
  return row && toPhoto(row);
}

/**
 * Removes the user's matches, offers and facecams (call it in one transaction); returns the facecams.
 * The user id is kept alone in forgotten_users for FORGOTTEN_TTL (see writePhoto).
 */
export async function forgetUser(tx: Sql, userId: string): Promise<PhotoRecord[]> {
  await tx.query(`DELETE FROM forgotten_users WHERE forgotten_at < now() - interval '${FORGOTTEN_TTL}'`);
  await tx.query(
    `INSERT INTO forgotten_users (user_id, forgotten_at) VALUES ($1, now())
     ON CONFLICT (user_id) DO UPDATE SET forgotten_at = EXCLUDED.forgotten_at`,
    [userId],
  );
  await tx.query('DELETE FROM matches WHERE user_id = $1', [userId]);
  await tx.query('DELETE FROM match_offers WHERE user_id = $1', [userId]);
  const removed = await tx.query<PhotoRow>(`DELETE FROM photos WHERE user_id = $1 AND kind = 'FACECAM' RETURNING ${PHOTO_COLUMNS}`, [userId]);
  // Any other photo that names the user keeps its content but no longer the name.
  await tx.query('UPDATE photos SET user_id = NULL WHERE user_id = $1', [userId]);
  return removed.map(toPhoto).sort((a, b) => a.processedAt.getTime() - b.processedAt.getTime() || a.photoId.localeCompare(b.photoId));
}
