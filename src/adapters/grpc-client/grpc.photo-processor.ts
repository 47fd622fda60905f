/**
 * The PhotoProcessor the PhotoBatch controller uses: one ProcessPhoto call to the facematch service
 * per photo, over gRPC. Each call has a deadline, is cancelled when the caller's signal aborts, is
 * traced by a CLIENT span whose context travels in the call's metadata (W3C `traceparent`, so the
 * service's request span is its child), and fails with a PhotoProcessError whose code is the
 * service's own (its `facematch-error-code` trailer) or, without one, the transport's.
 */
import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import {
  context,
  propagation,
  SpanKind,
  SpanStatusCode,
  trace,
  type Span,
  type TextMapSetter,
  type Tracer,
} from '@opentelemetry/api';
import { ATTR_ERROR_TYPE, ATTR_SERVER_ADDRESS, ATTR_SERVER_PORT } from '@opentelemetry/semantic-conventions';
import type { ErrorCode } from '../../domain/errors.js';
import { PhotoKind, type ProcessPhotoRequest, type ProcessPhotoResponse } from '../../gen/facematch/v1/facematch.js';
import {
  PhotoProcessError,
  type PhotoKind as PortPhotoKind,
  type PhotoOutcome,
  type PhotoProcessor,
  type PhotoRequest,
  type ProcessFailureCode,
} from '../../ports/photo-processor.js';
import { ATTR, TRACER_NAME } from '../../telemetry/attributes.js';
import { spanTime } from '../../telemetry/spans.js';
import type { FacematchClient, FacematchClients } from './client.js';

/** The trailer in which the service sends its stable error code (transport/grpc/grpc.server.ts). */
export const ERROR_CODE_TRAILER = 'facematch-error-code';

export const DEFAULT_DEADLINE_MS = 120_000;

const RPC_SERVICE = 'facematch.v1.FacematchService';
const RPC_METHOD = 'ProcessPhoto';
/** The RPC semantic conventions' span name, `{rpc.service}/{rpc.method}`. */
export const PROCESS_PHOTO_CLIENT_SPAN = `${RPC_SERVICE}/${RPC_METHOD}`;

/**
 * RPC attribute names of the semantic conventions: still incubating, so copied here as the
 * package advises instead of imported from its unstable entry point.
 */
const RPC_ATTR = {
  system: 'rpc.system',
  service: 'rpc.service',
  method: 'rpc.method',
  grpcStatusCode: 'rpc.grpc.status_code',
} as const;

export interface GrpcPhotoProcessorOptions {
  /** Each call's deadline, from when it starts; default 120 s. */
  deadlineMs?: number;
  /** Default: the global tracer provider's `facematch` tracer. */
  tracer?: Tracer;
  /** `host:port` of the service, recorded on the span (server.address, server.port). */
  address?: string;
}

/** The one method of the generated client this adapter needs (tests hand it a small fake). */
export type ProcessPhotoClient = Pick<FacematchClient, 'processPhoto'>;

/** Writes the propagator's fields (traceparent, tracestate, baggage) into a call's metadata. */
const metadataSetter: TextMapSetter<Metadata> = {
  set: (metadata, key, value) => metadata.set(key, value),
};

const KINDS: Record<PortPhotoKind, PhotoKind> = {
  ACTION_SHOT: PhotoKind.PHOTO_KIND_ACTION_SHOT,
  FACECAM: PhotoKind.PHOTO_KIND_FACECAM,
};

