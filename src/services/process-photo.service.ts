/**
 * ProcessPhoto: enrol a selfie (FACECAM) or match an action shot, and record it.
 *
 * Write order (what a crash or a retry leaves): vectors are upserted under deterministic ids, the
 * annotated image is written under a deterministic key, and the match store's transaction comes
 * last: it is the commit point. A crash before it leaves at most vectors and an image that the
 * retry overwrites; match records are only written for faces the match store knows.
 *
 * Each side writes its vectors before it searches the other side's: an action shot stores its faces
 * and then searches the user samples, a selfie stores its sample and then searches the action
 * faces. Of an action shot and an enrolment processed at the same time, at least one therefore
 * sees the other's vectors. If only the enrolment does, its offer may reach an action shot that is
 * not recorded yet: the match store keeps the offer and applies it when that photo is recorded.
 * A selfie's drawing runs beside its vector write and search.
 *
 * Concurrent duplicates: the write phase runs under the photo's lock (and an enrolment's under the
 * user's too), across replicas: the call that takes it last writes last and wins whole.
 */
import { trace } from '@opentelemetry/api';
import { CancelledError, InternalError, InvalidArgumentError, NoFaceError } from '../domain/errors.js';
import type { DrawnFace, Face, FaceAnalysis, Picture, StageTimes } from '../domain/face.js';
import { checkId } from '../domain/ids.js';
import { DEFAULT_EVENT, faceId, sampleId, type FaceRecord, type MatchRecord, type PhotoKind, type PhotoRecord } from '../domain/photo.js';
import { redactUrl } from '../domain/redact.js';
import { photoLock, userLock } from '../ports/locks.js';
import type { ObjectLocation } from '../ports/object-store.js';
import type { Collection, VectorHit } from '../ports/vector-store.js';
import { ATTR, SPAN } from '../telemetry/attributes.js';
import { annotatedKey, settled, type FaceMatch, type ProcessedFace, type ServiceDeps, type StageContext, type Tracing } from './use-case.js';

export interface ProcessPhotoRequest {
  photoId: string;
  imageUrl: string;
  eventId?: string;
  kind: PhotoKind;
  userId?: string;
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

export class ProcessPhotoService {
  constructor(
    private readonly d: ServiceDeps,
    private readonly t: Tracing,
    private readonly threshold: number,
    private readonly now: () => Date,
  ) {}

