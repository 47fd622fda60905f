/**
 * The package as a user gets it: `npm pack` (prepack builds dist/), the tarball installed with
 * production dependencies only into an empty folder, and the installed `facematch` bin run from
 * there with no src/, proto/ or dev dependency in reach: `detect` on a photo, `enroll` (one inference
 * worker with every core's threads), then `serve` until /readyz answers 200, with gRPC reflection
 * serving the contract, and a clean stop.
 *
 * Needs the npm registry (or npm's cache) for the dependencies. ONNXRUNTIME_NODE_INSTALL=skip: the
 * CPU binaries ship in onnxruntime-node; its install step would fetch CUDA from outside the registry.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { credentials, loadPackageDefinition, type ClientDuplexStream, type GrpcObject, type ServiceClientConstructor } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FACES_DIR, group, MODELS_DIR, REPO } from '../test/support/shared.js';
import { LOOPBACK_SERVICE } from './support.js';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * The environment of a user's shell: none of the npm script variables `npm test` sets, no FACEMATCH_*;
 * but its cache folder (where the onnxruntime tuning cache goes) is the test's, not this machine's.
 */
function userEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(npm_|FACEMATCH_|INIT_CWD$)/i.test(k)));
  return { ...env, ONNXRUNTIME_NODE_INSTALL: 'skip', XDG_CACHE_HOME: path.join(dir, 'cache'), ...extra };
}

function run(command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv): Promise<Run> {
  return new Promise((resolve) => {
    execFile(command, args, { cwd, env, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) =>
      resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

const SERVICE_ENV = { FACEMATCH_MODEL_PACK: 'test', FACEMATCH_MODELS_DIR: MODELS_DIR };

let dir: string;
let app: string;
let bin: string;
let packed: string[];
let data: string;
let server: ChildProcess | undefined;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'facematch-package-'));
  app = path.join(dir, 'app');
  data = path.join(dir, 'data');
  await mkdir(app);
  const started = Date.now();
  const pack = await run('npm', ['pack', '--json', '--pack-destination', dir], REPO, userEnv({}));
  expect(pack.code, pack.stderr).toBe(0);
  const [info] = JSON.parse(pack.stdout.slice(pack.stdout.indexOf('['))) as { filename: string; files: { path: string }[] }[];
  packed = info!.files.map((f) => f.path);
  const packedAt = Date.now();
  await writeFile(path.join(app, 'package.json'), `${JSON.stringify({ name: 'facematch-user', private: true })}\n`);
  const install = await run(
    'npm',
    ['install', '--omit=dev', '--prefer-offline', '--no-audit', '--no-fund', path.join(dir, info!.filename)],
    app,
    userEnv({}),
  );
  expect(install.code, install.stderr).toBe(0);
  bin = path.join(app, 'node_modules', '.bin', 'facematch');
  process.stderr.write(`package e2e: npm pack ${((packedAt - started) / 1000).toFixed(1)} s, npm install ${((Date.now() - packedAt) / 1000).toFixed(1)} s\n`);
}, 900_000);

