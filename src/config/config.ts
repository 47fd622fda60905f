/**
 * The one place that reads process.env: a validated, cached parse. Defaults run on a laptop.
 * Every variable is listed in the README's configuration table. Every value is checked here, at
 * start: a bad one is a ConfigError (CONFIG_INVALID) naming the variable; an empty one means unset.
 */
import { isIP } from 'node:net';
import { availableParallelism, homedir, hostname } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { ConfigError } from '../domain/errors.js';

/** The package root (holds models/*.json), two levels above src/config or dist/config. */
export const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((v) => v === 'true' || v === '1' || v === 'yes');
const number = () => z.coerce.number({ invalid_type_error: 'not a number' });
const int = (min: number) => number().int().min(min);
const unit = number().min(0).max(1);
/**
 * A URL of one of `protocols` (a regexp on `URL.protocol`, e.g. /^https?:$/). `bare`: no path, no
 * query and no credentials (they would be logged with the address; keys have variables of their own).
 * The message never repeats the value: it may hold a password.
 */
const urlOf = (protocols: RegExp, what: string, o: { bare?: boolean } = {}) =>
  z.string().refine((value) => {
    try {
      const url = new URL(value);
      const bare = url.pathname === '/' && !url.search && !url.hash && !url.username && !url.password;
      return protocols.test(url.protocol) && (!o.bare || bare);
    } catch {
      return false;
    }
  }, what);
/** OTEL_SDK_DISABLED's form: true or false, in any case (the specification's booleans). */
const otelBool = z
  .string()
  .transform((v) => v.toLowerCase())
  .pipe(z.enum(['true', 'false']))
  .transform((v) => v === 'true');
const otlpProtocol = z.enum(['http/protobuf', 'http/json', 'grpc']);
/** The samplers of OTEL_TRACES_SAMPLER facematch builds (not jaeger_remote, xray). */
export const SAMPLERS = ['always_on', 'always_off', 'traceidratio', 'parentbased_always_on', 'parentbased_always_off', 'parentbased_traceidratio'] as const;
export type SamplerName = (typeof SAMPLERS)[number];
/**
 * `key1=value1,key2=value2` (OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_HEADERS): W3C Baggage's
 * list form without properties, values percent-decoded.
 */
const keyValues = () =>
  z.string().transform((value, ctx) => {
    const out: Record<string, string> = {};
    for (const raw of value.split(',')) {
      const pair = raw.trim();
      if (!pair) continue;
      const at = pair.indexOf('=');
      const key = at > 0 ? pair.slice(0, at).trim() : '';
      let decoded: string | undefined;
      try {
        decoded = at > 0 ? decodeURIComponent(pair.slice(at + 1).trim()) : undefined;
      } catch {
        decoded = undefined;
      }
      if (!key || !/^[\x21-\x7e]+$/.test(key) || decoded === undefined) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'each entry must be key=value (the value percent-encoded), comma-separated' });
        return z.NEVER;
      }
      out[key] = decoded;
    }
    return out;
  });
