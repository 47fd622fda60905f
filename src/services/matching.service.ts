/**
 * The use cases of facematch: process a photo (enrol a selfie or match an action shot), list a
 * user's photos, search by face, delete a photo, forget a user. Imports ports and domain only.
 *
 * Write order of ProcessPhoto (what a crash or a retry leaves): vectors are upserted under
 * deterministic ids, the annotated image is written under a deterministic key, and the match store's
 * transaction comes last: it is the commit point. A crash before it leaves at most vectors and an
 * image that the retry overwrites; match records are only written for faces the match store knows.
 *
 * Each side writes its vectors before it searches the other side's: an action shot stores its faces
 * and then searches the user samples, a selfie stores its sample and then searches the action
 * faces. Of an action shot and an enrolment processed at the same time, at least one therefore
 * sees the other's vectors. If only the enrolment does, its offer may reach an action shot that is
 * not recorded yet: the match store keeps the offer and applies it when that photo is recorded.
 * A selfie's drawing runs beside its vector write and search.
 */
import { context, trace, type Span, type Tracer } from '@opentelemetry/api';
import { CancelledError, InvalidArgumentError, NoFaceError } from '../domain/errors.js';
import { redactUrl } from '../domain/redact.js';
import type { Box, Face, FaceAnalysis, Landmarks, Picture } from '../domain/face.js';
import { checkId, MAX_SEARCH_LIMIT } from '../domain/ids.js';
import {
  DEFAULT_EVENT,
  faceId,
  sampleId,
  type FaceRecord,
  type MatchRecord,
  type PhotoKind,
  type PhotoRecord,
} from '../domain/photo.js';
import type { ImageSource } from '../ports/image-source.js';
import { photoLock, userLock, type KeyedLocks } from '../ports/locks.js';
import type { MatchStore, UserPhoto } from '../ports/match-store.js';
import type { ObjectLocation, ObjectStore } from '../ports/object-store.js';
import type { Collection, VectorHit, VectorRecord, VectorStore } from '../ports/vector-store.js';
import { ATTR, SPAN, stageSpan, type Stage } from '../telemetry/attributes.js';

/** The part of FaceAnalyzer the service uses (a class, not a port: it has one implementation). */
export interface FaceModel {
  readonly threshold: number;
  readonly pack: { name: string };
  /**
   * With `keepPicture`, the decoded pixels come back too (to draw the annotated copy on). With
   * `signal`, a photo still queued is dropped when it aborts, and the call rejects at once.
   */
  analyze(bytes: Uint8Array, what?: string, options?: { keepPicture?: boolean; signal?: AbortSignal }): Promise<FaceAnalysis>;
}

export interface DrawnFace {
  box: Box;
  score: number;
  landmarks: Landmarks;
  label?: string;
  highlight?: boolean;
}

/**
 * Draws faces over the photo (of the given upright size) and encodes a JPEG (sharp, in an adapter),
 * from the decoded pixels the model handed back or else from the encoded bytes.
 */
export type Annotator = (
  source: Uint8Array | Picture,
  faces: readonly DrawnFace[],
  size: { width: number; height: number },
) => Promise<Uint8Array>;

export interface MatchingDeps {
  model: FaceModel;
  images: ImageSource;
  vectors: VectorStore;
  objects: ObjectStore;
  matches: MatchStore;
  /** Serialises the write phase of requests on the same photo or user, across replicas. */
  locks: KeyedLocks;
  annotate: Annotator;
  tracer: Tracer;
  /** Overrides the model pack's threshold. */
  threshold?: number;
  now?: () => Date;
}

export interface ProcessPhotoRequest {
  photoId: string;
  imageUrl: string;
  eventId?: string;
  kind: PhotoKind;
  userId?: string;
  signal?: AbortSignal;
}

export interface FaceMatch {
  userId?: string;
  photoId: string;
  faceId: string;
  similarity: number;
}

export interface ProcessedFace {
  faceId: string;
  box: Box;
  score: number;
  landmarks: Landmarks;
  matches: FaceMatch[];
}

export type StageTimes = Partial<Record<Stage, number>> & { total: number };

interface StageContext {
  times: StageTimes;
  /** Aborted when the caller goes away or its deadline passes: work stops at the next stage. */
  signal?: AbortSignal;
}

