/**
 * The whole system end to end, on loopback, the way it runs in a cluster (`npm run e2e`):
 *
 *   kubectl ──apply PhotoBatch──▶ kube-apiserver (+ etcd, the CRD)
 *                                      ▲ list/watch, Lease, status
 *                       two `facematch controller` processes (one leads through the Lease)
 *                                      │ gRPC ProcessPhoto, W3C traceparent
 *                                      ▼
 *                     Envoy on the shipped k8s/envoy/envoy.yaml (test/support/envoy.ts)
 *                                      │
 *                      two `facematch serve` replicas ── PostgreSQL, Milvus, the S3 server
 *                                      │ OTLP/HTTP (controllers too)
 *                                      ▼
 *                                Jaeger v2 ◀── /api/v3/traces ── this test, the latency report
 *
 * The servers are those of `scripts/test-env` (vitest.e2e.config.ts runs `scripts/test-env up` for
 * the modules below and hands their lines to this file; servers that already run are reused); this
 * file starts the rest as child processes, as the image runs them. It uploads the group photos and a
 * portrait of each of the 23 identities of ../shared/testdata to S3 under a prefix of the run,
 * enrols the gallery (the first photo of each person in a group photo, under a user id of the run:
 * the stores are shared and kept) through Envoy over gRPC, applies a PhotoBatch over the prefix with
 * kubectl, waits for Complete, and checks who was found in which photo against
 * ../shared/testdata/README.md (test/support/shared.ts). Then it reads the batch's traces back from
 * Jaeger and checks their shape, and writes the latency report of the run (reports/latency-e2e/).
 *
 * Leaves nothing running whatever failed: the controllers, Envoy and the replicas are stopped, the
 * PhotoBatch, the Lease and the run's namespace deleted, the run's objects, photos, vectors and
 * users removed. The test-env servers stay up (CI stops them: `scripts/test-env down`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client as MinioClient } from 'minio';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { childrenOf, ancestors, findTraces, type TraceSpan, type Traces } from '../scripts/latency/jaeger.js';
import { END_TO_END } from '../scripts/latency/report.js';
import { reportLatency, type WrittenReport } from '../scripts/latency/run.js';
import { photoIdFor } from '../src/controller/photo-id.js';
import { PhotoKind } from '../src/gen/facematch/v1/facematch.js';
import { ATTR, CONTROLLER_SPAN, RPC_ATTR, rpcSpan, SPAN, STAGES, stageSpan } from '../src/telemetry/attributes.js';
import { startEnvoy, type RunningEnvoy } from '../test/support/envoy.js';
import { kubectl as makeKubectl, type Kubectl } from '../test/support/kubectl.js';
import { requestCounts, startService, type ServiceProcess } from '../test/support/service-process.js';
import { GROUP_PEOPLE, GROUPS_DIR, identities, KNOWN_MISSES, REPO } from '../test/support/shared.js';
import { api, client, type Client } from './support.js';

const T0 = Date.now();
const env = process.env;
const NEEDS = [
  'FACEMATCH_TEST_KUBECONFIG',
  'FACEMATCH_TEST_KUBECTL',
  'FACEMATCH_MILVUS_ADDRESS',
  'FACEMATCH_POSTGRES_URL',
  'FACEMATCH_S3_ENDPOINT',
  'FACEMATCH_TEST_ENVOY',
  'FACEMATCH_TEST_JAEGER_OTLP_HTTP',
  'FACEMATCH_TEST_JAEGER_QUERY',
] as const;

const RUN = `e2e${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
const NS = `facematch-${RUN}`;
const BATCH = 'shoot';
const EVENT = `${RUN}-event`;
const BUCKET = env.FACEMATCH_BUCKET ?? 'facematch';
const PREFIX = `batches/${RUN}/`;
const GALLERY_PREFIX = `gallery/${RUN}/`;
const LEASE = 'facematch-controller';
const CONTROLLER = 'facematch-controller';
const SERVICE = 'facematch';
const CRD = path.join(REPO, 'k8s', 'crds', 'photobatches.facematch.io.yaml');
/** How long after Complete the test watches for work that should not happen (a second run of the batch). */
const SETTLE_MS = 8000;

