/**
 * PostgresMatchStore against a real PostgreSQL 15 (scripts/test-env up postgres): the MatchStore
 * contract, then what only a server shared by replicas must show — replicas starting at once apply
 * each migration once, a changed or unknown migration is refused, concurrent writers of one photo
 * leave one whole version, a lock held too long is a timeout and not a hang — and when PostgreSQL
 * stops, calls fail fast with BACKEND_UNAVAILABLE naming it, and the same store recovers once it is
 * back, with nothing lost.
 *
 * Reads FACEMATCH_POSTGRES_URL (set by vitest.integration.config.ts from `scripts/test-env env`);
 * without it the file is skipped. The contract uses that database (its rows are of their own
 * namespace); the migration tests make throwaway databases and drop them.
 */
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MATCH_MIGRATIONS_DIR } from '../../src/adapters/sql/migrations.js';
import { PostgresMatchStore } from '../../src/adapters/postgres/postgres.match-store.js';
import type { PostgresConfig } from '../../src/config/config.js';
import type { Landmarks } from '../../src/domain/face.js';
import { faceId, type FaceRecord, type PhotoRecord } from '../../src/domain/photo.js';
import { matchStoreContract } from '../contract/match-store.contract.js';
import { postgresRows } from '../support/inspect.js';
import { testEnv, timed } from './test-env.js';

const URL_ = process.env.FACEMATCH_POSTGRES_URL;
if (!URL_) console.warn('postgres.match-store.test.ts skipped: FACEMATCH_POSTGRES_URL is not set (scripts/test-env up postgres)');

const RUN = `it${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
const LANDMARKS: Landmarks = [
  [30, 40],
  [60, 40],
  [45, 55],
  [35, 70],
  [58, 70],
];

function config(over: Partial<PostgresConfig> = {}, database?: string): PostgresConfig {
  const url = new URL(URL_!);
  if (database) url.pathname = `/${database}`;
  return { url: url.href, poolMax: 10, timeoutMs: 5000, ...over };
}

/** A connection to the server's `postgres` database, for what the store does not do. */
async function admin<T>(fn: (client: pg.Client) => Promise<T>, database = 'postgres'): Promise<T> {
  const client = new pg.Client({ connectionString: config({}, database).url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

const databases: string[] = [];
async function freshDatabase(): Promise<string> {
  const name = `facematch_${RUN}_${databases.length}`;
  await admin((c) => c.query(`CREATE DATABASE ${name}`));
  databases.push(name);
  return name;
}

const photoOf = (photoId: string, eventId: string, width = 640): PhotoRecord => ({
  photoId,
  eventId,
  kind: 'ACTION_SHOT',
  sourceUrl: `https://photos.example/${photoId}.jpg`,
  width,
  height: 480,
  processedAt: new Date(Date.UTC(2025, 5, 1, 12)),
});
const facesOf = (photoId: string, n: number): FaceRecord[] =>
  Array.from({ length: n }, (_, index) => ({
    faceId: faceId(photoId, index),
    photoId,
    index,
    box: { x: 10 + index * 100, y: 20, width: 80, height: 100 },
    score: 0.9,
    landmarks: LANDMARKS,
  }));

