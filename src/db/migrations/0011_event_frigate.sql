-- Version 11: the Frigate event an event is about (src/frigate/). Documented in schema.sql.
ALTER TABLE event ADD COLUMN frigate_id TEXT CHECK (frigate_id IS NULL OR (length(frigate_id) BETWEEN 10 AND 24 AND frigate_id GLOB '[0-9]*.[0-9]*-[0-9a-z][0-9a-z][0-9a-z][0-9a-z][0-9a-z][0-9a-z]' AND rtrim(substr(frigate_id, 1, length(frigate_id) - 7), '0123456789.') = '' AND length(frigate_id) - length(replace(frigate_id, '.', '')) = 1));
CREATE INDEX event_frigate ON event (frigate_id) WHERE frigate_id IS NOT NULL;
