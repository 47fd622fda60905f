/**
 * PhotoBatch controller benchmark (`npm run bench:controller`): what the controller costs.
 *
 * The same BENCH_PHOTOS photos (default 1000: the non-crowd group photos and the portraits of
 * ../shared/testdata, cycled under distinct URLs of a loopback HTTP server) are processed twice by
 * one `facematch serve` (in this process: `test` pack, embedded stores in a temp directory):
 *
 *   1. direct: ProcessPhoto over gRPC from this process, BENCH_CONCURRENCY (default 4, the
 *      PhotoBatch default) calls at a time;
 *   2. controller: a PhotoBatch with the same URLs (`urls` source, same photo ids, same
 *      concurrency) applied to the kube-apiserver of `scripts/test-env up kube`, run by
 *      `facematch controller` as a child process (as the image runs it), from the apply until its
 *      status says Complete (polled every second).
 *
 * Reports photos/s of both and the controller's cost (1 - controller/direct), the controller
 * process's CPU time and share of the machine, its peak RSS, and its status writes per minute
 * (from its /metrics), and the CPU time kube-apiserver and etcd spent meanwhile. Prints a table and writes bench/out/controller.json.
 *
 * Needs the kube module of scripts/test-env (it reads `scripts/test-env env kube` itself).
 * Environment: BENCH_PHOTOS, BENCH_CONCURRENCY, FACEMATCH_INFERENCE_WORKERS (the service's).
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';
import { api, client, LOOPBACK_SERVICE, photoServer } from '../e2e/support.js';
import { serve } from '../src/bin/serve.js';
import { parseConfig } from '../src/config/config.js';
import { urlPhotoId } from '../src/controller/photo-id.js';
import { PhotoKind } from '../src/gen/facematch/v1/facematch.js';
import { createLogger } from '../src/telemetry/logger.js';
import { identities, MODELS_DIR } from '../test/support/shared.js';
import { GROUPS_DIR, REPO, cpuDescription, machineInfo, positiveEnv, round, table, writeReport } from './support.js';

const PHOTOS = positiveEnv('BENCH_PHOTOS', 1000);
const CONCURRENCY = positiveEnv('BENCH_CONCURRENCY', 4);
const CROWDS = new Set(['hpc203_selfie.jpg', 'insightface-rest_lumia.jpg']);
const RUN = `bench${Date.now().toString(36)}`;
const EVENT = `${RUN}-event`;
const NS = 'default';
const TICK_MS = 1000 / 100; // USER_HZ

function kubeEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  const out = execFileSync(path.join(REPO, 'scripts', 'test-env'), ['env', 'kube'], { encoding: 'utf8' });
  for (const line of out.split('\n')) {
    const at = line.indexOf('=');
    if (at > 0) env[line.slice(0, at)] = line.slice(at + 1);
  }
  if (!env.FACEMATCH_TEST_KUBECONFIG || !env.FACEMATCH_TEST_KUBECTL) throw new Error('the kube server is not up: scripts/test-env up kube');
  return env;
}

/**
 * CPU time of test-env's kube-apiserver and etcd (their pid files sit beside the kubeconfig), ms:
 * the API server's work for the controller (lease renewals, watch, status writes) is on this machine
 * too. Undefined when they cannot be read.
 */
async function kubeCpuMs(kubeconfig: string): Promise<number | undefined> {
  try {
    let total = 0;
    for (const name of ['apiserver.pid', 'etcd.pid']) {
      const pid = Number((await readFile(path.join(path.dirname(kubeconfig), name), 'utf8')).trim());
      total += (await procStats(pid)).cpuMs;
    }
    return total;
  } catch {
    return undefined;
  }
}

/** utime + stime of a process, ms, and its RSS and peak RSS, MiB (Linux /proc). */
async function procStats(pid: number): Promise<{ cpuMs: number; rssMiB: number; hwmMiB: number }> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const cpuMs = (Number(fields[11]) + Number(fields[12])) * TICK_MS;
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
  return { cpuMs, rssMiB: kb('VmRSS') / 1024, hwmMiB: kb('VmHWM') / 1024 };
}

async function metric(port: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  let total = 0;
  for (const line of text.split('\n')) if (line.startsWith(name) && !line.startsWith('#')) total += Number(line.split(' ').at(-1));
  return total;
}

