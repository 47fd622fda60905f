import { ATTR_RPC_GRPC_STATUS_CODE, ATTR_RPC_METHOD, ATTR_RPC_SERVICE, ATTR_RPC_SYSTEM } from '@opentelemetry/semantic-conventions/incubating';
import { describe, expect, it } from 'vitest';
import { ATTR, RPC_ATTR, STAGES, stageSpan } from './attributes.js';

describe('attribute names', () => {
  it('the RPC names copied here are the semantic conventions package constants', () => {
    expect(RPC_ATTR).toEqual({ system: ATTR_RPC_SYSTEM, service: ATTR_RPC_SERVICE, method: ATTR_RPC_METHOD, grpcStatusCode: ATTR_RPC_GRPC_STATUS_CODE });
  });

  it('every facematch attribute is namespaced and unique', () => {
    const names = Object.values(ATTR);
    expect(new Set(names).size).toBe(names.length);
    for (const name of names) expect(name).toMatch(/^facematch\.[a-z_.]+$/);
  });

  it('stage spans are facematch.stage.<stage>', () => {
    expect(STAGES.map(stageSpan)).toContain('facematch.stage.detect');
  });
});
