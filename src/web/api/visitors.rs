//! Unknown visitors (admin): `GET /api/visitors`, `GET`/`PATCH`/`DELETE /api/visitors/{id}`,
//! `POST /api/visitors/{id}/enroll`, `GET /api/visitor-faces/{id}/crop`. Strangers' faces are
//! biometric data of people who never consented, so every route is admin-only, and delete
//! erases everything about the visitor, their events included. 404 on every route when
//! `visitors.enabled` is off.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::response::Response;

use super::{blocking, done, gallery, jpeg_response};
use crate::audit::{Action, By, Subject};
use crate::error::{Error, Result};
use crate::gallery::EnrollTarget;
use crate::json;
use crate::visitors::{VisitorInfo, Visitors};
use crate::web::AppState;
use crate::web::error::{ApiResult, JsonBody, PathParam};

fn visitors(s: &AppState) -> Result<Arc<Visitors>> {
    s.deps.visitors.clone().ok_or_else(|| {
        Error::not_found("unknown visitors are off on this unit (visitors.enabled = false)")
    })
}

/// `GET /api/visitors`: every visitor, last seen first.
pub async fn list_visitors(State(s): State<AppState>) -> ApiResult<axum::Json<Vec<VisitorInfo>>> {
    let v = visitors(&s)?;
    Ok(axum::Json(blocking(move || v.list()).await?))
}

/// `GET /api/visitors/{id}`: one visitor, by any of their ids (an id merged into an older
/// visitor answers with that one).
pub async fn get_visitor(
    State(s): State<AppState>,
    PathParam(id): PathParam<i64>,
) -> ApiResult<axum::Json<VisitorInfo>> {
    let v = visitors(&s)?;
    Ok(axum::Json(blocking(move || v.get(id)).await?))
}

/// `PATCH /api/visitors/{id}`: ignore (or stop ignoring) the face.
pub async fn patch_visitor(
    State(s): State<AppState>,
    Extension(by): Extension<By>,
    PathParam(id): PathParam<i64>,
    JsonBody(b): JsonBody<json::VisitorPatch>,
) -> ApiResult<axum::Json<json::Done>> {
    let v = visitors(&s)?;
    blocking(move || {
        v.set_ignored(id, b.ignored)?;
        let action = if b.ignored {
            Action::VisitorIgnore
        } else {
            Action::VisitorUnignore
        };
        s.audit.note(&by, action, Subject::visitor(id), "");
        Ok(())
    })
    .await?;
    Ok(done())
}

/// `DELETE /api/visitors/{id}`: erases the visitor, their faces and their events.
pub async fn erase_visitor(
    State(s): State<AppState>,
    Extension(by): Extension<By>,
    PathParam(id): PathParam<i64>,
) -> ApiResult<axum::Json<json::Done>> {
    let v = visitors(&s)?;
    blocking(move || {
        v.erase(id)?;
        s.audit
            .note(&by, Action::VisitorErase, Subject::visitor(id), "");
        Ok(())
    })
    .await?;
    Ok(done())
}

/// `POST /api/visitors/{id}/enroll`: the visitor's faces that pass the quality limits become a
/// new (or existing) person's samples; their events are re-labelled.
pub async fn enroll_visitor(
    State(s): State<AppState>,
    Extension(by): Extension<By>,
    PathParam(id): PathParam<i64>,
    JsonBody(b): JsonBody<json::VisitorEnroll>,
) -> ApiResult<(axum::http::StatusCode, axum::Json<json::VisitorEnrolled>)> {
    let v = visitors(&s)?;
    let st = s.clone();
    let r = blocking(move || {
        let mut g = gallery(&st);
        let to = if b.existing {
            EnrollTarget::Existing(&b.name)
        } else {
            EnrollTarget::New(&b.name)
        };
        let done = v.enroll(id, &mut g.by(&by), to)?;
        drop(g);
        let n = crate::audit::count(done.samples.len() as i64, "sample");
        let detail = format!("as person {}, {n}", done.person);
        let subject = Subject::visitor(id);
        st.audit.note(&by, Action::VisitorEnroll, subject, detail);
        Ok(done)
    })
    .await?;
    let code = if r.created {
        axum::http::StatusCode::CREATED
    } else {
        axum::http::StatusCode::OK
    };
    Ok((
        code,
        axum::Json(json::VisitorEnrolled {
            person_id: r.person.0,
            created: r.created,
            samples: r.samples.len(),
        }),
    ))
}

/// `GET /api/visitor-faces/{id}/crop`: one kept face, `image/jpeg`.
pub async fn face_crop(
    State(s): State<AppState>,
    PathParam(id): PathParam<i64>,
) -> ApiResult<Response> {
    let v = visitors(&s)?;
    Ok(jpeg_response(blocking(move || v.face_crop(id)).await?))
}
