/**
 * What every use case shares: its dependencies (ports only), the request span and one span per
 * stage (names in telemetry/attributes.ts), cancellation checked between stages, and the wire-free
 * shapes of its answers.
 */
import { context, SpanStatusCode, type Attributes, type Span, type Tracer } from '@opentelemetry/api';
import { CancelledError, toFacematchError } from '../domain/errors.js';
import type { DetectedFace, Stage, StageSpan, StageTimes } from '../domain/face.js';
import type { FaceModel, Annotator } from '../ports/face-model.js';
import type { ImageSource } from '../ports/image-source.js';
import type { KeyedLocks } from '../ports/locks.js';
import type { MatchStore } from '../ports/match-store.js';
import type { ObjectStore } from '../ports/object-store.js';
import type { VectorStore } from '../ports/vector-store.js';
import { ATTR, stageSpan } from '../telemetry/attributes.js';
import { spanTime } from '../telemetry/spans.js';

export interface ServiceDeps {
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

/** A face found to be someone: a user (searching users) or an action-shot face. */
export interface FaceMatch {
  userId?: string;
  photoId: string;
  faceId: string;
  similarity: number;
}

/** A face of a processed photo, with its match (at most one: its best user). */
export interface ProcessedFace extends DetectedFace {
  faceId: string;
  matches: FaceMatch[];
}

export interface StageContext {
  times: StageTimes;
  /** Aborted when the caller goes away or its deadline passes: work stops at the next stage. */
  signal?: AbortSignal;
  /** On every stage span: the photo id and event id, where the use case has them. */
  attributes?: Attributes;
}

export const annotatedKey = (eventId: string, photoId: string): string => `annotated/${eventId}/${photoId}.jpg`;

/** Spans and timings of the use cases. */
export class Tracing {
  constructor(private readonly tracer: Tracer) {}

  /** The request's span, active while `fn` runs; an error is recorded on it. */
  async inSpan<T>(name: string, attributes: Record<string, string | number>, fn: (span: Span) => Promise<T>): Promise<T> {
    return this.tracer.startActiveSpan(name, { attributes, startTime: spanTime() }, async (span) => {
      try {
        return await fn(span);
      } catch (error) {
        throw failed(span, error);
      } finally {
        span.end(spanTime());
      }
    });
  }

  /**
   * Runs one stage in its span and adds its time; refuses to start it once the request is cancelled.
   * The span gets ctx.attributes, and `counts(result)` (face and match counts) when it succeeds.
   */
  async stage<T>(stage: Stage, ctx: StageContext, fn: () => Promise<T>, counts?: (result: T) => Attributes): Promise<T> {
    if (ctx.signal?.aborted) throw new CancelledError(`the request was cancelled before its ${stage} stage`);
    const { times } = ctx;
    const t0 = performance.now();
    const span = this.tracer.startSpan(stageSpan(stage), { startTime: spanTime(), ...(ctx.attributes ? { attributes: ctx.attributes } : {}) }, context.active());
    try {
      const result = await fn();
      if (counts) span.setAttributes(counts(result));
      return result;
    } catch (error) {
      throw failed(span, error);
    } finally {
      span.end(spanTime());
      times[stage] = (times[stage] ?? 0) + performance.now() - t0;
    }
  }

  /**
   * Stages that already ran inside the model, recorded with their real start and end (and timed),
   * with `attributes` (ids, and the faces found: detect, align and embed saw them all).
   */
  modelStages(spans: readonly StageSpan[], times?: StageTimes, attributes?: Attributes): void {
    for (const s of spans) {
      const all = s.attributes ? { ...attributes, ...s.attributes } : attributes;
      this.tracer.startSpan(stageSpan(s.stage), { startTime: s.start, ...(all ? { attributes: all } : {}) }, context.active()).end(s.end);
      if (times) times[s.stage] = (times[s.stage] ?? 0) + s.end - s.start;
    }
  }
}

/** Records `error` on `span` (an exception event, status ERROR, its stable code) and returns it to rethrow. */
function failed(span: Span, error: unknown): unknown {
  span.setAttribute(ATTR.errorCode, toFacematchError(error).code);
  span.recordException(error as Error);
  span.setStatus({ code: SpanStatusCode.ERROR, message: (error as Error).message });
  return error;
}

/**
 * Awaits concurrent steps and, unlike Promise.all, returns or throws only once every one has
 * settled: no step is still writing when the caller moves on (or reports the failure).
 */
export async function settled<T extends readonly unknown[]>(...steps: { [K in keyof T]: Promise<T[K]> }): Promise<T> {
  const results = await Promise.allSettled(steps);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return results.map((r) => (r as PromiseFulfilledResult<unknown>).value) as unknown as T;
}
