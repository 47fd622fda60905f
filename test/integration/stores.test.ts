/**
 * openStores: the configuration picks each store; real PostgreSQL and S3 (scripts/test-env up
 * postgres s3) beside the embedded vector store; a store that cannot be reached fails the whole
 * open, naming it, and leaves nothing open behind.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { LocalObjectStore } from '../../src/adapters/embedded/local.object-store.js';
import { PgliteDatabase } from '../../src/adapters/embedded/pglite.database.js';
import { PgliteMatchStore } from '../../src/adapters/embedded/pglite.match-store.js';
import { PgliteThread, ThreadedMatchStore, ThreadedVectorStore } from '../../src/adapters/embedded/pglite.thread.js';
import { PgliteVectorStore } from '../../src/adapters/embedded/pglite.vector-store.js';
import { PostgresMatchStore } from '../../src/adapters/postgres/postgres.match-store.js';
import { S3ObjectStore } from '../../src/adapters/s3/s3.object-store.js';
import { openStores } from '../../src/adapters/stores.js';
import { parseConfig, redactConfig } from '../../src/config/config.js';
import { CONTRACT_DIMENSION } from '../contract/vector-store.contract.js';

const log = pino({ level: 'silent' });
const REAL = Boolean(process.env.FACEMATCH_POSTGRES_URL && process.env.FACEMATCH_S3_ENDPOINT);
const RUN = `st${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;

const dirs: string[] = [];
async function dataDir(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'facematch-stores-'));
  dirs.push(dir);
  return dir;
}
afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

/** The environment without the servers' selections: each test says what it wants. */
function env(over: Record<string, string>): NodeJS.ProcessEnv {
  const { FACEMATCH_VECTOR_STORE: _v, FACEMATCH_MATCH_STORE: _m, FACEMATCH_OBJECT_STORE: _o, ...rest } = process.env;
  return { ...rest, ...over };
}

describe('configuration of the stores', () => {
  it('defaults to the embedded stores', () => {
    const config = parseConfig({});
    expect(config.stores).toMatchObject({ vectorStore: 'embedded', matchStore: 'embedded', objectStore: 'embedded' });
    expect(config.postgres).toBeUndefined();
    expect(config.s3).toBeUndefined();
  });

  it('names what a selected store is missing', () => {
    expect(() => parseConfig({ FACEMATCH_MATCH_STORE: 'postgres' })).toThrow(/FACEMATCH_POSTGRES_URL: required with FACEMATCH_MATCH_STORE=postgres/);
    expect(() => parseConfig({ FACEMATCH_OBJECT_STORE: 's3', FACEMATCH_S3_ENDPOINT: 'http://127.0.0.1:9000' })).toThrow(
      /FACEMATCH_S3_ACCESS_KEY: required .*FACEMATCH_S3_SECRET_KEY: required/,
    );
    expect(() => parseConfig({ FACEMATCH_OBJECT_STORE: 'gcs' })).toThrow(/FACEMATCH_OBJECT_STORE/);
    expect(() => parseConfig({ FACEMATCH_POSTGRES_URL: 'mysql://x@y/z' })).toThrow(/a postgres:\/\/user:password@host:port\/database URL/);
    expect(() => parseConfig({ FACEMATCH_S3_ENDPOINT: 'http://s3.example/prefix' })).toThrow(/without a path/);
    expect(() => parseConfig({ FACEMATCH_S3_ENDPOINT: 'not a url' })).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }) as Error);
  });

  it('reads the PostgreSQL and S3 settings, and redacts their secrets for printing', () => {
    const config = parseConfig({
      FACEMATCH_MATCH_STORE: 'postgres',
      FACEMATCH_POSTGRES_URL: 'postgres://facematch:hunter2@db.example:5432/facematch',
      FACEMATCH_OBJECT_STORE: 's3',
      FACEMATCH_S3_ENDPOINT: 'https://s3.example',
      FACEMATCH_S3_ACCESS_KEY: 'AKIA',
      FACEMATCH_S3_SECRET_KEY: 'very-secret',
      FACEMATCH_PRESIGN_SECONDS: '600',
    });
    expect(config.postgres).toEqual({ url: 'postgres://facematch:hunter2@db.example:5432/facematch', poolMax: 10, timeoutMs: 5000 });
    expect(config.s3).toEqual({ endpoint: 'https://s3.example', accessKey: 'AKIA', secretKey: 'very-secret', region: 'us-east-1', presignSeconds: 600 });
    const printed = JSON.stringify(redactConfig(config));
    expect(printed).not.toContain('hunter2');
    expect(printed).not.toContain('very-secret');
    expect(printed).toContain('db.example:5432');
    expect(redactConfig(config).s3?.accessKey).toBe('AKIA');
  });
});

