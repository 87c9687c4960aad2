-- Version 5: events the writer could not store (src/events/store.rs). Documented in schema.sql.
CREATE TABLE event_dead_letter (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  event TEXT NOT NULL CHECK (json_valid(event) AND length(event) <= 16384),
  error TEXT NOT NULL CHECK (length(error) BETWEEN 1 AND 1000),
  at INTEGER NOT NULL
);
