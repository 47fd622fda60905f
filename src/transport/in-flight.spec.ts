import { describe, expect, it } from 'vitest';
import { InFlightLimiter } from './in-flight.js';

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
});
