import { describe, expect, it } from 'vitest';
import { batchStatus, concurrencyOf, type Condition, type PhotoBatchSpec, type PhotoBatchStatus } from './photo-batch.js';

const spec: PhotoBatchSpec = { eventId: 'ev-1', source: { s3: { bucket: 'shoots', prefix: 'ev-1/' } } };
const t0 = new Date('2026-12-01T10:00:00Z');
const t1 = new Date('2026-12-01T10:05:00Z');
const t2 = new Date('2026-12-01T10:09:00Z');

const trueOnes = (s: PhotoBatchStatus): Condition[] => (s.conditions ?? []).filter((c) => c.status === 'True');
const counts = { processed: 0, matched: 0, failed: 0, lastFailures: [] };

describe('batchStatus', () => {
  it('a new batch is Progressing (Listing), started, with all four conditions and exactly one True', () => {
    const { state, status } = batchStatus(spec, {}, 1, {}, t0);
    expect(state).toBe('Progressing');
    expect(status).toMatchObject({ observedGeneration: 1, processed: 0, matched: 0, failed: 0, progress: '0/?', startedAt: t0.toISOString() });
    expect(status.conditions!.map((c) => c.type)).toEqual(['Progressing', 'Complete', 'Failed', 'Suspended']);
    expect(trueOnes(status)).toEqual([
      { type: 'Progressing', status: 'True', reason: 'Listing', message: '0/? photos processed', observedGeneration: 1, lastTransitionTime: t0.toISOString() },
    ]);
    expect(status.completedAt).toBeUndefined();
  });

  it('progress counts N/M; lastTransitionTime moves only when a condition changes status', () => {
    const first = batchStatus(spec, {}, 1, {}, t0).status;
    const { state, status } = batchStatus(spec, first, 1, { progress: { ...counts, processed: 40, matched: 7, cursor: 'k40', total: 100 } }, t1);
    expect(state).toBe('Progressing');
    expect(status).toMatchObject({ progress: '40/100', processed: 40, matched: 7, total: 100, cursor: 'k40', startedAt: t0.toISOString() });
    expect(trueOnes(status)[0]).toMatchObject({ reason: 'Processing', lastTransitionTime: t0.toISOString() });
  });

  it('a stalled batch stays Progressing with a reason that says why', () => {
    const first = batchStatus(spec, {}, 1, {}, t0).status;
    const { state, status } = batchStatus(spec, first, 1, { stalled: { reason: 'ServiceUnavailable', message: 'photo a: UNAVAILABLE' } }, t1);
    expect(state).toBe('Progressing');
    expect(trueOnes(status)[0]).toMatchObject({ type: 'Progressing', reason: 'ServiceUnavailable', message: 'photo a: UNAVAILABLE' });
  });

  it('Complete when done: completedAt set, the reason tells whether photos failed; final after', () => {
    const first = batchStatus(spec, {}, 1, {}, t0).status;
    const failures = [{ photoId: 'x', code: 'IMAGE_UNSUPPORTED', message: 'not an image' }];
    const done = batchStatus(spec, first, 1, { done: true, progress: { processed: 10, matched: 4, failed: 1, lastFailures: failures, cursor: 'k9', total: 10 } }, t1);
    expect(done.state).toBe('Complete');
    expect(done.status).toMatchObject({ progress: '10/10', completedAt: t1.toISOString(), lastFailures: failures });
    expect(trueOnes(done.status)).toEqual([
      expect.objectContaining({ type: 'Complete', reason: 'CompletedWithFailures', message: '10 photos processed: 4 with a match, 1 failed', lastTransitionTime: t1.toISOString() }),
    ]);
    expect(done.status.conditions!.find((c) => c.type === 'Progressing')).toMatchObject({ status: 'False', lastTransitionTime: t1.toISOString() });

    // An edit after completion is observed and changes nothing else.
    const edited = batchStatus({ ...spec, concurrency: 9, suspend: true }, done.status, 2, {}, t2);
    expect(edited.state).toBe('Complete');
    expect(edited.status).toMatchObject({ observedGeneration: 2, completedAt: t1.toISOString(), progress: '10/10' });
    expect(trueOnes(edited.status)).toEqual([expect.objectContaining({ type: 'Complete', observedGeneration: 2, lastTransitionTime: t1.toISOString() })]);

    const clean = batchStatus(spec, first, 1, { done: true, progress: { ...counts, processed: 3, total: 3 } }, t1);
    expect(trueOnes(clean.status)[0]!.reason).toBe('Completed');
  });

  it('Suspended when spec.suspend, keeping counts and cursor; not started if it never ran', () => {
    const suspended = batchStatus({ ...spec, suspend: true }, {}, 1, {}, t0);
    expect(suspended.state).toBe('Suspended');
    expect(suspended.status.startedAt).toBeUndefined();
    const running = batchStatus(spec, {}, 1, { progress: { ...counts, processed: 5, cursor: 'k5' } }, t0).status;
    const paused = batchStatus({ ...spec, suspend: true }, running, 2, {}, t1);
    expect(paused.state).toBe('Suspended');
    expect(paused.status).toMatchObject({ processed: 5, cursor: 'k5', observedGeneration: 2, startedAt: t0.toISOString() });
    expect(trueOnes(paused.status)).toEqual([expect.objectContaining({ type: 'Suspended', reason: 'Suspended', observedGeneration: 2 })]);
  });

  it('Failed on a fatal observation, with its reason; completedAt set', () => {
    const { state, status } = batchStatus(spec, {}, 3, { fatal: { reason: 'SourceFailed', message: 'bucket "shoots" does not exist' } }, t0);
    expect(state).toBe('Failed');
    expect(status.completedAt).toBe(t0.toISOString());
    expect(trueOnes(status)).toEqual([expect.objectContaining({ type: 'Failed', reason: 'SourceFailed', observedGeneration: 3 })]);
  });

  it('a failed reconcile never records the generation as observed', () => {
    const first = batchStatus(spec, {}, 1, {}, t0).status;
    const { status } = batchStatus({ ...spec, concurrency: 8 }, first, 2, { reconcileError: { reason: 'ReconcileError', message: 'listing: timeout' } }, t1);
    expect(status.observedGeneration).toBe(1);
    expect(status.conditions!.every((c) => c.observedGeneration === 1)).toBe(true);
    expect(trueOnes(status)[0]).toMatchObject({ type: 'Progressing', reason: 'ReconcileError', message: 'listing: timeout' });

    const never = batchStatus(spec, {}, 4, { reconcileError: { reason: 'ReconcileError', message: 'x' } }, t0).status;
    expect(never.observedGeneration).toBeUndefined();
  });

  it('concurrency defaults to 4 and stays within 1..64', () => {
    expect(concurrencyOf(spec)).toBe(4);
    expect(concurrencyOf({ ...spec, concurrency: 0 })).toBe(1);
    expect(concurrencyOf({ ...spec, concurrency: 500 })).toBe(64);
  });
});
