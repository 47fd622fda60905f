import { describe, expect, it } from 'vitest';
import type { PhotoBatchSpec, PhotoBatchStatus } from './photo-batch.js';
import { PhotoBatchReconciler, runWorker, type BatchStore, type PhotoBatch } from './reconciler.js';
import { UrlListSource } from './url-source.js';
import { WorkQueue } from './work-queue.js';
import { GatedProcessor, ListedSource, ManualClock, settle } from '../../test/support/controller-fakes.js';

/** The API server's copy of the batches: status writes land on the object, as the subresource does. */
class FakeStore implements BatchStore {
  readonly batches = new Map<string, PhotoBatch>();
  readonly writes: { key: string; status: PhotoBatchStatus }[] = [];
  failWrites = false;

  get(key: string): PhotoBatch | undefined {
    return this.batches.get(key);
  }

  /** While set, each write waits until the test calls release(). */
  gated = false;
  private readonly held: (() => void)[] = [];

  release(): void {
    this.held.shift()?.();
  }

  get waiting(): number {
    return this.held.length;
  }

  async writeStatus(key: string, uid: string, status: PhotoBatchStatus): Promise<void> {
    if (this.gated) await new Promise<void>((resolve) => this.held.push(resolve));
    return this.land(key, uid, status);
  }

  private land(key: string, uid: string, status: PhotoBatchStatus): Promise<void> {
    const batch = this.batches.get(key);
    if (!batch || batch.uid !== uid) return Promise.reject(new Error(`no PhotoBatch ${key} with uid ${uid}`));
    if (this.failWrites) return Promise.reject(new Error('the API server is unavailable'));
    batch.status = structuredClone(status);
    this.writes.push({ key, status: structuredClone(status) });
    return Promise.resolve();
  }

  apply(key: string, spec: PhotoBatchSpec, uid = 'uid-1'): PhotoBatch {
    const before = this.batches.get(key);
    const batch: PhotoBatch =
      before && before.uid === uid
        ? { ...before, spec, generation: before.generation + 1 }
        : { key, uid, generation: 1, spec, status: {} };
    this.batches.set(key, batch);
    return batch;
  }
}

const KEY = 'photos/marathon';
const spec: PhotoBatchSpec = { eventId: 'marathon', source: { s3: { bucket: 'shoots', prefix: 'm/' } }, concurrency: 2 };

function setup(count = 20) {
  const store = new FakeStore();
  const clock = new ManualClock();
  const processor = new GatedProcessor();
  const source = new ListedSource(count, 5);
  const requeued: string[] = [];
  const reconciler = new PhotoBatchReconciler({
    store,
    sourceFor: (b) => (b.spec.source.urls ? new UrlListSource(b.spec.source.urls) : source),
    processorFor: () => ({ processor }),
    requeue: (key) => requeued.push(key),
    progressIntervalMs: 1000,
    retryBaseMs: 0,
    windowFactor: 1,
    clock,
  });
  return { store, clock, processor, source, reconciler, requeued };
}

const trueCondition = (s: PhotoBatchStatus) => s.conditions?.find((c) => c.status === 'True');

async function drain(processor: GatedProcessor): Promise<void> {
  while (processor.pending.length > 0) {
    processor.answer(undefined, { faces: 1, matched: 1 });
    await settle();
  }
}

