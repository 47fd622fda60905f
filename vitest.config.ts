import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.spec.ts', 'test/**/*.test.ts', 'e2e/**/*.test.ts'],
    exclude: ['test/integration/**', 'node_modules/**', 'dist/**'],
    pool: 'forks',
    // One test file at a time: the load tests measure latency on a 2-core machine, and parallel files
    // would measure each other instead.
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // The JSON report feeds CI's closing "N passed, N failed" line (scripts/test-summary.mjs).
    reporters: ['default', 'json'],
    outputFile: { json: 'reports/vitest.json' },
  },
});
