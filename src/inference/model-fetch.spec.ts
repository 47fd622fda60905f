import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import yazl from 'yazl';
import { fetchModelPack, type FetchProgress } from './model-fetch.js';
import { readModelPack, sha256File, type ModelPack } from './model-pack.js';

const SHARED_MODELS = path.resolve(import.meta.dirname, '../../../shared/models');
const shared = (file: string) => path.join(SHARED_MODELS, file);

const DETECTOR = 'det_500m.onnx';
const EMBEDDER = 'mbf512_faceplugin.onnx';

/** Real model files under the names they get in the zip. */
async function makeZip(entries: Array<[realFile: string, nameInZip: string]>): Promise<Buffer> {
  const zip = new yazl.ZipFile();
  for (const [realFile, name] of entries) zip.addFile(shared(realFile), name);
  zip.end();
  const chunks: Buffer[] = [];
  for await (const chunk of zip.outputStream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

type Route = { body: Buffer } | { redirect: string } | { stall: true };

interface TestServer {
  url: (route: string) => string;
  /** Paths requested so far, in order. */
  requests: string[];
  close: () => Promise<void>;
}

/** Serves `routes` on 127.0.0.1; anything else is a 404. */
async function startServer(routes: Record<string, Route>): Promise<TestServer> {
  const requests: string[] = [];
  const server = http.createServer((req, res) => {
    requests.push(req.url ?? '');
    const route = routes[req.url ?? ''];
    if (!route) {
      res.writeHead(404).end('not found');
    } else if ('redirect' in route) {
      res.writeHead(302, { location: route.redirect }).end();
    } else if ('stall' in route) {
      res.writeHead(200, { 'content-type': 'application/zip', 'content-length': '1000000' });
      res.write(Buffer.alloc(1000));
    } else {
      res.writeHead(200, { 'content-type': 'application/zip', 'content-length': route.body.length }).end(route.body);
    }
  });
  const port = await listen(server);
  return {
    url: (route) => `http://127.0.0.1:${port}${route}`,
    requests,
    close: () => closeServer(server),
  };
}

function listen(server: http.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
  });
}

function closeServer(server: http.Server): Promise<void> {
  return new Promise((resolve, reject) => {
    server.close((err) => (err ? reject(err) : resolve()));
    server.closeAllConnections();
  });
}

/** A port on 127.0.0.1 that nothing listens on: bind one, then close it. */
async function closedPort(): Promise<number> {
  const server = http.createServer();
  const port = await listen(server);
  await closeServer(server);
  return port;
}

