/**
 * Runs one PhotoBatch's photos through the facematch service (a PhotoProcessor), from its source (a
 * PhotoSource listed page by page), at most `concurrency` at a time.
 *
 * Resumable without a per-photo record: photos are dispatched in listing order, and the cursor is
 * the position of the last photo below which every photo is done. At most `concurrency *
 * windowFactor` photos are dispatched past the cursor (the window), so a run stopped at any moment
 * and started again from its last reported cursor processes again at most the window plus the
 * photos done since that report. Counts include only the photos below the cursor, so a resumed run
 * counts each photo once. Memory holds one listing page and the window, whatever the batch's size.
 *
 * Transient failures (the service unreachable, overloaded, out of time) are retried with
 * exponential backoff, for as long as it takes: a photo retried `stallAfterAttempts` times makes
 * the progress say `stalled` (the batch stays Progressing and goes on by itself when the service
 * comes back). Permanent failures (not an image, a forbidden source ...) are counted as failed,
 * the last few kept, and the batch moves on. Progress is reported at most once per
 * `progressIntervalMs`, never once per photo. A concurrency change applies to the next dispatch;
 * aborting `signal` cancels the photos in flight and dispatches nothing more.
 */
import { FacematchError } from '../domain/errors.js';
import { PhotoProcessError, type PhotoKind, type PhotoProcessor, type PhotoRequest, type ProcessFailureCode } from '../ports/photo-processor.js';
import type { PhotoSource, SourcePhoto } from '../ports/photo-source.js';
import { backoffDelay, systemClock, type Clock } from './clock.js';
import { MAX_LAST_FAILURES, type PhotoFailure } from './photo-batch.js';

/** Longest failure message kept in status (the CRD's maxLength). */
const MAX_MESSAGE = 1024;

export interface BatchProgress {
  processed: number;
  matched: number;
  failed: number;
  lastFailures: PhotoFailure[];
  /** Absent until the first photo is done (and on a fresh batch that has done none). */
  cursor?: string;
  /** Known once the listing reached its end. */
  total?: number;
  /** Set while photos wait on a service that does not answer. */
  stalled?: { reason: string; message: string };
}

export type BatchResult =
  | { outcome: 'complete'; progress: BatchProgress }
  | { outcome: 'cancelled'; progress: BatchProgress }
  | { outcome: 'failed'; reason: string; message: string; progress: BatchProgress };

export interface BatchRunnerOptions {
  processor: PhotoProcessor;
  source: PhotoSource;
  eventId: string;
  /** The kind and user of photos whose source does not say (s3, urls). */
  kind: PhotoKind;
  userId?: string;
  concurrency: number;
  /** The window is `concurrency * windowFactor` photos past the cursor; default 2. */
  windowFactor?: number;
  /** Where a previous run stopped (status.cursor and counts). */
  resume?: Omit<BatchProgress, 'total' | 'stalled'>;
  onProgress: (progress: BatchProgress) => void | Promise<void>;
  progressIntervalMs?: number;
  retryBaseMs?: number;
  retryMaxMs?: number;
  stallAfterAttempts?: number;
  clock?: Clock;
  signal: AbortSignal;
}

/** Whether a failure may go away by itself: such photos are retried, never recorded as failed. */
export function isTransient(code: ProcessFailureCode): boolean {
  switch (code) {
    case 'UNAVAILABLE':
    case 'DEADLINE_EXCEEDED':
    case 'RESOURCE_EXHAUSTED':
    case 'OVERLOADED':
    case 'BACKEND_UNAVAILABLE':
    case 'CANCELLED': // not ours (that stops the run): a deadline or a proxy gave up on the call
      return true;
    case 'INVALID_ARGUMENT':
    case 'IMAGE_EMPTY':
    case 'IMAGE_UNSUPPORTED':
    case 'IMAGE_CORRUPT':
    case 'IMAGE_TOO_LARGE':
    case 'SOURCE_NOT_FOUND':
    case 'SOURCE_UNREACHABLE':
    case 'SOURCE_TOO_LARGE':
    case 'SOURCE_FORBIDDEN':
    case 'NO_FACE':
    case 'NOT_FOUND':
    case 'MODEL_NOT_FOUND':
    case 'MODEL_MISMATCH':
    case 'MODEL_CHECKSUM_MISMATCH':
    case 'EMBEDDER_MISMATCH':
    case 'CONFIG_INVALID':
    case 'INTERNAL':
      return false;
  }
}

