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
        self.0.by = None;
    }
}

impl Gallery {
    /// The gallery with its writes recorded as `by`'s until the returned guard goes:
    /// `gallery.by(&by).rename_person(id, "Bob")`.
    pub fn by(&mut self, by: &By) -> Attributed<'_> {
        self.by = Some(by.clone());
        Attributed(self)
    }

    /// The audit trail of this gallery's database, on its own connection: for what is
    /// recorded outside a gallery write (sign-ins, backups, MQTT thresholds, Frigate).
    pub fn audit(&self) -> Arc<audit::Log> {
        self.audit.clone()
    }
}

/// Appends the audit row of a gallery write on `tx`, inside that write's transaction; the
/// caller logs the returned row after the commit.
pub(super) fn note(
    tx: &Connection,
    log: &audit::Log,
    by: Option<&By>,
    action: Action,
    subject: Subject,
    detail: String,
) -> Result<audit::Row> {
    let unattributed;
    let by = match by {
        Some(b) => b,
        None => {
            unattributed = By::unattributed();
            &unattributed
        }
    };
    log.trail().append(
        tx,
        &Entry {
            by,
            action,
            subject,
            detail,
        },
    )
}
