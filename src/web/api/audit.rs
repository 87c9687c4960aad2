//! The audit trail (admin): `GET /api/audit` (a page of rows, filtered) and
//! `GET /api/audit.csv` (the same filter as CSV, itself recorded: the trail names people and
//! client addresses). Rows are written by `crate::audit`; the router's guard hands every
//! handler its caller as an [`By`] extension.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Extension;
use axum::extract::State;
use axum::response::Response;

use super::{blocking, csv_response};
use crate::audit::{Action, By, Filter, Row, Subject};
use crate::web::AppState;
use crate::web::auth::Principal;
use crate::web::error::{ApiResult, QueryParams};

/// The caller of a request as the audit trail names them: the console user, or the API token
/// and its owner; from the client's address.
pub(crate) fn by(p: &Principal, peer: Option<SocketAddr>) -> By {
    let ip = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
    match &p.token {
        Some((id, label)) => By::token(label, *id, &p.user, ip),
        None => By::user(&p.user, ip),
    }
}

/// `GET /api/audit`: newest first (query: see `audit::Filter`).
pub async fn list(
    State(s): State<AppState>,
    QueryParams(f): QueryParams<Filter>,
) -> ApiResult<axum::Json<Vec<Row>>> {
    Ok(axum::Json(blocking(move || s.audit.list(&f)).await?))
}

/// `GET /api/audit.csv`: the same filter as CSV (at most 100 000 rows).
pub async fn csv(
    State(s): State<AppState>,
    Extension(by): Extension<By>,
    QueryParams(f): QueryParams<Filter>,
) -> ApiResult<Response> {
    let rows = blocking(move || {
        let rows = s.audit.export(&f)?;
        let detail = format!("{} rows as CSV", rows.len());
        s.audit
            .note(&by, Action::AuditExport, Subject::database(), detail);
        Ok(rows)
    })
    .await?;
    Ok(csv_response("audit.csv", crate::audit::csv::to_csv(&rows)))
}