/** Everyone who appears in a group photo; each is enrolled with their first photo. */
const GALLERY = [...new Set(Object.values(GROUP_PEOPLE).flat())].sort();
const userOf = (identity: string): string => `${RUN}-${identity}`;

/** What goes under PREFIX: every group photo, and the last portrait of each identity (the gallery uses the first). */
const UPLOADS: { key: string; file: string; people: readonly string[] }[] = [
  ...Object.keys(GROUP_PEOPLE).map((name) => ({ key: `${PREFIX}groups/${name}`, file: path.join(GROUPS_DIR, name), people: GROUP_PEOPLE[name]! })),
  // The crowds of strangers: nobody of the gallery is in them.
  ...['insightface-rest_lumia.jpg', 'hpc203_selfie.jpg', 'hpc203_s_l.jpg'].map((name) => ({ key: `${PREFIX}groups/${name}`, file: path.join(GROUPS_DIR, name), people: [] })),
  ...identities().map((id) => ({ key: `${PREFIX}portraits/${id.id}.jpg`, file: id.files.at(-1)!, people: [id.id] })),
];
const photoOf = (key: string): string => photoIdFor(`${BUCKET}/${key}`);
/** Not a photo: the batch must record it as failed (IMAGE_UNSUPPORTED), and its trace say so. */
const NOTE = `${PREFIX}notes/readme.jpg`;
/** Every object of the batch. */
const ALL_KEYS = [...UPLOADS.map((u) => u.key), NOTE];

interface Proc {
  name: string;
  child: ChildProcess;
  lines: string[];
  exited: Promise<number | null>;
}

const procs: Proc[] = [];
const replicas: ServiceProcess[] = [];
let envoy: RunningEnvoy | undefined;
let k: Kubectl | undefined;
let minio: MinioClient | undefined;
let c: Client | undefined;
let dataDir: string | undefined;
let batchStart = 0;
let batchUid = '';
let report: WrittenReport | undefined;
const timings: Record<string, number> = {};
const mark = (what: string): void => {
  timings[what] = Date.now() - T0;
};

/** The OTLP export every child process gets: to the test Jaeger, every trace kept, spans sent every 200 ms. */
function otel(): NodeJS.ProcessEnv {
  return {
    OTEL_EXPORTER_OTLP_ENDPOINT: env.FACEMATCH_TEST_JAEGER_OTLP_HTTP,
    OTEL_TRACES_SAMPLER: 'parentbased_always_on',
    OTEL_BSP_SCHEDULE_DELAY: '200',
  };
}

function startController(identity: string): Proc {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO, 'src/bin/cli.ts'), 'controller'], {
    cwd: REPO,
    env: {
      ...env,
      ...otel(),
      KUBECONFIG: env.FACEMATCH_TEST_KUBECONFIG,
      FACEMATCH_CONTROLLER_NAMESPACE: NS,
      FACEMATCH_CONTROLLER_LEASE_NAMESPACE: NS,
      FACEMATCH_CONTROLLER_LEASE_NAME: LEASE,
      FACEMATCH_CONTROLLER_IDENTITY: identity,
      FACEMATCH_CONTROLLER_SERVICE_ADDRESS: `127.0.0.1:${envoy!.port}`,
      FACEMATCH_CONTROLLER_STATUS_INTERVAL_MS: '1000',
      FACEMATCH_CONTROLLER_HTTP_PORT: '0',
      FACEMATCH_HOST: '127.0.0.1',
      FACEMATCH_LOG_LEVEL: 'info',
      OTEL_RESOURCE_ATTRIBUTES: `k8s.pod.name=${identity}`,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  for (const stream of [child.stdout, child.stderr]) createInterface({ input: stream }).on('line', (l) => lines.push(l));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const kill = (): void => {
    child.kill('SIGKILL');
  };
  process.once('exit', kill);
  void exited.then(() => process.removeListener('exit', kill));
  const p = { name: identity, child, lines, exited };
  procs.push(p);
  return p;
}

async function stopProc(p: Proc): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  p.child.kill('SIGTERM');
  await Promise.race([p.exited, sleep(20_000)]);
  if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
  await p.exited;
}

