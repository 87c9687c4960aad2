-- faced database schema: the CURRENT version, as a fresh database gets it.
--
-- This file is documentation first: every table and column says what it holds, its units and
-- its invariants. It is also executable: `db::open_migrated` (through `schema::migrate`) runs
-- it in one transaction to create a new database, while existing databases are brought here by
-- the numbered upgrades in migrations/ (see schema.rs). The integration test
-- `upgraded_database_equals_fresh` checks that both roads end at the same sqlite_master
-- (comments and whitespace aside), so when you add a migration, make the same change here.
--
-- Conventions: times are wall-clock Unix milliseconds (INTEGER; a Pi's clock can jump when NTP
-- syncs, so no CHECK compares two timestamps). Ids are AUTOINCREMENT so an id is never reused:
-- events and logs that name a removed person must not point at someone enrolled later.
-- Face data (embeddings, crops, event snapshots) is stored only encrypted: see crypto.rs.

-- One row per schema version step; the database's version is MAX(version). A database whose
-- version is higher than the binary knows is refused (it was written by a newer faced).
CREATE TABLE schema_version (
  -- Version reached by this step (1 = the first released schema).
  version INTEGER PRIMARY KEY CHECK (version >= 1),
  -- When the step ran, Unix ms.
  applied_at INTEGER NOT NULL,
  -- 'fresh' for a database created at this version from schema.sql, else 'migration NNNN'.
  how TEXT NOT NULL
);

-- Proof that the key file matches this database: a constant sealed with the key. Lets `open`
-- say "wrong key file" up front instead of failing on the first sample. At most one row.
CREATE TABLE key_check (
  -- Always 1.
  id INTEGER PRIMARY KEY CHECK (id = 1),
  -- nonce (12) || AES-256-GCM("faced key check v1") || tag (16); AAD "key_check.sealed".
  sealed BLOB NOT NULL CHECK (length(sealed) = 12 + 18 + 16),
  -- When the key was first used with this database, Unix ms.
  created_at INTEGER NOT NULL
);

-- An enrolled person.
CREATE TABLE person (
  -- Stable id, never reused.
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  -- Display name: trimmed, 1..=100 characters, no control characters (checked in Rust; the
  -- length check here counts characters too). Unique ignoring ASCII case, so "alice" and
  -- "Alice" cannot both exist.
  name TEXT NOT NULL UNIQUE COLLATE NOCASE
    CHECK (length(name) BETWEEN 1 AND 100 AND name = trim(name)),
  -- When the person was enrolled, Unix ms.
  created_at INTEGER NOT NULL,
  -- Last rename or sample added/removed, Unix ms.
  updated_at INTEGER NOT NULL,
  -- 16 random bytes naming this person on every unit of a fleet (src/gallery/replica.rs): the
  -- record id of their replicated state. Set at insert (NULL never stays: the version 8 upgrade
  -- gave every existing person one); unique.
  uid BLOB CHECK (uid IS NULL OR length(uid) = 16),
  -- Version of `name`: a hybrid logical clock value (wall ms << 10 plus a counter, never going
  -- back on this unit, raised past every version received). The higher (name_v, name) wins when
  -- two units renamed the person; 0 before the fleet existed.
  name_v INTEGER NOT NULL DEFAULT 0,
  -- Device id of the unit where the person was enrolled ('' when unknown).
  origin TEXT NOT NULL DEFAULT '' CHECK (length(origin) <= 64)
);
-- Lookup of a replicated person by uid; also enforces uniqueness.
CREATE UNIQUE INDEX person_uid ON person (uid);

