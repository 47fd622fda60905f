/**
 * The dynamic-batch rewrite of the test embedder, on the real model and real faces: several faces in
 * one run give each face the embedding the original model gives it alone, and the derived file is
 * the one the test-batched manifest pins.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema, TensorShapeProto_DimensionSchema } from 'onnx-buf';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GROUPS_DIR, MODELS_DIR, testConfig } from '../../test/support/shared.js';
import { cosine } from '../domain/face.js';
import { createLogger } from '../telemetry/logger.js';
import { alignmentToImage, l2normalise, MAX_BATCH } from './arcface.embedder.js';
import { FaceAnalyzer } from './face-analyzer.js';
import { sampleToTensor } from './geometry.js';
import { deriveModelFile, embedderIdentity, readModelPack, type ModelPack } from './model-pack.js';
import { DYNAMIC_BATCH_MARK, withDynamicBatch } from './onnx-batch-axis.js';

const PER = 3 * 112 * 112;
const SOURCE = path.join(MODELS_DIR, 'mbf512_faceplugin.onnx');

let source: Buffer;
let pack: ModelPack;
let cache: string;

beforeAll(async () => {
  source = await readFile(SOURCE);
  pack = await readModelPack('test-batched');
  cache = await mkdtemp(path.join(tmpdir(), 'facematch-derive-'));
});
afterAll(() => rm(cache, { recursive: true, force: true }));

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** Faces of two group photos (5 + 6 people), aligned as the embedder aligns them, back to back. */
async function realFaces(count: number): Promise<Float32Array> {
  const c = testConfig();
  const analyzer = await FaceAnalyzer.load(c.inference, c.decode, createLogger('silent'));
  const spec = analyzer.pack.embedder;
  const layout = { width: 112, height: 112, mean: spec.mean, std: spec.std, bgr: false };
  const out = new Float32Array(count * PER);
  let n = 0;
  for (const photo of ['faceapi_bbt3.jpg', 'insightface_t1.jpg']) {
    const decoded = await analyzer.decode(await readFile(path.join(GROUPS_DIR, photo)), photo);
    for (const face of await analyzer.detectDecoded(decoded)) {
      if (n === count) break;
      sampleToTensor(decoded.image, alignmentToImage(face.landmarks, [112, 112]), layout, out, n++ * PER);
    }
  }
  expect(n).toBe(count);
  return out;
}

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error('expected a throw');
}

async function embed(file: string, faces: Float32Array, batch: number): Promise<Float32Array[]> {
  const session = await ort.InferenceSession.create(file, { logSeverityLevel: 3 });
  const count = faces.length / PER;
  const result: Float32Array[] = [];
  for (let start = 0; start < count; start += batch) {
    const tensor = new ort.Tensor('float32', faces.slice(start * PER, (start + batch) * PER), [batch, 3, 112, 112]);
    const data = (await session.run({ input: tensor })).output!.data as Float32Array;
    for (let i = 0; i < batch; i++) result.push(l2normalise(data.slice(i * 512, (i + 1) * 512)));
  }
  await session.release();
  return result;
}

describe('withDynamicBatch', () => {
  it('frees the batch of the test embedder: symbolic input and output, the final Reshape copies dim 0', async () => {
    const { bytes, values, reshapes } = withDynamicBatch(source);
    expect(values).toEqual(['input', 'output']);
    expect(reshapes).toHaveLength(1);
    const session = await ort.InferenceSession.create(bytes, { logSeverityLevel: 3 });
    expect(session.inputMetadata[0]).toMatchObject({ name: 'input', shape: ['N', 3, 112, 112] });
    expect(session.outputMetadata[0]).toMatchObject({ name: 'output', shape: ['N', 512] });
    await session.release();
    const model = fromBinary(ModelProtoSchema, bytes);
    expect(model.metadataProps).toContainEqual(expect.objectContaining({ key: DYNAMIC_BATCH_MARK, value: 'dynamic-batch N' }));
  });

  it('is deterministic and gives the bytes the test-batched manifest pins', () => {
    const a = withDynamicBatch(source).bytes;
    const b = withDynamicBatch(Buffer.from(source)).bytes;
    expect(sha256(a)).toBe(sha256(b));
    expect(sha256(a)).toBe(pack.embedder.sha256);
    expect(pack.embedder.derivedFrom?.sha256).toBe(sha256(source));
  });

  it('embeds 8 real faces in one run as the original embeds each alone (cosine > 0.9999)', async () => {
    const faces = await realFaces(8);
    const file = await deriveModelFile(MODELS_DIR, pack.embedder, pack.embedder.derivedFrom!, cache);
    const alone = await embed(SOURCE, faces, 1);
    const together = await embed(file, faces, 8);
    for (let i = 0; i < 8; i++) {
      expect(cosine(alone[i]!, together[i]!)).toBeGreaterThan(0.9999);
      // and not some other face's: different people are far apart
      expect(cosine(alone[i]!, together[(i + 1) % 8]!)).toBeLessThan(0.9);
    }
  });

  it('refuses a model whose batch is fixed at another size, and bytes that are not a model', () => {
    const model = fromBinary(ModelProtoSchema, source);
    const dims = model.graph!.input[0]!.type!.value;
    if (dims.case !== 'tensorType') throw new Error('unexpected input type');
    dims.value.shape!.dim[0] = create(TensorShapeProto_DimensionSchema, { value: { case: 'dimValue', value: 4n } });
    expect(thrown(() => withDynamicBatch(toBinary(ModelProtoSchema, model)))).toMatchObject({
      code: 'MODEL_MISMATCH',
      message: expect.stringMatching(/input "input" has batch 4, not 1/),
    });
    expect(thrown(() => withDynamicBatch(new TextEncoder().encode('not an onnx model at all')))).toMatchObject({
      code: 'MODEL_MISMATCH',
    });
  });
});

