//! The crate's one error type: a [`Kind`] that decides the HTTP status, the retry policy and the
//! process exit code, plus a message that names the input (file, device, config key) and the next
//! step. Library modules build these with the constructors below; the binary adds `anyhow`
//! context at the edge.

use std::fmt;

/// What sort of failure this is; callers branch on this, never on the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The input itself is wrong (corrupt image, bad config value, malformed payload). Not retried.
    InvalidInput,
    /// A named thing does not exist (person id, file, device).
    NotFound,
    /// Something we depend on is missing or down (runtime library, broker, camera). Retried.
    Unavailable,
    /// A size, count or space limit was hit (huge upload, full disk).
    ResourceExhausted,
    /// The caller is known but may not do this.
    PermissionDenied,
    /// The caller is not known (no or expired session).
    Unauthenticated,
    /// The request conflicts with current state (duplicate name, schema too new).
    Conflict,
    /// The installation is broken (model checksum mismatch, schema mismatch). Exit, do not retry.
    FailedPrecondition,
    /// A bug or an unexpected runtime failure.
    Internal,
}

impl Kind {
    /// Stable snake_case name used in JSON errors and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::InvalidInput => "invalid_input",
            Kind::NotFound => "not_found",
            Kind::Unavailable => "unavailable",
            Kind::ResourceExhausted => "resource_exhausted",
            Kind::PermissionDenied => "permission_denied",
            Kind::Unauthenticated => "unauthenticated",
            Kind::Conflict => "conflict",
            Kind::FailedPrecondition => "failed_precondition",
            Kind::Internal => "internal",
        }
    }

    /// HTTP status code for the web API.
    pub fn http_status(self) -> u16 {
        match self {
            Kind::InvalidInput => 400,
            Kind::Unauthenticated => 401,
            Kind::PermissionDenied => 403,
            Kind::NotFound => 404,
            Kind::Conflict => 409,
            Kind::ResourceExhausted => 413,
            Kind::FailedPrecondition | Kind::Internal => 500,
            Kind::Unavailable => 503,
        }
    }

    /// Whether an operation that failed this way is worth retrying with back-off.
    pub fn is_transient(self) -> bool {
        matches!(self, Kind::Unavailable)
    }
}

/// An error with a [`Kind`] and a message meant for the person who has to fix it.
#[derive(Debug)]
pub struct Error {
    kind: Kind,
    msg: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// Shorthand used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with `msg`.
    pub fn new(kind: Kind, msg: impl Into<String>) -> Self {
        Error {
            kind,
            msg: msg.into(),
            source: None,
        }
    }

    /// Attaches the underlying cause (kept for `{:#}`-style chains and logs).
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// What sort of failure this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The message without the cause chain.
    pub fn message(&self) -> &str {
        &self.msg
    }

    /// [`Kind::InvalidInput`] with `msg`.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::new(Kind::InvalidInput, msg)
    }

    /// [`Kind::NotFound`] with `msg`.
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, msg)
    }

    /// [`Kind::Unavailable`] with `msg`.
    pub fn unavailable(msg: impl Into<String>) -> Self {
        Self::new(Kind::Unavailable, msg)
    }

    /// [`Kind::FailedPrecondition`] with `msg`.
    pub fn precondition(msg: impl Into<String>) -> Self {
        Self::new(Kind::FailedPrecondition, msg)
    }

    /// [`Kind::Internal`] with `msg`.
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(Kind::Internal, msg)
    }

    /// [`Kind::ResourceExhausted`] with `msg`.
    pub fn exhausted(msg: impl Into<String>) -> Self {
        Self::new(Kind::ResourceExhausted, msg)
    }

    /// Names the database file in an error from opening or reading it, `what` being e.g.
    /// `"database /var/lib/faced/faced.db"`. A file SQLite cannot read (random bytes, a
    /// damaged page) becomes [`Kind::FailedPrecondition`] with the way out: retrying or
    /// restarting cannot fix it (the unit's `RestartPreventExitStatus` holds its exit code),
    /// a person must. Other errors are returned unchanged.
    pub fn in_database(self, what: &str) -> Self {
        let damaged = std::error::Error::source(&self)
            .and_then(|s| s.downcast_ref::<rusqlite::Error>())
            .and_then(rusqlite::Error::sqlite_error_code)
            .is_some_and(|c| {
                matches!(
                    c,
                    rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt
                )
            });
        if !damaged {
            return self;
        }
        Error {
            kind: Kind::FailedPrecondition,
            msg: format!(
                "{what} is damaged or not an SQLite database; restore it from a backup, or move \
                 it away (faced then starts with an empty gallery)"
            ),
            source: self.source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)?;
        if let Some(s) = &self.source {
            // Include the cause inline: most callers print only Display.
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        let kind = match &e {
            rusqlite::Error::QueryReturnedNoRows => Kind::NotFound,
            rusqlite::Error::SqliteFailure(f, _) => match f.code {
                rusqlite::ErrorCode::DiskFull => Kind::ResourceExhausted,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked => {
                    Kind::Unavailable
                }
                rusqlite::ErrorCode::ConstraintViolation => Kind::Conflict,
                // A file SQLite cannot read will not read better on a retry.
                rusqlite::ErrorCode::ReadOnly
                | rusqlite::ErrorCode::CannotOpen
                | rusqlite::ErrorCode::NotADatabase
                | rusqlite::ErrorCode::DatabaseCorrupt => Kind::FailedPrecondition,
                _ => Kind::Internal,
            },
            _ => Kind::Internal,
        };
        Error::new(kind, "database error").with_source(e)
    }
}
