/**
 * helm (v4, from `scripts/test-env up kube`: FACEMATCH_TEST_HELM) for the deployment tests, with
 * config, cache and data folders of its own (a user's repositories and plugins are never read or
 * written) and no KUBECONFIG: `template` and `lint` need no cluster, and nothing here installs a
 * release.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

export const HELM = process.env.FACEMATCH_TEST_HELM;

export interface HelmRun {
  code: number;
  stdout: string;
  stderr: string;
}

export interface Helm {
  run(args: string[]): Promise<HelmRun>;
  /** stdout; throws with helm's stderr when it fails. */
  ok(args: string[]): Promise<string>;
  /** Removes helm's folders. */
  close(): Promise<void>;
}

export async function helm(): Promise<Helm> {
  if (!HELM) throw new Error('needs FACEMATCH_TEST_HELM (scripts/test-env up kube)');
  const home = await mkdtemp(path.join(tmpdir(), 'facematch-helm-'));
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: home,
    HELM_CONFIG_HOME: path.join(home, 'config'),
    HELM_CACHE_HOME: path.join(home, 'cache'),
    HELM_DATA_HOME: path.join(home, 'data'),
    KUBECONFIG: path.join(home, 'no-kubeconfig'),
  };
  const run = (args: string[]): Promise<HelmRun> =>
    new Promise((resolve, reject) => {
      const child = spawn(HELM, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
    });
  return {
    run,
    ok: async (args) => {
      const r = await run(args);
      if (r.code !== 0) throw new Error(`helm ${args.join(' ')}: ${r.stderr}`);
      return r.stdout;
    },
    close: () => rm(home, { recursive: true, force: true }),
  };
}
