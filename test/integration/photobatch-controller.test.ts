/**
 * The PhotoBatch controller end to end, as an operator runs it: `facematch controller` processes
 * (child processes, as the image runs them) on a real kube-apiserver, driving a real `facematch
 * serve` on PostgreSQL + Milvus + S3 over gRPC.
 *
 * - The CRD applied with kubectl; the photos of ../shared/testdata uploaded to the S3 server (the
 *   group photos, one portrait of each person, and a file that is not an image); the gallery
 *   enrolled. A PhotoBatch over that prefix reaches Complete with the right totals and the non-image
 *   under failed; `facematch photos --user` finds the people ../shared/testdata/README.md lists;
 *   `kubectl get photobatches` shows the columns.
 * - A controller SIGKILLed at about half: started again, it resumes from the cursor in status; the
 *   service's own request counter shows how many photos were processed twice.
 * - Two replicas: the leader (the Lease holder) SIGKILLed mid-batch; the other takes the lease and
 *   finishes the batch.
 *
 * Needs `scripts/test-env up` (kube, postgres, milvus, s3); skipped otherwise. Works in the namespace
 * `facematch-it` (kept: test-env runs no namespace controller, so a deleted namespace would stay
 * Terminating), with an event, a lease and an S3 prefix of its own (a run id), and deletes its
 * PhotoBatches and objects at the end.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { Client as MinioClient } from 'minio';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PhotoKind, SearchCollection, type ListEventPhotosResponse } from '../../src/gen/facematch/v1/facematch.js';
import { MilvusClient } from '@zilliz/milvus2-sdk-node';
import { photoIdFor } from '../../src/controller/photo-id.js';
import { api, client, LOOPBACK_SERVICE, type Client } from '../../e2e/support.js';
import { KUBECONFIG, KUBECTL, kubectl as makeKubectl, type Kubectl } from '../support/kubectl.js';
import { GROUP_PEOPLE, GROUPS_DIR, identities, KNOWN_MISSES, MODELS_DIR, REPO } from '../support/shared.js';

const REAL = Boolean(
  KUBECONFIG && KUBECTL && process.env.FACEMATCH_MILVUS_ADDRESS && process.env.FACEMATCH_POSTGRES_URL && process.env.FACEMATCH_S3_ENDPOINT,
);
if (!REAL) console.warn('photobatch-controller.test.ts skipped: needs the kube, postgres, milvus and s3 servers of scripts/test-env');

const CRD = path.join(REPO, 'k8s', 'crds', 'photobatches.facematch.io.yaml');
const RUN = `pc${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
const NS = 'facematch-it';
const EVENT = `${RUN}-event`;
const BUCKET = process.env.FACEMATCH_BUCKET ?? 'facematch';
const PREFIX = `batches/${RUN}/`;
const CONCURRENCY = 2;

const IN_GROUP = GROUP_PEOPLE;
const GALLERY = [...new Set(Object.values(IN_GROUP).flat())].sort();
/** The user id of an identity: the run's own, so no other test's user (the stores are shared and kept) is touched. */
const userOf = (identity: string): string => `${RUN}-${identity}`;

let k: Kubectl;
const kubectl = (args: string[], input?: string): ReturnType<Kubectl['run']> => k.run(args, input);
const kubectlOk = (args: string[], input?: string): Promise<string> => k.ok(args, input);

interface Status {
  total?: number;
  processed?: number;
  matched?: number;
  failed?: number;
  progress?: string;
  cursor?: string;
  startedAt?: string;
  completedAt?: string;
  observedGeneration?: number;
  lastFailures?: { photoId: string; code: string; message: string }[];
  conditions?: { type: string; status: string; reason: string; message: string; observedGeneration: number }[];
}

async function statusOf(name: string): Promise<Status> {
  const obj = JSON.parse(await kubectlOk(['get', 'photobatch', name, '-n', NS, '-o', 'json'])) as { status?: Status };
  return obj.status ?? {};
}

const isTrue = (s: Status, type: string): boolean => (s.conditions ?? []).some((c) => c.type === type && c.status === 'True');

async function waitFor(name: string, done: (s: Status) => boolean, timeoutMs: number): Promise<Status> {
  const until = Date.now() + timeoutMs;
  let last: Status = {};
  while (Date.now() < until) {
    last = await statusOf(name);
    if (done(last)) return last;
    await pause(250);
  }
  throw new Error(`PhotoBatch ${name}: gave up waiting; last status ${JSON.stringify(last)}`);
}