function failureOf(error: unknown): { code: ProcessFailureCode; message: string } {
  if (error instanceof PhotoProcessError || error instanceof FacematchError) {
    return { code: error.code, message: error.message.slice(0, MAX_MESSAGE) };
  }
  return { code: 'INTERNAL', message: (error instanceof Error ? error.message : String(error)).slice(0, MAX_MESSAGE) };
}

interface Slot {
  position: string;
  result?: { matched: boolean } | { failure: PhotoFailure };
}

class SourceFailure extends Error {
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

export class BatchRunner {
  private concurrency: number;
  private readonly windowFactor: number;
  private readonly clock: Clock;
  private readonly work = new AbortController();
  private readonly window: Slot[] = [];
  private inFlight = 0;
  private processed: number;
  private matched: number;
  private failed: number;
  private lastFailures: PhotoFailure[];
  private cursor: string | undefined;
  /** Photos listed by this run, and the photos done before it (below the resumed cursor). */
  private listed = 0;
  private readonly resumedAt: number;
  private total: number | undefined;
  private page: SourcePhoto[] = [];
  private pageToken: string | undefined;
  private listingDone = false;
  private readonly stalledPhotos = new Set<Slot>();
  private stall: { reason: string; message: string } | undefined;
  private changed = false;
  private wake: (() => void) | undefined;
  private dirty = false;

  constructor(private readonly options: BatchRunnerOptions) {
    this.concurrency = options.concurrency;
    this.windowFactor = options.windowFactor ?? 2;
    this.clock = options.clock ?? systemClock;
    const resume = options.resume;
    this.processed = resume?.processed ?? 0;
    this.resumedAt = this.processed;
    this.matched = resume?.matched ?? 0;
    this.failed = resume?.failed ?? 0;
    this.lastFailures = [...(resume?.lastFailures ?? [])];
    this.cursor = resume?.cursor;
    this.pageToken = resume?.cursor;
    if (options.signal.aborted) this.stopWork();
    else options.signal.addEventListener('abort', this.stopWork, { once: true });
  }

  private readonly stopWork = (): void => {
    this.work.abort();
    this.notify();
  };

  /** Takes effect at the next dispatch: photos in flight above a lowered value finish first. */
  setConcurrency(n: number): void {
    this.concurrency = Math.max(1, Math.trunc(n));
    this.notify();
  }

  progress(): BatchProgress {
    const p: BatchProgress = {
      processed: this.processed,
      matched: this.matched,
      failed: this.failed,
      lastFailures: [...this.lastFailures],
    };
    if (this.cursor !== undefined) p.cursor = this.cursor;
    if (this.total !== undefined) p.total = this.total;
    if (this.stall) p.stalled = { ...this.stall };
    return p;
  }

  async run(): Promise<BatchResult> {
    const reporting = new AbortController();
    const reporter = this.report(reporting.signal);
    let fatal: SourceFailure | undefined;
    try {
      await this.dispatch();
    } catch (error) {
      if (!(error instanceof SourceFailure)) throw error;
      fatal = error;
      this.work.abort();
    } finally {
      while (this.inFlight > 0) await this.changes();
      reporting.abort();
      await reporter;
      this.options.signal.removeEventListener('abort', this.stopWork);
    }
    const progress = this.progress();
    if (fatal) return { outcome: 'failed', reason: fatal.reason, message: fatal.message, progress };
    if (this.options.signal.aborted) return { outcome: 'cancelled', progress };
    return { outcome: 'complete', progress };
  }

  private async dispatch(): Promise<void> {
    for (;;) {
      if (this.work.signal.aborted) return;
      while (this.inFlight < this.concurrency && this.window.length < this.concurrency * this.windowFactor) {
        const photo = await this.next();
        if (!photo || this.work.signal.aborted) break;
        const slot: Slot = { position: photo.position };
        this.window.push(slot);
        this.inFlight += 1;
        void this.processOne(photo, slot).finally(() => {
          this.inFlight -= 1;
          this.commit();
          this.notify();
        });
      }
      if (this.work.signal.aborted) return;
      if (this.listingDone && this.page.length === 0 && this.window.length === 0) return;
      await this.changes();
    }
  }

