import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../domain/errors.js';
import { UrlListSource } from './url-source.js';

const urls = Array.from({ length: 7 }, (_, i) => `https://cdn.example.com/ev/${i}.jpg?sig=${i}`);

async function all(source: UrlListSource, token?: string): Promise<string[]> {
  const seen: string[] = [];
  for (;;) {
    const page = await source.list(token);
    seen.push(...page.photos.map((p) => p.photoId));
    if (page.next === undefined) return seen;
    token = page.next;
  }
}

describe('UrlListSource', () => {
  it('lists the URLs in order, a page at a time, with ids from host and path', async () => {
    const source = new UrlListSource(urls, 3);
    const first = await source.list(undefined);
    expect(first.photos[0]).toEqual({ position: '0', photoId: 'cdn.example.com_2Fev_2F0.jpg', imageUrl: urls[0] });
    expect(first.next).toBe('2');
    expect(await all(source)).toEqual(urls.map((_, i) => `cdn.example.com_2Fev_2F${i}.jpg`));
  });

  it('resumes after any photo position (a cursor)', async () => {
    const source = new UrlListSource(urls, 3);
    expect(await all(source, '4')).toEqual(['cdn.example.com_2Fev_2F5.jpg', 'cdn.example.com_2Fev_2F6.jpg']);
    expect(await all(source, '6')).toEqual([]);
    await expect(source.list('x')).rejects.toThrow(InvalidArgumentError);
  });

  it('refuses two URLs that are one photo before any work', () => {
    expect(() => new UrlListSource(['https://h/a.jpg?sig=1', 'https://h/a.jpg?sig=2'])).toThrow('urls[0] and urls[1] are the same photo');
  });
});
