/** A loopback photo server that answers as late as a test asks. */
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { GROUPS_DIR } from '../support/shared.js';

export interface SlowPhotos {
  /** testdata/groups/<file>, answered `delayMs` after the request. */
  url: (file: string, delayMs: number) => string;
  /** Requests that arrived so far. */
  arrived: () => number;
  close: () => Promise<void>;
}

/** Serves testdata/groups/<file>, each answer `?delay=ms` late; counts the requests that arrived. */
export async function slowPhotos(): Promise<SlowPhotos> {
  let arrived = 0;
  const timers = new Set<NodeJS.Timeout>();
  const server: Server = createServer((req, res) => {
    arrived++;
    const url = new URL(req.url ?? '/', 'http://photos');
    const timer = setTimeout(() => {
      timers.delete(timer);
      readFile(path.join(GROUPS_DIR, path.basename(url.pathname)))
        .then((b) => res.writeHead(200, { 'content-type': 'image/jpeg' }).end(b))
        .catch(() => res.writeHead(404).end());
    }, Number(url.searchParams.get('delay') ?? 0));
    timers.add(timer);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: (file, delayMs) => `${base}/${file}?delay=${delayMs}`,
    arrived: () => arrived,
    close: async () => {
      for (const t of timers) clearTimeout(t);
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
