import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.spec.ts', 'test/**/*.test.ts', 'e2e/**/*.test.ts'],
    exclude: ['test/integration/**', 'node_modules/**', 'dist/**'],
    pool: 'forks',
    // One test file at a time: the load tests measure latency on a 2-core machine, and parallel files
    // would measure each other instead.
    fileParallelism: false,
    // Services the tests start (in process or as child processes) keep the static session settings:
    // the tuner's own tests (src/inference/session-tuner.spec.ts) measure; the others should neither
    // pay seconds of measuring on a cold machine nor write the user's tuning cache.
    env: { FACEMATCH_ORT_TUNING: process.env.FACEMATCH_ORT_TUNING ?? 'off' },
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // The JSON report feeds CI's closing "N passed, N failed" line (scripts/test-summary.mjs).
    reporters: ['default', 'json'],
    outputFile: { json: 'reports/vitest.json' },
  },
});
