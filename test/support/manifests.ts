/**
 * Kubernetes manifests as data, for the deployment tests: parse a multi-document YAML stream (what
 * `helm template` and `kubectl kustomize` print), count objects per kind, and compare two renders
 * of the same setting (the kustomize overlays against the chart) object by object, ignoring only
 * what the two tools legitimately write differently.
 */
import { isDeepStrictEqual } from 'node:util';
import { parseAllDocuments } from 'yaml';

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string>; [key: string]: unknown };
  [key: string]: unknown;
}

/** Every object of a YAML stream (empty documents skipped); throws on a YAML error or an object without kind/name. */
export function parseManifests(text: string): K8sObject[] {
  const objects: K8sObject[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) throw new Error(`YAML: ${doc.errors.map((e) => e.message).join('; ')}`);
    const value = doc.toJS({ maxAliasCount: -1 }) as unknown;
    if (value === null || value === undefined) continue;
    const o = value as Partial<K8sObject>;
    if (typeof o.kind !== 'string' || typeof o.metadata?.name !== 'string' || typeof o.apiVersion !== 'string') {
      throw new Error(`an object without apiVersion, kind or metadata.name: ${JSON.stringify(value).slice(0, 200)}`);
    }
    objects.push(o as K8sObject);
  }
  return objects;
}

export const key = (o: K8sObject): string => `${o.kind}/${o.metadata.name}`;

/** "ConfigMap 2, Deployment 2, ..." (kinds sorted). */
export function countByKind(objects: K8sObject[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const o of objects) counts[o.kind] = (counts[o.kind] ?? 0) + 1;
  return Object.fromEntries(Object.entries(counts).sort(([a], [b]) => a.localeCompare(b)));
}

export const formatCounts = (counts: Record<string, number>): string =>
  Object.entries(counts)
    .map(([kind, n]) => `${kind} ${n}`)
    .join(', ');

const HELM_LABELS = ['helm.sh/chart', 'app.kubernetes.io/managed-by'];

/** Drops what only says which tool wrote the object: namespace, Helm's own labels, checksum annotations. */
function strip(value: unknown, inLabels = false, inAnnotations = false): unknown {
  if (Array.isArray(value)) return value.map((v) => strip(v));
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (inLabels && HELM_LABELS.includes(k)) continue;
    if (inAnnotations && k.startsWith('checksum/')) continue;
    out[k] = strip(v, k === 'labels', k === 'annotations');
  }
  if (inAnnotations && Object.keys(out).length === 0) return undefined;
  return out;
}

/** Without metadata.namespace, nor a RoleBinding subject's (none means the binding's namespace). */
function withoutNamespace(o: K8sObject): K8sObject {
  const { namespace: _namespace, ...metadata } = o.metadata;
  const out: K8sObject = { ...o, metadata };
  if (o.kind === 'RoleBinding' && Array.isArray(o.subjects)) {
    out.subjects = (o.subjects as Record<string, unknown>[]).map(({ namespace: _ns, ...subject }) => subject);
  }
  return out;
}

function replaceStrings(value: unknown, map: Map<string, string>): unknown {
  if (typeof value === 'string') return map.get(value) ?? value;
  if (Array.isArray(value)) return value.map((v) => replaceStrings(v, map));
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(Object.entries(value as Record<string, unknown>).map(([k, v]) => [k, replaceStrings(v, map)]));
}

/** Paths where a and b differ ("spec.template.spec.containers[0].image: x != y"), at most `limit`. */
export function differences(a: unknown, b: unknown, at = '', limit = 20): string[] {
  if (isDeepStrictEqual(a, b)) return [];
  const bothObjects = a !== null && b !== null && typeof a === 'object' && typeof b === 'object' && Array.isArray(a) === Array.isArray(b);
  if (!bothObjects) return [`${at || '.'}: ${JSON.stringify(a)} != ${JSON.stringify(b)}`];
  const out: string[] = [];
  const ka = Object.keys(a);
  const keys = [...new Set([...ka, ...Object.keys(b)])];
  for (const k of keys) {
    const path = Array.isArray(a) ? `${at}[${k}]` : at ? `${at}.${k}` : k;
    out.push(...differences((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], path, limit - out.length));
    if (out.length >= limit) break;
  }
  return out;
}

/**
 * Compares a kustomize render with a helm render of the same setting. Names kustomize generated with
 * a content hash ("facematch-secrets-5t2k9fbh8c", from a secretGenerator) are mapped back to the
 * chart's name wherever they are referenced; Secrets are compared by type and keys only (their values
 * are the operator's, or the chart's placeholders); every other object must be equal after strip().
 * Returns one line per difference (empty: they agree).
 */
export function compareRenders(kustomize: K8sObject[], chart: K8sObject[]): string[] {
  const chartKeys = new Set(chart.map(key));
  const renamed = new Map<string, string>();
  for (const o of kustomize) {
    const m = /^(.+)-[a-z0-9]{10}$/.exec(o.metadata.name);
    if (m?.[1] && !chartKeys.has(key(o)) && chartKeys.has(`${o.kind}/${m[1]}`)) renamed.set(o.metadata.name, m[1]);
  }
  const k = new Map(kustomize.map((o) => withoutNamespace(replaceStrings(o, renamed) as K8sObject)).map((o) => [key(o), o]));
  const h = new Map(chart.map((o) => withoutNamespace(o)).map((o) => [key(o), o]));
  const out: string[] = [];
  for (const name of [...new Set([...k.keys(), ...h.keys()])].sort()) {
    const a = k.get(name);
    const b = h.get(name);
    if (!a || !b) {
      out.push(`${name}: only in ${a ? 'the kustomize overlay' : 'the chart'}`);
      continue;
    }
    if (a.kind === 'Secret') {
      const keysOf = (s: K8sObject): string[] => [...Object.keys((s.data as object | undefined) ?? {}), ...Object.keys((s.stringData as object | undefined) ?? {})].sort();
      if (!isDeepStrictEqual(keysOf(a), keysOf(b))) out.push(`${name}: keys ${keysOf(a).join(',')} != ${keysOf(b).join(',')}`);
      if ((a.type ?? 'Opaque') !== (b.type ?? 'Opaque')) out.push(`${name}: type ${String(a.type)} != ${String(b.type)}`);
      continue;
    }
    out.push(...differences(strip(a), strip(b)).map((d) => `${name}: ${d}`));
  }
  return out;
}
