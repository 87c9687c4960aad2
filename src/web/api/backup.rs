//! Backup and restore (admin): `POST /api/backup`, `POST /api/restore`. The archive format and
//! the restore's two steps are `db::backup`'s; here they are reached from the console.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use std::net::SocketAddr;
use std::time::Instant;

use axum::Extension;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Multipart, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{blocking, gallery};
use crate::audit::{Action, By, Subject};
use crate::db::backup::{self, Passphrase};
use crate::error::{Error, Kind, Result};
use crate::json;
use crate::web::AppState;
use crate::web::auth;
use crate::web::error::{ApiError, ApiResult, JsonBody};

/// Longest passphrase field accepted by `POST /api/restore`, bytes.
const MAX_PASSPHRASE_BYTES: usize = 4096;

/// A file beside the database with a random name, deleted on drop: the archive being built or
/// uploaded. Beside the database rather than in /tmp: same disk as the data it copies, and
/// inside the service's writable state directory.
struct Scratch(PathBuf);

impl Scratch {
    fn beside(db: &Path, what: &str) -> Result<Scratch> {
        let dir = db.parent().unwrap_or(Path::new(""));
        Ok(Scratch(
            dir.join(format!(".faced-{what}-{}", auth::new_secret()?)),
        ))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `POST /api/backup` (`{"passphrase": …}`): an encrypted archive (`faced backup` format) of a
/// consistent copy of the database and its key file. Restorable with `faced restore` or
/// `POST /api/restore` and the same passphrase.
pub async fn backup(
    State(s): State<AppState>,
    Extension(by): Extension<By>,
    JsonBody(body): JsonBody<json::BackupRequest>,
) -> ApiResult<Response> {
    let pass = Passphrase::new(body.passphrase, "passphrase")?;
    let st = s.clone();
    let (bytes, name) = blocking(move || {
        let (db, key) = {
            let g = gallery(&st);
            (g.db_path().to_owned(), g.key_path().to_owned())
        };
        let out = Scratch::beside(&db, "download")?;
        let clocks = st.auth.clocks();
        backup::write(&db, &key, &out.0, &pass, &*clocks)?;
        let bytes = std::fs::read(&out.0)
            .map_err(|e| Error::internal("cannot read the backup archive").with_source(e))?;
        let detail = format!("{} bytes, encrypted", bytes.len());
        st.audit
            .note(&by, Action::BackupDownload, Subject::database(), detail);
        Ok((bytes, backup::scheduled_name("console", clocks.unix_ms())))
    })
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// `POST /api/restore` (multipart: `passphrase`, then `archive`): streams the archive to a file
/// beside the database (at most `web.max_restore_bytes`), verifies it completely and stages it,
/// then restarts the daemon, which applies it before opening the database. A wrong passphrase
/// or a damaged, truncated or newer archive is refused (400/409) and changes nothing.
///
/// Each attempt runs the archive's key stretching (a guess at the passphrase costs what a
/// sign-in's password check costs), so attempts count against the sign-in limits
/// (`web.login_attempts_per_minute*`), before the upload is read.
pub async fn restore(
    State(s): State<AppState>,
    Extension(by): Extension<By>,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
    mp: std::result::Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<axum::Json<json::Restored>> {
    s.limiter
        .check(super::session::client_ip(ci), Instant::now())
        .map_err(|r| {
            ApiError::with_status(
                StatusCode::TOO_MANY_REQUESTS,
                Kind::ResourceExhausted,
                format!(
                    "too many restore attempts and sign-ins from {} \
                     (web.login_attempts_per_minute*); try again in {} s",
                    r.scope,
                    r.wait.as_secs_f64().ceil().max(1.0)
                ),
            )
        })?;
    let mut mp = mp?;
    let db = gallery(&s).db_path().to_owned();
    let upload = Scratch::beside(&db, "restore-upload")?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&upload.0)
        .map_err(|e| Error::unavailable("cannot store the uploaded archive").with_source(e))?;
    let mut pass = None;
    let mut archive = false;
    while let Some(mut field) = mp.next_field().await? {
        match field.name() {
            Some("passphrase") => {
                // Bounded: the route's body limit is sized for archives, not for a passphrase.
                let mut text = Vec::new();
                while let Some(chunk) = field.chunk().await? {
                    text.extend_from_slice(&chunk);
                    if text.len() > MAX_PASSPHRASE_BYTES {
                        return Err(Error::invalid(format!(
                            "the passphrase is longer than {MAX_PASSPHRASE_BYTES} bytes"
                        ))
                        .into());
                    }
                }
                let text = String::from_utf8(text)
                    .map_err(|_| Error::invalid("the passphrase is not UTF-8"))?;
                pass = Some(Passphrase::new(
                    text.trim_end_matches(['\r', '\n']),
                    "passphrase",
                )?);
            }
            Some("archive") => {
                archive = true;
                while let Some(chunk) = field.chunk().await? {
                    // Small writes to a local file; the body limit bounds the total.
                    file.write_all(&chunk).map_err(|e| {
                        Error::unavailable("cannot store the uploaded archive").with_source(e)
                    })?;
                }
            }
            other => {
                return Err(Error::invalid(format!(
                    "unexpected form field {:?}; send `passphrase` and `archive`",
                    other.unwrap_or("")
                ))
                .into());
            }
        }
    }
    drop(file);
    let pass = pass.ok_or_else(|| Error::invalid("the form has no `passphrase` field"))?;
    if !archive {
        return Err(Error::invalid("the form has no `archive` file").into());
    }
    let st = s.clone();
    let staged = blocking(move || {
        let f = std::fs::File::open(&upload.0)
            .map_err(|e| Error::unavailable("cannot read the uploaded archive").with_source(e))?;
        let r = backup::stage(std::io::BufReader::new(f), &pass, &db);
        drop(upload);
        // In the database being replaced (kept as <db>.before-restore); the restored one
        // records the swap when the daemon applies it.
        if let Ok(staged) = &r {
            st.audit.note(
                &by,
                Action::RestoreStaged,
                Subject::database(),
                staged_detail(staged),
            );
        }
        r
    })
    .await?;
    let restarting = s.deps.restart.clone();
    tracing::warn!(
        people = staged.people,
        samples = staged.samples,
        events = staged.events,
        made = staged.header.created_at,
        "a restore was uploaded to the console and verified; it is staged"
    );
    if let Some(restart) = &restarting {
        // After the response has gone out: the restart closes the console.
        let restart = restart.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            restart();
        });
    }
    Ok(axum::Json(json::Restored {
        created_at: staged.header.created_at,
        faced_version: staged.header.faced_version,
        people: staged.people,
        samples: staged.samples,
        events: staged.events,
        restarting: restarting.is_some(),
    }))
}

/// What a staged restore brings, for the audit trail (counts only: no names).
pub(crate) fn staged_detail(s: &backup::Staged) -> String {
    format!(
        "backup made {} by faced {}: {} people, {} samples, {} events; applies at the next start",
        s.header.created_at, s.header.faced_version, s.people, s.samples, s.events
    )
}
