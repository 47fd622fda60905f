import { describe, expect, it } from 'vitest';
import { PhotoProcessError, type PhotoOutcome } from '../ports/photo-processor.js';
import { BatchRunner, type BatchProgress, type BatchRunnerOptions } from './batch-runner.js';
import { GatedProcessor, ListedSource, ManualClock, settle } from '../../test/support/controller-fakes.js';

const ok: PhotoOutcome = { faces: 2, matched: 1 };

function runner(over: Partial<BatchRunnerOptions> & Pick<BatchRunnerOptions, 'processor' | 'source'>) {
  const reports: BatchProgress[] = [];
  const clock = new ManualClock();
  const abort = new AbortController();
  const r = new BatchRunner({
    eventId: 'ev-1',
    kind: 'ACTION_SHOT',
    concurrency: 4,
    onProgress: (p) => {
      reports.push(p);
    },
    retryBaseMs: 0,
    clock,
    signal: abort.signal,
    ...over,
  });
  return { r, reports, clock, abort };
}

describe('BatchRunner', () => {
  it('sends every photo of the source once, in listing order, with the batch event and kind', async () => {
    const source = new ListedSource(23, 5);
    const processor = new GatedProcessor(() => Promise.resolve(ok));
    const { r } = runner({ processor, source, userId: 'u-1', kind: 'FACECAM' });
    const result = await r.run();
    expect(result.outcome).toBe('complete');
    expect(processor.requests.map((q) => q.photoId)).toEqual(source.photos.map((p) => p.photoId));
    expect(processor.requests[0]).toEqual({ photoId: 'p000', imageUrl: 's3://bucket/p000.jpg', eventId: 'ev-1', kind: 'FACECAM', userId: 'u-1' });
    expect(result.progress).toMatchObject({ processed: 23, matched: 23, failed: 0, total: 23, cursor: 'p022', lastFailures: [] });
    // Listed page by page, each page after the last one's token.
    expect(source.calls).toEqual([undefined, 'p004', 'p009', 'p014', 'p019']);
  });

  it('records a permanent failure and moves on; keeps the last 10 failures', async () => {
    const source = new ListedSource(30, 10);
    const bad = new Set(['p003', ...Array.from({ length: 12 }, (_, i) => `p${String(10 + i).padStart(3, '0')}`)]);
    const processor = new GatedProcessor((q) =>
      bad.has(q.photoId) ? Promise.reject(new PhotoProcessError('IMAGE_UNSUPPORTED', `${q.photoId} is not an image`)) : Promise.resolve({ faces: 0, matched: 0 }),
    );
    const { r } = runner({ processor, source });
    const result = await r.run();
    expect(result.outcome).toBe('complete');
    expect(result.progress).toMatchObject({ processed: 30, failed: 13, matched: 0, total: 30 });
    expect(result.progress.lastFailures).toHaveLength(10);
    expect(result.progress.lastFailures.at(-1)).toEqual({ photoId: 'p021', code: 'IMAGE_UNSUPPORTED', message: 'p021 is not an image' });
    expect(result.progress.lastFailures[0]!.photoId).toBe('p012');
    // Each failed photo was sent once: permanent failures are not retried.
    expect(processor.counts().get('p003')).toBe(1);
  });

  it('retries transient failures until the photo goes through', async () => {
    const source = new ListedSource(5, 10);
    const transient = ['UNAVAILABLE', 'DEADLINE_EXCEEDED', 'RESOURCE_EXHAUSTED', 'OVERLOADED', 'BACKEND_UNAVAILABLE', 'CANCELLED'] as const;
    const processor = new GatedProcessor((q, attempt) => {
      if (q.photoId === 'p002' && attempt < transient.length) return Promise.reject(new PhotoProcessError(transient[attempt]!, 'try later'));
      return Promise.resolve(ok);
    });
    const { r } = runner({ processor, source });
    const result = await r.run();
    expect(result.outcome).toBe('complete');
    expect(result.progress).toMatchObject({ processed: 5, failed: 0, matched: 5 });
    expect(processor.counts().get('p002')).toBe(transient.length + 1);
  });

  it('says the batch is stalled while the service is down, with backoff, and goes on when it is back', async () => {
    const source = new ListedSource(3, 10);
    let down = true;
    const processor = new GatedProcessor(() => (down ? Promise.reject(new PhotoProcessError('UNAVAILABLE', 'connection refused')) : Promise.resolve(ok)));
    const { r, reports, clock } = runner({ processor, source, concurrency: 1, retryBaseMs: 1000, retryMaxMs: 4000, stallAfterAttempts: 2, progressIntervalMs: 10_000 });
    const running = r.run();
    await settle();
    expect(processor.requests).toHaveLength(1);
    await clock.advance(999);
    expect(processor.requests).toHaveLength(1); // backoff: the first retry waits 1 s
    await clock.advance(1); // retry 1 fails: stalled; next wait 2 s
    await clock.advance(2000); // retry 2
    await clock.advance(4000); // retry 3 (capped at 4 s)
    await clock.advance(4000); // retry 4, and the progress tick at 11 s
    expect(processor.requests).toHaveLength(5);
    expect(reports.at(-1)?.stalled).toEqual({ reason: 'ServiceUnavailable', message: 'photo p000: UNAVAILABLE: connection refused (retrying)' });
    expect(reports.at(-1)?.processed).toBe(0);
    down = false;
    await clock.advance(4000);
    const result = await running;
    expect(result.outcome).toBe('complete');
    expect(result.progress.stalled).toBeUndefined();
    expect(result.progress).toMatchObject({ processed: 3, failed: 0 });
  });

  it('never has more than `concurrency` photos in flight, and follows a change mid-run', async () => {
    const source = new ListedSource(40, 7);
    const processor = new GatedProcessor();
    const { r } = runner({ processor, source, concurrency: 3 });
    const running = r.run();
    await settle();
    expect(processor.inFlight).toBe(3);
    processor.answer();
    await settle();
    expect(processor.inFlight).toBe(3);
    expect(processor.maxInFlight).toBe(3);

    r.setConcurrency(6);
    await settle();
    expect(processor.inFlight).toBe(6);

    r.setConcurrency(2);
    for (let i = 0; i < 6; i++) processor.answer();
    await settle();
    expect(processor.inFlight).toBe(2);
    while (processor.pending.length > 0) {
      processor.answer();
      await settle();
      expect(processor.inFlight).toBeLessThanOrEqual(2);
    }
    const result = await running;
    expect(result.progress).toMatchObject({ processed: 40, total: 40 });
    expect(processor.maxInFlight).toBe(6);
  });

  it('stops on abort: cancels the photos in flight and sends no more', async () => {
    const source = new ListedSource(50, 10);
    const processor = new GatedProcessor();
    const { r, abort } = runner({ processor, source, concurrency: 4 });
    const running = r.run();
    await settle();
    processor.answer('p000');
    processor.answer('p001');
    await settle();
    const sent = processor.requests.length;
    const inFlight = processor.pending.map((c) => c.signal);
    abort.abort();
    const result = await running;
    expect(result.outcome).toBe('cancelled');
    expect(processor.requests).toHaveLength(sent);
    expect(inFlight.every((s) => s.aborted)).toBe(true);
    expect(result.progress).toMatchObject({ processed: 2, cursor: 'p001' });
    expect(result.progress.total).toBeUndefined();
  });

  it('resumes from its cursor: a restart sends again at most the window, and counts each photo once', async () => {
    const source = new ListedSource(60, 8);
    const first = new GatedProcessor();
    const a = runner({ processor: first, source, concurrency: 3, windowFactor: 2 });
    const running = a.r.run();
    await settle();
    // Out of order: p010 is slow while later photos finish.
    for (let round = 0; round < 30; round++) {
      for (const id of first.pending.map((c) => c.request.photoId)) if (id !== 'p010') first.answer(id);
      await settle();
    }
    expect(first.pending.map((c) => c.request.photoId)).toEqual(['p010']); // the window is full: nothing more is sent
    a.abort.abort();
    const stopped = await running;
    expect(stopped.outcome).toBe('cancelled');
    const doneBefore = new Set(first.requests.map((q) => q.photoId));
    expect(stopped.progress).toMatchObject({ processed: 10, cursor: 'p009' });

    const second = new GatedProcessor(() => Promise.resolve({ faces: 1, matched: 0 }));
    const b = runner({ processor: second, source, concurrency: 3, resume: stopped.progress });
    const result = await b.r.run();
    expect(result.outcome).toBe('complete');
    const again = second.requests.filter((q) => doneBefore.has(q.photoId));
    expect(again.length).toBeGreaterThan(0); // the photos in flight at the stop
    expect(again.length).toBeLessThanOrEqual(3 * 2); // the window
    // Nothing below the cursor is sent again, and nothing is missed.
    expect(second.requests.every((q) => q.photoId > stopped.progress.cursor!)).toBe(true);
    expect(new Set([...doneBefore, ...second.requests.map((q) => q.photoId)]).size).toBe(60);
    expect(result.progress).toMatchObject({ processed: 60, total: 60 });
  });

  it('reports progress at most once per interval, not once per photo', async () => {
    const source = new ListedSource(200, 50);
    const processor = new GatedProcessor();
    const { r, reports, clock } = runner({ processor, source, concurrency: 8, progressIntervalMs: 5000 });
    const running = r.run();
    await settle();
    let ticks = 0;
    while (processor.pending.length > 0) {
      for (let i = 0; i < 25 && processor.pending.length > 0; i++) processor.answer();
      await settle();
      await clock.advance(1000);
      ticks += 1;
    }
    const result = await running;
    expect(result.progress.processed).toBe(200);
    expect(reports.length).toBeGreaterThan(0);
    expect(reports.length).toBeLessThanOrEqual(Math.ceil(ticks / 5));
    const processed = reports.map((p) => p.processed);
    expect(processed).toEqual([...processed].sort((x, y) => x - y));
  });

  it('fails the batch when the source itself is refused, after the photos in flight settle', async () => {
    const processor = new GatedProcessor(() => Promise.resolve(ok));
    const source = { list: () => Promise.reject(new PhotoProcessError('SOURCE_NOT_FOUND', 'bucket "nope" does not exist')) };
    const { r } = runner({ processor, source });
    const result = await r.run();
    expect(result).toMatchObject({ outcome: 'failed', reason: 'SourceFailed', message: 'listing the source failed: SOURCE_NOT_FOUND: bucket "nope" does not exist' });
    expect(processor.requests).toHaveLength(0);
  });
});
