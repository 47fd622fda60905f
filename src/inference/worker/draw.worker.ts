/**
 * The drawing worker thread: draws the annotated copy (overlays blended into the pixels, JPEG
 * encode) so that none of it runs on the main thread's event loop. Its own event loop is idle but
 * for the blend; sharp's work runs on libvips threads.
 */
import { parentPort } from 'node:worker_threads';
import { toFacematchError } from '../../domain/errors.js';
import { annotate } from '../annotate.js';
import type { DrawReply, DrawRequest } from './protocol.js';

const port = parentPort!;

port.on('message', (req: DrawRequest) => {
  annotate(req.source, req.faces, req.options)
    .then((jpeg) => {
      // sharp's buffer cannot be detached: one copy here, and the copy moves across for free.
      const bytes = new Uint8Array(jpeg);
      port.postMessage({ id: req.id, ok: true, jpeg: bytes } satisfies DrawReply, [bytes.buffer]);
    })
    .catch((error: unknown) => {
      port.postMessage({ id: req.id, ok: false, error: toFacematchError(error).toJSON() } satisfies DrawReply);
    });
});