/** onnxruntime's graph optimisation levels (FACEMATCH_ORT_OPTIMIZATION). */
export const ORT_LEVELS = ['disabled', 'basic', 'extended', 'all'] as const;
export type OrtLevel = (typeof ORT_LEVELS)[number];
/** `detector=LEVEL,embedder=LEVEL` (either or both): a fixed level per model, never measured. */
const ortLevels = z.string().transform((value, ctx) => {
  const out: { detector?: OrtLevel; embedder?: OrtLevel } = {};
  for (const raw of value.split(',')) {
    const pair = raw.trim();
    if (!pair) continue;
    const [model = '', level = '', ...rest] = pair.split('=').map((p) => p.trim());
    if ((model !== 'detector' && model !== 'embedder') || !(ORT_LEVELS as readonly string[]).includes(level) || rest.length > 0 || model in out) {
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        message: `"${pair}" is not model=level (model: detector or embedder, once each; level: ${ORT_LEVELS.join(', ')})`,
        params: { quotesValue: true },
      });
      return z.NEVER;
    }
    out[model] = level as OrtLevel;
  }
  return out;
});
/** XDG_CACHE_HOME when it is an absolute path (the XDG specification ignores a relative one). */
const xdgCache = (env: NodeJS.ProcessEnv): string | undefined => {
  const dir = env.XDG_CACHE_HOME?.trim();
  return dir && path.isAbsolute(dir) ? dir : undefined;
};
const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
/** A host name or an IP address (no scheme, no port). */
const host = z.string().refine((v) => isIP(v) !== 0 || HOSTNAME.test(v), 'a host name or an IP address, without a port');
/** host:port, [v6]:port or http(s)://host:port (the forms the Milvus client takes). */
const hostPort = z.string().refine((v) => {
  const m = /^(?:https?:\/\/)?(\[([0-9A-Fa-f:.]+)\]|[^:/[\]]+)(?::(\d{1,5}))?\/?$/.exec(v);
  return !!m && (m[2] !== undefined ? isIP(m[2]) === 6 : isIP(m[1]!) !== 0 || HOSTNAME.test(m[1]!)) && Number(m[3] ?? 0) <= 65535;
}, 'host:port or http(s)://host:port');
/** A Kubernetes object or namespace name (RFC 1123 label, the stricter form); '' where allowed means unset. */
const k8sName = z.string().regex(/^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)?$/, 'a Kubernetes name: lowercase letters, digits and -, at most 63');
/** An IPv4/IPv6 address or a CIDR (address/bits), written out in full: not "127.1", not a host name. */
function addressRange(entry: string): boolean {
  const [address = '', bits, ...rest] = entry.split('/');
  const family = isIP(address);
  if (family === 0 || rest.length > 0) return false;
  return bits === undefined || (/^\d{1,3}$/.test(bits) && Number(bits) <= (family === 4 ? 32 : 128));
}
/** Comma-separated CIDRs or addresses (FACEMATCH_SOURCE_ALLOW); each is checked now, not at the first download. */
const allowList = z.string().transform((value, ctx) => {
  const entries = value
    .split(',')
    .map((a) => a.trim())
    .filter(Boolean);
  for (const entry of entries.filter((e) => !addressRange(e))) {
    ctx.addIssue({
      code: z.ZodIssueCode.custom,
      message: `"${entry}" is not an IP address or a CIDR (e.g. 10.0.0.0/8, fd00::/8)`,
      params: { quotesValue: true },
    });
  }
  return entries;
});

