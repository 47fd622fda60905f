import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { createFacematchClient } from './client.js';
import { GrpcPhotoProcessor, toOutcome, toPhotoProcessError, type ProcessPhotoClient } from './grpc.photo-processor.js';
import { PhotoKind, type ProcessPhotoResponse } from '../../gen/facematch/v1/facematch.js';
import type { PhotoRequest } from '../../ports/photo-processor.js';

const failure = (code: status, details: string, trailer?: string): ServiceError => {
  const metadata = new Metadata();
  if (trailer !== undefined) metadata.set('facematch-error-code', trailer);
  return Object.assign(new Error(`${code} ${status[code]}: ${details}`), { code, details, metadata });
};

const request: PhotoRequest = { photoId: 'p1', imageUrl: 'http://photos/p1.jpg', eventId: 'e1', kind: 'ACTION_SHOT' };

describe('toPhotoProcessError', () => {
  it("takes the service's code from its trailer, with its message", () => {
    const e = toPhotoProcessError(failure(status.INVALID_ARGUMENT, 'not an image', 'IMAGE_UNSUPPORTED'));
    expect([e.code, e.message]).toEqual(['IMAGE_UNSUPPORTED', 'not an image']);
    // The service's OVERLOADED stays the service's, though its status is RESOURCE_EXHAUSTED too.
    expect(toPhotoProcessError(failure(status.RESOURCE_EXHAUSTED, 'busy', 'OVERLOADED')).code).toBe('OVERLOADED');
  });

  it('without a trailer: what a proxy or the transport says, as itself', () => {
    expect(toPhotoProcessError(failure(status.RESOURCE_EXHAUSTED, 'upstream overflow')).code).toBe('RESOURCE_EXHAUSTED');
    expect(toPhotoProcessError(failure(status.UNAVAILABLE, 'no healthy upstream')).code).toBe('UNAVAILABLE');
    expect(toPhotoProcessError(failure(status.DEADLINE_EXCEEDED, 'Deadline exceeded')).code).toBe('DEADLINE_EXCEEDED');
    expect(toPhotoProcessError(failure(status.CANCELLED, 'Cancelled on client')).code).toBe('CANCELLED');
  });

  it('anything else is INTERNAL, naming the status; an unknown trailer code is named too', () => {
    const e = toPhotoProcessError(failure(status.UNIMPLEMENTED, 'no such method'));
    expect([e.code, e.message]).toEqual(['INTERNAL', 'ProcessPhoto failed with gRPC status UNIMPLEMENTED: no such method']);
    const later = toPhotoProcessError(failure(status.FAILED_PRECONDITION, 'later', 'SOMETHING_NEW'));
    expect(later.code).toBe('INTERNAL');
    expect(later.message).toContain('SOMETHING_NEW');
  });
});

describe('toOutcome', () => {
  const face = (users: string[]) => ({ faceId: 'f', score: 0.9, landmarks: [], matches: users.map((userId) => ({ userId, photoId: '', faceId: '', similarity: 0.6 })) });
  const response = (over: Partial<ProcessPhotoResponse>): ProcessPhotoResponse => ({
    photoId: 'p1',
    eventId: 'e1',
    kind: PhotoKind.PHOTO_KIND_ACTION_SHOT,
    width: 10,
    height: 10,
    faces: [],
    matches: [],
    ...over,
  });

  it('an action shot: its faces recognised as someone', () => {
    expect(toOutcome('ACTION_SHOT', response({ faces: [face(['a']), face([]), face(['b'])] }))).toEqual({ faces: 3, matched: 2 });
  });

  it("a facecam: the action-shot faces found for the user, not its own face's (none)", () => {
    const res = response({ kind: PhotoKind.PHOTO_KIND_FACECAM, faces: [face([])], matches: face(['u', 'u', 'u']).matches });
    expect(toOutcome('FACECAM', res)).toEqual({ faces: 1, matched: 3 });
  });
});

describe('GrpcPhotoProcessor', () => {
  const strict: ProcessPhotoClient = {
    processPhoto: () => {
      throw new Error('processPhoto was called');
    },
  };

  it('makes no call when the signal is already aborted', async () => {
    await expect(new GrpcPhotoProcessor(strict).process(request, AbortSignal.abort())).rejects.toMatchObject({ code: 'CANCELLED' });
  });

  it('rejects with INTERNAL, not a throw, on a closed client', async () => {
    const client = createFacematchClient('127.0.0.1:1');
    client.close();
    await expect(new GrpcPhotoProcessor(client).process(request, new AbortController().signal)).rejects.toMatchObject({ code: 'INTERNAL' });
  });
});