-- A face of (positive) or wrongly matched to (negative) a person. A negative sample is stored
-- by the console's "this is not NAME": faces closer to it than to NAME's best positive sample
-- no longer match NAME. Removing the person removes their samples (ON DELETE CASCADE).
CREATE TABLE face_sample (
  -- Stable id, never reused.
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  -- Whose sample this is.
  person_id INTEGER NOT NULL REFERENCES person (id) ON DELETE CASCADE,
  -- 16 random bytes, fixed at insert: part of the AAD of this row's ciphertexts so they cannot
  -- be swapped between rows (the id is not known before the insert).
  uid BLOB NOT NULL UNIQUE CHECK (length(uid) = 16),
  -- 'positive': a face of this person; 'negative': a face wrongly matched to them.
  kind TEXT NOT NULL CHECK (kind IN ('positive', 'negative')),
  -- Encrypted embedding: nonce (12) || AES-256-GCM(192 little-endian f32 = 4 * 192 bytes, as
  -- produced by the embedder, L2 norm 1) || tag (16); AAD "face_sample.embedding" 0 uid.
  embedding BLOB NOT NULL CHECK (length(embedding) = 12 + 4 * 192 + 16),
  -- Encrypted JPEG of the 112x112 aligned face, same layout; AAD "face_sample.crop" 0 uid.
  crop BLOB NOT NULL CHECK (length(crop) > 12 + 16),
  -- Quality measures at capture (sharpness, pose, ...), a JSON object written by vision.
  quality TEXT NOT NULL CHECK (json_valid(quality)),
  -- Where the face came from: "enroll:camera=front", "console:not-person", a file name, ...
  source TEXT NOT NULL CHECK (length(source) <= 200),
  -- When the sample was stored, Unix ms.
  created_at INTEGER NOT NULL
);

-- Per-person sample listing and counting (people(), samples(), cascade deletes).
CREATE INDEX face_sample_person ON face_sample (person_id, kind);
-- What was erased, so that an erase replicates and wins: a unit that was offline, or a message
-- still retained on the broker, cannot bring an erased person or a removed sample back. Holds
-- no face data and no name: only the random uid.
CREATE TABLE tombstone (
  -- uid of the erased person (person.uid) or removed sample (face_sample.uid).
  uid BLOB PRIMARY KEY CHECK (length(uid) = 16),
  -- 'person' or 'sample'.
  kind TEXT NOT NULL CHECK (kind IN ('person', 'sample')),
  -- The person the record belongs to (for a person, its own uid).
  person_uid BLOB NOT NULL CHECK (length(person_uid) = 16),
  -- Hybrid logical clock value of the erase (see person.name_v).
  version INTEGER NOT NULL
);
-- A person's sample tombstones, for building their replicated record.
CREATE INDEX tombstone_person ON tombstone (person_uid);

-- A counter of gallery writes, so that a running daemon notices what another process (`faced
-- enroll`, `faced people`) changed and reloads its in-memory gallery. The triggers below bump it
-- on every row written to person, face_sample or tombstone, in the writer's own transaction;
-- the daemon's Gallery remembers the value its memory reflects (it reads it inside each of its
-- own write transactions) and polls for a different one. Exactly one row.
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

-- The MQTT outbox: messages waiting to be published, in publish order (src/mqtt/outbox.rs).
-- A row is written in the same transaction as the event it announces, so a stored event is
-- never lost to a broker outage or a restart; the publisher deletes rows in batches after the
-- broker's PUBACK (QoS 1), so a crash between PUBACK and delete can publish a row twice. Size
-- is bounded by mqtt.outbox_max_messages: the publisher drops the oldest rows beyond it.
CREATE TABLE mqtt_outbox (
  -- Publish order: rows go out by ascending id. AUTOINCREMENT so ids only grow.
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  -- Full topic name, e.g. 'faced/door/events': 1..=1024 bytes, no wildcards.
  topic TEXT NOT NULL
    CHECK (length(CAST(topic AS BLOB)) BETWEEN 1 AND 1024 AND instr(topic, '+') = 0 AND instr(topic, '#') = 0),
  -- Message body as sent (event JSON, UTF-8), at most 1 MiB.
  payload BLOB NOT NULL CHECK (typeof(payload) = 'blob' AND length(payload) <= 1048576),
  -- 1: publish with the MQTT retain flag.
  retain INTEGER NOT NULL CHECK (retain IN (0, 1)),
  -- When the row was enqueued, Unix ms.
  created_at INTEGER NOT NULL
);