const schema = z.object({
  FACEMATCH_MODEL_PACK: z.string().min(1).default('buffalo_l'),
  FACEMATCH_MODELS_DIR: z.string().min(1).default(path.join(PACKAGE_ROOT, 'models')),
  FACEMATCH_VERIFY_MODELS: bool.default('true'),
  FACEMATCH_MATCH_THRESHOLD: number().min(-1).max(1).optional(),
  FACEMATCH_DEVICE: z.enum(['cpu', 'cuda']).default('cpu'),
  FACEMATCH_CUDA_DEVICE_ID: int(0).default(0),
  FACEMATCH_INTRA_OP_THREADS: int(0).default(0),
  FACEMATCH_INTER_OP_THREADS: int(0).default(0),
  FACEMATCH_ORT_TUNING: z.enum(['auto', 'off']).default('auto'),
  FACEMATCH_ORT_OPTIMIZATION: ortLevels.default(''),
  FACEMATCH_TUNING_CACHE: z.string().min(1).optional(),
  FACEMATCH_INFERENCE_WORKERS: int(1).default(Math.min(4, availableParallelism())),
  FACEMATCH_SPARE_CORES: bool.default('true'),
  FACEMATCH_DET_SCORE: unit.default(0.5),
  FACEMATCH_NMS_IOU: unit.default(0.4),
  FACEMATCH_MIN_FACE_SIZE: int(0).default(16),
  FACEMATCH_MAX_PIXELS: int(1).default(150_000_000),
  FACEMATCH_DECODE_MAX_SIDE: int(0).default(2560),
  FACEMATCH_MAX_IMAGE_BYTES: int(1).default(64 * 1024 * 1024),
  FACEMATCH_FETCH_TIMEOUT_MS: int(1).default(15_000),
  FACEMATCH_SOURCE_ALLOW: allowList.default(''),
  FACEMATCH_DATA_DIR: z.string().min(1).default('data'),
  FACEMATCH_EMBEDDED_DB_THREAD: bool.default('false'),
  FACEMATCH_BUCKET: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'an S3 bucket name').default('facematch'),
  FACEMATCH_ANNOTATED_MAX_SIDE: int(0).default(2048),
  FACEMATCH_VECTOR_STORE: z.enum(['embedded', 'milvus']).default('embedded'),
  FACEMATCH_VECTOR_NAMESPACE: z
    .string()
    .regex(/^([a-z][a-z0-9_]{0,39})?$/, 'lowercase letters, digits and underscores, starting with a letter, at most 40')
    .default(''),
  FACEMATCH_MATCH_STORE: z.enum(['embedded', 'postgres']).default('embedded'),
  FACEMATCH_OBJECT_STORE: z.enum(['embedded', 's3']).default('embedded'),
  FACEMATCH_POSTGRES_URL: urlOf(/^postgres(ql)?:$/, 'a postgres://user:password@host:port/database URL').optional(),
  FACEMATCH_POSTGRES_POOL_MAX: int(1).default(10),
  FACEMATCH_POSTGRES_TIMEOUT_MS: int(100).default(5000),
  FACEMATCH_S3_ENDPOINT: urlOf(/^https?:$/, 'an http(s)://host[:port] URL without a path, query or credentials', { bare: true }).optional(),
  FACEMATCH_S3_ACCESS_KEY: z.string().min(1).optional(),
  FACEMATCH_S3_SECRET_KEY: z.string().min(1).optional(),
  FACEMATCH_S3_REGION: z.string().min(1).default('us-east-1'),
  // S3 signs a URL for at most 7 days.
  FACEMATCH_PRESIGN_SECONDS: int(1).max(604_800).default(3600),
  FACEMATCH_MILVUS_ADDRESS: hostPort.default('127.0.0.1:19530'),
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
  FACEMATCH_HOST: host.default('0.0.0.0'),
  FACEMATCH_GRPC_PORT: int(0).max(65535).default(50051),
  FACEMATCH_HTTP_PORT: int(0).max(65535).default(8080),
  FACEMATCH_MAX_IN_FLIGHT: int(1).default(8),
  FACEMATCH_MAX_MESSAGE_BYTES: int(1024).default(4 * 1024 * 1024),
  // Graceful shutdown (README, "Stopping"): 8 s + 18 s leaves 4 s of Kubernetes' 30 s
  // terminationGracePeriodSeconds to close the stores and exit.
  FACEMATCH_SHUTDOWN_DRAIN_MS: int(0).max(600_000).default(8_000),
  FACEMATCH_SHUTDOWN_GRACE_MS: int(0).max(600_000).default(18_000),
  // OpenTelemetry (README, "Tracing"): the SDK's standard variables, read here and handed to it.
  OTEL_SDK_DISABLED: otelBool.default('false'),
  OTEL_SERVICE_NAME: z.string().max(255).optional(),
  OTEL_RESOURCE_ATTRIBUTES: keyValues().default(''),
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: urlOf(/^https?:$/, 'an http(s) URL').optional(),
  OTEL_EXPORTER_OTLP_ENDPOINT: urlOf(/^https?:$/, 'an http(s) URL').optional(),
  OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: otlpProtocol.optional(),
  OTEL_EXPORTER_OTLP_PROTOCOL: otlpProtocol.optional(),
  OTEL_EXPORTER_OTLP_TRACES_HEADERS: keyValues().optional(),
  OTEL_EXPORTER_OTLP_HEADERS: keyValues().optional(),
  OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: int(1).max(600_000).optional(),
  OTEL_EXPORTER_OTLP_TIMEOUT: int(1).max(600_000).default(10_000),
  OTEL_TRACES_SAMPLER: z.enum(SAMPLERS).default('parentbased_always_on'),
  OTEL_TRACES_SAMPLER_ARG: unit.optional(),
  FACEMATCH_TRACE_KEEP_FAILED: bool.default('true'),
  FACEMATCH_TRACE_SLOW_MS: int(0).default(5_000),
  // The PhotoBatch controller (`facematch controller`).
  KUBECONFIG: z.string().min(1).optional(),
  FACEMATCH_CONTROLLER_NAMESPACE: k8sName.default(''),
  FACEMATCH_CONTROLLER_SERVICE_ADDRESS: hostPort.default('127.0.0.1:50051'),
  FACEMATCH_CONTROLLER_WORKERS: int(1).max(64).default(2),
  FACEMATCH_CONTROLLER_HTTP_PORT: int(0).max(65535).default(8081),
  FACEMATCH_CONTROLLER_LEASE_NAMESPACE: k8sName.default('default'),
  FACEMATCH_CONTROLLER_LEASE_NAME: k8sName.default('facematch-controller'),
  FACEMATCH_CONTROLLER_IDENTITY: z.string().min(1).max(128).optional(),
  FACEMATCH_CONTROLLER_LEASE_DURATION_MS: int(1000).default(15_000),
  FACEMATCH_CONTROLLER_RENEW_DEADLINE_MS: int(500).default(10_000),
  FACEMATCH_CONTROLLER_RETRY_PERIOD_MS: int(100).default(2_000),
  FACEMATCH_CONTROLLER_STATUS_INTERVAL_MS: int(100).default(5_000),
  FACEMATCH_CONTROLLER_RESYNC_MS: int(1000).default(300_000),
  FACEMATCH_CONTROLLER_CALL_TIMEOUT_MS: int(100).default(120_000),
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
  /**
   * With several workers on the CPU, each also holds detector and embedder sessions with a thread per
   * core, used while the other workers are idle (src/inference/spare-cores.ts).
   */
  spareCores: boolean;
  /** 0: onnxruntime's choice (the CLI), or cores / workers in the service. */
  intraOpThreads: number;
  interOpThreads: number;
  /**
   * auto: at start, measure the candidate session settings of each model on this CPU and keep the
   * fastest (cached in tuningCache); off: the static settings (level all, the configured threads).
   */
  ortTuning: 'auto' | 'off';
  /** Fixed graph optimisation levels: a model named here is not measured. */
  ortOptimization: { detector?: OrtLevel; embedder?: OrtLevel };
  /** The tuning cache file (FACEMATCH_TUNING_CACHE, else $XDG_CACHE_HOME or ~/.cache + facematch/ort-tuning.json). */
  tuningCache: string;
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
  /**
   * On SIGTERM: how long the replica keeps serving new calls after it reports NOT_SERVING (and
   * /readyz 503), so that Envoy's health checks and the Kubernetes endpoints stop sending it any.
   */
  shutdownDrainMs: number;
  /** After the drain: how long the calls in flight may take before they are cut (UNAVAILABLE). */
  shutdownGraceMs: number;
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
  /**
   * A separate set of vector collections/tables ('' = the default set): the embedded schema
   * `vectors_<ns>`, Milvus `<prefix>_<ns>_action_faces` ... (to move to a model pack of another embedder).
   */
  vectorNamespace: string;
  /** Embedded stores live here: db/ (PGlite) and objects/ (annotated images). */
  dataDir: string;
  /**
   * The embedded database in a thread of its own (src/adapters/embedded/pglite.thread.ts) rather
   * than on the event loop: an index build no longer stalls the loop, at a cost under saturation
   * (README, "Embedded stores"). Off by default until that cost is understood.
   */
  embeddedDbThread: boolean;
  bucket: string;
  /** Annotated copies are shrunk to this longer side (0: original size). */
  annotatedMaxSide: number;
}

