-- Version 3: recognition events (src/events/). Documented in schema.sql.
CREATE TABLE event (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  uid BLOB NOT NULL UNIQUE CHECK (length(uid) = 16),
  kind TEXT NOT NULL CHECK (kind IN ('recognized', 'unknown', 'left')),
  person_id INTEGER REFERENCES person (id) ON DELETE CASCADE,
  person_name TEXT CHECK (person_name IS NULL OR length(person_name) BETWEEN 1 AND 100),
  similarity REAL CHECK (similarity IS NULL OR similarity BETWEEN -1 AND 1),
  camera TEXT NOT NULL CHECK (length(camera) BETWEEN 1 AND 32),
  track_id INTEGER NOT NULL CHECK (track_id >= 0),
  x1 REAL NOT NULL,
  y1 REAL NOT NULL,
  x2 REAL NOT NULL,
  y2 REAL NOT NULL,
  at INTEGER NOT NULL,
  duration_ms INTEGER CHECK (duration_ms IS NULL OR (kind = 'left' AND duration_ms >= 0)),
  snapshot BLOB CHECK (snapshot IS NULL OR length(snapshot) > 12 + 16)
);

CREATE INDEX event_at ON event (at);
CREATE INDEX event_person ON event (person_id, at);
