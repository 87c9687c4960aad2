//! Signing in and out: `GET /api/status`, `POST /api/setup` and `POST /api/login` (public;
//! setup and login are rate-limited per client address), `POST /api/logout` and `GET /api/me`
//! (viewer).

use std::net::SocketAddr;
use std::time::Instant;

use axum::Extension;
use axum::extract::State;
use axum::extract::connect_info::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{blocking, done};
use crate::audit::{Action, By, Subject};
use crate::error::{Error, Kind};
use crate::json;
use crate::web::auth::{self, Principal, Role, User};
use crate::web::error::{ApiError, ApiResult, JsonBody};
use crate::web::{AppState, SESSION_COOKIE};

/// `GET /api/status` (public): whether setup is needed, and the version.
pub async fn status(State(s): State<AppState>) -> ApiResult<axum::Json<json::Status>> {
    let setup = s
        .setup_token
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .is_some();
    Ok(axum::Json(json::Status {
        setup_required: setup,
        version: env!("CARGO_PKG_VERSION").to_string(),
    }))
}

pub(super) fn client_ip(ci: Option<Extension<ConnectInfo<SocketAddr>>>) -> std::net::IpAddr {
    ci.map(|Extension(ConnectInfo(a))| a.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

fn rate_limit(s: &AppState, ip: std::net::IpAddr) -> ApiResult<()> {
    s.limiter.check(ip, Instant::now()).map_err(|r| {
        ApiError::with_status(
            StatusCode::TOO_MANY_REQUESTS,
            Kind::ResourceExhausted,
            format!(
                "too many sign-in attempts from {} (web.login_attempts_per_minute*); try again in {} s",
                r.scope,
                r.wait.as_secs_f64().ceil().max(1.0)
            ),
        )
    })
}

fn session_response(s: &AppState, user: &User, secret: &str, csrf: &str) -> Response {
    let secure = if s.config.secure_cookie {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!("{SESSION_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Strict{secure}");
    let mut res = axum::Json(json::Session {
        user: user.name.clone(),
        role: user.role,
        csrf: Some(csrf.to_string()),
    })
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// `POST /api/login` (public, rate-limited per client IP).
pub async fn login(
    State(s): State<AppState>,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
    JsonBody(body): JsonBody<json::Login>,
) -> ApiResult<Response> {
    let ip = client_ip(ci);
    rate_limit(&s, ip)?;
    // Queue for a password-hashing slot; the slot moves into the blocking task, so a client
    // that hangs up cannot free it while its hash still runs.
    let slot = s.hash_gate.acquire(auth::HASH_QUEUE_WAIT).await?;
    let st = s.clone();
    let res = blocking(move || {
        let _slot = slot;
        let Some(user) = st.auth.check_password(&body.name, &body.password)? else {
            // Under the user's name when it is one; a name that is no user's is not kept (it is
            // often a password typed into the wrong field).
            let (by, subject, detail) = match st.auth.user_by_name(&body.name)? {
                Some(u) => {
                    let subject = Subject::user(Some(u.id), &u.name);
                    (By::user(&u.name, ip), subject, "wrong password")
                }
                None => {
                    let subject = Subject::user(None, "(unknown)");
                    (By::user("(unknown)", ip), subject, "no such user")
                }
            };
            st.audit.note(&by, Action::SignInFailed, subject, detail);
            return Ok(None);
        };
        let (secret, csrf) = st.auth.create_session(&user)?;
        let subject = Subject::user(Some(user.id), &user.name);
        let detail = format!("role {}", user.role.as_str());
        let by = By::user(&user.name, ip);
        st.audit.note(&by, Action::SignIn, subject, detail);
        Ok(Some((user, secret, csrf)))
    })
    .await?;
    let Some((user, secret, csrf)) = res else {
        return Err(Error::new(Kind::Unauthenticated, "wrong user name or password").into());
    };
    Ok(session_response(&s, &user, &secret, &csrf))
}

/// `POST /api/setup` (public while no user exists): creates the first admin with the one-time
/// token from the log and signs them in.
pub async fn setup(
    State(s): State<AppState>,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
    JsonBody(body): JsonBody<json::Setup>,
) -> ApiResult<Response> {
    let ip = client_ip(ci);
    rate_limit(&s, ip)?;
    let expected = s
        .setup_token
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let Some(expected) = expected else {
        return Err(Error::new(Kind::Conflict, "setup is already done; sign in instead").into());
    };
    if !auth::same_secret(&body.token, &expected) {
        return Err(ApiError::forbidden(
            "the setup token is wrong; copy the whole link from the log",
        ));
    }
    let st = s.clone();
    let res = blocking(move || {
        // Atomic: of concurrent setups with the token, exactly one creates the admin.
        let user = st.auth.add_first_admin(&body.name, &body.password)?;
        let (secret, csrf) = st.auth.create_session(&user)?;
        let subject = Subject::user(Some(user.id), &user.name);
        let by = By::user(&user.name, ip);
        st.audit.note(
            &by,
            Action::UserAdded,
            subject,
            "first admin, by the setup link",
        );
        Ok((user, secret, csrf))
    })
    .await;
    if let Err(e) = &res
        && e.error.kind() == Kind::Conflict
    {
        // Someone else (another setup, or `faced user add`) created a user: the link is spent.
        *s.setup_token.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
    let (user, secret, csrf) = res?;
    *s.setup_token.lock().unwrap_or_else(|p| p.into_inner()) = None;
    tracing::info!(user = %user.name, "first console admin created via the setup link");
    Ok(session_response(&s, &user, &secret, &csrf))
}

/// `POST /api/logout`.
pub async fn logout(State(s): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    if let Some(secret) = crate::web::session_cookie(&headers) {
        let st = s.clone();
        blocking(move || st.auth.end_session(&secret)).await?;
    }
    let mut res = done().into_response();
    let cookie = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(res)
}

/// `GET /api/me`: the caller, with the session's CSRF token.
pub async fn me(Extension(p): Extension<Principal>) -> axum::Json<json::Session<Role>> {
    axum::Json(json::Session {
        user: p.user,
        role: p.role,
        csrf: p.csrf,
    })
}
