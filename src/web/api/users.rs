//! Console accounts and API tokens (admin): `GET`/`POST /api/users`, `DELETE /api/users/{id}`,
//! `GET`/`POST /api/tokens`, `DELETE /api/tokens/{id}`.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;

use super::{blocking, done};
use crate::audit::{Action, By, Subject};
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
    Extension(by): Extension<By>,
    JsonBody(b): JsonBody<json::NewUser<Role>>,
) -> ApiResult<(StatusCode, axum::Json<User>)> {
    let u = blocking(move || {
        let u = s.auth.add_user(&b.name, b.role, &b.password)?;
        let subject = Subject::user(Some(u.id), &u.name);
        let detail = format!("role {}", u.role.as_str());
        s.audit.note(&by, Action::UserAdded, subject, detail);
        Ok(u)
    })
    .await?;
    Ok((StatusCode::CREATED, axum::Json(u)))
}

/// `DELETE /api/users/{id}`.
pub async fn remove_user(
    State(s): State<AppState>,
    Extension(by): Extension<By>,
    PathParam(id): PathParam<i64>,
) -> ApiResult<axum::Json<json::Done>> {
    blocking(move || {
        let name = s
            .auth
            .users()?
            .into_iter()
            .find(|u| u.id == id)
            .map(|u| u.name);
        s.auth.remove_user(id)?;
        let subject = Subject::user(Some(id), name.as_deref().unwrap_or("?"));
        s.audit.note(&by, Action::UserRemoved, subject, "");
        Ok(())
    })
    .await?;
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
    Extension(by): Extension<By>,
    JsonBody(b): JsonBody<json::NewToken<Scope>>,
) -> ApiResult<(StatusCode, axum::Json<json::TokenCreated<TokenInfo>>)> {
    let scope = b.scope.unwrap_or_default();
    let (info, secret) = blocking(move || {
        let (info, secret) = s.auth.create_token(p.user_id, &b.label, scope)?;
        let detail = format!("for user {}", info.user);
        let subject = Subject::token(info.id, &info.label);
        s.audit.note(&by, Action::TokenCreated, subject, detail);
        Ok((info, secret))
    })
    .await?;
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
    Extension(by): Extension<By>,
    PathParam(id): PathParam<i64>,
) -> ApiResult<axum::Json<json::Done>> {
    blocking(move || {
        let label = s
            .auth
            .tokens()?
            .into_iter()
            .find(|t| t.id == id)
            .map(|t| t.label);
        s.auth.remove_token(id)?;
        let subject = Subject::token(id, label.as_deref().unwrap_or("?"));
        s.audit.note(&by, Action::TokenRevoked, subject, "");
        Ok(())
    })
    .await?;
    Ok(done())
}