  /** The next photo of the listing, fetching a page when needed; undefined at its end or on abort. */
  private async next(): Promise<SourcePhoto | undefined> {
    let attempt = 0;
    while (this.page.length === 0 && !this.listingDone) {
      if (this.work.signal.aborted) return undefined;
      try {
        const page = await this.options.source.list(this.pageToken, this.work.signal);
        this.page = [...page.photos];
        this.listed += page.photos.length;
        this.pageToken = page.next;
        if (page.next === undefined) {
          this.listingDone = true;
          this.total = this.resumedAt + this.listed;
        }
        if (attempt > 0 && this.stalledPhotos.size === 0) {
          this.stall = undefined;
          this.dirty = true;
        }
      } catch (error) {
        if (this.work.signal.aborted) return undefined;
        const { code, message } = failureOf(error);
        if (!isTransient(code)) throw new SourceFailure('SourceFailed', `listing the source failed: ${code}: ${message}`);
        attempt += 1;
        if (attempt >= (this.options.stallAfterAttempts ?? 3)) {
          this.stall = { reason: 'SourceUnavailable', message: `listing the source: ${code}: ${message}` };
          this.dirty = true;
        }
        await this.clock.sleep(this.retryDelay(attempt - 1), this.work.signal);
      }
    }
    return this.page.shift();
  }

  private retryDelay(attempt: number): number {
    return backoffDelay(attempt, this.options.retryBaseMs ?? 1000, this.options.retryMaxMs ?? 60_000);
  }

  private async processOne(photo: SourcePhoto, slot: Slot): Promise<void> {
    const { eventId, kind, userId } = this.options;
    const request: PhotoRequest = { photoId: photo.photoId, imageUrl: photo.imageUrl, eventId, kind: photo.kind ?? kind };
    const user = photo.userId ?? userId;
    if (user !== undefined) request.userId = user;
    const signal = this.work.signal;
    for (let attempt = 0; ; ) {
      if (signal.aborted) return;
      try {
        const outcome = await this.options.processor.process(request, signal);
        slot.result = { matched: outcome.matched > 0 };
        break;
      } catch (error) {
        if (signal.aborted) return;
        const { code, message } = failureOf(error);
        if (!isTransient(code)) {
          slot.result = { failure: { photoId: photo.photoId, code, message } };
          break;
        }
        attempt += 1;
        if (attempt >= (this.options.stallAfterAttempts ?? 3)) {
          this.stalledPhotos.add(slot);
          this.stall = { reason: 'ServiceUnavailable', message: `photo ${photo.photoId}: ${code}: ${message} (retrying)` };
          this.dirty = true;
        }
        await this.clock.sleep(this.retryDelay(attempt - 1), signal);
      }
    }
    if (this.stalledPhotos.delete(slot) && this.stalledPhotos.size === 0) {
      this.stall = undefined;
      this.dirty = true;
    }
  }

  /** Moves the cursor past every done photo at the head of the window, counting them. */
  private commit(): void {
    for (;;) {
      const head = this.window[0];
      if (!head?.result) break;
      this.window.shift();
      this.processed += 1;
      if ('failure' in head.result) {
        this.failed += 1;
        this.lastFailures.push(head.result.failure);
        if (this.lastFailures.length > MAX_LAST_FAILURES) this.lastFailures.shift();
      } else if (head.result.matched) {
        this.matched += 1;
      }
      this.cursor = head.position;
      this.dirty = true;
    }
  }

  /** Reports progress at most once per interval while the run lasts. */
  private async report(stop: AbortSignal): Promise<void> {
    const interval = this.options.progressIntervalMs ?? 5000;
    for (;;) {
      await this.clock.sleep(interval, stop);
      if (stop.aborted) return;
      if (!this.dirty) continue;
      this.dirty = false;
      try {
        await this.options.onProgress(this.progress());
      } catch {
        this.dirty = true; // written again at the next tick
      }
    }
  }

  private notify(): void {
    this.changed = true;
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  /** Resolves at the next change (a photo done, the concurrency set, an abort). */
  private changes(): Promise<void> {
    if (this.changed) {
      this.changed = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      this.wake = () => {
        this.changed = false;
        resolve();
      };
    });
  }
}
