/** The one way this package builds a `minio` client from FACEMATCH_S3_* (the object store and the s3 photo source). */
import { Client } from 'minio';
import type { S3Config } from '../../config/config.js';

export function s3Client(config: S3Config): { client: Client; origin: string } {
  const url = new URL(config.endpoint);
  const useSSL = url.protocol === 'https:';
  const client = new Client({
    endPoint: url.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: url.port ? Number(url.port) : useSSL ? 443 : 80,
    useSSL,
    accessKey: config.accessKey,
    secretKey: config.secretKey,
    // Known region: presigning is local and no request asks the server for the bucket's region first.
    region: config.region,
    pathStyle: true,
    // The client's own retry logs to the console and waits; the callers retry themselves.
    retryOptions: { disableRetry: true },
  });
  return { client, origin: url.origin };
}