function applyBatch(name: string, prefix: string): Promise<string> {
  const manifest = {
    apiVersion: 'facematch.io/v1alpha1',
    kind: 'PhotoBatch',
    metadata: { name, namespace: NS, labels: { 'facematch.io/test-run': RUN } },
    spec: { eventId: EVENT, source: { s3: { bucket: BUCKET, prefix } }, concurrency: CONCURRENCY, serviceAddress: `127.0.0.1:${service.grpcPort}` },
  };
  return kubectlOk(['apply', '-f', '-'], JSON.stringify(manifest));
}

const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

interface Proc {
  child: ChildProcess;
  lines: string[];
  exited: Promise<number | null>;
}

function start(args: string[], env: NodeJS.ProcessEnv): Proc {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO, 'src/bin/cli.ts'), ...args], {
    cwd: REPO,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  for (const stream of [child.stdout, child.stderr]) createInterface({ input: stream }).on('line', (line) => lines.push(line));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, lines, exited };
}

async function stop(p: Proc | undefined, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!p || p.child.exitCode !== null || p.child.signalCode !== null) return;
  p.child.kill(signal);
  await Promise.race([p.exited, pause(15_000)]);
  if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
  await p.exited;
}

/** `facematch controller` with short lease timings, so a takeover is quick. */
function startController(identity: string): Proc {
  return start(['controller'], {
    KUBECONFIG,
    FACEMATCH_CONTROLLER_NAMESPACE: NS,
    FACEMATCH_CONTROLLER_LEASE_NAMESPACE: NS,
    FACEMATCH_CONTROLLER_LEASE_NAME: `lease-${RUN}`,
    FACEMATCH_CONTROLLER_IDENTITY: identity,
    FACEMATCH_CONTROLLER_LEASE_DURATION_MS: '3000',
    FACEMATCH_CONTROLLER_RENEW_DEADLINE_MS: '2000',
    FACEMATCH_CONTROLLER_RETRY_PERIOD_MS: '500',
    FACEMATCH_CONTROLLER_STATUS_INTERVAL_MS: '500',
    FACEMATCH_CONTROLLER_HTTP_PORT: '0',
    FACEMATCH_HOST: '127.0.0.1',
    FACEMATCH_LOG_LEVEL: 'info',
  });
}

async function leaseHolder(): Promise<string | undefined> {
  const r = await kubectl(['get', 'lease', `lease-${RUN}`, '-n', NS, '-o', 'jsonpath={.spec.holderIdentity}']);
  return r.code === 0 && r.stdout ? r.stdout : undefined;
}