async function main(): Promise<void> {
  const kube = kubeEnv();
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'facematch-bench-controller-'));
  const log = createLogger('warn');
  const config = parseConfig({
    ...LOOPBACK_SERVICE,
    FACEMATCH_MODEL_PACK: 'test',
    FACEMATCH_MODELS_DIR: MODELS_DIR,
    FACEMATCH_DATA_DIR: dataDir,
    ...(process.env.FACEMATCH_INFERENCE_WORKERS ? { FACEMATCH_INFERENCE_WORKERS: process.env.FACEMATCH_INFERENCE_WORKERS } : {}),
  });
  const serving = await serve(config, log);
  const c = client(serving.grpcPort);
  const rpc = api(c);

  // The photos: group photos (not the crowds) and portraits, cycled under distinct paths.
  const files = [
    ...(await readdir(GROUPS_DIR))
      .filter((f) => /\.(jpe?g|png)$/i.test(f) && !CROWDS.has(f))
      .map((f) => path.join(GROUPS_DIR, f)),
    ...identities().flatMap((i) => i.files.slice(1)),
  ];
  const extra: Record<string, Buffer> = {};
  for (let i = 0; i < PHOTOS; i++) extra[`/b/${String(i).padStart(5, '0')}.jpg`] = await readFile(files[i % files.length]!);
  const photos = await photoServer(extra);
  const urls = Object.keys(extra).map((p) => `${photos.base}${p}`);

  // The gallery, so that action shots are matched as in production.
  for (const id of identities()) {
    await rpc.processPhoto({ photoId: `${RUN}-selfie-${id.id}`, imageUrl: `${photos.base}/faces/${id.id}/${path.basename(id.files[0]!)}`, eventId: EVENT, kind: PhotoKind.PHOTO_KIND_FACECAM, userId: id.id });
  }

  // 1. Direct, at the same concurrency.
  let next = 0;
  const directStart = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      for (let i = next++; i < urls.length; i = next++) {
        await rpc.processPhoto({ photoId: urlPhotoId(urls[i]!), imageUrl: urls[i]!, eventId: EVENT, kind: PhotoKind.PHOTO_KIND_ACTION_SHOT, userId: '' });
      }
    }),
  );
  const directS = (performance.now() - directStart) / 1000;

  // 2. Through the controller.
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(kube.FACEMATCH_TEST_KUBECONFIG!);
  const objects = kubeConfig.makeApiClient(CustomObjectsApi);
  execFileSync(kube.FACEMATCH_TEST_KUBECTL!, ['--kubeconfig', kube.FACEMATCH_TEST_KUBECONFIG!, 'apply', '-f', path.join(REPO, 'k8s', 'crds', 'photobatches.facematch.io.yaml')]);
  execFileSync(kube.FACEMATCH_TEST_KUBECTL!, ['--kubeconfig', kube.FACEMATCH_TEST_KUBECONFIG!, 'wait', '--for=condition=Established', 'crd/photobatches.facematch.io']);
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO, 'src/bin/cli.ts'), 'controller'], {
    cwd: REPO,
    env: {
      ...process.env,
      KUBECONFIG: kube.FACEMATCH_TEST_KUBECONFIG,
      FACEMATCH_CONTROLLER_NAMESPACE: NS,
      FACEMATCH_CONTROLLER_LEASE_NAMESPACE: NS,
      FACEMATCH_CONTROLLER_LEASE_NAME: `lease-${RUN}`,
      FACEMATCH_CONTROLLER_HTTP_PORT: '0',
      FACEMATCH_HOST: '127.0.0.1',
      FACEMATCH_LOG_LEVEL: 'info',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const httpPort = await new Promise<number>((resolve, reject) => {
    // Its log (JSON lines on stderr) names the port it bound.
    createInterface({ input: child.stderr }).on('line', (line) => {
      const m = /"httpPort":(\d+)/.exec(line);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`facematch controller exited with ${code}`)));
  });
  console.error(`direct: ${PHOTOS} photos in ${directS.toFixed(1)} s; controller on :${httpPort}`);
  // Let it take the lease and list before the clock starts.
  const leading = Date.now() + 30_000;
  while ((await metric(httpPort, 'facematch_controller_leader')) !== 1 && Date.now() < leading) await new Promise((r) => setTimeout(r, 100));
  const before = await procStats(child.pid!);
  const kubeBefore = await kubeCpuMs(kube.FACEMATCH_TEST_KUBECONFIG!);
  const writesBefore = await metric(httpPort, 'facematch_controller_status_writes_total');
  const name = `bench-${RUN}`;
  console.error('controller leading; applying the PhotoBatch');
  const controllerStart = performance.now();
  await objects.createNamespacedCustomObject({
    group: 'facematch.io',
    version: 'v1alpha1',
    namespace: NS,
    plural: 'photobatches',
    body: { apiVersion: 'facematch.io/v1alpha1', kind: 'PhotoBatch', metadata: { name }, spec: { eventId: EVENT, source: { urls }, concurrency: CONCURRENCY, serviceAddress: `127.0.0.1:${serving.grpcPort}` } },
  });
  let status: { processed?: number; failed?: number; conditions?: { type: string; status: string }[] } = {};
  let peakRss = 0;
  for (;;) {
    const obj = (await objects.getNamespacedCustomObject({ group: 'facematch.io', version: 'v1alpha1', namespace: NS, plural: 'photobatches', name })) as { status?: typeof status };
    status = obj.status ?? {};
    peakRss = Math.max(peakRss, (await procStats(child.pid!)).rssMiB);
    if ((status.conditions ?? []).some((x) => (x.type === 'Complete' || x.type === 'Failed') && x.status === 'True')) break;
    // Once a second: the bench's own reads load the API server too (the controller's watch does not wait for them).
    await new Promise((r) => setTimeout(r, 1000));
  }
  const controllerS = (performance.now() - controllerStart) / 1000;
  const after = await procStats(child.pid!);
  const kubeAfter = await kubeCpuMs(kube.FACEMATCH_TEST_KUBECONFIG!);
  const writes = (await metric(httpPort, 'facematch_controller_status_writes_total')) - writesBefore;

  await objects.deleteNamespacedCustomObject({ group: 'facematch.io', version: 'v1alpha1', namespace: NS, plural: 'photobatches', name });
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
  c.close();
  await serving.stop();
  await photos.close();
  await rm(dataDir, { recursive: true, force: true });

  const directRate = PHOTOS / directS;
  const controllerRate = PHOTOS / controllerS;
  const cpuMs = after.cpuMs - before.cpuMs;
  const report = {
    machine: machineInfo(),
    photos: PHOTOS,
    concurrency: CONCURRENCY,
    direct: { seconds: round(directS, 2), photos_per_s: round(directRate, 2) },
    controller: {
      seconds: round(controllerS, 2),
      photos_per_s: round(controllerRate, 2),
      processed: status.processed ?? 0,
      failed: status.failed ?? 0,
      cost: round(1 - controllerRate / directRate, 4),
      cpu_ms: round(cpuMs, 0),
      cpu_share_of_machine: round(cpuMs / (controllerS * 1000 * os.cpus().length), 4),
      cpu_ms_per_photo: round(cpuMs / PHOTOS, 2),
      rss_mib: round(after.rssMiB, 1),
      peak_rss_mib: round(Math.max(peakRss, after.hwmMiB), 1),
      api_server_and_etcd_cpu_ms: kubeBefore !== undefined && kubeAfter !== undefined ? round(kubeAfter - kubeBefore, 0) : null,
      status_writes: writes,
      status_writes_per_minute: round(writes / (controllerS / 60), 1),
    },
  };
  console.log(`${cpuDescription()}; ${PHOTOS} photos at concurrency ${CONCURRENCY}`);
  console.log(
    table(
      ['path', 'seconds', 'photos/s', 'controller CPU', 'CPU share', 'API server+etcd CPU', 'peak RSS', 'status writes/min'],
      [
        ['direct gRPC', report.direct.seconds.toFixed(1), report.direct.photos_per_s.toFixed(2), '-', '-', '-', '-', '-'],
        [
          'PhotoBatch',
          report.controller.seconds.toFixed(1),
          report.controller.photos_per_s.toFixed(2),
          `${(cpuMs / 1000).toFixed(1)} s`,
          `${(report.controller.cpu_share_of_machine * 100).toFixed(1)}%`,
          report.controller.api_server_and_etcd_cpu_ms === null ? '?' : `${(report.controller.api_server_and_etcd_cpu_ms / 1000).toFixed(1)} s`,
          `${report.controller.peak_rss_mib.toFixed(0)} MiB`,
          report.controller.status_writes_per_minute.toFixed(1),
        ],
      ],
    ),
  );
  console.log(`controller cost: ${(report.controller.cost * 100).toFixed(1)}% of direct throughput (goal: under 5%)`);
  console.log(`wrote ${await writeReport('controller.json', report)}`);
}

await main();
