/**
 * `npm run e2e`: the whole system on loopback (e2e/system.e2e.ts), after `scripts/test-env up` of
 * the servers it needs. `up` reuses a server that runs and starts one that does not, so the command
 * works alone on a fresh checkout (the first time installs and builds the servers: see DEVELOPERS.md)
 * and costs seconds in CI, where the integration run already started them. The servers are left
 * running (CI stops them with `scripts/test-env down`).
 *
 * The test gets the KEY=value lines of `scripts/test-env env` for those modules as its environment;
 * a variable already set wins. FACEMATCH_E2E_NO_UP=1 skips `up` (the servers are somewhere else,
 * named by those variables). The JSON report feeds CI's closing line (scripts/test-summary.mjs).
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const ROOT = path.dirname(fileURLToPath(import.meta.url));
const TEST_ENV = path.join(ROOT, 'scripts', 'test-env');
const MODULES = ['postgres', 's3', 'milvus', 'kube', 'envoy', 'jaeger'];

function servers(): Record<string, string> {
  const env: Record<string, string> = {};
  let lines: string;
  try {
    lines = process.env.FACEMATCH_E2E_NO_UP
      ? execFileSync(TEST_ENV, ['env', ...MODULES], { encoding: 'utf8' })
      : execFileSync(TEST_ENV, ['up', ...MODULES], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 3_600_000 });
  } catch (error) {
    // The test fails in its beforeAll with this (vitest still writes its report for CI's line).
    env.FACEMATCH_E2E_UP_FAILED = `scripts/test-env up ${MODULES.join(' ')} failed: ${(error as Error).message.split('\n')[0]}`;
    lines = execFileSync(TEST_ENV, ['env', ...MODULES], { encoding: 'utf8' });
  }
  for (const line of lines.split('\n')) {
    const at = line.indexOf('=');
    if (at > 0) env[line.slice(0, at)] = line.slice(at + 1);
  }
  for (const key of Object.keys(env)) if (process.env[key] !== undefined) env[key] = process.env[key];
  return env;
}

export default defineConfig({
  test: {
    include: ['e2e/system.e2e.ts'],
    pool: 'forks',
    fileParallelism: false,
    env: servers(),
    testTimeout: 300_000,
    hookTimeout: 600_000,
    reporters: ['default', 'json'],
    outputFile: { json: 'reports/vitest-e2e.json' },
  },
});
