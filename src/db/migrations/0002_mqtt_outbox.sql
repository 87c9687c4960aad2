-- Version 2: the MQTT outbox (src/mqtt/outbox.rs). Documented in schema.sql.
CREATE TABLE mqtt_outbox (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  topic TEXT NOT NULL
    CHECK (length(CAST(topic AS BLOB)) BETWEEN 1 AND 1024 AND instr(topic, '+') = 0 AND instr(topic, '#') = 0),
  payload BLOB NOT NULL CHECK (typeof(payload) = 'blob' AND length(payload) <= 1048576),
  retain INTEGER NOT NULL CHECK (retain IN (0, 1)),
  created_at INTEGER NOT NULL
);
