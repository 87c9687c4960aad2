//! Reports (viewer): `GET /api/reports` and `GET /api/reports.csv`.

use axum::extract::State;
use axum::response::Response;

use super::{blocking, csv_response};
use crate::error::Error;
use crate::json::ReportQuery;
use crate::web::AppState;
use crate::web::error::{ApiResult, QueryParams};
use crate::web::events::{Report, csv_field};

/// The report for `q`, with the documented defaults and bounds.
async fn make_report(s: AppState, q: &ReportQuery) -> ApiResult<Report> {
    let until = q.until_ms.unwrap_or_else(|| s.auth.now_ms());
    // Saturating: `until` is not checked yet; an absurd one is refused by the range check.
    let since = q
        .since_ms
        .unwrap_or_else(|| until.saturating_sub(7 * 86_400_000));
    let tz = q.tz_offset_min;
    crate::web::events::check_report_range(since, until, tz)?;
    blocking(move || s.events.report(since, until, tz)).await
}

/// `GET /api/reports`.
pub async fn report(
    State(s): State<AppState>,
    QueryParams(q): QueryParams<ReportQuery>,
) -> ApiResult<axum::Json<Report>> {
    if q.table.is_some() {
        return Err(Error::invalid("table applies to /api/reports.csv only").into());
    }
    Ok(axum::Json(make_report(s, &q).await?))
}

/// `GET /api/reports.csv?table=days|hours|people`.
pub async fn report_csv(
    State(s): State<AppState>,
    QueryParams(q): QueryParams<ReportQuery>,
) -> ApiResult<Response> {
    let table = q.table.clone().unwrap_or_else(|| "days".into());
    if !["days", "hours", "people"].contains(&table.as_str()) {
        return Err(Error::invalid(format!(
            "table must be days, hours or people, got {table:?}"
        ))
        .into());
    }
    let r = make_report(s, &q).await?;
    let mut out = String::new();
    match table.as_str() {
        "days" | "hours" => {
            out.push_str(if table == "days" {
                "day,recognized,unknown\n"
            } else {
                "hour,recognized,unknown\n"
            });
            for b in if table == "days" { &r.days } else { &r.hours } {
                out.push_str(&format!("{},{},{}\n", b.key, b.recognized, b.unknown));
            }
        }
        _ => {
            out.push_str("person_id,name,first_seen_utc,last_seen_utc,visits,events\n");
            for p in &r.people {
                out.push_str(&format!(
                    "{},{},{},{},{},{}\n",
                    p.person_id,
                    csv_field(&p.name),
                    crate::events::rfc3339_utc(p.first_seen_ms),
                    crate::events::rfc3339_utc(p.last_seen_ms),
                    p.visits,
                    p.events
                ));
            }
        }
    }
    Ok(csv_response(&format!("report-{table}.csv"), out))
}
