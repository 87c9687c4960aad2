//! The audit trail's vocabulary: who ([`By`]), what ([`Action`]), to whom ([`Subject`]), a row
//! as read back ([`Row`]) and the `[audit]` settings ([`AuditConfig`]).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Longest `actor`, characters (longer names are cut).
pub const MAX_ACTOR_CHARS: usize = 200;
/// Longest `detail`, characters (longer details are cut).
pub const MAX_DETAIL_CHARS: usize = 500;

/// `1 sample`, `2 samples`: counts in `detail`.
pub fn count(n: i64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// What sort of caller made a change (`audit.actor_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A console user signed in with a password.
    User,
    /// A script with an API token.
    Token,
    /// A `faced` command run by a Unix user.
    Cli,
    /// A signed MQTT command.
    Mqtt,
    /// A record replicated from another unit of the fleet.
    Fleet,
    /// Frigate companion mode (faced acting on a Frigate event).
    Frigate,
    /// The daemon itself, and writes whose caller did not say who it was.
    System,
}

impl ActorKind {
    /// The stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::User => "user",
            ActorKind::Token => "token",
            ActorKind::Cli => "cli",
            ActorKind::Mqtt => "mqtt",
            ActorKind::Fleet => "fleet",
            ActorKind::Frigate => "frigate",
            ActorKind::System => "system",
        }
    }
}

/// Who does something and from where: built once per request, command or process and handed
/// to whatever writes the row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct By {
    /// What sort of caller.
    pub kind: ActorKind,
    /// Who, by name (1..=[`MAX_ACTOR_CHARS`] characters).
    pub actor: String,
    /// From where: a client address, `cli`, `mqtt`, `fleet`, `frigate`, `faced`.
    pub origin: String,
}

/// Control, format (bidi overrides, zero-width) and line-separator characters: as the gallery
/// refuses them in names, so that a row cannot hide or reorder the text around it.
fn invisible(c: char) -> bool {
    use unicode_properties::{GeneralCategory as G, UnicodeGeneralCategory};
    matches!(
        c.general_category(),
        G::Control | G::Format | G::LineSeparator | G::ParagraphSeparator
    )
}

/// `s` without control or invisible characters, cut to `max` characters, never empty.
fn clean(s: &str, max: usize) -> String {
    let c: String = s.chars().filter(|&c| !invisible(c)).take(max).collect();
    let c = c.trim().to_string();
    if c.is_empty() { "?".into() } else { c }
}

impl By {
    fn new(kind: ActorKind, actor: &str, origin: &str) -> By {
        By {
            kind,
            actor: clean(actor, MAX_ACTOR_CHARS),
            origin: clean(origin, 100),
        }
    }

    /// A console user signed in with a password, calling from `ip`. Also a sign-in attempt
    /// under the name `user` (whoever typed it).
    pub fn user(user: &str, ip: IpAddr) -> By {
        By::new(ActorKind::User, user, &ip.to_canonical().to_string())
    }

    /// A script with the API token `token_id` labelled `label`, of the console user `user`.
    pub fn token(label: &str, token_id: i64, user: &str, ip: IpAddr) -> By {
        By::new(
            ActorKind::Token,
            &format!("{label} (token {token_id} of {user})"),
            &ip.to_canonical().to_string(),
        )
    }

    /// This process, a `faced` command, run by the real user (uid) running it: the name from
    /// the password database, else `$USER`, and the uid.
    pub fn cli() -> By {
        By::new(ActorKind::Cli, &unix_user(), "cli")
    }

    /// A signed MQTT command, signed with the command key `key_id`.
    pub fn mqtt(key_id: &str) -> By {
        By::new(ActorKind::Mqtt, &format!("command key {key_id}"), "mqtt")
    }

    /// A record of the fleet of site `site`, enrolled on unit `origin`. The record does not say
    /// which unit sent it (units publish the merged state, not their own edits), so the row
    /// names the site and where the person was enrolled.
    pub fn fleet(site: &str, origin: &str) -> By {
        let origin = if origin.is_empty() { "?" } else { origin };
        By::new(
            ActorKind::Fleet,
            &format!("site {site}"),
            &format!("fleet, enrolled on {origin}"),
        )
    }

    /// Frigate companion mode, acting on Frigate's event `event`.
    pub fn frigate(event: &str) -> By {
        By::new(
            ActorKind::Frigate,
            &format!("frigate event {event}"),
            "frigate",
        )
    }

    /// The daemon, doing `what` (e.g. "faced run").
    pub fn system(what: &str) -> By {
        By::new(ActorKind::System, what, "faced")
    }

    /// A write whose caller did not say who it was (a test, a tool): recorded all the same.
    pub fn unattributed() -> By {
        By::system("unattributed")
    }
}

