/**
 * The Envoy sidecar's configuration (k8s/envoy/), on a real envoy (FACEMATCH_TEST_ENVOY, from
 * `scripts/test-env up envoy`):
 *
 *   - every configuration the repo ships passes `envoy --mode validate`, without deprecated fields;
 *   - the shipped envoy.yaml, with only its addresses swapped for loopback (test/support/envoy.ts),
 *     in front of small @grpc/grpc-js servers: a call goes through; the gRPC health check marks the
 *     hosts healthy, takes out one that says NOT_SERVING and brings it back; an UNAVAILABLE that
 *     grpc-js sends before any message (a trailers-only response) is retried on the other host, one
 *     sent after the response headers is not; RESOURCE_EXHAUSTED is retried on another host and
 *     never ejects the full one; a try that passes per_try_timeout is retried; and a request of the
 *     service's largest message (4 MiB) is retried because the route raises the retry buffer
 *     (without it envoy gives up silently); the cluster's DNS discovery resolves a name (localhost).
 *
 * The upstreams are stand-ins for the service: the standard health service (grpc-health-check, as
 * the service uses) and FacematchService/ProcessPhoto with raw bytes, so each test says exactly how
 * a try ends. Needs no server of scripts/test-env besides envoy.
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import {
  Client,
  credentials,
  Metadata,
  Server,
  ServerCredentials,
  status,
  type MethodDefinition,
  type sendUnaryData,
  type ServerUnaryCall,
  type ServiceError,
} from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/config.js';
import {
  clusterOf,
  ENVOY_CONFIG,
  envoyBinary,
  readEnvoyConfig,
  routeOf,
  startEnvoy,
  validateEnvoyConfig,
  type RunningEnvoy,
} from '../support/envoy.js';

const ENVOY = envoyBinary();
if (!ENVOY) console.warn('envoy-config.test.ts skipped: needs envoy (scripts/test-env up envoy; npm run test:integration)');

const SERVICE = 'facematch.v1.FacematchService';
const METHOD = `/${SERVICE}/ProcessPhoto`;
const raw = (b: Buffer): Buffer => b;
const PROCESS_PHOTO: MethodDefinition<Buffer, Buffer> = {
  path: METHOD,
  requestStream: false,
  responseStream: false,
  requestSerialize: raw,
  requestDeserialize: raw,
  responseSerialize: raw,
  responseDeserialize: raw,
};

/** How one try ends, decided per call id and attempt by the test. */
type Outcome = { ok: true } | { code: status; headersFirst?: boolean } | { delayMs: number };
type Behaviour = (id: string, attempt: number, server: string) => Outcome;

interface Try {
  id: string;
  server: string;
  attempt: number;
  bytes: number;
}

/** A grpc-js stand-in for a replica: the health service and ProcessPhoto, on 127.0.0.1. */
interface Upstream {
  name: string;
  port: number;
  health: HealthImplementation;
  close(): Promise<void>;
}

const tries: Try[] = [];
let behave: Behaviour = () => ({ ok: true });

function attemptsOf(id: string): Try[] {
  return tries.filter((t) => t.id === id);
}

async function startUpstream(name: string): Promise<Upstream> {
  const server = new Server();
  const health = new HealthImplementation({ '': 'SERVING', [SERVICE]: 'SERVING' });
  health.addToServer(server);
  server.addService(
    { processPhoto: PROCESS_PHOTO },
    {
      processPhoto: (call: ServerUnaryCall<Buffer, Buffer>, callback: sendUnaryData<Buffer>) => {
        const id = String(call.metadata.get('x-test-id')[0] ?? '');
        const attempt = attemptsOf(id).length + 1;
        tries.push({ id, server: name, attempt, bytes: call.request.length });
        const outcome = behave(id, attempt, name);
        if ('code' in outcome) {
          // headersFirst: response headers go out before the status, which then travels in trailers.
          if (outcome.headersFirst) call.sendMetadata(new Metadata());
          callback({ code: outcome.code, details: `${name} says ${status[outcome.code]}` });
        } else if ('delayMs' in outcome) {
          setTimeout(() => callback(null, Buffer.from(`${name} late`)), outcome.delayMs);
        } else {
          callback(null, Buffer.from(`${name} ok ${call.request.length}`));
        }
      },
    },
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return {
    name,
    port,
    health,
    close: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())),
  };
}