afterAll(async () => {
  server?.kill('SIGKILL');
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('the npm package', () => {
  it('holds the build, the model manifests and the migrations, and no sources or tests', () => {
    expect(packed).toContain('dist/bin/cli.js');
    expect(packed).toContain('dist/inference/worker/analyzer.worker.js');
    expect(packed).toContain('dist/adapters/sql/migrations/0001_photos_faces_matches.sql');
    expect(packed).toContain('dist/adapters/embedded/migrations/0001_vectors.sql');
    expect(packed).toEqual(expect.arrayContaining(['models/buffalo_l.json', 'models/test.json', 'package.json']));
    expect(packed.filter((p) => /^(src|test|e2e|proto|scripts|bench)\//.test(p) || p.endsWith('.onnx'))).toEqual([]);
  });

  it('installs with production dependencies only: no dev tool in node_modules', () => {
    expect(existsSync(path.join(app, 'node_modules', 'facematch', 'dist', 'bin', 'cli.js'))).toBe(true);
    expect(existsSync(path.join(app, 'node_modules', 'facematch', 'src'))).toBe(false);
    for (const dev of ['typescript', 'tsx', 'vitest', '@bufbuild/buf']) expect(existsSync(path.join(app, 'node_modules', dev)), dev).toBe(false);
  });

  it('facematch detect prints the faces of a photo', async () => {
    const r = await run(bin, ['detect', group('insightface_t1.jpg')], app, userEnv(SERVICE_ENV));
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { width: number; height: number; faces: { score: number }[] };
    expect([out.width, out.height]).toEqual([1280, 886]);
    expect(out.faces).toHaveLength(6);
  });

  it('facematch enroll runs one inference worker with every core and writes the embedded stores', async () => {
    const selfie = path.join(FACES_DIR, 'facerec_obama', 'obama.jpg');
    const env = userEnv({ ...SERVICE_ENV, FACEMATCH_DATA_DIR: data, FACEMATCH_LOG_LEVEL: 'debug' });
    const r = await run(bin, ['enroll', '--user', 'obama', '--event', 'package', selfie], app, env);
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { faces: unknown[] }).faces).toHaveLength(1);
    const ready = r.stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { msg?: string; workers?: number; intraOpThreads?: number })
      .find((l) => l.msg === 'inference workers ready');
    expect(ready, r.stderr).toMatchObject({ workers: 1, intraOpThreads: availableParallelism() });
    // A first run measured the session settings for this CPU and cached them where a user's cache goes.
    expect(existsSync(path.join(dir, 'cache', 'facematch', 'ort-tuning.json'))).toBe(true);
  });

  it('facematch serve answers /readyz 200, serves the contract by reflection, and stops on SIGTERM', async () => {
    const proc = spawn(bin, ['serve'], {
      cwd: app,
      env: userEnv({ ...SERVICE_ENV, ...LOOPBACK_SERVICE, FACEMATCH_DATA_DIR: data }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    server = proc;
    let log = '';
    proc.stderr.setEncoding('utf8').on('data', (s: string) => {
      log = (log + s).slice(-16_000);
    });
    const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
    const line = await new Promise<string>((resolve, reject) => {
      createInterface({ input: proc.stdout }).once('line', resolve);
      void exited.then((code) => reject(new Error(`serve exited (${code}) before printing its ports:\n${log}`)));
    });
    const { grpcPort, httpPort } = JSON.parse(line) as { grpcPort: number; httpPort: number };

    // Bounded: ready means models loaded and stores open, which serve waits for before printing.
    let status = 0;
    for (let attempt = 0; attempt < 60 && status !== 200; attempt++) {
      if (attempt > 0) await new Promise((r) => setTimeout(r, 500));
      status = (await fetch(`http://127.0.0.1:${httpPort}/readyz`)).status;
    }
    expect(status, log).toBe(200);

    expect(await reflectedServices(grpcPort)).toContain('facematch.v1.FacematchService');

    proc.kill('SIGTERM');
    expect(await exited, log).toBe(0);
    server = undefined;
  });
});

interface ReflectionResponse {
  listServicesResponse?: { service: { name: string }[] };
  errorResponse?: { errorMessage: string };
}

/** `grpcurl list`, by the standard reflection service (v1). */
async function reflectedServices(port: number): Promise<string[]> {
  const proto = path.join(REPO, 'node_modules', '@grpc', 'reflection', 'build', 'proto', 'grpc', 'reflection', 'v1', 'reflection.proto');
  const pkg = loadPackageDefinition(loadSync(proto)) as unknown as { grpc: { reflection: { v1: GrpcObject } } };
  const Reflection = pkg.grpc.reflection.v1.ServerReflection as ServiceClientConstructor;
  const client = new Reflection(`127.0.0.1:${port}`, credentials.createInsecure()) as unknown as {
    serverReflectionInfo(): ClientDuplexStream<{ listServices: string }, ReflectionResponse>;
    close(): void;
  };
  try {
    return await new Promise<string[]>((resolve, reject) => {
      const call = client.serverReflectionInfo();
      call.on('data', (r: ReflectionResponse) => {
        if (r.listServicesResponse) resolve(r.listServicesResponse.service.map((s) => s.name));
        else reject(new Error(r.errorResponse?.errorMessage ?? 'no list_services answer'));
        call.end();
      });
      call.on('error', reject);
      call.write({ listServices: '' });
    });
  } finally {
    client.close();
  }
}