/// The real user running this process: `name (uid N)`.
fn unix_user() -> String {
    // SAFETY: getuid cannot fail. getpwuid_r writes into `pw` and `buf`, both ours and sized;
    // the name it points at lives in `buf` and is copied out before `buf` goes.
    let uid = unsafe { libc::getuid() };
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    let name = if rc == 0 && !out.is_null() && !pw.pw_name.is_null() {
        Some(
            unsafe { std::ffi::CStr::from_ptr(pw.pw_name) }
                .to_string_lossy()
                .into_owned(),
        )
    } else {
        // No entry (a container's bare uid): the login name the environment claims.
        std::env::var("USER").ok().filter(|u| !u.is_empty())
    };
    match name {
        Some(n) => format!("{n} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

/// What was done (`audit.action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A person enrolled (created, with their first samples).
    Enroll,
    /// Samples added to a person.
    SamplesAdded,
    /// One sample removed.
    SampleRemoved,
    /// A person renamed.
    Rename,
    /// A person erased with every sample and event.
    Erase,
    /// "This is not NAME": a negative sample stored.
    NotThisPerson,
    /// A camera's recognition threshold changed.
    Threshold,
    /// A console user added.
    UserAdded,
    /// A console user removed.
    UserRemoved,
    /// A console user's password set.
    PasswordChanged,
    /// An API token created.
    TokenCreated,
    /// An API token revoked.
    TokenRevoked,
    /// A console sign-in.
    SignIn,
    /// A console sign-in refused (wrong name or password).
    SignInFailed,
    /// A backup downloaded from the console.
    BackupDownload,
    /// A backup written by `faced backup`.
    BackupWritten,
    /// A backup verified and staged for restore (applies at the next start).
    RestoreStaged,
    /// A staged backup replaced the database.
    RestoreApplied,
    /// A fleet site key created.
    FleetInit,
    /// A fleet site key installed (joined a site).
    FleetJoin,
    /// The fleet site key replaced by a new one.
    FleetRotate,
    /// A one-time code for a new unit handed out.
    FleetInvite,
    /// The site key printed as a code.
    FleetCode,
    /// A person's record from another unit applied.
    ReplicaApplied,
    /// A visitor enrolled as a person.
    VisitorEnroll,
    /// A visitor marked ignored.
    VisitorIgnore,
    /// A visitor no longer ignored.
    VisitorUnignore,
    /// A visitor erased with their faces and events.
    VisitorErase,
    /// A name written to Frigate as an event's sub label.
    SubLabel,
    /// The audit trail exported.
    AuditExport,
    /// An append found the trail's end damaged (the seal did not match its last row).
    AuditDamaged,
}

impl Action {
    /// The stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Enroll => "enroll",
            Action::SamplesAdded => "samples_added",
            Action::SampleRemoved => "sample_removed",
            Action::Rename => "rename",
            Action::Erase => "erase",
            Action::NotThisPerson => "not_this_person",
            Action::Threshold => "threshold",
            Action::UserAdded => "user_added",
            Action::UserRemoved => "user_removed",
            Action::PasswordChanged => "password_changed",
            Action::TokenCreated => "token_created",
            Action::TokenRevoked => "token_revoked",
            Action::SignIn => "sign_in",
            Action::SignInFailed => "sign_in_failed",
            Action::BackupDownload => "backup_download",
            Action::BackupWritten => "backup_written",
            Action::RestoreStaged => "restore_staged",
            Action::RestoreApplied => "restore_applied",
            Action::FleetInit => "fleet_init",
            Action::FleetJoin => "fleet_join",
            Action::FleetRotate => "fleet_rotate",
            Action::FleetInvite => "fleet_invite",
            Action::FleetCode => "fleet_code",
            Action::ReplicaApplied => "replica_applied",
            Action::VisitorEnroll => "visitor_enroll",
            Action::VisitorIgnore => "visitor_ignore",
            Action::VisitorUnignore => "visitor_unignore",
            Action::VisitorErase => "visitor_erase",
            Action::SubLabel => "sub_label",
            Action::AuditExport => "audit_export",
            Action::AuditDamaged => "audit_damaged",
        }
    }
}

/// What sort of thing a row is about (`audit.subject_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    /// Nothing in particular (a backup of everything is `Database`).
    None,
    /// An enrolled person (id: `person.id`).
    Person,
    /// An unknown visitor (id: `visitor.id`).
    Visitor,
    /// A console user (id: `web_user.id`).
    User,
    /// An API token (id: `web_api_token.id`).
    Token,
    /// A camera (id: its name).
    Camera,
    /// The whole database.
    Database,
    /// The fleet (id: the site).
    Fleet,
}

impl SubjectKind {
    /// The stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::None => "none",
            SubjectKind::Person => "person",
            SubjectKind::Visitor => "visitor",
            SubjectKind::User => "user",
            SubjectKind::Token => "token",
            SubjectKind::Camera => "camera",
            SubjectKind::Database => "database",
            SubjectKind::Fleet => "fleet",
        }
    }
}

