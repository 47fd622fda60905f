/** Every span and attribute name facematch emits, in one place (dashboards and tests rely on them). */
export const TRACER_NAME = 'facematch';

export const SPAN = {
  processPhoto: 'facematch.process_photo',
  searchFaces: 'facematch.search_faces',
  listUserPhotos: 'facematch.list_user_photos',
  listEventPhotos: 'facematch.list_event_photos',
  deletePhoto: 'facematch.delete_photo',
  forgetUser: 'facematch.forget_user',
} as const;

import type { Stage } from '../domain/face.js';

export { STAGES, type Stage } from '../domain/face.js';

/** One span per pipeline stage, children of the request's span. */
export const stageSpan = (stage: Stage): string => `facematch.stage.${stage}`;

export const ATTR = {
  photoId: 'facematch.photo_id',
  eventId: 'facematch.event_id',
  kind: 'facematch.photo_kind',
  userId: 'facematch.user_id',
  faces: 'facematch.faces',
  matches: 'facematch.matches',
  threshold: 'facematch.threshold',
  imageBytes: 'facematch.image_bytes',
  modelPack: 'facematch.model_pack',
} as const;
