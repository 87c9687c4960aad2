//! The audit trail: who changed what, to whom, when and from where, for every change to the
//! gallery, accounts, visitors and the fleet, and every sensitive read (a backup, a sign-in).
//!
//! * **Chain.** Row `n`'s `mac` is HMAC-SHA256 over its columns and row `n-1`'s mac, under a key
//!   HKDF-derived from the gallery key file ([`chain`]): one secret to back up, and the trail is
//!   bound to the file whose faces it speaks of. `faced audit verify` names the first edited,
//!   deleted or reordered row. Whoever holds the key file can rewrite the chain: journald's copy
//!   of each row ([`Row::log`]) is the record that stays out of their reach.
//! * **Erase.** A row names its subject by kind and id, and by name only in `subject_name`: the
//!   chain covers a salted, keyed tag of the name, so [`forget_subject`] (called by every erase)
//!   clears name and salt and the chain still verifies. No face byte is ever stored here, and
//!   journald gets the subject's id, never the name.
//! * **Writes.** Gallery changes append their row in their own transaction ([`Trail::append`]);
//!   the rest (accounts, visitors, backups, the fleet CLI) append right after their change
//!   commits ([`Log::record`]): a crash between the two commits loses that row, never the
//!   reverse. Retention ([`AuditConfig`]) deletes the oldest rows and moves the anchor.
//! * **Layers.** Uses only `db`, `base`, `error`: the modules above call it, never the reverse.

pub mod chain;
pub mod csv;
mod store;
#[cfg(test)]
mod tests;
mod types;

pub use chain::{Tampered, Verified};
pub use store::{Filter, Log, Trail, forget_subject};
pub use types::{Action, ActorKind, AuditConfig, By, Entry, Row, Subject, SubjectKind, count};
