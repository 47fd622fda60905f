/**
 * `npm run test:integration`: test/integration/** against real servers, one file at a time (the
 * fault tests stop and start servers that the other files use).
 *
 * Where the servers are: the KEY=value lines of `scripts/test-env env`, read here for each module
 * whose server answers (`scripts/test-env status NAME`), and handed to the tests as their
 * environment. A variable already set in the environment wins, so the tests can be pointed at other
 * servers. The servers are not started here: run `scripts/test-env up` first (CI does). A module
 * whose server is down is reported below, and the test files of that backend skip themselves.
 *
 * The service's end-to-end test (e2e/matching.e2e.test.ts, which `npm test` runs on the embedded
 * stores) runs here too, unchanged, on Milvus + S3 + PostgreSQL: testConfig() takes the store lines
 * from this environment. The files run in a fixed order (ORDER below), the end-to-end test right
 * after the Milvus fault test has restarted Milvus: the moment its first calls used to time out
 * (MilvusVectorStore's file comment, "After a (re)start").
 */
import { execFileSync, spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

const ROOT = path.dirname(fileURLToPath(import.meta.url));
const TEST_ENV = path.join(ROOT, 'scripts', 'test-env');

function serverEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  const modules = execFileSync(TEST_ENV, ['modules'], { encoding: 'utf8' }).split('\n').filter(Boolean);
  for (const name of modules) {
    if (spawnSync(TEST_ENV, ['status', name], { stdio: 'ignore', timeout: 30_000 }).status !== 0) {
      process.stderr.write(`test:integration: ${name} is not running; its tests are skipped (start it: scripts/test-env up ${name})\n`);
      continue;
    }
    for (const line of execFileSync(TEST_ENV, ['env', name], { encoding: 'utf8' }).split('\n')) {
      const at = line.indexOf('=');
      if (at > 0) env[line.slice(0, at)] = line.slice(at + 1);
    }
  }
  for (const key of Object.keys(env)) if (process.env[key] !== undefined) env[key] = process.env[key];
  return env;
}

/** The order of the files (a file not listed runs after these, by name). */
const ORDER = [
  'test/integration/stores.test.ts',
  'test/integration/photobatch-crd.test.ts', // kube-apiserver + kubectl (scripts/test-env up kube)
  'test/integration/leader-election.test.ts', // kube-apiserver: two electors on a Lease
  'test/integration/deploy-manifests.test.ts', // kube-apiserver + kube-controller-manager + helm: every shipped manifest applied
  'test/integration/postgres.match-store.test.ts', // stops and restarts PostgreSQL
  'test/integration/s3.object-store.test.ts', // stops and restarts the S3 server
  'test/integration/s3.photo-source.test.ts',
  'test/integration/milvus.vector-store.test.ts', // stops and restarts Milvus
  'e2e/matching.e2e.test.ts',
  'test/integration/cli.test.ts',
  'test/integration/concurrent-replicas.test.ts', // two service processes, the same ids at once
  'test/integration/photobatch-controller.test.ts', // controllers + a service on kube-apiserver and the three stores
  'test/integration/ids.test.ts',
  'test/integration/image.test.ts', // builds the container image and runs it in bubblewrap (scripts/build-image)
  'test/integration/envoy-config.test.ts', // a real envoy on k8s/envoy/envoy.yaml (scripts/test-env up envoy)
  'test/integration/envoy-failover.test.ts', // two service processes behind a real envoy: SIGKILL, SIGTERM, a full replica
  'test/integration/service-faults.test.ts', // stops and restarts each server under a running service
  'test/integration/jaeger.test.ts', // facematch's OTLP exporter into the test Jaeger, read back from /api/v3/traces (scripts/test-env up jaeger)
];

class IntegrationOrder extends BaseSequencer {
  override sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const rank = (f: TestSpecification): number => {
      const at = ORDER.indexOf(path.relative(ROOT, f.moduleId).split(path.sep).join('/'));
      return at === -1 ? ORDER.length : at;
    };
    return Promise.resolve([...files].sort((a, b) => rank(a) - rank(b) || a.moduleId.localeCompare(b.moduleId)));
  }
}

export default defineConfig({
  test: {
    include: ['test/integration/**/*.test.ts', 'e2e/matching.e2e.test.ts'],
    sequence: { sequencer: IntegrationOrder },
    pool: 'forks',
    fileParallelism: false,
    // As in vitest.config.ts: the services started here keep the static session settings.
    env: { FACEMATCH_ORT_TUNING: process.env.FACEMATCH_ORT_TUNING ?? 'off', ...serverEnv() },
    testTimeout: 120_000,
    hookTimeout: 300_000,
    reporters: ['default', 'json'],
    outputFile: { json: 'reports/vitest-integration.json' },
  },
});
