/**
 * The gRPC server: FacematchService (the RPC table of rpc.ts, shared with REST), the standard
 * health service, server reflection, message size limits, and typed errors mapped to status codes
 * (with the stable error code in the `facematch-error-code` trailer). A request that does not
 * decode is INVALID_ARGUMENT (grpc-js itself would answer INTERNAL); a caller that cancels or whose
 * deadline passes aborts the call's signal. A caller's trace context (W3C `traceparent` in the
 * metadata) is the parent of the request's span: a SERVER span `facematch.v1.FacematchService/<Method>`
 * with the RPC semantic conventions' attributes (rpc.system, rpc.service, rpc.method,
 * rpc.grpc.status_code: the status the caller got) and the failure's code (telemetry/spans.ts).
 *
 * Shutdown (serve.ts): every call is admitted by the CallTracker. Once it refuses, a new call is
 * answered UNAVAILABLE before its request is looked at; a call cut at the end of the grace period
 * is answered UNAVAILABLE at once, without waiting for its work to notice. Both are sent before any
 * response message, so grpc-js writes a trailers-only response (grpc-status in the one HEADERS
 * frame, with END_STREAM), the form Envoy's retry policy acts on: ProcessPhoto is idempotent by
 * photo id, so Envoy may run it again on another replica.
 */
import { context, propagation, ROOT_CONTEXT, SpanKind, trace, type Span, type TextMapGetter, type Tracer } from '@opentelemetry/api';
import {
  Metadata,
  Server,
  ServerCredentials,
  type ServerUnaryCall,
  type sendUnaryData,
  type ServiceError,
} from '@grpc/grpc-js';
import { loadFileDescriptorSetFromBuffer } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import { FacematchError, InvalidArgumentError } from '../../domain/errors.js';
import { RPC_ATTR, RPC_SERVICE, rpcSpan, TRACER_NAME } from '../../telemetry/attributes.js';
import { recordFailure, spanTime } from '../../telemetry/spans.js';
import { FILE_DESCRIPTOR_SET } from '../../gen/facematch/v1/facematch.descriptor.js';
import { FacematchServiceService, type FacematchServiceServer } from '../../gen/facematch/v1/facematch.js';
import type { CallTracker } from '../in-flight.js';
import { invoke, rpcTable, shorten, type Method, type RpcDeps } from '../rpc.js';
import { grpcStatus } from './grpc-status.js';

export const SERVICE_NAME = RPC_SERVICE;

export interface GrpcDeps extends RpcDeps {
  maxMessageBytes: number;
  /** Admits each call; refuses new ones and cuts the ones left when the replica shuts down. */
  calls: CallTracker;
  /** The SERVER spans' tracer; default: the global provider's `facematch` tracer. */
  tracer?: Tracer;
}

/** The gRPC codes the RPC semantic conventions count as the server's fault on a SERVER span. */
const SERVER_FAULTS = new Set([2, 4, 12, 13, 14, 15]);

/** Ends a call's SERVER span with the status its caller got. */
function endServerSpan(span: Span, error: FacematchError | null): void {
  const code = error ? grpcStatus(error.code) : 0;
  span.setAttribute(RPC_ATTR.grpcStatusCode, code);
  if (error) recordFailure(span, error, SERVER_FAULTS.has(code), error);
  span.end(spanTime());
}

/** What a request that did not decode becomes: the handler answers INVALID_ARGUMENT with the reason. */
const MALFORMED = Symbol('malformed request');
type Malformed = { [MALFORMED]: string };
const isMalformed = (value: unknown): value is Malformed => typeof value === 'object' && value !== null && MALFORMED in value;

/**
 * The generated service definition with a request decoder that never throws: a decode failure in
 * grpc-js ends the call with INTERNAL before any handler runs, so it is handed on as a value.
 */
export function tolerantDefinition(): typeof FacematchServiceService {
  return Object.fromEntries(
    Object.entries(FacematchServiceService).map(([name, method]) => [
      name,
      {
        ...method,
        requestDeserialize: (bytes: Buffer): unknown => {
          try {
            return (method.requestDeserialize as (b: Buffer) => unknown)(bytes);
          } catch (error) {
            return { [MALFORMED]: error instanceof Error ? error.message : String(error) };
          }
        },
      },
    ]),
  ) as unknown as typeof FacematchServiceService;
}

