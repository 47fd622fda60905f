/** Paths to ../shared (real models and photos, never copied into the repo) and a shared analyzer. */
import { readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseConfig, type Config } from '../../src/config/config.js';
import { FaceAnalyzer } from '../../src/inference/face-analyzer.js';
import { createLogger } from '../../src/telemetry/logger.js';

export const REPO = path.resolve(import.meta.dirname, '..', '..');
export const SHARED = process.env.FACEMATCH_SHARED_DIR ?? path.resolve(REPO, '..', 'shared');
export const MODELS_DIR = path.join(SHARED, 'models');
export const FACES_DIR = path.join(SHARED, 'testdata', 'faces');
export const GROUPS_DIR = path.join(SHARED, 'testdata', 'groups');

/** The store selection and addresses `scripts/test-env env` prints (integration runs set them). */
const STORE_ENV = /^FACEMATCH_(VECTOR_STORE|MATCH_STORE|OBJECT_STORE|POSTGRES_|S3_|MILVUS_|PRESIGN_)/;

/**
 * Configuration for tests: the `test` pack from ../shared/models, embedded stores unless the
 * environment selects real ones (npm run test:integration), onnxruntime session tuning off (the
 * static settings: no test pays the measuring, none writes the user's tuning cache; the tuner has
 * its own tests), other defaults untouched.
 */
export function testConfig(extra: Record<string, string> = {}): Config {
  const stores = Object.fromEntries(Object.entries(process.env).filter(([k]) => STORE_ENV.test(k)));
  return parseConfig({ FACEMATCH_MODEL_PACK: 'test', FACEMATCH_MODELS_DIR: MODELS_DIR, FACEMATCH_ORT_TUNING: 'off', ...stores, ...extra });
}

let analyzer: Promise<FaceAnalyzer> | undefined;

export function sharedAnalyzer(): Promise<FaceAnalyzer> {
  const c = testConfig();
  analyzer ??= FaceAnalyzer.load(c.inference, c.decode, createLogger('warn'));
  return analyzer;
}

export interface Identity {
  id: string;
  files: string[];
}

/** The 23 identities of testdata/faces, each with its photos in name order. */
export function identities(): Identity[] {
  return readdirSync(FACES_DIR)
    .sort()
    .map((id) => ({
      id,
      files: readdirSync(path.join(FACES_DIR, id))
        .sort()
        .map((f) => path.join(FACES_DIR, id, f)),
    }));
}

export const group = (name: string): string => path.join(GROUPS_DIR, name);
export const read = (file: string): Promise<Buffer> => readFile(file);

/** Who appears in which group photo (../shared/testdata/README.md). */
export const GROUP_PEOPLE: Readonly<Record<string, readonly string[]>> = {
  'faceapi_bbt1.jpg': ['faceapi_raj', 'faceapi_leonard', 'faceapi_howard', 'faceapi_sheldon'],
  'faceapi_bbt2.jpg': ['faceapi_leonard', 'faceapi_sheldon'],
  'faceapi_bbt3.jpg': ['faceapi_sheldon', 'faceapi_howard', 'faceapi_penny', 'faceapi_raj', 'faceapi_leonard'],
  'facerec_obama_and_biden.jpg': ['facerec_obama', 'facerec_biden'],
  'facerec_two_people.jpg': ['facerec_obama', 'facerec_biden'],
  'facerec_kit_with_rose.jpg': ['facerec_kit_harington', 'facerec_rose_leslie'],
  // Six people: the leftmost woman is deepface_id04 (checked by eye), the other five are strangers.
  'insightface_t1.jpg': ['deepface_id04'],
};

/**
 * Known misses of the `test` embedder (not of the pipeline): bearded Raj and Leonard in bbt1 score
 * 0.40-0.43 against their clean-shaven first photos, under the pack's 0.43, about what the stranger in
 * bbt2 scores against Raj (0.42); no threshold separates them with this model (README, calibration).
 */
export const KNOWN_MISSES: readonly string[] = ['faceapi_raj in faceapi_bbt1.jpg', 'faceapi_leonard in faceapi_bbt1.jpg'];
