//! The event log: `GET /api/events`, `GET /api/events.csv` and
//! `GET /api/events/{id}/snapshot` (viewer, but a stranger's face is admin-only); "enroll this face as…"
//! (`POST /api/events/{id}/enroll`) and "this is not NAME" (`POST /api/events/{id}/not`)
//! (admin).

use std::time::Instant;

use axum::Extension;
use axum::extract::State;
use axum::response::Response;

use super::uploads::{Candidate, jpeg, largest};
use super::{blocking, csv_response, gallery, jpeg_response};
use crate::audit::By;
use crate::error::{Error, Kind};
use crate::gallery::{EnrollTarget, Match, PersonId, SampleKind};
use crate::json;
use crate::vision::image::ImageLimits;
use crate::web::AppState;
use crate::web::auth::{Principal, Role};
use crate::web::error::{ApiResult, JsonBody, PathParam, QueryParams};
use crate::web::events::{EventFilter, EventRow, csv_field};

/// The console's one rule for strangers' faces: the stored faces of people who never consented
/// (the Visitors pages, the snapshots of `unknown` events, following one stranger's events) are
/// for admins. A viewer sees the live view (what the camera shows now, nothing kept) and
/// unknown events as rows without their picture. docs/privacy.md states it.
fn strangers_faces(p: &Principal, what: &str) -> Result<(), Error> {
    if p.role == Role::Admin {
        return Ok(());
    }
    Err(Error::new(
        Kind::PermissionDenied,
        format!("{what}: strangers' faces are for admins only"),
    ))
}

/// `GET /api/events`: filtered, newest first (query: see `EventFilter`).
pub async fn list_events(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    QueryParams(f): QueryParams<EventFilter>,
) -> ApiResult<axum::Json<Vec<EventRow>>> {
    if f.visitor_id.is_some() {
        strangers_faces(&p, "a visitor's events")?;
    }
    Ok(axum::Json(blocking(move || s.events.list(&f)).await?))
}

/// `GET /api/events.csv`: the same filter as CSV (up to 10 000 rows).
pub async fn events_csv(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    QueryParams(mut f): QueryParams<EventFilter>,
) -> ApiResult<Response> {
    if f.visitor_id.is_some() {
        strangers_faces(&p, "a visitor's events")?;
    }
    f.limit = None;
    let rows = blocking(move || s.events.export(&f, 10_000)).await?;
    let mut out = String::from(
        "id,time_utc,ts_ms,kind,camera,track_id,person_id,person,similarity,frigate_id\n",
    );
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{}\n",
            r.id,
            crate::events::rfc3339_utc(r.at_ms),
            r.at_ms,
            r.kind,
            csv_field(&r.camera),
            r.track_id,
            r.person_id.map(|p| p.to_string()).unwrap_or_default(),
            csv_field(r.person.as_deref().unwrap_or("")),
            r.similarity.map(|x| format!("{x:.3}")).unwrap_or_default(),
            // Frigate's ids are digits, a dot, a dash and a-z (the table's CHECK): no quoting.
            r.frigate_id.as_deref().unwrap_or("")
        ));
    }
    Ok(csv_response("events.csv", out))
}

/// `GET /api/events/{id}/snapshot`: the event's face crop (JPEG).
pub async fn event_snapshot(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam<i64>,
) -> ApiResult<Response> {
    let snap = blocking(move || {
        if s.events.is_stranger(id)? {
            strangers_faces(&p, &format!("event {id}'s snapshot"))?;
        }
        s.events.snapshot(id)
    })
    .await?;
    let snap = snap.ok_or_else(|| Error::not_found(format!("event {id} has no snapshot")))?;
    Ok(jpeg_response(snap))
}

