/**
 * kubectl against the API server of `scripts/test-env up kube`, for the integration tests: always
 * with `--kubeconfig FACEMATCH_TEST_KUBECONFIG` (a KUBECONFIG of the user's own is never used, so a
 * test cannot reach a real cluster) and a discovery cache of its own (a kubectl that cached the API
 * before the CRD existed would not know PhotoBatch).
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

export const KUBECTL = process.env.FACEMATCH_TEST_KUBECTL;
export const KUBECONFIG = process.env.FACEMATCH_TEST_KUBECONFIG;

export interface KubectlRun {
  code: number;
  stdout: string;
  stderr: string;
}

export interface Kubectl {
  run(args: string[], input?: string): Promise<KubectlRun>;
  /** stdout; throws with kubectl's stderr when it fails. */
  ok(args: string[], input?: string): Promise<string>;
  /** Removes the discovery cache. */
  close(): Promise<void>;
}

export async function kubectl(): Promise<Kubectl> {
  if (!KUBECTL || !KUBECONFIG) throw new Error('needs FACEMATCH_TEST_KUBECTL and FACEMATCH_TEST_KUBECONFIG (scripts/test-env up kube)');
  const cacheDir = await mkdtemp(path.join(tmpdir(), 'facematch-kubectl-'));
  const run = (args: string[], input?: string): Promise<KubectlRun> =>
    new Promise((resolve, reject) => {
      const child = spawn(KUBECTL, ['--kubeconfig', KUBECONFIG, '--cache-dir', cacheDir, ...args], { env: process.env });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
      child.stdin.end(input ?? '');
    });
  return {
    run,
    ok: async (args, input) => {
      const r = await run(args, input);
      if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')}: ${r.stderr}`);
      return r.stdout;
    },
    close: () => rm(cacheDir, { recursive: true, force: true }),
  };
}
