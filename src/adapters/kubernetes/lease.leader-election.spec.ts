import { ApiException, type V1Lease } from '@kubernetes/client-node';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError } from '../../domain/errors.js';
import { ManualClock, settle } from '../../../test/support/controller-fakes.js';
import { LeaseLeaderElector, type LeaseApi, type LeaseLeaderElectorOptions, type RunOutcome } from './lease.leader-election.js';

/** kube-apiserver's MicroTime: RFC 3339 with exactly six fractional digits (it refuses `.123Z` with 400). */
const MICRO_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/;

type Fault = 'none' | 'refuse' | 'hang';

/**
 * The Leases of an API server, as far as leader election sees them: objects stored as JSON (so times
 * come back as strings, as from the real server), a resourceVersion per write, 404 / 409 as the
 * server answers them, and MicroTime checked. Each candidate gets its own client, whose calls can be
 * made to fail (connection refused) or hang.
 */
class FakeLeaseServer {
  readonly leases = new Map<string, V1Lease>();
  conflicts = 0;
  private rv = 100;

  client(): LeaseApi & { fault: Fault; gate?: Promise<void> } {
    const store = (key: string, body: V1Lease): V1Lease => this.store(key, body);
    const leases = this.leases;
    const conflict = (): void => void (this.conflicts += 1);
    const faulty = <T>(fault: Fault, answer: () => T, gate?: Promise<void>): Promise<T> => {
      if (fault === 'refuse') return Promise.reject(new Error('connect ECONNREFUSED 127.0.0.1:56443'));
      if (fault === 'hang') return new Promise<T>(() => undefined);
      // A slow request: the server acts on it (even when the client gave up) once the gate opens.
      if (gate) return gate.then(answer);
      try {
        return Promise.resolve(answer());
      } catch (error) {
        return Promise.reject(error instanceof Error ? error : new Error(String(error)));
      }
    };
    return {
      fault: 'none',
      readNamespacedLease({ name, namespace }) {
        return faulty(this.fault, () => {
          const lease = leases.get(`${namespace}/${name}`);
          if (!lease) throw status(404);
          return structuredClone(lease);
        }, this.gate);
      },
      createNamespacedLease({ namespace, body }) {
        return faulty(this.fault, () => {
          const key = `${namespace}/${body.metadata?.name}`;
          if (leases.has(key)) throw status(409);
          return store(key, body);
        }, this.gate);
      },
      replaceNamespacedLease({ name, namespace, body }) {
        return faulty(this.fault, () => {
          const key = `${namespace}/${name}`;
          const current = leases.get(key);
          if (!current) throw status(404);
          if (body.metadata?.resourceVersion !== current.metadata?.resourceVersion) {
            conflict();
            throw status(409);
          }
          return store(key, body);
        }, this.gate);
      },
    };
  }

  /** What another writer (or an operator with kubectl) does: a new record under a new resourceVersion. */
  overwrite(key: string, spec: V1Lease['spec']): void {
    this.store(key, { ...this.get(key), spec });
  }

  get(key = 'ns/ctl'): V1Lease {
    const lease = this.leases.get(key);
    if (!lease) throw new Error(`no lease ${key}`);
    return lease;
  }

  private store(key: string, body: V1Lease): V1Lease {
    const json = JSON.parse(JSON.stringify(body)) as V1Lease;
    for (const field of ['acquireTime', 'renewTime'] as const) {
      const value = json.spec?.[field] as unknown;
      if (value !== undefined && !(typeof value === 'string' && MICRO_TIME.test(value))) throw status(400, `spec.${field}: not a MicroTime: ${JSON.stringify(value)}`);
    }
    json.metadata = { ...json.metadata, resourceVersion: String(++this.rv) };
    this.leases.set(key, json);
    return structuredClone(json);
  }
}

function status(code: number, message = `HTTP ${code}`): ApiException<string> {
  return new ApiException(code, message, message, {});
}

let clock: ManualClock;
let server: FakeLeaseServer;
let candidates: Candidate[];

interface Candidate {
  identity: string;
  elector: LeaseLeaderElector;
  client: ReturnType<FakeLeaseServer['client']>;
  events: string[];
  stop: AbortController;
  outcome: RunOutcome | undefined;
  done: Promise<RunOutcome>;
  /** Holds a leadership signal that has not aborted: it would be doing the leader's work. */
  readonly acting: boolean;
}