export interface ControllerConfig {
  /** A kubeconfig file; absent: in-cluster service account (or ~/.kube/config). */
  kubeconfig: string | undefined;
  /** The namespace whose PhotoBatches are reconciled; undefined: every namespace. */
  namespace: string | undefined;
  /** The facematch service (through Envoy in the cluster) for batches that name none. */
  serviceAddress: string;
  workers: number;
  host: string;
  httpPort: number;
  lease: { namespace: string; name: string; identity: string; durationMs: number; renewDeadlineMs: number; retryPeriodMs: number };
  /** A running batch's status is written at most this often. */
  statusIntervalMs: number;
  /** Every PhotoBatch is reconciled again this often, and the watch is renewed. */
  resyncMs: number;
  /** Deadline of one ProcessPhoto call. */
  callTimeoutMs: number;
}

/** OpenTelemetry tracing, from the standard OTEL_* variables (README, "Tracing"). */
export interface TracingConfig {
  /** OTEL_SDK_DISABLED: no tracer provider at all (no spans, no trace ids in the logs). */
  disabled: boolean;
  /** OTEL_SERVICE_NAME; undefined: facematch or facematch-controller. */
  serviceName: string | undefined;
  /** OTEL_RESOURCE_ATTRIBUTES (the chart sets k8s.pod.name and k8s.namespace.name). */
  resourceAttributes: Record<string, string>;
  /** Where spans go; undefined without an endpoint (spans are made, for the logs' trace ids, and dropped). */
  export:
    | {
        /** The full URL: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as is, or OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces (HTTP) / as is (gRPC). */
        endpoint: string;
        protocol: 'http/protobuf' | 'http/json' | 'grpc';
        /** Secret (redact when printing): OTEL_EXPORTER_OTLP_HEADERS, the TRACES_ ones overriding per key. */
        headers: Record<string, string>;
        timeoutMs: number;
      }
    | undefined;
  /** OTEL_TRACES_SAMPLER and, for the ratio samplers, OTEL_TRACES_SAMPLER_ARG (default 1). */
  sampler: { name: SamplerName; ratio: number };
  /**
   * The tail rule: a trace the head sampler did not keep is still exported when its local root span
   * (the request's SERVER span, the controller's photo span) fails (FACEMATCH_TRACE_KEEP_FAILED) or
   * lasts at least slowMs (FACEMATCH_TRACE_SLOW_MS; 0: not for slowness).
   */
  keepFailed: boolean;
  slowMs: number;
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
  /**
   * The traces endpoint the exporter sends to (OTLP/HTTP: http://jaeger:4318/v1/traces; gRPC:
   * http://jaeger:4317); unset: no export. The same as tracing.export?.endpoint.
   */
  otlpTracesEndpoint: string | undefined;
  tracing: TracingConfig;
  controller: ControllerConfig;
  logLevel: z.infer<typeof schema>['FACEMATCH_LOG_LEVEL'];
}

