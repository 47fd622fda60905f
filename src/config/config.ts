/**
 * The one place that reads process.env: a validated, cached parse. Defaults run on a laptop.
 * Every variable is listed in the README's configuration table.
 */
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { ConfigError } from '../domain/errors.js';

/** The package root (holds models/*.json), two levels above src/config or dist/config. */
export const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((v) => v === 'true' || v === '1' || v === 'yes');
const int = (min: number) => z.coerce.number().int().min(min);
const unit = z.coerce.number().min(0).max(1);

const schema = z.object({
  FACEMATCH_MODEL_PACK: z.string().min(1).default('buffalo_l'),
  FACEMATCH_MODELS_DIR: z.string().min(1).default(path.join(PACKAGE_ROOT, 'models')),
  FACEMATCH_VERIFY_MODELS: bool.default('true'),
  FACEMATCH_MATCH_THRESHOLD: z.coerce.number().min(-1).max(1).optional(),
  FACEMATCH_DEVICE: z.enum(['cpu', 'cuda']).default('cpu'),
  FACEMATCH_CUDA_DEVICE_ID: int(0).default(0),
  FACEMATCH_INTRA_OP_THREADS: int(0).default(0),
  FACEMATCH_INTER_OP_THREADS: int(0).default(0),
  FACEMATCH_INFERENCE_WORKERS: int(1).default(Math.min(4, availableParallelism())),
  FACEMATCH_DET_SCORE: unit.default(0.5),
  FACEMATCH_NMS_IOU: unit.default(0.4),
  FACEMATCH_MIN_FACE_SIZE: int(0).default(16),
  FACEMATCH_MAX_PIXELS: int(1).default(150_000_000),
  FACEMATCH_DECODE_MAX_SIDE: int(0).default(2560),
  FACEMATCH_MAX_IMAGE_BYTES: int(1).default(64 * 1024 * 1024),
  FACEMATCH_FETCH_TIMEOUT_MS: int(1).default(15_000),
  FACEMATCH_SOURCE_ALLOW: z.string().default(''),
  FACEMATCH_DATA_DIR: z.string().min(1).default('data'),
  FACEMATCH_BUCKET: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'an S3 bucket name').default('facematch'),
  FACEMATCH_ANNOTATED_MAX_SIDE: int(0).default(2048),
  FACEMATCH_HOST: z.string().min(1).default('0.0.0.0'),
  FACEMATCH_GRPC_PORT: int(0).max(65535).default(50051),
  FACEMATCH_HTTP_PORT: int(0).max(65535).default(8080),
  FACEMATCH_MAX_IN_FLIGHT: int(1).default(8),
  FACEMATCH_MAX_MESSAGE_BYTES: int(1024).default(4 * 1024 * 1024),
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: z.string().url().optional(),
  OTEL_EXPORTER_OTLP_ENDPOINT: z.string().url().optional(),
  FACEMATCH_LOG_LEVEL: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
});

export interface InferenceConfig {
  modelPack: string;
  modelsDir: string;
  verifyModels: boolean;
  /** Overrides the model pack's recommended threshold when set. */
  matchThreshold: number | undefined;
  device: 'cpu' | 'cuda';
  cudaDeviceId: number;
  /** Worker threads running inference in the service (each with its own sessions). */
  workers: number;
  /** 0: onnxruntime's choice (the CLI), or cores / workers in the service. */
  intraOpThreads: number;
  interOpThreads: number;
  detScore: number;
  nmsIou: number;
  /** Faces whose box is smaller than this many pixels on its shorter side are dropped. */
  minFaceSize: number;
}

export interface DecodeConfig {
  maxPixels: number;
  /** Images are shrunk on load so that their longer side is at most this (0: never). */
  maxSide: number;
}

export interface SourceConfig {
  maxBytes: number;
  timeoutMs: number;
  /** CIDRs or addresses downloads may reach besides public unicast ones (SSRF allow-list). */
  allow: string[];
}

export interface ServerConfig {
  host: string;
  grpcPort: number;
  httpPort: number;
  /** Requests being processed at once; beyond it, RESOURCE_EXHAUSTED instead of a queue. */
  maxInFlight: number;
  maxMessageBytes: number;
}

export interface StoreConfig {
  /** Embedded stores live here: db/ (PGlite) and objects/ (annotated images). */
  dataDir: string;
  bucket: string;
  /** Annotated copies are shrunk to this longer side (0: original size). */
  annotatedMaxSide: number;
}

export interface Config {
  inference: InferenceConfig;
  decode: DecodeConfig;
  source: SourceConfig;
  server: ServerConfig;
  stores: StoreConfig;
  /** OTLP/HTTP traces URL (Jaeger: http://jaeger:4318/v1/traces); unset: no export. */
  otlpTracesEndpoint: string | undefined;
  logLevel: z.infer<typeof schema>['FACEMATCH_LOG_LEVEL'];
}

export function parseConfig(env: NodeJS.ProcessEnv): Config {
  const parsed = schema.safeParse(env);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    throw new ConfigError(`invalid configuration: ${problems}`);
  }
  const e = parsed.data;
  return {
    inference: {
      modelPack: e.FACEMATCH_MODEL_PACK,
      modelsDir: path.resolve(e.FACEMATCH_MODELS_DIR),
      verifyModels: e.FACEMATCH_VERIFY_MODELS,
      matchThreshold: e.FACEMATCH_MATCH_THRESHOLD,
      device: e.FACEMATCH_DEVICE,
      cudaDeviceId: e.FACEMATCH_CUDA_DEVICE_ID,
      workers: e.FACEMATCH_INFERENCE_WORKERS,
      intraOpThreads: e.FACEMATCH_INTRA_OP_THREADS,
      interOpThreads: e.FACEMATCH_INTER_OP_THREADS,
      detScore: e.FACEMATCH_DET_SCORE,
      nmsIou: e.FACEMATCH_NMS_IOU,
      minFaceSize: e.FACEMATCH_MIN_FACE_SIZE,
    },
    decode: { maxPixels: e.FACEMATCH_MAX_PIXELS, maxSide: e.FACEMATCH_DECODE_MAX_SIDE },
    source: {
      maxBytes: e.FACEMATCH_MAX_IMAGE_BYTES,
      timeoutMs: e.FACEMATCH_FETCH_TIMEOUT_MS,
      allow: e.FACEMATCH_SOURCE_ALLOW.split(',')
        .map((a) => a.trim())
        .filter(Boolean),
    },
    server: {
      host: e.FACEMATCH_HOST,
      grpcPort: e.FACEMATCH_GRPC_PORT,
      httpPort: e.FACEMATCH_HTTP_PORT,
      maxInFlight: e.FACEMATCH_MAX_IN_FLIGHT,
      maxMessageBytes: e.FACEMATCH_MAX_MESSAGE_BYTES,
    },
    stores: { dataDir: path.resolve(e.FACEMATCH_DATA_DIR), bucket: e.FACEMATCH_BUCKET, annotatedMaxSide: e.FACEMATCH_ANNOTATED_MAX_SIDE },
    otlpTracesEndpoint:
      e.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ??
      (e.OTEL_EXPORTER_OTLP_ENDPOINT ? `${e.OTEL_EXPORTER_OTLP_ENDPOINT.replace(/\/$/, '')}/v1/traces` : undefined),
    logLevel: e.FACEMATCH_LOG_LEVEL,
  };
}

let cached: Config | undefined;

/** The process configuration, parsed once. */
export function loadConfig(): Config {
  cached ??= parseConfig(process.env);
  return cached;
}
