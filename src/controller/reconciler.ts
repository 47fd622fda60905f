/**
 * The PhotoBatch reconciler: from a batch's current state (spec, generation, status), starts,
 * steers or stops its BatchRunner and writes its status. It keeps no state that the cluster does
 * not also hold, but the runners it owns: a controller started again finds each batch's cursor in
 * its status and resumes there.
 *
 * - A batch with no runner, not suspended and not final, gets one, resumed from status.cursor.
 * - A running batch follows spec.concurrency at once; spec.suspend (or deletion, or a new object
 *   under the same name) aborts its runner: the photos in flight are cancelled, and a suspended
 *   batch keeps the cursor the runner reached.
 * - Status goes through the BatchStore (the status subresource), at most once per progress interval
 *   while the batch runs, and once when it stops. A write that fails is tried again: the final one
 *   by requeueing the key.
 * - reconcile() throws when it could not do its work (the caller requeues with backoff); the status
 *   it may still write then keeps the observed generation as it was.
 */
import { FacematchError } from '../domain/errors.js';
import type { PhotoProcessor } from '../ports/photo-processor.js';
import type { PhotoSource } from '../ports/photo-source.js';
import { BatchRunner, type BatchProgress, type BatchResult } from './batch-runner.js';
import { systemClock, type Clock } from './clock.js';
import type { WorkQueue } from './work-queue.js';
import { batchStatus, concurrencyOf, type BatchObservation, type PhotoBatchSpec, type PhotoBatchStatus } from './photo-batch.js';

/** A PhotoBatch as the reconciler reads it. */
export interface PhotoBatch {
  /** `namespace/name`. */
  key: string;
  uid: string;
  generation: number;
  spec: PhotoBatchSpec;
  status: PhotoBatchStatus;
}

/** The API server as the reconciler needs it (the client-node adapter reads an informer's cache). */
export interface BatchStore {
  get(key: string): PhotoBatch | undefined;
  /** Writes the status subresource of the object `uid` (refused if the name now holds another). */
  writeStatus(key: string, uid: string, status: PhotoBatchStatus): Promise<void>;
}

export interface ReconcilerOptions {
  store: BatchStore;
  /** The source of a batch; throws InvalidArgumentError (or another FacematchError) when it cannot be. */
  sourceFor(batch: PhotoBatch): PhotoSource;
  /**
   * The service a batch's photos go to (spec.serviceAddress, or the controller's default), for one
   * run of it: the controller wraps it with the batch's span and metrics, and `end` is called once
   * the run stops.
   */
  processorFor(batch: PhotoBatch): { processor: PhotoProcessor; end?(result: BatchResult): void };
  /** Called when a key must be reconciled again (a final status write failed). */
  requeue(key: string): void;
  progressIntervalMs?: number;
  retryBaseMs?: number;
  windowFactor?: number;
  clock?: Clock;
}

interface Running {
  uid: string;
  runner: BatchRunner;
  abort: AbortController;
  finished: Promise<void>;
  /** Why it was stopped: a suspended batch writes its final cursor, a deleted one writes nothing. */
  stopping?: 'suspend' | 'gone';
}

export class PhotoBatchReconciler {
  private readonly running = new Map<string, Running>();
  /** The status last written per key: the informer's copy may not have caught up with it. */
  private readonly written = new Map<string, { uid: string; status: PhotoBatchStatus }>();
  /** Final observations whose write failed, written by the next reconcile. */
  private readonly unwritten = new Map<string, { uid: string; observation: BatchObservation }>();
  /** The last status write per key, so the next one starts after it. */
  private readonly writing = new Map<string, Promise<void>>();
  private readonly clock: Clock;

  constructor(private readonly options: ReconcilerOptions) {
    this.clock = options.clock ?? systemClock;
  }

  /** Keys with a runner. */
  get active(): string[] {
    return [...this.running.keys()];
  }

  async reconcile(key: string): Promise<void> {
    const batch = this.options.store.get(key);
    const run = this.running.get(key);
    if (run && (!batch || batch.uid !== run.uid)) await this.stop(key, 'gone');
    if (!batch) {
      this.written.delete(key);
      this.unwritten.delete(key);
      return;
    }

    const pending = this.unwritten.get(key);
    if (pending && pending.uid === batch.uid) {
      await this.write(batch, pending.observation);
      this.unwritten.delete(key);
    }

    const status = this.statusOf(batch);
    if (isFinal(status)) {
      if (status.observedGeneration !== batch.generation) await this.write(batch, {});
      return;
    }
    const current = this.running.get(key);
    if (batch.spec.suspend) {
      if (current) await this.stop(key, 'suspend');
      else await this.write(batch, {});
      return;
    }
    if (current) {
      current.runner.setConcurrency(concurrencyOf(batch.spec));
      if (status.observedGeneration !== batch.generation) await this.write(batch, {});
      return;
    }
    const refused = this.start(batch);
    await this.write(batch, refused ? { fatal: refused } : {});
  }

  /**
   * Records in status that reconciling `key` failed (best effort: the write may fail for the same
   * reason), keeping the observed generation as it was; the caller requeues the key with backoff.
   */
  async failed(key: string, error: unknown): Promise<void> {
    const batch = this.options.store.get(key);
    if (!batch || isFinal(this.statusOf(batch))) return;
    const message = (error instanceof Error ? error.message : String(error)).slice(0, 1024);
    try {
      await this.write(batch, { reconcileError: { reason: 'ReconcileError', message } });
    } catch {
      // The next attempt writes it.
    }
  }

  /** Stops every runner (the controller is shutting down or lost its lease); writes their cursors. */
  async shutdown(): Promise<void> {
    await Promise.all([...this.running.keys()].map((key) => this.stop(key, 'suspend')));
  }

