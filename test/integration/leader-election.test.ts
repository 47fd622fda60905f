/**
 * Leader election over a real Lease (src/adapters/kubernetes/lease.leader-election.ts) on a real
 * kube-apiserver: two electors, each with a client of its own (as two controller replicas), with short
 * timings (lease 3 s, renew deadline 2 s, retry 0.5 s). Exactly one leads and the Lease names it; a
 * leader that crashes (stops renewing, no release) is replaced once the lease has expired; a leader
 * that shuts down cleanly releases and is replaced within a retry period or two; a leader whose API
 * server becomes unreachable (connection refused, or a server that accepts and never answers) stops
 * leading within the renew deadline, before the other may take over. Every poll (50 ms) checks that
 * no two electors lead, or hold a live leadership signal, at once.
 *
 * Needs `scripts/test-env up kube` (npm run test:integration sets FACEMATCH_TEST_KUBECONFIG when it
 * answers; a KUBECONFIG of the user's own is never used); skipped otherwise. Works in the default
 * namespace under Lease names of its own (a run id) and deletes them afterwards: test-env runs no
 * namespace controller, so a namespace of its own, once deleted, would stay Terminating for good.
 */
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { CoordinationV1Api, KubeConfig, type V1Lease } from '@kubernetes/client-node';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { LeaseLeaderElector, type LeaseApi, type RunOutcome } from '../../src/adapters/kubernetes/lease.leader-election.js';

const KUBECONFIG = process.env.FACEMATCH_TEST_KUBECONFIG;
const REAL = Boolean(KUBECONFIG);
if (!REAL) console.warn('leader-election.test.ts skipped: needs FACEMATCH_TEST_KUBECONFIG (scripts/test-env up kube)');

