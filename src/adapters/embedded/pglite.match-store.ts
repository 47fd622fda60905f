/**
 * MatchStore on the embedded database, with the relational schema of the PostgreSQL adapter
 * (src/adapters/postgres/migrations). Rows travel as one JSON parameter per table
 * (`jsonb_to_recordset`), so a photo with many faces is one statement per table.
 */
import type { FaceRecord, MatchRecord, PhotoRecord } from '../../domain/photo.js';
import type { MatchStore, UserPhoto } from '../../ports/match-store.js';
import {
  APPLY_PENDING_OFFERS_SQL,
  checkMatch,
  checkReplacement,
  DROP_PENDING_OFFERS_SQL,
  faceJson,
  KEEP_PENDING_OFFERS_SQL,
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
} from '../postgres/match-rows.js';
import { MATCH_MIGRATIONS_DIR, type PgliteDatabase } from './pglite.database.js';


export class PgliteMatchStore implements MatchStore {
  /** Takes ownership of the lease: `close()` ends it. */
  constructor(private readonly db: PgliteDatabase) {}

  async init(): Promise<void> {
    await this.db.migrate('facematch', MATCH_MIGRATIONS_DIR);
  }

  async replacePhoto(photo: PhotoRecord, faces: readonly FaceRecord[], matches: readonly MatchRecord[]): Promise<void> {
    checkReplacement(photo, faces, matches);

    await this.db.transaction(async (tx) => {
      // Cascades to the photo's faces and their matches.
      await tx.query('DELETE FROM photos WHERE photo_id = $1', [photo.photoId]);
      await tx.query(
        `INSERT INTO photos (${PHOTO_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
        [photo.photoId, photo.eventId, photo.kind, photo.userId ?? null, photo.sourceUrl, photo.width, photo.height, photo.annotatedKey ?? null, photo.processedAt.toISOString()],
      );
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
      if (matches.length > 0) {
        await tx.query(
          `INSERT INTO matches (${MATCH_COLUMNS})
           SELECT m.face_id, $1, m.user_id, $2, m.similarity, m.matched_at
             FROM jsonb_to_recordset($3::jsonb) AS m(face_id text, user_id text, similarity real, matched_at timestamptz)`,
          [photo.photoId, photo.eventId, JSON.stringify(matches.map(matchJson))],
        );
      }
      // Offers an enrolment made while this photo was not recorded yet (migration 0002).
      await tx.query(APPLY_PENDING_OFFERS_SQL, [photo.photoId, photo.eventId]);
      await tx.query(DROP_PENDING_OFFERS_SQL, [photo.photoId]);
    });
  }

  async offerMatches(matches: readonly MatchRecord[]): Promise<MatchRecord[]> {
    // One offer per face, its best: a statement may not update a row twice.
    const best = new Map<string, MatchRecord>();
    for (const m of matches) {
      checkMatch(m);
      const current = best.get(m.faceId);
      if (!current || m.similarity > current.similarity) best.set(m.faceId, m);
    }
    if (best.size === 0) return [];
    // Only faces of action shots that exist; photo and event come from the face's photo. Writes
    // only where the face has no match yet or a worse one. Faces not recorded yet keep the offer
    // until their photo is (an action shot between its vector write and its record).
    const offered = [...best.values()];
    const written = await this.db.transaction(async (tx) => {
      const rows = await tx.query<{ face_id: string; photo_id: string; event_id: string }>(
        `INSERT INTO matches (${MATCH_COLUMNS})
         SELECT m.face_id, f.photo_id, m.user_id, p.event_id, m.similarity, m.matched_at
           FROM jsonb_to_recordset($1::jsonb) AS m(face_id text, user_id text, similarity real, matched_at timestamptz)
           JOIN faces f ON f.face_id = m.face_id
           JOIN photos p ON p.photo_id = f.photo_id AND p.kind = 'ACTION_SHOT'
         ON CONFLICT (face_id) DO UPDATE SET photo_id = EXCLUDED.photo_id, user_id = EXCLUDED.user_id,
           event_id = EXCLUDED.event_id, similarity = EXCLUDED.similarity, matched_at = EXCLUDED.matched_at
           WHERE matches.similarity < EXCLUDED.similarity
         RETURNING face_id, photo_id, event_id`,
        [JSON.stringify(offered.map(matchJson))],
      );
      await tx.query(KEEP_PENDING_OFFERS_SQL, [JSON.stringify(offered.map(offerJson))]);
      return rows;
    });
    return written.map((row) => ({ ...best.get(row.face_id)!, photoId: row.photo_id, eventId: row.event_id }));
  }

  async getPhoto(photoId: string): Promise<{ photo: PhotoRecord; faces: FaceRecord[]; matches: MatchRecord[] } | undefined> {
    return this.db.transaction(async (tx) => {
      const [photo] = await tx.query<PhotoRow>(`SELECT ${PHOTO_COLUMNS} FROM photos WHERE photo_id = $1`, [photoId]);
      if (!photo) return undefined;
      const faces = await tx.query<FaceRow>('SELECT * FROM faces WHERE photo_id = $1 ORDER BY idx', [photoId]);
      const matches = await tx.query<MatchRow>(
        `SELECT m.face_id, m.photo_id, m.user_id, m.event_id, m.similarity, m.matched_at
           FROM matches m JOIN faces f ON f.face_id = m.face_id WHERE m.photo_id = $1 ORDER BY f.idx`,
        [photoId],
      );
      return { photo: toPhoto(photo), faces: faces.map(toFace), matches: matches.map(toMatch) };
    });
  }

  async photosOfUser(userId: string, eventId?: string): Promise<UserPhoto[]> {
    const rows = await this.db.query<{ photo_id: string; event_id: string; similarity: number }>(
      `SELECT photo_id, event_id, max(similarity) AS similarity FROM matches
        WHERE user_id = $1 ${eventId === undefined ? '' : 'AND event_id = $2'}
        GROUP BY photo_id, event_id ORDER BY similarity DESC, photo_id`,
      eventId === undefined ? [userId] : [userId, eventId],
    );
    return rows.map((r) => ({ photoId: r.photo_id, eventId: r.event_id, similarity: r.similarity }));
  }

  async samplesOfUser(userId: string): Promise<PhotoRecord[]> {
    const rows = await this.db.query<PhotoRow>(
      `SELECT ${PHOTO_COLUMNS} FROM photos WHERE user_id = $1 AND kind = 'FACECAM' ORDER BY processed_at, photo_id`,
      [userId],
    );
    return rows.map(toPhoto);
  }

  async deletePhoto(photoId: string): Promise<PhotoRecord | undefined> {
    return this.db.transaction(async (tx) => {
      await tx.query(DROP_PENDING_OFFERS_SQL, [photoId]);
      const [row] = await tx.query<PhotoRow>(`DELETE FROM photos WHERE photo_id = $1 RETURNING ${PHOTO_COLUMNS}`, [photoId]);
      return row && toPhoto(row);
    });
  }

  async forgetUser(userId: string): Promise<PhotoRecord[]> {
    return this.db.transaction(async (tx) => {
      await tx.query('DELETE FROM matches WHERE user_id = $1', [userId]);
      await tx.query('DELETE FROM match_offers WHERE user_id = $1', [userId]);
      const removed = await tx.query<PhotoRow>(
        `DELETE FROM photos WHERE user_id = $1 AND kind = 'FACECAM' RETURNING ${PHOTO_COLUMNS}`,
        [userId],
      );
      // Any other photo that names the user keeps its content but no longer the name.
      await tx.query('UPDATE photos SET user_id = NULL WHERE user_id = $1', [userId]);
      return removed.map(toPhoto).sort((a, b) => a.processedAt.getTime() - b.processedAt.getTime() || a.photoId.localeCompare(b.photoId));
    });
  }

  async countUserRows(userId: string): Promise<number> {
    const [row] = await this.db.query<{ n: number }>(
      `SELECT (SELECT count(*) FROM photos WHERE user_id = $1)::int + (SELECT count(*) FROM matches WHERE user_id = $1)::int
            + (SELECT count(*) FROM match_offers WHERE user_id = $1)::int AS n`,
      [userId],
    );
    return row?.n ?? 0;
  }

  async ping(): Promise<void> {
    await this.db.ping();
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}
