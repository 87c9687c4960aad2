//! Console accounts and API tokens (admin): `GET`/`POST /api/users`, `DELETE /api/users/{id}`,
//! `GET`/`POST /api/tokens`, `DELETE /api/tokens/{id}`.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;

use super::{blocking, done};
use crate::json;
use crate::web::AppState;
use crate::web::auth::{Principal, Role, Scope, TokenInfo, User};
use crate::web::error::{ApiResult, JsonBody, PathParam};

/// `GET /api/users`.
pub async fn list_users(State(s): State<AppState>) -> ApiResult<axum::Json<Vec<User>>> {
    Ok(axum::Json(blocking(move || s.auth.users()).await?))
}

/// `POST /api/users`.
pub async fn create_user(
    State(s): State<AppState>,
    JsonBody(b): JsonBody<json::NewUser<Role>>,
) -> ApiResult<(StatusCode, axum::Json<User>)> {
    let u = blocking(move || s.auth.add_user(&b.name, b.role, &b.password)).await?;
    Ok((StatusCode::CREATED, axum::Json(u)))
}

/// `DELETE /api/users/{id}`.
pub async fn remove_user(
    State(s): State<AppState>,
    PathParam(id): PathParam<i64>,
) -> ApiResult<axum::Json<json::Done>> {
    blocking(move || s.auth.remove_user(id)).await?;
    Ok(done())
}

/// `GET /api/tokens`.
pub async fn list_tokens(State(s): State<AppState>) -> ApiResult<axum::Json<Vec<TokenInfo>>> {
    Ok(axum::Json(blocking(move || s.auth.tokens()).await?))
}

/// `POST /api/tokens`: a token for the caller; the secret is in this response only.
pub async fn create_token(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    JsonBody(b): JsonBody<json::NewToken<Scope>>,
) -> ApiResult<(StatusCode, axum::Json<json::TokenCreated<TokenInfo>>)> {
    let scope = b.scope.unwrap_or_default();
    let (info, secret) = blocking(move || s.auth.create_token(p.user_id, &b.label, scope)).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json::TokenCreated {
            token: secret,
            info,
        }),
    ))
}

/// `DELETE /api/tokens/{id}`.
pub async fn remove_token(
    State(s): State<AppState>,
    PathParam(id): PathParam<i64>,
) -> ApiResult<axum::Json<json::Done>> {
    blocking(move || s.auth.remove_token(id)).await?;
    Ok(done())
}
