//! Console accounts: users with roles, password hashing, server-side sessions, API tokens, the
//! one-time setup token, the login rate limiter and the password-hashing cap.
//!
//! * Passwords: PBKDF2-HMAC-SHA256 from `ring`, [`PBKDF2_ITERATIONS`] iterations (OWASP 2023),
//!   16-byte random salt, 32-byte output; the iteration count is stored per user so it can be
//!   raised later without invalidating old hashes. Hashing takes ~0.3 s on a desktop and ~1.5 s
//!   on a Pi 4, so callers run it on a blocking thread.
//! * Sessions and API tokens: 32 random bytes, given to the client once (cookie / token string);
//!   the database holds only their SHA-256, so a copy of the database cannot be used to sign in.
//!   Each session has its own CSRF token, sent by the page in `X-CSRF-Token` on every
//!   state-changing request (checked in `web::guard`). It is HMAC-SHA256 of the cookie secret
//!   ([`csrf_token`]), recomputed per request and never stored, so a database copy or backup
//!   holds no usable CSRF token either.
//! * Re-validation: every request reads its session or token row (joined with the user) from
//!   SQLite; nothing is cached. `faced user passwd` / `remove` run in another process and change
//!   only the database, and the next request of that user is refused. Invariant: the database
//!   is the only record of who is signed in.
//! * Expiry: `last_seen_at` is refreshed at most once a minute per session (SD-card wear); a
//!   session unused for `session_idle_minutes`, or older than `session_max_hours` whatever its
//!   use, is refused and deleted. "Now" is the wall time of the store's injected [`Clocks`]
//!   (wall, not monotonic: session times are stored and must survive a restart), so tests expire
//!   a session by advancing a [`SimulatedClocks`](crate::base::SimulatedClocks).
//! * Setup: the first admin is inserted by one statement that also checks that no user exists
//!   ([`AuthStore::add_first_admin`]), so concurrent setups with the one-time token, or a setup
//!   racing `faced user add`, create exactly one admin.
//!
//! The tables live in the faced database (migrations `0004_web_auth.sql` and
//! `0006_web_session_hardening.sql`, documented in `src/db/schema.sql`). [`AuthStore`] keeps its
//! own connection (from [`crate::db::open_migrated`]), separate from the gallery's, so a login
//! never waits for an enrollment; it is used from blocking threads and,
//! for the per-request session check, briefly from runtime threads (one indexed lookup).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac, pbkdf2};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::base::{CLOCK_SKEW_MS, Clocks, RealClocks};
use crate::error::{Error, Kind, Result};

/// PBKDF2-HMAC-SHA256 iterations for new password hashes.
pub const PBKDF2_ITERATIONS: u32 = 600_000;
/// Shortest accepted password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest accepted password, in bytes (PBKDF2 input; keeps hashing time bounded).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Prefix of API tokens, so they are recognisable in scripts and secret scanners.
pub const TOKEN_PREFIX: &str = "faced_";
/// How often a session's `last_seen_at` is written at most.
const TOUCH_EVERY_MS: i64 = 60_000;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Live view, events and reports (read-only).
    Viewer,
    /// Everything, including people, settings, users and backups.
    Admin,
}

impl Role {
    /// The value stored in `web_user.role`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Admin => "admin",
        }
    }

    /// Parses `admin` / `viewer`.
    pub fn parse(s: &str) -> Result<Role> {
        match s {
            "admin" => Ok(Role::Admin),
            "viewer" => Ok(Role::Viewer),
            _ => Err(Error::invalid(format!(
                "unknown role {s:?}; use admin or viewer"
            ))),
        }
    }
}

/// What an API token may do, within its owner's role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Whatever the owner's role allows (sessions always have this scope).
    #[default]
    All,
    /// Only `GET /metrics`: the credential a Prometheus server keeps, which must not be able to
    /// see faces, events or settings (docs/metrics.md).
    Metrics,
}

impl Scope {
    /// The value stored in `web_api_token.scope`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::All => "all",
            Scope::Metrics => "metrics",
        }
    }

    fn parse(s: &str) -> Result<Scope> {
        match s {
            "all" => Ok(Scope::All),
            "metrics" => Ok(Scope::Metrics),
            _ => Err(Error::invalid(format!(
                "unknown token scope {s:?}; use all or metrics"
            ))),
        }
    }
}

/// A console user as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// Database id.
    pub id: i64,
    /// Login name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// When created, Unix ms.
    pub created_at_ms: i64,
}

/// An API token as listed (the secret itself is shown only once, at creation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// Database id.
    pub id: i64,
    /// Owner's user id.
    pub user_id: i64,
    /// Owner's name.
    pub user: String,
    /// A label ("backup script").
    pub label: String,
    /// When created, Unix ms.
    pub created_at_ms: i64,
    /// Last use, Unix ms (refreshed at most once a minute).
    pub last_used_at_ms: Option<i64>,
    /// What it may do.
    pub scope: Scope,
}

/// Who is calling: the result of authenticating a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User id.
    pub user_id: i64,
    /// User name.
    pub user: String,
    /// Role.
    pub role: Role,
    /// The session's CSRF token ([`csrf_token`] of the cookie); `None` for API-token callers
    /// (no cookie, so no CSRF risk).
    pub csrf: Option<String>,
    /// The API token's id and label, for a caller with a token (the audit trail names it).
    pub token: Option<(i64, String)>,
    /// What the caller may do within `role` (a session: [`Scope::All`]).
    pub scope: Scope,
}

