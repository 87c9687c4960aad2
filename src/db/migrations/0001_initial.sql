-- Version 1: the first gallery schema (person, face_sample, key_check). Documented in schema.sql.
CREATE TABLE schema_version (
  version INTEGER PRIMARY KEY CHECK (version >= 1),
  applied_at INTEGER NOT NULL,
  how TEXT NOT NULL
);

CREATE TABLE key_check (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  sealed BLOB NOT NULL CHECK (length(sealed) = 12 + 18 + 16),
  created_at INTEGER NOT NULL
);

CREATE TABLE person (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL UNIQUE COLLATE NOCASE
    CHECK (length(name) BETWEEN 1 AND 100 AND name = trim(name)),
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);

CREATE TABLE face_sample (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  person_id INTEGER NOT NULL REFERENCES person (id) ON DELETE CASCADE,
  uid BLOB NOT NULL UNIQUE CHECK (length(uid) = 16),
  kind TEXT NOT NULL CHECK (kind IN ('positive', 'negative')),
  embedding BLOB NOT NULL CHECK (length(embedding) = 12 + 4 * 192 + 16),
  crop BLOB NOT NULL CHECK (length(crop) > 12 + 16),
  quality TEXT NOT NULL CHECK (json_valid(quality)),
  source TEXT NOT NULL CHECK (length(source) <= 200),
  created_at INTEGER NOT NULL
);

CREATE INDEX face_sample_person ON face_sample (person_id, kind);
