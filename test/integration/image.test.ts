/**
 * The container image (scripts/build-image) as a container runtime would run it, without one:
 *
 *   - built, or reused when its inputs have not changed (build-image compares a hash of the sources,
 *     the lockfile, the script and the cached base layers with the one beside the archive);
 *   - copied out of its OCI archive with skopeo and unpacked with umoci, which also writes the
 *     runtime bundle's config.json from the image config: the test runs the processes with its
 *     args, env, working directory and user, not with values of its own;
 *   - run inside its root filesystem by bubblewrap, started by `setpriv` as uid/gid 65532 (a non-root
 *     user on the host as well as in the sandbox), in namespaces of its own with the entrypoint as
 *     PID 1, the root filesystem read-only, /tmp a tmpfs, /data a writable folder of the test, and
 *     ../shared/models bound read-only at /models (the weights are not in the image).
 *
 * `facematch detect` finds the faces of a group photo; `facematch serve` on the embedded stores
 * answers /readyz 200, and on SIGTERM (sent to the entrypoint, PID 1 of the sandbox) stops cleanly.
 *
 * Needs root (build-image writes files owned by 65532) and mmdebstrap, umoci, skopeo and bubblewrap,
 * which `scripts/build-image tools` installs with apt-get when missing; skipped, saying why, when
 * they cannot be had. On the 2-core machine a cold build (empty cache) takes about 75 s, one with
 * the base layers cached (`scripts/test-env up image`) 40-60 s, an unchanged one 1.5 s; then
 * `umoci unpack` 8-18 s and the tests about 25 s.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, open, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MODELS_DIR, REPO, SHARED } from '../support/shared.js';

const BUILD_IMAGE = path.join(REPO, 'scripts', 'build-image');
const USER = 65532;
const VERSION = (JSON.parse(readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string }).version;

/** Why the file cannot run here, or undefined. */
function cannotRun(): string | undefined {
  if (process.platform !== 'linux' || process.arch !== 'x64') return 'the image is linux/amd64';
  if (process.getuid?.() !== 0) return 'needs root: scripts/build-image keeps the owners of the layer files (root, and 65532 for /data)';
  const tools = spawnSync(BUILD_IMAGE, ['tools'], { encoding: 'utf8', timeout: 300_000 });
  if (tools.status !== 0) return `mmdebstrap, umoci, skopeo and bubblewrap could not be installed (scripts/build-image tools):\n${tools.stderr}`;
  return undefined;
}

const SKIP = cannotRun();
if (SKIP) console.warn(`image.test.ts skipped: ${SKIP}`);

interface Bundle {
  process: { args: string[]; env: string[]; cwd: string; user: { uid: number; gid: number } };
}

interface ImageConfig {
  config: {
    User?: string;
    Entrypoint?: string[];
    Cmd?: string[];
    Env?: string[];
    WorkingDir?: string;
    ExposedPorts?: Record<string, object>;
    Labels?: Record<string, string>;
  };
  os: string;
  architecture: string;
}

let work: string;
let rootfs: string;
let bundle: Bundle;
let image: ImageConfig;
let archive: string;
let layerSizes: number[];
const children = new Set<ChildProcess>();

interface SandboxOptions {
  /** Replaces the image's arguments after the entrypoint (its Cmd). */
  args: string[];
  /** Added to the image's environment. */
  env?: Record<string, string>;
  /** Host folder bound writable at /data (the image's FACEMATCH_DATA_DIR). */
  data: string;
}

/**
 * The image's entrypoint with `args`, as a runtime starts it: bwrap's root is the unpacked rootfs,
 * read-only; the process is PID 1 of a new PID namespace (--as-pid-1), runs as 65532 on the host
 * (setpriv, so bwrap itself is unprivileged) and in the sandbox, shares only the network namespace
 * (the test talks to it on loopback), and has only the image's environment plus `env`.
 * Its host pid is written by bwrap to fd 3 (--info-fd), as `child-pid`.
 */
/** setpriv's arguments for the image's user and group (its config says 65532:65532). */
function asUser(): string[] {
  const { uid, gid } = bundle.process.user;
  return ['--reuid', String(uid), '--regid', String(gid), '--clear-groups'];
}

