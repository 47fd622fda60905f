/** Where photos come from: http(s) URLs, `s3://bucket/key`, and (CLI only) local files. */
export interface ImageSource {
  /**
   * The image's bytes. Throws a typed error: not found, unreachable, too large, forbidden; and
   * CancelledError as soon as `signal` aborts (the download is stopped, its connection closed).
   * Messages name the source through redactUrl: never its credentials or query string.
   */
  read(ref: string, signal?: AbortSignal): Promise<Uint8Array>;
}
