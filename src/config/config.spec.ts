import { homedir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../domain/errors.js';
import { CONFIG_VARIABLES, parseConfig, redactConfig } from './config.js';

/** For every variable, a value it must refuse (several kinds: not a number, out of range, unknown enum, bad CIDR ...). */
const BAD: Record<string, string[]> = {
  FACEMATCH_VERIFY_MODELS: ['maybe'],
  FACEMATCH_SPARE_CORES: ['sometimes'],
  FACEMATCH_EMBEDDED_DB_THREAD: ['yes please'],
  FACEMATCH_MATCH_THRESHOLD: ['high', '1.5'],
  FACEMATCH_DEVICE: ['gpu'],
  FACEMATCH_CUDA_DEVICE_ID: ['-1', 'first'],
  FACEMATCH_INTRA_OP_THREADS: ['2.5'],
  FACEMATCH_INTER_OP_THREADS: ['four'],
  FACEMATCH_INFERENCE_WORKERS: ['0'],
  FACEMATCH_ORT_TUNING: ['on', 'true'],
  FACEMATCH_ORT_OPTIMIZATION: ['all', 'detector=fast', 'recogniser=all', 'detector=all,detector=basic', 'embedder=all=basic'],
  FACEMATCH_DET_SCORE: ['1.2', 'half'],
  FACEMATCH_NMS_IOU: ['-0.1'],
  FACEMATCH_MIN_FACE_SIZE: ['16px'],
  FACEMATCH_MAX_PIXELS: ['lots', '0'],
  FACEMATCH_DECODE_MAX_SIDE: ['-1'],
  FACEMATCH_MAX_IMAGE_BYTES: ['64MB'],
  FACEMATCH_FETCH_TIMEOUT_MS: ['15s'],
  FACEMATCH_SOURCE_ALLOW: ['10.0.0.0/33', 'localhost', '127.0.0.1,300.1.1.1', '127.1', 'fd00::/129', '10.0.0.0/8/8'],
  FACEMATCH_BUCKET: ['Photos_Bucket'],
  FACEMATCH_ANNOTATED_MAX_SIDE: ['big'],
  FACEMATCH_VECTOR_STORE: ['qdrant'],
  FACEMATCH_VECTOR_NAMESPACE: ['Bad-Namespace'],
  FACEMATCH_MATCH_STORE: ['mysql'],
  FACEMATCH_OBJECT_STORE: ['gcs'],
  FACEMATCH_POSTGRES_URL: ['mysql://u:p@db/x', 'not a url'],
  FACEMATCH_POSTGRES_POOL_MAX: ['0'],
  FACEMATCH_POSTGRES_TIMEOUT_MS: ['50'],
  FACEMATCH_S3_ENDPOINT: ['ftp://s3.local', 'http://s3.local/bucket', 'http://key:secret@s3.local:9000', 'http://s3.local:9000?x=1'],
  FACEMATCH_PRESIGN_SECONDS: ['604801'],
  FACEMATCH_MILVUS_ADDRESS: ['milvus:port', 'milvus:99999', 'grpc://milvus:19530', 'user:pw@milvus:19530'],
  FACEMATCH_MILVUS_COLLECTION_PREFIX: ['1st-prefix'],
  FACEMATCH_MILVUS_INDEX: ['IVF_FLAT'],
  FACEMATCH_MILVUS_HNSW_M: ['1'],
  FACEMATCH_MILVUS_HNSW_EF_CONSTRUCTION: ['0'],
  FACEMATCH_MILVUS_SEARCH_EF: ['40000'],
  FACEMATCH_MILVUS_TIMEOUT_MS: ['soon'],
  FACEMATCH_HOST: ['http://0.0.0.0', '0.0.0.0:8080', 'two words'],
  FACEMATCH_GRPC_PORT: ['65536'],
  FACEMATCH_HTTP_PORT: ['http'],
  FACEMATCH_MAX_IN_FLIGHT: ['0'],
  FACEMATCH_SHUTDOWN_DRAIN_MS: ['-1', '5s', '600001'],
  FACEMATCH_SHUTDOWN_GRACE_MS: ['-1', '2.5', '600001'],
  FACEMATCH_MAX_MESSAGE_BYTES: ['100'],
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: ['jaeger:4318', 'grpc://jaeger:4317'],
  OTEL_EXPORTER_OTLP_ENDPOINT: ['not a url'],
  OTEL_SDK_DISABLED: ['yes', '1'],
  OTEL_SERVICE_NAME: ['x'.repeat(256)],
  OTEL_RESOURCE_ATTRIBUTES: ['k8s.pod.name', '=pod', 'k8s.pod.name=%zz'],
  OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: ['http'],
  OTEL_EXPORTER_OTLP_PROTOCOL: ['grpc/protobuf', 'HTTP/JSON'],
  OTEL_EXPORTER_OTLP_TRACES_HEADERS: ['api-key'],
  OTEL_EXPORTER_OTLP_HEADERS: ['authorization=Bearer%ZZ'],
  OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: ['0', '10s'],
  OTEL_EXPORTER_OTLP_TIMEOUT: ['-5'],
  OTEL_TRACES_SAMPLER: ['jaeger_remote', 'parentbased_ratio'],
  OTEL_TRACES_SAMPLER_ARG: ['1.5', 'half'],
  FACEMATCH_TRACE_KEEP_FAILED: ['always'],
  FACEMATCH_TRACE_SLOW_MS: ['-1', '5s'],
  FACEMATCH_LOG_LEVEL: ['verbose'],
  FACEMATCH_CONTROLLER_NAMESPACE: ['Photos', 'a_b'],
  FACEMATCH_CONTROLLER_SERVICE_ADDRESS: ['facematch:port'],
  FACEMATCH_CONTROLLER_WORKERS: ['0', '65'],
  FACEMATCH_CONTROLLER_HTTP_PORT: ['65536'],
  FACEMATCH_CONTROLLER_LEASE_NAMESPACE: ['Kube-System'],
  FACEMATCH_CONTROLLER_LEASE_NAME: ['facematch.controller!'],
  FACEMATCH_CONTROLLER_IDENTITY: ['x'.repeat(129)],
  FACEMATCH_CONTROLLER_LEASE_DURATION_MS: ['15s'],
  FACEMATCH_CONTROLLER_RENEW_DEADLINE_MS: ['100'],
  FACEMATCH_CONTROLLER_RETRY_PERIOD_MS: ['0'],
  FACEMATCH_CONTROLLER_STATUS_INTERVAL_MS: ['fast'],
  FACEMATCH_CONTROLLER_RESYNC_MS: ['10'],
  FACEMATCH_CONTROLLER_CALL_TIMEOUT_MS: ['-1'],
};

/** Free text: any non-empty value is accepted here (a model pack name or path, a folder, a key, a region). */
const FREE = [
  'FACEMATCH_MODEL_PACK',
  'FACEMATCH_MODELS_DIR',
  'FACEMATCH_TUNING_CACHE',
  'FACEMATCH_DATA_DIR',
  'FACEMATCH_S3_ACCESS_KEY',
  'FACEMATCH_S3_SECRET_KEY',
  'FACEMATCH_S3_REGION',
  'FACEMATCH_MILVUS_TOKEN',
  'KUBECONFIG',
];

function refusal(env: Record<string, string>): ConfigError {
  try {
    parseConfig(env);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error(`accepted ${JSON.stringify(env)}`);
}

describe('parseConfig', () => {
  it('has a refused value, or is free text, for every variable it reads', () => {
    expect(CONFIG_VARIABLES.filter((name) => !(name in BAD) && !FREE.includes(name))).toEqual([]);
  });

  it.each(Object.entries(BAD).filter(([name]) => CONFIG_VARIABLES.includes(name)))(
    'a bad %s is CONFIG_INVALID naming the variable',
    (name, values) => {
      for (const value of values) {
        const error = refusal({ [name]: value });
        expect(error.code).toBe('CONFIG_INVALID');
        expect(error.message).toMatch(new RegExp(`^invalid configuration: ${name}: `));
      }
    },
  );

  it('refuses lease timings a leader could not keep (retry < renew deadline < lease duration)', () => {
    const error = refusal({ FACEMATCH_CONTROLLER_RENEW_DEADLINE_MS: '20000' });
    expect(error.message).toContain('FACEMATCH_CONTROLLER_RENEW_DEADLINE_MS < FACEMATCH_CONTROLLER_LEASE_DURATION_MS');
    expect(parseConfig({}).controller.lease).toMatchObject({ durationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2_000 });
  });

  it('says which entry of the allow-list is wrong, and names every bad variable at once', () => {
    const error = refusal({ FACEMATCH_SOURCE_ALLOW: '127.0.0.0/8, 10.0.0.0/33', FACEMATCH_DEVICE: 'gpu' });
    expect(error.message).toContain('FACEMATCH_SOURCE_ALLOW: "10.0.0.0/33" is not an IP address or a CIDR');
    expect(error.message).toContain("FACEMATCH_DEVICE: Invalid enum value. Expected 'cpu' | 'cuda', received 'gpu'");
    expect(refusal({ FACEMATCH_MAX_PIXELS: 'lots' }).message).toBe('invalid configuration: FACEMATCH_MAX_PIXELS: not a number (got "lots")');
  });

  it('accepts what a deployment writes: CIDRs and addresses of both families, host:port, http URLs', () => {
    const config = parseConfig({
      FACEMATCH_SOURCE_ALLOW: ' 127.0.0.0/8, ::1 ,10.1.2.3,fd00::/8,',
      FACEMATCH_MILVUS_ADDRESS: 'https://milvus.internal:19530',
      FACEMATCH_HOST: '::',
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://jaeger:4318/',
      FACEMATCH_S3_ENDPOINT: 'http://[::1]:9000',
    });
    expect(config.source.allow).toEqual(['127.0.0.0/8', '::1', '10.1.2.3', 'fd00::/8']);
    expect(config.otlpTracesEndpoint).toBe('http://jaeger:4318/v1/traces');
    for (const address of ['milvus:19530', '10.0.0.5:19530', '[::1]:19530', 'milvus']) {
      expect(parseConfig({ FACEMATCH_MILVUS_ADDRESS: address }).milvus.address).toBe(address);
    }
  });

  it('an empty value means unset: the default, never 0', () => {
    const config = parseConfig({ FACEMATCH_MATCH_THRESHOLD: '', FACEMATCH_GRPC_PORT: ' ', FACEMATCH_DEVICE: '', FACEMATCH_SOURCE_ALLOW: '' });
    expect(config.inference.matchThreshold).toBeUndefined();
    expect(config.server.grpcPort).toBe(50051);
    expect(config.inference.device).toBe('cpu');
    expect(config.source.allow).toEqual([]);
  });

  it('shuts down within Kubernetes\' default 30 s grace by default, with time left to close the stores', () => {
    const { shutdownDrainMs, shutdownGraceMs } = parseConfig({}).server;
    // Envoy's health check (k8s/envoy/envoy.yaml) needs up to 2 x (2 s + 0.2 s jitter) to take a replica out.
    expect(shutdownDrainMs).toBeGreaterThan(2 * 2200);
    expect(shutdownDrainMs + shutdownGraceMs).toBeLessThanOrEqual(26_000);
  });

  it('onnxruntime tuning: auto by default, cached under XDG_CACHE_HOME or ~/.cache; fixed levels per model', () => {
    const config = parseConfig({ XDG_CACHE_HOME: '/var/cache/x' }).inference;
    expect(config).toMatchObject({ ortTuning: 'auto', ortOptimization: {}, tuningCache: '/var/cache/x/facematch/ort-tuning.json' });
    expect(parseConfig({ XDG_CACHE_HOME: 'relative' }).inference.tuningCache).toBe(path.join(homedir(), '.cache', 'facematch', 'ort-tuning.json'));
    const fixed = parseConfig({ FACEMATCH_ORT_OPTIMIZATION: ' detector=all, embedder = extended', FACEMATCH_TUNING_CACHE: '/tmp/t.json' }).inference;
    expect(fixed.ortOptimization).toEqual({ detector: 'all', embedder: 'extended' });
    expect(fixed.tuningCache).toBe('/tmp/t.json');
    expect(refusal({ FACEMATCH_ORT_OPTIMIZATION: 'detector=fast' }).message).toBe(
      'invalid configuration: FACEMATCH_ORT_OPTIMIZATION: "detector=fast" is not model=level (model: detector or embedder, once each; level: disabled, basic, extended, all)',
    );
  });

  it('a store selection without its settings is CONFIG_INVALID naming what is missing', () => {
    expect(refusal({ FACEMATCH_MATCH_STORE: 'postgres' }).message).toContain('FACEMATCH_POSTGRES_URL: required with FACEMATCH_MATCH_STORE=postgres');
    const s3 = refusal({ FACEMATCH_OBJECT_STORE: 's3', FACEMATCH_S3_ENDPOINT: 'http://127.0.0.1:9000' }).message;
    expect(s3).toContain('FACEMATCH_S3_ACCESS_KEY');
    expect(s3).toContain('FACEMATCH_S3_SECRET_KEY');
  });

  it('never repeats a secret in its message', () => {
    const message = refusal({
      FACEMATCH_POSTGRES_URL: 'mysql://app:hunter2@db/x',
      FACEMATCH_S3_ENDPOINT: 'http://AKIA:wJalrXUtnFEMI@s3.local:9000',
      OTEL_EXPORTER_OTLP_ENDPOINT: 'grpc://otel:t0ken@collector:4317',
    }).message;
    for (const name of ['FACEMATCH_POSTGRES_URL', 'FACEMATCH_S3_ENDPOINT', 'OTEL_EXPORTER_OTLP_ENDPOINT']) expect(message).toContain(name);
    expect(message).not.toMatch(/hunter2|wJalrXUtnFEMI|t0ken/);
  });
});

describe('tracing configuration (the OTEL_* variables)', () => {
  it('defaults: no export, parent-based always on, the tail rule on (failed, 5 s)', () => {
    expect(parseConfig({}).tracing).toEqual({
      disabled: false,
      serviceName: undefined,
      resourceAttributes: {},
      export: undefined,
      sampler: { name: 'parentbased_always_on', ratio: 1 },
      keepFailed: true,
      slowMs: 5000,
    });
  });

  it('http/protobuf by default; the general endpoint gets /v1/traces over HTTP, stays as is over gRPC; the signal one is used as is', () => {
    expect(parseConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://jaeger:4318' }).tracing.export).toEqual({
      endpoint: 'http://jaeger:4318/v1/traces',
      protocol: 'http/protobuf',
      headers: {},
      timeoutMs: 10_000,
    });
    const grpc = parseConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://jaeger:4317', OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' });
    expect(grpc.tracing.export).toMatchObject({ endpoint: 'http://jaeger:4317', protocol: 'grpc' });
    expect(grpc.otlpTracesEndpoint).toBe('http://jaeger:4317');
    const own = parseConfig({
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://ignored:4318',
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://collector.example/custom/traces',
      OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc',
      OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json',
      OTEL_EXPORTER_OTLP_TIMEOUT: '3000',
    });
    expect(own.tracing.export).toMatchObject({ endpoint: 'https://collector.example/custom/traces', protocol: 'http/json', timeoutMs: 3000 });
  });

  it('headers and resource attributes: key=value lists, percent-decoded; the traces headers override the general ones per key', () => {
    const config = parseConfig({
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318',
      OTEL_EXPORTER_OTLP_HEADERS: 'authorization=Bearer%20abc, x-tenant=photos',
      OTEL_EXPORTER_OTLP_TRACES_HEADERS: 'x-tenant=traces',
      OTEL_RESOURCE_ATTRIBUTES: 'k8s.pod.name=facematch-7d9f-x2,k8s.namespace.name=photos,deployment.environment.name=prod%2Ceu',
      OTEL_SERVICE_NAME: 'facematch-eu',
    });
    expect(config.tracing.export?.headers).toEqual({ authorization: 'Bearer abc', 'x-tenant': 'traces' });
    expect(config.tracing.resourceAttributes).toEqual({
      'k8s.pod.name': 'facematch-7d9f-x2',
      'k8s.namespace.name': 'photos',
      'deployment.environment.name': 'prod,eu',
    });
    expect(config.tracing.serviceName).toBe('facematch-eu');
  });

  it('sampler and its ratio; OTEL_SDK_DISABLED=TRUE turns everything off, export included', () => {
    expect(parseConfig({ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.1' }).tracing.sampler).toEqual({
      name: 'parentbased_traceidratio',
      ratio: 0.1,
    });
    const off = parseConfig({ OTEL_SDK_DISABLED: 'TRUE', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://jaeger:4318' });
    expect(off.tracing.disabled).toBe(true);
    expect(off.tracing.export).toBeUndefined();
  });

  it('never repeats a header in a message, nor in the printed config', () => {
    const message = refusal({ OTEL_EXPORTER_OTLP_HEADERS: 'api-key=s3cr3t,broken' }).message;
    expect(message).toContain('OTEL_EXPORTER_OTLP_HEADERS');
    expect(message).not.toContain('s3cr3t');
    const config = parseConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318', OTEL_EXPORTER_OTLP_HEADERS: 'api-key=s3cr3t' });
    const printed = redactConfig(config);
    expect(JSON.stringify(printed)).not.toContain('s3cr3t');
    expect(printed.tracing.export?.headers).toEqual({ 'api-key': '[redacted]' });
    expect(config.tracing.export?.headers).toEqual({ 'api-key': 's3cr3t' });
  });
});

describe('redactConfig', () => {
  it('hides every secret and keeps the rest', () => {
    const config = parseConfig({
      FACEMATCH_POSTGRES_URL: 'postgres://app:hunter2@db:5432/facematch?sslpassword=k3y&application_name=fm',
      FACEMATCH_S3_ENDPOINT: 'http://s3.local:9000',
      FACEMATCH_S3_ACCESS_KEY: 'AKIA',
      FACEMATCH_S3_SECRET_KEY: 'wJalrXUtnFEMI',
      FACEMATCH_MILVUS_TOKEN: 'root:Milvus',
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://otel:t0ken@collector.example/v1/traces?api_key=abc123',
    });
    const printed = JSON.stringify(redactConfig(config));
    expect(printed).not.toMatch(/hunter2|k3y|wJalrXUtnFEMI|root:Milvus|t0ken|abc123/);
    const redacted = redactConfig(config);
    expect(redacted.postgres?.url).toBe('postgres://app:%5Bredacted%5D@db:5432/facematch?sslpassword=%5Bredacted%5D&application_name=fm');
    expect(redacted.s3?.accessKey).toBe('AKIA');
    expect(redacted.milvus.token).toBe('[redacted]');
    // The original is untouched: the service still connects with the real values.
    expect(config.s3?.secretKey).toBe('wJalrXUtnFEMI');
  });
});