/// The face of an event's snapshot: embedding, crop, quality JSON.
async fn event_face(s: &AppState, id: i64) -> ApiResult<Candidate> {
    let st = s.clone();
    let snap = blocking(move || st.events.snapshot(id)).await?;
    let snap = snap.ok_or_else(|| {
        Error::new(
            Kind::FailedPrecondition,
            format!("event {id} has no snapshot to learn from"),
        )
    })?;
    let lim = ImageLimits::default();
    let data = snap.clone();
    let img = blocking(move || crate::vision::image::decode(&data, &lim)).await?;
    let source = format!("console:event={id}");
    if img.width() == 112 && img.height() == 112 {
        // The pipeline stores the aligned crop: embed it as it is.
        let embedding = s.deps.analyzer.embed_aligned(img).await?;
        return Ok(Candidate {
            embedding,
            crop_jpeg: snap,
            quality_json: r#"{"from":"event snapshot"}"#.to_string(),
            source,
            ok: true,
            created: Instant::now(),
        });
    }
    let face = largest(s.deps.analyzer.analyze(img).await?).ok_or_else(|| {
        Error::new(
            Kind::FailedPrecondition,
            format!("no face found in event {id}'s snapshot"),
        )
    })?;
    let crop_jpeg = blocking(move || jpeg(&face.aligned).map(|j| (j, face))).await?;
    let (crop_jpeg, face) = crop_jpeg;
    Ok(Candidate {
        embedding: face.embedding,
        crop_jpeg,
        quality_json: serde_json::to_string(&face.quality).unwrap_or_else(|_| "{}".into()),
        source,
        ok: true,
        created: Instant::now(),
    })
}

/// `POST /api/events/{id}/enroll`: "enroll this face as…".
pub async fn event_enroll(
    State(s): State<AppState>,
    Extension(by): Extension<By>,
    PathParam(id): PathParam<i64>,
    JsonBody(b): JsonBody<json::EventEnroll>,
) -> ApiResult<axum::Json<json::EventEnrolled>> {
    if b.person_id.is_some() == b.name.is_some() {
        return Err(Error::invalid("give exactly one of person_id or name").into());
    }
    let c = event_face(&s, id).await?;
    let done = blocking(move || {
        let to = match (b.person_id, &b.name) {
            (Some(p), _) => EnrollTarget::Id(PersonId(p)),
            (None, Some(n)) => EnrollTarget::FindOrCreate(n),
            (None, None) => unreachable!("checked above"),
        };
        gallery(&s)
            .by(&by)
            .enroll(to, &[c.sample(SampleKind::Positive)])
    })
    .await?;
    Ok(axum::Json(json::EventEnrolled {
        person_id: done.person.0,
        sample_id: done.samples[0].0,
        created_person: done.created,
    }))
}

/// `POST /api/events/{id}/not`: "this is not NAME" — stores the event's face as a negative
/// sample of NAME, then identifies the face again and returns the match before and after, so
/// the page can show that it no longer matches NAME.
pub async fn event_not_person(
    State(s): State<AppState>,
    Extension(by): Extension<By>,
    PathParam(id): PathParam<i64>,
    JsonBody(b): JsonBody<json::NotPerson>,
) -> ApiResult<axum::Json<json::NotPersonResult<Match>>> {
    let person = match b.person_id {
        Some(p) => p,
        None => {
            let st = s.clone();
            // Any i64 arrives in the path: no `id + 1` overflow.
            let before_id = id.saturating_add(1);
            let row = blocking(move || {
                st.events.export(
                    &EventFilter {
                        before_id: Some(before_id),
                        ..Default::default()
                    },
                    1,
                )
            })
            .await?;
            let row = row
                .into_iter()
                .find(|r| r.id == id)
                .ok_or_else(|| Error::not_found(format!("no event with id {id}")))?;
            row.person_id.ok_or_else(|| {
                Error::invalid(format!(
                    "event {id} names nobody; say which person it is not (person_id)"
                ))
            })?
        }
    };
    let c = event_face(&s, id).await?;
    let threshold = s.deps.threshold;
    let mut c = c;
    c.source = format!("console:not-person event={id}");
    let not = blocking(move || {
        gallery(&s)
            .by(&by)
            .add_negative(PersonId(person), c.sample(SampleKind::Negative))
    })
    .await?;
    let still = not
        .after
        .as_ref()
        .is_some_and(|m| m.person == PersonId(person) && m.similarity >= threshold);
    Ok(axum::Json(json::NotPersonResult {
        person_id: person,
        name: not.name,
        threshold,
        before: not.before,
        after: not.after.filter(|m| m.similarity >= threshold),
        still_matches: still,
    }))
}
