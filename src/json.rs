//! The JSON shapes of the console API (`/api/…`, documented route by route in `docs/api.md`):
//! request bodies and queries as `Deserialize` structs, responses as `Serialize` structs.
//!
//! This module depends on serde and std only, so any module (the pipeline, MQTT, tests, a
//! future client) can build or read these shapes without importing `web`. Where a shape embeds
//! a type owned by another module (a gallery `Match`, a face `Quality`, a user `Role`), it takes
//! it as a type parameter; `web::api` fills them in.
//!
//! Rules that keep the wire format stable (the console's JavaScript and the tests read it):
//! field names are the JSON keys; `Option` fields are `null` when empty unless marked
//! `skip_serializing_if`, in which case the key is absent; ids are plain integers.

use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Common

/// `{"ok": true}`: the response of a change that has nothing else to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// Always `true` (failures are errors, not `false`).
    pub ok: bool,
}

impl Done {
    /// `{"ok": true}`.
    pub const OK: Done = Done { ok: true };
}

// ---------------------------------------------------------------------------------------------
// Accounts

/// Response of `GET /api/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// No user exists yet: the console shows the setup form.
    pub setup_required: bool,
    /// faced version.
    pub version: String,
}

/// Body of `POST /api/login`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// User name.
    pub name: String,
    /// Password.
    pub password: String,
}

/// Body of `POST /api/setup`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setup {
    /// The token from the setup link.
    pub token: String,
    /// New admin's name.
    pub name: String,
    /// New admin's password.
    pub password: String,
}

/// Response of `POST /api/login`, `POST /api/setup` and `GET /api/me`: who is signed in.
/// `R` is the role (`web::auth::Role`, `"admin"` or `"viewer"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session<R> {
    /// User name.
    pub user: String,
    /// Their role.
    pub role: R,
    /// The CSRF token to send in `X-CSRF-Token`; `null` for API tokens (no cookie, no CSRF).
    pub csrf: Option<String>,
}

/// Body of `POST /api/users`; `R` is the role.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser<R> {
    /// Login name.
    pub name: String,
    /// Role.
    pub role: R,
    /// Password (at least 10 characters).
    pub password: String,
}

/// Body of `POST /api/tokens`; `S` is the scope (`web::auth::Scope`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken<S> {
    /// What the token is for.
    pub label: String,
    /// What it may do: `all` (the default) or `metrics` (only `GET /metrics`).
    #[serde(default)]
    pub scope: Option<S>,
}

/// Response of `POST /api/tokens`; `I` is the token's listing (`web::auth::TokenInfo`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenCreated<I> {
    /// The secret, `faced_…`: shown in this response only.
    pub token: String,
    /// The token as `GET /api/tokens` lists it.
    pub info: I,
}

// ---------------------------------------------------------------------------------------------
// Live

/// Body of `PUT /api/cameras/{camera}/threshold`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// Cosine similarity 0..1.
    pub threshold: f32,
}

/// Query of `GET /api/live/overlay`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OverlayQuery {
    /// Only this camera.
    pub camera: Option<String>,
}

/// Body of `POST /api/live/enroll`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveEnroll {
    /// Camera.
    pub camera: String,
    /// Track id from the overlay.
    pub track_id: u64,
    /// Seconds to collect (1..=30, default 5).
    #[serde(default)]
    pub seconds: Option<f32>,
    /// Most samples to keep (1..=20, default 8).
    #[serde(default)]
    pub max_samples: Option<usize>,
}

// ---------------------------------------------------------------------------------------------
// Upload candidates and identification

/// Response of `POST /api/uploads` and `POST /api/live/enroll`: one candidate per photo (or
/// per collected face). `Q` is the face quality (`vision::quality::Quality`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidates<Q> {
    /// The candidates, in upload order.
    pub samples: Vec<Candidate<Q>>,
}