/** Starts a candidate and lets its first try run (at the current time). */
async function candidate(identity: string, options: Partial<LeaseLeaderElectorOptions> & { work?: (signal: AbortSignal) => Promise<void> } = {}): Promise<Candidate> {
  const client = server.client();
  const elector = new LeaseLeaderElector({ api: client, namespace: 'ns', name: 'ctl', identity, clock, random: () => 0, log: process.env.LE_DEBUG ? debugLog(identity) : undefined, ...options });
  const events: string[] = [];
  let leadership: AbortSignal | undefined;
  const stop = new AbortController();
  const c: Candidate = {
    identity,
    elector,
    client,
    events,
    stop,
    outcome: undefined,
    done: elector.run(stop.signal, {
      onStartedLeading: (signal) => {
        leadership = signal;
        events.push('started');
        return options.work?.(signal);
      },
      onStoppedLeading: () => events.push('stopped'),
      onNewLeader: (id) => events.push(`leader ${id}`),
    }),
    get acting() {
      return leadership !== undefined && !leadership.aborted;
    },
  };
  void c.done.then((outcome) => (c.outcome = outcome));
  candidates.push(c);
  await settle();
  return c;
}

/** Moves time on in steps, checking at each one that no two candidates lead at once. */
async function run(ms: number, step = 100): Promise<void> {
  for (let t = 0; t < ms; t += step) {
    await clock.advance(step);
    expect(candidates.filter((c) => c.elector.isLeader).length, `two leaders at t=${clock.now()}`).toBeLessThanOrEqual(1);
    expect(candidates.filter((c) => c.acting).length, `two replicas working at t=${clock.now()}`).toBeLessThanOrEqual(1);
  }
}

/** Moves time on until `cond` holds (checking the invariant); returns the time it took. */
async function until(cond: () => boolean, limitMs: number, step = 100): Promise<number> {
  const start = clock.now();
  while (!cond()) {
    if (clock.now() - start > limitMs) throw new Error(`not within ${limitMs} ms`);
    await run(step, step);
  }
  return clock.now() - start;
}

beforeEach(() => {
  clock = new ManualClock();
  server = new FakeLeaseServer();
  candidates = [];
});

afterEach(async () => {
  for (const c of candidates) c.stop.abort();
  // A leader whose work never returns stops at its deadline: let the time pass.
  for (let i = 0; i < 100 && candidates.some((c) => c.outcome === undefined); i++) await clock.advance(1000);
  expect(candidates.filter((c) => c.outcome === undefined).map((c) => c.identity)).toEqual([]);
});

