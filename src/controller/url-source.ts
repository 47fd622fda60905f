/**
 * The `urls` source of a PhotoBatch: its list, in the order given, a page at a time. A photo's
 * position is its index, so a batch resumes after the index in its cursor; its id is the URL's
 * host and path (photo-id.ts), and two URLs that would share one are refused before any work.
 */
import { InvalidArgumentError } from '../domain/errors.js';
import { quote } from '../domain/ids.js';
import type { PhotoSource, SourcePage, SourcePhoto } from '../ports/photo-source.js';
import { urlPhotoIds } from './photo-id.js';

export class UrlListSource implements PhotoSource {
  private readonly photos: SourcePhoto[];

  /** Throws InvalidArgumentError when a URL does not parse or two are the same photo. */
  constructor(
    urls: readonly string[],
    private readonly pageSize = 100,
  ) {
    const ids = urlPhotoIds(urls);
    this.photos = urls.map((imageUrl, i) => ({ position: String(i), photoId: ids[i]!, imageUrl }));
  }

  list(pageToken: string | undefined): Promise<SourcePage> {
    let start = 0;
    if (pageToken !== undefined) {
      if (!/^(0|[1-9][0-9]{0,8})$/.test(pageToken)) {
        return Promise.reject(new InvalidArgumentError(`cursor ${quote(pageToken)} is not a position of a urls source`));
      }
      start = Number(pageToken) + 1;
    }
    const photos = this.photos.slice(start, start + this.pageSize);
    const page: SourcePage = { photos };
    if (start + this.pageSize < this.photos.length) page.next = photos.at(-1)!.position;
    return Promise.resolve(page);
  }
}
