-- Version 6: sessions no longer store their CSRF token (it is derived from the cookie secret,
-- which the database never holds), so a copy of the database or a backup holds no usable CSRF
-- token. The old rows held plaintext tokens: they are dropped with the table, which signs
-- everyone out once. Documented in schema.sql.
DROP TABLE web_session;

CREATE TABLE web_session (
  token_hash BLOB PRIMARY KEY CHECK (length(token_hash) = 32),
  user_id INTEGER NOT NULL REFERENCES web_user (id) ON DELETE CASCADE,
  created_at INTEGER NOT NULL,
  last_seen_at INTEGER NOT NULL
);

CREATE INDEX web_session_user ON web_session (user_id);
