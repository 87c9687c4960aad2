//! JSON errors for the console API: every failure is `{"error": {"code", "message"}}` with the
//! HTTP status of the error's [`Kind`], and axum's own rejections (malformed JSON, wrong content
//! type, body too large, bad path or query) are converted so a client error is never a 500.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::{Error, Kind};

/// An API error: an [`Error`] plus an optional status that overrides the kind's (429 for rate
/// limits, 415 for a wrong content type).
#[derive(Debug)]
pub struct ApiError {
    /// The error; its kind gives the code and (by default) the status.
    pub error: Error,
    /// Status to send instead of `error.kind().http_status()`.
    pub status: Option<StatusCode>,
}

/// Result type of handlers.
pub type ApiResult<T> = std::result::Result<T, ApiError>;

impl ApiError {
    /// Error with an explicit status.
    pub fn with_status(status: StatusCode, kind: Kind, msg: impl Into<String>) -> Self {
        ApiError {
            error: Error::new(kind, msg),
            status: Some(status),
        }
    }

    /// 401: no valid session or token.
    pub fn unauthenticated() -> Self {
        Error::new(
            Kind::Unauthenticated,
            "sign in first (no valid session cookie or API token)",
        )
        .into()
    }

    /// 403 with `msg`.
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Error::new(Kind::PermissionDenied, msg).into()
    }

    /// The status this error is sent with.
    pub fn status(&self) -> StatusCode {
        self.status.unwrap_or_else(|| {
            StatusCode::from_u16(self.error.kind().http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        })
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        ApiError {
            error,
            status: None,
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::internal("a background task failed")
            .with_source(e)
            .into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(
                status = status.as_u16(),
                "console API error: {}",
                self.error
            );
        }
        // The message only; the source chain may hold paths or SQL and goes to the log above.
        let body =
            json!({"error": {"code": self.error.kind().as_str(), "message": self.error.message()}});
        (status, Json(body)).into_response()
    }
}

fn from_rejection(status: StatusCode, text: String) -> ApiError {
    let kind = match status {
        StatusCode::PAYLOAD_TOO_LARGE => Kind::ResourceExhausted,
        s if s.is_server_error() => Kind::Internal,
        _ => Kind::InvalidInput,
    };
    ApiError {
        error: Error::new(kind, text),
        status: Some(status),
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        // Unprocessable (wrong field types) is reported as 400 like other malformed input.
        let status = match r.status() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            s => s,
        };
        from_rejection(status, r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        from_rejection(StatusCode::BAD_REQUEST, r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        from_rejection(StatusCode::BAD_REQUEST, r.body_text())
    }
}

impl From<axum::extract::multipart::MultipartRejection> for ApiError {
    fn from(r: axum::extract::multipart::MultipartRejection) -> Self {
        from_rejection(r.status(), r.body_text())
    }
}

impl From<axum::extract::multipart::MultipartError> for ApiError {
    fn from(r: axum::extract::multipart::MultipartError) -> Self {
        from_rejection(r.status(), r.body_text())
    }
}

/// `axum::Json` whose rejections are [`ApiError`]s.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct JsonBody<T>(pub T);

/// `axum::extract::Path` whose rejections are [`ApiError`]s.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct PathParam<T>(pub T);

/// `axum::extract::Query` whose rejections are [`ApiError`]s.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct QueryParams<T>(pub T);
