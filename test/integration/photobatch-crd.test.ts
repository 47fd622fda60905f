/**
 * The PhotoBatch CRD (k8s/crds/photobatches.facematch.io.yaml) on a real kube-apiserver, through
 * kubectl as an operator uses it: the CRD applies and becomes Established, a valid PhotoBatch is
 * accepted, a PhotoBatch with a bad field is refused by the API server with a message that names the
 * field, and `kubectl get photobatches` shows the printer columns.
 *
 * Needs `scripts/test-env up kube` (etcd + kube-apiserver on loopback; npm run test:integration sets
 * FACEMATCH_TEST_KUBECONFIG and FACEMATCH_TEST_KUBECTL when it answers; a KUBECONFIG of the user's own
 * is never used, so the test cannot reach a real cluster); skipped otherwise. Works in the default
 * namespace under names and a label of its own (a run id), and deletes what it made: test-env runs no
 * namespace controller, so a deleted namespace would stay Terminating for good. The CRD stays
 * installed (others may use it; applying it again is a no-op).
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KUBECONFIG, KUBECTL, kubectl as makeKubectl, type Kubectl } from '../support/kubectl.js';
import { REPO } from '../support/shared.js';

const REAL = Boolean(KUBECONFIG && KUBECTL);
if (!REAL) console.warn('photobatch-crd.test.ts skipped: needs FACEMATCH_TEST_KUBECONFIG and FACEMATCH_TEST_KUBECTL (scripts/test-env up kube)');

const CRD = path.join(REPO, 'k8s', 'crds', 'photobatches.facematch.io.yaml');
const RUN = `pb${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
const NAMESPACE = 'default';
const LABEL = `facematch.io/test-run=${RUN}`;

let k: Kubectl;
const kubectl = (args: string[], input?: string): ReturnType<Kubectl['run']> => k.run(args, input);

/** A PhotoBatch manifest (JSON is YAML) in the test's namespace. */
function photoBatch(name: string, spec: Record<string, unknown>): string {
  return JSON.stringify({ apiVersion: 'facematch.io/v1alpha1', kind: 'PhotoBatch', metadata: { name, namespace: NAMESPACE, labels: { 'facematch.io/test-run': RUN } }, spec });
}

const VALID = { eventId: `${RUN}-event`, source: { s3: { bucket: 'facematch-photos', prefix: 'events/marathon/' } }, concurrency: 8 };

describe.skipIf(!REAL)('the PhotoBatch CRD on kube-apiserver', () => {
  beforeAll(async () => {
    k = await makeKubectl();
    const applied = await kubectl(['apply', '-f', CRD]);
    expect(applied.stderr).toBe('');
    expect(applied.stdout).toMatch(/customresourcedefinition\.apiextensions\.k8s\.io\/photobatches\.facematch\.io (created|configured|unchanged)/);
    const established = await kubectl(['wait', '--for=condition=Established', '--timeout=60s', 'crd/photobatches.facematch.io']);
    expect(established.stderr).toBe('');
    expect(established.code).toBe(0);
  });

  afterAll(async () => {
    if (k) {
      await kubectl(['delete', 'photobatches', '-n', NAMESPACE, '-l', LABEL, '--ignore-not-found']);
      await k.close();
    }
  });

  it('accepts a valid PhotoBatch (server-side dry run), with the defaults filled in', async () => {
    const dry = await kubectl(['apply', '--dry-run=server', '-o', 'json', '-f', '-'], photoBatch(`${RUN}-valid`, VALID));
    expect(dry.stderr).toBe('');
    expect(dry.code).toBe(0);
    const object = JSON.parse(dry.stdout) as { spec: Record<string, unknown> & { source: { s3: Record<string, unknown> } } };
    expect(object.spec).toMatchObject({ eventId: VALID.eventId, kind: 'ACTION_SHOT', concurrency: 8, suspend: false });
    // A dry run stores nothing.
    const get = await kubectl(['get', 'photobatch', `${RUN}-valid`, '-n', NAMESPACE]);
    expect(get.code).not.toBe(0);
    expect(get.stderr).toMatch(/NotFound|not found/);
  });

  it.each([
    ['two sources', { ...VALID, source: { s3: { bucket: 'facematch-photos' }, urls: ['https://example.com/a.jpg'] } }, 'spec.source', 'exactly one of s3, urls, event'],
    ['a bad event id', { ...VALID, eventId: 'not an id!' }, 'spec.eventId', 'should match'],
    ['concurrency 0', { ...VALID, concurrency: 0 }, 'spec.concurrency', 'greater than or equal to 1'],
    ['a FACECAM batch from s3 without a user', { ...VALID, kind: 'FACECAM' }, 'spec.userId', 'needs spec.userId'],
  ])('refuses a PhotoBatch with %s, naming the field', async (_what, spec, field, message) => {
    const refused = await kubectl(['apply', '--dry-run=server', '-f', '-'], photoBatch(`${RUN}-bad`, spec));
    expect(refused.code).not.toBe(0);
    expect(refused.stdout).toBe('');
    expect(refused.stderr).toContain(`The PhotoBatch "${RUN}-bad" is invalid`);
    expect(refused.stderr).toContain(`${field}:`);
    expect(refused.stderr).toContain(message);
  });

  it('lists applied PhotoBatches with the printer columns', async () => {
    const applied = await kubectl(['apply', '-f', '-'], photoBatch(`${RUN}-listed`, VALID));
    expect(applied.stderr).toBe('');
    expect(applied.stdout).toContain(`photobatch.facematch.io/${RUN}-listed created`);
    const listed = await kubectl(['get', 'photobatches', '-n', NAMESPACE, '-l', LABEL]);
    expect(listed.stderr).toBe('');
    const [header, ...rows] = listed.stdout.trim().split('\n');
    expect(header?.trim().split(/\s+/)).toEqual(['NAME', 'EVENT', 'PROGRESS', 'MATCHED', 'FAILED', 'STATUS', 'AGE']);
    expect(rows).toHaveLength(1);
    expect(rows[0]?.trim().split(/\s+/).slice(0, 2)).toEqual([`${RUN}-listed`, VALID.eventId]);
    // The short name and the category work too.
    const short = await kubectl(['get', 'pb', '-n', NAMESPACE, '-l', LABEL, '-o', 'name']);
    expect(short.stdout.trim()).toBe(`photobatch.facematch.io/${RUN}-listed`);
    const category = await kubectl(['get', 'facematch', '-n', NAMESPACE, '-l', LABEL, '-o', 'name']);
    expect(category.stdout.trim()).toBe(`photobatch.facematch.io/${RUN}-listed`);
  });
});