/// How long sessions live: idle expiry and absolute lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// A session unused for this long is signed out (`web.session_idle_minutes`).
    pub idle: Duration,
    /// A session this old is signed out however busy it is (`web.session_max_hours`).
    pub max_age: Duration,
}

/// `n` random bytes.
fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| Error::internal("the system random generator failed"))?;
    Ok(b)
}

/// A new random secret, URL-safe base64 of 32 bytes.
pub fn new_secret() -> Result<String> {
    Ok(URL_SAFE_NO_PAD.encode(random::<32>()?))
}

/// SHA-256 of a secret string, as stored.
pub fn secret_hash(secret: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, secret.as_bytes())
        .as_ref()
        .to_vec()
}

/// The CSRF token of the session whose cookie secret is `secret`: URL-safe base64 of
/// HMAC-SHA256(key = secret, "faced csrf v1"). Derived rather than stored, so the database (which
/// holds only SHA-256 of the secret) cannot yield it, and the page can fetch it again after a
/// reload (`GET /api/me`).
pub fn csrf_token(secret: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    URL_SAFE_NO_PAD.encode(hmac::sign(&key, b"faced csrf v1").as_ref())
}

/// Constant-time equality of two strings (CSRF and setup tokens).
pub fn same_secret(a: &str, b: &str) -> bool {
    // Compare fixed-length digests with no early exit.
    secret_hash(a)
        .iter()
        .zip(secret_hash(b))
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Checks a login name: 1..=64 characters of letters, digits, `.`, `_`, `-`, `@`.
pub fn validate_user_name(name: &str) -> Result<&str> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 64 {
        return Err(Error::invalid("user name must be 1 to 64 characters"));
    }
    if !n.chars().all(|c| c.is_alphanumeric() || "._-@".contains(c)) {
        return Err(Error::invalid(format!(
            "user name {n:?} may contain only letters, digits and . _ - @"
        )));
    }
    Ok(n)
}

