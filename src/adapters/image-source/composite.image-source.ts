/**
 * One entry point for every image reference: http(s) URLs (HttpImageSource), `s3://bucket/key`
 * (the object store), and local files when allowed (the CLI; never the network service).
 */
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import type { SourceConfig } from '../../config/config.js';
import {
  FacematchError,
  InvalidArgumentError,
  SourceNotFoundError,
  SourceTooLargeError,
} from '../../domain/errors.js';
import type { ImageSource } from '../../ports/image-source.js';
import type { ObjectStore } from '../../ports/object-store.js';

export interface CompositeOptions {
  http: ImageSource;
  /** Reads `s3://bucket/key`; the bucket must be the store's. */
  objects?: { store: ObjectStore; bucket: string };
  /** Accept plain paths (CLI only). */
  localFiles: boolean;
  config: SourceConfig;
}

export class CompositeImageSource implements ImageSource {
  constructor(private readonly o: CompositeOptions) {}

  async read(ref: string): Promise<Uint8Array> {
    if (ref.trim() === '') throw new InvalidArgumentError('no image given: pass an http(s) URL or s3://bucket/key');
    const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(ref)?.[1]?.toLowerCase();
    if (scheme === 'http' || scheme === 'https') return this.o.http.read(ref);
    if (scheme === 's3') return this.readObject(ref);
    if (scheme && scheme.length > 1) throw new InvalidArgumentError(`unsupported URL scheme "${scheme}:" in ${ref}`);
    if (!this.o.localFiles) throw new InvalidArgumentError(`"${ref}" is not a URL; use http(s) or s3://bucket/key`);
    return this.readLocal(ref);
  }

  private async readObject(ref: string): Promise<Uint8Array> {
    const m = /^s3:\/\/([^/]+)\/(.+)$/i.exec(ref);
    if (!m) throw new InvalidArgumentError(`"${ref}" is not of the form s3://bucket/key`);
    const [, bucket, key] = m;
    if (!this.o.objects) throw new InvalidArgumentError('s3:// sources are not configured');
    if (bucket !== this.o.objects.bucket) {
      throw new InvalidArgumentError(`bucket "${bucket}" is not the configured bucket "${this.o.objects.bucket}"`);
    }
    return this.o.objects.store.get(key!);
  }

  private async readLocal(file: string): Promise<Uint8Array> {
    const full = path.resolve(file);
    try {
      const s = await stat(full);
      if (!s.isFile()) throw new SourceNotFoundError(`${full} is not a file`);
      if (s.size > this.o.config.maxBytes) {
        throw new SourceTooLargeError(`${full} is ${s.size} bytes; the limit is ${this.o.config.maxBytes}`);
      }
      return await readFile(full);
    } catch (error) {
      if (error instanceof FacematchError) throw error;
      throw new SourceNotFoundError(`cannot read ${full}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, {
        cause: error,
      });
    }
  }
}
