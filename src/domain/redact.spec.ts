import { describe, expect, it } from 'vitest';
import { redactUrl } from './redact.js';

describe('redactUrl', () => {
  it('drops credentials, the query string and the fragment of a URL', () => {
    expect(redactUrl('https://alice:s3cret@photos.example.org/e/1.jpg?X-Amz-Signature=abc&token=t#frag')).toBe(
      'https://photos.example.org/e/1.jpg',
    );
    expect(redactUrl('http://alice@photos.example.org:8080/a.jpg')).toBe('http://photos.example.org:8080/a.jpg');
    expect(redactUrl('s3://key:secret@facematch/a/b.jpg?versionId=1')).toBe('s3://facematch/a/b.jpg');
    // A special scheme without slashes and an `@` in the password are still credentials.
    expect(redactUrl('http:bob:p@ss@host.example/x.jpg')).toBe('http://host.example/x.jpg');
  });

  it('leaves references with nothing secret exactly as they were', () => {
    for (const ref of ['https://Photos.example.org/a/../b.jpg', 's3://facematch/a/b.jpg', '/data/in/photo.jpg', 'photo.jpg', '']) {
      expect(redactUrl(ref)).toBe(ref);
    }
  });

  it('strips what would be secret from a URL that does not parse', () => {
    const redacted = redactUrl('http://alice:s3cret@[bad host/a.jpg?sig=xyz');
    expect(redacted).not.toMatch(/s3cret|alice|xyz/);
    expect(redacted).toBe('http://[bad host/a.jpg');
  });
});
