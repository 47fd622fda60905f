import { describe, expect, it } from 'vitest';
import { WorkQueue } from './work-queue.js';
import { ManualClock, settle } from '../../test/support/controller-fakes.js';

describe('WorkQueue', () => {
  it('hands out a key added twice once', async () => {
    const q = new WorkQueue();
    q.add('ns/a');
    q.add('ns/b');
    q.add('ns/a');
    expect(q.length).toBe(2);
    expect(await q.get()).toEqual({ key: 'ns/a', shutdown: false });
    expect(await q.get()).toEqual({ key: 'ns/b', shutdown: false });
    expect(q.length).toBe(0);
  });

  it('never gives a key to two workers: one re-added while processed comes back after done()', async () => {
    const q = new WorkQueue();
    q.add('ns/a');
    const first = await q.get();
    q.add('ns/a');
    q.add('ns/a');
    expect(q.length).toBe(0); // not handed out while processed
    let second: unknown;
    void q.get().then((item) => (second = item));
    await settle();
    expect(second).toBeUndefined();
    q.done(first.key!);
    await settle();
    expect(second).toEqual({ key: 'ns/a', shutdown: false });
  });

  it('a waiting worker gets a key as soon as it is added', async () => {
    const q = new WorkQueue();
    const waiting = q.get();
    q.add('ns/a');
    expect(await waiting).toEqual({ key: 'ns/a', shutdown: false });
  });

  it('adds a failing key after exponential backoff per key, and forget() resets it', async () => {
    const clock = new ManualClock();
    const q = new WorkQueue({ baseDelayMs: 100, maxDelayMs: 350, clock });
    const delays: number[] = [];
    for (let i = 0; i < 4; i++) {
      q.addRateLimited('ns/a');
      const start = clock.now();
      while (q.length === 0) await clock.advance(10);
      delays.push(clock.now() - start);
      const { key } = await q.get();
      q.done(key!);
    }
    expect(delays).toEqual([100, 200, 350, 350]);
    expect(q.numRequeues('ns/a')).toBe(4);
    expect(q.numRequeues('ns/b')).toBe(0);
    q.forget('ns/a');
    q.addRateLimited('ns/a');
    await clock.advance(99);
    expect(q.length).toBe(0);
    await clock.advance(1);
    expect(q.length).toBe(1);
  });

  it('shutDown wakes waiting workers, drains what is queued, and ignores later adds', async () => {
    const clock = new ManualClock();
    const q = new WorkQueue({ clock });
    const waiting = q.get();
    q.shutDown();
    expect(await waiting).toEqual({ shutdown: true });
    q.add('ns/a');
    q.addAfter('ns/b', 10);
    expect(clock.pending).toBe(0);
    expect(await q.get()).toEqual({ shutdown: true });

    const r = new WorkQueue({ clock });
    r.add('ns/c');
    r.addAfter('ns/d', 1000);
    r.shutDown();
    expect(await r.get()).toEqual({ key: 'ns/c', shutdown: false });
    await clock.advance(1000);
    expect(await r.get()).toEqual({ shutdown: true });
  });
});
