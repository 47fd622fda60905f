-- Photos, their detected faces, and the match of a face to its best user.
-- Plain SQL for PGlite and PostgreSQL 15+; applied by the migration runner inside one transaction.

CREATE TABLE photos (
  photo_id      text PRIMARY KEY,
  event_id      text NOT NULL,
  kind          text NOT NULL CHECK (kind IN ('ACTION_SHOT', 'FACECAM')),
  -- The enrolling user of a facecam.
  user_id       text,
  source_url    text NOT NULL,
  width         integer NOT NULL CHECK (width >= 0),
  height        integer NOT NULL CHECK (height >= 0),
  -- Object-store key of the annotated copy.
  annotated_key text,
  processed_at  timestamptz NOT NULL,
  CONSTRAINT photos_facecam_has_user CHECK (kind <> 'FACECAM' OR user_id IS NOT NULL)
);

CREATE INDEX photos_event_idx ON photos (event_id);
CREATE INDEX photos_user_idx ON photos (user_id) WHERE user_id IS NOT NULL;

CREATE TABLE faces (
  face_id    text PRIMARY KEY,
  photo_id   text NOT NULL REFERENCES photos (photo_id) ON DELETE CASCADE,
  idx        integer NOT NULL CHECK (idx >= 0),
  -- Pixels of the upright image.
  box_x      double precision NOT NULL,
  box_y      double precision NOT NULL,
  box_width  double precision NOT NULL,
  box_height double precision NOT NULL,
  score      double precision NOT NULL,
  -- [[x, y] x 5]: left eye, right eye, nose, left and right mouth corners.
  landmarks  jsonb NOT NULL,
  CONSTRAINT faces_photo_idx_key UNIQUE (photo_id, idx),
  -- Target of matches' composite key: a match names the photo its face belongs to.
  CONSTRAINT faces_face_photo_key UNIQUE (face_id, photo_id)
);

-- A face has at most one match: its best user.
CREATE TABLE matches (
  face_id    text PRIMARY KEY,
  photo_id   text NOT NULL,
  user_id    text NOT NULL,
  event_id   text NOT NULL,
  similarity real NOT NULL,
  matched_at timestamptz NOT NULL,
  CONSTRAINT matches_face_fkey FOREIGN KEY (face_id, photo_id)
    REFERENCES faces (face_id, photo_id) ON DELETE CASCADE
);

CREATE INDEX matches_user_event_idx ON matches (user_id, event_id);