async function kubectlOk(args: string[], input?: string): Promise<string> {
  return k!.ok(args, input);
}

interface Status {
  total?: number;
  processed?: number;
  matched?: number;
  failed?: number;
  lastFailures?: { photoId: string; code: string; message: string }[];
  conditions?: { type: string; status: string; reason: string; message: string }[];
}
const isTrue = (s: Status, type: string): boolean => (s.conditions ?? []).some((x) => x.type === type && x.status === 'True');

async function waitForBatch(timeoutMs: number): Promise<Status> {
  const until = Date.now() + timeoutMs;
  let last: Status = {};
  while (Date.now() < until) {
    const obj = JSON.parse(await kubectlOk(['get', 'photobatch', BATCH, '-n', NS, '-o', 'json'])) as { status?: Status; metadata: { uid: string } };
    batchUid = obj.metadata.uid;
    last = obj.status ?? {};
    if (isTrue(last, 'Complete') || isTrue(last, 'Failed')) return last;
    await sleep(500);
  }
  throw new Error(`PhotoBatch ${NS}/${BATCH}: not Complete after ${timeoutMs} ms; status ${JSON.stringify(last)}\n` +
    procs.map((p) => `---- ${p.name}\n${p.lines.slice(-20).join('\n')}`).join('\n'));
}

async function removePrefix(prefix: string): Promise<void> {
  const keys: string[] = [];
  for await (const o of minio!.listObjectsV2(BUCKET, prefix, true)) if ((o as { name?: string }).name) keys.push((o as { name: string }).name);
  if (keys.length > 0) await minio!.removeObjects(BUCKET, keys);
}