describe('openStores', () => {
  it('embedded by default: vectors and matches share one PGlite database, closed with the stores', async () => {
    const dir = await dataDir();
    const stores = await openStores(parseConfig(env({ FACEMATCH_DATA_DIR: dir })), log);
    expect(stores.vectors).toBeInstanceOf(PgliteVectorStore);
    expect(stores.matches).toBeInstanceOf(PgliteMatchStore);
    expect(stores.objects).toBeInstanceOf(LocalObjectStore);
    expect(PgliteThread.holds(path.join(dir, 'db'))).toBe(false);
    await stores.vectors.init(CONTRACT_DIMENSION);
    await Promise.all([stores.vectors.ping(), stores.matches.ping(), stores.objects.ping()]);
    await stores.close();
    // The directory's lock is released: another open succeeds.
    await (await PgliteDatabase.open(path.join(dir, 'db'))).close();
  });

  it('FACEMATCH_EMBEDDED_DB_THREAD=true: the shared database runs in a thread of its own, closed with the stores', async () => {
    const dir = await dataDir();
    const stores = await openStores(parseConfig(env({ FACEMATCH_DATA_DIR: dir, FACEMATCH_EMBEDDED_DB_THREAD: 'true' })), log);
    expect(stores.vectors).toBeInstanceOf(ThreadedVectorStore);
    expect(stores.matches).toBeInstanceOf(ThreadedMatchStore);
    expect(stores.objects).toBeInstanceOf(LocalObjectStore);
    expect(PgliteThread.holds(path.join(dir, 'db'))).toBe(true);
    await stores.vectors.init(CONTRACT_DIMENSION);
    await Promise.all([stores.vectors.ping(), stores.matches.ping(), stores.objects.ping()]);
    await stores.close();
    expect(PgliteThread.holds(path.join(dir, 'db'))).toBe(false);
    // The directory's lock is released: another open succeeds.
    await (await PgliteDatabase.open(path.join(dir, 'db'))).close();
  });

  it.skipIf(!REAL)('PostgreSQL and S3 when configured, beside the embedded vector store', async () => {
    const dir = await dataDir();
    const config = parseConfig(env({ FACEMATCH_MATCH_STORE: 'postgres', FACEMATCH_OBJECT_STORE: 's3', FACEMATCH_DATA_DIR: dir }));
    const stores = await openStores(config, log);
    try {
      expect(stores.vectors).toBeInstanceOf(PgliteVectorStore);
      expect(stores.matches).toBeInstanceOf(PostgresMatchStore);
      expect(stores.objects).toBeInstanceOf(S3ObjectStore);
      await stores.vectors.init(CONTRACT_DIMENSION);
      // init ran: the bucket exists, the schema is there.
      await Promise.all([stores.vectors.ping(), stores.matches.ping(), stores.objects.ping()]);
      expect(await stores.matches.getPhoto(`${RUN}-none`)).toBeUndefined();
      await stores.objects.put(`${RUN}.txt`, new Uint8Array([1]), 'text/plain');
      await stores.objects.delete(`${RUN}.txt`);
    } finally {
      await stores.close();
    }
    await (await PgliteDatabase.open(path.join(dir, 'db'))).close();
  });

  it('a store that cannot be reached fails the open, naming it, and nothing stays open', async () => {
    const dir = await dataDir();
    const config = parseConfig(
      env({
        FACEMATCH_DATA_DIR: dir,
        FACEMATCH_MATCH_STORE: 'postgres',
        // Nothing listens on port 1.
        FACEMATCH_POSTGRES_URL: 'postgres://postgres@127.0.0.1:1/facematch',
        FACEMATCH_POSTGRES_TIMEOUT_MS: '2000',
      }),
    );
    await expect(openStores(config, log)).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE', message: expect.stringContaining('PostgreSQL at 127.0.0.1:1') as string });
    // The embedded vector store's database was closed again.
    await (await PgliteDatabase.open(path.join(dir, 'db'))).close();
  });
});