-- A recognition event (src/events/): a face recognised, an unknown face, or a reported track
-- that left the view. Written in batches by the event writer thread; the MQTT outbox row for
-- the event is written in the same transaction. Retention ([events] retention_days,
-- retention_count) deletes the oldest rows. Removing a person removes their events
-- (ON DELETE CASCADE): their snapshots are faces too.
CREATE TABLE event (
  -- Stable id, never reused; the event_id in the MQTT JSON. Increases with time of storage.
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  -- 16 random bytes: part of the snapshot's AAD, so a sealed crop cannot move between rows.
  uid BLOB NOT NULL UNIQUE CHECK (length(uid) = 16),
  -- 'recognized', 'unknown' or 'left'.
  kind TEXT NOT NULL CHECK (kind IN ('recognized', 'unknown', 'left')),
  -- The recognised person (NULL for unknown faces, and for 'left' of an unknown track).
  person_id INTEGER REFERENCES person (id) ON DELETE CASCADE,
  -- Their name at the time of the event (a later rename does not rewrite history).
  person_name TEXT CHECK (person_name IS NULL OR length(person_name) BETWEEN 1 AND 100),
  -- Cosine similarity of the identity vote's best match, -1..1 (NULL: never embedded).
  similarity REAL CHECK (similarity IS NULL OR similarity BETWEEN -1 AND 1),
  -- Camera name as in faced.toml.
  camera TEXT NOT NULL CHECK (length(camera) BETWEEN 1 AND 32),
  -- Tracker id, unique per camera while the daemon runs (restarts begin again at 1).
  track_id INTEGER NOT NULL CHECK (track_id >= 0),
  -- Face box in frame pixels: left, top, right, bottom.
  x1 REAL NOT NULL,
  y1 REAL NOT NULL,
  x2 REAL NOT NULL,
  y2 REAL NOT NULL,
  -- Wall-clock capture time of the frame, Unix ms.
  at INTEGER NOT NULL,
  -- 'left' only: first to last sighting of the track, ms.
  duration_ms INTEGER CHECK (duration_ms IS NULL OR (kind = 'left' AND duration_ms >= 0)),
  -- Encrypted JPEG crop of the face: nonce (12) || AES-256-GCM(jpeg) || tag (16) under the
  -- gallery key; AAD "event.snapshot" 0 uid. NULL when snapshots are off or for 'left'.
  snapshot BLOB CHECK (snapshot IS NULL OR length(snapshot) > 12 + 16),
  -- 'unknown' only: the visitor (src/visitors/) the face was grouped into when it was seen. Not
  -- a foreign key: the visitor may be merged into an older one (follow visitor.merged_into) or
  -- erased while the event stays. NULL for other kinds and when visitors are off.
  visitor_id INTEGER CHECK (visitor_id IS NULL OR kind = 'unknown'),
  -- Frigate companion mode: Frigate's id of the event this one is about, as Frigate confirmed
  -- it (`<unix time, 1-6 decimals>-<6 of a-z 0-9>`, e.g. '1607123955.475377-mxklsc', 10 to 24
  -- characters: the shape src/frigate/gate.rs accepts, as closely as GLOB can say it). NULL
  -- for events of the unit's own cameras.
  frigate_id TEXT CHECK (frigate_id IS NULL OR (
    length(frigate_id) BETWEEN 10 AND 24
    AND frigate_id GLOB '[0-9]*.[0-9]*-[0-9a-z][0-9a-z][0-9a-z][0-9a-z][0-9a-z][0-9a-z]'
    AND rtrim(substr(frigate_id, 1, length(frigate_id) - 7), '0123456789.') = ''
    AND length(frigate_id) - length(replace(frigate_id, '.', '')) = 1))
);