  async run(req: ProcessPhotoRequest): Promise<ProcessPhotoResult> {
    const photoId = checkId('photo_id', req.photoId);
    const eventId = req.eventId ? checkId('event_id', req.eventId) : DEFAULT_EVENT;
    if (req.kind !== 'ACTION_SHOT' && req.kind !== 'FACECAM') {
      throw new InvalidArgumentError(`kind must be ACTION_SHOT or FACECAM, got "${String(req.kind)}"`);
    }
    const userId = req.kind === 'FACECAM' ? checkId('user_id (required for a FACECAM)', req.userId) : undefined;
    if (!req.imageUrl) throw new InvalidArgumentError('image_url is required');

    return this.t.inSpan(SPAN.processPhoto, { [ATTR.photoId]: photoId, [ATTR.eventId]: eventId, [ATTR.kind]: req.kind }, async (span) => {
      const t0 = performance.now();
      const times: StageTimes = { total: 0 };
      // Every stage span says whose photo it is.
      const ids = { [ATTR.photoId]: photoId, [ATTR.eventId]: eventId };
      const ctx: StageContext = { times, attributes: ids, ...(req.signal ? { signal: req.signal } : {}) };
      const bytes = await this.t.stage('fetch', ctx, () => this.d.images.read(req.imageUrl, req.signal));
      span.setAttribute(ATTR.imageBytes, bytes.length);
      // The bytes are handed over: the annotated copy is drawn on the picture that comes back.
      const analysis = await this.d.model.analyze(bytes, redactUrl(req.imageUrl), {
        keepPicture: true,
        handOver: true,
        ...(req.signal ? { signal: req.signal } : {}),
      });
      this.t.modelStages(analysis.stages, times, { ...ids, [ATTR.faces]: analysis.faces.length });
      span.setAttribute(ATTR.faces, analysis.faces.length);
      const picture = analysis.picture;
      if (!picture) throw new InternalError('the face model returned no picture to draw on, though it was asked for one');
      // The write phase runs under the photo's lock (and the enrolling user's): two requests for
      // the same photo (an Envoy retry or hedge, on two replicas) write one after the other, and the
      // one that takes the lock last wins whole; a ForgetUser waits for an enrolment or comes first.
      const keys = [photoLock(photoId), ...(userId ? [userLock(userId)] : [])];
      const result = await this.d.locks.withLocks(
        keys,
        async (held) => {
          const locked: StageContext = { times, attributes: ids, signal: req.signal ? AbortSignal.any([req.signal, held.lost]) : held.lost };
          if (locked.signal?.aborted) throw new CancelledError('the request was cancelled while it waited for its photo');
          // What the photo had before (its annotated key may change with its event).
          const previous = await this.d.matches.photoRecord(photoId);
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
              ? await this.enrol(photo, userId!, analysis, picture, locked, previous !== undefined)
              : await this.matchActionShot(photo, analysis, picture, locked);
          if (previous?.annotatedKey && previous.annotatedKey !== photo.annotatedKey) {
            await this.d.objects.delete(previous.annotatedKey);
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
    picture: Picture,
    ctx: StageContext,
  ): Promise<Omit<ProcessPhotoResult, 'timings'>> {
    const { photoId, eventId } = photo;
    const faces = analysis.faces.map((f, i) => faceRecord(photoId, i, f));
    // The faces are stored before the samples are searched (see the header: concurrent enrolments).
    await this.t.stage(
      'store',
      ctx,
      () =>
        this.d.vectors.replacePhoto(
          photoId,
          'action_faces',
          analysis.faces.map((f, i) => ({ id: faces[i]!.faceId, eventId, photoId, embedding: f.embedding })),
        ),
      () => ({ [ATTR.faces]: faces.length }),
    );
    // Each face is assigned to its best user only.
    const found = await this.t.stage(
      'search',
      ctx,
      () => this.searchEach('user_samples', eventId, analysis.faces.map((f) => f.embedding), 1),
      (hits) => ({ [ATTR.faces]: hits.length, [ATTR.matches]: hits.filter((h) => h[0]?.userId).length }),
    );
    const best = found.map((hits) => hits[0]);
    const annotated = await this.drawAndUpload(
      photo,
      picture,
      faces.map((f, i) => ({ ...f, highlight: !!best[i], label: best[i] ? `#${i} ${best[i].similarity.toFixed(2)}` : `#${i}` })),
      ctx,
    );
    const now = this.now();
    const matches: MatchRecord[] = best.flatMap((hit, i) =>
      hit?.userId ? [{ photoId, faceId: faces[i]!.faceId, userId: hit.userId, eventId, similarity: hit.similarity, matchedAt: now }] : [],
    );
    await this.t.stage(
      'record',
      ctx,
      () => this.d.matches.replacePhoto(photo, faces, matches),
      () => ({ [ATTR.faces]: faces.length, [ATTR.matches]: matches.length }),
    );
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
    picture: Picture,
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
    const drawn = this.drawAndUpload(photo, picture, [{ ...record, highlight: true, label: userId }], ctx);
    let stored = false;
    const searched = (async () => {
      await this.t.stage(
        'store',
        ctx,
        () => this.d.vectors.replacePhoto(photoId, 'user_samples', [{ id: sampleId(userId, photoId), eventId, photoId, userId, embedding: face.embedding }]),
        () => ({ [ATTR.faces]: 1 }),
      );
      stored = true;
      return this.t.stage(
        'search',
        ctx,
        () => this.search('action_faces', eventId, face.embedding, MAX_SELFIE_HITS),
        (hits) => ({ [ATTR.matches]: hits.length }),
      );
    })();
    let hits: VectorHit[];
    let annotated: ObjectLocation;
    let written: MatchRecord[];
    let recorded = false;
    try {
      [hits, annotated] = await settled(searched, drawn);
      const now = this.now();
      written = await this.t.stage(
        'record',
        ctx,
        async () => {
          await this.d.matches.replacePhoto(photo, [record], []);
          recorded = true;
          return this.d.matches.offerMatches(
            hits.map((h) => ({ photoId: h.photoId, faceId: h.id, userId, eventId, similarity: h.similarity, matchedAt: now })),
          );
        },
        (made) => ({ [ATTR.faces]: 1, [ATTR.matches]: made.length }),
      );
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

  private async drawAndUpload(photo: PhotoRecord, picture: Picture, faces: DrawnFace[], ctx: StageContext): Promise<ObjectLocation> {
    const jpeg = await this.t.stage('draw', ctx, () => this.d.annotate(picture, faces, { width: photo.width, height: photo.height }));
    return this.t.stage('upload', ctx, () => this.d.objects.put(photo.annotatedKey!, jpeg, 'image/jpeg'));
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
}

function faceRecord(photoId: string, index: number, f: Face): FaceRecord {
  return { faceId: faceId(photoId, index), photoId, index, box: f.box, score: f.score, landmarks: f.landmarks };
}

