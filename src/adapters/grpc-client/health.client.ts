/**
 * One grpc.health.v1.Health/Check call, for `facematch health` (the `helm test` pod, a probe, an
 * operator at a shell). The service definition is grpc-health-check's, the package the server
 * answers with, so the client and the server read the same proto.
 */
import { credentials, makeGenericClientConstructor, status, type ServiceError } from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { BackendUnavailableError } from '../../domain/errors.js';

/** What the health service says; UNKNOWN and SERVICE_UNKNOWN (Watch only) included for completeness. */
export type ServingStatus = 'UNKNOWN' | 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN';

interface HealthClient {
  check(
    request: { service: string },
    options: { deadline: number },
    callback: (error: ServiceError | null, response?: { status: ServingStatus }) => void,
  ): void;
  close(): void;
}

const HealthClientCtor = makeGenericClientConstructor(healthService, 'grpc.health.v1.Health') as unknown as new (
  address: string,
  creds: ReturnType<typeof credentials.createInsecure>,
  options?: object,
) => HealthClient;

/**
 * Asks `address` (`host:port`, plaintext h2c as Envoy and the service speak it) for the status of
 * `service` ('' for the whole server). Resolves with the status it answers, whatever it is; a call
 * that fails (nothing listening, the deadline passed, a service the server does not know) is a
 * BackendUnavailableError naming the address and the gRPC status.
 */
export async function checkHealth(address: string, service: string, timeoutMs: number): Promise<ServingStatus> {
  // waitForReady off (the default): a connection refused fails the call at once instead of
  // waiting for the deadline.
  const client = new HealthClientCtor(address, credentials.createInsecure());
  try {
    return await new Promise<ServingStatus>((resolve, reject) => {
      client.check({ service }, { deadline: Date.now() + timeoutMs }, (error, response) => {
        if (error) {
          const name = status[error.code] ?? String(error.code);
          const what = error.code === status.NOT_FOUND ? `the server does not know the service "${service}"` : error.details;
          reject(new BackendUnavailableError(`health check of ${address} failed: ${name}: ${what}`, { cause: error }));
        } else {
          resolve(response?.status ?? 'UNKNOWN');
        }
      });
    });
  } finally {
    client.close();
  }
}