/// One analysed photo: the verdict on its largest face and, when a face was found, the id
/// under which it waits to be saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate<Q> {
    /// Candidate id for `POST /api/people` and `POST /api/people/{id}/samples`; absent when no
    /// face was found or the photo was unreadable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// File name (zip members as `zip/member`) or the live source.
    pub file: String,
    /// Faces found in the photo.
    pub faces: usize,
    /// The verdict is `ok`: the face may be saved without `allow_rejected`.
    pub ok: bool,
    /// `ok`, a quality rejection (`too_small`, `blurred`, `turned_away`), `no_face` or
    /// `unreadable`.
    pub verdict: String,
    /// The verdict in words.
    pub message: String,
    /// Quality of the largest face; absent when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<Q>,
}

/// Response of `POST /api/identify`; `Q` is the face quality, `M` a gallery match
/// (`gallery::Match`: `{"person", "name", "similarity", "sample"}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identified<Q, M> {
    /// The similarity a match needs to count (`best`).
    pub threshold: f32,
    /// Every face in the photo.
    pub faces: Vec<IdentifiedFace<Q, M>>,
}

/// One face of `POST /api/identify`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentifiedFace<Q, M> {
    /// Box `[x1, y1, x2, y2]` in photo pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// Quality of the face.
    pub quality: Q,
    /// The top match if it reaches the threshold, else `null`.
    pub best: Option<M>,
    /// The top matches (at most 3), whatever their similarity.
    pub matches: Vec<M>,
}

// ---------------------------------------------------------------------------------------------
// People

/// Body of `POST /api/people`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPerson {
    /// Name (1..=100 characters).
    pub name: String,
    /// Candidate ids from `POST /api/uploads` or `POST /api/live/enroll` to store.
    #[serde(default)]
    pub samples: Vec<String>,
    /// Also store candidates whose quality verdict is not `ok`.
    #[serde(default)]
    pub allow_rejected: bool,
}

/// Response of `POST /api/people` (201).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonCreated {
    /// The new person's id.
    pub id: i64,
    /// Samples stored.
    pub samples: usize,
}

/// Body of `PATCH /api/people/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rename {
    /// New name.
    pub name: String,
}

/// Response of `DELETE /api/people/{id}` (privacy erase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonErased {
    /// Always `true`.
    pub ok: bool,
    /// Face samples (with their crops) removed.
    pub samples_removed: usize,
    /// Events (with their snapshots) removed.
    pub events_removed: u64,
}

/// Body of `POST /api/people/{id}/samples`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddSamples {
    /// Candidate ids.
    pub samples: Vec<String>,
    /// Also store candidates whose verdict is not `ok`.
    #[serde(default)]
    pub allow_rejected: bool,
}

/// Response of `POST /api/people/{id}/samples`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplesAdded {
    /// The new samples' ids, in request order.
    pub ids: Vec<i64>,
}

// ---------------------------------------------------------------------------------------------
// Events

/// Body of `POST /api/events/{id}/enroll`: exactly one of an existing person or a name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventEnroll {
    /// Add to this person.
    #[serde(default)]
    pub person_id: Option<i64>,
    /// Or: this name (an existing person by name, else a new person).
    #[serde(default)]
    pub name: Option<String>,
}

/// Response of `POST /api/events/{id}/enroll`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventEnrolled {
    /// The person the face was added to.
    pub person_id: i64,
    /// The new sample.
    pub sample_id: i64,
    /// The person was created by this request.
    pub created_person: bool,
}

/// Body of `POST /api/events/{id}/not`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotPerson {
    /// The person the face is not; default: the person the event names.
    pub person_id: Option<i64>,
}

/// Response of `POST /api/events/{id}/not`; `M` is a gallery match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotPersonResult<M> {
    /// The person the face is not.
    pub person_id: i64,
    /// Their name.
    pub name: String,
    /// The similarity a match needs to count.
    pub threshold: f32,
    /// The face's top match before the negative sample was stored, whatever its similarity.
    pub before: Option<M>,
    /// The top match after, if it reaches the threshold.
    pub after: Option<M>,
    /// The face still identifies as this person.
    pub still_matches: bool,
}

// ---------------------------------------------------------------------------------------------
// Reports

/// Query of `GET /api/reports` and `/api/reports.csv`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportQuery {
    /// Start, Unix ms (default: 7 days before `until_ms`).
    pub since_ms: Option<i64>,
    /// End, Unix ms (default: now).
    pub until_ms: Option<i64>,
    /// Minutes east of UTC for day/hour buckets (the browser's `-getTimezoneOffset()`).
    pub tz_offset_min: i32,
    /// CSV only: `days`, `hours` or `people` (default `days`).
    pub table: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// System

