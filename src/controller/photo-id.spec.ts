import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../domain/errors.js';
import { checkId } from '../domain/ids.js';
import { photoIdFor, s3PhotoId, urlPhotoId, urlPhotoIds } from './photo-id.js';

describe('photo ids of a batch source', () => {
  it('are the same for the same object every time, and valid ids', () => {
    expect(s3PhotoId('shoots', 'day 1/IMG_0001.jpg')).toBe('shoots_2Fday_201_2FIMG_5F0001.jpg');
    expect(s3PhotoId('shoots', 'day 1/IMG_0001.jpg')).toBe(s3PhotoId('shoots', 'day 1/IMG_0001.jpg'));
    for (const key of ['a.jpg', 'é/ü.png', 'x/../y', '-', '_', ' ', 'a'.repeat(1000), '日本/写真.jpg']) {
      const id = s3PhotoId('b1', key);
      expect(checkId('photo id', id)).toBe(id);
    }
  });

  it('never give two references one id: the escape is injective, a cut id carries a hash', () => {
    const refs = ['b/a_b', 'b/a/b', 'b/a-b', 'b/a_5Fb', 'b/a_2Fb', 'b/a b', 'b/a.b', 'b/A_b'];
    const ids = refs.map(photoIdFor);
    expect(new Set(ids).size).toBe(refs.length);

    const long = 'b/' + 'x'.repeat(200);
    const a = photoIdFor(`${long}/1.jpg`);
    const b = photoIdFor(`${long}/2.jpg`);
    expect(a).not.toBe(b);
    expect(a).toHaveLength(128);
    expect(a).toMatch(/_h[0-9a-f]{24}$/);
    // A cut id never equals the escape of another reference (an escape never holds `_h`).
    expect(photoIdFor(a)).not.toBe(a);
    // A cut never splits an escape.
    const multibyte = photoIdFor('b/' + 'é'.repeat(100));
    expect(multibyte).toMatch(/^b(_2F)(_C3_A9)+_h[0-9a-f]{24}$/);
  });

  it('refuses a reference that does not start with a letter or digit', () => {
    expect(() => photoIdFor('/abs')).toThrow(InvalidArgumentError);
  });

  it('give a URL the id of its host and path: re-signing keeps it, s3:// matches the s3 source', () => {
    const a = urlPhotoId('https://cdn.example.com/e/1.jpg?X-Amz-Signature=aaa');
    expect(a).toBe(urlPhotoId('https://user:pw@cdn.example.com/e/1.jpg?X-Amz-Signature=bbb#f'));
    expect(a).toBe('cdn.example.com_2Fe_2F1.jpg');
    expect(urlPhotoId('s3://shoots/day1/a.jpg')).toBe(s3PhotoId('shoots', 'day1/a.jpg'));
    // The key as the service reads it: not percent-encoded by URL parsing.
    expect(urlPhotoId('s3://shoots/a 1.jpg')).toBe(s3PhotoId('shoots', 'a 1.jpg'));
    expect(urlPhotoId('s3://shoots/é/ü.png')).toBe(s3PhotoId('shoots', 'é/ü.png'));
  });

  it('refuse a URL list where two URLs are one photo, naming both without their queries', () => {
    expect(urlPhotoIds(['https://h/1.jpg', 'https://h/2.jpg'])).toEqual(['h_2F1.jpg', 'h_2F2.jpg']);
    expect(() => urlPhotoIds(['https://h/1.jpg?sig=a', 'https://h/2.jpg', 'https://h/1.jpg?sig=b'])).toThrow(
      'urls[0] and urls[2] are the same photo "h_2F1.jpg": "https://h/1.jpg" (only their queries differ)',
    );
    expect(() => urlPhotoIds(['not a url'])).toThrow(InvalidArgumentError);
  });
});
