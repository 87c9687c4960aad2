//! The keys and MACs that chain audit rows, and the check of a whole trail.
//!
//! # Keys
//! Three HMAC-SHA256 keys, HKDF-SHA256-derived from the 32-byte gallery key file (salt
//! "faced audit v1", one info label each): `chain` MACs rows, `name` tags subject names,
//! `seal` MACs the seal. Derived rather than a separate key file: the gallery key already has to
//! exist, be 0600 and be backed up (it travels inside every backup archive with its database),
//! so a second file would add a way to lose the trail and nothing an attacker lacks — whoever
//! reads one file beside the database reads the other. Derived with distinct labels, the keys
//! reveal nothing about the AES key that seals the faces, nor about each other.
//!
//! # A row's MAC
//! `mac(n) = HMAC(chain, "faced-audit-row-v1" || id || at || actor_kind || actor || origin ||
//! action || subject_kind || subject_id? || subject_tag? || detail || mac(n-1))`: integers
//! 8 bytes big-endian, text and blobs with a 4-byte length, optional values with a presence
//! byte. `mac(anchor)` is the seal's `anchor_mac` (32 zero bytes until retention first runs).
//! The name itself is not covered, its tag is (see `subject_tag` in schema.sql).

use ring::{hkdf, hmac};
use rusqlite::{Connection, OptionalExtension};

use crate::error::Result;

/// Bytes of a MAC or tag.
pub const MAC_LEN: usize = 32;

/// The derived keys (see the module docs).
pub(crate) struct Keys {
    chain: hmac::Key,
    name: hmac::Key,
    seal: hmac::Key,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("audit::Keys(..)") // never print key material
    }
}

impl Keys {
    /// The keys for the gallery key `gallery_key`.
    pub(crate) fn derive(gallery_key: &[u8]) -> Keys {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"faced audit v1").extract(gallery_key);
        let key = |info: &'static [u8]| -> hmac::Key {
            prk.expand(&[info], hmac::HMAC_SHA256)
                .expect("32 bytes is a valid HKDF-SHA256 length")
                .into()
        };
        Keys {
            chain: key(b"faced audit chain"),
            name: key(b"faced audit subject name"),
            seal: key(b"faced audit seal"),
        }
    }

    /// The tag of a subject name under `salt`.
    pub(crate) fn name_tag(&self, salt: &[u8], name: &str) -> [u8; MAC_LEN] {
        let mut ctx = hmac::Context::with_key(&self.name);
        ctx.update(salt);
        ctx.update(name.as_bytes());
        to_array(ctx.sign())
    }

    /// The MAC of the seal `s`.
    pub(crate) fn seal_mac(&self, s: &Seal) -> [u8; MAC_LEN] {
        let mut b = Vec::with_capacity(100);
        b.extend_from_slice(b"faced-audit-seal-v1");
        b.extend_from_slice(&s.anchor_id.to_be_bytes());
        b.extend_from_slice(&s.anchor_mac);
        b.extend_from_slice(&s.head_id.to_be_bytes());
        b.extend_from_slice(&s.head_mac);
        to_array(hmac::sign(&self.seal, &b))
    }

    /// The MAC of `r` chained to `prev`.
    pub(crate) fn row_mac(&self, r: &Chained<'_>, prev: &[u8]) -> [u8; MAC_LEN] {
        let mut b = Vec::with_capacity(256);
        b.extend_from_slice(b"faced-audit-row-v1");
        b.extend_from_slice(&r.id.to_be_bytes());
        b.extend_from_slice(&r.at.to_be_bytes());
        for s in [r.actor_kind, r.actor, r.origin, r.action, r.subject_kind] {
            bytes(&mut b, s.as_bytes());
        }
        opt(&mut b, r.subject_id.map(str::as_bytes));
        opt(&mut b, r.subject_tag);
        bytes(&mut b, r.detail.as_bytes());
        bytes(&mut b, prev);
        to_array(hmac::sign(&self.chain, &b))
    }
}

