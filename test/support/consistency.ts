/**
 * Checks of what concurrent requests leave in the stores, through the ports and, for what names a
 * user, through the storage directly (test/support/inspect.ts), so the same checks run on the
 * embedded stores and on PostgreSQL + Milvus + S3. Each returns the problems it found, as
 * sentences; an empty list is a consistent state.
 */
import { sampleId } from '../../src/domain/photo.js';
import type { MatchStore } from '../../src/ports/match-store.js';
import type { ObjectStore } from '../../src/ports/object-store.js';
import type { Collection, VectorStore } from '../../src/ports/vector-store.js';
import type { StorageInspector } from './inspect.js';

export interface CheckedStores {
  vectors: VectorStore;
  matches: MatchStore;
  objects: ObjectStore;
}

/** Every vector id of a photo in one collection (duplicates kept), found by an exhaustive search of its event (at most 1000 vectors). */
export async function vectorIds(vectors: VectorStore, collection: Collection, eventId: string, photoId: string, dimension: number): Promise<string[]> {
  // Every vector of the event is within similarity -1 of any probe: one search lists them all.
  const probe = new Float32Array(dimension).fill(1 / Math.sqrt(dimension));
  const hits = await vectors.search(collection, { eventId, embedding: probe, limit: 1000, minSimilarity: -1 });
  return hits.filter((h) => h.photoId === photoId).map((h) => h.id);
}

/** A processed photo: its recorded faces are exactly its stored vectors, once each; its matches point at them. */
export async function photoProblems(s: CheckedStores, eventId: string, photoId: string, dimension: number): Promise<string[]> {
  const problems: string[] = [];
  const rec = await s.matches.getPhoto(photoId);
  if (!rec) return [`${photoId}: not recorded`];
  const actions = await vectorIds(s.vectors, 'action_faces', eventId, photoId, dimension);
  const samples = await vectorIds(s.vectors, 'user_samples', eventId, photoId, dimension);
  const faces = new Set(rec.faces.map((f) => f.faceId));
  const dup = (ids: string[]): string[] => ids.filter((id, i) => ids.indexOf(id) !== i);
  if (dup(actions).length) problems.push(`${photoId}: duplicate action vectors ${dup(actions).join(', ')}`);
  if (dup(samples).length) problems.push(`${photoId}: duplicate sample vectors ${dup(samples).join(', ')}`);
  if (rec.photo.kind === 'ACTION_SHOT') {
    const stored = new Set(actions);
    const missing = [...faces].filter((f) => !stored.has(f));
    const extra = [...stored].filter((v) => !faces.has(v));
    if (missing.length) problems.push(`${photoId}: recorded faces without a vector: ${missing.join(', ')}`);
    if (extra.length) problems.push(`${photoId}: vectors of faces not recorded: ${extra.join(', ')}`);
    if (samples.length) problems.push(`${photoId}: an action shot with user samples: ${samples.join(', ')}`);
  } else {
    const expected = sampleId(rec.photo.userId ?? '?', photoId);
    if (samples.length !== 1 || samples[0] !== expected) problems.push(`${photoId}: samples ${JSON.stringify(samples)}, expected [${expected}]`);
    if (actions.length) problems.push(`${photoId}: a facecam with action vectors: ${actions.join(', ')}`);
  }
  for (const m of rec.matches) if (!faces.has(m.faceId)) problems.push(`${photoId}: a match of ${m.userId} to a face not recorded (${m.faceId})`);
  if (rec.photo.annotatedKey && !(await s.objects.exists(rec.photo.annotatedKey))) problems.push(`${photoId}: annotated copy missing`);
  return problems;
}

/**
 * A user after an enrolment (selfie `photoId`) and a ForgetUser raced: either fully enrolled
 * (record, sample vector, annotated selfie) or nothing of them left. `storage` reads the vectors
 * and rows naming the user from the stores' backing.
 */
export async function userProblems(
  s: CheckedStores,
  storage: StorageInspector,
  userId: string,
  photoId: string,
  annotatedKey: string,
): Promise<{ enrolled: boolean; problems: string[] }> {
  const rec = await s.matches.getPhoto(photoId);
  const samples = await storage.vectorsOfUser(userId);
  const image = await s.objects.exists(annotatedKey);
  const rows = await storage.rowsNamingUser(userId);
  const state = `record ${rec ? 'yes' : 'no'}, sample vectors ${samples}, annotated selfie ${image ? 'yes' : 'no'}, rows naming the user ${rows}`;
  if (rec && rec.photo.kind === 'FACECAM' && rec.photo.userId === userId && samples === 1 && image) return { enrolled: true, problems: [] };
  if (!rec && samples === 0 && !image && rows === 0) return { enrolled: false, problems: [] };
  return { enrolled: Boolean(rec), problems: [`${userId}: half enrolled (${state})`] };
}