/** Runs every step even when one fails; throws the first failure at the end. */
async function all(steps: [string, () => Promise<unknown>][]): Promise<void> {
  const failures: string[] = [];
  for (const [what, step] of steps) {
    try {
      await step();
    } catch (error) {
      failures.push(`${what}: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  if (failures.length) throw new Error(`teardown: ${failures.join('; ')}`);
}

beforeAll(async () => {
  if (env.FACEMATCH_E2E_UP_FAILED) throw new Error(env.FACEMATCH_E2E_UP_FAILED);
  const missing = NEEDS.filter((n) => !env[n]);
  if (missing.length) {
    throw new Error(`npm run e2e needs the servers of scripts/test-env (postgres s3 milvus kube envoy jaeger); missing ${missing.join(', ')}`);
  }
  k = await makeKubectl();
  await kubectlOk(['apply', '-f', CRD]);
  await kubectlOk(['wait', '--for=condition=Established', '--timeout=60s', 'crd/photobatches.facematch.io']);
  await kubectlOk(['create', 'namespace', NS]);

  const url = new URL(env.FACEMATCH_S3_ENDPOINT!);
  minio = new MinioClient({
    endPoint: url.hostname,
    port: Number(url.port),
    useSSL: url.protocol === 'https:',
    accessKey: env.FACEMATCH_S3_ACCESS_KEY!,
    secretKey: env.FACEMATCH_S3_SECRET_KEY!,
    region: env.FACEMATCH_S3_REGION ?? 'us-east-1',
    pathStyle: true,
  });
  if (!(await minio.bucketExists(BUCKET))) await minio.makeBucket(BUCKET);
  for (const u of UPLOADS) await minio.putObject(BUCKET, u.key, await readFile(u.file));
  await minio.putObject(BUCKET, NOTE, Buffer.from('the photographer notes, not a photo\n'));
  const byId = new Map(identities().map((i) => [i.id, i]));
  for (const user of GALLERY) await minio.putObject(BUCKET, `${GALLERY_PREFIX}${user}.jpg`, await readFile(byId.get(user)!.files[0]!));
  mark('uploaded');

  dataDir = await mkdtemp(path.join(tmpdir(), 'facematch-system-e2e-'));
  // One at a time: both load the models on the same two cores.
  for (const name of ['replica-a', 'replica-b']) {
    replicas.push(
      await startService({
        name,
        dataDir: path.join(dataDir, name),
        env: { ...otel(), OTEL_RESOURCE_ATTRIBUTES: `k8s.pod.name=${name}` },
        startTimeoutMs: 180_000,
      }),
    );
  }
  envoy = await startEnvoy({ upstreams: replicas.map((r) => r.grpcPort) });
  // Both replicas in rotation (Envoy's active health checks) before anything is sent.
  const until = Date.now() + 30_000;
  while ((await envoy.hosts()).filter((h) => h.healthy).length < 2) {
    if (Date.now() > until) throw new Error(`envoy: both replicas not healthy: ${JSON.stringify(await envoy.hosts())}`);
    await sleep(200);
  }
  mark('serving');

  startController(`${RUN}-controller-a`);
  startController(`${RUN}-controller-b`);

  // The gallery, through Envoy.
  c = client(envoy.port);
  const rpc = api(c);
  for (const user of GALLERY) {
    const res = await rpc.processPhoto({
      photoId: `${RUN}-selfie-${user}`,
      imageUrl: `s3://${BUCKET}/${GALLERY_PREFIX}${user}.jpg`,
      eventId: EVENT,
      kind: PhotoKind.PHOTO_KIND_FACECAM,
      userId: userOf(user),
    });
    expect(res.faces, `the selfie of ${user}`).toHaveLength(1);
  }
  mark('enrolled');
}, 600_000);

afterAll(async () => {
  const steps: [string, () => Promise<unknown>][] = [];
  if (k) {
    steps.push(['delete the PhotoBatch', () => k!.run(['delete', 'photobatch', BATCH, '-n', NS, '--ignore-not-found', '--wait=true', '--timeout=30s'])]);
  }
  for (const p of procs) steps.push([`stop ${p.name}`, () => stopProc(p)]);
  if (c) {
    // The run's records in the shared stores: its photos and its users.
    const rpc = api(c);
    steps.push([
      'delete the run photos and users',
      async () => {
        for (const key of ALL_KEYS) await rpc.deletePhoto({ photoId: photoOf(key) });
        for (const user of GALLERY) {
          await rpc.forgetUser({ userId: userOf(user) });
          await rpc.deletePhoto({ photoId: `${RUN}-selfie-${user}` });
        }
      },
    ]);
  }
  steps.push(['close the client', () => Promise.resolve(c?.close())]);
  if (envoy) steps.push(['stop envoy', () => envoy!.stop()]);
  for (const r of replicas) steps.push([`stop ${r.name}`, () => r.stop()]);
  if (k) {
    steps.push(['delete the namespace', () => k!.ok(['delete', 'namespace', NS, '--ignore-not-found', '--wait=true', '--timeout=90s'])]);
    steps.push(['kubectl cache', () => k!.close()]);
  }
  if (minio) {
    for (const prefix of [PREFIX, GALLERY_PREFIX, `annotated/${EVENT}/`]) steps.push([`remove s3://${BUCKET}/${prefix}`, () => removePrefix(prefix)]);
  }
  if (dataDir) steps.push(['remove the data folder', () => rm(dataDir!, { recursive: true, force: true })]);
  try {
    await all(steps);
  } finally {
    const seconds = ((Date.now() - T0) / 1000).toFixed(1);
    const marks = Object.entries(timings)
      .map(([what, ms]) => `${what} ${(ms / 1000).toFixed(1)} s`)
      .join(', ');
    console.log(`system e2e: ${seconds} s in all (${marks}, torn down ${seconds} s); left running: the scripts/test-env servers only`);
  }
}, 300_000);