let nextId = 0;
function newId(prefix: string): string {
  return `${prefix}-${++nextId}`;
}

/** ProcessPhoto through envoy with raw bytes; resolves with the reply or the gRPC error. */
function call(
  envoy: RunningEnvoy,
  id: string,
  body: Buffer = Buffer.from('photo'),
  extra: Record<string, string> = {},
): Promise<{ reply?: string; error?: ServiceError }> {
  const client = new Client(`127.0.0.1:${envoy.port}`, credentials.createInsecure());
  const md = new Metadata();
  md.set('x-test-id', id);
  for (const [k, v] of Object.entries(extra)) md.set(k, v);
  return new Promise((resolve) => {
    client.makeUnaryRequest(METHOD, raw, raw, body, md, { deadline: Date.now() + 20_000 }, (error, reply) => {
      client.close();
      resolve(error ? { error } : { reply: reply?.toString() });
    });
  });
}

/** grpc.health.v1.Health/Check through envoy (HealthCheckRequest{service} encoded by hand). */
function healthThrough(envoy: RunningEnvoy, service: string): Promise<Buffer> {
  const client = new Client(`127.0.0.1:${envoy.port}`, credentials.createInsecure());
  const name = Buffer.from(service);
  const request = Buffer.concat([Buffer.from([0x0a, name.length]), name]);
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest('/grpc.health.v1.Health/Check', raw, raw, request, new Metadata(), { deadline: Date.now() + 5000 }, (e, r) => {
      client.close();
      if (e || !r) reject(e ?? new Error('no reply'));
      else resolve(r);
    });
  });
}

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

const counter = (stats: Record<string, number>, name: string): number => stats[name] ?? 0;

describe.skipIf(!ENVOY)('k8s/envoy: every shipped configuration', () => {
  it('passes envoy --mode validate, with no deprecated field (the STRICT_DNS name need not resolve)', async () => {
    const dir = path.dirname(ENVOY_CONFIG);
    const files = (await readdir(dir)).filter((f) => f.endsWith('.yaml') || f.endsWith('.yml'));
    expect(files).toContain('envoy.yaml');
    for (const f of files) {
      const { code, output } = await validateEnvoyConfig(path.join(dir, f));
      expect({ file: f, code, ok: output.includes(`configuration '${path.join(dir, f)}' OK`) }).toEqual({ file: f, code: 0, ok: true });
      expect(output, f).not.toMatch(/deprecated/i);
    }
  });

  it('buffers a request of the service’s largest message for retries', async () => {
    const limit = Number(routeOf(await readEnvoyConfig(), `/${SERVICE}/`).request_body_buffer_limit);
    const service = parseConfig({}).server.maxMessageBytes;
    // The message plus gRPC's 5-byte frame header.
    expect(limit).toBeGreaterThanOrEqual(service + 5);
  });
});

