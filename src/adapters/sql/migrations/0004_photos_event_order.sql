-- An event's photos in photo_id order, a page at a time (ListEventPhotos: WHERE event_id = $1 AND
-- photo_id > $2 ORDER BY photo_id LIMIT n). Byte order (COLLATE "C"), so both databases list in
-- the same order whatever their default collation, and every page is a range scan of this index
-- rather than a sort of the whole event. It also serves what photos_event_idx did.
CREATE INDEX photos_event_photo_idx ON photos (event_id, photo_id COLLATE "C");
DROP INDEX photos_event_idx;
