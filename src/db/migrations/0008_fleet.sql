-- Version 8: the fleet, one gallery replicated between units through the MQTT broker
-- (src/fleet/, src/gallery/replica.rs). Documented in schema.sql.
ALTER TABLE person ADD COLUMN uid BLOB CHECK (uid IS NULL OR length(uid) = 16);
ALTER TABLE person ADD COLUMN name_v INTEGER NOT NULL DEFAULT 0;
ALTER TABLE person ADD COLUMN origin TEXT NOT NULL DEFAULT '' CHECK (length(origin) <= 64);
UPDATE person SET uid = randomblob(16) WHERE uid IS NULL;
CREATE UNIQUE INDEX person_uid ON person (uid);
CREATE TABLE tombstone (
  uid BLOB PRIMARY KEY CHECK (length(uid) = 16),
  kind TEXT NOT NULL CHECK (kind IN ('person', 'sample')),
  person_uid BLOB NOT NULL CHECK (length(person_uid) = 16),
  version INTEGER NOT NULL
);
CREATE INDEX tombstone_person ON tombstone (person_uid);