describe('PhotoBatchReconciler', () => {
  it('runs a new batch to Complete: Progressing first, then the totals', async () => {
    const { store, processor, reconciler } = setup(12);
    store.apply(KEY, spec);
    await reconciler.reconcile(KEY);
    expect(trueCondition(store.writes[0]!.status)).toMatchObject({ type: 'Progressing', reason: 'Listing', observedGeneration: 1 });
    await settle();
    expect(processor.inFlight).toBe(2);
    await drain(processor);
    const status = store.get(KEY)!.status;
    expect(trueCondition(status)).toMatchObject({ type: 'Complete', reason: 'Completed' });
    expect(status).toMatchObject({ observedGeneration: 1, processed: 12, matched: 12, failed: 0, total: 12, progress: '12/12' });
    expect(reconciler.active).toEqual([]);
    // Reconciled again, a complete batch starts nothing.
    await reconciler.reconcile(KEY);
    await settle();
    expect(processor.requests).toHaveLength(12);
  });

  it('a reconcile while the final status is being written starts nothing again', async () => {
    const { store, processor, reconciler } = setup(6);
    store.apply(KEY, spec);
    await reconciler.reconcile(KEY);
    await settle();
    store.gated = true; // the final write hangs until released
    await drain(processor);
    expect(store.waiting).toBe(1);
    // The watch event of an earlier write arrives now: the status on the object is not final yet.
    const reconciled = reconciler.reconcile(KEY);
    await settle();
    expect(processor.requests).toHaveLength(6);
    store.gated = false;
    store.release();
    await reconciled;
    await settle();
    expect(trueCondition(store.get(KEY)!.status)).toMatchObject({ type: 'Complete' });
    expect(reconciler.active).toEqual([]);
    await reconciler.reconcile(KEY);
    await settle();
    expect(processor.requests).toHaveLength(6); // each photo sent once
  });

  it('writes status at the progress interval, not once per photo', async () => {
    const { store, clock, processor, reconciler } = setup(20);
    store.apply(KEY, spec);
    await reconciler.reconcile(KEY);
    await settle();
    for (let i = 0; i < 8; i++) {
      processor.answer();
      await settle();
    }
    expect(store.writes).toHaveLength(1); // no tick yet: photos done, nothing written
    await clock.advance(1000);
    expect(store.writes).toHaveLength(2);
    expect(store.writes[1]!.status).toMatchObject({ processed: 8, progress: '8/?' });
  });

  it('follows a concurrency edit on the running batch and observes the generation', async () => {
    const { store, processor, reconciler } = setup(30);
    store.apply(KEY, spec);
    await reconciler.reconcile(KEY);
    await settle();
    expect(processor.inFlight).toBe(2);
    store.apply(KEY, { ...spec, concurrency: 5 });
    await reconciler.reconcile(KEY);
    await settle();
    expect(processor.inFlight).toBe(5);
    expect(store.get(KEY)!.status.observedGeneration).toBe(2);
    await drain(processor);
    expect(store.get(KEY)!.status).toMatchObject({ processed: 30, total: 30 });
  });

  it('writes one status at a time per batch: a progress tick and a spec edit do not undo each other', async () => {
    const { store, clock, processor, reconciler } = setup(30);
    store.apply(KEY, spec);
    await reconciler.reconcile(KEY);
    await settle();
    for (let i = 0; i < 4; i++) {
      processor.answer();
      await settle();
    }
    store.gated = true;
    await clock.advance(1000); // the progress write starts and waits
    store.apply(KEY, { ...spec, concurrency: 3 });
    const reconciling = reconciler.reconcile(KEY);
    await settle();
    expect(store.waiting).toBe(1); // the second write waits for the first
    store.release();
    await settle();
    store.release();
    await reconciling;
    expect(store.get(KEY)!.status).toMatchObject({ processed: 4, observedGeneration: 2 });
  });

  it('suspends a running batch at its cursor and resumes it there', async () => {
    const { store, processor, reconciler } = setup(20);
    store.apply(KEY, spec);
    await reconciler.reconcile(KEY);
    await settle();
    for (let i = 0; i < 6; i++) {
      processor.answer();
      await settle();
    }
    const inFlight = processor.pending.map((c) => c.signal);
    store.apply(KEY, { ...spec, suspend: true });
    await reconciler.reconcile(KEY);
    expect(inFlight.every((s) => s.aborted)).toBe(true);
    const suspended = store.get(KEY)!.status;
    expect(trueCondition(suspended)).toMatchObject({ type: 'Suspended', observedGeneration: 2 });
    expect(suspended).toMatchObject({ processed: 6, cursor: 'p005' });
    const sent = processor.requests.length;
    await settle();
    expect(processor.requests).toHaveLength(sent);

    store.apply(KEY, { ...spec, suspend: false });
    await reconciler.reconcile(KEY);
    await settle();
    await drain(processor);
    const counts = processor.counts();
    expect([...counts.values()].filter((n) => n > 1).length).toBeLessThanOrEqual(2); // the photos in flight at the suspend
    expect(counts.size).toBe(20);
    expect(store.get(KEY)!.status).toMatchObject({ processed: 20, total: 20, observedGeneration: 3 });
  });

  it('a controller started again resumes each batch from the cursor in its status', async () => {
    const first = setup(20);
    first.store.apply(KEY, spec);
    await first.reconciler.reconcile(KEY);
    await settle();
    for (let i = 0; i < 9; i++) {
      first.processor.answer();
      await settle();
    }
    await first.clock.advance(1000); // a progress write
    const saved = first.store.get(KEY)!;
    expect(saved.status).toMatchObject({ processed: 9, cursor: 'p008' });
    // The first controller dies (SIGKILL: nothing more is written); a second one starts.
    const second = setup(20);
    second.store.batches.set(KEY, structuredClone(saved));
    await second.reconciler.reconcile(KEY);
    await settle();
    await drain(second.processor);
    expect(second.processor.requests[0]!.photoId).toBe('p009');
    expect(second.processor.requests).toHaveLength(11);
    expect(second.store.get(KEY)!.status).toMatchObject({ processed: 20, total: 20 });
  });

  it('a deleted batch stops within the photos in flight and writes nothing more', async () => {
    const { store, processor, reconciler } = setup(20);
    store.apply(KEY, spec);
    await reconciler.reconcile(KEY);
    await settle();
    const writes = store.writes.length;
    const inFlight = processor.pending.map((c) => c.signal);
    store.batches.delete(KEY);
    await reconciler.reconcile(KEY);
    expect(inFlight.every((s) => s.aborted)).toBe(true);
    expect(reconciler.active).toEqual([]);
    await settle();
    expect(processor.requests).toHaveLength(2);
    expect(store.writes).toHaveLength(writes);
  });

  it('fails a batch whose source is refused, naming why, without calling the service', async () => {
    const { store, processor, reconciler } = setup();
    store.apply(KEY, { eventId: 'm', source: { urls: ['https://h/a.jpg?sig=1', 'https://h/a.jpg?sig=2'] } });
    await reconciler.reconcile(KEY);
    const status = store.get(KEY)!.status;
    expect(trueCondition(status)).toMatchObject({ type: 'Failed', reason: 'InvalidSource' });
    expect(trueCondition(status)!.message).toContain('urls[0] and urls[1] are the same photo');
    expect(processor.requests).toHaveLength(0);
  });

  it('a worker requeues a failed reconcile with backoff, and the generation stays unobserved', async () => {
    const { store, reconciler, clock } = setup();
    store.apply(KEY, spec);
    store.get(KEY)!.status = { observedGeneration: 1 };
    store.apply(KEY, { ...spec, concurrency: 3 });
    const queue = new WorkQueue({ baseDelayMs: 100, clock });
    const failing = { reconcile: () => Promise.reject(new Error('listing timed out')), failed: reconciler.failed.bind(reconciler) };
    const worker = runWorker(queue, failing);
    queue.add(KEY);
    await settle();
    expect(queue.numRequeues(KEY)).toBe(1);
    const status = store.get(KEY)!.status;
    expect(status.observedGeneration).toBe(1);
    expect(trueCondition(status)).toMatchObject({ type: 'Progressing', reason: 'ReconcileError', message: 'listing timed out' });
    await clock.advance(100);
    expect(queue.numRequeues(KEY)).toBe(2);
    queue.shutDown();
    await worker;
  });
});