-- Retention by age and the console's time-ordered listing.
CREATE INDEX event_at ON event (at);
-- "When was NAME last seen", and cascade deletes.
CREATE INDEX event_person ON event (person_id, at);
-- A visitor's unknown events: re-labelled when they are enrolled, erased with them.
CREATE INDEX event_visitor ON event (visitor_id) WHERE visitor_id IS NOT NULL;
-- The faced events about one Frigate event (a console or API search by Frigate's id).
CREATE INDEX event_frigate ON event (frigate_id) WHERE frigate_id IS NOT NULL;

-- An unknown visitor: the unknown faces the daemon grouped as one stranger (src/visitors/). Kept
-- for visitors.retention_days after the last sighting, then erased with its faces.
CREATE TABLE visitor (
  -- Stable id, never reused: allocated by the daemon above every id in this table and in
  -- event.visitor_id, so an event never comes to point at a different stranger.
  id INTEGER PRIMARY KEY,
  -- First and last sighting, wall-clock Unix ms.
  first_seen INTEGER NOT NULL,
  last_seen INTEGER NOT NULL,
  -- Distinct appearances: sightings more than visitors.visit_gap_minutes apart.
  visits INTEGER NOT NULL CHECK (visits >= 1),
  -- 1: marked ignored in the console; their faces raise no more `unknown` events.
  ignored INTEGER NOT NULL DEFAULT 0 CHECK (ignored IN (0, 1)),
  -- Set when this visitor turned out to be the same face as an older one: its faces moved
  -- there, and events that still name this id mean that one. NULL for a live visitor.
  merged_into INTEGER CHECK (merged_into IS NULL OR merged_into < id),
  -- The person this visitor was enrolled as, or matched when someone was enrolled: their
  -- unknown events were re-labelled and their faces deleted. NULL otherwise.
  person_id INTEGER REFERENCES person (id) ON DELETE SET NULL,
  -- 1 once enrolled or matched (person_id may later become NULL when the person is erased).
  resolved INTEGER NOT NULL DEFAULT 0 CHECK (resolved IN (0, 1))
);

-- One unknown track's face, kept as evidence for a visitor: at most visitors' per-visitor cap
-- (the best by quality), erased after visitors.retention_days.
CREATE TABLE visitor_face (
  -- Stable id, never reused; the console's crop URL.
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  -- 16 random bytes: part of the sealed columns' AAD.
  uid BLOB NOT NULL UNIQUE CHECK (length(uid) = 16),
  -- Whose face; moves to the older visitor on a merge.
  visitor_id INTEGER NOT NULL REFERENCES visitor (id) ON DELETE CASCADE,
  -- Camera name as in faced.toml.
  camera TEXT NOT NULL CHECK (length(camera) BETWEEN 1 AND 32),
  -- Wall-clock time of the sighting, Unix ms.
  at INTEGER NOT NULL,
  -- The tracker's quality hint of the face (size x sharpness x frontality), to keep the best.
  quality REAL NOT NULL,
  -- 1: the face passes the enrollment quality limits, so "enroll this visitor" may use it.
  enrollable INTEGER NOT NULL CHECK (enrollable IN (0, 1)),
  -- The face's quality measures, JSON as in face_sample.quality_json.
  quality_json TEXT NOT NULL CHECK (json_valid(quality_json)),
  -- Sealed (AES-256-GCM, key file) mean L2-normalised embedding of the track, 192 f32 LE;
  -- AAD "visitor_face.embedding" 0 uid.
  embedding BLOB NOT NULL CHECK (length(embedding) > 12 + 16),
  -- Sealed JPEG of the 112x112 aligned face; AAD "visitor_face.crop" 0 uid.
  crop BLOB NOT NULL CHECK (length(crop) > 12 + 16)
);

-- A visitor's faces, best first; retention by age.
CREATE INDEX visitor_face_visitor ON visitor_face (visitor_id, quality);
CREATE INDEX visitor_face_at ON visitor_face (at);

-- An event the writer could not store (src/events/store.rs): one that breaks the event table's
-- rules (a similarity outside -1..1, an over-long name, ...) or that SQLite refused for its
-- content. It is kept here, with the reason, instead of blocking the events behind it. Never
-- holds face data: the snapshot crop is not kept. Bounded: the writer keeps only the newest
-- 1000 rows (store.rs DEAD_LETTER_KEEP).
CREATE TABLE event_dead_letter (
  -- Stable id, never reused; increases with time of storage.
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  -- The event as its MQTT JSON would have been (event_id 0; non-finite numbers as null;
  -- person and camera names cut to 200 characters), at most 16 KiB.
  event TEXT NOT NULL CHECK (json_valid(event) AND length(event) <= 16384),
  -- Why it was not stored: the rule it broke or SQLite's error, 1..=1000 characters.
  error TEXT NOT NULL CHECK (length(error) BETWEEN 1 AND 1000),
  -- When it was set aside, Unix ms.
  at INTEGER NOT NULL
);

-- A console user (src/web/auth.rs). Created by the one-time setup link or `faced user add`.
CREATE TABLE web_user (
  -- Stable id, never reused.
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  -- Login name: letters, digits, . _ - @ (checked in Rust); unique ignoring ASCII case.
  name TEXT NOT NULL UNIQUE COLLATE NOCASE CHECK (length(name) BETWEEN 1 AND 64),
  -- 'admin' (everything) or 'viewer' (live, events, reports).
  role TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
  -- Random PBKDF2 salt, 16 bytes.
  pw_salt BLOB NOT NULL CHECK (length(pw_salt) = 16),
  -- PBKDF2-HMAC-SHA256(password, salt, pw_iterations), 32 bytes.
  pw_hash BLOB NOT NULL CHECK (length(pw_hash) = 32),
  -- PBKDF2 iteration count used for pw_hash (OWASP 2023: at least 600 000).
  pw_iterations INTEGER NOT NULL CHECK (pw_iterations >= 600000),
  -- When the user was created, Unix ms.
  created_at INTEGER NOT NULL
);

-- A signed-in browser session. Only the SHA-256 of the cookie value is stored, so a copy of
-- the database cannot be used to sign in. The session's CSRF token is not stored at all: it is
-- HMAC-SHA256(cookie value, label), recomputed from the cookie on each request. Deleted at
-- logout, password change, user removal (cascade), after the idle expiry and after the
-- absolute lifetime (web.session_max_hours). The daemon reads this table on every request, so
-- a change made here by `faced user` applies at once.
CREATE TABLE web_session (
  -- SHA-256 of the session cookie's random value, 32 bytes.
  token_hash BLOB PRIMARY KEY CHECK (length(token_hash) = 32),
  -- Whose session.
  user_id INTEGER NOT NULL REFERENCES web_user (id) ON DELETE CASCADE,
  -- When the session started, Unix ms (the absolute lifetime counts from here).
  created_at INTEGER NOT NULL,
  -- Last request, Unix ms (written at most once a minute: SD-card wear).
  last_seen_at INTEGER NOT NULL
);

-- Sign a user out everywhere (password change).
CREATE INDEX web_session_user ON web_session (user_id);

-- An API token for scripts (`Authorization: Bearer faced_…`); acts with its owner's role, within
-- its scope.
CREATE TABLE web_api_token (
  -- Stable id, never reused.
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  -- Owner; removing the user revokes their tokens.
  user_id INTEGER NOT NULL REFERENCES web_user (id) ON DELETE CASCADE,
  -- What the token is for ("backup script").
  label TEXT NOT NULL CHECK (length(label) BETWEEN 1 AND 100),
  -- SHA-256 of the token string, 32 bytes (the token is shown once, at creation).
  token_hash BLOB NOT NULL UNIQUE CHECK (length(token_hash) = 32),
  -- When created, Unix ms.
  created_at INTEGER NOT NULL,
  -- Last use, Unix ms (written at most once a minute), NULL if never used.
  last_used_at INTEGER,
  -- What it may do: 'all' (whatever its owner's role allows) or 'metrics' (only read
  -- `GET /metrics`: a monitoring server's credential).
  scope TEXT NOT NULL DEFAULT 'all' CHECK (scope IN ('all', 'metrics'))
);

-- The audit trail (src/audit/): one row per change and per sensitive read (a backup
-- downloaded, a sign-in), with who did it, from where, to whom. Append-only: each row's `mac`
-- chains it to the row before, under a key derived from the gallery key file, so an edited,
-- deleted or reordered row is found by `faced audit verify`; the triggers below refuse such
-- edits through SQLite (the file's owner can drop them; the chain still tells). Retention
-- ([audit] retention_days, max_rows) deletes the oldest rows and moves the anchor in
-- audit_seal. Never holds face data; a subject's name is kept only until they are erased.
CREATE TABLE audit (
  -- Position in the chain: consecutive from 1 (the row after audit_seal.head_id), never reused.
  id INTEGER PRIMARY KEY CHECK (id >= 1),
  -- When, wall-clock Unix ms (a Pi's clock can jump: the order is `id`, not `at`).
  at INTEGER NOT NULL,
  -- Who, by kind: a console 'user', an API 'token', the 'cli' (a Unix user), a signed 'mqtt'
  -- command, the 'fleet' (a record replicated from another unit), 'frigate', or 'system' (the
  -- daemon itself, and writes no caller claimed).
  actor_kind TEXT NOT NULL
    CHECK (actor_kind IN ('user', 'token', 'cli', 'mqtt', 'fleet', 'frigate', 'system')),
  -- Who, by name: console user name; "label (token N of user)"; "unixname (uid N)"; the
  -- command key's id; "site S"; ... 1..=200 characters.
  actor TEXT NOT NULL CHECK (length(actor) BETWEEN 1 AND 200),
  -- From where: the console client's IP address, 'cli', 'mqtt', 'fleet', 'frigate', 'faced'.
  origin TEXT NOT NULL CHECK (length(origin) BETWEEN 1 AND 100),
  -- What, as a snake_case verb ('enroll', 'rename', 'erase', 'sign_in_failed', ...: the list is
  -- audit::Action). Not an enumerated CHECK, so a new action needs no table rebuild.
  action TEXT NOT NULL CHECK (length(action) BETWEEN 1 AND 40 AND action NOT GLOB '*[^a-z_]*'),
  -- To whom or what: 'person', 'visitor', 'user', 'token', 'camera', 'database', 'fleet', 'none'.
  subject_kind TEXT NOT NULL
    CHECK (length(subject_kind) BETWEEN 1 AND 20 AND subject_kind NOT GLOB '*[^a-z_]*'),
  -- The subject's id as text (a person id, a camera name, a site id); NULL when none.
  subject_id TEXT CHECK (subject_id IS NULL OR length(subject_id) BETWEEN 1 AND 100),
  -- The subject's name at the time (a person's, a user's), or NULL: none, or erased since
  -- (audit::forget_subject sets it and subject_salt to NULL; nothing else may change a row).
  subject_name TEXT CHECK (subject_name IS NULL OR length(subject_name) BETWEEN 1 AND 200),
  -- 16 random bytes; NULL with subject_name.
  subject_salt BLOB CHECK (subject_salt IS NULL OR length(subject_salt) = 16),
  -- HMAC-SHA256(name key, subject_salt || subject_name), 32 bytes, NULL when the row never had
  -- a name. The chain covers this tag, not the name: clearing name and salt keeps the chain
  -- whole, and without the salt the tag no longer confirms a guessed name.
  subject_tag BLOB CHECK (subject_tag IS NULL OR length(subject_tag) = 32),
  -- Facts without names: counts, sample and event ids, a threshold, ... at most 500 characters.
  detail TEXT NOT NULL CHECK (length(detail) <= 500),
  -- HMAC-SHA256(chain key, every column above but subject_name and subject_salt ||
  -- the previous row's mac, or audit_seal.anchor_mac for the first row), 32 bytes.
  mac BLOB NOT NULL CHECK (length(mac) = 32)
);
-- The console's time filter and retention.
CREATE INDEX audit_at ON audit (at);
-- An erase clears the names of its subject's rows.
CREATE INDEX audit_subject ON audit (subject_kind, subject_id) WHERE subject_id IS NOT NULL;

-- Where the chain starts and ends, so that retention and a cut at either end are told apart:
-- rows through anchor_id were deleted by retention, and the newest row is head_id. Written
-- with every row appended; no row until the first. At most one row.
CREATE TABLE audit_seal (
  -- Always 1.
  id INTEGER PRIMARY KEY CHECK (id = 1),
  -- The last row retention deleted (0: none yet).
  anchor_id INTEGER NOT NULL CHECK (anchor_id >= 0),
  -- That row's mac (32 zero bytes when none): the first remaining row chains to it.
  anchor_mac BLOB NOT NULL CHECK (length(anchor_mac) = 32),
  -- The newest row (equal to anchor_id when retention deleted every row).
  head_id INTEGER NOT NULL CHECK (head_id >= anchor_id),
  -- That row's mac.
  head_mac BLOB NOT NULL CHECK (length(head_mac) = 32),
  -- HMAC-SHA256(seal key, the four columns above), 32 bytes.
  mac BLOB NOT NULL CHECK (length(mac) = 32)
);
-- Append-only, as far as SQLite is asked: an UPDATE may only clear subject_name and
-- subject_salt (an erase), a DELETE only remove rows retention moved the anchor past, and the
-- seal row stays.
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
