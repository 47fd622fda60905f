// Prints one or more vitest JSON reports as one plain line: "N passed, N failed[, N skipped]".
// Before it, one line per failed test or broken file (file, test name, the first line of its
// error): a run's last lines are often all that is kept of it, and they should say what failed.
import { readFileSync } from 'node:fs';
import path from 'node:path';

const files = process.argv.length > 2 ? process.argv.slice(2) : ['reports/vitest.json'];
let passed = 0;
let failed = 0;
let skipped = 0;
const failures = [];
const firstLine = (text) => String(text ?? '').replace(/\u001b\[[0-9;]*m/g, '').split('\n').find((l) => l.trim())?.trim().slice(0, 300) ?? '';
for (const file of files) {
  let report;
  try {
    report = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    console.error(`no test report at ${file}: that test run did not complete`);
    failed += 1;
    continue;
  }
  passed += report.numPassedTests;
  skipped += (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
  // A file that failed to load counts as a failure even though none of its tests ran.
  const broken = (report.testResults ?? []).filter((r) => r.status === 'failed' && (r.assertionResults ?? []).length === 0).length;
  failed += report.numFailedTests + broken;
  for (const r of report.testResults ?? []) {
    const file = path.relative(process.cwd(), r.name ?? '?');
    const tests = r.assertionResults ?? [];
    if (r.status === 'failed' && tests.length === 0) failures.push(`${file}: ${firstLine(r.message) || 'the file failed to load'}`);
    for (const t of tests) if (t.status === 'failed') failures.push(`${file} > ${t.fullName}: ${firstLine(t.failureMessages?.[0])}`);
  }
}
for (const f of failures) console.log(`failed: ${f}`);
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed > 0 || passed === 0 ? 1 : 0);
