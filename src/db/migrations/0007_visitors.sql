-- Version 7: unknown visitors, strangers grouped by face (src/visitors/). Documented in schema.sql.
CREATE TABLE visitor (
  id INTEGER PRIMARY KEY,
  first_seen INTEGER NOT NULL,
  last_seen INTEGER NOT NULL,
  visits INTEGER NOT NULL CHECK (visits >= 1),
  ignored INTEGER NOT NULL DEFAULT 0 CHECK (ignored IN (0, 1)),
  merged_into INTEGER CHECK (merged_into IS NULL OR merged_into < id),
  person_id INTEGER REFERENCES person (id) ON DELETE SET NULL,
  resolved INTEGER NOT NULL DEFAULT 0 CHECK (resolved IN (0, 1))
);
CREATE TABLE visitor_face (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  uid BLOB NOT NULL UNIQUE CHECK (length(uid) = 16),
  visitor_id INTEGER NOT NULL REFERENCES visitor (id) ON DELETE CASCADE,
  camera TEXT NOT NULL CHECK (length(camera) BETWEEN 1 AND 32),
  at INTEGER NOT NULL,
  quality REAL NOT NULL,
  enrollable INTEGER NOT NULL CHECK (enrollable IN (0, 1)),
  quality_json TEXT NOT NULL CHECK (json_valid(quality_json)),
  embedding BLOB NOT NULL CHECK (length(embedding) > 12 + 16),
  crop BLOB NOT NULL CHECK (length(crop) > 12 + 16)
);
CREATE INDEX visitor_face_visitor ON visitor_face (visitor_id, quality);
CREATE INDEX visitor_face_at ON visitor_face (at);
ALTER TABLE event ADD COLUMN visitor_id INTEGER CHECK (visitor_id IS NULL OR kind = 'unknown');
CREATE INDEX event_visitor ON event (visitor_id) WHERE visitor_id IS NOT NULL;
