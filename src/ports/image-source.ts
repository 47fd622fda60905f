/** Where photos come from: http(s) URLs, `s3://bucket/key`, and (CLI only) local files. */
export interface ImageSource {
  /** The image's bytes. Throws a typed error: not found, unreachable, too large, forbidden. */
  read(ref: string): Promise<Uint8Array>;
}