/// Checks a new password's length.
pub fn validate_password(pw: &str) -> Result<()> {
    if pw.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::invalid(format!(
            "password must be at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if pw.len() > MAX_PASSWORD_BYTES {
        return Err(Error::invalid(format!(
            "password must be at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

fn derive(pw: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    let it = NonZeroU32::new(iterations.max(1)).expect("non-zero");
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        it,
        salt,
        pw.as_bytes(),
        &mut out,
    );
    out
}

/// Hashes `pw`: `(salt, hash, iterations)`.
pub fn hash_password(pw: &str) -> Result<(Vec<u8>, Vec<u8>, u32)> {
    let salt = random::<16>()?;
    Ok((
        salt.to_vec(),
        derive(pw, &salt, PBKDF2_ITERATIONS).to_vec(),
        PBKDF2_ITERATIONS,
    ))
}

fn verify_password(pw: &str, salt: &[u8], hash: &[u8], iterations: u32) -> bool {
    let Some(it) = NonZeroU32::new(iterations) else {
        return false;
    };
    pw.len() <= MAX_PASSWORD_BYTES
        && pbkdf2::verify(pbkdf2::PBKDF2_HMAC_SHA256, it, salt, pw.as_bytes(), hash).is_ok()
}

// A fixed dummy hash: unknown user names take as long as wrong passwords.
fn dummy_verify(pw: &str) {
    let _ = verify_password(pw, b"faced-dummy-salt", &[0u8; 32], PBKDF2_ITERATIONS);
}

/// Users, sessions and API tokens in the faced database. See the module docs.
#[derive(Debug)]
pub struct AuthStore {
    conn: Mutex<Connection>,
    idle_ms: i64,
    max_age_ms: i64,
    clocks: Arc<dyn Clocks>,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl AuthStore {
    /// Opens the database at `db` (creating and upgrading its schema if needed), on the real
    /// clocks.
    pub fn open(db: &Path, limits: SessionLimits) -> Result<AuthStore> {
        Self::open_with_clocks(db, limits, Arc::new(RealClocks))
    }

    /// [`AuthStore::open`] with the time source for session expiry and the `created_at` /
    /// `last_seen_at` columns.
    pub fn open_with_clocks(
        db: &Path,
        limits: SessionLimits,
        clocks: Arc<dyn Clocks>,
    ) -> Result<AuthStore> {
        let conn = crate::db::open_migrated(db, &*clocks)?;
        Ok(AuthStore {
            conn: Mutex::new(conn),
            idle_ms: ms(limits.idle),
            max_age_ms: ms(limits.max_age),
            clocks,
        })
    }

    /// Wall-clock now on this store's clocks, Unix ms: the console's "now" (report ranges,
    /// backup names), consistent with session expiry.
    pub fn now_ms(&self) -> i64 {
        self.clocks.unix_ms()
    }

    /// This store's clocks (backup archives are stamped with them).
    pub fn clocks(&self) -> Arc<dyn Clocks> {
        self.clocks.clone()
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of users.
    pub fn user_count(&self) -> Result<i64> {
        Ok(self
            .conn()
            .query_row("SELECT COUNT(*) FROM web_user", [], |r| r.get(0))?)
    }

    /// Every user, by name.
    pub fn users(&self) -> Result<Vec<User>> {
        let conn = self.conn();
        let mut st =
            conn.prepare("SELECT id, name, role, created_at FROM web_user ORDER BY name")?;
        let rows = st.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, String>(2)?, r.get(3)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, name, role, created_at_ms) = row?;
            out.push(User {
                id,
                name,
                role: Role::parse(&role)?,
                created_at_ms,
            });
        }
        Ok(out)
    }

    /// The user named `name` (ASCII case ignored).
    pub fn user_by_name(&self, name: &str) -> Result<Option<User>> {
        let conn = self.conn();
        let row: Option<(i64, String, String, i64)> = conn
            .query_row(
                "SELECT id, name, role, created_at FROM web_user WHERE name = ?1",
                [name.trim()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        row.map(|(id, name, role, created_at_ms)| {
            Ok(User {
                id,
                name,
                role: Role::parse(&role)?,
                created_at_ms,
            })
        })
        .transpose()
    }

    /// Creates a user (slow: hashes the password). [`Kind::Conflict`] if the name is taken.
    pub fn add_user(&self, name: &str, role: Role, password: &str) -> Result<User> {
        let name = validate_user_name(name)?;
        validate_password(password)?;
        let (salt, hash, it) = hash_password(password)?;
        let now = self.now_ms();
        let conn = self.conn();
        match conn.execute(
            "INSERT INTO web_user (name, role, pw_salt, pw_hash, pw_iterations, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![name, role.as_str(), salt, hash, it, now],
        ) {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                return Err(Error::new(Kind::Conflict, format!("a user named {name:?} already exists")));
            }
            Err(e) => return Err(e.into()),
        }
        Ok(User {
            id: conn.last_insert_rowid(),
            name: name.to_string(),
            role,
            created_at_ms: now,
        })
    }

    /// Creates the first admin, only while there is no user at all: the check and the insert
    /// are one statement, so of concurrent setups (or a setup racing `faced user add`) exactly
    /// one succeeds and the others get [`Kind::Conflict`]. Slow: hashes the password.
    pub fn add_first_admin(&self, name: &str, password: &str) -> Result<User> {
        let name = validate_user_name(name)?;
        validate_password(password)?;
        let done = || Error::new(Kind::Conflict, "setup is already done; sign in instead");
        if self.user_count()? > 0 {
            return Err(done()); // cheap early refusal; the insert below is the real check
        }
        let (salt, hash, it) = hash_password(password)?;
        let now = self.now_ms();
        let conn = self.conn();
        let n = conn.execute(
            "INSERT INTO web_user (name, role, pw_salt, pw_hash, pw_iterations, created_at)
             SELECT ?1, 'admin', ?2, ?3, ?4, ?5 WHERE NOT EXISTS (SELECT 1 FROM web_user)",
            params![name, salt, hash, it, now],
        )?;
        if n == 0 {
            return Err(done());
        }
        Ok(User {
            id: conn.last_insert_rowid(),
            name: name.to_string(),
            role: Role::Admin,
            created_at_ms: now,
        })
    }

    /// Sets a user's password (slow) and signs them out everywhere: their sessions and API
    /// tokens are deleted in the same transaction (a password is changed because it may be
    /// known to someone else, who may have made a token). Returns how many sessions and tokens
    /// went.
    pub fn set_password(&self, name: &str, password: &str) -> Result<(usize, usize)> {
        validate_password(password)?;
        let user = self
            .user_by_name(name)?
            .ok_or_else(|| Error::not_found(format!("no user named {name:?}")))?;
        let (salt, hash, it) = hash_password(password)?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE web_user SET pw_salt = ?1, pw_hash = ?2, pw_iterations = ?3 WHERE id = ?4",
            params![salt, hash, it, user.id],
        )?;
        let sessions = tx.execute("DELETE FROM web_session WHERE user_id = ?1", [user.id])?;
        let tokens = tx.execute("DELETE FROM web_api_token WHERE user_id = ?1", [user.id])?;
        tx.commit()?;
        Ok((sessions, tokens))
    }

    /// Removes a user with their sessions and API tokens. Refuses to remove the last admin
    /// ([`Kind::Conflict`]): nobody could manage the device any more.
    pub fn remove_user(&self, id: i64) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let role: Option<String> = tx
            .query_row("SELECT role FROM web_user WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(role) = role else {
            return Err(Error::not_found(format!("no user with id {id}")));
        };
        if role == "admin" {
            let admins: i64 = tx.query_row(
                "SELECT COUNT(*) FROM web_user WHERE role = 'admin'",
                [],
                |r| r.get(0),
            )?;
            if admins <= 1 {
                return Err(Error::new(
                    Kind::Conflict,
                    "cannot remove the last admin; add another admin first (faced user add --admin NAME)",
                ));
            }
        }
        // Sessions and tokens go by ON DELETE CASCADE (foreign_keys is on for this connection).
        tx.execute("DELETE FROM web_user WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(())
    }

    /// Checks a name and password (slow, constant-ish time); returns the user if they match.
    pub fn check_password(&self, name: &str, password: &str) -> Result<Option<User>> {
        let row: Option<UserRow> = self
            .conn()
            .query_row(
                "SELECT id, name, role, pw_salt, pw_hash, pw_iterations, created_at FROM web_user WHERE name = ?1",
                [name.trim()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)),
            )
            .optional()?;
        let Some((id, name, role, salt, hash, it, created_at_ms)) = row else {
            dummy_verify(password);
            return Ok(None);
        };
        if !verify_password(password, &salt, &hash, it) {
            return Ok(None);
        }
        Ok(Some(User {
            id,
            name,
            role: Role::parse(&role)?,
            created_at_ms,
        }))
    }

    /// Starts a session for `user`: `(cookie secret, csrf token)`. Only the secret's SHA-256 is
    /// stored; the CSRF token is derived from the secret ([`csrf_token`]).
    pub fn create_session(&self, user: &User) -> Result<(String, String)> {
        let secret = new_secret()?;
        let now = self.now_ms();
        self.conn().execute(
            "INSERT INTO web_session (token_hash, user_id, created_at, last_seen_at) VALUES (?1, ?2, ?3, ?3)",
            params![secret_hash(&secret), user.id, now],
        )?;
        let csrf = csrf_token(&secret);
        Ok((secret, csrf))
    }

    /// The principal of a session cookie, if the session exists (it is deleted by logout,
    /// password change and user removal, also from another process), its user exists, and it
    /// is neither idle-expired nor past its absolute lifetime. Refreshes its last-seen time at
    /// most once a minute. One indexed read per call: see the module docs.
    pub fn session(&self, secret: &str) -> Result<Option<Principal>> {
        self.session_at(secret, self.now_ms())
    }

    fn session_at(&self, secret: &str, now: i64) -> Result<Option<Principal>> {
        let key = secret_hash(secret);
        let conn = self.conn();
        let row: Option<(i64, String, String, i64, i64)> = conn
            .query_row(
                "SELECT u.id, u.name, u.role, s.created_at, s.last_seen_at FROM web_session s
                 JOIN web_user u ON u.id = s.user_id WHERE s.token_hash = ?1",
                [&key],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let Some((user_id, user, role, created, last)) = row else {
            return Ok(None);
        };
        // Saturating: the stored times may be anything a database copy holds. A session from
        // the future (the clock went back: an RTC-less board rebooted, or NTP corrected a clock
        // that ran ahead) ends too: otherwise its age would count from a time that has not come
        // yet and its absolute lifetime would stretch by the size of the jump.
        let future = |t: i64| t > now.saturating_add(CLOCK_SKEW_MS);
        if now.saturating_sub(last) > self.idle_ms
            || now.saturating_sub(created) > self.max_age_ms
            || future(created)
            || future(last)
        {
            conn.execute("DELETE FROM web_session WHERE token_hash = ?1", [&key])?;
            return Ok(None);
        }
        if now.saturating_sub(last) >= TOUCH_EVERY_MS
            && let Err(e) = conn.execute(
                "UPDATE web_session SET last_seen_at = ?1 WHERE token_hash = ?2",
                params![now, key],
            )
        {
            // Best effort: on a full disk the console must still let its admin in to see the
            // banner and free space; the session then idles out a little early at worst.
            tracing::debug!("cannot refresh a session's last use: {e}");
        }
        Ok(Some(Principal {
            user_id,
            user,
            role: Role::parse(&role)?,
            csrf: Some(csrf_token(secret)),
            token: None,
            scope: Scope::All,
        }))
    }

    /// Ends a session (logout).
    pub fn end_session(&self, secret: &str) -> Result<()> {
        let key = secret_hash(secret);
        self.conn()
            .execute("DELETE FROM web_session WHERE token_hash = ?1", [key])?;
        Ok(())
    }

    /// Deletes sessions past the idle expiry or the absolute lifetime (run now and then; a
    /// request on such a session is refused anyway).
    pub fn purge_sessions(&self) -> Result<usize> {
        let now = self.now_ms();
        Ok(self.conn().execute(
            "DELETE FROM web_session WHERE last_seen_at < ?1 OR created_at < ?2
                                         OR created_at > ?3 OR last_seen_at > ?3",
            params![
                now.saturating_sub(self.idle_ms),
                now.saturating_sub(self.max_age_ms),
                now.saturating_add(CLOCK_SKEW_MS)
            ],
        )?)
    }

    /// Creates an API token for `user_id` with `scope`; returns its listing and the secret
    /// (shown once).
    pub fn create_token(
        &self,
        user_id: i64,
        label: &str,
        scope: Scope,
    ) -> Result<(TokenInfo, String)> {
        let secret = format!("{TOKEN_PREFIX}{}", new_secret()?);
        let info = self.insert_token(user_id, label, scope, &secret)?;
        Ok((info, secret))
    }

    /// Stores a token made elsewhere (`faced user token --stdin`): one Prometheus credential
    /// for every unit of a site, each unit holding its SHA-256. `secret` must look like a token
    /// [`AuthStore::create_token`] makes: [`TOKEN_PREFIX`], then at least 32 URL-safe base64
    /// characters.
    pub fn import_token(
        &self,
        user_id: i64,
        label: &str,
        scope: Scope,
        secret: &str,
    ) -> Result<TokenInfo> {
        let body = secret.strip_prefix(TOKEN_PREFIX).unwrap_or("");
        if body.len() < 32
            || body.len() > 200
            || !body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::invalid(format!(
                "an API token must be {TOKEN_PREFIX} followed by 32 to 200 letters, digits, - or _ \
                 (as `faced user token` prints them)"
            )));
        }
        self.insert_token(user_id, label, scope, secret)
    }

    fn insert_token(
        &self,
        user_id: i64,
        label: &str,
        scope: Scope,
        secret: &str,
    ) -> Result<TokenInfo> {
        let label = label.trim();
        if label.is_empty()
            || label.chars().count() > 100
            || label.chars().any(crate::gallery::is_forbidden_name_char)
        {
            return Err(Error::invalid(
                "token label must be 1 to 100 characters without control or invisible \
                 formatting characters",
            ));
        }
        let now = self.now_ms();
        let conn = self.conn();
        let user: String = conn
            .query_row("SELECT name FROM web_user WHERE id = ?1", [user_id], |r| {
                r.get(0)
            })
            .optional()?
            .ok_or_else(|| Error::not_found(format!("no user with id {user_id}")))?;
        match conn.execute(
            "INSERT INTO web_api_token (user_id, label, token_hash, created_at, scope) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![user_id, label, secret_hash(secret), now, scope.as_str()],
        ) {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(f, _))
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                return Err(Error::new(
                    Kind::Conflict,
                    "this API token is already stored here",
                ));
            }
            Err(e) => return Err(e.into()),
        }
        Ok(TokenInfo {
            id: conn.last_insert_rowid(),
            user_id,
            user,
            label: label.to_string(),
            created_at_ms: now,
            last_used_at_ms: None,
            scope,
        })
    }

    /// Every API token (without secrets).
    pub fn tokens(&self) -> Result<Vec<TokenInfo>> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT t.id, t.user_id, u.name, t.label, t.created_at, t.last_used_at, t.scope
             FROM web_api_token t JOIN web_user u ON u.id = t.user_id ORDER BY t.id",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                TokenInfo {
                    id: r.get(0)?,
                    user_id: r.get(1)?,
                    user: r.get(2)?,
                    label: r.get(3)?,
                    created_at_ms: r.get(4)?,
                    last_used_at_ms: r.get(5)?,
                    scope: Scope::All,
                },
                r.get::<_, String>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (mut info, scope) = row?;
            info.scope = Scope::parse(&scope)?;
            out.push(info);
        }
        Ok(out)
    }

    /// Revokes an API token.
    pub fn remove_token(&self, id: i64) -> Result<()> {
        if self
            .conn()
            .execute("DELETE FROM web_api_token WHERE id = ?1", [id])?
            == 0
        {
            return Err(Error::not_found(format!("no API token with id {id}")));
        }
        Ok(())
    }

    /// The principal of an API token (`Authorization: Bearer …`), if valid.
    pub fn token(&self, secret: &str) -> Result<Option<Principal>> {
        if !secret.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        let key = secret_hash(secret);
        let conn = self.conn();
        // (token id, label, scope), (user id, name, role), last used.
        type TokenRow = ((i64, String, String), (i64, String, String), Option<i64>);
        let row: Option<TokenRow> = conn
            .query_row(
                "SELECT t.id, t.label, t.scope, u.id, u.name, u.role, t.last_used_at FROM web_api_token t
                 JOIN web_user u ON u.id = t.user_id WHERE t.token_hash = ?1",
                [&key],
                |r| {
                    Ok((
                        (r.get(0)?, r.get(1)?, r.get(2)?),
                        (r.get(3)?, r.get(4)?, r.get(5)?),
                        r.get(6)?,
                    ))
                },
            )
            .optional()?;
        let Some(((tid, label, scope), (user_id, user, role), last)) = row else {
            return Ok(None);
        };
        let now = self.now_ms();
        if last.is_none_or(|l| now.saturating_sub(l) >= TOUCH_EVERY_MS) {
            conn.execute(
                "UPDATE web_api_token SET last_used_at = ?1 WHERE id = ?2",
                params![now, tid],
            )?;
        }
        Ok(Some(Principal {
            user_id,
            user,
            role: Role::parse(&role)?,
            csrf: None,
            token: Some((tid, label)),
            scope: Scope::parse(&scope)?,
        }))
    }
}

