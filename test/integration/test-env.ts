/**
 * The integration tests' handle on scripts/test-env: stop and start one server (the fault tests),
 * and time how long a call takes.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const run = promisify(execFile);

export type TestEnvModule = 'postgres' | 's3' | 'milvus';

/** `scripts/test-env up|down NAME`: returns once the server answers (up) or is gone (down). */
export async function testEnv(verb: 'up' | 'down', module: TestEnvModule): Promise<void> {
  await run(path.join(ROOT, 'scripts', 'test-env'), [verb, module], { timeout: 300_000 });
}

/** The KEY=value lines `scripts/test-env env [NAME...]` prints, as an object. */
export async function testEnvLines(...modules: TestEnvModule[]): Promise<Record<string, string>> {
  const { stdout } = await run(path.join(ROOT, 'scripts', 'test-env'), ['env', ...modules], { timeout: 30_000 });
  const lines: Record<string, string> = {};
  for (const line of stdout.split('\n')) {
    const at = line.indexOf('=');
    if (at > 0) lines[line.slice(0, at)] = line.slice(at + 1);
  }
  return lines;
}

/** How long `promise` takes to settle, in ms, and how it settled. */
export async function timed<T>(promise: Promise<T>): Promise<{ ms: number; value?: T; error?: unknown }> {
  const t0 = performance.now();
  try {
    const value = await promise;
    return { ms: performance.now() - t0, value };
  } catch (error) {
    return { ms: performance.now() - t0, error };
  }
}
