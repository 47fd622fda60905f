/**
 * MatchStore on the embedded database, with the relational schema and the statements of the
 * PostgreSQL adapter (src/adapters/sql: migrations, match-statements.ts). Rows travel as one
 * JSON parameter per table (`jsonb_to_recordset`), so a photo with many faces is one statement per
 * table. PGlite runs one transaction at a time: no locks or retries are needed around them.
 */
import type { FaceRecord, MatchRecord, PhotoRecord } from '../../domain/photo.js';
import type { MatchStore, UserPhoto } from '../../ports/match-store.js';
import { checkReplacement } from '../sql/match-rows.js';
import * as sql from '../sql/match-statements.js';
import { MATCH_MIGRATIONS_DIR, type PgliteDatabase } from './pglite.database.js';

export class PgliteMatchStore implements MatchStore {
  /** Takes ownership of the lease: `close()` ends it. */
  constructor(private readonly db: PgliteDatabase) {}

  async init(): Promise<void> {
    await this.db.migrate('facematch', MATCH_MIGRATIONS_DIR);
  }

  async replacePhoto(photo: PhotoRecord, faces: readonly FaceRecord[], matches: readonly MatchRecord[]): Promise<void> {
    checkReplacement(photo, faces, matches);
    await this.db.transaction((tx) => sql.writePhoto(tx, photo, faces, matches));
  }

  async offerMatches(matches: readonly MatchRecord[]): Promise<MatchRecord[]> {
    const offered = sql.bestOffers(matches);
    if (offered.length === 0) return [];
    return this.db.transaction((tx) => sql.offerMatches(tx, offered));
  }

  getPhoto(photoId: string): Promise<{ photo: PhotoRecord; faces: FaceRecord[]; matches: MatchRecord[] } | undefined> {
    return this.db.transaction((tx) => sql.readPhoto(tx, photoId));
  }

  photoRecord(photoId: string): Promise<PhotoRecord | undefined> {
    return sql.photoRecord(this.db, photoId);
  }

  photosOfUser(userId: string, eventId?: string): Promise<UserPhoto[]> {
    return sql.photosOfUser(this.db, userId, eventId);
  }

  photosOfEvent(eventId: string, after: string | undefined, limit: number): Promise<PhotoRecord[]> {
    return sql.photosOfEvent(this.db, eventId, after, limit);
  }

  samplesOfUser(userId: string): Promise<PhotoRecord[]> {
    return sql.samplesOfUser(this.db, userId);
  }

  deletePhoto(photoId: string): Promise<PhotoRecord | undefined> {
    return this.db.transaction((tx) => sql.deletePhoto(tx, photoId));
  }

  forgetUser(userId: string): Promise<PhotoRecord[]> {
    return this.db.transaction((tx) => sql.forgetUser(tx, userId));
  }

  async ping(): Promise<void> {
    await this.db.ping();
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}