/** Variables whose value is never repeated in a message: it is, or may hold, a secret. */
const SECRET = new Set([
  'FACEMATCH_POSTGRES_URL',
  'FACEMATCH_S3_ENDPOINT',
  'FACEMATCH_S3_ACCESS_KEY',
  'FACEMATCH_S3_SECRET_KEY',
  'FACEMATCH_MILVUS_TOKEN',
  'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT',
  'OTEL_EXPORTER_OTLP_ENDPOINT',
  'OTEL_EXPORTER_OTLP_TRACES_HEADERS',
  'OTEL_EXPORTER_OTLP_HEADERS',
]);

/** The variables the schema reads (the README's configuration table lists each). */
export const CONFIG_VARIABLES: readonly string[] = Object.keys(schema.shape);

export function parseConfig(env: NodeJS.ProcessEnv): Config {
  // An empty value is an unset one (FOO= in a compose file or a chart), so it gets the default.
  const set = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v.trim() !== ''));
  const parsed = schema.safeParse(set);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => {
      const name = String(i.path[0]);
      const value = set[name];
      const quoted = i.code === z.ZodIssueCode.invalid_enum_value || (i.code === z.ZodIssueCode.custom && i.params?.quotesValue === true);
      const shown =
        SECRET.has(name) || quoted || value === undefined ? '' : ` (got ${JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}...` : value)})`;
      return `${name}: ${i.message}${shown}`;
    });
    throw new ConfigError(`invalid configuration: ${problems.join('; ')}`);
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
  // client-go's rules: renewals must be able to fail a few times before the lease runs out.
  if (!(e.FACEMATCH_CONTROLLER_RETRY_PERIOD_MS < e.FACEMATCH_CONTROLLER_RENEW_DEADLINE_MS && e.FACEMATCH_CONTROLLER_RENEW_DEADLINE_MS < e.FACEMATCH_CONTROLLER_LEASE_DURATION_MS)) {
    throw new ConfigError(
      'invalid configuration: FACEMATCH_CONTROLLER_RETRY_PERIOD_MS < FACEMATCH_CONTROLLER_RENEW_DEADLINE_MS < FACEMATCH_CONTROLLER_LEASE_DURATION_MS must hold',
    );
  }
  const protocol = e.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ?? e.OTEL_EXPORTER_OTLP_PROTOCOL ?? 'http/protobuf';
  // The specification: the signal's own endpoint is used as is; the general one gets /v1/traces over HTTP.
  const endpoint =
    e.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ??
    (e.OTEL_EXPORTER_OTLP_ENDPOINT === undefined
      ? undefined
      : protocol === 'grpc'
        ? e.OTEL_EXPORTER_OTLP_ENDPOINT
        : `${e.OTEL_EXPORTER_OTLP_ENDPOINT.replace(/\/$/, '')}/v1/traces`);
  const tracing: TracingConfig = {
    disabled: e.OTEL_SDK_DISABLED,
    serviceName: e.OTEL_SERVICE_NAME,
    resourceAttributes: e.OTEL_RESOURCE_ATTRIBUTES,
    export:
      endpoint === undefined || e.OTEL_SDK_DISABLED
        ? undefined
        : {
            endpoint,
            protocol,
            headers: { ...e.OTEL_EXPORTER_OTLP_HEADERS, ...e.OTEL_EXPORTER_OTLP_TRACES_HEADERS },
            timeoutMs: e.OTEL_EXPORTER_OTLP_TRACES_TIMEOUT ?? e.OTEL_EXPORTER_OTLP_TIMEOUT,
          },
    sampler: { name: e.OTEL_TRACES_SAMPLER, ratio: e.OTEL_TRACES_SAMPLER_ARG ?? 1 },
    keepFailed: e.FACEMATCH_TRACE_KEEP_FAILED,
    slowMs: e.FACEMATCH_TRACE_SLOW_MS,
  };
  return {
    inference: {
      modelPack: e.FACEMATCH_MODEL_PACK,
      modelsDir: path.resolve(e.FACEMATCH_MODELS_DIR),
      verifyModels: e.FACEMATCH_VERIFY_MODELS,
      matchThreshold: e.FACEMATCH_MATCH_THRESHOLD,
      device: e.FACEMATCH_DEVICE,
      cudaDeviceId: e.FACEMATCH_CUDA_DEVICE_ID,
      workers: e.FACEMATCH_INFERENCE_WORKERS,
      spareCores: e.FACEMATCH_SPARE_CORES,
      intraOpThreads: e.FACEMATCH_INTRA_OP_THREADS,
      interOpThreads: e.FACEMATCH_INTER_OP_THREADS,
      ortTuning: e.FACEMATCH_ORT_TUNING,
      ortOptimization: e.FACEMATCH_ORT_OPTIMIZATION,
      tuningCache: path.resolve(
        e.FACEMATCH_TUNING_CACHE ?? path.join(xdgCache(env) ?? path.join(homedir(), '.cache'), 'facematch', 'ort-tuning.json'),
      ),
      detScore: e.FACEMATCH_DET_SCORE,
      nmsIou: e.FACEMATCH_NMS_IOU,
      minFaceSize: e.FACEMATCH_MIN_FACE_SIZE,
    },
    decode: { maxPixels: e.FACEMATCH_MAX_PIXELS, maxSide: e.FACEMATCH_DECODE_MAX_SIDE },
    source: {
      maxBytes: e.FACEMATCH_MAX_IMAGE_BYTES,
      timeoutMs: e.FACEMATCH_FETCH_TIMEOUT_MS,
      allow: e.FACEMATCH_SOURCE_ALLOW,
    },
    server: {
      host: e.FACEMATCH_HOST,
      grpcPort: e.FACEMATCH_GRPC_PORT,
      httpPort: e.FACEMATCH_HTTP_PORT,
      maxInFlight: e.FACEMATCH_MAX_IN_FLIGHT,
      maxMessageBytes: e.FACEMATCH_MAX_MESSAGE_BYTES,
      shutdownDrainMs: e.FACEMATCH_SHUTDOWN_DRAIN_MS,
      shutdownGraceMs: e.FACEMATCH_SHUTDOWN_GRACE_MS,
    },
    stores: {
      vectorStore: e.FACEMATCH_VECTOR_STORE,
      matchStore: e.FACEMATCH_MATCH_STORE,
      objectStore: e.FACEMATCH_OBJECT_STORE,
      vectorNamespace: e.FACEMATCH_VECTOR_NAMESPACE,
      dataDir: path.resolve(e.FACEMATCH_DATA_DIR),
      embeddedDbThread: e.FACEMATCH_EMBEDDED_DB_THREAD,
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
    otlpTracesEndpoint: tracing.export?.endpoint,
    tracing,
    controller: {
      kubeconfig: e.KUBECONFIG,
      namespace: e.FACEMATCH_CONTROLLER_NAMESPACE || undefined,
      serviceAddress: e.FACEMATCH_CONTROLLER_SERVICE_ADDRESS,
      workers: e.FACEMATCH_CONTROLLER_WORKERS,
      host: e.FACEMATCH_HOST,
      httpPort: e.FACEMATCH_CONTROLLER_HTTP_PORT,
      lease: {
        namespace: e.FACEMATCH_CONTROLLER_LEASE_NAMESPACE,
        name: e.FACEMATCH_CONTROLLER_LEASE_NAME,
        // A pod's host name is its name: unique among the replicas, and readable in the Lease.
        identity: e.FACEMATCH_CONTROLLER_IDENTITY ?? `${hostname()}_${process.pid}`,
        durationMs: e.FACEMATCH_CONTROLLER_LEASE_DURATION_MS,
        renewDeadlineMs: e.FACEMATCH_CONTROLLER_RENEW_DEADLINE_MS,
        retryPeriodMs: e.FACEMATCH_CONTROLLER_RETRY_PERIOD_MS,
      },
      statusIntervalMs: e.FACEMATCH_CONTROLLER_STATUS_INTERVAL_MS,
      resyncMs: e.FACEMATCH_CONTROLLER_RESYNC_MS,
      callTimeoutMs: e.FACEMATCH_CONTROLLER_CALL_TIMEOUT_MS,
    },
    logLevel: e.FACEMATCH_LOG_LEVEL,
  };
}

const REDACTED = '[redacted]';

/** A query parameter that holds a secret (libpq's `password`, `sslpassword`, `sslkey` ...; a token). */
const SECRET_PARAM = /pass|secret|token|key|auth/i;

/**
 * A copy safe to print or log: passwords (in a URL's userinfo or its query), secret keys and tokens
 * replaced by `[redacted]`.
 */
export function redactConfig(config: Config): Config {
  const redactUrl = (url: string): string => {
    const u = new URL(url);
    if (u.password) u.password = REDACTED;
    for (const [name] of [...u.searchParams]) if (SECRET_PARAM.test(name)) u.searchParams.set(name, REDACTED);
    return u.href;
  };
  return {
    ...config,
    milvus: { ...config.milvus, token: config.milvus.token === undefined ? undefined : REDACTED },
    postgres: config.postgres && { ...config.postgres, url: redactUrl(config.postgres.url) },
    s3: config.s3 && { ...config.s3, secretKey: REDACTED },
    otlpTracesEndpoint: config.otlpTracesEndpoint && redactUrl(config.otlpTracesEndpoint),
    tracing: {
      ...config.tracing,
      export: config.tracing.export && {
        ...config.tracing.export,
        endpoint: redactUrl(config.tracing.export.endpoint),
        headers: Object.fromEntries(Object.keys(config.tracing.export.headers).map((k) => [k, REDACTED])),
      },
    },
  };
}

let cached: Config | undefined;

/** The process configuration, parsed once. */
export function loadConfig(): Config {
  cached ??= parseConfig(process.env);
  return cached;
}
