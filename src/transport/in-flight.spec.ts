import { describe, expect, it } from 'vitest';
import { BackendUnavailableError } from '../domain/errors.js';
import { CallTracker, InFlightLimiter } from './in-flight.js';

const never = (): Promise<never> => new Promise<never>(() => undefined);

describe('InFlightLimiter', () => {
  it('refuses beyond its bound, as OVERLOADED', async () => {
    const limiter = new InFlightLimiter(1);
    const held = limiter.run(never);
    await expect(limiter.run(() => Promise.resolve(1))).rejects.toMatchObject({ code: 'OVERLOADED' });
    expect(limiter.inFlight).toBe(1);
    void held;
  });

  it('gives a slot back as soon as its caller aborts, while the work has not noticed yet', async () => {
    const limiter = new InFlightLimiter(1);
    const controller = new AbortController();
    let seen: AbortSignal | undefined;
    const held = limiter.run(() => {
      seen = controller.signal;
      return never();
    }, controller.signal);
    expect(limiter.inFlight).toBe(1);
    controller.abort();
    await expect(held).rejects.toMatchObject({ code: 'CANCELLED' });
    expect(limiter.inFlight).toBe(0);
    expect(seen?.aborted).toBe(true);
    await expect(limiter.run(() => Promise.resolve('next'))).resolves.toBe('next');
  });

  it('counts a slot once when the work fails after its caller left', async () => {
    const limiter = new InFlightLimiter(2);
    const controller = new AbortController();
    let fail: (e: Error) => void = () => undefined;
    const held = limiter.run(() => new Promise<never>((_, reject) => (fail = reject)), controller.signal);
    controller.abort();
    await expect(held).rejects.toMatchObject({ code: 'CANCELLED' });
    fail(new Error('too late'));
    await new Promise((r) => setTimeout(r, 0));
    expect(limiter.inFlight).toBe(0);
  });

  it('refuses a caller that is already gone without taking a slot', async () => {
    const limiter = new InFlightLimiter(1);
    await expect(limiter.run(() => Promise.resolve(1), AbortSignal.abort())).rejects.toMatchObject({ code: 'CANCELLED' });
    expect(limiter.inFlight).toBe(0);
  });

  it('rejects with the abort reason when it is a typed error (a replica shutting down), and frees the slot', async () => {
    const limiter = new InFlightLimiter(1);
    const controller = new AbortController();
    const held = limiter.run(never, controller.signal);
    controller.abort(new BackendUnavailableError('shutting down'));
    await expect(held).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE', message: 'shutting down' });
    expect(limiter.inFlight).toBe(0);
  });
});

describe('CallTracker', () => {
  const closing = () => new BackendUnavailableError('this replica is shutting down');

  it('admits calls until it refuses, then refuses every new one at once', () => {
    const calls = new CallTracker();
    const a = calls.admit();
    calls.refuse(closing);
    expect(() => calls.admit()).toThrow(expect.objectContaining({ code: 'BACKEND_UNAVAILABLE' }) as Error);
    expect(calls.active).toBe(1);
    calls.done(a);
    expect(calls.active).toBe(0);
  });

  it('is idle once the calls admitted before have ended, each counted once', async () => {
    const calls = new CallTracker();
    await calls.idle();
    const a = calls.admit();
    const b = calls.admit();
    let idle = false;
    const waiting = calls.idle().then(() => (idle = true));
    calls.done(a);
    calls.done(a);
    await new Promise((r) => setTimeout(r, 0));
    expect(idle).toBe(false);
    calls.done(b);
    await waiting;
    expect(idle).toBe(true);
  });

  it('aborts the calls left with the reason given and says how many', () => {
    const calls = new CallTracker();
    const a = calls.admit();
    const b = calls.admit();
    calls.done(b);
    expect(calls.abortAll(closing)).toBe(1);
    expect(a.signal.reason).toMatchObject({ code: 'BACKEND_UNAVAILABLE' });
    expect(b.signal.aborted).toBe(false);
  });
});
