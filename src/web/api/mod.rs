//! Handlers of the JSON API under `/api/`, one module per concern (documented route by route in
//! `docs/api.md`; the routes and their roles are declared once, in `web::routes`):
//!
//! | module | routes | role |
//! |---|---|---|
//! | [`session`] | status, setup, login, logout, me | public / viewer |
//! | [`users`] | console users and API tokens | admin |
//! | [`live`] | cameras, MJPEG, frames, overlay events; threshold and live enrolment | viewer / admin |
//! | [`uploads`] | photo uploads into candidates, candidate crops, identify | admin |
//! | [`people`] | people, samples, crops, privacy erase | admin |
//! | [`visitors`] | unknown visitors: list, faces, enroll, ignore, erase | admin |
//! | [`events`] | the event log and its CSV, snapshots; enroll and "not this person" | viewer / admin |
//! | [`reports`] | reports and their CSV | viewer |
//! | [`system`] | the system page | viewer |
//! | [`backup`] | the database backup | admin |
//! | [`audit`] | the audit trail and its CSV | admin |
//!
//! Request and response bodies are the typed shapes of [`crate::json`].
//!
//! Handlers run on the tokio runtime; anything that blocks (gallery writes, SQLite queries,
//! image decoding, PBKDF2) goes through [`blocking`]. Access rules are not checked here: the
//! router's `guard` has already authenticated the caller and checked their role and CSRF token,
//! and puts the [`Principal`](crate::web::auth::Principal) and the caller as the audit trail
//! names them ([`crate::audit::By`]) into the request extensions.

pub mod audit;
pub mod backup;
pub mod events;
pub mod live;
pub mod people;
pub mod reports;
pub mod session;
pub mod system;
pub mod uploads;
pub mod users;
pub mod visitors;

use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiResult;
use crate::error::Result;
use crate::gallery::Gallery;
use crate::json;

pub use live::STREAM_RECHECK;
pub use uploads::Candidates;

/// Runs blocking work on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> ApiResult<T> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

/// The shared gallery; a panic while it was held does not take the console down with it.
fn gallery(state: &AppState) -> std::sync::MutexGuard<'_, Gallery> {
    state.deps.gallery.lock().unwrap_or_else(|p| p.into_inner())
}

/// `{"ok": true}`.
fn done() -> axum::Json<json::Done> {
    axum::Json(json::Done::OK)
}

/// A face crop; the browser may keep it a minute (crops of a sample never change).
fn jpeg_response(bytes: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "private, max-age=60"),
        ],
        bytes,
    )
        .into_response()
}

/// A CSV download named `name`.
fn csv_response(name: &str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// The typed bodies against the `json!` literals they replaced: the same keys, the same
/// `null`s and absent keys, the same numbers (compared as `serde_json::Value`, which is how the
/// console and the tests read them).
#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::gallery::{Match, PersonId, SampleId};
    use crate::json;
    use crate::vision::quality::Quality;
    use crate::web::auth::{Role, TokenInfo};

    fn same(typed: impl serde::Serialize, old: Value) {
        assert_eq!(serde_json::to_value(typed).unwrap(), old);
    }

    fn quality() -> Quality {
        Quality {
            size_px: 80.5,
            sharpness: 120.25,
            yaw: -0.125,
            roll_deg: 3.5,
            frontal: 0.875,
        }
    }

    fn a_match() -> Match {
        Match {
            person: PersonId(3),
            name: "Alice".into(),
            similarity: 0.8125,
            sample: SampleId(9),
        }
    }

    #[test]
    fn accounts() {
        same(json::Done::OK, json!({"ok": true}));
        same(
            json::Status {
                setup_required: true,
                version: env!("CARGO_PKG_VERSION").into(),
            },
            json!({"setup_required": true, "version": env!("CARGO_PKG_VERSION")}),
        );
        same(
            json::Session {
                user: "ann".into(),
                role: Role::Admin,
                csrf: Some("c".into()),
            },
            json!({"user": "ann", "role": Role::Admin, "csrf": "c"}),
        );
        same(
            json::Session {
                user: "bot".into(),
                role: Role::Viewer,
                csrf: None,
            },
            json!({"user": "bot", "role": "viewer", "csrf": null}),
        );
        let info = TokenInfo {
            id: 1,
            user_id: 2,
            user: "ann".into(),
            label: "script".into(),
            created_at_ms: 5,
            last_used_at_ms: None,
            scope: crate::web::auth::Scope::Metrics,
        };
        same(
            json::TokenCreated {
                token: "faced_x".into(),
                info: info.clone(),
            },
            json!({"token": "faced_x", "info": info}),
        );
    }

    #[test]
    fn candidates_and_identify() {
        let q = quality();
        same(
            json::Candidates {
                samples: vec![
                    json::Candidate {
                        id: Some("abc".into()),
                        file: "a.jpg".into(),
                        faces: 2,
                        ok: true,
                        verdict: "ok".into(),
                        message: "good sample".into(),
                        quality: Some(q),
                    },
                    json::Candidate {
                        id: None,
                        file: "b.jpg".into(),
                        faces: 0,
                        ok: false,
                        verdict: "unreadable".into(),
                        message: "bad".into(),
                        quality: None,
                    },
                ],
            },
            json!({"samples": [
                json!({"id": "abc", "file": "a.jpg", "faces": 2, "ok": true, "verdict": "ok",
                       "message": "good sample", "quality": q}),
                json!({"file": "b.jpg", "faces": 0, "ok": false, "verdict": "unreadable",
                       "message": "bad"}),
            ]}),
        );
        let (bbox, m) = ([1.5f32, 2.0, 30.25, 40.0], a_match());
        let threshold = 0.55f32;
        same(
            json::Identified {
                threshold,
                faces: vec![json::IdentifiedFace {
                    bbox,
                    quality: q,
                    best: None::<Match>,
                    matches: vec![m.clone()],
                }],
            },
            json!({"threshold": threshold, "faces": [
                json!({"box": bbox, "quality": q, "best": None::<Match>, "matches": vec![m]}),
            ]}),
        );
    }

    #[test]
    fn people_and_events() {
        same(
            json::PersonCreated { id: 4, samples: 2 },
            json!({"id": PersonId(4), "samples": 2usize}),
        );
        same(
            json::PersonErased {
                ok: true,
                samples_removed: 3,
                events_removed: 7,
            },
            json!({"ok": true, "samples_removed": 3usize, "events_removed": 7u64}),
        );
        same(
            json::SamplesAdded { ids: vec![5, 6] },
            json!({"ids": vec![SampleId(5), SampleId(6)]}),
        );
        same(
            json::EventEnrolled {
                person_id: 4,
                sample_id: 8,
                created_person: true,
            },
            json!({"person_id": PersonId(4), "sample_id": SampleId(8), "created_person": true}),
        );
        let (threshold, before) = (0.5f32, Some(a_match()));
        same(
            json::NotPersonResult {
                person_id: 3,
                name: "Alice".into(),
                threshold,
                before: before.clone(),
                after: None,
                still_matches: false,
            },
            json!({
                "person_id": 3i64, "name": "Alice", "threshold": threshold,
                "before": before, "after": None::<Match>, "still_matches": false,
            }),
        );
    }
}
