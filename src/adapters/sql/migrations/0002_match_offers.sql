-- Offers of a match to a face whose photo is not recorded yet. An enrolment searches the action
-- faces in the vector store; an action shot processed at the same moment may have written its
-- vectors but not yet its record. Its faces are offered here, and the offer is applied (if better
-- than the face's own match) when the photo is recorded, in the same transaction.
CREATE TABLE match_offers (
  face_id    text NOT NULL,
  photo_id   text NOT NULL,
  user_id    text NOT NULL,
  event_id   text NOT NULL,
  similarity real NOT NULL,
  offered_at timestamptz NOT NULL,
  PRIMARY KEY (face_id, user_id)
);

CREATE INDEX match_offers_photo_idx ON match_offers (photo_id);
CREATE INDEX match_offers_user_idx ON match_offers (user_id);