/// Equality of two MACs in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn to_array(t: hmac::Tag) -> [u8; MAC_LEN] {
    let mut a = [0u8; MAC_LEN];
    a.copy_from_slice(t.as_ref());
    a
}

fn bytes(b: &mut Vec<u8>, v: &[u8]) {
    b.extend_from_slice(&(v.len() as u32).to_be_bytes());
    b.extend_from_slice(v);
}

fn opt(b: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(v) => {
            b.push(1);
            bytes(b, v);
        }
        None => b.push(0),
    }
}

/// The columns a row's MAC covers.
pub(crate) struct Chained<'a> {
    pub id: i64,
    pub at: i64,
    pub actor_kind: &'a str,
    pub actor: &'a str,
    pub origin: &'a str,
    pub action: &'a str,
    pub subject_kind: &'a str,
    pub subject_id: Option<&'a str>,
    pub subject_tag: Option<&'a [u8]>,
    pub detail: &'a str,
}

/// The `audit_seal` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seal {
    pub anchor_id: i64,
    pub anchor_mac: Vec<u8>,
    pub head_id: i64,
    pub head_mac: Vec<u8>,
    pub mac: Vec<u8>,
}

impl Seal {
    /// Before the first row: nothing deleted, nothing written.
    pub(crate) fn empty() -> Seal {
        Seal {
            anchor_id: 0,
            anchor_mac: vec![0; MAC_LEN],
            head_id: 0,
            head_mac: vec![0; MAC_LEN],
            mac: Vec::new(),
        }
    }

    pub(crate) fn read(conn: &Connection) -> Result<Option<Seal>> {
        Ok(conn
            .query_row(
                "SELECT anchor_id, anchor_mac, head_id, head_mac, mac FROM audit_seal WHERE id = 1",
                [],
                |r| {
                    Ok(Seal {
                        anchor_id: r.get(0)?,
                        anchor_mac: r.get(1)?,
                        head_id: r.get(2)?,
                        head_mac: r.get(3)?,
                        mac: r.get(4)?,
                    })
                },
            )
            .optional()?)
    }

    /// Writes this seal (its `mac` computed here) on `conn`, inside the caller's transaction.
    pub(crate) fn write(&mut self, conn: &Connection, keys: &Keys) -> Result<()> {
        self.mac = keys.seal_mac(self).to_vec();
        conn.execute(
            "INSERT INTO audit_seal (id, anchor_id, anchor_mac, head_id, head_mac, mac)
             VALUES (1, ?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (id) DO UPDATE SET anchor_id = excluded.anchor_id,
               anchor_mac = excluded.anchor_mac, head_id = excluded.head_id,
               head_mac = excluded.head_mac, mac = excluded.mac",
            rusqlite::params![
                self.anchor_id,
                self.anchor_mac,
                self.head_id,
                self.head_mac,
                self.mac
            ],
        )?;
        Ok(())
    }

    pub(crate) fn is_valid(&self, keys: &Keys) -> bool {
        self.anchor_mac.len() == MAC_LEN
            && self.head_mac.len() == MAC_LEN
            && same(&keys.seal_mac(self), &self.mac)
    }
}

/// A trail that checks out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Rows checked.
    pub rows: u64,
    /// The last row retention deleted (0: none).
    pub anchor: i64,
    /// The newest row.
    pub head: i64,
    /// Rows whose subject name was cleared by an erase.
    pub forgotten: u64,
    /// `audit_damaged` rows: an append found the trail's end altered before it (those rows are
    /// part of the chain, so the chain checks out, but the trail was tampered with).
    pub damaged: Vec<i64>,
}

/// The first place a trail does not check out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tampered {
    /// The first bad row (for a seal problem, the first row the seal vouches for).
    pub row: i64,
    /// What is wrong with it.
    pub reason: String,
}

impl std::fmt::Display for Tampered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "audit row {}: {}", self.row, self.reason)
    }
}

