/** ListUserPhotos: the photos a user appears in. */
import { checkId } from '../domain/ids.js';
import type { UserPhoto } from '../ports/match-store.js';
import { ATTR, SPAN } from '../telemetry/attributes.js';
import type { ServiceDeps, Tracing } from './use-case.js';

export class ListUserPhotosService {
  constructor(
    private readonly d: ServiceDeps,
    private readonly t: Tracing,
  ) {}

  /** Photos the user appears in, each once, best similarity first. */
  async run(userIdIn: string, eventId?: string): Promise<UserPhoto[]> {
    const userId = checkId('user_id', userIdIn);
    if (eventId) checkId('event_id', eventId);
    return this.t.inSpan(SPAN.listUserPhotos, { [ATTR.userId]: userId }, () => this.d.matches.photosOfUser(userId, eventId || undefined));
  }
}