describe('deriveModelFile', () => {
  it('derives once into the cache, then reuses the file; a damaged cached file is derived again', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'facematch-derive-'));
    try {
      const from = pack.embedder.derivedFrom!;
      const file = await deriveModelFile(MODELS_DIR, pack.embedder, from, dir);
      expect(path.dirname(file)).toBe(dir);
      expect(sha256(await readFile(file))).toBe(pack.embedder.sha256);
      const first = await stat(file);
      expect(await deriveModelFile(MODELS_DIR, pack.embedder, from, dir)).toBe(file);
      expect((await stat(file)).mtimeMs).toBe(first.mtimeMs);
      await writeFile(file, 'damaged');
      expect(await deriveModelFile(MODELS_DIR, pack.embedder, from, dir)).toBe(file);
      expect(sha256(await readFile(file))).toBe(pack.embedder.sha256);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses a source whose sha256 is not the manifest’s (when nothing derived is cached yet)', async () => {
    const from = { ...pack.embedder.derivedFrom!, sha256: '0'.repeat(64) };
    const empty = path.join(cache, 'empty');
    await expect(deriveModelFile(MODELS_DIR, pack.embedder, from, empty)).rejects.toMatchObject({ code: 'MODEL_CHECKSUM_MISMATCH' });
  });

  it('a missing source names the file to fetch', async () => {
    const from = { ...pack.embedder.derivedFrom!, file: 'no-such-model.onnx' };
    const spec = { ...pack.embedder, file: 'no-such-model.batched.onnx' };
    await expect(deriveModelFile(MODELS_DIR, spec, from, path.join(cache, 'empty'))).rejects.toMatchObject({
      code: 'MODEL_NOT_FOUND',
      message: expect.stringMatching(/no-such-model\.onnx/),
    });
  });

  it('keeps the source embedder’s identity, so stored vectors stay comparable', async () => {
    expect(embedderIdentity(pack).sha256).toBe(embedderIdentity(await readModelPack('test')).sha256);
  });
});

describe('the test-batched pack', () => {
  it('embeds a crowd in runs of at most MAX_BATCH faces, with the test pack’s faces and embeddings', async () => {
    const photo = await readFile(path.join(GROUPS_DIR, 'insightface-rest_lumia.jpg'));
    const load = (name: string): Promise<FaceAnalyzer> => {
      const c = testConfig({ FACEMATCH_MODEL_PACK: name });
      return FaceAnalyzer.load(c.inference, c.decode, createLogger('silent'));
    };
    const [plain, batched] = [await load('test'), await load('test-batched')];
    expect(plain.embedder.batched).toBe(false);
    expect(batched.embedder.batched).toBe(true);
    const a = await plain.analyze(photo);
    const runsBefore = batched.embedder.runs;
    const b = await batched.analyze(photo);
    expect(a.faces.length).toBeGreaterThan(MAX_BATCH);
    expect(b.faces).toHaveLength(a.faces.length);
    expect(batched.embedder.runs - runsBefore).toBe(Math.ceil(a.faces.length / MAX_BATCH));
    a.faces.forEach((f, i) => expect(cosine(f.embedding, b.faces[i]!.embedding)).toBeGreaterThan(0.9999));
  });
});