/// To whom or what: a kind, an id and, for people and users, their name at the time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// What sort of thing.
    pub kind: SubjectKind,
    /// Its id (as text: people's ids, camera names, site ids).
    pub id: Option<String>,
    /// Its name, kept until the subject is erased ([`super::forget_subject`]).
    pub name: Option<String>,
}

impl Subject {
    fn of(kind: SubjectKind, id: impl ToString, name: Option<&str>) -> Subject {
        Subject {
            kind,
            id: Some(clean(&id.to_string(), 100)),
            name: name.map(|n| clean(n, 200)),
        }
    }

    /// No subject.
    pub fn none() -> Subject {
        Subject {
            kind: SubjectKind::None,
            id: None,
            name: None,
        }
    }

    /// The whole database.
    pub fn database() -> Subject {
        Subject {
            kind: SubjectKind::Database,
            ..Subject::none()
        }
    }

    /// Person `id`, named `name` (none once erased).
    pub fn person(id: i64, name: Option<&str>) -> Subject {
        Subject::of(SubjectKind::Person, id, name)
    }

    /// Visitor `id` (visitors have no name).
    pub fn visitor(id: i64) -> Subject {
        Subject::of(SubjectKind::Visitor, id, None)
    }

    /// Console user `id` (none when the name matches no user) named `name`.
    pub fn user(id: Option<i64>, name: &str) -> Subject {
        Subject {
            kind: SubjectKind::User,
            id: id.map(|i| i.to_string()),
            name: Some(clean(name, 200)),
        }
    }

    /// API token `id` labelled `label`.
    pub fn token(id: i64, label: &str) -> Subject {
        Subject::of(SubjectKind::Token, id, Some(label))
    }

    /// The camera named `name`.
    pub fn camera(name: &str) -> Subject {
        Subject::of(SubjectKind::Camera, name, None)
    }

    /// The fleet site `site`.
    pub fn fleet(site: &str) -> Subject {
        Subject::of(SubjectKind::Fleet, site, None)
    }
}

/// One row to append.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    /// Who and from where.
    pub by: &'a By,
    /// What.
    pub action: Action,
    /// To whom.
    pub subject: Subject,
    /// Facts without names (cut to [`MAX_DETAIL_CHARS`]).
    pub detail: String,
}

/// A stored row, as the console and the CLI list it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Position in the chain.
    pub id: i64,
    /// When, Unix ms.
    pub at_ms: i64,
    /// When, RFC 3339 UTC.
    pub at: String,
    /// `user`, `token`, `cli`, `mqtt`, `fleet`, `frigate` or `system`.
    pub actor_kind: String,
    /// Who, by name.
    pub actor: String,
    /// From where.
    pub origin: String,
    /// What ([`Action::as_str`]).
    pub action: String,
    /// To what sort of thing ([`SubjectKind::as_str`]).
    pub subject_kind: String,
    /// Its id.
    pub subject_id: Option<String>,
    /// Its name at the time; `None` when it had none or was erased since.
    pub subject_name: Option<String>,
    /// Facts without names.
    pub detail: String,
}

impl Row {
    /// Sends the row to the log (journald under systemd) at INFO, with its parts as fields
    /// (`journalctl -u faced F_AUDIT_ACTION=erase`). Without the subject's name: the journal
    /// cannot be edited when that subject is erased.
    pub fn log(&self) {
        let subject = match &self.subject_id {
            Some(id) => format!("{} {id}", self.subject_kind),
            None => self.subject_kind.clone(),
        };
        tracing::info!(
            audit_id = self.id,
            audit_actor_kind = self.actor_kind.as_str(),
            audit_actor = self.actor.as_str(),
            audit_origin = self.origin.as_str(),
            audit_action = self.action.as_str(),
            audit_subject = subject.as_str(),
            "audit {}: {} {} from {}: {} {subject}{}{}",
            self.id,
            self.actor_kind,
            self.actor,
            self.origin,
            self.action,
            if self.detail.is_empty() { "" } else { ": " },
            self.detail
        );
    }
}

/// `[audit]`: how long the trail is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Rows older than this many days are deleted (oldest first). Default 365; 1..=3650.
    pub retention_days: u32,
    /// At most this many rows are kept (the oldest go first): a bound on the disk a flood of
    /// failed sign-ins can take. Default 500 000; 1000..=100 000 000.
    pub max_rows: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            retention_days: 365,
            max_rows: 500_000,
        }
    }
}

impl AuditConfig {
    /// Checks the values; messages name the `audit.*` key.
    pub fn validate(&self) -> Result<()> {
        if !(1..=3650).contains(&self.retention_days) {
            return Err(Error::invalid(format!(
                "audit.retention_days must be 1..=3650 (ten years), got {}",
                self.retention_days
            )));
        }
        if !(1000..=100_000_000).contains(&self.max_rows) {
            return Err(Error::invalid(format!(
                "audit.max_rows must be 1000..=100000000, got {}",
                self.max_rows
            )));
        }
        Ok(())
    }
}
