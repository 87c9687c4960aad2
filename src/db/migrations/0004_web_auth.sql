-- Version 4: console accounts (src/web/auth.rs): users, sessions, API tokens. Documented in
-- schema.sql.
CREATE TABLE web_user (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL UNIQUE COLLATE NOCASE CHECK (length(name) BETWEEN 1 AND 64),
  role TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
  pw_salt BLOB NOT NULL CHECK (length(pw_salt) = 16),
  pw_hash BLOB NOT NULL CHECK (length(pw_hash) = 32),
  pw_iterations INTEGER NOT NULL CHECK (pw_iterations >= 600000),
  created_at INTEGER NOT NULL
);

CREATE TABLE web_session (
  token_hash BLOB PRIMARY KEY CHECK (length(token_hash) = 32),
  user_id INTEGER NOT NULL REFERENCES web_user (id) ON DELETE CASCADE,
  csrf TEXT NOT NULL CHECK (length(csrf) >= 32),
  created_at INTEGER NOT NULL,
  last_seen_at INTEGER NOT NULL
);

CREATE INDEX web_session_user ON web_session (user_id);

CREATE TABLE web_api_token (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  user_id INTEGER NOT NULL REFERENCES web_user (id) ON DELETE CASCADE,
  label TEXT NOT NULL CHECK (length(label) BETWEEN 1 AND 100),
  token_hash BLOB NOT NULL UNIQUE CHECK (length(token_hash) = 32),
  created_at INTEGER NOT NULL,
  last_used_at INTEGER
);
