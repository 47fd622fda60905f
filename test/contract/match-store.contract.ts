/**
 * Behaviour every MatchStore must have (embedded PGlite, PostgreSQL). The store may already hold
 * data: every test writes photos, events and users of its own.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Landmarks } from '../../src/domain/face.js';
import { faceId, type FaceRecord, type MatchRecord, type PhotoRecord } from '../../src/domain/photo.js';
import type { MatchStore } from '../../src/ports/match-store.js';
import type { StoreUnderTest } from './vector-store.contract.js';

const LANDMARKS: Landmarks = [
  [30.5, 40.25],
  [60.75, 40.5],
  [45, 55.125],
  [35, 70],
  [58.5, 70.25],
];

export interface MatchStoreUnderTest extends StoreUnderTest<MatchStore> {
  /**
   * Rows of photos, matches and match_offers that name the user, read from the store's database
   * directly (test/support/inspect.ts): how the contract checks an erasure.
   */
  rowsNamingUser: (userId: string) => Promise<number>;
}

export function matchStoreContract(name: string, make: () => Promise<MatchStoreUnderTest>): void {
  describe(`MatchStore contract: ${name}`, () => {
    let subject: MatchStoreUnderTest | undefined;
    const store = (): MatchStore => subject!.store;
    const rowsNamingUser = (userId: string): Promise<number> => subject!.rowsNamingUser(userId);
    const ns = `mc${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
    let serial = 0;
    const fresh = (what: string): string => `${ns}-${what}-${++serial}`;
    // Whole milliseconds: what a timestamptz round-trips.
    const at = (n: number): Date => new Date(Date.UTC(2025, 5, 1, 12, 0, n));

    const actionShot = (eventId: string, over: Partial<PhotoRecord> = {}): PhotoRecord => ({
      photoId: fresh('photo'),
      eventId,
      kind: 'ACTION_SHOT',
      sourceUrl: `https://photos.example/${serial}.jpg`,
      width: 4000,
      height: 3000,
      processedAt: at(serial % 60),
      ...over,
    });
    const facecam = (eventId: string, userId: string): PhotoRecord => actionShot(eventId, { kind: 'FACECAM', userId, width: 720, height: 1280 });
    const facesOf = (photo: PhotoRecord, n: number): FaceRecord[] =>
      Array.from({ length: n }, (_, index) => ({
        faceId: faceId(photo.photoId, index),
        photoId: photo.photoId,
        index,
        box: { x: 100.5 + index * 200, y: 80.25, width: 96.75, height: 120 },
        score: 0.875 - index / 100,
        landmarks: LANDMARKS,
      }));
    const match = (face: FaceRecord, eventId: string, userId: string, similarity: number): MatchRecord => ({
      photoId: face.photoId,
      faceId: face.faceId,
      userId,
      eventId,
      similarity,
      matchedAt: at(7),
    });
    /** Stores an action shot with `n` faces and no matches. */
    const stored = async (eventId: string, n: number): Promise<{ photo: PhotoRecord; faces: FaceRecord[] }> => {
      const photo = actionShot(eventId);
      const faces = facesOf(photo, n);
      await store().replacePhoto(photo, faces, []);
      return { photo, faces };
    };

    beforeAll(async () => {
      subject = await make();
      await subject.store.init();
    });
    afterAll(async () => {
      if (!subject) return;
      await subject.store.close();
      await subject.cleanup();
    });

    it('init is idempotent and ping answers', async () => {
      await store().init();
      await expect(store().ping()).resolves.toBeUndefined();
    });

    it('getPhoto returns what replacePhoto stored', async () => {
      const event = fresh('event');
      const user = fresh('user');
      const photo = actionShot(event, { annotatedKey: `annotated/${serial}.jpg` });
      const faces = facesOf(photo, 3);
      const matches = [match(faces[0]!, event, user, 0.625), match(faces[2]!, event, user, 0.5)];
      await store().replacePhoto(photo, faces, matches);
      expect(await store().getPhoto(photo.photoId)).toEqual({ photo, faces, matches });

      const cam = facecam(event, user);
      await store().replacePhoto(cam, facesOf(cam, 1), []);
      expect((await store().getPhoto(cam.photoId))?.photo).toEqual(cam);
      expect(await store().getPhoto(fresh('photo'))).toBeUndefined();
    });

    it('photoRecord returns the photo’s record alone, the latest version, or nothing', async () => {
      const event = fresh('event');
      const photo = actionShot(event, { annotatedKey: `annotated/${serial}.jpg` });
      await store().replacePhoto(photo, facesOf(photo, 2), []);
      expect(await store().photoRecord(photo.photoId)).toEqual(photo);
      const again = { ...photo, eventId: fresh('event'), annotatedKey: `annotated/${serial}-b.jpg` };
      await store().replacePhoto(again, facesOf(again, 1), []);
      expect(await store().photoRecord(photo.photoId)).toEqual(again);
      expect(await store().photoRecord(fresh('photo'))).toBeUndefined();
    });

    it('stores a photo without faces', async () => {
      const photo = actionShot(fresh('event'));
      await store().replacePhoto(photo, [], []);
      expect(await store().getPhoto(photo.photoId)).toEqual({ photo, faces: [], matches: [] });
    });

    it('replacing a photo twice leaves only the second version', async () => {
      const event = fresh('event');
      const [u1, u2] = [fresh('user'), fresh('user')];
      const photo = actionShot(event);
      const before = facesOf(photo, 3);
      await store().replacePhoto(photo, before, [match(before[0]!, event, u1, 0.7), match(before[1]!, event, u1, 0.6)]);

      const again = { ...photo, width: 2000, height: 1500, processedAt: at(42) };
      const after = facesOf(again, 2);
      const afterMatches = [match(after[1]!, event, u2, 0.55)];
      await store().replacePhoto(again, after, afterMatches);
      await store().replacePhoto(again, after, afterMatches);

      expect(await store().getPhoto(photo.photoId)).toEqual({ photo: again, faces: after, matches: afterMatches });
      expect(await store().photosOfUser(u1)).toEqual([]);
      expect(await rowsNamingUser(u1)).toBe(0);
      expect(await store().photosOfUser(u2)).toEqual([{ photoId: photo.photoId, eventId: event, similarity: expect.closeTo(0.55, 5) as number }]);
    });

    it('rejects a facecam without a user and keeps nothing of it', async () => {
      const photo: PhotoRecord = { ...actionShot(fresh('event')), kind: 'FACECAM' };
      await expect(store().replacePhoto(photo, facesOf(photo, 1), [])).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      expect(await store().getPhoto(photo.photoId)).toBeUndefined();
    });

    it('rejects a match of a face that is not in the photo, keeping the previous version', async () => {
      const event = fresh('event');
      const { photo, faces } = await stored(event, 1);
      const stranger: FaceRecord = { ...faces[0]!, faceId: faceId(fresh('photo'), 0) };
      await expect(store().replacePhoto(photo, [], [match(stranger, event, fresh('user'), 0.9)])).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      expect((await store().getPhoto(photo.photoId))?.faces).toEqual(faces);
    });

    it('offerMatches keeps the best user of each face', async () => {
      const event = fresh('event');
      const [u1, u2, u3] = [fresh('user'), fresh('user'), fresh('user')];
      const { photo, faces } = await stored(event, 2);
      const face = faces[0]!;

      expect(await store().offerMatches([match(face, event, u1, 0.6)])).toEqual([match(face, event, u1, 0.6)]);
      // Worse, then equal: not written.
      expect(await store().offerMatches([match(face, event, u2, 0.5)])).toEqual([]);
      expect(await store().offerMatches([match(face, event, u2, 0.6)])).toEqual([]);
      expect((await store().getPhoto(photo.photoId))?.matches.map((m) => m.userId)).toEqual([u1]);
      // Better: replaces.
      expect(await store().offerMatches([match(face, event, u2, 0.7)])).toEqual([match(face, event, u2, 0.7)]);
      expect(await store().photosOfUser(u1)).toEqual([]);
      expect((await store().photosOfUser(u2)).map((p) => p.photoId)).toEqual([photo.photoId]);

      // Several offers for one face in one call: the best one wins if it beats the current match.
      const written = await store().offerMatches([match(face, event, u1, 0.75), match(face, event, u3, 0.8), match(faces[1]!, event, u1, 0.4)]);
      expect(written.map((m) => [m.faceId, m.userId]).sort()).toEqual([[face.faceId, u3], [faces[1]!.faceId, u1]].sort());
      const matches = (await store().getPhoto(photo.photoId))?.matches;
      expect(matches?.map((m) => [m.faceId, m.userId, m.similarity])).toEqual([
        [face.faceId, u3, expect.closeTo(0.8, 5)],
        [faces[1]!.faceId, u1, expect.closeTo(0.4, 5)],
      ]);
    });

    it('offerMatches ignores faces of facecams', async () => {
      const event = fresh('event');
      const user = fresh('user');
      const cam = facecam(event, fresh('user'));
      const camFaces = facesOf(cam, 1);
      await store().replacePhoto(cam, camFaces, []);
      expect(await store().offerMatches([match(camFaces[0]!, event, user, 0.9)])).toEqual([]);
      expect(await rowsNamingUser(user)).toBe(0);
      expect(await store().offerMatches([])).toEqual([]);
    });

    it('an offer to a face whose photo is not recorded yet is applied when it is, where it beats the face’s own match', async () => {
      const event = fresh('event');
      const [user, other] = [fresh('user'), fresh('user')];
      // The action shot has written its vectors but not its record when the enrolment offers.
      const photo = actionShot(event);
      const faces = facesOf(photo, 3);
      expect(await store().offerMatches([match(faces[0]!, event, user, 0.7), match(faces[1]!, event, user, 0.5)])).toEqual([]);
      expect(await store().photosOfUser(user)).toEqual([]);
      expect(await rowsNamingUser(user)).toBe(2); // the kept offers name the user

      // Its record: face 1's own match (other, 0.6) beats the offer (0.5); face 0 takes the offer.
      await store().replacePhoto(photo, faces, [match(faces[1]!, event, other, 0.6)]);
      const got = await store().getPhoto(photo.photoId);
      expect(got?.matches.map((m) => [m.faceId, m.userId, m.similarity])).toEqual([
        [faces[0]!.faceId, user, expect.closeTo(0.7, 5)],
        [faces[1]!.faceId, other, expect.closeTo(0.6, 5)],
      ]);
      expect(got?.matches[0]).toMatchObject({ photoId: photo.photoId, eventId: event });
      expect((await store().photosOfUser(user)).map((p) => p.photoId)).toEqual([photo.photoId]);
      // Applied once: the offers are gone, a reprocess does not bring them back.
      expect(await rowsNamingUser(user)).toBe(1);
      await store().replacePhoto(photo, faces, []);
      expect(await store().photosOfUser(user)).toEqual([]);
    });

    it('kept offers go with a deleted photo and a forgotten user', async () => {
      const event = fresh('event');
      const user = fresh('user');
      const gone = actionShot(event);
      const never = actionShot(event);
      await store().offerMatches([match(facesOf(gone, 1)[0]!, event, user, 0.8), match(facesOf(never, 1)[0]!, event, user, 0.8)]);
      expect(await rowsNamingUser(user)).toBe(2);
      expect(await store().deletePhoto(gone.photoId)).toBeUndefined();
      expect(await rowsNamingUser(user)).toBe(1);
      await store().replacePhoto(gone, facesOf(gone, 1), []);
      expect(await store().photosOfUser(user)).toEqual([]);
      await store().forgetUser(user);
      expect(await rowsNamingUser(user)).toBe(0);
      await store().replacePhoto(never, facesOf(never, 1), []);
      expect(await store().photosOfUser(user)).toEqual([]);
    });

    it('photosOfUser lists each photo once with its best similarity, best first, by event on demand', async () => {
      const [e1, e2] = [fresh('event'), fresh('event')];
      const user = fresh('user');
      const other = fresh('user');
      const p1 = await stored(e1, 3);
      const p2 = await stored(e1, 1);
      const p3 = await stored(e2, 1);
      await store().offerMatches([
        match(p1.faces[0]!, e1, user, 0.6),
        match(p1.faces[1]!, e1, user, 0.8),
        match(p1.faces[2]!, e1, other, 0.9),
        match(p2.faces[0]!, e1, user, 0.7),
        match(p3.faces[0]!, e2, user, 0.9),
      ]);
      const all = await store().photosOfUser(user);
      expect(all.map((p) => [p.photoId, p.eventId])).toEqual([
        [p3.photo.photoId, e2],
        [p1.photo.photoId, e1],
        [p2.photo.photoId, e1],
      ]);
      expect(all.map((p) => p.similarity)).toEqual([expect.closeTo(0.9, 5), expect.closeTo(0.8, 5), expect.closeTo(0.7, 5)]);
      expect((await store().photosOfUser(user, e1)).map((p) => p.photoId)).toEqual([p1.photo.photoId, p2.photo.photoId]);
      expect(await store().photosOfUser(user, fresh('event'))).toEqual([]);
      expect(await store().photosOfUser(fresh('user'))).toEqual([]);
    });

    it('photosOfEvent pages through an event’s photos in byte order of their ids, and no other event’s', async () => {
      const [event, other] = [fresh('event'), fresh('event')];
      const user = fresh('user');
      // Upper and lower case, '-', '.', '_': byte order differs from a locale's (en_US puts "a" before "B").
      const ids = ['a_3', 'B', 'a-1', 'Z9', 'a.2', 'a', '0'].map((s) => `${ns}-${s}`);
      const cam = { ...facecam(event, user), photoId: ids[1]! };
      const photos = [cam, ...ids.filter((id) => id !== cam.photoId).map((photoId) => actionShot(event, { photoId }))];
      for (const p of photos) await store().replacePhoto(p, facesOf(p, 1), []);
      await stored(other, 1);
      const byId = [...photos].sort((a, b) => (a.photoId < b.photoId ? -1 : 1));

      expect(await store().photosOfEvent(event, undefined, 100)).toEqual(byId);
      const pages: PhotoRecord[][] = [];
      for (let after: string | undefined, page: PhotoRecord[]; (page = await store().photosOfEvent(event, after, 2)).length > 0; after = page.at(-1)!.photoId) {
        pages.push(page);
      }
      expect(pages.map((p) => p.length)).toEqual([2, 2, 2, 1]);
      expect(pages.flat()).toEqual(byId);
      expect(pages.flat().find((p) => p.kind === 'FACECAM')).toEqual(cam);
      // After any id, recorded or not: the photos that sort after it.
      expect((await store().photosOfEvent(event, `${ns}-a-0`, 100)).map((p) => p.photoId)).toEqual([`${ns}-a-1`, `${ns}-a.2`, `${ns}-a_3`]);
      expect(await store().photosOfEvent(event, byId.at(-1)!.photoId, 100)).toEqual([]);
      expect(await store().photosOfEvent(fresh('event'), undefined, 100)).toEqual([]);

      // A photo processed again into another event is listed there only; a deleted one nowhere.
      await store().replacePhoto({ ...byId[0]!, eventId: other }, [], []);
      await store().deletePhoto(byId[1]!.photoId);
      expect((await store().photosOfEvent(event, undefined, 100)).map((p) => p.photoId)).toEqual(byId.slice(2).map((p) => p.photoId));
      expect((await store().photosOfEvent(other, undefined, 100)).map((p) => p.photoId)).toContain(byId[0]!.photoId);
    });

    it('samplesOfUser lists the user’s facecams only', async () => {
      const event = fresh('event');
      const [user, other] = [fresh('user'), fresh('user')];
      const cams = [facecam(event, user), facecam(event, user)];
      for (const cam of [...cams, facecam(event, other)]) await store().replacePhoto(cam, facesOf(cam, 1), []);
      const { faces } = await stored(event, 1);
      await store().offerMatches([match(faces[0]!, event, user, 0.9)]);
      const samples = await store().samplesOfUser(user);
      expect(samples.map((p) => p.photoId).sort()).toEqual(cams.map((p) => p.photoId).sort());
      expect(samples.every((p) => p.kind === 'FACECAM' && p.userId === user)).toBe(true);
    });

    it('deletePhoto removes the photo with its faces and matches and returns it', async () => {
      const event = fresh('event');
      const user = fresh('user');
      const photo = actionShot(event);
      const faces = facesOf(photo, 2);
      await store().replacePhoto(photo, faces, [match(faces[0]!, event, user, 0.8)]);
      expect(await rowsNamingUser(user)).toBe(1);

      expect(await store().deletePhoto(photo.photoId)).toEqual(photo);
      expect(await store().getPhoto(photo.photoId)).toBeUndefined();
      expect(await rowsNamingUser(user)).toBe(0);
      expect(await store().deletePhoto(photo.photoId)).toBeUndefined();
      // Its face ids are free again: a new photo may reuse them.
      await store().replacePhoto(photo, faces, []);
      expect((await store().getPhoto(photo.photoId))?.faces).toHaveLength(2);
    });

    it('forgetUser removes the user’s matches and facecams, and nothing of anyone else', async () => {
      const event = fresh('event');
      const [user, other] = [fresh('user'), fresh('user')];
      const camsOfUser = [facecam(event, user), facecam(event, user)];
      const camOfOther = facecam(event, other);
      for (const cam of [...camsOfUser, camOfOther]) await store().replacePhoto(cam, facesOf(cam, 1), []);
      const shot = await stored(event, 3);
      await store().offerMatches([
        match(shot.faces[0]!, event, user, 0.8),
        match(shot.faces[1]!, event, other, 0.7),
        match(shot.faces[2]!, event, user, 0.6),
      ]);
      // A photo that names the user without being a facecam (an upload of theirs).
      const upload = actionShot(event, { userId: user });
      await store().replacePhoto(upload, facesOf(upload, 1), []);
      expect(await rowsNamingUser(user)).toBe(5);
      const otherBefore = {
        rows: await rowsNamingUser(other),
        photos: await store().photosOfUser(other),
        samples: await store().samplesOfUser(other),
      };

      const removed = await store().forgetUser(user);
      expect(removed.map((p) => p.photoId).sort()).toEqual(camsOfUser.map((p) => p.photoId).sort());
      expect(removed.find((p) => p.photoId === camsOfUser[0]!.photoId)).toEqual(camsOfUser[0]);
      expect(await rowsNamingUser(user)).toBe(0);
      expect(await store().photosOfUser(user)).toEqual([]);
      expect(await store().samplesOfUser(user)).toEqual([]);
      for (const cam of camsOfUser) expect(await store().getPhoto(cam.photoId)).toBeUndefined();

      // The action shot stays, with all its faces and the other user's match.
      const after = await store().getPhoto(shot.photo.photoId);
      expect(after?.faces).toEqual(shot.faces);
      expect(after?.matches.map((m) => m.userId)).toEqual([other]);
      expect((await store().getPhoto(upload.photoId))?.faces).toHaveLength(1);
      expect({
        rows: await rowsNamingUser(other),
        photos: await store().photosOfUser(other),
        samples: await store().samplesOfUser(other),
      }).toEqual(otherBefore);
      expect(await store().forgetUser(user)).toEqual([]);
    });

    it('a forgotten user is not matched again by a request that searched before the erasure; enrolling again lifts it', async () => {
      const event = fresh('event');
      const [user, other] = [fresh('user'), fresh('user')];
      const cam = facecam(event, user);
      await store().replacePhoto(cam, facesOf(cam, 1), []);
      // An action shot found the user among the samples, then the user was erased, then it records.
      const photo = actionShot(event);
      const faces = facesOf(photo, 2);
      // And an enrolment's offer to it was kept before the erasure: it goes too.
      await store().offerMatches([match(faces[1]!, event, user, 0.8)]);
      await store().forgetUser(user);
      await store().replacePhoto(photo, faces, [match(faces[0]!, event, user, 0.7), match(faces[1]!, event, other, 0.6)]);
      expect((await store().getPhoto(photo.photoId))?.matches.map((m) => m.userId)).toEqual([other]);
      expect(await store().photosOfUser(user)).toEqual([]);
      expect(await rowsNamingUser(user)).toBe(0);

      // The user enrols again: matches are recorded again.
      const again = facecam(event, user);
      await store().replacePhoto(again, facesOf(again, 1), []);
      await store().replacePhoto(photo, faces, [match(faces[0]!, event, user, 0.7)]);
      expect((await store().photosOfUser(user)).map((p) => p.photoId)).toEqual([photo.photoId]);
    });
  });
}