/// Sign-in attempts allowed per minute, by scope (`web.login_attempts_per_minute*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginRates {
    /// Per client address.
    pub per_address: u32,
    /// Per network: the client's IPv4 /24 or IPv6 /64, so one host with many addresses (IPv6
    /// privacy addresses, a LAN client claiming several IPv4 addresses) counts once.
    pub per_network: u32,
    /// For the whole console, whoever asks: the ceiling on password-hashing work.
    pub total: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Shared {
    Network(IpAddr),
    All,
}

/// A refused attempt: which limit, and when the next attempt will be allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `"address 10.0.0.7"`, `"network 10.0.0.0/24"` or `"console"`.
    pub scope: String,
    /// Time until an attempt in that scope is allowed again.
    pub wait: Duration,
}

/// Login limiter (guessing passwords must be slow for one client and for a botnet), counting per client address, per
/// network and overall. An attempt must pass all three and counts in all three; every attempt
/// counts, not only failures, so it also bounds the CPU spent on password hashing.
///
/// * Per address: a fixed one-minute window, as strict as "N a minute" reads.
/// * Per network and overall: token buckets holding up to their per-minute count and refilling
///   evenly over the minute. These are shared with innocent clients, so after a storm they let
///   a real user in again within seconds (one attempt every 60/N s) instead of locking the whole
///   LAN out for a full window.
///
/// Memory: entries are created only for allowed attempts (at most `total` a minute) and expired
/// ones are dropped once there are more than 1024.
#[derive(Debug)]
pub struct RateLimiter {
    rates: LoginRates,
    state: Mutex<LimiterState>,
}