describe('fetchModelPack', () => {
  let pack: ModelPack;
  let server: TestServer;
  let zips: { both: Buffer; badEmbedder: Buffer; noEmbedder: Buffer };
  const tempDirs: string[] = [];

  async function tempModelsDir(): Promise<string> {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'facematch-model-fetch-'));
    tempDirs.push(dir);
    return path.join(dir, 'models');
  }

  beforeAll(async () => {
    pack = await readModelPack('test');
    zips = {
      both: await makeZip([
        [DETECTOR, `test/${DETECTOR}`],
        [EMBEDDER, `test/${EMBEDDER}`],
      ]),
      badEmbedder: await makeZip([
        [DETECTOR, DETECTOR],
        ['det_2.5g.onnx', EMBEDDER],
      ]),
      noEmbedder: await makeZip([[DETECTOR, `test/${DETECTOR}`]]),
    };
    server = await startServer({
      '/both.zip': { body: zips.both },
      '/bad-embedder.zip': { body: zips.badEmbedder },
      '/no-embedder.zip': { body: zips.noEmbedder },
      '/not-a-zip.zip': { body: Buffer.from('<html>a login page</html>') },
      '/releases/download/v1/test.zip': { redirect: '/both.zip' },
      '/stall.zip': { stall: true },
    });
  });

  afterAll(async () => {
    await server.close();
  });

  afterEach(async () => {
    await Promise.all(tempDirs.splice(0).map((dir) => rm(dir, { recursive: true, force: true })));
  });

  it('downloads both files from a zip folder, verified and byte-identical, then finds them present', async () => {
    const modelsDir = await tempModelsDir();
    const progress: FetchProgress[] = [];
    const before = server.requests.length;

    const first = await fetchModelPack(pack, modelsDir, {
      url: server.url('/both.zip'),
      onProgress: (p) => progress.push(p),
    });

    expect(first).toEqual([
      { file: DETECTOR, path: path.join(modelsDir, DETECTOR), sha256: pack.detector.sha256, status: 'downloaded' },
      { file: EMBEDDER, path: path.join(modelsDir, EMBEDDER), sha256: pack.embedder.sha256, status: 'downloaded' },
    ]);
    expect(await sha256File(path.join(modelsDir, DETECTOR))).toBe(pack.detector.sha256);
    expect(await sha256File(path.join(modelsDir, EMBEDDER))).toBe(pack.embedder.sha256);
    expect((await readFile(path.join(modelsDir, DETECTOR))).equals(await readFile(shared(DETECTOR)))).toBe(true);
    expect((await readFile(path.join(modelsDir, EMBEDDER))).equals(await readFile(shared(EMBEDDER)))).toBe(true);
    expect((await readdir(modelsDir)).sort()).toEqual([DETECTOR, EMBEDDER]);
    expect(progress.at(-1)).toEqual({ file: 'both.zip', bytes: zips.both.length, total: zips.both.length });
    expect(server.requests.length).toBe(before + 1);

    const second = await fetchModelPack(pack, modelsDir, { url: server.url('/both.zip') });

    expect(second.map((r) => r.status)).toEqual(['present', 'present']);
    expect(server.requests.length).toBe(before + 1);
  });

  it('downloads the source of a derived embedder, then derives it (test-batched)', async () => {
    const modelsDir = await tempModelsDir();
    const batched = await readModelPack('test-batched');
    const result = await fetchModelPack(batched, modelsDir, { url: server.url('/both.zip') });
    expect(result.map((r) => [r.file, r.status])).toEqual([
      [DETECTOR, 'downloaded'],
      [EMBEDDER, 'downloaded'],
      [batched.embedder.file, 'derived'],
    ]);
    expect(await sha256File(result[2]!.path)).toBe(batched.embedder.sha256);
  });

  it('follows redirects, as GitHub release downloads need', async () => {
    const modelsDir = await tempModelsDir();
    const result = await fetchModelPack(pack, modelsDir, { url: server.url('/releases/download/v1/test.zip') });
    expect(result.map((r) => r.status)).toEqual(['downloaded', 'downloaded']);
    expect(server.requests.slice(-2)).toEqual(['/releases/download/v1/test.zip', '/both.zip']);
  });

  it('rejects a file whose sha256 is not the manifest’s and leaves the existing file untouched', async () => {
    const modelsDir = await tempModelsDir();
    await mkdir(modelsDir, { recursive: true });
    const existing = path.join(modelsDir, EMBEDDER);
    await copyFile(shared(EMBEDDER), existing);
    const before = await stat(existing);

    const attempt = fetchModelPack(pack, modelsDir, { url: server.url('/bad-embedder.zip') });

    await expect(attempt).rejects.toMatchObject({ code: 'MODEL_CHECKSUM_MISMATCH' });
    const error = (await attempt.catch((e: unknown) => e)) as Error;
    expect(error.message).toContain(EMBEDDER);
    expect(error.message).toContain(pack.embedder.sha256);
    expect(error.message).toContain(await sha256File(shared('det_2.5g.onnx')));
    const after = await stat(existing);
    expect(after.ino).toBe(before.ino);
    expect(after.mtimeMs).toBe(before.mtimeMs);
    expect(await sha256File(existing)).toBe(pack.embedder.sha256);
    // Nothing is installed from a bad zip (not even the good detector) and no temp file is left.
    expect(await readdir(modelsDir)).toEqual([EMBEDDER]);
  });

  it('maps a 404 to SOURCE_NOT_FOUND and a closed port to SOURCE_UNREACHABLE', async () => {
    const modelsDir = await tempModelsDir();
    const missing = server.url('/nope.zip');
    await expect(fetchModelPack(pack, modelsDir, { url: missing })).rejects.toMatchObject({
      code: 'SOURCE_NOT_FOUND',
      message: expect.stringContaining(missing) as string,
    });

    const unreachable = `http://127.0.0.1:${await closedPort()}/test.zip`;
    await expect(fetchModelPack(pack, modelsDir, { url: unreachable })).rejects.toMatchObject({
      code: 'SOURCE_UNREACHABLE',
      message: expect.stringContaining(unreachable) as string,
    });
    expect(await readdir(modelsDir)).toEqual([]);
  });

  it('gives up with SOURCE_UNREACHABLE when the server stops sending', async () => {
    const modelsDir = await tempModelsDir();
    await expect(
      fetchModelPack(pack, modelsDir, { url: server.url('/stall.zip'), timeoutMs: 300 }),
    ).rejects.toMatchObject({ code: 'SOURCE_UNREACHABLE', message: expect.stringContaining('no data') as string });
    expect(await readdir(modelsDir)).toEqual([]);
  });

  it('reports MODEL_NOT_FOUND for a zip without the embedder', async () => {
    const modelsDir = await tempModelsDir();
    await expect(fetchModelPack(pack, modelsDir, { url: server.url('/no-embedder.zip') })).rejects.toMatchObject({
      code: 'MODEL_NOT_FOUND',
      message: expect.stringContaining(EMBEDDER) as string,
    });
    expect(await readdir(modelsDir)).toEqual([]);
  });

  it('reports MODEL_NOT_FOUND when the download is not a zip', async () => {
    const modelsDir = await tempModelsDir();
    await expect(fetchModelPack(pack, modelsDir, { url: server.url('/not-a-zip.zip') })).rejects.toMatchObject({
      code: 'MODEL_NOT_FOUND',
    });
    expect(await readdir(modelsDir)).toEqual([]);
  });

  it('asks for a manual copy when the pack has no source and its files are missing', async () => {
    const modelsDir = await tempModelsDir();
    expect(pack.source).toBeUndefined();
    await expect(fetchModelPack(pack, modelsDir)).rejects.toMatchObject({
      code: 'CONFIG_INVALID',
      message: expect.stringContaining('pack test has no download source') as string,
    });
  });
});