/** Reads the propagator's fields (traceparent, tracestate, baggage) from a call's metadata. */
const metadataGetter: TextMapGetter<Metadata> = {
  keys: (metadata) => Object.keys(metadata.getMap()),
  get: (metadata, key) => {
    const values = metadata.get(key).filter((v): v is string => typeof v === 'string');
    return values.length > 1 ? values : values[0];
  },
};

/** A typed error as the status the caller gets, with its stable code in the `facematch-error-code` trailer. */
function serviceError(e: FacematchError): Partial<ServiceError> {
  const metadata = new Metadata();
  metadata.set('facematch-error-code', e.code);
  return { code: grpcStatus(e.code), details: e.message, message: e.message, metadata };
}

/** A method of the table as a unary handler: admission, cancellation, the shared invoke, status and trailer. */
function unary<Req, Res>(d: GrpcDeps, m: Method<Req, Res>): (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => void {
  return (call, callback) => {
    let controller: AbortController;
    try {
      controller = d.calls.admit();
    } catch (error) {
      // Shutting down: refused before any work, not logged one by one (serve.ts logs the phase).
      const e = error as FacematchError;
      d.metrics.observe(m.name, 'grpc', e.code, 0);
      callback(serviceError(e));
      return;
    }
    // From the caller's context only (ROOT, not whatever context this callback happens to run in).
    const parent = propagation.extract(ROOT_CONTEXT, call.metadata, metadataGetter);
    const span = (d.tracer ?? trace.getTracer(TRACER_NAME)).startSpan(
      rpcSpan(m.name),
      { kind: SpanKind.SERVER, startTime: spanTime(), attributes: { [RPC_ATTR.system]: 'grpc', [RPC_ATTR.service]: RPC_SERVICE, [RPC_ATTR.method]: m.name } },
      parent,
    );
    let answered = false;
    const answer = (error: FacematchError | null, res?: Res): void => {
      if (answered) return;
      answered = true;
      endServerSpan(span, error);
      d.calls.done(controller);
      if (error) callback(serviceError(error));
      else callback(null, res);
    };
    // Emitted when the client cancels or disconnects, and when the call's deadline passes.
    call.on('cancelled', () => controller.abort());
    if (call.cancelled) controller.abort();
    // Cut by the shutdown (a FacematchError reason): answered now, whatever the work is doing.
    controller.signal.addEventListener(
      'abort',
      () => {
        const reason: unknown = controller.signal.reason;
        if (reason instanceof FacematchError) answer(reason);
      },
      { once: true },
    );
    const parse = (): Req => {
      const request: unknown = call.request;
      if (isMalformed(request)) throw new InvalidArgumentError(`the request is not a valid ${m.name}Request: ${shorten(request[MALFORMED])}`);
      return request as Req;
    };
    context.with(trace.setSpan(parent, span), () => invoke(d, m, parse, 'grpc', controller.signal)).then(
      (res) => answer(null, res),
      (error: unknown) => answer(error as FacematchError),
    );
  };
}

export function facematchHandlers(d: GrpcDeps): FacematchServiceServer {
  const t = rpcTable(d);
  return {
    processPhoto: unary(d, t.processPhoto),
    listUserPhotos: unary(d, t.listUserPhotos),
    listEventPhotos: unary(d, t.listEventPhotos),
    searchFaces: unary(d, t.searchFaces),
    deletePhoto: unary(d, t.deletePhoto),
    forgetUser: unary(d, t.forgetUser),
  };
}

export interface RunningGrpc {
  server: Server;
  port: number;
  health: HealthImplementation;
}

export async function startGrpcServer(d: GrpcDeps, host: string, port: number): Promise<RunningGrpc> {
  const server = new Server({
    'grpc.max_receive_message_length': d.maxMessageBytes,
    'grpc.max_send_message_length': d.maxMessageBytes,
  });
  server.addService(tolerantDefinition(), facematchHandlers(d));
  const health = new HealthImplementation({ '': 'NOT_SERVING', [SERVICE_NAME]: 'NOT_SERVING' });
  health.addToServer(server);
  // Reflection serves proto/'s descriptors, compiled into src/gen (no .proto file at run time).
  new ReflectionService(loadFileDescriptorSetFromBuffer(FILE_DESCRIPTOR_SET)).addToServer(server);
  const bound = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${host.includes(':') ? `[${host}]` : host}:${port}`, ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return { server, port: bound, health };
}
