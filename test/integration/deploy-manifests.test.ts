/**
 * Every shipped Kubernetes manifest, proven on a real control plane: the kube-apiserver and
 * kube-controller-manager of `scripts/test-env up kube` (no scheduler, no kubelet).
 *
 * - `helm lint --strict` of charts/facematch, with its defaults and with each value set below.
 * - Each render (`kubectl kustomize` of every overlay in kustomize/overlays, `helm template` of the
 *   chart with each value set) in a fresh namespace of its own: every object accepted by
 *   `kubectl apply --dry-run=server`, then applied for real, and the controller manager seen to
 *   turn every Deployment into a ReplicaSet and its Pods and every StatefulSet into its Pods and
 *   PersistentVolumeClaims (all Pending: nothing schedules or runs them). One summary line per render
 *   (objects per kind, what the controllers created), also written to reports/deploy-manifests.json.
 * - Drift: the committed kustomize/base is what `npm run render:k8s` writes now; the Envoy
 *   ConfigMap carries k8s/envoy/envoy.yaml; the chart's CRD is k8s/crds/'s; each overlay equals the
 *   chart rendered with the values beside it (kustomize/overlays/X/helm-values.yaml), object by object
 *   (images, ports, probes, env, resources, replicas...), Secrets by their keys.
 * - `helm test` needs a kubelet: its hook Pod is checked to render with `helm.sh/hook: test` and to be
 *   accepted by the server.
 *
 * The CRD is cluster-scoped and shared (photobatch-crd.test.ts uses it too): applied once, kept.
 * Namespaces and other cluster-scoped objects are named after the run and deleted at the end (the
 * controller manager's namespace controller finishes the deletion). Skipped when kube is not up.
 */
