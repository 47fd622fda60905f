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
/** A URL of one of `protocols` (a regexp on `URL.protocol`, e.g. /^https?:$/). */
const urlOf = (protocols: RegExp, what: string, o: { pathless?: boolean } = {}) =>
  z.string().refine((value) => {
    try {
      const url = new URL(value);
      return protocols.test(url.protocol) && (!o.pathless || url.pathname === '/');
    } catch {
      return false;
    }
  }, what);

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
  FACEMATCH_VECTOR_STORE: z.enum(['embedded', 'milvus']).default('embedded'),
  FACEMATCH_MATCH_STORE: z.enum(['embedded', 'postgres']).default('embedded'),
  FACEMATCH_OBJECT_STORE: z.enum(['embedded', 's3']).default('embedded'),
  FACEMATCH_POSTGRES_URL: urlOf(/^postgres(ql)?:$/, 'a postgres://user:password@host:port/database URL').optional(),
  FACEMATCH_POSTGRES_POOL_MAX: int(1).default(10),
  FACEMATCH_POSTGRES_TIMEOUT_MS: int(100).default(5000),
  FACEMATCH_S3_ENDPOINT: urlOf(/^https?:$/, 'an http(s)://host[:port] URL without a path', { pathless: true }).optional(),
  FACEMATCH_S3_ACCESS_KEY: z.string().min(1).optional(),
  FACEMATCH_S3_SECRET_KEY: z.string().min(1).optional(),
  FACEMATCH_S3_REGION: z.string().min(1).default('us-east-1'),
  // S3 signs a URL for at most 7 days.
  FACEMATCH_PRESIGN_SECONDS: int(1).max(604_800).default(3600),
  FACEMATCH_MILVUS_ADDRESS: z.string().min(1).default('127.0.0.1:19530'),
  FACEMATCH_MILVUS_TOKEN: z.string().min(1).optional(),
  FACEMATCH_MILVUS_COLLECTION_PREFIX: z
    .string()
    .regex(/^[A-Za-z_][A-Za-z0-9_]{0,199}$/, 'letters, digits and underscores, not starting with a digit')
    .default('facematch'),
  FACEMATCH_MILVUS_INDEX: z.enum(['HNSW', 'FLAT']).default('HNSW'),
  FACEMATCH_MILVUS_HNSW_M: int(2).max(2048).default(16),
  FACEMATCH_MILVUS_HNSW_EF_CONSTRUCTION: int(1).default(200),
  FACEMATCH_MILVUS_SEARCH_EF: int(1).max(32_768).default(64),
  FACEMATCH_MILVUS_TIMEOUT_MS: int(100).default(5000),
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

/** The Milvus vector store (used when the vector store is Milvus). */
export interface MilvusConfig {
  /** host:port of the Milvus proxy. */
  address: string;
  /** Secret (redact when printing): "user:password" or an API key; undefined without authentication. */
  token: string | undefined;
  /** Collections are `<prefix>_action_faces` and `<prefix>_user_samples`. */
  collectionPrefix: string;
  /** Index built on new collections (an existing collection keeps its own). */
  index: 'HNSW' | 'FLAT';
  hnswM: number;
  hnswEfConstruction: number;
  /** HNSW `ef` for searches (raised to the search limit when smaller). */
  searchEf: number;
  /** Deadline of each call to Milvus. */
  timeoutMs: number;
}

/** The PostgreSQL match store. */
export interface PostgresConfig {
  /** postgres://user:password@host:port/database. Secret (redact when printing). */
  url: string;
  /** Connections of the pool. */
  poolMax: number;
  /** Deadline to get a connection, and of each statement. */
  timeoutMs: number;
}

/** The S3 object store (MinIO, versitygw, AWS ...); the bucket is StoreConfig.bucket. */
export interface S3Config {
  /** http(s)://host:port */
  endpoint: string;
  accessKey: string;
  /** Secret (redact when printing). */
  secretKey: string;
  region: string;
  /** Lifetime of the presigned GET URLs handed out as object locations. */
  presignSeconds: number;
}