describe('the whole system on loopback: kube-apiserver, two controllers, Envoy, two replicas, the stores, Jaeger', () => {
  let status: Status;
  /** The users found in each uploaded photo (ListUserPhotos through Envoy, inverted). */
  const found = new Map<string, string[]>();

  it('a PhotoBatch applied with kubectl runs to Complete: every object processed once, the non-image failed with its code', async () => {
    batchStart = Date.now();
    const manifest = {
      apiVersion: 'facematch.io/v1alpha1',
      kind: 'PhotoBatch',
      metadata: { name: BATCH, namespace: NS },
      spec: { eventId: EVENT, source: { s3: { bucket: BUCKET, prefix: PREFIX } }, concurrency: 2 },
    };
    await kubectlOk(['apply', '-f', '-'], JSON.stringify(manifest));
    status = await waitForBatch(600_000);
    mark('batch complete');
    console.log(`PhotoBatch ${NS}/${BATCH}: ${ALL_KEYS.length} objects in ${((Date.now() - batchStart) / 1000).toFixed(1)} s`);
    expect(isTrue(status, 'Complete'), JSON.stringify(status)).toBe(true);
    expect(status).toMatchObject({ total: ALL_KEYS.length, processed: ALL_KEYS.length, failed: 1 });
    expect(status.lastFailures).toEqual([expect.objectContaining({ photoId: photoOf(NOTE), code: 'IMAGE_UNSUPPORTED' })]);
    // A completed batch stays done: no second run (the next test counts the calls the replicas got).
    await sleep(SETTLE_MS);
    const after = await waitForBatch(10_000);
    expect(after).toMatchObject({ total: ALL_KEYS.length, processed: ALL_KEYS.length, failed: 1 });
  }, 660_000);

  it('one controller holds the Lease; Envoy spread the calls over both replicas; each photo was sent once', async () => {
    const holder = await kubectlOk(['get', 'lease', LEASE, '-n', NS, '-o', 'jsonpath={.spec.holderIdentity}']);
    expect(procs.map((p) => p.name)).toContain(holder);
    const calls = await Promise.all(replicas.map(async (r) => Object.values(await requestCounts(r.httpPort, 'ProcessPhoto')).reduce((a, b) => a + b, 0)));
    console.log(`ProcessPhoto calls per replica: ${replicas.map((r, i) => `${r.name} ${calls[i]}`).join(', ')}; lease holder ${holder}`);
    for (const n of calls) expect(n).toBeGreaterThan(0);
    expect(calls.reduce((a, b) => a + b, 0)).toBe(ALL_KEYS.length + GALLERY.length);
  });

  it('finds the people ../shared/testdata lists in each photo, and nobody else', async () => {
    const rpc = api(c!);
    for (const u of UPLOADS) found.set(photoOf(u.key), []);
    for (const identity of GALLERY) {
      const { photos } = await rpc.listUserPhotos({ userId: userOf(identity), eventId: EVENT });
      for (const p of photos) found.get(p.photoId)?.push(identity);
    }
    const missing: string[] = [];
    const wrong: string[] = [];
    for (const u of UPLOADS) {
      const name = path.basename(u.key);
      const there = found.get(photoOf(u.key))!;
      for (const person of u.people) {
        if (!GALLERY.includes(person)) continue;
        if (!there.includes(person) && !KNOWN_MISSES.includes(`${person} in ${name}`)) missing.push(`${person} in ${u.key.slice(PREFIX.length)}`);
      }
      for (const person of there) if (!u.people.includes(person)) wrong.push(`${person} in ${u.key.slice(PREFIX.length)}`);
    }
    console.log(
      `found per photo:\n${UPLOADS.filter((u) => found.get(photoOf(u.key))!.length > 0)
        .map((u) => `  ${u.key.slice(PREFIX.length)}: ${found.get(photoOf(u.key))!.join(', ')}`)
        .join('\n')}`,
    );
    expect(wrong).toEqual([]);
    expect(missing).toEqual([]);
    // status.matched counts the photos in which someone of the gallery was found.
    expect(status.matched).toBe([...found.values()].filter((users) => users.length > 0).length);
  });

  describe('the batch in Jaeger', () => {
    let traces: Traces;
    /** The photo traces: their root is the controller's photo span. */
    let photoTraces: { root: TraceSpan; spans: TraceSpan[] }[] = [];

    beforeAll(async () => {
      // Spans reach Jaeger within the exporters' 200 ms batching; wait until every photo's trace is whole.
      const until = Date.now() + 60_000;
      let lastCount = '';
      for (;;) {
        traces = await findTraces({
          jaeger: env.FACEMATCH_TEST_JAEGER_QUERY!,
          service: CONTROLLER,
          start: new Date(batchStart - 1000),
          end: new Date(Date.now() + 1000),
          limit: 2000,
        });
        photoTraces = [...traces.values()]
          .map((spans) => ({ root: spans.find((s) => !s.parentSpanId)!, spans }))
          .filter((t) => t.root?.name === CONTROLLER_SPAN.photo && t.spans.some((s) => s.name === SPAN.processPhoto && s.attributes[ATTR.eventId] === EVENT));
        const whole = photoTraces.filter((t) => t.spans.filter((s) => s.name.startsWith('facematch.stage.')).length >= STAGES.length);
        // Every photo whole, and the same count twice in a row (a late extra trace would be a photo sent twice).
        const count = `${photoTraces.length}/${whole.length}`;
        if (whole.length >= UPLOADS.length && photoTraces.length >= ALL_KEYS.length && count === lastCount) break;
        lastCount = count;
        if (Date.now() > until) break;
        await sleep(500);
      }
      mark('traces read');
    }, 120_000);

    it('one trace per photo, rooted at the controller photo span, linked to the batch run span', async () => {
      expect(photoTraces.map((t) => t.root.attributes[ATTR.photoId]).sort()).toEqual(ALL_KEYS.map(photoOf).sort());
      const links = new Set(photoTraces.map((t) => JSON.stringify(t.root.links)));
      expect(links.size, 'every photo links to the same batch span').toBe(1);
      const [link] = photoTraces[0]!.root.links;
      expect(photoTraces[0]!.root.links).toHaveLength(1);
      // The batch run's own trace: another trace, its span in the controller.
      expect(photoTraces.map((t) => t.root.traceId)).not.toContain(link!.traceId);
      // The batch run's span ends with the run: it may reach Jaeger a little after the photos'.
      let batchSpan: TraceSpan | undefined;
      for (const until = Date.now() + 30_000; !batchSpan && Date.now() < until; await sleep(500)) {
        const batchTrace = await findTraces({
          jaeger: env.FACEMATCH_TEST_JAEGER_QUERY!,
          service: CONTROLLER,
          operation: CONTROLLER_SPAN.batch,
          start: new Date(batchStart - 1000),
          end: new Date(Date.now() + 1000),
        });
        batchSpan = batchTrace.get(link!.traceId)?.find((s) => s.spanId === link!.spanId);
      }
      expect(batchSpan, 'the linked batch span is in Jaeger').toBeDefined();
      expect(batchSpan).toMatchObject({ name: CONTROLLER_SPAN.batch, service: CONTROLLER });
      expect(batchSpan!.attributes).toMatchObject({ [ATTR.batch]: `${NS}/${BATCH}`, [ATTR.batchUid]: batchUid, [ATTR.eventId]: EVENT });
      for (const t of photoTraces) expect(t.root.service).toBe(CONTROLLER);
    });

    it('in each: controller photo → gRPC client → (Envoy) → service SERVER span → process_photo → one span per stage; the failure with its code', () => {
      const problems: string[] = [];
      const services = new Set<string>();
      for (const { root, spans } of photoTraces) {
        const photo = String(root.attributes[ATTR.photoId]);
        const say = (what: string): void => {
          problems.push(`${photo}: ${what}`);
        };
        for (const s of spans) services.add(s.service);
        const requests = spans.filter((s) => s.name === SPAN.processPhoto);
        if (requests.length !== 1) {
          say(`${requests.length} ${SPAN.processPhoto} spans`);
          continue;
        }
        const req = requests[0]!;
        if (req.service !== SERVICE) say(`${SPAN.processPhoto} from ${req.service}`);
        if (req.attributes[ATTR.photoId] !== photo || req.attributes[ATTR.eventId] !== EVENT) say(`${SPAN.processPhoto} names another photo or event`);
        // Up from the use case: the SERVER span, Envoy's if any, the CLIENT span, the photo span.
        const { chain, missingParent } = ancestors(req, spans);
        if (missingParent) say(`a parent span is missing from the trace (${missingParent} above ${chain.at(-1)?.name ?? req.name})`);
        const server = chain[0];
        if (!server || server.kind !== 'server' || server.service !== SERVICE || server.name !== rpcSpan('ProcessPhoto')) {
          say(`the parent of ${SPAN.processPhoto} is ${server ? `${server.service} ${server.kind} ${server.name}` : 'none'}, not the service's SERVER span`);
        } else if (server.attributes[RPC_ATTR.system] !== 'grpc' || server.attributes[RPC_ATTR.method] !== 'ProcessPhoto') {
          say(`the SERVER span lacks rpc.system/rpc.method: ${JSON.stringify(server.attributes)}`);
        }
        const clientAt = chain.findIndex((s) => s.service === CONTROLLER);
        const between = chain.slice(1, clientAt);
        const clientSpan = chain[clientAt];
        if (between.some((s) => !/envoy/i.test(s.service))) say(`between the client and the server: ${between.map((s) => `${s.service} ${s.name}`).join(', ')}`);
        if (!clientSpan || clientSpan.kind !== 'client' || clientSpan.name !== rpcSpan('ProcessPhoto')) {
          say(`the controller span above the service is ${clientSpan ? `${clientSpan.kind} ${clientSpan.name}` : 'none'}, not the gRPC CLIENT span`);
        } else if (clientSpan.parentSpanId !== root.spanId) say('the CLIENT span is not a child of the photo span');
        if (chain.at(-1) !== root) say('the chain does not end at the photo span');
        // Down: one span per stage, children of the use case, inside it in time.
        const stages = childrenOf(req, spans).filter((s) => s.name.startsWith('facematch.stage.'));
        const names = stages.map((s) => s.name).sort();
        const failed = photo === photoOf(NOTE);
        if (failed) {
          // Not an image: fetched, refused at decode; the code on the service's spans and the controller's.
          if (!names.includes(stageSpan('fetch')) || names.some((n) => [stageSpan('store'), stageSpan('record')].includes(n))) say(`stage spans ${names.join(',')}`);
          if (req.status !== 'error') say(`${SPAN.processPhoto} is not an error`);
          if (root.status !== 'error' || root.attributes[ATTR.errorCode] !== 'IMAGE_UNSUPPORTED') {
            say(`the photo span: status ${root.status}, ${ATTR.errorCode} ${String(root.attributes[ATTR.errorCode])}`);
          }
          const coded = spans.filter((s) => s.service === SERVICE && s.attributes[ATTR.errorCode] === 'IMAGE_UNSUPPORTED');
          if (coded.length === 0) say(`no span of the service carries ${ATTR.errorCode} IMAGE_UNSUPPORTED`);
        } else {
          const want = STAGES.map(stageSpan).sort();
          if (JSON.stringify(names) !== JSON.stringify(want)) say(`stage spans ${names.join(',')}`);
          for (const s of spans) if (s.status === 'error') say(`${s.service} ${s.name} is an error: ${s.statusMessage}`);
        }
        for (const s of stages) {
          if (s.service !== SERVICE) say(`${s.name} from ${s.service}`);
          if (s.startMs < req.startMs - 1 || s.endMs > req.endMs + 1) say(`${s.name} outside ${SPAN.processPhoto} in time`);
          if (s.attributes[ATTR.photoId] !== photo || s.attributes[ATTR.eventId] !== EVENT) say(`${s.name} lacks the photo or event id`);
        }
        const strayStages = spans.filter((s) => s.name.startsWith('facematch.stage.') && s.parentSpanId !== req.spanId);
        if (strayStages.length) say(`${strayStages.length} stage span(s) elsewhere in the trace`);
        // Face counts: on the use case, the detect stage and the controller's photo span, the same.
        const faces = req.attributes[ATTR.faces];
        const detect = stages.find((s) => s.name === stageSpan('detect'));
        if (failed) continue;
        if (typeof faces !== 'number') say(`${SPAN.processPhoto} has no ${ATTR.faces}`);
        else {
          if (detect && detect.attributes[ATTR.faces] !== faces) say(`detect says ${String(detect.attributes[ATTR.faces])} faces, the request ${faces}`);
          if (root.attributes[ATTR.faces] !== faces) say(`the photo span says ${String(root.attributes[ATTR.faces])} faces, the service ${faces}`);
        }
      }
      console.log(`Jaeger: ${photoTraces.length} photo traces, ${photoTraces.reduce((n, t) => n + t.spans.length, 0)} spans, services ${[...services].sort().join(', ')}`);
      expect(problems).toEqual([]);
      expect([...services].filter((s) => s !== CONTROLLER && s !== SERVICE).every((s) => /envoy/i.test(s))).toBe(true);
    });

    it('the face counts tell small photos from crowds (the latency report splits on them)', () => {
      const facesOf = (key: string): unknown =>
        photoTraces.find((t) => t.root.attributes[ATTR.photoId] === photoOf(key))?.spans.find((s) => s.name === SPAN.processPhoto)?.attributes[ATTR.faces];
      expect(facesOf(`${PREFIX}groups/insightface-rest_lumia.jpg`)).toBeGreaterThanOrEqual(50);
      expect(facesOf(`${PREFIX}groups/insightface_t1.jpg`)).toBe(6);
      expect(facesOf(`${PREFIX}groups/faceapi_bbt3.jpg`)).toBeGreaterThanOrEqual(5);
    });

    it('the latency report of the run: every photo, every stage, small photos and crowds (reports/latency-e2e)', async () => {
      report = await reportLatency({
        jaeger: env.FACEMATCH_TEST_JAEGER_QUERY!,
        service: SERVICE,
        // From the batch's start: the enrolments (the same event, no controller) ended before it.
        start: new Date(batchStart),
        end: new Date(Date.now() + 1000),
        eventId: EVENT,
        crowdFaces: 10,
        limit: 2000,
        out: path.join(REPO, 'reports', 'latency-e2e'),
      });
      console.log(`latency report (${report.files.markdown}, ${report.files.svg}):\n${report.text}`);
      const allGroup = report.report.groups.find((g) => g.group === 'all')!;
      expect(allGroup.photos).toBe(UPLOADS.length);
      expect(allGroup.total).toBe(END_TO_END);
      expect(report.report.failed).toBe(1);
      const crowd = report.report.groups.find((g) => g.group === 'crowd')!;
      expect(crowd.photos).toBeGreaterThanOrEqual(2);
      for (const g of report.report.groups.filter((x) => x.photos > 0)) {
        for (const stage of STAGES) expect(g.rows.find((r) => r.name === stage)?.n, `${g.group} ${stage}`).toBe(g.photos);
        expect(g.total, 'every photo has its controller span: shares are of end to end').toBe(END_TO_END);
      }
    });
  });
});
