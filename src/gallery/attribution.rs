//! Who changes the gallery: each write appends its audit row (`crate::audit`) inside its own
//! transaction, so a change and its record commit together or not at all. The caller says who
//! it is with [`Gallery::by`] for the writes it makes; a write without one is recorded as
//! `system`/`unattributed` (tests, tools), never left out.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use rusqlite::Connection;

use super::Gallery;
use crate::audit::{self, Action, By, Entry, Subject};
use crate::error::Result;

/// The gallery, its writes recorded as made by one caller; see [`Gallery::by`].
pub struct Attributed<'a>(&'a mut Gallery);

impl Deref for Attributed<'_> {
    type Target = Gallery;
    fn deref(&self) -> &Gallery {
        self.0
    }
}

impl DerefMut for Attributed<'_> {
    fn deref_mut(&mut self) -> &mut Gallery {
        self.0
    }
}

impl Drop for Attributed<'_> {
    fn drop(&mut self) {
        self.0.author.by = None;
    }
}

impl Gallery {
    /// The gallery with its writes recorded as `by`'s until the returned guard goes:
    /// `gallery.by(&by).rename_person(id, "Bob")`.
    pub fn by(&mut self, by: &By) -> Attributed<'_> {
        self.author.by = Some(by.clone());
        Attributed(self)
    }

    /// The audit trail of this gallery's database, on its own connection: for what is
    /// recorded outside a gallery write (sign-ins, backups, MQTT thresholds, Frigate).
    pub fn audit(&self) -> Arc<audit::Log> {
        self.author.log.clone()
    }
}

/// Who the gallery's current writes are by, and the trail they are recorded in. A field of its
/// own, so a write can append while its transaction holds the connection.
#[derive(Debug)]
pub(super) struct Author {
    log: Arc<audit::Log>,
    by: Option<By>,
}

impl Author {
    pub(super) fn new(log: Arc<audit::Log>) -> Author {
        Author { log, by: None }
    }

    /// Appends the audit row of a gallery write on `tx`, inside that write's transaction; the
    /// caller logs the returned row after the commit.
    pub(super) fn note(
        &self,
        tx: &Connection,
        action: Action,
        subject: Subject,
        detail: impl Into<String>,
    ) -> Result<audit::Row> {
        let unattributed;
        let by = match &self.by {
            Some(b) => b,
            None => {
                unattributed = By::unattributed();
                &unattributed
            }
        };
        let detail = detail.into();
        let e = Entry {
            by,
            action,
            subject,
            detail,
        };
        self.log.trail().append(tx, &e)
    }

    /// [`Author::note`] for the erase of person `id`: their name leaves every row of the trail
    /// first (`audit::forget_subject`); the rows stay, naming the id.
    pub(super) fn erase(
        &self,
        tx: &Connection,
        id: i64,
        action: Action,
        detail: impl Into<String>,
    ) -> Result<audit::Row> {
        audit::forget_subject(tx, audit::SubjectKind::Person, &id.to_string())?;
        self.note(tx, action, Subject::person(id, None), detail)
    }
}

/// What a replicated record changed, for its audit row: "created, 3 samples added".
pub(super) fn replica_detail(what: Option<&str>, added: i64, removed: i64) -> String {
    let counts = [(added, "added"), (removed, "removed")];
    let counts = counts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, verb)| format!("{} {verb}", audit::count(*n, "sample")));
    what.map(String::from)
        .into_iter()
        .chain(counts)
        .collect::<Vec<_>>()
        .join(", ")
}