describe.skipIf(!ENVOY)('the shipped envoy.yaml in front of two grpc-js replicas', () => {
  let a: Upstream;
  let b: Upstream;
  let envoy: RunningEnvoy;
  const started: RunningEnvoy[] = [];

  beforeAll(async () => {
    a = await startUpstream('a');
    b = await startUpstream('b');
    envoy = await startEnvoy({ upstreams: [a.port, b.port] });
    started.push(envoy);
  });

  afterAll(async () => {
    for (const e of started) await e.stop();
    await a?.close();
    await b?.close();
  });

  it('passes a call through; the gRPC health check marks both hosts healthy; the access log has the call', async () => {
    behave = () => ({ ok: true });
    const id = newId('plain');
    const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const { reply, error } = await call(envoy, id, Buffer.from('photo'), { 'x-request-id': `req-${id}`, traceparent });
    expect(error).toBeUndefined();
    expect(reply).toMatch(/^[ab] ok 5$/);
    expect(attemptsOf(id)).toHaveLength(1);

    const hosts = await envoy.hosts();
    expect(hosts.map((h) => h.address).sort()).toEqual([`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`].sort());
    expect(hosts.every((h) => h.healthy)).toBe(true);
    const stats = await envoy.stats();
    expect(counter(stats, 'cluster.facematch.health_check.success')).toBeGreaterThanOrEqual(2);

    // The standard health service through the sidecar: SERVING (status field = 1).
    expect([...(await healthThrough(envoy, SERVICE))]).toEqual([0x08, 0x01]);

    const line = await until('the access log line', async () =>
      (await envoy.accessLog()).find((l) => l.x_request_id === `req-${id}`),
    );
    expect(line).toMatchObject({ method: 'POST', path: METHOD, grpc_status: 0, attempts: 1, traceparent });
    expect(String(line.upstream_host)).toMatch(/^127\.0\.0\.1:\d+$/);
  });

  it('retries an UNAVAILABLE that grpc-js sends before any message (trailers-only) on the other host', async () => {
    behave = (_id, attempt) => (attempt === 1 ? { code: status.UNAVAILABLE } : { ok: true });
    const before = await envoy.stats();
    const id = newId('unavailable');
    const { reply, error } = await call(envoy, id, Buffer.from('photo'), { 'x-request-id': `req-${id}` });
    expect(error).toBeUndefined();
    const t = attemptsOf(id);
    expect(t).toHaveLength(2);
    expect(t[1]?.server).not.toBe(t[0]?.server);
    expect(reply).toBe(`${t[1]?.server} ok 5`);
    const after = await envoy.stats();
    expect(counter(after, 'cluster.facematch.upstream_rq_retry') - counter(before, 'cluster.facematch.upstream_rq_retry')).toBe(1);
    const line = await until('the access log line', async () => (await envoy.accessLog()).find((l) => l.x_request_id === `req-${id}`));
    expect(line).toMatchObject({ grpc_status: 0, attempts: 2 });
  });

  it('does not retry an UNAVAILABLE sent after the response headers (the status is in trailers)', async () => {
    behave = (_id, attempt) => (attempt === 1 ? { code: status.UNAVAILABLE, headersFirst: true } : { ok: true });
    const id = newId('late-unavailable');
    const { error } = await call(envoy, id);
    expect(error?.code).toBe(status.UNAVAILABLE);
    expect(attemptsOf(id)).toHaveLength(1);
  });

  it('completes RESOURCE_EXHAUSTED calls of a full replica on the other one, and does not eject the full one', async () => {
    behave = (_id, _attempt, server) => (server === 'a' ? { code: status.RESOURCE_EXHAUSTED } : { ok: true });
    // Four at a time: a burst of 20 at once that all meet the full replica needs more retries at
    // once than the retry budget allows (50% of the active requests, at least 8), by design.
    const ids = Array.from({ length: 20 }, () => newId('full'));
    const results: Awaited<ReturnType<typeof call>>[] = [];
    for (let i = 0; i < ids.length; i += 4) results.push(...(await Promise.all(ids.slice(i, i + 4).map((id) => call(envoy, id)))));
    expect(results.filter((r) => r.error)).toEqual([]);
    expect(results.every((r) => r.reply === 'b ok 5')).toBe(true);
    let onA = 0;
    for (const id of ids) {
      const servers = attemptsOf(id).map((t) => t.server);
      // b at once, or a then b: never a twice (previous_hosts), never more tries.
      expect([['b'], ['a', 'b']]).toContainEqual(servers);
      if (servers[0] === 'a') onA++;
    }
    expect(onA).toBeGreaterThan(0); // least-request picks a for about half of them
    const hostA = (await envoy.hosts()).find((h) => h.address === `127.0.0.1:${a.port}`);
    expect(hostA?.healthy).toBe(true);
  });

  it('takes a replica that says NOT_SERVING out of rotation, and back within seconds of SERVING', async () => {
    behave = () => ({ ok: true });
    const hostA = async (): Promise<boolean | undefined> =>
      (await envoy.hosts()).find((h) => h.address === `127.0.0.1:${a.port}`)?.healthy;
    a.health.setStatus(SERVICE, 'NOT_SERVING');
    try {
      const t0 = Date.now();
      await until('a marked unhealthy', async () => (await hostA()) === false, 15_000);
      const outMs = Date.now() - t0;
      const ids = Array.from({ length: 10 }, () => newId('drained'));
      const results = await Promise.all(ids.map((id) => call(envoy, id)));
      expect(results.every((r) => r.reply === 'b ok 5')).toBe(true);
      expect(ids.flatMap((id) => attemptsOf(id).map((t) => t.server))).toEqual(ids.map(() => 'b'));
      // interval 2 s x unhealthy_threshold 2, plus jitter and the 1 s timeout at most.
      expect(outMs).toBeLessThan(8000);
    } finally {
      a.health.setStatus(SERVICE, 'SERVING');
    }
    const t1 = Date.now();
    await until('a healthy again', async () => (await hostA()) === true, 15_000);
    // unhealthy_interval 1 s, healthy_threshold 1.
    expect(Date.now() - t1).toBeLessThan(4000);
  });

  it('retries a request of the service’s largest message (4 MiB); without the route’s buffer limit envoy gives up silently', async () => {
    behave = (_id, attempt) => (attempt === 1 ? { code: status.UNAVAILABLE } : { ok: true });
    // FACEMATCH_MAX_MESSAGE_BYTES's default, which grpc-js servers also accept by default.
    const largest = Buffer.alloc(parseConfig({}).server.maxMessageBytes, 7);
    const id = newId('big');
    const { reply, error } = await call(envoy, id, largest);
    expect(error).toBeUndefined();
    expect(reply).toMatch(new RegExp(` ok ${largest.length}$`));
    expect(attemptsOf(id).map((t) => t.bytes)).toEqual([largest.length, largest.length]);

    // The same call on the shipped file without request_body_buffer_limit: envoy's retry copy is
    // capped by the 4 MiB HTTP/2 stream window, so one try, and the caller gets its UNAVAILABLE.
    const unbuffered = await startEnvoy({
      upstreams: [a.port, b.port],
      edit: (config) => {
        delete routeOf(config, `/${SERVICE}/`).request_body_buffer_limit;
      },
    });
    started.push(unbuffered);
    const id2 = newId('big-unbuffered');
    const second = await call(unbuffered, id2, largest);
    expect(second.error?.code).toBe(status.UNAVAILABLE);
    expect(attemptsOf(id2)).toHaveLength(1);
    expect(counter(await unbuffered.stats(), 'cluster.facematch.retry_or_shadow_abandoned')).toBe(1);
  });

  it('resolves the shipped DNS cluster (only its name changed, to localhost) and health-checks what it finds', async () => {
    const shipped = clusterOf(await readEnvoyConfig());
    const dns = await startEnvoy({
      upstreams: [a.port],
      edit: (config) => {
        const cluster = clusterOf(config);
        delete cluster.type;
        cluster.cluster_type = shipped.cluster_type;
        cluster.load_assignment = {
          cluster_name: 'facematch',
          endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 'localhost', port_value: a.port } } } }] }],
        };
      },
    });
    started.push(dns);
    const hosts = await until('localhost resolved and healthy', async () => {
      const h = await dns.hosts();
      return h.length > 0 && h.every((x) => x.healthy) ? h : undefined;
    });
    expect(hosts.map((h) => h.address)).toEqual([`127.0.0.1:${a.port}`]);
  });

  it('retries a try that passes per_try_timeout (here shortened to 0.5 s) on the other host', async () => {
    const short = await startEnvoy({
      upstreams: [a.port, b.port],
      edit: (config) => {
        const route = routeOf(config, `/${SERVICE}/`);
        const action = route.route as { retry_policy: { per_try_timeout: string } };
        action.retry_policy.per_try_timeout = '0.5s';
      },
    });
    started.push(short);
    behave = (_id, attempt) => (attempt === 1 ? { delayMs: 3000 } : { ok: true });
    const id = newId('slow');
    const t0 = Date.now();
    const { reply, error } = await call(short, id);
    expect(error).toBeUndefined();
    const t = attemptsOf(id);
    expect(t).toHaveLength(2);
    expect(reply).toBe(`${t[1]?.server} ok 5`);
    expect(Date.now() - t0).toBeLessThan(2500);
    const stats = await short.stats();
    expect(counter(stats, 'cluster.facematch.upstream_rq_per_try_timeout')).toBe(1);
  });
});