/** Every ErrorCode (a Record, so the compiler names a code added to the union and missing here). */
const ERROR_CODES: Record<ErrorCode, true> = {
  INVALID_ARGUMENT: true,
  IMAGE_EMPTY: true,
  IMAGE_UNSUPPORTED: true,
  IMAGE_CORRUPT: true,
  IMAGE_TOO_LARGE: true,
  SOURCE_NOT_FOUND: true,
  SOURCE_UNREACHABLE: true,
  SOURCE_TOO_LARGE: true,
  SOURCE_FORBIDDEN: true,
  NO_FACE: true,
  NOT_FOUND: true,
  BACKEND_UNAVAILABLE: true,
  OVERLOADED: true,
  CANCELLED: true,
  MODEL_NOT_FOUND: true,
  MODEL_MISMATCH: true,
  MODEL_CHECKSUM_MISMATCH: true,
  EMBEDDER_MISMATCH: true,
  CONFIG_INVALID: true,
  INTERNAL: true,
};
const isErrorCode = (value: unknown): value is ErrorCode => typeof value === 'string' && Object.hasOwn(ERROR_CODES, value);

/**
 * What a failed call becomes. The service's code when its trailer names one; otherwise the status:
 * UNAVAILABLE (no connection, or a proxy with no healthy upstream), DEADLINE_EXCEEDED,
 * RESOURCE_EXHAUSTED (a proxy shed the call) and CANCELLED as themselves, anything else INTERNAL
 * with the status named in the message.
 */
export function toPhotoProcessError(error: ServiceError): PhotoProcessError {
  const trailer = error.metadata?.get(ERROR_CODE_TRAILER)[0];
  if (isErrorCode(trailer)) return new PhotoProcessError(trailer, error.details, { cause: error });
  const name = status[error.code] ?? String(error.code);
  const code = transportCode(error.code);
  const unknown = trailer === undefined ? '' : ` (unknown ${ERROR_CODE_TRAILER} ${String(trailer)})`;
  const message = code === 'INTERNAL' ? `ProcessPhoto failed with gRPC status ${name}${unknown}: ${error.details}` : `${error.details}${unknown}`;
  return new PhotoProcessError(code, message, { cause: error });
}

/** The code of a status the service did not explain; exhaustive, so every status is decided here. */
function transportCode(code: status): ProcessFailureCode {
  switch (code) {
    case status.UNAVAILABLE:
      return 'UNAVAILABLE';
    case status.DEADLINE_EXCEEDED:
      return 'DEADLINE_EXCEEDED';
    case status.RESOURCE_EXHAUSTED:
      return 'RESOURCE_EXHAUSTED';
    case status.CANCELLED:
      return 'CANCELLED';
    case status.OK:
    case status.UNKNOWN:
    case status.INVALID_ARGUMENT:
    case status.NOT_FOUND:
    case status.ALREADY_EXISTS:
    case status.PERMISSION_DENIED:
    case status.FAILED_PRECONDITION:
    case status.ABORTED:
    case status.OUT_OF_RANGE:
    case status.UNIMPLEMENTED:
    case status.INTERNAL:
    case status.DATA_LOSS:
    case status.UNAUTHENTICATED:
      return 'INTERNAL';
  }
  // A number outside the enum (a peer of a later gRPC version).
  return 'INTERNAL';
}

/**
 * The outcome of a processed photo. `faces`: every face found. `matched`: for an ACTION_SHOT, its
 * faces recognised as an enrolled user (the `matches` of each face, at most one each); for a
 * FACECAM, the faces of the event's action shots now recorded as this user's (the response's
 * top-level `matches`; the facecam's own faces carry none).
 */
export function toOutcome(kind: PortPhotoKind, res: ProcessPhotoResponse): PhotoOutcome {
  const matched = kind === 'FACECAM' ? res.matches.length : res.faces.reduce((n, f) => n + f.matches.length, 0);
  return { faces: res.faces.length, matched };
}

export class GrpcPhotoProcessor implements PhotoProcessor {
  private readonly deadlineMs: number;
  private readonly tracer: Tracer;
  private readonly serverAttributes: Record<string, string | number>;

  constructor(
    private readonly client: ProcessPhotoClient,
    options: GrpcPhotoProcessorOptions = {},
  ) {
    this.deadlineMs = options.deadlineMs ?? DEFAULT_DEADLINE_MS;
    this.tracer = options.tracer ?? trace.getTracer(TRACER_NAME);
    this.serverAttributes = serverAttributes(options.address);
  }