#[derive(Debug, Default)]
struct LimiterState {
    windows: HashMap<IpAddr, (Instant, u32)>,
    buckets: HashMap<Shared, (f64, Instant)>,
}

impl RateLimiter {
    /// A limiter with the given per-minute rates (each at least 1).
    pub fn new(rates: LoginRates) -> Self {
        RateLimiter {
            rates,
            state: Mutex::new(LimiterState::default()),
        }
    }

    fn capacity(&self, scope: &Shared) -> f64 {
        f64::from(
            match scope {
                Shared::Network(_) => self.rates.per_network,
                Shared::All => self.rates.total,
            }
            .max(1),
        )
    }

    fn level(&self, scope: &Shared, entry: Option<&(f64, Instant)>, now: Instant) -> f64 {
        let cap = self.capacity(scope);
        match entry {
            Some(&(tokens, at)) => {
                (tokens + now.saturating_duration_since(at).as_secs_f64() * cap / 60.0).min(cap)
            }
            None => cap,
        }
    }

    /// Records an attempt from `ip` at `now`; `Err` names the exhausted limit.
    pub fn check(&self, ip: IpAddr, now: Instant) -> std::result::Result<(), Refusal> {
        const WINDOW: Duration = Duration::from_secs(60);
        let ip = ip.to_canonical();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let count = match st.windows.get(&ip) {
            Some(&(start, n)) if now.saturating_duration_since(start) < WINDOW => {
                if n >= self.rates.per_address.max(1) {
                    return Err(Refusal {
                        scope: format!("address {ip}"),
                        wait: WINDOW.saturating_sub(now.saturating_duration_since(start)),
                    });
                }
                Some((start, n))
            }
            _ => None,
        };
        let net = network_of(ip);
        let shared = [Shared::Network(net), Shared::All];
        let mut levels = [0.0; 2];
        for (i, sc) in shared.iter().enumerate() {
            levels[i] = self.level(sc, st.buckets.get(sc), now);
            if levels[i] < 1.0 {
                let wait = Duration::from_secs_f64((1.0 - levels[i]) * 60.0 / self.capacity(sc));
                let scope = match sc {
                    Shared::Network(n) if n.is_ipv4() => format!("network {n}/24"),
                    Shared::Network(n) => format!("network {n}/64"),
                    Shared::All => "console".to_string(),
                };
                return Err(Refusal { scope, wait });
            }
        }
        let (start, n) = count.unwrap_or((now, 0));
        st.windows.insert(ip, (start, n + 1));
        for (i, sc) in shared.into_iter().enumerate() {
            st.buckets.insert(sc, (levels[i] - 1.0, now));
        }
        if st.windows.len() + st.buckets.len() > 1024 {
            // Forget expired windows and refilled buckets: they hold nothing a new one would not.
            st.windows
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < WINDOW);
            let buckets = std::mem::take(&mut st.buckets);
            st.buckets = buckets
                .into_iter()
                .filter(|(sc, e)| self.level(sc, Some(e), now) < self.capacity(sc))
                .collect();
        }
        Ok(())
    }
}

