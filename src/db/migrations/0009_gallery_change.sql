-- Version 9: a counter of gallery writes and the triggers that keep it, so a running daemon
-- notices what another process (the CLI) changed in the gallery. Documented in schema.sql.
CREATE TABLE gallery_change (
  -- Always 1.
  id INTEGER PRIMARY KEY CHECK (id = 1),
  -- Rows of person, face_sample and tombstone written so far: only ever grows.
  seq INTEGER NOT NULL
);
INSERT INTO gallery_change (id, seq) VALUES (1, 0);
CREATE TRIGGER person_insert_change AFTER INSERT ON person BEGIN UPDATE gallery_change SET seq = seq + 1; END;
CREATE TRIGGER person_update_change AFTER UPDATE ON person BEGIN UPDATE gallery_change SET seq = seq + 1; END;
CREATE TRIGGER person_delete_change AFTER DELETE ON person BEGIN UPDATE gallery_change SET seq = seq + 1; END;
CREATE TRIGGER face_sample_insert_change AFTER INSERT ON face_sample BEGIN UPDATE gallery_change SET seq = seq + 1; END;
CREATE TRIGGER face_sample_update_change AFTER UPDATE ON face_sample BEGIN UPDATE gallery_change SET seq = seq + 1; END;
CREATE TRIGGER face_sample_delete_change AFTER DELETE ON face_sample BEGIN UPDATE gallery_change SET seq = seq + 1; END;
CREATE TRIGGER tombstone_insert_change AFTER INSERT ON tombstone BEGIN UPDATE gallery_change SET seq = seq + 1; END;
CREATE TRIGGER tombstone_update_change AFTER UPDATE ON tombstone BEGIN UPDATE gallery_change SET seq = seq + 1; END;
CREATE TRIGGER tombstone_delete_change AFTER DELETE ON tombstone BEGIN UPDATE gallery_change SET seq = seq + 1; END;