describe('LeaseLeaderElector', () => {
  it('creates the Lease when there is none and leads, with the record client-go writes (MicroTime times)', async () => {
    const a = await candidate('a');
    await clock.advance(0);
    expect(a.elector.isLeader).toBe(true);
    expect(a.elector.leader).toBe('a');
    expect(a.events).toEqual(['leader a', 'started']);
    const spec = server.get().spec!;
    expect(spec).toMatchObject({ holderIdentity: 'a', leaseDurationSeconds: 15, leaseTransitions: 0 });
    expect(spec.renewTime).toMatch(MICRO_TIME);
    expect(spec.acquireTime).toEqual(spec.renewTime);
    // Renewed every retryPeriod (2 s): renewTime moves, acquireTime and transitions stay.
    const first = String(spec.renewTime);
    await run(2000);
    expect(server.get().spec).toMatchObject({ holderIdentity: 'a', acquireTime: spec.acquireTime, leaseTransitions: 0 });
    expect(String(server.get().spec!.renewTime)).not.toBe(first);
  });

  it('with two candidates exactly one leads; the other waits as long as the leader renews', async () => {
    const a = await candidate('a');
    const b = await candidate('b');
    await run(60_000);
    expect([a.elector.isLeader, b.elector.isLeader]).toEqual([true, false]);
    expect(b.elector.leader).toBe('a');
    expect(b.events).toEqual(['leader a']);
    expect(server.get().spec).toMatchObject({ holderIdentity: 'a', leaseTransitions: 0 });
  });

  it('after a leader crashes (no release) the other takes over once the lease expires by its own clock', async () => {
    const a = await candidate('a', { releaseOnCancel: false });
    const b = await candidate('b');
    await run(5000); // a renewed at 2 s and 4 s
    a.stop.abort(); // a crash, as far as the Lease can tell: no more renewals, no release
    await run(100);
    expect(await a.done).toBe('stopped');
    expect(server.get().spec?.holderIdentity).toBe('a');
    // b saw the last renewal (4 s) at its try at 4 or 6 s: it may take over from 19 or 21 s on.
    await run(19_000 - clock.now() - 100);
    expect(b.elector.isLeader).toBe(false);
    await until(() => b.elector.isLeader, 4000);
    expect(clock.now()).toBeGreaterThanOrEqual(19_000);
    expect(clock.now()).toBeLessThanOrEqual(4000 + 15_000 + 2 * 2000);
    expect(server.get().spec).toMatchObject({ holderIdentity: 'b', leaseTransitions: 1, leaseDurationSeconds: 15 });
    expect(b.events).toEqual(['leader a', 'leader b', 'started']);
  });

  it('on shutdown the leader releases the Lease and the other takes over at its next try', async () => {
    const a = await candidate('a');
    const b = await candidate('b');
    await run(5000);
    a.stop.abort();
    await clock.advance(0);
    expect(a.elector.isLeader).toBe(false);
    expect(await a.done).toBe('stopped');
    expect(a.events).toEqual(['leader a', 'started', 'stopped']);
    expect(server.get().spec).toMatchObject({ holderIdentity: '', leaseDurationSeconds: 1 });
    const took = await until(() => b.elector.isLeader, 10_000);
    expect(took).toBeLessThanOrEqual(2000); // one retry period (jitter 0 here; up to 2.2 periods with it)
    expect(server.get().spec).toMatchObject({ holderIdentity: 'b', leaseTransitions: 1, leaseDurationSeconds: 15 });
  });

  it('a shutdown during a renewal still releases: the renewal finishes first, the release writes over it', async () => {
    const a = await candidate('a');
    let open!: () => void;
    a.client.gate = new Promise<void>((resolve) => (open = resolve));
    await run(2000); // the renewal at 2 s waits at the server
    a.stop.abort();
    await clock.advance(0);
    expect(a.elector.isLeader).toBe(false);
    expect(a.acting).toBe(false);
    a.client.gate = undefined;
    open();
    await clock.advance(0);
    expect(await a.done).toBe('stopped');
    expect(server.get().spec).toMatchObject({ holderIdentity: '', leaseDurationSeconds: 1 });
  });

  it('releases even when the Lease changed under it (409), after reading it again, as long as it is still ours', async () => {
    const a = await candidate('a');
    await run(3000);
    server.overwrite('ns/ctl', { ...server.get().spec }); // e.g. an operator's label: a new resourceVersion
    a.stop.abort();
    expect(await a.done).toBe('stopped');
    expect(server.conflicts).toBe(1);
    expect(server.get().spec).toMatchObject({ holderIdentity: '', leaseDurationSeconds: 1 });
  });

  it('releases only after the leader work has returned', async () => {
    let finish!: () => void;
    const a = await candidate('a', { work: (signal) => new Promise<void>((resolve) => signal.addEventListener('abort', () => (finish = resolve))) });
    await run(3000);
    a.stop.abort();
    await run(1000);
    expect(a.acting).toBe(false); // the work was told to stop...
    expect(server.get().spec?.holderIdentity).toBe('a'); // ...and the Lease stays ours until it has
    finish();
    await clock.advance(0);
    expect(await a.done).toBe('stopped');
    expect(server.get().spec?.holderIdentity).toBe('');
  });

  it('does not release when the work outlasts the renew deadline: the Lease is left to expire', async () => {
    const a = await candidate('a', { work: () => new Promise<void>(() => undefined) });
    await run(2000); // renewed at 2 s: authority until 12 s
    a.stop.abort();
    await run(12_000 - clock.now());
    expect(await a.done).toBe('stopped');
    expect(server.get().spec?.holderIdentity).toBe('a');
  });

  it.each<[string, Fault]>([
    ['fail (connection refused)', 'refuse'],
    ['hang', 'hang'],
  ])('a leader whose renewals %s stops leading at renewDeadline after its last successful one', async (_what, fault) => {
    const a = await candidate('a');
    const b = await candidate('b');
    await run(4000); // the last successful renewal is sent at 4 s
    a.client.fault = fault;
    await run(14_000 - clock.now() - 100);
    expect(a.elector.isLeader).toBe(true);
    expect(a.acting).toBe(true);
    await run(100);
    expect(a.elector.isLeader).toBe(false);
    expect(a.acting).toBe(false);
    expect(a.outcome).toBe('lost');
    expect(a.events).toEqual(['leader a', 'started', 'stopped']);
    // b takes over only once the lease has expired by its clock (the last renewal was at 4 s).
    expect(b.elector.isLeader).toBe(false);
    await until(() => b.elector.isLeader, 10_000);
    expect(clock.now()).toBeGreaterThanOrEqual(4000 + 15_000);
    expect(server.get().spec).toMatchObject({ holderIdentity: 'b', leaseTransitions: 1 });
  });

  it('a leader that reads another holder in the Lease stops at once', async () => {
    const a = await candidate('a');
    await run(1000);
    server.overwrite('ns/ctl', { ...server.get().spec, holderIdentity: 'intruder' });
    await run(1000); // a's renewal at 2 s conflicts, it reads the Lease and sees the intruder
    expect(a.elector.isLeader).toBe(false);
    expect(a.outcome).toBe('lost');
    expect(a.events).toEqual(['leader a', 'started', 'leader intruder', 'stopped']);
  });

  it('judges expiry by its own clock, never by the times in the Lease (clock skew does not matter)', async () => {
    // A holder whose clock is 30 years behind: its renewTime looks long expired.
    server.leases.set('ns/ctl', {
      metadata: { name: 'ctl', namespace: 'ns', resourceVersion: '1' },
      spec: { holderIdentity: 'old', leaseDurationSeconds: 15, renewTime: '1996-01-01T00:00:00.000000Z' as unknown as Date, leaseTransitions: 4 },
    });
    const b = await candidate('b');
    await run(14_900);
    expect(b.elector.isLeader).toBe(false); // the record is new to b: it waits a whole lease duration
    await until(() => b.elector.isLeader, 2200);
    expect(server.get().spec).toMatchObject({ holderIdentity: 'b', leaseTransitions: 5 });
  });

  it('a holder that keeps renewing is never taken over, whatever its renewTime says (far in the future here)', async () => {
    const key = 'ns/ctl';
    server.leases.set(key, { metadata: { name: 'ctl', namespace: 'ns', resourceVersion: '1' }, spec: { holderIdentity: 'other', leaseDurationSeconds: 15 } });
    const b = await candidate('b');
    for (let i = 0; i < 10; i++) {
      await run(10_000);
      server.overwrite(key, { ...server.get().spec, renewTime: `2${String(100 + i)}-01-01T00:00:00.000000Z` as unknown as Date });
    }
    expect(b.elector.isLeader).toBe(false);
    // Once the renewals stop, b takes over a lease duration after it saw the last one (at its next try).
    const lastRenewal = clock.now();
    await until(() => b.elector.isLeader, 15_000 + 2 * 2000);
    expect(clock.now() - lastRenewal).toBeGreaterThanOrEqual(15_000);
  });

  it('when two candidates race for an expired Lease, one wins and the other gets 409 Conflict', async () => {
    const a = await candidate('a', { releaseOnCancel: false });
    await clock.advance(0);
    const b = await candidate('b');
    const c = await candidate('c');
    await run(1000);
    a.stop.abort();
    await until(() => b.elector.isLeader || c.elector.isLeader, 20_000);
    await run(10_000);
    expect(candidates.filter((x) => x.elector.isLeader)).toHaveLength(1);
    expect(server.conflicts).toBeGreaterThanOrEqual(1);
    expect(server.get().spec?.leaseTransitions).toBe(1);
  });

  it('a restarted replica with the same identity picks its own Lease up at once (acquireTime and transitions kept)', async () => {
    const first = await candidate('a', { releaseOnCancel: false });
    await run(3000);
    first.stop.abort();
    await first.done;
    const before = server.get().spec!;
    const again = await candidate('a');
    await clock.advance(0);
    expect(again.elector.isLeader).toBe(true);
    expect(server.get().spec).toMatchObject({ holderIdentity: 'a', acquireTime: before.acquireTime, leaseTransitions: 0 });
  });

  it('stops trying when the run signal aborts before it leads, and then calls no callbacks', async () => {
    const a = await candidate('a');
    await clock.advance(0);
    const b = await candidate('b');
    await run(3000);
    b.stop.abort();
    expect(await b.done).toBe('stopped');
    expect(b.events).toEqual(['leader a']);
    expect(a.elector.isLeader).toBe(true);
  });

  it.each([
    [{ leaseDurationMs: 10_000, renewDeadlineMs: 10_000 }, 'leaseDuration must be greater than renewDeadline'],
    [{ renewDeadlineMs: 2400, retryPeriodMs: 2000 }, 'renewDeadline must be greater than retryPeriod'],
    [{ leaseDurationMs: 15_500 }, 'whole number of seconds'],
    [{ identity: '' }, 'identity is empty'],
  ])('refuses options client-go refuses: %o', (options, message) => {
    const make = (): LeaseLeaderElector => new LeaseLeaderElector({ api: server.client(), namespace: 'ns', name: 'ctl', identity: 'a', ...options });
    expect(make).toThrow(ConfigError);
    expect(make).toThrow(message);
  });
});

/** LE_DEBUG=1 prints each elector's log lines with the fake time (for reading a failing run). */
function debugLog(identity: string): NonNullable<LeaseLeaderElectorOptions['log']> {
  const line = (level: string) => (fields: unknown, message?: string) => console.log(clock.now(), identity, level, message, JSON.stringify(fields));
  return { debug: line('debug'), info: line('info'), warn: line('warn'), error: line('error') };
}