const RUN = `le${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
const NAMESPACE = 'default';
const TIMING = { leaseDurationMs: 3000, renewDeadlineMs: 2000, retryPeriodMs: 500 };
const MICRO_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/;

/** A client of its own, as another replica would have; `server` points it elsewhere. */
function coordinationApi(server?: string): CoordinationV1Api {
  const kc = new KubeConfig();
  kc.loadFromFile(KUBECONFIG as string);
  if (server) kc.clusters = kc.clusters.map((cluster) => ({ ...cluster, server }));
  return kc.makeApiClient(CoordinationV1Api);
}

/** The API an elector uses, which the test can point at another server mid-way. */
class SwitchableApi implements LeaseApi {
  constructor(public target: LeaseApi) {}
  readNamespacedLease: LeaseApi['readNamespacedLease'] = (param, options) => this.target.readNamespacedLease(param, options);
  createNamespacedLease: LeaseApi['createNamespacedLease'] = (param, options) => this.target.createNamespacedLease(param, options);
  replaceNamespacedLease: LeaseApi['replaceNamespacedLease'] = (param, options) => this.target.replaceNamespacedLease(param, options);
}

interface Replica {
  identity: string;
  api: SwitchableApi;
  elector: LeaseLeaderElector;
  stop: AbortController;
  done: Promise<RunOutcome>;
  outcome?: RunOutcome;
  /** When onStoppedLeading was called (performance.now()). */
  stoppedAt?: number;
  /** Holds a leadership signal that has not aborted: it would be doing the leader's work. */
  readonly acting: boolean;
}

const admin = REAL ? coordinationApi() : undefined;
const leaseNames: string[] = [];
let replicas: Replica[] = [];
let leaseName = '';

function replica(identity: string, releaseOnCancel = true): Replica {
  const api = new SwitchableApi(coordinationApi());
  const elector = new LeaseLeaderElector({ api, namespace: NAMESPACE, name: leaseName, identity, releaseOnCancel, ...TIMING });
  const stop = new AbortController();
  let leadership: AbortSignal | undefined;
  const r: Replica = {
    identity,
    api,
    elector,
    stop,
    done: elector.run(stop.signal, {
      onStartedLeading: (signal) => {
        leadership = signal;
      },
      onStoppedLeading: () => {
        r.stoppedAt = performance.now();
      },
    }),
    get acting() {
      return leadership !== undefined && !leadership.aborted;
    },
  };
  void r.done.then((outcome) => (r.outcome = outcome));
  replicas.push(r);
  return r;
}

/** A fresh Lease name and two replicas on it. */
function pair(releaseOnCancel = true): [Replica, Replica] {
  leaseName = `${RUN}-${leaseNames.length}`;
  leaseNames.push(leaseName);
  return [replica(`${leaseName}-a`, releaseOnCancel), replica(`${leaseName}-b`, releaseOnCancel)];
}

/** Polls every 50 ms until `cond` holds, checking at every poll that no two replicas lead at once. */
async function until(cond: () => boolean, limitMs: number): Promise<number> {
  const start = performance.now();
  for (;;) {
    expect(replicas.filter((r) => r.elector.isLeader).length, 'two leaders at once').toBeLessThanOrEqual(1);
    expect(replicas.filter((r) => r.acting).length, 'two replicas working at once').toBeLessThanOrEqual(1);
    if (cond()) return performance.now() - start;
    if (performance.now() - start > limitMs) throw new Error(`not within ${limitMs} ms`);
    await sleep(50);
  }
}

/** Polls for `ms`, checking the invariant (and that `cond` holds) at every poll. */
async function hold(ms: number, cond: () => boolean = () => true): Promise<void> {
  const start = performance.now();
  while (performance.now() - start < ms) {
    await until(() => true, 0);
    expect(cond()).toBe(true);
    await sleep(50);
  }
}

async function leaderOf(pairOf: [Replica, Replica]): Promise<[Replica, Replica]> {
  await until(() => pairOf.some((r) => r.elector.isLeader), 10_000);
  return pairOf[0].elector.isLeader ? pairOf : [pairOf[1], pairOf[0]];
}

function readLease(): Promise<V1Lease> {
  return admin!.readNamespacedLease({ name: leaseName, namespace: NAMESPACE });
}

describe.skipIf(!REAL)('leader election over a Lease on kube-apiserver', () => {
  afterEach(async () => {
    for (const r of replicas) {
      r.api.target = coordinationApi();
      r.stop.abort();
    }
    await Promise.all(replicas.map((r) => r.done));
    replicas = [];
  });

  afterAll(async () => {
    for (const name of leaseNames) await admin!.deleteNamespacedLease({ name, namespace: NAMESPACE }).catch(() => undefined);
  });

  it('exactly one of two replicas leads, and the Lease names it and is renewed', async () => {
    const [leader, follower] = await leaderOf(pair());
    const lease = await readLease();
    expect(lease.spec).toMatchObject({ holderIdentity: leader.identity, leaseDurationSeconds: 3, leaseTransitions: 0 });
    expect(String(lease.spec?.renewTime)).toMatch(MICRO_TIME);
    // Longer than a lease duration: the leader keeps it, the follower keeps waiting.
    await hold(4000, () => leader.elector.isLeader && !follower.elector.isLeader && leader.acting);
    const later = await readLease();
    expect(later.spec).toMatchObject({ holderIdentity: leader.identity, acquireTime: lease.spec?.acquireTime, leaseTransitions: 0 });
    expect(later.spec?.renewTime).not.toEqual(lease.spec?.renewTime);
    expect(follower.elector.leader).toBe(leader.identity);
  });

  it('a leader that crashes (no renewal, no release) is replaced once the lease has expired', async () => {
    const [leader, follower] = await leaderOf(pair(false));
    await hold(1000);
    const before = (await readLease()).spec?.leaseTransitions ?? 0;
    const crashedAt = performance.now();
    leader.stop.abort();
    expect(await leader.done).toBe('stopped');
    expect((await readLease()).spec?.holderIdentity).toBe(leader.identity); // not released
    const ms = await until(() => follower.elector.isLeader, 10_000);
    console.log(`crash: the follower led ${Math.round(performance.now() - crashedAt)} ms after the leader stopped (lease 3000 ms, retry 500 ms)`);
    // The last renewal was at most one retry period before the crash; the follower waits a whole lease from when it saw it.
    expect(ms).toBeGreaterThanOrEqual(TIMING.leaseDurationMs - 2 * TIMING.retryPeriodMs);
    expect(ms).toBeLessThanOrEqual(TIMING.leaseDurationMs + 2.2 * TIMING.retryPeriodMs + 1000);
    expect((await readLease()).spec).toMatchObject({ holderIdentity: follower.identity, leaseTransitions: before + 1, leaseDurationSeconds: 3 });
  });

  it('a leader that shuts down cleanly releases the Lease, and the other takes over within a retry period or two', async () => {
    const [leader, follower] = await leaderOf(pair());
    await hold(1000);
    const stoppedAt = performance.now();
    leader.stop.abort();
    expect(await leader.done).toBe('stopped');
    const ms = await until(() => follower.elector.isLeader, 10_000);
    console.log(`clean shutdown: the follower led ${Math.round(performance.now() - stoppedAt)} ms after the leader was told to stop (release included)`);
    expect(ms).toBeLessThanOrEqual(2.2 * TIMING.retryPeriodMs + 400); // instead of a lease duration (3000 ms)
    expect((await readLease()).spec).toMatchObject({ holderIdentity: follower.identity, leaseTransitions: 1, leaseDurationSeconds: 3 });
  });

  it.each([
    ['refuses connections (a closed port)', 'refused'],
    ['accepts connections and never answers', 'silent'],
  ] as const)('a leader whose API server %s stops leading within the renew deadline, before the other takes over', async (_what, kind) => {
    const sockets = new Set<net.Socket>();
    const silent = net.createServer((socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as net.AddressInfo).port;
    if (kind === 'refused') await new Promise((resolve) => silent.close(resolve));
    try {
      const [leader, follower] = await leaderOf(pair());
      await hold(1000);
      const cutAt = performance.now();
      leader.api.target = coordinationApi(`https://127.0.0.1:${port}`);
      await until(() => !leader.elector.isLeader, 5000);
      expect(leader.acting).toBe(false);
      expect(await leader.done).toBe('lost');
      const stoppedAfter = leader.stoppedAt! - cutAt;
      // Its last successful renewal was sent before the cut (at most a retry period and a round trip
      // before): it stops renewDeadline after that (the margin is timer lateness on a busy machine),
      // after retrying, not at the first failure.
      expect(stoppedAfter).toBeLessThanOrEqual(TIMING.renewDeadlineMs + 250);
      expect(stoppedAfter).toBeGreaterThanOrEqual(TIMING.renewDeadlineMs - 2 * TIMING.retryPeriodMs);
      expect(follower.elector.isLeader).toBe(false);
      const tookAfter = (await until(() => follower.elector.isLeader, 10_000)) + stoppedAfter;
      console.log(`${kind}: the leader stopped ${Math.round(stoppedAfter)} ms after the cut (deadline 2000 ms); the follower led ${Math.round(tookAfter)} ms after the cut`);
      expect((await readLease()).spec).toMatchObject({ holderIdentity: follower.identity, leaseTransitions: 1 });
    } finally {
      for (const socket of sockets) socket.destroy();
      if (kind === 'silent') await new Promise((resolve) => silent.close(resolve));
    }
  });
});