/// The network an address belongs to for rate limiting: IPv4 /24, IPv6 /64.
fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v) => {
            let [a, b, c, _] = v.octets();
            IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, 0))
        }
        IpAddr::V6(v) => {
            let bits = u128::from(v) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(bits))
        }
    }
}

/// How long a sign-in waits for a password-hashing slot before it is refused (503).
pub const HASH_QUEUE_WAIT: Duration = Duration::from_secs(5);

/// Global cap on concurrent password checks. PBKDF2 at [`PBKDF2_ITERATIONS`] is a second or
/// more of one core on a small board; without a cap, sign-ins that pass the rate limiter from
/// many addresses run side by side and take the CPU from the camera. Sign-ins queue for a slot
/// (first come, first served) for at most [`HASH_QUEUE_WAIT`], then get 503.
#[derive(Debug)]
pub struct HashGate {
    sem: std::sync::Arc<tokio::sync::Semaphore>,
    max: usize,
}

/// A password-hashing slot; move it into the blocking task that hashes, so it is held exactly
/// as long as the hash runs, even if the client hangs up meanwhile.
#[derive(Debug)]
pub struct HashSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl HashGate {
    /// At most `max` (≥ 1) password checks at a time.
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        HashGate {
            sem: std::sync::Arc::new(tokio::sync::Semaphore::new(max)),
            max,
        }
    }

    /// Waits up to `wait` for a slot; `Unavailable` (503) after that.
    pub async fn acquire(&self, wait: Duration) -> Result<HashSlot> {
        match tokio::time::timeout(wait, self.sem.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(HashSlot { _permit: p }),
            _ => Err(Error::unavailable(format!(
                "the console is busy checking other sign-ins ({} at a time, \
                 web.password_hash_concurrency); try again in a few seconds",
                self.max
            ))),
        }
    }
}