export interface ProcessPhotoResult {
  photoId: string;
  eventId: string;
  kind: PhotoKind;
  width: number;
  height: number;
  faces: ProcessedFace[];
  /** For a facecam: the action-shot faces now matched to the user. */
  matches: FaceMatch[];
  annotated: ObjectLocation;
  timings: StageTimes;
}

/** How many action-shot faces one selfie may be matched to in an event, at most. */
const MAX_SELFIE_HITS = 10_000;

export const annotatedKey = (eventId: string, photoId: string): string => `annotated/${eventId}/${photoId}.jpg`;

export class MatchingService {
  private readonly threshold: number;
  private readonly now: () => Date;

  constructor(private readonly d: MatchingDeps) {
    this.threshold = d.threshold ?? d.model.threshold;
    this.now = d.now ?? (() => new Date());
  }

  get matchThreshold(): number {
    return this.threshold;
  }

  async processPhoto(req: ProcessPhotoRequest): Promise<ProcessPhotoResult> {
    const photoId = checkId('photo_id', req.photoId);
    const eventId = req.eventId ? checkId('event_id', req.eventId) : DEFAULT_EVENT;
    if (req.kind !== 'ACTION_SHOT' && req.kind !== 'FACECAM') {
      throw new InvalidArgumentError(`kind must be ACTION_SHOT or FACECAM, got "${String(req.kind)}"`);
    }
    const userId = req.kind === 'FACECAM' ? checkId('user_id (required for a FACECAM)', req.userId) : undefined;
    if (!req.imageUrl) throw new InvalidArgumentError('image_url is required');

    return this.inSpan(SPAN.processPhoto, { [ATTR.photoId]: photoId, [ATTR.eventId]: eventId, [ATTR.kind]: req.kind }, async (span) => {
      const t0 = performance.now();
      const times: StageTimes = { total: 0 };
      const ctx: StageContext = { times, ...(req.signal ? { signal: req.signal } : {}) };
      const bytes = await this.stage('fetch', ctx, () => this.d.images.read(req.imageUrl, req.signal));
      span.setAttribute(ATTR.imageBytes, bytes.length);
      const analysis = await this.d.model.analyze(bytes, redactUrl(req.imageUrl), { keepPicture: true, ...(req.signal ? { signal: req.signal } : {}) });
      for (const s of analysis.stages) {
        this.recordStage(s.stage, s.start, s.end);
        times[s.stage] = s.end - s.start;
      }
      span.setAttribute(ATTR.faces, analysis.faces.length);
      // The write phase runs under the photo's lock (and the enrolling user's): two requests for
      // the same photo (an Envoy retry or hedge, on two replicas) write one after the other, and the
      // one that takes the lock last wins whole; a ForgetUser waits for an enrolment or comes first.
      const keys = [photoLock(photoId), ...(userId ? [userLock(userId)] : [])];
      const result = await this.d.locks.withLocks(
        keys,
        async (held) => {
          const locked: StageContext = { times, signal: req.signal ? AbortSignal.any([req.signal, held.lost]) : held.lost };
          if (locked.signal?.aborted) throw new CancelledError('the request was cancelled while it waited for its photo');
          // What the photo had before (its annotated key may change with its event).
          const previous = await this.d.matches.getPhoto(photoId);
          const photo: PhotoRecord = {
            photoId,
            eventId,
            kind: req.kind,
            ...(userId ? { userId } : {}),
            // Stored and listed: never a presigned URL's signature or a URL's credentials.
            sourceUrl: redactUrl(req.imageUrl),
            width: analysis.width,
            height: analysis.height,
            annotatedKey: annotatedKey(eventId, photoId),
            processedAt: this.now(),
          };
          const done =
            req.kind === 'FACECAM'
              ? await this.enrol(photo, userId!, analysis, bytes, locked, previous !== undefined)
              : await this.matchActionShot(photo, analysis, bytes, locked);
          if (previous?.photo.annotatedKey && previous.photo.annotatedKey !== photo.annotatedKey) {
            await this.d.objects.delete(previous.photo.annotatedKey);
          }
          return done;
        },
        req.signal,
      );
      times.total = performance.now() - t0;
      span.setAttribute(ATTR.matches, result.faces.reduce((n, f) => n + f.matches.length, 0) + result.matches.length);
      return { ...result, timings: times };
    });
  }