  /** Starts the batch's runner; returns why not when its source is refused (the batch fails). */
  private start(batch: PhotoBatch): { reason: string; message: string } | undefined {
    let source: PhotoSource;
    try {
      source = this.options.sourceFor(batch);
    } catch (error) {
      if (!(error instanceof FacematchError) || error.code !== 'INVALID_ARGUMENT') throw error;
      return { reason: 'InvalidSource', message: error.message };
    }
    const status = this.statusOf(batch);
    const abort = new AbortController();
    const resume: ConstructorParameters<typeof BatchRunner>[0]['resume'] = {
      processed: status.processed ?? 0,
      matched: status.matched ?? 0,
      failed: status.failed ?? 0,
      lastFailures: status.lastFailures ?? [],
    };
    if (status.cursor !== undefined) resume.cursor = status.cursor;
    const run = this.options.processorFor(batch);
    const processor = run.processor;
    const runner = new BatchRunner({
      processor,
      source,
      eventId: batch.spec.eventId,
      kind: batch.spec.kind ?? 'ACTION_SHOT',
      ...(batch.spec.userId !== undefined ? { userId: batch.spec.userId } : {}),
      concurrency: concurrencyOf(batch.spec),
      resume,
      onProgress: (progress) => this.progress(batch.key, batch.uid, progress),
      ...(this.options.progressIntervalMs !== undefined ? { progressIntervalMs: this.options.progressIntervalMs } : {}),
      ...(this.options.retryBaseMs !== undefined ? { retryBaseMs: this.options.retryBaseMs } : {}),
      ...(this.options.windowFactor !== undefined ? { windowFactor: this.options.windowFactor } : {}),
      clock: this.clock,
      signal: abort.signal,
    });
    const entry: Running = { uid: batch.uid, runner, abort, finished: Promise.resolve() };
    entry.finished = runner
      .run()
      .catch((error: unknown): BatchResult => ({ outcome: 'failed', reason: 'InternalError', message: String(error), progress: runner.progress() }))
      .then((result) => {
        run.end?.(result);
        return this.finish(batch.key, entry, result);
      });
    this.running.set(batch.key, entry);
    return undefined;
  }

  private async stop(key: string, why: 'suspend' | 'gone'): Promise<void> {
    const run = this.running.get(key);
    if (!run) return;
    run.stopping = why;
    run.abort.abort();
    await run.finished;
  }

  /**
   * Writes the run's final status, then forgets the runner. The runner stays in `running` until the
   * final write has landed (or was kept for the next reconcile): a reconcile that came in between
   * (the watch event of the last progress write) would otherwise see no runner and a status that is
   * not final yet, and start the batch again from the last cursor written.
   */
  private async finish(key: string, entry: Running, result: BatchResult): Promise<void> {
    try {
      if (entry.stopping === 'gone') return;
      const observation: BatchObservation = { progress: result.progress };
      if (result.outcome === 'complete') observation.done = true;
      if (result.outcome === 'failed') observation.fatal = { reason: result.reason, message: result.message };
      const batch = this.options.store.get(key);
      if (!batch || batch.uid !== entry.uid) return;
      try {
        await this.write(batch, observation);
      } catch {
        this.unwritten.set(key, { uid: entry.uid, observation });
        this.options.requeue(key);
      }
    } finally {
      if (this.running.get(key) === entry) this.running.delete(key);
    }
  }

  private async progress(key: string, uid: string, progress: BatchProgress): Promise<void> {
    const batch = this.options.store.get(key);
    if (!batch || batch.uid !== uid) return;
    const observation: BatchObservation = { progress };
    if (progress.stalled) observation.stalled = progress.stalled;
    await this.write(batch, observation);
  }

  private statusOf(batch: PhotoBatch): PhotoBatchStatus {
    const mine = this.written.get(batch.key);
    return mine && mine.uid === batch.uid ? mine.status : batch.status;
  }

  /**
   * Writes the status `observation` gives, after the key's previous write settled: each status is
   * computed from the one written before it, so a progress tick and a reconcile never both start
   * from the same old status and undo each other.
   */
  private write(batch: PhotoBatch, observation: BatchObservation): Promise<void> {
    const previous = this.writing.get(batch.key) ?? Promise.resolve();
    const next = previous
      .catch(() => undefined)
      .then(async () => {
        const { status } = batchStatus(batch.spec, this.statusOf(batch), batch.generation, observation, new Date(this.clock.now()));
        await this.options.store.writeStatus(batch.key, batch.uid, status);
        this.written.set(batch.key, { uid: batch.uid, status });
      });
    const settled = next.catch(() => undefined);
    this.writing.set(batch.key, settled);
    void settled.then(() => {
      if (this.writing.get(batch.key) === settled) this.writing.delete(batch.key);
    });
    return next;
  }
}

function isFinal(status: PhotoBatchStatus): boolean {
  return (status.conditions ?? []).some((c) => (c.type === 'Complete' || c.type === 'Failed') && c.status === 'True');
}

/**
 * One worker of the controller (sample-controller's runWorker): takes a key, reconciles it, forgets
 * its backoff on success or requeues it with backoff on failure, until the queue shuts down.
 */
export async function runWorker(queue: WorkQueue, reconciler: Pick<PhotoBatchReconciler, 'reconcile' | 'failed'>): Promise<void> {
  for (;;) {
    const item = await queue.get();
    if (item.shutdown) return;
    try {
      await reconciler.reconcile(item.key);
      queue.forget(item.key);
    } catch (error) {
      await reconciler.failed(item.key, error);
      queue.addRateLimited(item.key);
    } finally {
      queue.done(item.key);
    }
  }
}
