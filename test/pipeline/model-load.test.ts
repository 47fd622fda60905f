/** Loading model packs: clear failures for wrong files, and the CUDA → CPU fallback. */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FaceAnalyzer } from '../../src/inference/face-analyzer.js';
import { MANIFESTS_DIR } from '../../src/inference/model-pack.js';
import { createSession } from '../../src/inference/onnx-session.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { MODELS_DIR, testConfig } from '../support/shared.js';

let dir: string;
let testPack: Record<string, unknown> & { detector: Record<string, unknown>; embedder: Record<string, unknown> };

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'facematch-pack-'));
  testPack = JSON.parse(await readFile(path.join(MANIFESTS_DIR, 'test.json'), 'utf8'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

async function loadWith(change: (p: typeof testPack) => void, extra: Record<string, string> = {}): Promise<unknown> {
  const pack = structuredClone(testPack);
  change(pack);
  const file = path.join(dir, `pack-${Math.random().toString(36).slice(2)}.json`);
  await writeFile(file, JSON.stringify(pack));
  const c = testConfig({ FACEMATCH_MODEL_PACK: file, ...extra });
  try {
    await FaceAnalyzer.load(c.inference, c.decode, createLogger('silent'));
    return undefined;
  } catch (error) {
    return error;
  }
}

describe('model pack loading', () => {
  it('every shipped manifest is valid', async () => {
    for (const name of ['buffalo_l', 'buffalo_s', 'buffalo_sc', 'test']) {
      const error = await loadWith(() => undefined, { FACEMATCH_MODEL_PACK: name });
      // The buffalo weights are not on this machine: the failure must be the missing file, not the manifest.
      if (name !== 'test') expect(error).toMatchObject({ code: 'MODEL_NOT_FOUND' });
      else expect(error).toBeUndefined();
    }
  });

  it('a detector file that is not SCRFD fails naming the file and the mismatch', async () => {
    const error = await loadWith((p) => {
      p.detector.file = 'mbf512_faceplugin.onnx';
      p.detector.sha256 = p.embedder.sha256;
    });
    expect(error).toMatchObject({ code: 'MODEL_MISMATCH' });
    expect((error as Error).message).toMatch(/detector .*mbf512_faceplugin\.onnx/);
    expect((error as Error).message).toMatch(/is 112x112, the manifest says 640x640/);
  });

  it('an embedder whose size differs from the manifest fails with the sizes named', async () => {
    const error = await loadWith((p) => {
      p.embedder.embeddingSize = 128;
    });
    expect(error).toMatchObject({ code: 'MODEL_MISMATCH' });
    expect((error as Error).message).toMatch(/\[N,128\]/);
  });

  it('a file whose sha256 differs from the manifest is refused', async () => {
    const error = await loadWith((p) => {
      p.detector.sha256 = '0'.repeat(64);
    });
    expect(error).toMatchObject({ code: 'MODEL_CHECKSUM_MISMATCH' });
    expect((error as Error).message).toContain('det_500m.onnx');
  });

  it('a missing file says how to get it', async () => {
    const error = await loadWith((p) => {
      p.embedder.file = 'nowhere.onnx';
    });
    expect(error).toMatchObject({ code: 'MODEL_NOT_FOUND' });
    expect((error as Error).message).toMatch(/facematch models fetch/);
  });

  it('an unknown pack name is a configuration error', async () => {
    const error = await loadWith(() => undefined, { FACEMATCH_MODEL_PACK: 'no_such_pack' });
    expect(error).toMatchObject({ code: 'CONFIG_INVALID' });
  });
});

describe('execution providers', () => {
  it('falls back to the CPU, with a warning in the log, when CUDA cannot load', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(chunk.toString());
        done();
      },
    });
    const log = pino({ level: 'info' }, sink);
    const loaded = await createSession(
      path.join(MODELS_DIR, 'det_500m.onnx'),
      { device: 'cuda', cudaDeviceId: 0, intraOpThreads: 1, interOpThreads: 1 },
      log,
    );
    // This machine has no GPU (and the CUDA provider libraries are not installed): CPU it is.
    expect(loaded.provider).toBe('cpu');
    const warning = lines.map((l) => JSON.parse(l) as { level: number; msg: string }).find((l) => l.level === 40);
    expect(warning?.msg).toMatch(/CUDA execution provider unavailable, falling back to CPU/);
    expect(loaded.session.inputNames).toEqual(['input.1']);
  });
});