function sandbox(o: SandboxOptions): ChildProcess {
  const entrypoint = image.config.Entrypoint ?? [];
  const argv = [...entrypoint, ...o.args];
  const env = [...bundle.process.env.map((kv) => kv.split(/=(.*)/s).slice(0, 2) as [string, string]), ...Object.entries(o.env ?? {})];
  const bwrap = [
    '--ro-bind', rootfs, '/',
    '--proc', '/proc',
    '--dev', '/dev',
    '--tmpfs', '/tmp',
    '--bind', o.data, '/data',
    '--ro-bind', MODELS_DIR, '/models',
    '--ro-bind', path.join(SHARED, 'testdata'), '/tmp/testdata',
    '--unshare-all', '--unshare-user', '--share-net',
    '--as-pid-1', '--die-with-parent',
    '--info-fd', '3',
    '--clearenv',
    ...env.flatMap(([k, v]) => ['--setenv', k, v]),
    '--chdir', bundle.process.cwd,
    '--', ...argv,
  ];
  const child = spawn('setpriv', [...asUser(), 'bwrap', ...bwrap], { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

interface Finished {
  code: number | null;
  stdout: string;
  stderr: string;
}

function finished(child: ChildProcess): Promise<Finished> {
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr = (stderr + s).slice(-32_000)));
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })));
}

/** The host pid of the sandbox's PID 1 (the entrypoint), from bwrap's --info-fd. */
function childPid(child: ChildProcess): Promise<number> {
  const info = child.stdio[3] as NodeJS.ReadableStream;
  let text = '';
  return new Promise((resolve, reject) => {
    info.setEncoding('utf8');
    info.on('data', (s: string) => {
      text += s;
      try {
        resolve((JSON.parse(text) as { 'child-pid': number })['child-pid']);
      } catch {
        // not all of it yet
      }
    });
    info.once('end', () => reject(new Error(`bwrap --info-fd: no child-pid in ${JSON.stringify(text)}`)));
  });
}

async function newDataDir(name: string): Promise<string> {
  const dir = path.join(work, name);
  await mkdir(dir);
  await chown(dir, USER, USER);
  return dir;
}

function run(o: SandboxOptions): Promise<Finished> {
  return finished(sandbox(o));
}

/** Every regular file under `dir` (no symlinks followed). */
async function files(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name));
}

/** ELF e_machine of a file (62 = x86-64), or undefined when it is not an ELF file. */
async function elfMachine(file: string): Promise<number | undefined> {
  const fh = await open(file, 'r');
  try {
    const head = Buffer.alloc(20);
    const { bytesRead } = await fh.read(head, 0, 20, 0);
    if (bytesRead < 20 || head.readUInt32BE(0) !== 0x7f454c46) return undefined;
    return head.readUInt16LE(18);
  } finally {
    await fh.close();
  }
}

