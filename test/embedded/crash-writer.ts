/**
 * Child process of the crash test: opens the embedded stores on the directories it is given and
 * writes photo after photo until it is killed. After each photo it prints `committed <n>`: by then
 * the photo's row, faces and matches, its face vectors and its annotated object are all written.
 *
 *   node --import tsx test/embedded/crash-writer.ts <dataDir> <objectsDir> <first> [mixed|replace]
 *
 * mixed: photo n has 1 + n % 4 faces (its sourceUrl says how many), with vectors and an object;
 * every third photo also rewrites an earlier one with another number of faces.
 * replace: only MatchStore.replacePhoto, back to back, so that a kill most likely lands inside one:
 * write n replaces slot photo `crash-r-<n % 10>` with (n * 7) % 25 faces and says `v=<n>`.
 * inject: the kill comes from inside: photo `crash-i-<k>` is written with 3 faces (`committed 0`),
 * then replaced with 5, and the process SIGKILLs itself right after statement k of that transaction.
 */
import { LocalObjectStore } from '../../src/adapters/embedded/local.object-store.js';
import { PgliteDatabase } from '../../src/adapters/embedded/pglite.database.js';
import { PgliteMatchStore } from '../../src/adapters/embedded/pglite.match-store.js';
import { PgliteVectorStore } from '../../src/adapters/embedded/pglite.vector-store.js';
import { faceId, type FaceRecord, type MatchRecord, type PhotoRecord } from '../../src/domain/photo.js';

export const CRASH_DIMENSION = 512;
export const OBJECT_BYTES = 48 * 1024;

export const crashPhotoId = (n: number): string => `crash-${String(n).padStart(5, '0')}`;
export const REPLACE_SLOTS = 10;
export const replaceSlotId = (n: number): string => `crash-r-${n % REPLACE_SLOTS}`;
export const replaceFaceCount = (n: number): number => (n * 7) % 25;
export const crashObjectKey = (n: number): string => `annotated/${crashPhotoId(n)}.bin`;
/** The annotated object of photo n, version v: every byte is the same, so a torn write shows. */
export const crashObjectByte = (n: number, v: number): number => (n * 7 + v * 13) % 251;

function unit(n: number, i: number): Float32Array {
  let seed = (n * 1000 + i + 1) >>> 0;
  const v = new Float32Array(CRASH_DIMENSION);
  let norm = 0;
  for (let k = 0; k < v.length; k++) {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    v[k] = seed / 2 ** 32 - 0.5;
    norm += v[k]! * v[k]!;
  }
  norm = Math.sqrt(norm);
  return v.map((x) => x / norm);
}

function records(
  photoId: string,
  eventId: string,
  n: number,
  faceCount: number,
  version: number,
): { photo: PhotoRecord; faces: FaceRecord[]; matches: MatchRecord[] } {
  const photo: PhotoRecord = {
    photoId,
    eventId,
    kind: 'ACTION_SHOT',
    sourceUrl: `crash://${photoId}?faces=${faceCount}&v=${version}`,
    width: 1000,
    height: 800,
    annotatedKey: crashObjectKey(n),
    processedAt: new Date(),
  };
  const faces: FaceRecord[] = Array.from({ length: faceCount }, (_, index) => ({
    faceId: faceId(photoId, index),
    photoId,
    index,
    box: { x: index * 100, y: 10, width: 90, height: 90 },
    score: 0.9,
    landmarks: [
      [10, 10],
      [20, 10],
      [15, 15],
      [10, 20],
      [20, 20],
    ],
  }));
  const matches: MatchRecord[] = faces
    .filter((f) => f.index % 2 === 0)
    .map((f) => ({ photoId, faceId: f.faceId, userId: `crash-user-${n % 5}`, eventId, similarity: 0.5, matchedAt: new Date() }));
  return { photo, faces, matches };
}

async function writePhoto(
  stores: { matches: PgliteMatchStore; vectors: PgliteVectorStore; objects: LocalObjectStore },
  n: number,
  faceCount: number,
  version: number,
): Promise<void> {
  const photoId = crashPhotoId(n);
  const eventId = `crash-event-${n % 3}`;
  const { photo, faces, matches } = records(photoId, eventId, n, faceCount, version);
  // The order of the service: vectors (a retry upserts), then the relational record, then the object.
  await stores.vectors.deleteByPhoto('action_faces', photoId);
  await stores.vectors.upsert(
    'action_faces',
    faces.map((f) => ({ id: f.faceId, eventId, photoId, embedding: unit(n, f.index) })),
  );
  await stores.matches.replacePhoto(photo, faces, matches);
  await stores.objects.put(crashObjectKey(n), new Uint8Array(OBJECT_BYTES).fill(crashObjectByte(n, version)), 'application/octet-stream');
}

async function main(): Promise<void> {
  const [dataDir, objectsDir, first, mode = 'mixed'] = process.argv.slice(2);
  if (!dataDir || !objectsDir || first === undefined) throw new Error('usage: crash-writer <dataDir> <objectsDir> <first> [mixed|replace]');
  const vectors = new PgliteVectorStore(await PgliteDatabase.open(dataDir));
  const lease = await PgliteDatabase.open(dataDir);
  const matches = new PgliteMatchStore(lease);
  const objects = new LocalObjectStore({ root: objectsDir });
  await vectors.init(CRASH_DIMENSION);
  await matches.init();
  await objects.init();
  process.stdout.write('ready\n');
  if (mode === 'inject') {
    const k = Number(first);
    const photoId = `crash-i-${k}`;
    const before = records(photoId, 'crash-event-i', 0, 3, 0);
    await matches.replacePhoto(before.photo, before.faces, before.matches);
    process.stdout.write('committed 0\n');
    // Arm the trap: statement k of the next transaction is the last thing this process does.
    const transaction = lease.transaction.bind(lease);
    lease.transaction = (fn) =>
      transaction((tx) => {
        let statements = 0;
        return fn({
          query: async <T>(sql: string, params?: unknown[]): Promise<T[]> => {
            const rows = await tx.query<T>(sql, params);
            if (++statements === k) process.kill(process.pid, 'SIGKILL');
            return rows;
          },
          exec: (sql) => tx.exec(sql),
          copyIn: async (sql, data) => {
            const copied = await tx.copyIn(sql, data);
            if (++statements === k) process.kill(process.pid, 'SIGKILL');
            return copied;
          },
        });
      });
    const after = records(photoId, 'crash-event-i', 1, 5, 1);
    await matches.replacePhoto(after.photo, after.faces, after.matches);
    // Not killed: the transaction has fewer statements than k (or is no transaction at all).
    process.stdout.write('committed 1\n');
    process.exit(0);
  }
  if (mode === 'replace') {
    for (let n = Number(first); ; n++) {
      const { photo, faces, matches: found } = records(replaceSlotId(n), 'crash-event-r', n, replaceFaceCount(n), n);
      await matches.replacePhoto(photo, faces, found);
      process.stdout.write(`committed ${n}\n`);
    }
  }
  for (let n = Number(first); ; n++) {
    await writePhoto({ matches, vectors, objects }, n, 1 + (n % 4), 0);
    // Rewrite an earlier photo with another number of faces.
    if (n % 3 === 0 && n >= Number(first) + 2) await writePhoto({ matches, vectors, objects }, n - 2, 1 + ((n + 1) % 4), 1);
    process.stdout.write(`committed ${n}\n`);
  }
}

// Only when run as a script (the test imports the naming helpers).
if (process.argv[1]?.endsWith('crash-writer.ts')) {
  main().catch((error: unknown) => {
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  });
}
