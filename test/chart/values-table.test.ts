// The chart's README documents every value of charts/facematch/values.yaml, in a table generated from
// the `# --` comments (scripts/chart-values-table.mjs, `npm run docs:chart`). These tests keep the
// committed table true and show that an undocumented or changed value fails the check, by name.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const CHART = path.join(ROOT, 'charts', 'facematch');
const SCRIPT = path.join(ROOT, 'scripts', 'chart-values-table.mjs');

function run(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [SCRIPT, ...args], { cwd: ROOT, encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const temps: string[] = [];
afterEach(() => {
  for (const dir of temps.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A copy of the chart's values.yaml and README.md, with `extra` appended to values.yaml. */
function chartCopy(extra = ''): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'facematch-values-table-'));
  temps.push(dir);
  copyFileSync(path.join(CHART, 'README.md'), path.join(dir, 'README.md'));
  writeFileSync(path.join(dir, 'values.yaml'), readFileSync(path.join(CHART, 'values.yaml'), 'utf8') + extra);
  return dir;
}

/** The README table's rows: value path -> [default, meaning]. */
function tableRows(readme: string): Map<string, [string, string]> {
  const rows = new Map<string, [string, string]>();
  for (const m of readme.matchAll(/^\| `([^`]+)` \| `(.*?)` \| (.*) \|$/gm)) rows.set(m[1]!, [m[2]!, m[3]!]);
  return rows;
}

describe('charts/facematch/README.md values table', () => {
  it('is what values.yaml gives (npm run docs:chart -- --check passes)', () => {
    const r = run('--check');
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/up to date \(\d+ values\)/);
  });

  it('has a row for values at every depth, maps documented whole in one row with their default', () => {
    const rows = tableRows(readFileSync(path.join(CHART, 'README.md'), 'utf8'));
    expect(rows.get('fullnameOverride')?.[0]).toBe('""');
    expect(rows.get('milvus.etcd.persistence.size')).toEqual(['2Gi', "Size of etcd's volume."]);
    // A map documented as a whole: one row, its children not listed again.
    expect(rows.get('inference.resources')?.[0]).toBe('{requests: {cpu: "2", memory: 3Gi}, limits: {memory: 6Gi}}');
    expect(rows.has('inference.resources.requests')).toBe(false);
    // A list: one row.
    expect(rows.get('gpu.tolerations')?.[0]).toBe('[{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]');
    // The comment above a nested map's first key describes that key (not the map holding it).
    expect(rows.get('image.repository')?.[1]).toMatch(/^facematch image/);
    expect(rows.has('image')).toBe(false);
    // Continuation lines join the `# --` line.
    expect(rows.get('secrets.create')?.[1]).toMatch(/^Let the chart create the Secrets .* render with false\.$/);
  });

  it('fails naming a value added without a `# --` description, nested or top-level', () => {
    const dir = chartCopy(
      [
        '',
        'newStore:',
        '  # -- documented',
        '  port: 1',
        '  replicas: 3',
        '# An ordinary comment is not a description.',
        'lonely: x',
        '# -- Separated from its key by a blank line: not its description.',
        '',
        'detached: y',
        '',
      ].join('\n'),
    );
    const r = run('--chart', dir, '--check');
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('3 value(s) without a `# --` description');
    for (const name of ['newStore.replicas', 'lonely', 'detached']) expect(r.stderr).toMatch(new RegExp(`^  ${name.replace('.', '\\.')}$`, 'm'));
    expect(r.stderr).not.toMatch(/^ {2}newStore\.port$/m);
    // A write refuses too, and leaves the README alone.
    const before = readFileSync(path.join(dir, 'README.md'), 'utf8');
    expect(run('--chart', dir).status).toBe(1);
    expect(readFileSync(path.join(dir, 'README.md'), 'utf8')).toBe(before);
  });

  it('fails naming a documented value the README lacks or shows differently, and a write fixes it', () => {
    const dir = chartCopy('\n# -- A value added after the README was written.\naddedLater: 42\n');
    const values = path.join(dir, 'values.yaml');
    writeFileSync(values, readFileSync(values, 'utf8').replace('  replicas: 2\n  # -- Resources of the service', '  replicas: 3\n  # -- Resources of the service'));
    const r = run('--chart', dir, '--check');
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('missing from the README: addedLater');
    expect(r.stderr).toContain('different in the README: inference.replicas');
    expect(r.stderr).not.toContain('controller.replicas');

    expect(run('--chart', dir).status).toBe(0);
    expect(run('--chart', dir, '--check').status).toBe(0);
    const rows = tableRows(readFileSync(path.join(dir, 'README.md'), 'utf8'));
    expect(rows.get('addedLater')).toEqual(['42', 'A value added after the README was written.']);
    expect(rows.get('inference.replicas')?.[0]).toBe('3');
  });
});