/// Response of `GET /api/system`; `C` is a camera's live statistics, `Q` the MQTT state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemInfo<C, Q> {
    /// faced version.
    pub version: String,
    /// 1, 5 and 15 minute load averages.
    pub load: Option<[f32; 3]>,
    /// CPU cores.
    pub cpus: usize,
    /// SoC temperature, °C.
    pub temperature_c: Option<f32>,
    /// Total bytes of the database's file system.
    pub disk_total_bytes: Option<u64>,
    /// Available bytes there.
    pub disk_free_bytes: Option<u64>,
    /// Database size including its WAL, bytes.
    pub db_bytes: u64,
    /// Enrolled people.
    pub people: usize,
    /// Stored face samples.
    pub samples: usize,
    /// Cameras.
    pub cameras: Vec<C>,
    /// MQTT state.
    pub mqtt: Q,
    /// Since when the database's disk has been full (RFC 3339 UTC): events are published but
    /// not stored. `null` while events are stored.
    pub storage_full_since: Option<String>,
    /// The models that run: `float`, `int8`, … (`inference.precision`, with `auto` resolved).
    pub precision: String,
    /// Why: the CPU feature behind `auto`'s choice, or "set explicitly".
    pub precision_reason: String,
}

// ---------------------------------------------------------------------------------------------
// Backup and restore

/// `POST /api/backup` body: the passphrase the archive is encrypted with (≥ 10 characters).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// The passphrase; needed again to restore.
    pub passphrase: String,
}

/// `POST /api/restore`: what the verified archive holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Restored {
    /// When the backup was made (RFC 3339 UTC).
    pub created_at: String,
    /// The faced version that made it.
    pub faced_version: String,
    /// People in it.
    pub people: i64,
    /// Face samples in it.
    pub samples: i64,
    /// Events in it.
    pub events: i64,
    /// `true`: the daemon restarts now to apply it; `false`: it applies at the next start.
    pub restarting: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Absent, not `null`: the console tells "no face" items apart by the missing id.
    #[test]
    fn candidate_without_face_has_no_id_or_quality() {
        let c = Candidate::<()> {
            id: None,
            file: "a.jpg".into(),
            faces: 0,
            ok: false,
            verdict: "no_face".into(),
            message: "no face found in this photo".into(),
            quality: None,
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"file": "a.jpg", "faces": 0, "ok": false, "verdict": "no_face",
                               "message": "no face found in this photo"})
        );
    }

    /// `null`, not absent: the console reads `best` and `csrf` as present-but-empty.
    #[test]
    fn empty_options_are_null_where_documented() {
        let s = Session {
            user: "t".into(),
            role: "admin",
            csrf: None,
        };
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            serde_json::json!({"user": "t", "role": "admin", "csrf": null})
        );
        let f = IdentifiedFace::<(), ()> {
            bbox: [1.0, 2.0, 3.0, 4.0],
            quality: (),
            best: None,
            matches: vec![],
        };
        assert_eq!(
            serde_json::to_value(&f).unwrap(),
            serde_json::json!({"box": [1.0, 2.0, 3.0, 4.0], "quality": null, "best": null, "matches": []})
        );
    }
}

/// Body of `POST /api/visitors/{id}/enroll`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisitorEnroll {
    /// The person's name.
    pub name: String,
    /// Add to the existing person of that name (404 if there is none); otherwise a new person
    /// (409 if the name is taken).
    #[serde(default)]
    pub existing: bool,
}

/// Response of `POST /api/visitors/{id}/enroll`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitorEnrolled {
    /// The person the visitor's faces were added to.
    pub person_id: i64,
    /// The person was created.
    pub created: bool,
    /// Samples stored (the visitor's faces that pass the enrollment quality limits).
    pub samples: usize,
}

/// Body of `PATCH /api/visitors/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisitorPatch {
    /// Ignore this face: no more `unknown` events (nor MQTT sightings) for it.
    pub ignored: bool,
}
