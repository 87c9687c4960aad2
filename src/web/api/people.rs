//! People and their samples (admin): `GET`/`POST /api/people`, `PATCH`/`DELETE
//! /api/people/{id}` (delete is the privacy erase), `GET`/`POST /api/people/{id}/samples`,
//! `GET /api/people/{id}/thumbnail`, `GET /api/samples/{id}/crop`, `DELETE /api/samples/{id}`.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::uploads::Candidate;
use super::{blocking, done, gallery, jpeg_response};
use crate::audit::By;
use crate::error::{Error, Result};
use crate::gallery::{EnrollTarget, PersonId, PersonSummary, SampleId, SampleInfo, SampleKind};
use crate::json;
use crate::web::AppState;
use crate::web::error::{ApiResult, JsonBody, PathParam};

/// `GET /api/people`: everyone with sample counts.
pub async fn list_people(State(s): State<AppState>) -> ApiResult<axum::Json<Vec<PersonSummary>>> {
    let st = s.clone();
    Ok(axum::Json(blocking(move || gallery(&st).people()).await?))
}

/// The candidates `ids` names, all of them, each still there and (unless `allow_rejected`)
/// with an `ok` verdict.
pub(super) fn take_candidates(
    s: &AppState,
    ids: &[String],
    allow_rejected: bool,
) -> Result<Vec<Candidate>> {
    if ids.len() > 500 {
        return Err(Error::invalid("at most 500 samples per request"));
    }
    ids.iter()
        .map(|id| {
            let c = s.candidates.get(id).ok_or_else(|| {
                Error::not_found(format!(
                    "no upload sample {id:?} (expired after 30 minutes?)"
                ))
            })?;
            if !c.ok && !allow_rejected {
                return Err(Error::invalid(format!(
                    "sample {} failed the quality check; leave it out or set allow_rejected",
                    c.source
                )));
            }
            Ok(c)
        })
        .collect()
}

/// `POST /api/people`: enrols a person with the chosen candidates.
pub async fn create_person(
    State(s): State<AppState>,
    Extension(by): Extension<By>,
    JsonBody(b): JsonBody<json::NewPerson>,
) -> ApiResult<(StatusCode, axum::Json<json::PersonCreated>)> {
    let cands = take_candidates(&s, &b.samples, b.allow_rejected)?;
    let st = s.clone();
    let done = blocking(move || {
        let samples: Vec<_> = cands
            .iter()
            .map(|c| c.sample(SampleKind::Positive))
            .collect();
        gallery(&st)
            .by(&by)
            .enroll(EnrollTarget::New(&b.name), &samples)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json::PersonCreated {
            id: done.person.0,
            samples: done.samples.len(),
        }),
    ))
}

/// `PATCH /api/people/{id}`: rename.
pub async fn rename_person(
    State(s): State<AppState>,
    Extension(by): Extension<By>,
    PathParam(id): PathParam<i64>,
    JsonBody(b): JsonBody<json::Rename>,
) -> ApiResult<axum::Json<json::Done>> {
    blocking(move || gallery(&s).by(&by).rename_person(PersonId(id), &b.name)).await?;
    Ok(done())
}

/// `DELETE /api/people/{id}`: privacy erase — the person, every sample and crop, and every
/// event (with its snapshot) that names them. Returns what was removed.
pub async fn erase_person(
    State(s): State<AppState>,
    Extension(by): Extension<By>,
    PathParam(id): PathParam<i64>,
) -> ApiResult<axum::Json<json::PersonErased>> {
    let (samples, events) = blocking(move || {
        let events = s.events.count_for_person(id)?;
        let mut g = gallery(&s);
        let samples = g.samples(PersonId(id))?.len();
        // event.person_id is ON DELETE CASCADE: the events and snapshots go in this statement.
        g.by(&by).remove_person(PersonId(id))?;
        Ok((samples, events))
    })
    .await?;
    tracing::info!(
        person = id,
        samples,
        events,
        "person erased from the console"
    );
    Ok(axum::Json(json::PersonErased {
        ok: true,
        samples_removed: samples,
        events_removed: events,
    }))
}

/// `GET /api/people/{id}/samples`.
pub async fn list_samples(
    State(s): State<AppState>,
    PathParam(id): PathParam<i64>,
) -> ApiResult<axum::Json<Vec<SampleInfo>>> {
    Ok(axum::Json(
        blocking(move || gallery(&s).samples(PersonId(id))).await?,
    ))
}

/// `POST /api/people/{id}/samples`: adds candidates to an existing person.
pub async fn add_samples(
    State(s): State<AppState>,
    Extension(by): Extension<By>,
    PathParam(id): PathParam<i64>,
    JsonBody(b): JsonBody<json::AddSamples>,
) -> ApiResult<axum::Json<json::SamplesAdded>> {
    if b.samples.is_empty() {
        return Err(Error::invalid("no samples given").into());
    }
    let cands = take_candidates(&s, &b.samples, b.allow_rejected)?;
    let ids = blocking(move || {
        let samples: Vec<_> = cands
            .iter()
            .map(|c| c.sample(SampleKind::Positive))
            .collect();
        gallery(&s).by(&by).add_samples(PersonId(id), &samples)
    })
    .await?;
    Ok(axum::Json(json::SamplesAdded {
        ids: ids.into_iter().map(|i| i.0).collect(),
    }))
}

/// `GET /api/people/{id}/thumbnail`: the crop of the person's first positive sample.
pub async fn thumbnail(
    State(s): State<AppState>,
    PathParam(id): PathParam<i64>,
) -> ApiResult<Response> {
    let bytes = blocking(move || {
        let g = gallery(&s);
        let first = g
            .samples(PersonId(id))?
            .into_iter()
            .find(|x| x.kind == SampleKind::Positive);
        let first = first.ok_or_else(|| Error::not_found(format!("person {id} has no samples")))?;
        g.sample_crop(first.id)
    })
    .await?;
    Ok(jpeg_response(bytes))
}

/// `GET /api/samples/{id}/crop`.
pub async fn sample_crop(
    State(s): State<AppState>,
    PathParam(id): PathParam<i64>,
) -> ApiResult<Response> {
    Ok(jpeg_response(
        blocking(move || gallery(&s).sample_crop(SampleId(id))).await?,
    ))
}

/// `DELETE /api/samples/{id}`.
pub async fn remove_sample(
    State(s): State<AppState>,
    Extension(by): Extension<By>,
    PathParam(id): PathParam<i64>,
) -> ApiResult<axum::Json<json::Done>> {
    blocking(move || gallery(&s).by(&by).remove_sample(SampleId(id))).await?;
    Ok(done())
}
