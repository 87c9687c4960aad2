-- Version 10: the audit trail (src/audit/): who changed what, chained by HMACs, with triggers
-- that keep it append-only. Documented in schema.sql.
CREATE TABLE audit (
  id INTEGER PRIMARY KEY CHECK (id >= 1),
  at INTEGER NOT NULL,
  actor_kind TEXT NOT NULL
    CHECK (actor_kind IN ('user', 'token', 'cli', 'mqtt', 'fleet', 'frigate', 'system')),
  actor TEXT NOT NULL CHECK (length(actor) BETWEEN 1 AND 200),
  origin TEXT NOT NULL CHECK (length(origin) BETWEEN 1 AND 100),
  action TEXT NOT NULL CHECK (length(action) BETWEEN 1 AND 40 AND action NOT GLOB '*[^a-z_]*'),
  subject_kind TEXT NOT NULL
    CHECK (length(subject_kind) BETWEEN 1 AND 20 AND subject_kind NOT GLOB '*[^a-z_]*'),
  subject_id TEXT CHECK (subject_id IS NULL OR length(subject_id) BETWEEN 1 AND 100),
  subject_name TEXT CHECK (subject_name IS NULL OR length(subject_name) BETWEEN 1 AND 200),
  subject_salt BLOB CHECK (subject_salt IS NULL OR length(subject_salt) = 16),
  subject_tag BLOB CHECK (subject_tag IS NULL OR length(subject_tag) = 32),
  detail TEXT NOT NULL CHECK (length(detail) <= 500),
  mac BLOB NOT NULL CHECK (length(mac) = 32)
);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_subject ON audit (subject_kind, subject_id) WHERE subject_id IS NOT NULL;
CREATE TABLE audit_seal (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  anchor_id INTEGER NOT NULL CHECK (anchor_id >= 0),
  anchor_mac BLOB NOT NULL CHECK (length(anchor_mac) = 32),
  head_id INTEGER NOT NULL CHECK (head_id >= anchor_id),
  head_mac BLOB NOT NULL CHECK (length(head_mac) = 32),
  mac BLOB NOT NULL CHECK (length(mac) = 32)
);
CREATE TRIGGER audit_append_only BEFORE UPDATE ON audit
WHEN NOT (NEW.subject_name IS NULL AND NEW.subject_salt IS NULL
  AND NEW.id IS OLD.id AND NEW.at IS OLD.at AND NEW.actor_kind IS OLD.actor_kind
  AND NEW.actor IS OLD.actor AND NEW.origin IS OLD.origin AND NEW.action IS OLD.action
  AND NEW.subject_kind IS OLD.subject_kind AND NEW.subject_id IS OLD.subject_id
  AND NEW.subject_tag IS OLD.subject_tag AND NEW.detail IS OLD.detail AND NEW.mac IS OLD.mac)
BEGIN SELECT RAISE(ABORT, 'audit rows are append-only: only an erase may clear subject_name'); END;
CREATE TRIGGER audit_delete_behind_anchor BEFORE DELETE ON audit
WHEN OLD.id > IFNULL((SELECT anchor_id FROM audit_seal WHERE id = 1), 0)
BEGIN SELECT RAISE(ABORT, 'audit rows are append-only: retention deletes only rows behind the anchor'); END;
CREATE TRIGGER audit_seal_kept BEFORE DELETE ON audit_seal
BEGIN SELECT RAISE(ABORT, 'the audit seal cannot be deleted'); END;
