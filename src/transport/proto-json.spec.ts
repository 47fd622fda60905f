import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../domain/errors.js';
import { ListUserPhotosResponse, PhotoKind, ProcessPhotoRequest, SearchFacesRequest } from '../gen/facematch/v1/facematch.js';
import { requestFromJson, responseToJson } from './proto-json.js';
import { forCaller, shorten } from './rpc.js';

describe('proto3 JSON requests', () => {
  it('reads lowerCamelCase and snake_case names, enums by name or number', () => {
    expect(requestFromJson(ProcessPhotoRequest, { photo_id: 'p1', imageUrl: 'http://x/a.jpg', kind: 'PHOTO_KIND_FACECAM', userId: 'u' })).toEqual({
      photoId: 'p1',
      imageUrl: 'http://x/a.jpg',
      eventId: '',
      kind: PhotoKind.PHOTO_KIND_FACECAM,
      userId: 'u',
    });
    expect(requestFromJson(ProcessPhotoRequest, { kind: 1 }).kind).toBe(PhotoKind.PHOTO_KIND_ACTION_SHOT);
    expect(requestFromJson(SearchFacesRequest, { limit: '7' }).limit).toBe(7);
  });

  it('refuses what a proto3 JSON parser refuses: not an object, unknown fields, wrong JSON types', () => {
    for (const json of [[], 'x', null, { photoID: 'p' }, { photoId: 7 }, { photoId: { a: 1 } }, { kind: true }]) {
      expect(() => requestFromJson(ProcessPhotoRequest, json), JSON.stringify(json)).toThrow(InvalidArgumentError);
    }
  });

  it('quotes a long unknown field name by its start only', () => {
    expect(() => requestFromJson(ProcessPhotoRequest, { ['k'.repeat(100_000)]: 1 })).toThrow(/^unknown field "k{64}"… \(100000 characters\)$/);
  });
});

describe('proto3 JSON answers', () => {
  it('write default values out, and floats as a gRPC client reads them', () => {
    expect(responseToJson(ListUserPhotosResponse, { photos: [] })).toEqual({ photos: [] });
    expect(responseToJson(ListUserPhotosResponse, { photos: [{ photoId: 'p', eventId: '', similarity: 0.1 }] })).toEqual({
      photos: [{ photoId: 'p', eventId: '', similarity: Math.fround(0.1) }],
    });
  });
});

describe('error messages sent back', () => {
  it('cut every long word to its start and the whole to 512 characters', () => {
    const url = `http://example.org/${'x'.repeat(5000)}.jpg`;
    expect(shorten(`cannot download ${url}: ECONNREFUSED`)).toBe(`cannot download ${url.slice(0, 64)}… ECONNREFUSED`);
    expect(shorten('a '.repeat(1000)).length).toBeLessThanOrEqual(513);
    const e = forCaller(Object.assign(new Error(`boom ${'y'.repeat(1 << 20)}`)));
    expect([e.code, e.message.length]).toEqual(['INTERNAL', 5 + 64 + 1]);
  });
});
