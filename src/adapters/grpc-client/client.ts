/**
 * Clients of the facematch gRPC service for callers in the cluster (the PhotoBatch controller):
 * insecure credentials (Envoy, the sidecar, does TLS), keepalive so a dead peer is noticed between
 * calls, message limits like the server's, and one client (one channel) per address, shared.
 */
import { credentials, type ChannelOptions } from '@grpc/grpc-js';
import { FacematchServiceClient } from '../../gen/facematch/v1/facematch.js';

/** Like the server's FACEMATCH_MAX_MESSAGE_BYTES default. */
export const DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

/**
 * The channel options every client gets unless the caller overrides them. Keepalive: a ping every
 * 30 s while calls are active, and a ping unanswered for 10 s closes the connection, so a call to a
 * peer that vanished (a node gone, a half-open connection) fails UNAVAILABLE instead of waiting for
 * its deadline. No pings while idle: a server that polices pings (C-core's default allows one per
 * 5 minutes without calls) would answer them with GOAWAY ENHANCE_YOUR_CALM.
 */
export const DEFAULT_CHANNEL_OPTIONS: ChannelOptions = {
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.keepalive_permit_without_calls': 0,
  'grpc.max_receive_message_length': DEFAULT_MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': DEFAULT_MAX_MESSAGE_BYTES,
};

export type FacematchClient = InstanceType<typeof FacematchServiceClient>;

/** A new client for `address` (`host:port`), the defaults merged under `options`. */
export function createFacematchClient(address: string, options: ChannelOptions = {}): FacematchClient {
  return new FacematchServiceClient(address, credentials.createInsecure(), { ...DEFAULT_CHANNEL_OPTIONS, ...options });
}

/**
 * One client per address, made on first use and shared after (a channel multiplexes its calls over
 * one HTTP/2 connection). close() closes them all; a client asked for after close() is a new one.
 */
export class FacematchClients {
  private readonly clients = new Map<string, FacematchClient>();

  constructor(private readonly options: ChannelOptions = {}) {}

  get(address: string): FacematchClient {
    let client = this.clients.get(address);
    if (!client) {
      client = createFacematchClient(address, this.options);
      this.clients.set(address, client);
    }
    return client;
  }

  close(): void {
    for (const client of this.clients.values()) client.close();
    this.clients.clear();
  }
}