  private async matchActionShot(
    photo: PhotoRecord,
    analysis: FaceAnalysis,
    bytes: Uint8Array,
    ctx: StageContext,
  ): Promise<Omit<ProcessPhotoResult, 'timings'>> {
    const { photoId, eventId } = photo;
    const faces = analysis.faces.map((f, i) => faceRecord(photoId, i, f));
    // The faces are stored before the samples are searched (see the header: concurrent enrolments).
    await this.stage('store', ctx, () =>
      this.replaceVectors(
        photoId,
        'action_faces',
        analysis.faces.map((f, i) => ({ id: faces[i]!.faceId, eventId, photoId, embedding: f.embedding })),
      ),
    );
    // Each face is assigned to its best user only.
    const found = await this.stage('search', ctx, () => this.searchEach('user_samples', eventId, analysis.faces.map((f) => f.embedding), 1));
    const best = found.map((hits) => hits[0]);
    const annotated = await this.drawAndUpload(
      photo,
      analysis.picture ?? bytes,
      faces.map((f, i) => ({ ...f, highlight: !!best[i], label: best[i] ? `#${i} ${best[i].similarity.toFixed(2)}` : `#${i}` })),
      ctx,
    );
    const now = this.now();
    const matches: MatchRecord[] = best.flatMap((hit, i) =>
      hit?.userId ? [{ photoId, faceId: faces[i]!.faceId, userId: hit.userId, eventId, similarity: hit.similarity, matchedAt: now }] : [],
    );
    await this.stage('record', ctx, () => this.d.matches.replacePhoto(photo, faces, matches));
    return {
      photoId,
      eventId,
      kind: photo.kind,
      width: photo.width,
      height: photo.height,
      faces: faces.map((f, i) => ({
        faceId: f.faceId,
        box: f.box,
        score: f.score,
        landmarks: f.landmarks,
        matches: best[i]?.userId ? [{ userId: best[i].userId, photoId, faceId: f.faceId, similarity: best[i].similarity }] : [],
      })),
      matches: [],
      annotated,
    };
  }

  private async enrol(
    photo: PhotoRecord,
    userId: string,
    analysis: FaceAnalysis,
    bytes: Uint8Array,
    ctx: StageContext,
    /** The photo was recorded before (this is a reprocess). */
    reenrolment: boolean,
  ): Promise<Omit<ProcessPhotoResult, 'timings'>> {
    const { photoId, eventId } = photo;
    const face = analysis.faces[0];
    if (!face) throw new NoFaceError(`no face found in the facecam photo ${photoId}; nothing was enrolled`);
    const record = faceRecord(photoId, 0, face);
    // The drawing needs neither the vectors nor the search; the sample is stored before the action
    // faces are searched (see the header: concurrent action shots).
    const drawn = this.drawAndUpload(photo, analysis.picture ?? bytes, [{ ...record, highlight: true, label: userId }], ctx);
    let stored = false;
    const searched = (async () => {
      await this.stage('store', ctx, () =>
        this.replaceVectors(photoId, 'user_samples', [{ id: sampleId(userId, photoId), eventId, photoId, userId, embedding: face.embedding }]),
      );
      stored = true;
      return this.stage('search', ctx, () => this.search('action_faces', eventId, face.embedding, MAX_SELFIE_HITS));
    })();
    let hits: VectorHit[];
    let annotated: ObjectLocation;
    let written: MatchRecord[];
    let recorded = false;
    try {
      [hits, annotated] = await settled(searched, drawn);
      const now = this.now();
      written = await this.stage('record', ctx, async () => {
        await this.d.matches.replacePhoto(photo, [record], []);
        recorded = true;
        return this.d.matches.offerMatches(
          hits.map((h) => ({ photoId: h.photoId, faceId: h.id, userId, eventId, similarity: h.similarity, matchedAt: now })),
        );
      });
    } catch (error) {
      // Compensation: a first enrolment that failed after its sample was stored and before it was
      // recorded takes the sample back, or later action shots would match a user the match store
      // never enrolled. (A failed reprocess keeps it: the photo's earlier enrolment is still
      // recorded; so does one that failed after its record, at the offer of matches.) Best effort:
      // if this delete fails too, or the process dies first, the orphan stays until the user is
      // forgotten or the enrolment retried (README, "What a failure leaves").
      if (stored && !recorded && !reenrolment) {
        await this.d.vectors
          .deleteByPhoto('user_samples', photoId)
          .catch((cleanup: unknown) => trace.getActiveSpan()?.recordException(cleanup as Error));
      }
      throw error;
    }
    return {
      photoId,
      eventId,
      kind: photo.kind,
      width: photo.width,
      height: photo.height,
      faces: [{ faceId: record.faceId, box: record.box, score: record.score, landmarks: record.landmarks, matches: [] }],
      matches: written.map((m) => ({ userId, photoId: m.photoId, faceId: m.faceId, similarity: m.similarity })),
      annotated,
    };
  }

