/**
 * `npm run test:integration`: test/integration/** against real servers, one file at a time (the
 * fault tests stop and start servers that the other files use).
 *
 * Where the servers are: the KEY=value lines of `scripts/test-env env`, read here for each module
 * whose server answers (`scripts/test-env status NAME`), and handed to the tests as their
 * environment. A variable already set in the environment wins, so the tests can be pointed at other
 * servers. The servers are not started here: run `scripts/test-env up` first (CI does). A module
 * whose server is down is reported below, and the test files of that backend skip themselves.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

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

export default defineConfig({
  test: {
    // e2e/matching.e2e.test.ts passes against Milvus + S3 + PostgreSQL when run on its own with the
    // test-env lines in the environment (testConfig takes them), but right after the Milvus fault
    // test restarts Milvus its calls time out (5 s): not in this run until that is understood.
    include: ['test/integration/**/*.test.ts'],
    pool: 'forks',
    fileParallelism: false,
    env: serverEnv(),
    testTimeout: 120_000,
    hookTimeout: 300_000,
    reporters: ['default', 'json'],
    outputFile: { json: 'reports/vitest-integration.json' },
  },
});
