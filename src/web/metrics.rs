//! `GET /metrics` (docs/metrics.md): the daemon's [`crate::metrics::Metrics`] in the OpenMetrics
//! text format, for a Prometheus server holding an API token of the `metrics` scope (or any
//! signed-in user); and the console's own figure, requests by route class and status, counted
//! by [`count_requests`] around every request (an uncontended map update after the response is
//! built).
//!
//! The scrape is rendered on a blocking thread: some sources take locks (the gallery's) or read
//! files (`/proc`, `/sys`, the outbox count), which must not stall the runtime's threads.

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::api::blocking;
use super::error::ApiResult;
use crate::error::Error;
use crate::metrics::{Scrape, Source};

/// `GET /metrics`.
pub async fn scrape(State(s): State<AppState>) -> ApiResult<Response> {
    let Some(m) = s.deps.metrics.clone() else {
        return Err(Error::not_found("this console does not collect metrics").into());
    };
    let text = blocking(move || Ok(m.render())).await?;
    Ok((
        [
            (header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response())
}

/// The route classes requests are counted by: few and fixed, so the metric stays small whatever
/// paths clients try.
pub fn route_class(path: &str) -> &'static str {
    if path == "/metrics" {
        "metrics"
    } else if matches!(path, "/api/login" | "/api/setup") {
        "login"
    } else if path.starts_with("/api/live/") {
        "live"
    } else if path.starts_with("/api/") {
        "api"
    } else {
        "static"
    }
}

/// Console requests by route class and status (`faced_console_requests_total`).
#[derive(Debug, Default)]
pub struct Requests(Mutex<BTreeMap<(&'static str, u16), u64>>);

impl Requests {
    fn count(&self, class: &'static str, status: u16) {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((class, status))
            .or_default() += 1;
    }
}

impl Source for Requests {
    fn collect(&self, out: &mut Scrape) {
        let counts = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for ((class, status), n) in counts {
            out.counter(
                "faced_console_requests",
                "Console requests answered, by route class (api, live, login, metrics, static) \
                 and HTTP status.",
                &[("class", class), ("status", &status.to_string())],
                n as f64,
            );
        }
    }
}

/// Middleware counting every request once its response status is known (a live stream counts
/// when it starts).
pub async fn count_requests(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let class = route_class(req.uri().path());
    let res = next.run(req).await;
    s.requests.count(class, res.status().as_u16());
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_few_and_fixed() {
        for (path, class) in [
            ("/metrics", "metrics"),
            ("/api/login", "login"),
            ("/api/live/door/mjpeg", "live"),
            ("/api/events", "api"),
            ("/api/nope", "api"),
            ("/", "static"),
            ("/app.js", "static"),
            ("/metrics/x", "static"),
        ] {
            assert_eq!(route_class(path), class, "{path}");
        }
        let r = Requests::default();
        r.count("api", 200);
        r.count("api", 200);
        r.count("login", 429);
        let mut out = Scrape::default();
        r.collect(&mut out);
        let text = out.render();
        assert!(
            text.contains("faced_console_requests_total{class=\"api\",status=\"200\"} 2"),
            "{text}"
        );
    }
}