/** ProcessPhoto calls the service answered (any outcome), from its /metrics. */
async function processPhotoCalls(code?: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${service.httpPort}/metrics`)).text();
  let total = 0;
  for (const line of text.split('\n')) {
    const m = /^facematch_requests_total\{([^}]*)\} (\d+)/.exec(line);
    if (m && m[1]!.includes('method="ProcessPhoto"') && (code === undefined || m[1]!.includes(`code="${code}"`))) total += Number(m[2]);
  }
  return total;
}

const service = { grpcPort: 0, httpPort: 0 };

/** Drops the Milvus collections of a vector namespace (the test's own). */
async function dropNamespace(namespace: string): Promise<void> {
  const milvus = new MilvusClient({ address: process.env.FACEMATCH_MILVUS_ADDRESS!, logLevel: 'error' });
  const prefix = process.env.FACEMATCH_MILVUS_COLLECTION_PREFIX ?? 'facematch';
  const { data } = await milvus.showCollections();
  for (const { name } of data) if (name.startsWith(`${prefix}_${namespace}_`)) await milvus.dropCollection({ collection_name: name });
  milvus.closeConnection();
}

/** `facematch serve` on the test-env stores; resolves once it printed its ports (or rejects with its output). */
async function startService(extra: NodeJS.ProcessEnv): Promise<Proc> {
  const p = start(['serve'], {
    ...LOOPBACK_SERVICE,
    FACEMATCH_MODEL_PACK: 'test',
    FACEMATCH_MODELS_DIR: MODELS_DIR,
    FACEMATCH_INFERENCE_WORKERS: '1',
    FACEMATCH_LOG_LEVEL: 'warn',
    ...extra,
  });
  const ports = await new Promise<{ grpcPort: number; httpPort: number }>((resolve, reject) => {
    const timer = setInterval(() => {
      const line = p.lines.find((l) => l.startsWith('{"grpcPort"'));
      if (line) {
        clearInterval(timer);
        resolve(JSON.parse(line) as { grpcPort: number; httpPort: number });
      }
    }, 100);
    void p.exited.then((code) => {
      clearInterval(timer);
      reject(new Error(`facematch serve exited with ${code}: ${p.lines.join('\n')}`));
    });
  });
  Object.assign(service, ports);
  return p;
}

/** The photos ListUserPhotos gives each gallery user in the event (what `facematch photos --user` prints). */
async function photosOfGallery(c: Client): Promise<Map<string, string[]>> {
  const found = new Map<string, string[]>();
  for (const user of GALLERY) {
    const { photos } = await api(c).listUserPhotos({ userId: userOf(user), eventId: EVENT });
    found.set(user, photos.map((p) => p.photoId).sort());
  }
  return found;
}

/** How many photos the service has recorded for the event (ListEventPhotos, page by page). */
async function eventPhotoCount(c: Client): Promise<number> {
  let count = 0;
  let pageToken = '';
  do {
    const page = await new Promise<ListEventPhotosResponse>((resolve, reject) =>
      c.listEventPhotos({ eventId: EVENT, pageSize: 1000, pageToken }, (err, res) => (err ? reject(err) : resolve(res))),
    );
    count += page.photos.length;
    pageToken = page.nextPageToken;
  } while (pageToken);
  return count;
}

/** `facematch photos --user` on the same stores, as an operator checks a batch. */
async function photosCli(user: string): Promise<string[]> {
  const cli = start(['photos', '--user', user, '--event', EVENT], { FACEMATCH_MODEL_PACK: 'test', FACEMATCH_MODELS_DIR: MODELS_DIR });
  expect(await cli.exited).toBe(0);
  return cli.lines
    .filter((l) => l.startsWith('{'))
    .map((l) => (JSON.parse(l) as { photoId: string }).photoId)
    .sort();
}

describe.runIf(REAL)('the PhotoBatch controller on kube-apiserver, driving the service', () => {
  let serve: Proc | undefined;
  const controllers: Proc[] = [];
  let c: Client;
  let minio: MinioClient;
  let dataDir: string;
  /** What `photos --user` found after the first batch. */
  let before = new Map<string, string[]>();
  /** The keys under PREFIX and what each photo should show. */
  const uploads: { key: string; file?: string; body?: Buffer }[] = [];

  beforeAll(async () => {
    k = await makeKubectl();
    dataDir = await mkdtemp(path.join(tmpdir(), 'facematch-pc-'));
    await kubectlOk(['apply', '-f', CRD]);
    await kubectlOk(['wait', '--for=condition=Established', '--timeout=60s', 'crd/photobatches.facematch.io']);
    await kubectlOk(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } }));
    // Batches a crashed earlier run left behind would be reconciled by our controller too.
    await kubectlOk(['delete', 'photobatches', '--all', '-n', NS, '--ignore-not-found']);

    serve = await startService({ FACEMATCH_DATA_DIR: dataDir });
    c = client(service.grpcPort);
    const rpc = api(c);

    const url = new URL(process.env.FACEMATCH_S3_ENDPOINT!);
    minio = new MinioClient({
      endPoint: url.hostname,
      port: Number(url.port),
      useSSL: false,
      accessKey: process.env.FACEMATCH_S3_ACCESS_KEY!,
      secretKey: process.env.FACEMATCH_S3_SECRET_KEY!,
      region: process.env.FACEMATCH_S3_REGION ?? 'us-east-1',
      pathStyle: true,
    });
    if (!(await minio.bucketExists(BUCKET))) await minio.makeBucket(BUCKET);
    for (const name of Object.keys(IN_GROUP)) uploads.push({ key: `${PREFIX}groups/${name}`, file: path.join(GROUPS_DIR, name) });
    // A portrait of everyone (the last one: the first enrols the gallery), under a key with a space.
    for (const id of identities()) uploads.push({ key: `${PREFIX}portraits/${id.id} 2.jpg`, file: id.files.at(-1)! });
    uploads.push({ key: `${PREFIX}notes/readme.jpg`, body: Buffer.from('these are the photographer notes, not a photo\n') });
    for (const u of uploads) await minio.putObject(BUCKET, u.key, u.body ?? (await readFile(u.file!)));

    // The gallery: each person's first photo, enrolled in the event.
    const byId = new Map(identities().map((i) => [i.id, i]));
    for (const user of GALLERY) {
      const file = byId.get(user)!.files[0]!;
      await minio.putObject(BUCKET, `${PREFIX.replace('batches/', 'gallery/')}${user}.jpg`, await readFile(file));
      await rpc.processPhoto({
        photoId: `${RUN}-selfie-${user}`,
        imageUrl: `s3://${BUCKET}/${PREFIX.replace('batches/', 'gallery/')}${user}.jpg`,
        eventId: EVENT,
        kind: PhotoKind.PHOTO_KIND_FACECAM,
        userId: userOf(user),
      });
    }
  }, 300_000);

  afterAll(async () => {
    for (const p of controllers) await stop(p);
    if (k) {
      await kubectl(['delete', 'photobatches', '-n', NS, '-l', `facematch.io/test-run=${RUN}`, '--ignore-not-found']);
      await kubectl(['delete', 'lease', `lease-${RUN}`, '-n', NS, '--ignore-not-found']);
    }
    c?.close();
    await stop(serve);
    if (minio) {
      for (const prefix of [PREFIX, PREFIX.replace('batches/', 'gallery/'), `copies/${RUN}/`]) {
        const keys: string[] = [];
        for await (const o of minio.listObjectsV2(BUCKET, prefix, true)) if ((o as { name?: string }).name) keys.push((o as { name: string }).name);
        if (keys.length > 0) await minio.removeObjects(BUCKET, keys);
      }
    }
    if (k) await k.close();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  }, 120_000);

  it('runs an S3 batch to Complete with the right totals; photos --user finds the people in the group photos', async () => {
    const controller = startController(`${RUN}-a`);
    controllers.push(controller);
    await applyBatch('shoot', PREFIX);
    const status = await waitFor('shoot', (s) => isTrue(s, 'Complete') || isTrue(s, 'Failed'), 240_000);

    expect(isTrue(status, 'Complete'), JSON.stringify(status)).toBe(true);
    expect(status.total).toBe(uploads.length);
    expect(status.processed).toBe(uploads.length);
    expect(status.progress).toBe(`${uploads.length}/${uploads.length}`);
    expect(status.failed).toBe(1);
    expect(status.lastFailures).toEqual([
      expect.objectContaining({ photoId: photoIdFor(`${BUCKET}/${PREFIX}notes/readme.jpg`), code: 'IMAGE_UNSUPPORTED' }),
    ]);
    expect(status.observedGeneration).toBe(1);
    expect(status.startedAt).toBeTruthy();
    expect(status.completedAt).toBeTruthy();

    // Each person is found, by the CLI on the same stores, in every group photo the README lists
    // (but the test embedder's known misses, as in e2e/matching.e2e.test.ts).
    const matchedPhotos = new Set<string>();
    before = await photosOfGallery(c);
    // The CLI reads the same: one user is enough (each run loads the models, ~8 s).
    expect(await photosCli(userOf('facerec_obama'))).toEqual(before.get('facerec_obama'));
    for (const user of GALLERY) {
      const found = before.get(user)!;
      for (const id of found) matchedPhotos.add(id);
      const expected = Object.entries(IN_GROUP)
        .filter(([name, people]) => people.includes(user) && !KNOWN_MISSES.includes(`${user} in ${name}`))
        .map(([name]) => photoIdFor(`${BUCKET}/${PREFIX}groups/${name}`));
      expect(found, user).toEqual(expect.arrayContaining(expected));
    }
    // status.matched counts the photos in which someone of the gallery was found.
    expect(status.matched).toBe(matchedPhotos.size);
  }, 300_000);

  it('kubectl get photobatches shows event, progress, matched, failed, status and age', async () => {
    const table = await kubectlOk(['get', 'photobatches', '-n', NS, 'shoot']);
    const [header, row] = table.trim().split('\n');
    expect(header!.split(/\s{2,}/)).toEqual(['NAME', 'EVENT', 'PROGRESS', 'MATCHED', 'FAILED', 'STATUS', 'AGE']);
    const status = await statusOf('shoot');
    expect(row!.split(/\s{2,}/).slice(0, 6)).toEqual(['shoot', EVENT, status.progress, String(status.matched), '1', 'CompletedWithFailures']);
  });

  it('a controller SIGKILLed at about half resumes from its cursor; only the photos past it are processed again', async () => {
    for (const p of controllers.splice(0)) await stop(p);
    // Three copies of the photos: a batch long enough to stop in the middle.
    const prefix = `copies/${RUN}/`;
    let n = 0;
    for (let copy = 0; copy < 3; copy++) {
      for (const u of uploads) {
        if (u.body) continue;
        await minio.putObject(BUCKET, `${prefix}${copy}/${u.key.slice(PREFIX.length)}`, await readFile(u.file!));
        n++;
      }
    }
    const before = await processPhotoCalls();
    const first = startController(`${RUN}-b`);
    controllers.push(first);
    await applyBatch('resume', prefix);
    const half = await waitFor('resume', (s) => (s.processed ?? 0) >= n / 2, 240_000);
    const callsAtKill = (await processPhotoCalls()) - before;
    first.child.kill('SIGKILL');
    await first.exited;
    const atKill = await statusOf('resume');
    expect(isTrue(atKill, 'Complete')).toBe(false);
    expect(atKill.processed).toBeGreaterThanOrEqual(half.processed!);

    const second = startController(`${RUN}-c`);
    controllers.push(second);
    const done = await waitFor('resume', (s) => isTrue(s, 'Complete') || isTrue(s, 'Failed'), 300_000);
    expect(isTrue(done, 'Complete'), JSON.stringify(done)).toBe(true);
    expect(done.total).toBe(n);
    expect(done.processed).toBe(n);
    expect(done.failed).toBe(0);

    // Processed again: the photos the first controller had done or had in flight past the cursor it
    // last wrote. At most the window (concurrency x 2 photos in flight or done out of order) and the
    // photos done since the last status write (written every 500 ms here).
    const calls = (await processPhotoCalls()) - before;
    const again = calls - n;
    const pastCursor = callsAtKill - atKill.processed!;
    console.log(`resume: ${n} photos, ${calls} ProcessPhoto calls (${again} again); at the kill ${callsAtKill} calls, ${atKill.processed} in status`);
    expect(again).toBeGreaterThanOrEqual(0);
    expect(again).toBeLessThanOrEqual(pastCursor + CONCURRENCY * 2);
    expect(again).toBeLessThan(n / 2);
  }, 600_000);

  it('two replicas: one holds the lease; SIGKILL it mid-batch and the other finishes the batch', async () => {
    for (const p of controllers.splice(0)) await stop(p);
    const a = startController(`${RUN}-d`);
    const b = startController(`${RUN}-e`);
    controllers.push(a, b);
    const byIdentity = new Map([
      [`${RUN}-d`, a],
      [`${RUN}-e`, b],
    ]);
    let leader: string | undefined;
    for (let i = 0; i < 60 && !byIdentity.has(leader ?? ''); i++) {
      leader = await leaseHolder();
      await pause(250);
    }
    expect([...byIdentity.keys()]).toContain(leader);
    await kubectlOk(['delete', 'photobatch', 'resume', '-n', NS]);
    await applyBatch('takeover', `copies/${RUN}/`);
    await waitFor('takeover', (s) => (s.processed ?? 0) >= 10, 240_000);
    const killed = byIdentity.get(leader!)!;
    killed.child.kill('SIGKILL');
    await killed.exited;
    const done = await waitFor('takeover', (s) => isTrue(s, 'Complete') || isTrue(s, 'Failed'), 300_000);
    expect(isTrue(done, 'Complete'), JSON.stringify(done)).toBe(true);
    expect(done.processed).toBe(done.total);
    const next = await leaseHolder();
    expect(next).not.toBe(leader);
    expect([...byIdentity.keys()]).toContain(next);
  }, 600_000);

  it('suspend cancels the photos in flight and keeps the cursor; a concurrency edit and resume continue; delete stops the work', async () => {
    for (const p of controllers.splice(0)) await stop(p);
    const controller = startController(`${RUN}-g`);
    controllers.push(controller);
    const patch = (spec: Record<string, unknown>): Promise<string> =>
      kubectlOk(['patch', 'photobatch', 'steer', '-n', NS, '--type=merge', '-p', JSON.stringify({ spec })]);
    await kubectl(['delete', 'photobatch', 'takeover', '-n', NS, '--ignore-not-found']);
    await applyBatch('steer', `copies/${RUN}/`);
    await waitFor('steer', (s) => (s.processed ?? 0) >= 4, 120_000);

    await patch({ suspend: true });
    const suspended = await waitFor('steer', (s) => isTrue(s, 'Suspended'), 30_000);
    const quiet = await processPhotoCalls();
    await pause(3000);
    // Nothing new starts; at most the calls that were being cancelled end.
    expect((await processPhotoCalls()) - quiet).toBeLessThanOrEqual(CONCURRENCY);
    expect((await statusOf('steer')).processed).toBe(suspended.processed);

    await patch({ suspend: false, concurrency: 3 });
    const resumed = await waitFor('steer', (s) => isTrue(s, 'Progressing') && (s.processed ?? 0) >= suspended.processed! + 6, 120_000);
    expect(resumed.observedGeneration).toBe(3);

    await kubectlOk(['delete', 'photobatch', 'steer', '-n', NS, '--wait=false']);
    await pause(1500);
    const afterDelete = await processPhotoCalls();
    await pause(3000);
    expect((await processPhotoCalls()) - afterDelete).toBe(0);
  }, 300_000);

  it('an event source re-processes the event after a model pack change (a fresh vector namespace); the same people are found', async () => {
    for (const p of controllers.splice(0)) await stop(p);
    // Another pack: the 2.5 GF detector with the same embedder, its vectors in a namespace of their own.
    const pack = JSON.parse(await readFile(path.join(REPO, 'models', 'test.json'), 'utf8')) as { name: string; detector: { file: string; sha256: string } };
    pack.name = 'test-2.5g';
    pack.detector.file = 'det_2.5g.onnx';
    pack.detector.sha256 = '041f73f47371333d1d17a6fee6c8ab4e6aecabefe398ff32cca4e2d5eaee0af9';
    const manifest = path.join(dataDir, 'test-2.5g.json');
    await writeFile(manifest, JSON.stringify(pack));
    const namespace = `ns_${RUN}`;
    // Who is found where with the old pack (the copies of the resume test included).
    const old = await photosOfGallery(c);
    expect(old.get('facerec_obama')!.length).toBeGreaterThan(0);
    c.close();
    await stop(serve);
    serve = await startService({ FACEMATCH_DATA_DIR: dataDir, FACEMATCH_MODEL_PACK: manifest, FACEMATCH_VECTOR_NAMESPACE: namespace });
    c = client(service.grpcPort);
    const rpc = api(c);
    try {
      // The new namespace holds no vectors yet: a selfie finds nothing until the event is processed again.
      const probe = {
        imageUrl: `s3://${BUCKET}/${PREFIX.replace('batches/', 'gallery/')}facerec_obama.jpg`,
        eventId: EVENT,
        collection: SearchCollection.SEARCH_COLLECTION_ACTION_SHOTS,
        limit: 10,
      };
      expect((await rpc.searchFaces(probe)).matches).toEqual([]);
      const recordedBefore = await eventPhotoCount(c);
      const calls = await processPhotoCalls('OK');
      const controller = startController(`${RUN}-f`);
      controllers.push(controller);
      await kubectlOk(
        ['apply', '-f', '-'],
        JSON.stringify({
          apiVersion: 'facematch.io/v1alpha1',
          kind: 'PhotoBatch',
          metadata: { name: 'repack', namespace: NS, labels: { 'facematch.io/test-run': RUN } },
          spec: { eventId: EVENT, source: { event: {} }, concurrency: CONCURRENCY, serviceAddress: `127.0.0.1:${service.grpcPort}` },
        }),
      );
      const done = await waitFor('repack', (s) => isTrue(s, 'Complete') || isTrue(s, 'Failed'), 300_000);
      expect(isTrue(done, 'Complete'), JSON.stringify(done)).toBe(true);
      // Every recorded photo of the event: the gallery's selfies, the action shots of the first batch
      // (not the non-image: it was never recorded) and the copies of the resume test.
      const recorded = await eventPhotoCount(c);
      expect(recorded).toBe(recordedBefore);
      expect(recorded).toBeGreaterThanOrEqual(GALLERY.length + uploads.length - 1);
      expect(done.total).toBe(recorded);
      expect(done.processed).toBe(recorded);
      expect(done.failed).toBe(0);
      // Each photo processed once with success (a call that met a transient failure, e.g. Milvus
      // still loading the new namespace's collections, was retried by the controller).
      expect((await processPhotoCalls('OK')) - calls).toBe(recorded);
      expect(await photosOfGallery(c)).toEqual(old);
      // The new pack's vectors are there: the selfie finds action shots Obama is in.
      const found = (await rpc.searchFaces(probe)).matches.map((m) => m.photoId);
      expect(found.length).toBeGreaterThan(0);
      expect(old.get('facerec_obama')).toEqual(expect.arrayContaining(found));
    } finally {
      await dropNamespace(namespace);
    }
  }, 600_000);
});
