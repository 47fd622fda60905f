/** End-to-end helpers: a loopback HTTP server for the shared photos and a generated gRPC client. */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { credentials, type ServiceError } from '@grpc/grpc-js';
import sharp from 'sharp';
import {
  FacematchServiceClient,
  type DeletePhotoRequest,
  type DeletePhotoResponse,
  type ForgetUserRequest,
  type ForgetUserResponse,
  type ListUserPhotosRequest,
  type ListUserPhotosResponse,
  type ProcessPhotoRequest,
  type ProcessPhotoResponse,
  type SearchFacesRequest,
  type SearchFacesResponse,
} from '../src/gen/facematch/v1/facematch.js';
import { SHARED } from '../test/support/shared.js';

/** Serves ../shared/testdata over http://127.0.0.1:<port>/<path>, plus a few bad answers. */
/**
 * The service's settings for a test or bench on this machine: ports chosen by the system, loopback
 * only, and the loopback photo server allowed as an image source (private addresses are refused
 * otherwise).
 */
export const LOOPBACK_SERVICE = {
  FACEMATCH_GRPC_PORT: '0',
  FACEMATCH_HTTP_PORT: '0',
  FACEMATCH_HOST: '127.0.0.1',
  FACEMATCH_SOURCE_ALLOW: '127.0.0.0/8',
} as const;

export async function photoServer(extra: Record<string, Buffer> = {}): Promise<{ base: string; close: () => Promise<void>; hits: () => number }> {
  let hits = 0;
  const blank = await sharp({ create: { width: 320, height: 240, channels: 3, background: '#6080a0' } }).png().toBuffer();
  const root = path.join(SHARED, 'testdata');
  const server: Server = createServer((req, res) => {
    hits++;
    const url = decodeURIComponent(req.url ?? '/');
    const made = extra[url];
    if (made) return void res.writeHead(200, { 'content-type': 'image/jpeg' }).end(made);
    if (url === '/blank.png') return void res.writeHead(200, { 'content-type': 'image/png' }).end(blank);
    if (url === '/text.jpg') return void res.writeHead(200, { 'content-type': 'image/jpeg' }).end('not an image at all');
    const file = path.join(root, path.normalize(url));
    if (!file.startsWith(root)) return void res.writeHead(403).end();
    readFile(file)
      .then((b) => res.writeHead(200, { 'content-type': 'image/jpeg' }).end(b))
      .catch(() => res.writeHead(404).end());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((r) => server.close(() => r())),
    hits: () => hits,
  };
}

export type Client = InstanceType<typeof FacematchServiceClient>;

export function client(port: number): Client {
  return new FacematchServiceClient(`127.0.0.1:${port}`, credentials.createInsecure());
}

type Unary<Req, Res> = (req: Req, callback: (err: ServiceError | null, res: Res) => void) => unknown;

function unary<Req, Res>(fn: Unary<Req, Res>): (req: Req) => Promise<Res> {
  return (req) => new Promise((resolve, reject) => fn(req, (err, res) => (err ? reject(err) : resolve(res))));
}

/** The generated client's unary calls as promises. */
export function api(c: Client) {
  return {
    processPhoto: unary<ProcessPhotoRequest, ProcessPhotoResponse>((r, cb) => c.processPhoto(r, cb)),
    listUserPhotos: unary<ListUserPhotosRequest, ListUserPhotosResponse>((r, cb) => c.listUserPhotos(r, cb)),
    searchFaces: unary<SearchFacesRequest, SearchFacesResponse>((r, cb) => c.searchFaces(r, cb)),
    deletePhoto: unary<DeletePhotoRequest, DeletePhotoResponse>((r, cb) => c.deletePhoto(r, cb)),
    forgetUser: unary<ForgetUserRequest, ForgetUserResponse>((r, cb) => c.forgetUser(r, cb)),
  };
}