/// A `web_user` row: id, name, role, salt, hash, iterations, created_at.
type UserRow = (i64, String, String, Vec<u8>, Vec<u8>, u32, i64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_round_trip_and_iterations() {
        let (salt, hash, it) = hash_password("correct horse battery").unwrap();
        assert!(it >= 600_000);
        assert!(verify_password("correct horse battery", &salt, &hash, it));
        assert!(!verify_password("correct horse batterY", &salt, &hash, it));
    }

    #[test]
    fn sessions_expire_when_idle_or_too_old_and_derive_their_csrf() {
        let dir = std::env::temp_dir().join(format!("faced-auth-{}", new_secret().unwrap()));
        std::fs::create_dir(&dir).unwrap();
        let minute = Duration::from_secs(60);
        let limits = SessionLimits {
            idle: 30 * minute,
            max_age: 120 * minute,
        };
        let store = AuthStore::open(&dir.join("faced.db"), limits).unwrap();
        store.conn().execute(
            "INSERT INTO web_user (name, role, pw_salt, pw_hash, pw_iterations, created_at) VALUES ('a', 'admin', zeroblob(16), zeroblob(32), 600000, 0)",
            [],
        ).unwrap();
        let user = store.user_by_name("a").unwrap().unwrap();
        let (secret, csrf) = store.create_session(&user).unwrap();
        assert_eq!(csrf, csrf_token(&secret));
        assert_ne!(csrf_token(&secret), csrf_token(&new_secret().unwrap()));
        let t0 = store.now_ms();
        let m = 60_000;
        // Used every 20 minutes: the idle expiry never hits, the absolute lifetime does.
        for i in 1..=5 {
            let p = store.session_at(&secret, t0 + i * 20 * m).unwrap();
            assert_eq!(p.unwrap().csrf.as_deref(), Some(csrf.as_str()), "at {i}");
        }
        assert!(store.session_at(&secret, t0 + 119 * m).unwrap().is_some());
        assert!(store.session_at(&secret, t0 + 121 * m).unwrap().is_none());
        assert!(store.session_at(&secret, t0).unwrap().is_none(), "deleted");
        // Idle for longer than 30 minutes.
        let (secret, _) = store.create_session(&user).unwrap();
        assert!(store.session_at(&secret, t0 + 29 * m).unwrap().is_some());
        assert!(
            store
                .session_at(&secret, t0 + 29 * m + 31 * m)
                .unwrap()
                .is_none()
        );
        // Absurd clock values do not overflow; far in the future the session is over.
        let (secret, _) = store.create_session(&user).unwrap();
        assert!(store.session_at(&secret, i64::MAX).unwrap().is_none());
        // Far in the past, the session comes from the future: it ends too (a clock set back
        // must not stretch a session's life).
        let (secret, _) = store.create_session(&user).unwrap();
        assert!(store.session_at(&secret, i64::MIN).unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A store on simulated clocks (idle limit 30 min, absolute 120 min) with one admin user,
    /// inserted directly: hashing a real password takes seconds under emulation.
    fn simulated_store() -> (
        tempfile::TempDir,
        AuthStore,
        User,
        Arc<crate::base::SimulatedClocks>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let minute = Duration::from_secs(60);
        let limits = SessionLimits {
            idle: 30 * minute,
            max_age: 120 * minute,
        };
        let clocks = Arc::new(crate::base::SimulatedClocks::new());
        let store =
            AuthStore::open_with_clocks(&dir.path().join("faced.db"), limits, clocks.clone())
                .unwrap();
        store.conn().execute(
            "INSERT INTO web_user (name, role, pw_salt, pw_hash, pw_iterations, created_at) VALUES ('a', 'admin', zeroblob(16), zeroblob(32), 600000, 0)",
            [],
        ).unwrap();
        let user = store.user_by_name("a").unwrap().unwrap();
        (dir, store, user, clocks)
    }

    /// The wall clock set back to 1970 (an RTC-less board rebooting) and forward by years:
    /// every session that predates the jump ends, in both directions, and a new sign-in on the
    /// jumped clock works and expires by the usual rules.
    #[test]
    fn wall_clock_jumps_end_sessions_instead_of_stretching_them() {
        use std::time::{SystemTime, UNIX_EPOCH};
        let (_dir, store, user, clocks) = simulated_store();
        let minute = Duration::from_secs(60);
        let real_now = clocks.realtime();
        let (before, _) = store.create_session(&user).unwrap();
        assert!(store.session(&before).unwrap().is_some());
        // Back to 1970 + 1 day.
        clocks.set_wall(UNIX_EPOCH + Duration::from_secs(86_400));
        assert!(
            store.session(&before).unwrap().is_none(),
            "a session from the future was accepted"
        );
        let (in_1970, _) = store.create_session(&user).unwrap();
        clocks.advance(20 * minute);
        assert!(store.session(&in_1970).unwrap().is_some());
        clocks.advance(31 * minute);
        assert!(
            store.session(&in_1970).unwrap().is_none(),
            "idle rule on the 1970 clock"
        );
        // NTP: the clock jumps forward by 56 years; a 1970 session is idle for 56 years.
        let (again, _) = store.create_session(&user).unwrap();
        clocks.set_wall(real_now + 60 * minute);
        assert!(store.session(&again).unwrap().is_none());
        // Forward by three years and back: what was signed in during the jump ends after it.
        let (now_s, _) = store.create_session(&user).unwrap();
        clocks.set_wall(real_now + Duration::from_secs(3 * 365 * 86_400));
        assert!(store.session(&now_s).unwrap().is_none());
        let (ahead, _) = store.create_session(&user).unwrap();
        clocks.set_wall(SystemTime::now() + 61 * minute);
        assert!(store.session(&ahead).unwrap().is_none());
        assert_eq!(store.purge_sessions().unwrap(), 0, "already deleted on use");
    }

    #[test]
    fn tokens_keep_their_scope_and_imported_ones_are_checked() {
        let (_dir, store, user, _) = simulated_store();
        let (info, secret) = store.create_token(user.id, "prom", Scope::Metrics).unwrap();
        assert_eq!(info.scope, Scope::Metrics);
        assert_eq!(store.token(&secret).unwrap().unwrap().scope, Scope::Metrics);
        let (_, all) = store.create_token(user.id, "script", Scope::All).unwrap();
        assert_eq!(store.token(&all).unwrap().unwrap().scope, Scope::All);
        let listed: Vec<Scope> = store.tokens().unwrap().iter().map(|t| t.scope).collect();
        assert_eq!(listed, [Scope::Metrics, Scope::All]);
        let (session, _) = store.create_session(&user).unwrap();
        assert_eq!(store.session(&session).unwrap().unwrap().scope, Scope::All);
        // One site-wide token, stored as made elsewhere; once.
        let site = format!("{TOKEN_PREFIX}{}", "Site-token_".repeat(4));
        store
            .import_token(user.id, "site", Scope::Metrics, &site)
            .unwrap();
        assert_eq!(store.token(&site).unwrap().unwrap().scope, Scope::Metrics);
        let e = store
            .import_token(user.id, "again", Scope::Metrics, &site)
            .unwrap_err();
        assert_eq!(e.kind(), Kind::Conflict, "{e}");
        for bad in [
            format!("{TOKEN_PREFIX}short"),
            "x".repeat(50),
            format!("{TOKEN_PREFIX}{}", "é".repeat(40)),
            format!("{TOKEN_PREFIX}{} ", "a".repeat(40)),
        ] {
            let e = store
                .import_token(user.id, "bad", Scope::Metrics, &bad)
                .unwrap_err();
            assert_eq!(e.kind(), Kind::InvalidInput, "{bad}");
            assert!(e.to_string().contains("faced user token"), "{e}");
        }
    }

    #[test]
    fn sessions_expire_as_simulated_clocks_advance() {
        let (_dir, store, user, clocks) = simulated_store();
        let minute = Duration::from_secs(60);
        let (busy, _) = store.create_session(&user).unwrap();
        let (idle, _) = store.create_session(&user).unwrap();
        // Through the public path (`session`, which reads the store's clocks): the busy session
        // is used every 20 minutes and outlives the idle one, then hits the absolute lifetime.
        for _ in 0..5 {
            clocks.advance(20 * minute);
            assert!(
                store.session(&busy).unwrap().is_some(),
                "busy at {:?}",
                clocks.elapsed()
            );
        }
        assert!(
            store.session(&idle).unwrap().is_none(),
            "idle for 100 minutes"
        );
        clocks.advance(19 * minute);
        assert!(store.session(&busy).unwrap().is_some(), "119 minutes old");
        clocks.advance(2 * minute);
        assert!(store.session(&busy).unwrap().is_none(), "121 minutes old");
        // `purge_sessions` applies the same limits on the same clocks.
        let (fresh, _) = store.create_session(&user).unwrap();
        let (stale, _) = store.create_session(&user).unwrap();
        clocks.advance(25 * minute);
        assert!(store.session(&fresh).unwrap().is_some());
        clocks.advance(25 * minute);
        assert_eq!(store.purge_sessions().unwrap(), 1, "only the unused one");
        assert!(store.session(&stale).unwrap().is_none());
        assert!(store.session(&fresh).unwrap().is_some());
    }

    #[test]
    fn rate_limiter_counts_per_address_network_and_overall() {
        let rates = LoginRates {
            per_address: 2,
            per_network: 3,
            total: 5,
        };
        let rl = RateLimiter::new(rates);
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let t = Instant::now();
        assert!(rl.check(ip("10.0.0.1"), t).is_ok());
        assert!(rl.check(ip("10.0.0.1"), t).is_ok());
        let e = rl.check(ip("10.0.0.1"), t).unwrap_err();
        assert_eq!(e.scope, "address 10.0.0.1");
        // The same /24 from another address: the network's third, then refused.
        assert!(rl.check(ip("10.0.0.2"), t).is_ok());
        let e = rl.check(ip("10.0.0.3"), t).unwrap_err();
        assert_eq!(e.scope, "network 10.0.0.0/24");
        // An IPv4-mapped IPv6 address counts as the IPv4 address.
        let e = rl.check(ip("::ffff:10.0.0.4"), t).unwrap_err();
        assert_eq!(e.scope, "network 10.0.0.0/24");
        // IPv6 addresses of one /64 share a network bucket.
        assert!(rl.check(ip("2001:db8::1"), t).is_ok());
        assert!(rl.check(ip("2001:db8::2"), t).is_ok());
        let e = rl.check(ip("2001:db8::3"), t).unwrap_err();
        assert_eq!(e.scope, "console");
        let e = rl.check(ip("192.168.1.1"), t).unwrap_err();
        assert_eq!(e.scope, "console");
        // Shared buckets refill evenly: one console-wide attempt every 12 s at 5 a minute; the
        // per-address window stays shut for its whole minute.
        assert!(e.wait <= Duration::from_secs(12), "{e:?}");
        assert!(
            rl.check(ip("192.168.1.1"), t + Duration::from_secs(13))
                .is_ok()
        );
        let e = rl
            .check(ip("10.0.0.1"), t + Duration::from_secs(59))
            .unwrap_err();
        assert_eq!(e.scope, "address 10.0.0.1");
        assert!(
            rl.check(ip("10.0.0.1"), t + Duration::from_secs(61))
                .is_ok()
        );
    }

    #[test]
    fn hash_gate_queues_then_refuses() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let g = HashGate::new(1);
            let held = g.acquire(Duration::from_millis(10)).await.unwrap();
            let e = g.acquire(Duration::from_millis(50)).await.unwrap_err();
            assert_eq!(e.kind(), Kind::Unavailable);
            drop(held);
            assert!(g.acquire(Duration::from_millis(10)).await.is_ok());
        });
    }
}