describe.skipIf(!URL_)(`PostgreSQL at ${URL_ ?? '(unset)'}`, () => {
  afterAll(async () => {
    for (const name of databases) await admin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).catch(() => undefined);
  });

  matchStoreContract('PostgreSQL', () => {
    const storage = postgresRows(config().url);
    return Promise.resolve({
      store: PostgresMatchStore.open(config()),
      rowsNamingUser: (userId: string) => storage.rowsNamingUser(userId),
      cleanup: () => storage.close(),
    });
  });

  describe('migrations', () => {
    it('replicas starting at once apply each migration once, recording its checksum', async () => {
      const database = await freshDatabase();
      const replicas = Array.from({ length: 6 }, () => PostgresMatchStore.open(config({ poolMax: 2 }, database)));
      try {
        await Promise.all(replicas.map((r) => r.init()));
        await replicas[0]!.init();
        // Every migration file once, with its checksum.
        const files = (await readdir(MATCH_MIGRATIONS_DIR)).filter((f) => f.endsWith('.sql')).sort();
        expect(files.length).toBeGreaterThanOrEqual(2);
        const expected = await Promise.all(
          files.map(async (f) => ({
            scope: 'facematch',
            version: f.replace(/\.sql$/, ''),
            checksum: createHash('sha256').update((await readFile(path.join(MATCH_MIGRATIONS_DIR, f), 'utf8')).replace(/\r\n/g, '\n')).digest('hex'),
          })),
        );
        const rows = await admin((c) => c.query('SELECT scope, version, checksum FROM schema_migrations ORDER BY version'), database);
        expect(rows.rows).toEqual(expected);
        // And every replica works on the schema.
        await replicas[3]!.replacePhoto(photoOf('p', 'e'), facesOf('p', 2), []);
        expect((await replicas[5]!.getPhoto('p'))?.faces).toHaveLength(2);
      } finally {
        await Promise.all(replicas.map((r) => r.close()));
      }
    });

    it('refuses a database whose applied migration changed, or that has one this version does not know', async () => {
      const database = await freshDatabase();
      const store = PostgresMatchStore.open(config({}, database));
      try {
        await store.init();
        await admin((c) => c.query(`UPDATE schema_migrations SET checksum = 'edited' WHERE version = '0001_photos_faces_matches'`), database);
        await expect(store.init()).rejects.toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringMatching(/PostgreSQL at .*0001_photos_faces_matches was changed/) as string });

        await admin(async (c) => {
          await c.query(`UPDATE schema_migrations SET checksum = $1`, [
            createHash('sha256').update(await readFile(path.join(MATCH_MIGRATIONS_DIR, '0001_photos_faces_matches.sql'), 'utf8')).digest('hex'),
          ]);
          await c.query(`INSERT INTO schema_migrations (scope, version, checksum) VALUES ('facematch', '0002_from_the_future', 'x')`);
        }, database);
        await expect(store.init()).rejects.toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringContaining('0002_from_the_future is not known') as string });
      } finally {
        await store.close();
      }
    });
  });

  describe('replicas and timeouts', () => {
    let a: PostgresMatchStore;
    let b: PostgresMatchStore;
    beforeAll(async () => {
      a = PostgresMatchStore.open(config());
      b = PostgresMatchStore.open(config());
      await Promise.all([a.init(), b.init()]);
    });
    afterAll(async () => {
      await Promise.all([a.close(), b.close()]);
    });

    it('concurrent reprocessing of one photo by two replicas leaves one whole version', async () => {
      const photoId = `${RUN}-race`;
      // Version v has v % 4 + 1 faces and width 1000 + v: a mix of versions would show.
      const writes = Array.from({ length: 24 }, (_, v) => (v % 2 === 0 ? a : b).replacePhoto(photoOf(photoId, RUN, 1000 + v), facesOf(photoId, (v % 4) + 1), []));
      await Promise.all(writes);
      const got = await a.getPhoto(photoId);
      const version = got!.photo.width - 1000;
      expect(got!.faces).toEqual(facesOf(photoId, (version % 4) + 1));
    });

    it('a write that waits for a lock longer than the timeout fails with BACKEND_UNAVAILABLE, and the pool stays usable', async () => {
      const store = PostgresMatchStore.open(config({ timeoutMs: 800 }));
      const photoId = `${RUN}-locked`;
      try {
        await store.replacePhoto(photoOf(photoId, RUN), facesOf(photoId, 1), []);
        await admin(async (c) => {
          await c.query('BEGIN');
          await c.query('SELECT * FROM photos WHERE photo_id = $1 FOR UPDATE', [photoId]);
          const blocked = await timed(store.replacePhoto(photoOf(photoId, RUN, 2000), facesOf(photoId, 2), []));
          await c.query('ROLLBACK');
          expect(blocked.error).toMatchObject({ code: 'BACKEND_UNAVAILABLE', message: expect.stringContaining('PostgreSQL at') as string });
          expect(blocked.ms).toBeLessThan(3000);
        }, new URL(URL_!).pathname.slice(1));
        await store.replacePhoto(photoOf(photoId, RUN, 3000), facesOf(photoId, 3), []);
        expect((await store.getPhoto(photoId))?.photo.width).toBe(3000);
      } finally {
        await store.close();
      }
    });

    it('a closed store fails with BACKEND_UNAVAILABLE', async () => {
      const store = PostgresMatchStore.open(config());
      await store.ping();
      await store.close();
      await store.close();
      await expect(store.ping()).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE' });
      await expect(store.getPhoto('x')).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE' });
    });

    it('a server that does not listen fails fast with BACKEND_UNAVAILABLE naming it', async () => {
      // Port 1 on loopback: nothing listens there.
      const store = PostgresMatchStore.open({ url: 'postgres://postgres@127.0.0.1:1/facematch', poolMax: 2, timeoutMs: 2000 });
      try {
        const init = await timed(store.init());
        expect(init.error).toMatchObject({ code: 'BACKEND_UNAVAILABLE', message: expect.stringContaining('PostgreSQL at 127.0.0.1:1/facematch') as string });
        expect(init.ms).toBeLessThan(2500);
      } finally {
        await store.close();
      }
    });
  });

  describe('when PostgreSQL stops and comes back', () => {
    let store: PostgresMatchStore;
    let stopped = false;
    const photoId = `${RUN}-survivor`;
    beforeAll(async () => {
      store = PostgresMatchStore.open(config());
      await store.init();
      await store.replacePhoto(photoOf(photoId, RUN), facesOf(photoId, 2), [
        { photoId, faceId: faceId(photoId, 0), userId: `${RUN}-u`, eventId: RUN, similarity: 0.75, matchedAt: new Date(Date.UTC(2025, 0, 1)) },
      ]);
    });
    afterAll(async () => {
      // Never leave the server down for the next file.
      if (stopped) await testEnv('up', 'postgres');
      await store.close();
    });

    it('calls fail fast with BACKEND_UNAVAILABLE naming PostgreSQL', async () => {
      // The pool holds idle connections to the server: they break with it.
      expect(await store.getPhoto(photoId)).toBeDefined();
      stopped = true;
      await testEnv('down', 'postgres');
      const calls: Record<string, () => Promise<unknown>> = {
        ping: () => store.ping(),
        getPhoto: () => store.getPhoto(photoId),
        replacePhoto: () => store.replacePhoto(photoOf(`${RUN}-new`, RUN), facesOf(`${RUN}-new`, 1), []),
        offerMatches: () => store.offerMatches([{ photoId, faceId: faceId(photoId, 1), userId: `${RUN}-v`, eventId: RUN, similarity: 0.9, matchedAt: new Date() }]),
        photosOfUser: () => store.photosOfUser(`${RUN}-u`),
        forgetUser: () => store.forgetUser(`${RUN}-u`),
      };
      for (const [name, call] of Object.entries(calls)) {
        const result = await timed(call());
        expect(result.error, name).toMatchObject({ code: 'BACKEND_UNAVAILABLE', message: expect.stringContaining('PostgreSQL at 127.0.0.1') as string });
        expect(result.ms, name).toBeLessThan(5000);
      }
    });

    it('the same store serves again once the server is back, with nothing lost', async () => {
      await testEnv('up', 'postgres');
      stopped = false;
      await store.ping();
      const got = await store.getPhoto(photoId);
      expect(got?.faces).toEqual(facesOf(photoId, 2));
      expect(got?.matches.map((m) => m.userId)).toEqual([`${RUN}-u`]);
      // Nothing of the calls that failed was written.
      expect(await store.getPhoto(`${RUN}-new`)).toBeUndefined();
      expect(await store.photosOfUser(`${RUN}-v`)).toEqual([]);
      await store.replacePhoto(photoOf(`${RUN}-after`, RUN), facesOf(`${RUN}-after`, 1), []);
      expect((await store.getPhoto(`${RUN}-after`))?.faces).toHaveLength(1);
    });
  });
});