import { cp, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { HELM, helm as makeHelm, type Helm } from '../support/helm.js';
import { KUBECONFIG, KUBECTL, kubectl as makeKubectl, type Kubectl } from '../support/kubectl.js';
import { compareRenders, countByKind, formatCounts, key, parseManifests, type K8sObject } from '../support/manifests.js';
import { REPO } from '../support/shared.js';

const REAL = Boolean(KUBECONFIG && KUBECTL && HELM);
if (!REAL) console.warn('deploy-manifests.test.ts skipped: needs FACEMATCH_TEST_KUBECONFIG, FACEMATCH_TEST_KUBECTL and FACEMATCH_TEST_HELM (scripts/test-env up kube)');

const CHART = path.join(REPO, 'charts', 'facematch');
const KUSTOMIZE = path.join(REPO, 'kustomize');
const OVERLAYS = ['cpu', 'gpu', 'dev'] as const;
const CRD_FILE = path.join(REPO, 'k8s', 'crds', 'photobatches.facematch.io.yaml');
const ENVOY_FILE = path.join(REPO, 'k8s', 'envoy', 'envoy.yaml');
const RELEASE = 'facematch';
const RUN = `dm${Date.now().toString(36)}${Math.floor(Math.random() * 1e4).toString(36)}`;
const RUN_LABEL = 'facematch.io/test-run';

/** Value sets of the chart beyond the overlays' equivalents (kustomize/overlays/X/helm-values.yaml). */
const VALUE_SETS: Record<string, Record<string, unknown>> = {
  defaults: {},
  // Every store outside the cluster: a managed PostgreSQL, any S3, Zilliz Cloud, an OTLP collector.
  'external-stores': {
    postgresql: { enabled: false, external: { existingSecret: 'managed-postgresql', urlKey: 'url' } },
    minio: { enabled: false, external: { endpoint: 'https://s3.eu-west-1.amazonaws.com', region: 'eu-west-1', bucket: 'facematch-photos', existingSecret: 'aws-s3', accessKeyKey: 'AWS_ACCESS_KEY_ID', secretKeyKey: 'AWS_SECRET_ACCESS_KEY' } },
    milvus: { enabled: false, external: { address: 'https://in03-0123456789abcdef.serverless.gcp-us-west1.cloud.zilliz.com', existingSecret: 'zilliz', tokenKey: 'api-key' } },
    jaeger: { enabled: false, external: { otlpEndpoint: 'http://otel-collector.observability:4318' } },
  },
  'controller-off': { controller: { enabled: false } },
  // The controller watches every namespace: a ClusterRole and a ClusterRoleBinding.
  'controller-all-namespaces': { controller: { watchAllNamespaces: true } },
};

interface Render {
  id: string;
  source: string;
  objects: K8sObject[];
}

interface Summary {
  render: string;
  source: string;
  objects: number;
  kinds: Record<string, number>;
  created: Record<string, number>;
}

let k: Kubectl;
let h: Helm;
let work: string;
let clusterScoped: Set<string>;
const summaries: Summary[] = [];
const namespaces: string[] = [];

const run = promisify(execFile);

async function helmValues(overlay: string): Promise<Record<string, unknown>> {
  return (parseYaml(await readFile(path.join(KUSTOMIZE, 'overlays', overlay, 'helm-values.yaml'), 'utf8')) as Record<string, unknown> | null) ?? {};
}

async function valuesFile(name: string, values: Record<string, unknown>): Promise<string> {
  const file = path.join(work, `values-${name}.yaml`);
  await writeFile(file, stringifyYaml(values));
  return file;
}

/** `helm template` of the chart with VALUES, in NAMESPACE, CRDs included; tests (hooks) only when asked. */
async function helmTemplate(name: string, values: Record<string, unknown>, namespace: string, withTests = false): Promise<K8sObject[]> {
  const args = ['template', RELEASE, CHART, '--namespace', namespace, '--include-crds', '-f', await valuesFile(name, values)];
  if (!withTests) args.push('--skip-tests');
  return parseManifests(await h.ok(args));
}

/**
 * `kubectl kustomize` of an overlay, from a copy of kustomize/ in which every `*.env.example` is
 * copied to its `*.env` (the operator's credentials files, gitignored; the examples hold the keys).
 */
async function kustomizeBuild(overlay: string): Promise<K8sObject[]> {
  const copy = path.join(work, 'kustomize');
  await rm(copy, { recursive: true, force: true });
  await cp(KUSTOMIZE, copy, { recursive: true, filter: (source) => !source.endsWith('.env') });
  for (const entry of await readdir(copy, { recursive: true })) {
    if (entry.endsWith('.env.example')) await cp(path.join(copy, entry), path.join(copy, entry.replace(/\.example$/, '')));
  }
  return parseManifests(await k.ok(['kustomize', path.join(copy, 'overlays', overlay)]));
}

const toStream = (objects: K8sObject[]): string => objects.map((o) => JSON.stringify(o)).join('\n---\n');

interface Item {
  kind: string;
  metadata: { name: string; uid: string; ownerReferences?: { uid: string }[] };
  spec?: { replicas?: number; podManagementPolicy?: string; volumeClaimTemplates?: { metadata: { name: string } }[]; nodeName?: string };
  status?: { phase?: string };
}

/** What the controller manager made of the workloads, once it is all there; throws what is missing after the timeout. */
async function waitForWorkloads(namespace: string, timeoutMs = 90_000): Promise<Record<string, number>> {
  const deadline = Date.now() + timeoutMs;
  let missing: string[] = [];
  for (;;) {
    const items = (JSON.parse(await k.ok(['get', 'deployments,replicasets,statefulsets,pods,persistentvolumeclaims,jobs', '-n', namespace, '-o', 'json'])) as { items: Item[] }).items;
    const of = (kind: string): Item[] => items.filter((i) => i.kind === kind);
    const ownedBy = (kind: string, owner: Item): Item[] => of(kind).filter((i) => i.metadata.ownerReferences?.some((r) => r.uid === owner.metadata.uid));
    missing = [];
    for (const d of of('Deployment')) {
      const sets = ownedBy('ReplicaSet', d);
      const pods = sets.flatMap((rs) => ownedBy('Pod', rs));
      const want = d.spec?.replicas ?? 1;
      if (sets.length === 0) missing.push(`Deployment ${d.metadata.name}: no ReplicaSet`);
      else if (pods.length !== want) missing.push(`Deployment ${d.metadata.name}: ${pods.length} of ${want} Pods`);
    }
    for (const s of of('StatefulSet')) {
      const replicas = s.spec?.replicas ?? 1;
      // OrderedReady (the default) makes pod-0 and waits for it to be Ready, which needs a kubelet.
      const want = s.spec?.podManagementPolicy === 'Parallel' ? replicas : Math.min(replicas, 1);
      const pods = ownedBy('Pod', s);
      if (pods.length !== want) missing.push(`StatefulSet ${s.metadata.name}: ${pods.length} of ${want} Pods`);
      const claims = new Set(of('PersistentVolumeClaim').map((c) => c.metadata.name));
      for (let ordinal = 0; ordinal < want; ordinal++) {
        for (const t of s.spec?.volumeClaimTemplates ?? []) {
          const claim = `${t.metadata.name}-${s.metadata.name}-${ordinal}`;
          if (!claims.has(claim)) missing.push(`StatefulSet ${s.metadata.name}: no PersistentVolumeClaim ${claim}`);
        }
      }
    }
    for (const j of of('Job')) if (ownedBy('Pod', j).length === 0) missing.push(`Job ${j.metadata.name}: no Pod`);
    const notPending = of('Pod').filter((p) => p.status?.phase !== 'Pending' || p.spec?.nodeName);
    if (missing.length === 0) {
      expect(notPending.map((p) => p.metadata.name), 'nothing can schedule or run a Pod here').toEqual([]);
      return countByKind(items.filter((i) => ['ReplicaSet', 'Pod', 'PersistentVolumeClaim'].includes(i.kind)) as unknown as K8sObject[]);
    }
    if (Date.now() > deadline) throw new Error(`after ${timeoutMs / 1000}s in ${namespace}: ${missing.join('; ')}`);
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

async function createNamespace(id: string): Promise<string> {
  const namespace = `${RUN}-${id}`.slice(0, 63).replace(/-+$/, '');
  await k.ok(['create', 'namespace', namespace]);
  await k.ok(['label', 'namespace', namespace, `${RUN_LABEL}=${RUN}`]);
  namespaces.push(namespace);
  return namespace;
}

/**
 * The controller's ServiceAccount, as the API server authorises it: what the controller needs
 * (PhotoBatches, their status, its Lease, Events) and nothing it does not (Secrets, Pods, deleting
 * PhotoBatches, other Leases).
 */
async function checkControllerRbac(render: Render, namespace: string): Promise<void> {
  const sa = render.objects.find((o) => o.kind === 'ServiceAccount' && o.metadata.name.endsWith('-controller'));
  const controller = render.objects.find((o) => o.kind === 'Deployment' && o.metadata.name.endsWith('-controller'));
  if (!controller) return;
  expect(sa, `${render.id}: the controller's ServiceAccount`).toBeDefined();
  const config = render.objects.find((o) => o.kind === 'ConfigMap' && (o.data as Record<string, string> | undefined)?.FACEMATCH_CONTROLLER_LEASE_NAME);
  const lease = (config?.data as Record<string, string> | undefined)?.FACEMATCH_CONTROLLER_LEASE_NAME;
  expect(lease, `${render.id}: FACEMATCH_CONTROLLER_LEASE_NAME in a ConfigMap`).toBeTruthy();
  const can = async (args: string[]): Promise<string> => {
    const r = await k.run(['auth', 'can-i', ...args, '-n', namespace, '--as', `system:serviceaccount:${namespace}:${sa?.metadata.name ?? ''}`]);
    return r.stdout.trim();
  };
  const allowed = [['list', 'photobatches.facematch.io'], ['watch', 'photobatches.facematch.io'], ['patch', 'photobatches.facematch.io', '--subresource=status'], ['create', 'leases.coordination.k8s.io'], ['update', `leases.coordination.k8s.io/${lease ?? ''}`], ['create', 'events']];
  const denied = [['delete', 'photobatches.facematch.io'], ['update', 'photobatches.facematch.io'], ['get', 'secrets'], ['create', 'pods'], ['update', 'leases.coordination.k8s.io/someone-else']];
  for (const a of allowed) expect(`${a.join(' ')}: ${await can(a)}`).toBe(`${a.join(' ')}: yes`);
  for (const d of denied) expect(`${d.join(' ')}: ${await can(d)}`).toBe(`${d.join(' ')}: no`);
}

/**
 * Dry run, then a real apply of one render in its namespace, then what the controllers made. The
 * CRD is skipped in the real apply (applied once in beforeAll); other cluster-scoped objects are
 * applied and deleted again here.
 */
async function proveRender(render: Render, namespace: string): Promise<void> {
  const dry = await k.run(['apply', '--dry-run=server', '-n', namespace, '-f', '-'], toStream(render.objects));
  expect(dry.stderr, `${render.id}: the server refused objects`).toBe('');
  expect(dry.code).toBe(0);
  expect(dry.stdout.split('\n').filter((l) => l.endsWith('(server dry run)'))).toHaveLength(render.objects.length);

  const real = render.objects.filter((o) => o.kind !== 'CustomResourceDefinition');
  const cluster = real.filter((o) => clusterScoped.has(o.kind));
  const applied = await k.run(['apply', '-n', namespace, '-f', '-'], toStream(real));
  expect(applied.stderr, `${render.id}: the real apply failed`).toBe('');
  expect(applied.code).toBe(0);
  try {
    await checkControllerRbac(render, namespace);
    const created = await waitForWorkloads(namespace);
    const kinds = countByKind(render.objects);
    summaries.push({ render: render.id, source: render.source, objects: render.objects.length, kinds, created });
    console.log(`deploy-manifests: ${render.id}: ${render.objects.length} objects accepted (${formatCounts(kinds)}); the controllers made ${formatCounts(created) || 'nothing'}`);
  } finally {
    for (const o of cluster) await k.run(['delete', o.kind, o.metadata.name, '--ignore-not-found', '--wait=false']);
  }
}

describe.skipIf(!REAL)('the shipped manifests on kube-apiserver + kube-controller-manager', () => {
  beforeAll(async () => {
    work = await mkdtemp(path.join(tmpdir(), 'facematch-deploy-'));
    k = await makeKubectl();
    h = await makeHelm();
    const resources = await k.ok(['api-resources', '--namespaced=false', '--no-headers']);
    clusterScoped = new Set(resources.split('\n').filter(Boolean).map((l) => l.trim().split(/\s+/).at(-1) ?? ''));
    expect(clusterScoped.has('ClusterRole')).toBe(true);
    await k.ok(['apply', '-f', CRD_FILE]);
    await k.ok(['wait', '--for=condition=Established', '--timeout=60s', 'crd/photobatches.facematch.io']);
  });

  afterAll(async () => {
    if (k) {
      for (const namespace of namespaces) await k.run(['delete', 'namespace', namespace, '--ignore-not-found', '--wait=false']);
      // The namespace controller deletes what is inside, then the namespace.
      const gone = await Promise.all(namespaces.map((n) => k.run(['wait', '--for=delete', `namespace/${n}`, '--timeout=120s'])));
      for (const [i, r] of gone.entries()) if (r.code !== 0 && !/not found/i.test(r.stderr)) console.warn(`deploy-manifests: namespace ${namespaces[i]} is not gone: ${r.stderr.trim()}`);
      await k.close();
    }
    await h?.close();
    if (work) await rm(work, { recursive: true, force: true });
    if (summaries.length > 0) {
      mkdirSync(path.join(REPO, 'reports'), { recursive: true });
      writeFileSync(path.join(REPO, 'reports', 'deploy-manifests.json'), `${JSON.stringify({ run: RUN, renders: summaries }, null, 2)}\n`);
    }
  });

  describe('helm lint --strict', () => {
    it('passes with the defaults and with every value set', async () => {
      const sets: [string, Record<string, unknown>][] = [...Object.entries(VALUE_SETS), ...(await Promise.all(OVERLAYS.map(async (o): Promise<[string, Record<string, unknown>]> => [`${o}-overlay-values`, await helmValues(o)])))];
      for (const [name, values] of sets) {
        const lint = await h.run(['lint', '--strict', CHART, '-f', await valuesFile(name, values)]);
        expect(lint.code, `helm lint --strict (${name}):\n${lint.stdout}${lint.stderr}`).toBe(0);
        expect(lint.stdout).toMatch(/1 chart\(s\) linted, 0 chart\(s\) failed/);
      }
    });
  });

  describe("Milvus's time tick", () => {
    const milvusEnv = (objects: K8sObject[]): Record<string, unknown> => {
      const sts = objects.find((o) => o.kind === 'StatefulSet' && o.metadata.name.endsWith('-milvus')) as
        | (K8sObject & { spec: { template: { spec: { containers: { name: string; env?: { name: string; value?: unknown }[] }[] } } } })
        | undefined;
      const container = sts?.spec.template.spec.containers.find((c) => c.name === 'milvus');
      return Object.fromEntries((container?.env ?? []).map((e) => [e.name, e.value]));
    };

    it('is 50 ms by default (Milvus: 200), set by milvus.timeTickIntervalMs, and a value that is not a positive whole number is refused', async () => {
      expect(milvusEnv(await helmTemplate('tick-default', {}, 'default')).PROXY_TIMETICKINTERVAL).toBe('50');
      expect(milvusEnv(await helmTemplate('tick-200', { milvus: { timeTickIntervalMs: 200 } }, 'default')).PROXY_TIMETICKINTERVAL).toBe('200');
      for (const bad of [0, -5, 'fast', 12.5]) {
        const r = await h.run(['template', RELEASE, CHART, '--skip-tests', '-f', await valuesFile('tick-bad', { milvus: { timeTickIntervalMs: bad } })]);
        expect(r.code, `timeTickIntervalMs ${JSON.stringify(bad)}`).not.toBe(0);
        expect(r.stderr).toContain(`milvus.timeTickIntervalMs must be a positive whole number of milliseconds (got ${bad})`);
      }
    });
  });

  describe('every render is accepted, applied, and becomes ReplicaSets, Pods and claims', () => {
    for (const overlay of OVERLAYS) {
      it(`kubectl kustomize kustomize/overlays/${overlay}`, async () => {
        const namespace = await createNamespace(`k-${overlay}`);
        await proveRender({ id: `kustomize ${overlay}`, source: `kubectl kustomize kustomize/overlays/${overlay}`, objects: await kustomizeBuild(overlay) }, namespace);
      }, 240_000);
    }
    for (const [name, values] of Object.entries(VALUE_SETS)) {
      it(`helm template with the ${name} values`, async () => {
        const namespace = await createNamespace(`h-${name}`);
        await proveRender({ id: `helm ${name}`, source: `helm template ${RELEASE} charts/facematch ${JSON.stringify(values)}`, objects: await helmTemplate(name, values, namespace) }, namespace);
      }, 240_000);
    }
    for (const overlay of ['gpu', 'dev'] as const) {
      it(`helm template with the values of the ${overlay} overlay`, async () => {
        const namespace = await createNamespace(`h-${overlay}`);
        const values = await helmValues(overlay);
        await proveRender({ id: `helm ${overlay}`, source: `helm template ${RELEASE} charts/facematch -f kustomize/overlays/${overlay}/helm-values.yaml`, objects: await helmTemplate(overlay, values, namespace) }, namespace);
      }, 240_000);
    }
  });

  describe('drift between the chart, the kustomize tree and k8s/', () => {
    it('the committed kustomize/base is what `npm run render:k8s` writes now', async () => {
      const out = path.join(work, 'base');
      await run(process.execPath, [path.join(REPO, 'scripts', 'render-kustomize-base.mjs'), '--out', out], { env: { ...process.env, FACEMATCH_TEST_HELM: HELM } });
      const committed = (await readdir(path.join(KUSTOMIZE, 'base'))).sort();
      const fresh = (await readdir(out)).sort();
      expect(committed).toEqual(fresh);
      for (const file of fresh) {
        expect(await readFile(path.join(KUSTOMIZE, 'base', file), 'utf8'), `kustomize/base/${file} differs from a fresh render: run npm run render:k8s`).toBe(await readFile(path.join(out, file), 'utf8'));
      }
    }, 60_000);

    it("the chart's CRD and the base's are k8s/crds/photobatches.facematch.io.yaml", async () => {
      const source = parseManifests(await readFile(CRD_FILE, 'utf8'));
      const fromChart = (await helmTemplate('crd', {}, 'default')).filter((o) => o.kind === 'CustomResourceDefinition');
      const fromBase = parseManifests(await k.ok(['kustomize', path.join(KUSTOMIZE, 'base')])).filter((o) => o.kind === 'CustomResourceDefinition');
      expect(fromChart).toEqual(source);
      expect(fromBase).toEqual(source);
    });

    it("the Envoy ConfigMap's envoy.yaml is k8s/envoy/envoy.yaml", async () => {
      const envoy = await readFile(ENVOY_FILE, 'utf8');
      const maps = (await helmTemplate('envoy', {}, 'default')).filter((o) => o.kind === 'ConfigMap' && typeof (o.data as Record<string, string> | undefined)?.['envoy.yaml'] === 'string');
      expect(maps.map(key)).toHaveLength(1);
      expect((maps[0]?.data as Record<string, string>)['envoy.yaml']).toBe(envoy);
    });

    for (const overlay of OVERLAYS) {
      it(`the ${overlay} overlay equals the chart with kustomize/overlays/${overlay}/helm-values.yaml`, async () => {
        const fromOverlay = await kustomizeBuild(overlay);
        const fromChart = await helmTemplate(overlay, await helmValues(overlay), 'default');
        const diff = compareRenders(fromOverlay, fromChart);
        expect(diff, `kustomize/overlays/${overlay} and the chart disagree:\n${diff.join('\n')}`).toEqual([]);
      });
    }
  });

  describe('helm test (no kubelet to run it)', () => {
    it('the test hook Pod renders with helm.sh/hook: test, reaches the service through Envoy, and is accepted by the server', async () => {
      const namespace = await createNamespace('h-test-hook');
      const objects = await helmTemplate('test-hook', {}, namespace, true);
      const hooks = objects.filter((o) => o.metadata.annotations?.['helm.sh/hook']?.split(',').includes('test'));
      expect(hooks.map(key)).not.toEqual([]);
      for (const hook of hooks) expect(hook.kind).toBe('Pod');
      // The Service in front of Envoy: the one whose port leads to the sidecar's envoy-grpc port.
      const envoyPort = (o: K8sObject): { port: number } | undefined =>
        ((o.spec as { ports?: { port: number; targetPort?: unknown }[] } | undefined)?.ports ?? []).find((p) => p.targetPort === 'envoy-grpc' || p.targetPort === 50050);
      const envoy = objects.filter((o) => o.kind === 'Service' && envoyPort(o) && (o.spec as { clusterIP?: string }).clusterIP !== 'None');
      expect(envoy.map(key), 'one (non-headless) Service in front of Envoy').toHaveLength(1);
      const address = `${envoy[0]?.metadata.name ?? ''}.${namespace}.svc:${envoyPort(envoy[0] as K8sObject)?.port ?? ''}`;
      expect(JSON.stringify(hooks), `the hook calls ${address}`).toContain(address);
      const dry = await k.run(['apply', '--dry-run=server', '-n', namespace, '-f', '-'], toStream(hooks));
      expect(dry.stderr).toBe('');
      expect(dry.stdout.split('\n').filter((l) => l.endsWith('(server dry run)'))).toHaveLength(hooks.length);
    });
  });
});