  /** A processor calling `address` on the shared client of `clients`. */
  static forAddress(clients: FacematchClients, address: string, options: Omit<GrpcPhotoProcessorOptions, 'address'> = {}): GrpcPhotoProcessor {
    return new GrpcPhotoProcessor(clients.get(address), { ...options, address });
  }

  process(request: PhotoRequest, signal: AbortSignal): Promise<PhotoOutcome> {
    if (signal.aborted) return Promise.reject(cancelled(request, 'before its ProcessPhoto call'));
    const span = this.tracer.startSpan(PROCESS_PHOTO_CLIENT_SPAN, {
      kind: SpanKind.CLIENT,
      startTime: spanTime(),
      attributes: {
        [RPC_ATTR.system]: 'grpc',
        [RPC_ATTR.service]: RPC_SERVICE,
        [RPC_ATTR.method]: RPC_METHOD,
        ...this.serverAttributes,
        [ATTR.photoId]: request.photoId,
        [ATTR.eventId]: request.eventId,
        [ATTR.kind]: request.kind,
      },
    });
    const metadata = new Metadata();
    propagation.inject(trace.setSpan(context.active(), span), metadata, metadataSetter);
    const message: ProcessPhotoRequest = {
      photoId: request.photoId,
      imageUrl: request.imageUrl,
      eventId: request.eventId,
      kind: KINDS[request.kind],
      userId: request.userId ?? '',
    };

    return new Promise<PhotoOutcome>((resolve, reject) => {
      let settled = false;
      const settle = (outcome: { ok: PhotoOutcome } | { error: PhotoProcessError }, grpcStatus: status): void => {
        if (settled) return;
        settled = true;
        signal.removeEventListener('abort', onAbort);
        span.setAttribute(RPC_ATTR.grpcStatusCode, grpcStatus);
        if ('ok' in outcome) {
          span.setAttributes({ [ATTR.faces]: outcome.ok.faces, [ATTR.matches]: outcome.ok.matched });
          span.end(spanTime());
          resolve(outcome.ok);
        } else {
          fail(span, outcome.error);
          reject(outcome.error);
        }
      };
      let call: ReturnType<ProcessPhotoClient['processPhoto']>;
      const onAbort = (): void => {
        call.cancel();
        settle({ error: cancelled(request, 'while its ProcessPhoto call was in flight') }, status.CANCELLED);
      };
      try {
        call = this.client.processPhoto(message, metadata, { deadline: Date.now() + this.deadlineMs }, (error, res) => {
          if (error) settle({ error: toPhotoProcessError(error) }, error.code);
          else settle({ ok: toOutcome(request.kind, res) }, status.OK);
        });
      } catch (error) {
        // grpc-js throws at once on a closed client.
        const e = new PhotoProcessError('INTERNAL', `ProcessPhoto could not start: ${error instanceof Error ? error.message : String(error)}`, {
          cause: error,
        });
        settle({ error: e }, status.INTERNAL);
        return;
      }
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }
}

const cancelled = (request: PhotoRequest, when: string): PhotoProcessError =>
  new PhotoProcessError('CANCELLED', `photo ${request.photoId} was cancelled ${when}`);

function fail(span: Span, error: PhotoProcessError): void {
  span.setAttribute(ATTR_ERROR_TYPE, error.code);
  span.recordException(error);
  span.setStatus({ code: SpanStatusCode.ERROR, message: error.message });
  span.end(spanTime());
}

/** server.address and server.port of a `host:port` (or `[v6]:port`) target. */
function serverAttributes(address: string | undefined): Record<string, string | number> {
  if (!address) return {};
  const m = /^(?:\[(.+)\]|([^:]+)):(\d+)$/.exec(address);
  if (!m) return { [ATTR_SERVER_ADDRESS]: address };
  return { [ATTR_SERVER_ADDRESS]: m[1] ?? m[2]!, [ATTR_SERVER_PORT]: Number(m[3]) };
}
