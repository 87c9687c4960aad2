//! Database backup (admin): `GET /api/backup`.

use std::io::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::{blocking, gallery};
use crate::error::{Error, Result};
use crate::web::AppState;
use crate::web::auth;
use crate::web::error::ApiResult;

/// `GET /api/backup`: a zip of a consistent database copy (`VACUUM INTO`) and its key file.
/// Whoever holds it can read every face crop: store it like a password.
pub async fn backup(State(s): State<AppState>) -> ApiResult<Response> {
    let st = s.clone();
    let (zip_bytes, name) = blocking(move || {
        let key_path = gallery(&st).key_path().to_owned();
        let dir = tempfile_dir()?;
        let copy = dir.join("faced.db");
        st.auth.snapshot_to(&copy)?;
        let db = std::fs::read(&copy)
            .map_err(|e| Error::internal("cannot read the backup copy").with_source(e))?;
        let _ = std::fs::remove_dir_all(&dir);
        let key = std::fs::read(&key_path).map_err(|e| {
            Error::unavailable(format!("cannot read key file {}", key_path.display()))
                .with_source(e)
        })?;
        let mut zw = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        let io = |e: zip::result::ZipError| {
            Error::internal("cannot write the backup zip").with_source(e)
        };
        zw.start_file("faced.db", opts).map_err(io)?;
        zw.write_all(&db)
            .map_err(|e| Error::internal("cannot write the backup zip").with_source(e))?;
        zw.start_file("faced.db.key", opts).map_err(io)?;
        zw.write_all(&key)
            .map_err(|e| Error::internal("cannot write the backup zip").with_source(e))?;
        let out = zw.finish().map_err(io)?.into_inner();
        let day = crate::events::rfc3339_utc(st.auth.now_ms())
            .chars()
            .take(10)
            .collect::<String>();
        Ok((out, format!("faced-backup-{day}.zip")))
    })
    .await?;
    tracing::info!("database backup downloaded from the console");
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        zip_bytes,
    )
        .into_response())
}

/// A fresh private directory for the database copy (random name: never an existing one).
fn tempfile_dir() -> Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("faced-backup-{}", auth::new_secret()?));
    std::fs::create_dir(&d)
        .map_err(|e| Error::unavailable(format!("cannot create {}", d.display())).with_source(e))?;
    Ok(d)
}