export interface StoreConfig {
  /** Which adapter each port gets; embedded unless configured. */
  vectorStore: 'embedded' | 'milvus';
  matchStore: 'embedded' | 'postgres';
  objectStore: 'embedded' | 's3';
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
  milvus: MilvusConfig;
  /** Set when FACEMATCH_POSTGRES_URL is (required by FACEMATCH_MATCH_STORE=postgres). */
  postgres: PostgresConfig | undefined;
  /** Set when FACEMATCH_S3_ENDPOINT is (required, with the keys, by FACEMATCH_OBJECT_STORE=s3). */
  s3: S3Config | undefined;
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
  const missing = [
    ...(e.FACEMATCH_MATCH_STORE === 'postgres' ? (['FACEMATCH_POSTGRES_URL'] as const) : []),
    ...(e.FACEMATCH_OBJECT_STORE === 's3' ? (['FACEMATCH_S3_ENDPOINT', 'FACEMATCH_S3_ACCESS_KEY', 'FACEMATCH_S3_SECRET_KEY'] as const) : []),
  ].filter((name) => e[name] === undefined);
  if (missing.length > 0) {
    const why = (name: string) => `${name}: required with ${name.startsWith('FACEMATCH_S3') ? 'FACEMATCH_OBJECT_STORE=s3' : 'FACEMATCH_MATCH_STORE=postgres'}`;
    throw new ConfigError(`invalid configuration: ${missing.map(why).join('; ')}`);
  }
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
    stores: {
      vectorStore: e.FACEMATCH_VECTOR_STORE,
      matchStore: e.FACEMATCH_MATCH_STORE,
      objectStore: e.FACEMATCH_OBJECT_STORE,
      dataDir: path.resolve(e.FACEMATCH_DATA_DIR),
      bucket: e.FACEMATCH_BUCKET,
      annotatedMaxSide: e.FACEMATCH_ANNOTATED_MAX_SIDE,
    },
    postgres:
      e.FACEMATCH_POSTGRES_URL === undefined
        ? undefined
        : { url: e.FACEMATCH_POSTGRES_URL, poolMax: e.FACEMATCH_POSTGRES_POOL_MAX, timeoutMs: e.FACEMATCH_POSTGRES_TIMEOUT_MS },
    s3:
      e.FACEMATCH_S3_ENDPOINT === undefined || e.FACEMATCH_S3_ACCESS_KEY === undefined || e.FACEMATCH_S3_SECRET_KEY === undefined
        ? undefined
        : {
            endpoint: e.FACEMATCH_S3_ENDPOINT,
            accessKey: e.FACEMATCH_S3_ACCESS_KEY,
            secretKey: e.FACEMATCH_S3_SECRET_KEY,
            region: e.FACEMATCH_S3_REGION,
            presignSeconds: e.FACEMATCH_PRESIGN_SECONDS,
          },
    milvus: {
      address: e.FACEMATCH_MILVUS_ADDRESS,
      token: e.FACEMATCH_MILVUS_TOKEN,
      collectionPrefix: e.FACEMATCH_MILVUS_COLLECTION_PREFIX,
      index: e.FACEMATCH_MILVUS_INDEX,
      hnswM: e.FACEMATCH_MILVUS_HNSW_M,
      hnswEfConstruction: e.FACEMATCH_MILVUS_HNSW_EF_CONSTRUCTION,
      searchEf: e.FACEMATCH_MILVUS_SEARCH_EF,
      timeoutMs: e.FACEMATCH_MILVUS_TIMEOUT_MS,
    },
    otlpTracesEndpoint:
      e.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ??
      (e.OTEL_EXPORTER_OTLP_ENDPOINT ? `${e.OTEL_EXPORTER_OTLP_ENDPOINT.replace(/\/$/, '')}/v1/traces` : undefined),
    logLevel: e.FACEMATCH_LOG_LEVEL,
  };
}

const REDACTED = '[redacted]';

/** A copy safe to print or log: passwords, secret keys and tokens replaced by `[redacted]`. */
export function redactConfig(config: Config): Config {
  const redactUrl = (url: string): string => {
    const u = new URL(url);
    if (u.password) u.password = REDACTED;
    return u.href;
  };
  return {
    ...config,
    milvus: { ...config.milvus, token: config.milvus.token === undefined ? undefined : REDACTED },
    postgres: config.postgres && { ...config.postgres, url: redactUrl(config.postgres.url) },
    s3: config.s3 && { ...config.s3, secretKey: REDACTED },
  };
}

let cached: Config | undefined;

/** The process configuration, parsed once. */
export function loadConfig(): Config {
  cached ??= parseConfig(process.env);
  return cached;
}