  /**
   * The photo's vectors become exactly `records`: whatever it had before, in either collection (a
   * reprocess may find fewer faces, or turn a facecam into an action shot), goes first.
   */
  private async replaceVectors(photoId: string, collection: Collection, records: VectorRecord[]): Promise<void> {
    // Together: on Milvus each delete by photo waits for the query node to catch up (Strong).
    await settled(this.d.vectors.deleteByPhoto('action_faces', photoId), this.d.vectors.deleteByPhoto('user_samples', photoId));
    await this.d.vectors.upsert(collection, records);
  }

  private async drawAndUpload(photo: PhotoRecord, source: Uint8Array | Picture, faces: DrawnFace[], ctx: StageContext): Promise<ObjectLocation> {
    const jpeg = await this.stage('draw', ctx, () => this.d.annotate(source, faces, { width: photo.width, height: photo.height }));
    return this.stage('upload', ctx, () => this.d.objects.put(photo.annotatedKey!, jpeg, 'image/jpeg'));
  }

  private search(collection: Collection, eventId: string, embedding: Float32Array, limit: number): Promise<VectorHit[]> {
    return this.d.vectors.search(collection, { eventId, embedding, limit, minSimilarity: this.threshold });
  }

  /** One search per embedding, in one call to the store (a crowd of 100 faces is one round trip). */
  private searchEach(collection: Collection, eventId: string, embeddings: readonly Float32Array[], limit: number): Promise<VectorHit[][]> {
    if (embeddings.length === 0) return Promise.resolve([]);
    return this.d.vectors.searchMany(
      collection,
      embeddings.map((embedding) => ({ eventId, embedding, limit, minSimilarity: this.threshold })),
    );
  }

  /** Photos the user appears in, each once, best similarity first. */
  async listUserPhotos(userIdIn: string, eventId?: string): Promise<UserPhoto[]> {
    const userId = checkId('user_id', userIdIn);
    if (eventId) checkId('event_id', eventId);
    return this.inSpan(SPAN.listUserPhotos, { [ATTR.userId]: userId }, () => this.d.matches.photosOfUser(userId, eventId || undefined));
  }

  /** The largest face of an image, searched among enrolled users or action-shot faces of an event. */
  async searchFaces(
    imageUrl: string,
    eventIdIn: string | undefined,
    limit: number,
    target: 'users' | 'action_shots',
    signal?: AbortSignal,
  ): Promise<FaceMatch[]> {
    if (!imageUrl) throw new InvalidArgumentError('image_url is required');
    const eventId = eventIdIn ? checkId('event_id', eventIdIn) : DEFAULT_EVENT;
    const n = Math.min(Math.max(1, limit || 10), MAX_SEARCH_LIMIT);
    return this.inSpan(SPAN.searchFaces, { [ATTR.eventId]: eventId }, async () => {
      const ctx: StageContext = { times: { total: 0 }, ...(signal ? { signal } : {}) };
      const bytes = await this.stage('fetch', ctx, () => this.d.images.read(imageUrl, signal));
      const analysis = await this.d.model.analyze(bytes, redactUrl(imageUrl), signal ? { signal } : {});
      for (const s of analysis.stages) this.recordStage(s.stage, s.start, s.end);
      const face = analysis.faces[0];
      if (!face) throw new NoFaceError(`no face found in ${redactUrl(imageUrl)}`);
      const collection: Collection = target === 'users' ? 'user_samples' : 'action_faces';
      // Users may have several samples: ask for more and keep each user's best.
      const hits = await this.stage('search', ctx, () => this.search(collection, eventId, face.embedding, target === 'users' ? n * 5 : n));
      const seen = new Set<string>();
      const out: FaceMatch[] = [];
      for (const h of hits) {
        const key = target === 'users' ? h.userId ?? h.id : h.id;
        if (seen.has(key)) continue;
        seen.add(key);
        out.push({ ...(h.userId ? { userId: h.userId } : {}), photoId: h.photoId, faceId: h.id, similarity: h.similarity });
        if (out.length === n) break;
      }
      return out;
    });
  }

