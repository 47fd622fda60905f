/**
 * Model packs: a small JSON manifest naming a detector and an embedder, their layouts, input
 * formats, sha256 and the recommended match threshold. Manifests ship in models/; weights live in
 * the configured models directory and are never committed.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { PACKAGE_ROOT } from '../config/config.js';
import { ConfigError, ModelChecksumError, ModelNotFoundError } from '../domain/errors.js';
import type { EmbedderIdentity } from '../ports/vector-store.js';
import { withDynamicBatch } from './onnx-batch-axis.js';

const sha256 = z.string().regex(/^[0-9a-f]{64}$/, 'a lowercase hex sha256');
const size = z.tuple([z.number().int().positive(), z.number().int().positive()]);

const modelFile = z.object({
  /** File name, resolved against the models directory (or absolute). */
  file: z.string().min(1),
  sha256,
  inputSize: size,
  colorOrder: z.enum(['RGB', 'BGR']),
  /** Pixel normalisation: (x - mean) / std. */
  mean: z.number(),
  std: z.number().positive(),
});

const manifestSchema = z.object({
  name: z.string().min(1),
  description: z.string().optional(),
  /** Recommended cosine-similarity threshold for a match with this embedder. */
  threshold: z.number().min(-1).max(1),
  source: z.object({ url: z.string().url() }).optional(),
  detector: modelFile.extend({
    layout: z.literal('scrfd'),
    strides: z.array(z.number().int().positive()).min(1),
    anchorsPerCell: z.number().int().positive(),
  }),
  embedder: modelFile.extend({
    layout: z.literal('arcface'),
    embeddingSize: z.number().int().positive(),
    /**
     * The file is made from another model file by a graph rewrite (see checkModelFile), not
     * downloaded: `dynamic-batch` frees the batch axis of a model exported with batch 1.
     */
    derivedFrom: z
      .object({ file: z.string().min(1), sha256, transform: z.literal('dynamic-batch') })
      .optional(),
  }),
});

export type ModelPack = z.infer<typeof manifestSchema>;
export type DetectorSpec = ModelPack['detector'];
export type EmbedderSpec = ModelPack['embedder'];

/** The manifests that ship with facematch, by name. */
export const MANIFESTS_DIR = path.join(PACKAGE_ROOT, 'models');

/** `name` is a shipped pack (`buffalo_l`) or a path to a manifest JSON of one's own. */
export async function readModelPack(name: string): Promise<ModelPack> {
  const file = name.endsWith('.json') ? path.resolve(name) : path.join(MANIFESTS_DIR, `${name}.json`);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (cause) {
    throw new ConfigError(`model pack "${name}" not found (looked for ${file})`, { cause });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    throw new ConfigError(`model pack manifest ${file} is not valid JSON`, { cause });
  }
  const parsed = manifestSchema.safeParse(json);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    throw new ConfigError(`model pack manifest ${file} is invalid: ${problems}`);
  }
  return parsed.data;
}

/**
 * Which embedder a pack's vectors come from, as the vector store records it (see VectorStore.init).
 * A derived embedder has its source's weights and gives its embeddings, so it keeps its source's
 * identity: vectors made with either may be compared.
 */
export function embedderIdentity(pack: ModelPack): EmbedderIdentity {
  return { pack: pack.name, sha256: pack.embedder.derivedFrom?.sha256 ?? pack.embedder.sha256 };
}

export function modelPath(modelsDir: string, file: string): string {
  return path.resolve(modelsDir, file);
}

export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

export type DerivedFrom = NonNullable<EmbedderSpec['derivedFrom']>;

/**
 * Checks that a model file exists and, when asked, that its sha256 is the manifest's. A derived file
 * (`derivedFrom`) that is not there yet is made from its source and cached (see deriveModelFile).
 */
export async function checkModelFile(
  modelsDir: string,
  spec: { file: string; sha256: string; derivedFrom?: DerivedFrom | undefined },
  verifyHash: boolean,
): Promise<string> {
  if (spec.derivedFrom) return deriveModelFile(modelsDir, { file: spec.file, sha256: spec.sha256 }, spec.derivedFrom);
  const file = modelPath(modelsDir, spec.file);
  try {
    const s = await stat(file);
    if (!s.isFile()) throw new Error('not a regular file');
  } catch (cause) {
    throw new ModelNotFoundError(
      `model file ${file} is missing; run "facematch models fetch" or set FACEMATCH_MODELS_DIR`,
      { cause },
    );
  }
  if (verifyHash) {
    const actual = await sha256File(file);
    if (actual !== spec.sha256) {
      throw new ModelChecksumError(`model file ${file} has sha256 ${actual}, the manifest expects ${spec.sha256}`);
    }
  }
  return file;
}

/**
 * Where derived model files are written. Never the models directory: it may be shared or mounted
 * read-only, and a process running as root would write into it all the same.
 */
export const DERIVED_CACHE_DIR = path.join(os.tmpdir(), 'facematch-models');

/**
 * The path of a derived model file with the manifest's sha256: one already in the models directory
 * (put there by the operator) or in `cacheDir` when it verifies, else a new one made from the source
 * file (checked against its sha256), verified, and written to `cacheDir`. Both candidates are always
 * hashed: the output of the rewrite is pinned by the manifest, and the cache directory is shared. The
 * rewrite is deterministic, so every process derives the same bytes; concurrent writers each rename
 * a complete temp file into place.
 */
export async function deriveModelFile(
  modelsDir: string,
  spec: { file: string; sha256: string },
  from: DerivedFrom,
  cacheDir = DERIVED_CACHE_DIR,
): Promise<string> {
  const cached = path.resolve(cacheDir, spec.file);
  for (const file of [modelPath(modelsDir, spec.file), cached]) {
    if ((await hashIfPresent(file)) === spec.sha256) return file;
  }
  const sourceFile = modelPath(modelsDir, from.file);
  let source: Buffer;
  try {
    source = await readFile(sourceFile);
  } catch (cause) {
    throw new ModelNotFoundError(
      `model file ${sourceFile} (the source of ${spec.file}) is missing; run "facematch models fetch" or set FACEMATCH_MODELS_DIR`,
      { cause },
    );
  }
  const sourceSha = sha256Bytes(source);
  if (sourceSha !== from.sha256) {
    throw new ModelChecksumError(`model file ${sourceFile} has sha256 ${sourceSha}, the manifest expects ${from.sha256}`);
  }
  const derived = withDynamicBatch(source).bytes;
  const derivedSha = sha256Bytes(derived);
  if (derivedSha !== spec.sha256) {
    throw new ModelChecksumError(
      `${spec.file} derived (${from.transform}) from ${from.file} has sha256 ${derivedSha}, the manifest expects ${spec.sha256}`,
    );
  }
  await mkdir(path.dirname(cached), { recursive: true });
  const temp = `${cached}.${process.pid}-${randomBytes(6).toString('hex')}.part`;
  try {
    await writeFile(temp, derived, { flag: 'wx' });
    await rename(temp, cached);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
  return cached;
}

function sha256Bytes(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

async function hashIfPresent(file: string): Promise<string | undefined> {
  try {
    return await sha256File(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}
