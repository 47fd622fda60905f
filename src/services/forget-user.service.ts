/** ForgetUser: biometric erasure of a user, under the user's lock. */
import { trace } from '@opentelemetry/api';
import { checkId } from '../domain/ids.js';
import { userLock } from '../ports/locks.js';
import { ATTR, SPAN } from '../telemetry/attributes.js';
import type { ServiceDeps, Tracing } from './use-case.js';

export interface ForgetUserResult {
  deletedSamples: number;
  deletedMatches: number;
  deletedObjects: number;
}

export class ForgetUserService {
  constructor(
    private readonly d: ServiceDeps,
    private readonly t: Tracing,
  ) {}

  /**
   * Biometric erasure: every sample vector, facecam image and match of the user. Vectors and
   * images go first and the records last, so an interrupted erasure is completed by a retry.
   */
  async run(userIdIn: string): Promise<ForgetUserResult> {
    const userId = checkId('user_id', userIdIn);
    // Under the user's lock: an enrolment of the user running now either finishes first (and is
    // erased here) or starts its write phase after (and enrols the user anew), never half of each.
    return this.t.inSpan(SPAN.forgetUser, { [ATTR.userId]: userId }, () =>
      this.d.locks.withLocks([userLock(userId)], async () => {
        const samples = await this.d.matches.samplesOfUser(userId);
        const matchesBefore = (await this.d.matches.photosOfUser(userId)).length;
        const deletedSamples = await this.d.vectors.deleteByUser(userId);
        let deletedObjects = 0;
        for (const s of samples) {
          if (s.annotatedKey) {
            await this.d.objects.delete(s.annotatedKey);
            deletedObjects++;
          }
        }
        await this.d.matches.forgetUser(userId);
        // The vectors are deleted; a store that keeps deleted data until compaction (Milvus) is asked
        // to compact now. A failure here does not undo the erasure: it is recorded on the span, and
        // the store's own scheduled compaction reclaims the space later.
        await this.d.vectors.compact?.().catch((error: unknown) => trace.getActiveSpan()?.recordException(error as Error));
        return { deletedSamples, deletedMatches: matchesBefore, deletedObjects };
      }),
    );
  }
}
