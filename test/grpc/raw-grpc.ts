/**
 * A unary gRPC call over a bare node:http2 session, for what a grpc-js client hides: whether the
 * status came in the first HEADERS frame with END_STREAM (a trailers-only response, the form
 * Envoy's retry policy acts on) or in trailers after the response headers and data.
 */
import { connect, constants } from 'node:http2';
import { ProcessPhotoRequest, PhotoKind } from '../../src/gen/facematch/v1/facematch.js';

export interface RawAnswer {
  /** The first HEADERS frame of the response. */
  headers: Record<string, string | string[] | undefined>;
  /** That frame ended the stream: nothing followed it. */
  endStream: boolean;
  /** Response bytes (length-prefixed messages) after the headers. */
  data: Buffer;
  /** A trailers frame after the data, if one came. */
  trailers: Record<string, string | string[] | undefined> | undefined;
}

/** A message in gRPC's length-prefixed framing (uncompressed). */
export const grpcFrame = (message: Uint8Array): Buffer => {
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(message.length, 1);
  return Buffer.concat([prefix, message]);
};

export function rawUnary(port: number, path: string, message: Uint8Array, timeoutMs = 30_000): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const session = connect(`http://127.0.0.1:${port}`);
    session.on('error', (error: Error) => reject(error));
    const timer = setTimeout(() => {
      session.destroy();
      reject(new Error(`${path}: no answer in ${timeoutMs} ms`));
    }, timeoutMs);
    const stream = session.request({
      [constants.HTTP2_HEADER_METHOD]: 'POST',
      [constants.HTTP2_HEADER_PATH]: path,
      [constants.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc',
      te: 'trailers',
    });
    const answer: Partial<RawAnswer> & { chunks: Buffer[] } = { chunks: [] };
    stream.on('response', (headers, flags) => {
      answer.headers = headers;
      answer.endStream = (flags & constants.NGHTTP2_FLAG_END_STREAM) !== 0;
    });
    stream.on('data', (chunk: Buffer) => answer.chunks.push(chunk));
    stream.on('trailers', (trailers) => {
      answer.trailers = trailers;
    });
    stream.on('error', (error: Error) => {
      clearTimeout(timer);
      session.destroy();
      reject(error);
    });
    stream.on('close', () => {
      clearTimeout(timer);
      session.close();
      if (!answer.headers) {
        reject(new Error(`${path}: the stream closed without response headers (code ${stream.rstCode})`));
        return;
      }
      resolve({ headers: answer.headers, endStream: answer.endStream ?? false, data: Buffer.concat(answer.chunks), trailers: answer.trailers });
    });
    stream.end(grpcFrame(message));
  });
}

/** An action shot's ProcessPhoto through the bare client. */
export const rawProcessPhoto = (port: number, photoId: string, imageUrl: string, timeoutMs?: number): Promise<RawAnswer> =>
  rawUnary(
    port,
    '/facematch.v1.FacematchService/ProcessPhoto',
    ProcessPhotoRequest.encode({ photoId, imageUrl, eventId: 'raw', kind: PhotoKind.PHOTO_KIND_ACTION_SHOT, userId: '' }).finish(),
    timeoutMs,
  );

/** grpc.health.v1.Health/Check for `service`: 'SERVING', 'NOT_SERVING' ... (HealthCheckRequest/Response encoded by hand). */
export async function healthStatus(port: number, service: string): Promise<string> {
  const name = Buffer.from(service);
  const answer = await rawUnary(port, '/grpc.health.v1.Health/Check', Buffer.concat([Buffer.from([0x0a, name.length]), name]), 5000);
  const code = answer.trailers?.['grpc-status'] ?? answer.headers['grpc-status'];
  if (code !== '0') throw new Error(`health check of "${service}": grpc-status ${String(code)}`);
  // 5-byte prefix, then field 1 (varint): 08 <status>; an empty message is UNKNOWN (0).
  const status = answer.data.length > 6 ? answer.data[6]! : 0;
  return ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'][status] ?? String(status);
}
