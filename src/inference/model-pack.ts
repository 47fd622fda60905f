/**
 * Model packs: a small JSON manifest naming a detector and an embedder, their layouts, input
 * formats, sha256 and the recommended match threshold. Manifests ship in models/; weights live in
 * the configured models directory and are never committed.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { PACKAGE_ROOT } from '../config/config.js';
import { ConfigError, ModelChecksumError, ModelNotFoundError } from '../domain/errors.js';
import type { EmbedderIdentity } from '../ports/vector-store.js';

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

/** Which embedder a pack's vectors come from, as the vector store records it (see VectorStore.init). */
export function embedderIdentity(pack: ModelPack): EmbedderIdentity {
  return { pack: pack.name, sha256: pack.embedder.sha256 };
}

export function modelPath(modelsDir: string, file: string): string {
  return path.resolve(modelsDir, file);
}

export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Checks that a model file exists and, when asked, that its sha256 is the manifest's. */
export async function checkModelFile(
  modelsDir: string,
  spec: { file: string; sha256: string },
  verifyHash: boolean,
): Promise<string> {
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