/// A trail without its seal: never written if it has no rows either, tampered with if it has.
fn without_seal(first: Option<i64>) -> Result<Verified, Tampered> {
    match first {
        None => Ok(Verified {
            rows: 0,
            anchor: 0,
            head: 0,
            forgotten: 0,
            damaged: Vec::new(),
        }),
        Some(f) => Err(Tampered {
            row: f,
            reason: "the audit seal is missing (rows exist, but not the record of where the \
                     chain starts and ends)"
                .into(),
        }),
    }
}

/// Checks every row of the trail on `conn` against its MAC, its neighbours and the seal, in
/// one read transaction. `Ok(Err(_))` names the first bad row; `Err` is a database error.
pub(crate) fn verify(conn: &Connection, keys: &Keys) -> Result<Result<Verified, Tampered>> {
    let tx = conn.unchecked_transaction()?;
    let seal = Seal::read(&tx)?;
    let first: Option<i64> = tx.query_row("SELECT MIN(id) FROM audit", [], |r| r.get(0))?;
    let Some(seal) = seal else {
        return Ok(without_seal(first));
    };
    if !seal.is_valid(keys) {
        return Ok(Err(Tampered {
            row: seal.anchor_id + 1,
            reason: "the audit seal (where the chain starts and ends) was altered, or the key \
                     file is not this database's"
                .into(),
        }));
    }
    let mut st = tx.prepare(
        "SELECT id, at, actor_kind, actor, origin, action, subject_kind, subject_id, subject_name,
                subject_salt, subject_tag, detail, mac
         FROM audit ORDER BY id",
    )?;
    let mut rows = st.query([])?;
    let (mut prev_id, mut prev_mac) = (seal.anchor_id, seal.anchor_mac.clone());
    let mut v = Verified {
        rows: 0,
        anchor: seal.anchor_id,
        head: seal.head_id,
        forgotten: 0,
        damaged: Vec::new(),
    };
    let bad = |row: i64, reason: String| -> Result<Result<Verified, Tampered>> {
        Ok(Err(Tampered { row, reason }))
    };
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        if id <= seal.anchor_id {
            return bad(
                id,
                format!(
                    "is older than the anchor (retention deleted every row through {}): it was \
                     inserted afterwards",
                    seal.anchor_id
                ),
            );
        }
        if id != prev_id + 1 {
            return bad(
                prev_id + 1,
                format!("rows {}..={} are missing (deleted)", prev_id + 1, id - 1),
            );
        }
        let (kind, actor, origin, action, subject_kind): (String, String, String, String, String) =
            (r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?);
        let subject_id: Option<String> = r.get(7)?;
        let name: Option<String> = r.get(8)?;
        let salt: Option<Vec<u8>> = r.get(9)?;
        let tag: Option<Vec<u8>> = r.get(10)?;
        let detail: String = r.get(11)?;
        let mac: Vec<u8> = r.get(12)?;
        let c = Chained {
            id,
            at: r.get(1)?,
            actor_kind: &kind,
            actor: &actor,
            origin: &origin,
            action: &action,
            subject_kind: &subject_kind,
            subject_id: subject_id.as_deref(),
            subject_tag: tag.as_deref(),
            detail: &detail,
        };
        if !same(&keys.row_mac(&c, &prev_mac), &mac) {
            return bad(
                id,
                "was altered, or rows were reordered around it (its MAC does not match)".into(),
            );
        }
        match (&name, &salt, &tag) {
            (None, None, _) => v.forgotten += u64::from(tag.is_some()),
            (Some(n), Some(s), Some(t)) if same(&keys.name_tag(s, n), t) => {}
            _ => return bad(id, "its subject name was altered".into()),
        }
        if action == super::Action::AuditDamaged.as_str() {
            v.damaged.push(id);
        }
        v.rows += 1;
        prev_id = id;
        prev_mac = mac;
    }
    if prev_id < seal.head_id {
        return bad(
            prev_id + 1,
            format!(
                "rows {}..={} are missing (deleted from the end)",
                prev_id + 1,
                seal.head_id
            ),
        );
    }
    if prev_id > seal.head_id || prev_mac != seal.head_mac {
        return bad(
            seal.head_id.max(1),
            "does not match the seal's newest row (rows were added or replaced without it)".into(),
        );
    }
    Ok(Ok(v))
}
