/** DeletePhoto: a photo's vectors, annotated image and records, under the photo's lock. */
import { checkId } from '../domain/ids.js';
import { photoLock } from '../ports/locks.js';
import { ATTR, SPAN } from '../telemetry/attributes.js';
import { settled, type ServiceDeps, type Tracing } from './use-case.js';

export class DeletePhotoService {
  constructor(
    private readonly d: ServiceDeps,
    private readonly t: Tracing,
  ) {}

  /** Removes a photo: its vectors, annotated image and records. False when it was not known. */
  async run(photoIdIn: string): Promise<boolean> {
    const photoId = checkId('photo_id', photoIdIn);
    return this.t.inSpan(SPAN.deletePhoto, { [ATTR.photoId]: photoId }, () =>
      this.d.locks.withLocks([photoLock(photoId)], async () => {
        const known = await this.d.matches.getPhoto(photoId);
        await settled(this.d.vectors.deleteByPhoto('action_faces', photoId), this.d.vectors.deleteByPhoto('user_samples', photoId));
        if (known?.photo.annotatedKey) await this.d.objects.delete(known.photo.annotatedKey);
        await this.d.matches.deletePhoto(photoId);
        return known !== undefined;
      }),
    );
  }
}