  /** Removes a photo: its vectors, annotated image and records. False when it was not known. */
  async deletePhoto(photoIdIn: string): Promise<boolean> {
    const photoId = checkId('photo_id', photoIdIn);
    return this.inSpan(SPAN.deletePhoto, { [ATTR.photoId]: photoId }, () =>
      this.d.locks.withLocks([photoLock(photoId)], async () => {
        const known = await this.d.matches.getPhoto(photoId);
        await settled(this.d.vectors.deleteByPhoto('action_faces', photoId), this.d.vectors.deleteByPhoto('user_samples', photoId));
        if (known?.photo.annotatedKey) await this.d.objects.delete(known.photo.annotatedKey);
        await this.d.matches.deletePhoto(photoId);
        return known !== undefined;
      }),
    );
  }

  /**
   * Biometric erasure: every sample vector, facecam image and match of the user. Vectors and
   * images go first and the records last, so an interrupted erasure is completed by a retry.
   */
  async forgetUser(userIdIn: string): Promise<{ deletedSamples: number; deletedMatches: number; deletedObjects: number }> {
    const userId = checkId('user_id', userIdIn);
    // Under the user's lock: an enrolment of the user running now either finishes first (and is
    // erased here) or starts its write phase after (and enrols the user anew), never half of each.
    return this.inSpan(SPAN.forgetUser, { [ATTR.userId]: userId }, () =>
      this.d.locks.withLocks([userLock(userId)], async () => {
        const samples = await this.d.matches.samplesOfUser(userId);
        const matchesBefore = (await this.d.matches.photosOfUser(userId)).length;
        const deletedSamples = await this.d.vectors.deleteByUser(userId);
        let deletedObjects = 0;
        for (const s of samples) {
          if (s.annotatedKey) {
            await this.d.objects.delete(s.annotatedKey);
            deletedObjects++;
          }
        }
        await this.d.matches.forgetUser(userId);
        // The vectors are deleted; a store that keeps deleted data until compaction (Milvus) is asked
        // to compact now. A failure here does not undo the erasure: it is recorded on the span, and
        // the store's own scheduled compaction reclaims the space later.
        await this.d.vectors.compact?.().catch((error: unknown) => trace.getActiveSpan()?.recordException(error as Error));
        return { deletedSamples, deletedMatches: matchesBefore, deletedObjects };
      }),
    );
  }

  private async inSpan<T>(name: string, attributes: Record<string, string | number>, fn: (span: Span) => Promise<T>): Promise<T> {
    return this.d.tracer.startActiveSpan(name, { attributes }, async (span) => {
      try {
        return await fn(span);
      } catch (error) {
        span.recordException(error as Error);
        span.setStatus({ code: 2, message: (error as Error).message });
        throw error;
      } finally {
        span.end();
      }
    });
  }

  private async stage<T>(stage: Stage, ctx: StageContext, fn: () => Promise<T>): Promise<T> {
    if (ctx.signal?.aborted) throw new CancelledError(`the request was cancelled before its ${stage} stage`);
    const { times } = ctx;
    const t0 = performance.now();
    const span = this.d.tracer.startSpan(stageSpan(stage), undefined, context.active());
    try {
      return await fn();
    } catch (error) {
      span.recordException(error as Error);
      span.setStatus({ code: 2, message: (error as Error).message });
      throw error;
    } finally {
      span.end();
      times[stage] = (times[stage] ?? 0) + performance.now() - t0;
    }
  }

  /** A stage that already ran (inside the model), recorded with its real start and end. */
  private recordStage(stage: Stage, start: number, end: number): void {
    this.d.tracer.startSpan(stageSpan(stage), { startTime: start }, context.active()).end(end);
  }
}

/**
 * Awaits concurrent steps and, unlike Promise.all, returns or throws only once every one has
 * settled: no step is still writing when the caller moves on (or reports the failure).
 */
async function settled<T extends readonly unknown[]>(...steps: { [K in keyof T]: Promise<T[K]> }): Promise<T> {
  const results = await Promise.allSettled(steps);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return results.map((r) => (r as PromiseFulfilledResult<unknown>).value) as unknown as T;
}

function faceRecord(photoId: string, index: number, f: Face): FaceRecord {
  return { faceId: faceId(photoId, index), photoId, index, box: f.box, score: f.score, landmarks: f.landmarks };
}

