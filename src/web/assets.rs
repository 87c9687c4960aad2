//! The console's front end (`console/`: HTML, CSS, ES modules), embedded into the binary with
//! `rust-embed`, so `cargo build` alone makes a complete, offline console.
//!
//! Caching: every file is sent with a strong `ETag` (its SHA-256) and `Cache-Control:
//! no-cache`, so a browser revalidates with a cheap 304 and never runs stale code after an
//! upgrade. `/` is `index.html`.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "console/"]
struct Console;

/// Serves an embedded file for `GET`/`HEAD`, 404 otherwise.
pub async fn serve_asset(req: Request) -> Response {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return (StatusCode::METHOD_NOT_ALLOWED, "method not allowed").into_response();
    }
    let path = req.uri().path().trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    let Some(file) = Console::get(path) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let etag = format!(
        "\"{}\"",
        file.metadata
            .sha256_hash()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let mut builder = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::CACHE_CONTROL, "no-cache")
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_str(file.metadata.mimetype())
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
        );
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    if fresh {
        builder = builder.status(StatusCode::NOT_MODIFIED);
        return builder.body(Body::empty()).unwrap_or_default();
    }
    let body = if req.method() == Method::HEAD {
        Body::empty()
    } else {
        Body::from(file.data.into_owned())
    };
    builder.body(body).unwrap_or_default()
}

/// Names of the embedded files (for tests).
pub fn files() -> Vec<String> {
    Console::iter().map(|f| f.into_owned()).collect()
}
