/** Blob storage for annotated images (and, in production, the uploaded originals): S3-shaped. */
export interface ObjectLocation {
  bucket: string;
  key: string;
  /** A URL a client can GET (presigned for S3, file:// for the embedded store). */
  url: string;
}

export interface ObjectStore {
  init(): Promise<void>;
  /** Writes atomically: a reader sees the old object or the new one, never half of one. */
  put(key: string, bytes: Uint8Array, contentType: string): Promise<ObjectLocation>;
  /** Throws SourceNotFoundError when missing. */
  get(key: string): Promise<Uint8Array>;
  exists(key: string): Promise<boolean>;
  /** Idempotent: deleting a missing key is not an error. */
  delete(key: string): Promise<void>;
  location(key: string): Promise<ObjectLocation>;
  ping(): Promise<void>;
}