beforeAll(async () => {
  if (SKIP) return;
  const t0 = Date.now();
  // Not spawnSync: a blocked worker misses vitest's RPC deadline during a minute-long build.
  const built = await finished(spawn(BUILD_IMAGE, [], { stdio: ['ignore', 'pipe', 'pipe'] }));
  expect(built.code, built.stderr).toBe(0);
  archive = built.stdout.trim().split('\n').at(-1)!;
  const t1 = Date.now();

  work = await mkdtemp(path.join(tmpdir(), 'facematch-image-'));
  await chmod(work, 0o755); // 65532 walks through it to the rootfs and its data folders
  execFileSync('skopeo', ['copy', '--quiet', `oci-archive:${archive}:${VERSION}`, `oci:${work}/oci:${VERSION}`]);
  const layout = path.join(work, 'oci');
  const index = JSON.parse(await readFile(path.join(layout, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
  const blob = (digest: string): string => path.join(layout, 'blobs', ...digest.split(':'));
  const manifest = JSON.parse(await readFile(blob(index.manifests[0]!.digest), 'utf8')) as {
    config: { digest: string };
    layers: { digest: string; size: number }[];
  };
  image = JSON.parse(await readFile(blob(manifest.config.digest), 'utf8')) as ImageConfig;
  layerSizes = manifest.layers.map((l) => l.size);
  execFileSync('umoci', ['unpack', '--image', `${layout}:${VERSION}`, path.join(work, 'bundle')], { stdio: ['ignore', 'ignore', 'pipe'] });
  await chmod(path.join(work, 'bundle'), 0o755);
  rootfs = path.join(work, 'bundle', 'rootfs');
  bundle = JSON.parse(await readFile(path.join(work, 'bundle', 'config.json'), 'utf8')) as Bundle;
  const mb = (n: number): string => (n / 1e6).toFixed(1);
  process.stderr.write(
    `image test: build-image ${((t1 - t0) / 1000).toFixed(1)} s, skopeo + umoci unpack ${((Date.now() - t1) / 1000).toFixed(1)} s; ` +
      `archive ${mb((await stat(archive)).size)} MB, layers ${layerSizes.map(mb).join(' + ')} MB compressed\n`,
  );
}, 1_800_000);

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  if (work) await rm(work, { recursive: true, force: true });
});

describe.skipIf(SKIP)('the container image', () => {
  it('is configured as the chart runs it: user 65532, entrypoint `facematch`, serve by default, models and data folders, OCI labels', () => {
    expect([image.os, image.architecture]).toEqual(['linux', 'amd64']);
    const c = image.config;
    expect(c.User).toBe('65532:65532');
    expect(c.Entrypoint).toEqual(['/usr/local/bin/node', '/opt/facematch/dist/bin/cli.js']);
    expect(c.Cmd).toEqual(['serve']);
    expect(c.WorkingDir).toBe('/data');
    expect(c.Env).toEqual(
      expect.arrayContaining(['FACEMATCH_MODELS_DIR=/models', 'FACEMATCH_DATA_DIR=/data', 'NODE_ENV=production', 'ORT_DISABLE_TELEMETRY=1']),
    );
    expect(Object.keys(c.ExposedPorts ?? {}).sort()).toEqual(['50051/tcp', '8080/tcp', '8081/tcp']);
    expect(c.Labels).toMatchObject({
      'org.opencontainers.image.title': 'facematch',
      'org.opencontainers.image.version': VERSION,
      'org.opencontainers.image.source': 'https://github.com/facematch/facematch',
    });
    expect(c.Labels?.['org.opencontainers.image.revision']).toMatch(/^[0-9a-f]{40}(-dirty)?$/);
    expect(bundle.process.user).toMatchObject({ uid: USER, gid: USER });
    expect(layerSizes).toHaveLength(3); // Debian, Node.js, facematch: a warm build changes only the last
  });

  it('holds only linux-x64 native code, Node.js 24, no shell, compiler, package manager or weights', async () => {
    const all = await files(rootfs);
    const rel = all.map((f) => path.relative(rootfs, f));
    const machines = new Map<string, number>();
    for (const f of all) {
      const m = await elfMachine(f);
      if (m !== undefined) machines.set(path.relative(rootfs, f), m);
    }
    expect([...machines.entries()].filter(([, m]) => m !== 62)).toEqual([]);
    expect([...machines.keys()]).toEqual(
      expect.arrayContaining([
        'usr/local/bin/node',
        'opt/facematch/node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime.so.1',
        'opt/facematch/node_modules/@img/sharp-linux-x64/lib/sharp-linux-x64.node',
      ]),
    );
    for (const absent of ['bin/sh', 'bin/bash', 'usr/bin/dash', 'usr/bin/apt', 'usr/bin/dpkg', 'usr/bin/gcc', 'usr/bin/cc', 'usr/bin/mawk']) {
      expect(existsSync(path.join(rootfs, absent)), absent).toBe(false);
    }
    expect(rel.filter((f) => /(^|\/)(npm|npx|corepack)$/.test(f) || f.endsWith('.onnx'))).toEqual([]);
    expect(rel.filter((f) => /onnxruntime-node\/bin\/napi-v6\/(darwin|win32|linux\/arm64)\//.test(f))).toEqual([]);
    // The Debian packages are recorded for image scanners (distroless' status.d).
    expect((await readdir(path.join(rootfs, 'var/lib/dpkg/status.d'))).sort()).toEqual(['base-files', 'gcc-12-base', 'libc6', 'libgcc-s1', 'libstdc++6']);
    const node = spawnSync(path.join(rootfs, 'usr/local/bin/node'), ['--version'], { encoding: 'utf8' });
    expect(node.stdout.trim()).toMatch(/^v24\./);
  });

  it('runs as 65532 on a read-only root filesystem with a writable /tmp', async () => {
    const data = await newDataDir('sandbox');
    // The entrypoint's node, with a script instead of facematch: what the process can do in there.
    const probe = [
      'const fs = require("node:fs");',
      'const tryWrite = (p) => { try { fs.writeFileSync(p, "x"); return "ok"; } catch (e) { return e.code; } };',
      'console.log(JSON.stringify({ uid: process.getuid(), gid: process.getgid(), pid: process.pid,',
      '  opt: tryWrite("/opt/facematch/x"), etc: tryWrite("/etc/x"), tmp: tryWrite("/tmp/x"), data: tryWrite("/data/x") }));',
    ].join('\n');
    const bwrap = ['--ro-bind', rootfs, '/', '--proc', '/proc', '--dev', '/dev', '--tmpfs', '/tmp', '--bind', data, '/data'];
    const isolation = ['--unshare-all', '--unshare-user', '--as-pid-1', '--die-with-parent', '--clearenv', '--chdir', '/data'];
    const node = image.config.Entrypoint![0]!;
    const child = spawn('setpriv', [...asUser(), 'bwrap', ...bwrap, ...isolation, '--', node, '-e', probe], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    const r = await finished(child);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ uid: USER, gid: USER, pid: 1, opt: 'EROFS', etc: 'EROFS', tmp: 'ok', data: 'ok' });
  });

  it('facematch detect finds the six faces of a group photo, with the weights mounted at /models', async () => {
    const r = await run({
      args: ['detect', '/tmp/testdata/groups/insightface_t1.jpg'],
      env: { FACEMATCH_MODEL_PACK: 'test' },
      data: await newDataDir('detect'),
    });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { width: number; height: number; faces: { score: number; box: { width: number } }[] };
    expect([out.width, out.height]).toEqual([1280, 886]);
    expect(out.faces).toHaveLength(6);
    for (const face of out.faces) expect(face.score).toBeGreaterThan(0.5);
    // onnxruntime's telemetry is off: no warning about it, no session file in the working directory.
    expect(r.stderr).not.toMatch(/telemetry/i);
  });

  it('facematch serve answers /readyz 200 on the embedded stores in /data, and exits 0 on SIGTERM', async () => {
    const data = await newDataDir('serve');
    const child = sandbox({
      args: ['serve'],
      env: {
        FACEMATCH_MODEL_PACK: 'test',
        FACEMATCH_HOST: '127.0.0.1',
        FACEMATCH_GRPC_PORT: '0',
        FACEMATCH_HTTP_PORT: '0',
        FACEMATCH_SHUTDOWN_DRAIN_MS: '200',
        FACEMATCH_INFERENCE_WORKERS: '1',
      },
      data,
    });
    const pid = childPid(child);
    const done = finished(child);
    let log = '';
    child.stderr!.on('data', (s: string) => (log = (log + s).slice(-16_000)));
    const line = await new Promise<string>((resolve, reject) => {
      createInterface({ input: child.stdout! }).once('line', resolve);
      void done.then((r) => reject(new Error(`serve exited (${r.code}) before printing its ports:\n${r.stderr}`)));
    });
    const { httpPort } = JSON.parse(line) as { grpcPort: number; httpPort: number };

    let status = 0;
    let body = '';
    for (let attempt = 0; attempt < 120 && status !== 200; attempt++) {
      if (attempt > 0) await new Promise((r) => setTimeout(r, 500));
      const res = await fetch(`http://127.0.0.1:${httpPort}/readyz`);
      [status, body] = [res.status, await res.text()];
    }
    expect(status, `${body}\n${log}`).toBe(200);
    expect(JSON.parse(body)).toMatchObject({ status: 'ready', checks: { models: 'test on cpu' } });
    expect((await readdir(data)).sort()).toEqual(['db', 'objects']);

    process.kill(await pid, 'SIGTERM');
    const r = await done;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/"phase":"stopped"/);
  }, 180_000);
});
