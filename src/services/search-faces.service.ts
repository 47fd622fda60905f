/** SearchFaces: the largest face of an image, searched among enrolled users or action-shot faces of an event. */
import { InvalidArgumentError, NoFaceError } from '../domain/errors.js';
import { checkId, MAX_SEARCH_LIMIT } from '../domain/ids.js';
import { DEFAULT_EVENT } from '../domain/photo.js';
import { redactUrl } from '../domain/redact.js';
import type { Collection } from '../ports/vector-store.js';
import { ATTR, SPAN } from '../telemetry/attributes.js';
import type { FaceMatch, ServiceDeps, StageContext, Tracing } from './use-case.js';

export class SearchFacesService {
  constructor(
    private readonly d: ServiceDeps,
    private readonly t: Tracing,
    private readonly threshold: number,
  ) {}

  /** The largest face of an image, searched among enrolled users or action-shot faces of an event. */
  async run(
    imageUrl: string,
    eventIdIn: string | undefined,
    limit: number,
    target: 'users' | 'action_shots',
    signal?: AbortSignal,
  ): Promise<FaceMatch[]> {
    if (!imageUrl) throw new InvalidArgumentError('image_url is required');
    const eventId = eventIdIn ? checkId('event_id', eventIdIn) : DEFAULT_EVENT;
    const n = Math.min(Math.max(1, limit || 10), MAX_SEARCH_LIMIT);
    return this.t.inSpan(SPAN.searchFaces, { [ATTR.eventId]: eventId }, async () => {
      const ids = { [ATTR.eventId]: eventId };
      const ctx: StageContext = { times: { total: 0 }, attributes: ids, ...(signal ? { signal } : {}) };
      const bytes = await this.t.stage('fetch', ctx, () => this.d.images.read(imageUrl, signal));
      const analysis = await this.d.model.analyze(bytes, redactUrl(imageUrl), { handOver: true, ...(signal ? { signal } : {}) });
      this.t.modelStages(analysis.stages, undefined, { ...ids, [ATTR.faces]: analysis.faces.length });
      const face = analysis.faces[0];
      if (!face) throw new NoFaceError(`no face found in ${redactUrl(imageUrl)}`);
      const collection: Collection = target === 'users' ? 'user_samples' : 'action_faces';
      // Users may have several samples: ask for more and keep each user's best.
      const hits = await this.t.stage(
        'search',
        ctx,
        () => this.d.vectors.search(collection, { eventId, embedding: face.embedding, limit: target === 'users' ? n * 5 : n, minSimilarity: this.threshold }),
        (found) => ({ [ATTR.matches]: found.length }),
      );
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
}
