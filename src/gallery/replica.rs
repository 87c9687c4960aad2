//! A person's replicated state: the unit of the fleet's gallery replication (`crate::fleet`
//! carries it between units, sealed, as one retained MQTT message per person).
//!
//! # The record and its merge
//!
//! A [`Record`] is everything the units of a site agree on about one person, named by the
//! person's random `uid` (`person.uid`): their name with its version, where they were enrolled,
//! their face samples (positive and negative, each named by its own uid and never changed once
//! stored) and the uids of removed samples; or, once the person is erased, only the erase's
//! version. [`merge`] is a join (commutative, associative, idempotent), so units that exchange
//! records in any order, any number of times, across partitions and restarts, end with the same
//! record:
//!
//! * erase wins: an erased record stays erased, whatever it is merged with (a sample added
//!   concurrently on another unit is dropped with the rest);
//! * the name is last-writer-wins on `(name_v, name)`: `name_v` is a hybrid logical clock value
//!   (wall milliseconds << 10 plus a counter, never going back on a unit, raised past every
//!   version the unit has seen), and equal versions are broken by the larger name, so two
//!   concurrent renames end the same on every unit;
//! * samples are a set with tombstones: the union of both sides' samples, minus every sample
//!   either side removed.
//!
//! # Applying a record
//!
//! [`Gallery::apply_replica`] makes the local database hold the record (in one transaction,
//! then updates the index): it creates, renames or erases the person and adds or removes
//! samples. Names are unique on a unit; when two units enrolled different people under one name
//! while apart, the one applied second is stored as `NAME (abcd)` (the first hex digits of its
//! uid), which then replicates as its name (the larger name wins equal versions), so every unit
//! ends with the same two names.
//!
//! Local changes ([`Gallery::add_person`] etc.) bump versions and leave tombstones; the fleet
//! learns which people changed from [`Gallery::take_dirty`].

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{
    AAD_CROP, AAD_EMBEDDING, Gallery, MAX_CROP_BYTES, MAX_SOURCE_CHARS, PersonId, SampleId,
    SampleKind, validate_embedding, validate_person_name,
};
use crate::audit::{self, Action};
use crate::db::crypto;
use crate::error::{Error, Result};

/// A person's or sample's random 16-byte id, the same on every unit.
pub type Uid = [u8; 16];

/// Most samples (kept and removed) one record may carry: bounds a message's size (a sample is
/// about 7 KB encoded).
pub const MAX_RECORD_SAMPLES: usize = 200;

/// One person's replicated state. Serialized as JSON (binary fields in base64); the field order
/// and the sorted sample lists make the serialization canonical, so equal records are equal
/// bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The person's uid (hex).
    #[serde(with = "hex_uid")]
    pub uid: Uid,
    /// Version of the erase; `Some` means the person is erased and nothing else is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erased: Option<i64>,
    /// Display name ('' when erased).
    #[serde(default)]
    pub name: String,
    /// Version of `name`.
    #[serde(default)]
    pub name_v: i64,
    /// Device id of the unit where the person was enrolled.
    #[serde(default)]
    pub origin: String,
    /// Stored samples, sorted by uid.
    #[serde(default)]
    pub samples: Vec<ReplicaSample>,
    /// Removed samples, sorted by uid.
    #[serde(default)]
    pub removed: Vec<Removed>,
}

/// A face sample as replicated: immutable once stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaSample {
    /// The sample's uid (`face_sample.uid`, hex).
    #[serde(with = "hex_uid")]
    pub uid: Uid,
    /// Positive or negative.
    pub kind: SampleKind,
    /// Little-endian f32 embedding, base64.
    #[serde(with = "b64")]
    pub embedding: Vec<u8>,
    /// JPEG of the aligned face, base64.
    #[serde(with = "b64")]
    pub crop: Vec<u8>,
    /// Quality measures, a JSON object as text (kept verbatim).
    pub quality: String,
    /// Where the face came from.
    pub source: String,
    /// When it was first stored, Unix ms.
    pub created_at_ms: i64,
}

/// A removed sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Removed {
    /// The sample's uid (hex).
    #[serde(with = "hex_uid")]
    pub uid: Uid,
    /// Version of the removal.
    pub version: i64,
}

impl Record {
    /// An erased person's record.
    pub fn erased(uid: Uid, version: i64) -> Record {
        Record {
            uid,
            erased: Some(version),
            name: String::new(),
            name_v: 0,
            origin: String::new(),
            samples: Vec::new(),
            removed: Vec::new(),
        }
    }

    /// The highest version in the record (the receiving unit's clock goes past it).
    pub fn max_version(&self) -> i64 {
        let r = self.removed.iter().map(|r| r.version).max().unwrap_or(0);
        self.erased.unwrap_or(0).max(self.name_v).max(r)
    }

    /// Checks a record that came from elsewhere: the name's rules, embeddings, sizes, sorted
    /// unique lists. [`Kind::InvalidInput`](crate::Kind::InvalidInput) says which field.
    pub fn validate(&self) -> Result<()> {
        if self.erased.is_some() {
            if !self.name.is_empty() || !self.samples.is_empty() || !self.removed.is_empty() {
                return Err(Error::invalid(
                    "an erased record carries nothing but its uid",
                ));
            }
            return Ok(());
        }
        validate_person_name(&self.name)?;
        if self.name != self.name.trim() {
            return Err(Error::invalid("record name is not trimmed"));
        }
        if self.origin.len() > 64 {
            return Err(Error::invalid("record origin is longer than 64 bytes"));
        }
        if self.samples.len() + self.removed.len() > MAX_RECORD_SAMPLES {
            return Err(Error::exhausted(format!(
                "record holds more than {MAX_RECORD_SAMPLES} samples"
            )));
        }
        if !self.samples.windows(2).all(|w| w[0].uid < w[1].uid)
            || !self.removed.windows(2).all(|w| w[0].uid < w[1].uid)
        {
            return Err(Error::invalid("record sample lists are not sorted by uid"));
        }
        for s in &self.samples {
            validate_embedding(&floats(&s.embedding))?;
            if s.embedding.len() != 4 * crate::vision::EMBEDDING_DIM {
                return Err(Error::invalid("record embedding has the wrong length"));
            }
            if s.crop.is_empty() || s.crop.len() > MAX_CROP_BYTES {
                return Err(Error::invalid("record crop is empty or too large"));
            }
            match serde_json::from_str::<serde_json::Value>(&s.quality) {
                Ok(v) if v.is_object() => {}
                _ => return Err(Error::invalid("record sample quality is not a JSON object")),
            }
            if s.source.chars().count() > MAX_SOURCE_CHARS {
                return Err(Error::invalid("record sample source is too long"));
            }
        }
        Ok(())
    }
}

fn floats(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The join of two records of the same uid (see the module docs for the rules).
pub fn merge(a: &Record, b: &Record) -> Record {
    debug_assert_eq!(a.uid, b.uid);
    if a.erased.is_some() || b.erased.is_some() {
        return Record::erased(a.uid, a.erased.unwrap_or(0).max(b.erased.unwrap_or(0)));
    }
    let (name, name_v) = if (b.name_v, &b.name) > (a.name_v, &a.name) {
        (b.name.clone(), b.name_v)
    } else {
        (a.name.clone(), a.name_v)
    };
    // The origin is set once at enrollment; the smaller non-empty one, so that both orders agree.
    let origin = match (a.origin.as_str(), b.origin.as_str()) {
        ("", o) | (o, "") => o.to_string(),
        (x, y) => x.min(y).to_string(),
    };
    let mut removed: BTreeMap<Uid, i64> = BTreeMap::new();
    for r in a.removed.iter().chain(&b.removed) {
        let v = removed.entry(r.uid).or_insert(r.version);
        *v = (*v).max(r.version);
    }
    let mut samples: BTreeMap<Uid, &ReplicaSample> = BTreeMap::new();
    for s in a.samples.iter().chain(&b.samples) {
        if !removed.contains_key(&s.uid) {
            samples.entry(s.uid).or_insert(s);
        }
    }
    Record {
        uid: a.uid,
        erased: None,
        name,
        name_v,
        origin,
        samples: samples.into_values().cloned().collect(),
        removed: removed
            .into_iter()
            .map(|(uid, version)| Removed { uid, version })
            .collect(),
    }
}

fn uid_of(v: &[u8]) -> Result<Uid> {
    v.try_into()
        .map_err(|_| Error::precondition("a uid in the database is not 16 bytes"))
}

impl Gallery {
    /// The next hybrid logical clock value: past the wall clock and every earlier value.
    pub(super) fn tick(&mut self) -> i64 {
        let wall = self.clocks.unix_ms().max(0) << 10;
        self.hlc = (self.hlc + 1).max(wall);
        self.hlc
    }

    pub(super) fn mark_dirty(&mut self, uid: &[u8]) {
        if let Ok(u) = uid_of(uid) {
            self.dirty.insert(u);
        }
    }

    pub(super) fn require_person_uid(&self, id: PersonId) -> Result<Vec<u8>> {
        self.conn
            .query_row("SELECT uid FROM person WHERE id = ?1", [id.0], |r| r.get(0))
            .optional()?
            .ok_or_else(|| Error::not_found(format!("no person with id {id}")))
    }

    /// Unique per open of the database in this process: a new value means "everything may have
    /// changed" (e.g. the daemon reloaded the gallery after `faced enroll` ran beside it).
    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// The uids of people changed through this `Gallery` since the last call.
    pub fn take_dirty(&mut self) -> Vec<Uid> {
        std::mem::take(&mut self.dirty).into_iter().collect()
    }

    /// Every person's and every erased person's uid.
    pub fn replica_uids(&self) -> Result<Vec<Uid>> {
        let mut st = self.conn.prepare(
            "SELECT uid FROM person WHERE uid IS NOT NULL
             UNION SELECT uid FROM tombstone WHERE kind = 'person'",
        )?;
        let rows = st.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        rows.map(|r| uid_of(&r?)).collect()
    }

    /// The person `uid` as a record (decrypting their samples), the erase's record if they were
    /// erased, `None` if this unit never heard of them.
    pub fn replica(&self, uid: &Uid) -> Result<Option<Record>> {
        let person: Option<(i64, String, i64, String)> = self
            .conn
            .query_row(
                "SELECT id, name, name_v, origin FROM person WHERE uid = ?1",
                [&uid[..]],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((id, name, name_v, origin)) = person else {
            let erased: Option<i64> = self
                .conn
                .query_row(
                    "SELECT version FROM tombstone WHERE uid = ?1 AND kind = 'person'",
                    [&uid[..]],
                    |r| r.get(0),
                )
                .optional()?;
            return Ok(erased.map(|v| Record::erased(*uid, v)));
        };
        let mut samples = Vec::new();
        {
            let mut st = self.conn.prepare_cached(
                "SELECT id, uid, kind, embedding, crop, quality, source, created_at
                 FROM face_sample WHERE person_id = ?1 ORDER BY uid",
            )?;
            let mut rows = st.query([id])?;
            while let Some(r) = rows.next()? {
                let sid: i64 = r.get(0)?;
                let suid = uid_of(&r.get::<_, Vec<u8>>(1)?)?;
                let emb: Vec<u8> = r.get(3)?;
                let crop: Vec<u8> = r.get(4)?;
                samples.push(ReplicaSample {
                    uid: suid,
                    kind: SampleKind::parse(&r.get::<_, String>(2)?)?,
                    embedding: self.cipher.open(
                        &crypto::aad(AAD_EMBEDDING, &suid),
                        &emb,
                        &format!("face_sample {sid} embedding"),
                    )?,
                    crop: self.cipher.open(
                        &crypto::aad(AAD_CROP, &suid),
                        &crop,
                        &format!("face_sample {sid} crop"),
                    )?,
                    quality: r.get(5)?,
                    source: r.get(6)?,
                    created_at_ms: r.get(7)?,
                });
            }
        }
        let mut removed = Vec::new();
        {
            let mut st = self.conn.prepare_cached(
                "SELECT uid, version FROM tombstone WHERE person_uid = ?1 AND kind = 'sample'
                 ORDER BY uid",
            )?;
            let mut rows = st.query([&uid[..]])?;
            while let Some(r) = rows.next()? {
                removed.push(Removed {
                    uid: uid_of(&r.get::<_, Vec<u8>>(0)?)?,
                    version: r.get(1)?,
                });
            }
        }
        // A record must stay within MAX_RECORD_SAMPLES to be accepted anywhere, and removals
        // accumulate for as long as a person exists: carry the newest ones that fit. A removal
        // left out can only matter to a unit that has missed every newer one (offline for the
        // removal of more samples than a person can hold); that unit could then keep the old
        // sample, and its gallery digest keeps saying so on the Fleet page.
        let room = MAX_RECORD_SAMPLES.saturating_sub(samples.len());
        if removed.len() > room {
            removed.sort_by_key(|r| (std::cmp::Reverse(r.version), r.uid));
            removed.truncate(room);
            removed.sort_by_key(|r| r.uid);
        }
        Ok(Some(Record {
            uid: *uid,
            erased: None,
            name,
            name_v,
            origin,
            samples,
            removed,
        }))
    }

    /// Makes the local gallery hold `rec` (merged with what it holds: the caller passes the
    /// merge, but a stale record cannot undo anything here either: erases and removals stay).
    /// One transaction; the index follows after the commit. Returns whether anything changed.
    /// [`Kind::InvalidInput`](crate::Kind::InvalidInput) for a record that fails
    /// [`Record::validate`].
    pub fn apply_replica(&mut self, rec: &Record) -> Result<bool> {
        rec.validate()?;
        self.hlc = self.hlc.max(rec.max_version());
        let uid = &rec.uid[..];
        let now = self.clocks.unix_ms();
        let (tx, before) = super::begin_write(&mut self.conn)?;
        let local: Option<(i64, String, i64)> = tx
            .query_row(
                "SELECT id, name, name_v FROM person WHERE uid = ?1",
                [uid],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let erased_here: bool = tx
            .query_row(
                "SELECT COUNT(*) FROM tombstone WHERE uid = ?1 AND kind = 'person'",
                [uid],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)?;
        let mut ops = Vec::new();
        if let Some(v) = rec.erased {
            let prev: Option<i64> = tx
                .query_row(
                    "SELECT version FROM tombstone WHERE uid = ?1 AND kind = 'person'",
                    [uid],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some((id, _, _)) = local {
                tx.execute("DELETE FROM person WHERE id = ?1", [id])?;
                crate::db::erase::person_traces(&tx, id)?;
                ops.push(IndexOp::RemovePerson(PersonId(id)));
            }
            if prev.is_none_or(|p| p < v) {
                tx.execute(
                    "INSERT INTO tombstone (uid, kind, person_uid, version)
                     VALUES (?1, 'person', ?1, ?2)
                     ON CONFLICT (uid) DO UPDATE SET version = MAX(version, excluded.version)",
                    params![uid, v],
                )?;
                tx.execute(
                    "DELETE FROM tombstone WHERE person_uid = ?1 AND kind = 'sample'",
                    [uid],
                )?;
            }
            let changed = local.is_some() || prev.is_none_or(|p| p < v);
            // An erase from another unit erases the name from this unit's trail too.
            let erase = |(id, _, _)| self.author.erase(&tx, id, Action::ReplicaApplied, "erased");
            let row = local.map(erase).transpose()?;
            let after = super::commit(tx)?;
            row.inspect(audit::Row::log);
            self.own_write(before, after);
            self.finish_apply(ops, changed);
            return Ok(changed);
        }
        if erased_here {
            // Erased here: the record is stale; the fleet publishes the erase.
            return Ok(false);
        }
        let mut changed = false;
        // For the audit row: created or renamed, then samples added and removed.
        let (mut what, mut added, mut removed) = (None, 0, 0);
        let (id, name_now) = match local {
            Some((id, name, name_v)) => {
                if (rec.name_v, rec.name.as_str()) > (name_v, name.as_str()) {
                    let stored = unique_name(&tx, &rec.name, &rec.uid, Some(id))?;
                    tx.execute(
                        "UPDATE person SET name = ?1, name_v = ?2, updated_at = ?3 WHERE id = ?4",
                        params![stored, rec.name_v, now, id],
                    )?;
                    ops.push(IndexOp::SetPerson(PersonId(id), stored.clone()));
                    changed = true;
                    what = Some("renamed");
                    (id, stored)
                } else {
                    (id, name)
                }
            }
            None => {
                let stored = unique_name(&tx, &rec.name, &rec.uid, None)?;
                tx.execute(
                    "INSERT INTO person (name, created_at, updated_at, uid, name_v, origin)
                     VALUES (?1, ?2, ?2, ?3, ?4, ?5)",
                    params![stored, now, uid, rec.name_v, rec.origin],
                )?;
                let id = tx.last_insert_rowid();
                ops.push(IndexOp::SetPerson(PersonId(id), stored.clone()));
                changed = true;
                what = Some("created");
                (id, stored)
            }
        };
        for r in &rec.removed {
            let gone: Option<i64> = tx
                .query_row(
                    "DELETE FROM face_sample WHERE uid = ?1 RETURNING id",
                    [&r.uid[..]],
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(sid) = gone {
                ops.push(IndexOp::RemoveSample(SampleId(sid)));
                removed += 1;
            }
            let n = tx.execute(
                "INSERT INTO tombstone (uid, kind, person_uid, version) VALUES (?1, 'sample', ?2, ?3)
                 ON CONFLICT (uid) DO NOTHING",
                params![&r.uid[..], uid, r.version],
            )?;
            changed |= n > 0 || gone.is_some();
        }
        for s in &rec.samples {
            let known: i64 = tx.query_row(
                "SELECT (SELECT COUNT(*) FROM face_sample WHERE uid = ?1)
                      + (SELECT COUNT(*) FROM tombstone WHERE uid = ?1)",
                [&s.uid[..]],
                |r| r.get(0),
            )?;
            if known > 0 {
                continue;
            }
            let emb = self
                .cipher
                .seal(&crypto::aad(AAD_EMBEDDING, &s.uid), &s.embedding)?;
            let crop = self.cipher.seal(&crypto::aad(AAD_CROP, &s.uid), &s.crop)?;
            tx.execute(
                "INSERT INTO face_sample (person_id, uid, kind, embedding, crop, quality, source, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    id,
                    &s.uid[..],
                    s.kind.as_str(),
                    emb,
                    crop,
                    s.quality,
                    s.source,
                    s.created_at_ms
                ],
            )?;
            ops.push(IndexOp::Insert(
                SampleId(tx.last_insert_rowid()),
                PersonId(id),
                s.kind,
                floats(&s.embedding),
            ));
            changed = true;
            added += 1;
        }
        let mut row = None;
        if changed {
            tx.execute(
                "UPDATE person SET updated_at = ?1 WHERE id = ?2",
                params![now, id],
            )?;
            let subject = audit::Subject::person(id, Some(&name_now));
            let detail = super::attribution::replica_detail(what, added, removed);
            row = Some(
                self.author
                    .note(&tx, Action::ReplicaApplied, subject, detail)?,
            );
        }
        let after = super::commit(tx)?;
        row.inspect(audit::Row::log);
        self.own_write(before, after);
        self.finish_apply(ops, changed);
        Ok(changed)
    }

    /// Index updates wait for the commit, so the index never holds what the database lost.
    fn finish_apply(&mut self, ops: Vec<IndexOp>, changed: bool) {
        let mut erased = false;
        for op in ops {
            match op {
                IndexOp::RemovePerson(p) => {
                    self.index.remove_person(p);
                    self.people_epoch = super::next_generation();
                    erased = true;
                }
                IndexOp::SetPerson(p, name) => {
                    self.index.set_person(p, &name);
                    self.people_epoch = super::next_generation();
                }
                IndexOp::Insert(id, p, kind, e) => {
                    self.index.insert(id, p, kind, &e);
                }
                IndexOp::RemoveSample(id) => {
                    self.index.remove_sample(id);
                    erased = true;
                }
            }
        }
        // An erase that came from another unit reaches this unit's file as a local one does.
        if erased {
            self.scrub();
        }
        if changed {
            self.generation = super::next_generation();
        }
    }
}

/// What [`Gallery::apply_replica`] does to the index once its transaction committed.
enum IndexOp {
    RemovePerson(PersonId),
    SetPerson(PersonId, String),
    Insert(SampleId, PersonId, SampleKind, Vec<f32>),
    RemoveSample(SampleId),
}

/// `name`, or `name (abcd…)` (hex digits of `uid`, as many as needed) if another person holds
/// it on this unit: two people enrolled under one name on two units while they were apart.
fn unique_name(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    uid: &Uid,
    me: Option<i64>,
) -> Result<String> {
    let hex = crate::models::hex(uid);
    for digits in [0usize, 4, 8, 32] {
        let candidate = if digits == 0 {
            name.to_string()
        } else {
            // Keep the result within the 100-character limit.
            let keep: String = name.chars().take(100 - 3 - digits).collect();
            format!("{} ({})", keep.trim_end(), &hex[..digits])
        };
        let holder: Option<i64> = tx
            .query_row("SELECT id FROM person WHERE name = ?1", [&candidate], |r| {
                r.get(0)
            })
            .optional()?;
        if holder.is_none() || holder == me {
            return Ok(candidate);
        }
    }
    Err(Error::new(
        crate::error::Kind::Conflict,
        format!("cannot store replicated person {name:?}: the name and its variants are taken"),
    ))
}

mod hex_uid {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(u: &super::Uid, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::models::hex(u))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<super::Uid, D::Error> {
        let s = <&str>::deserialize(d)?;
        super::parse_uid(s).ok_or_else(|| D::Error::custom("a uid is 32 hex digits"))
    }
}

/// A uid from its 32 hex digits.
pub fn parse_uid(s: &str) -> Option<Uid> {
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut u = [0u8; 16];
    for (i, b) in u.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(u)
}

mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <&str>::deserialize(d)?;
        STANDARD.decode(s).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(u: u8) -> ReplicaSample {
        let mut e = vec![0f32; crate::vision::EMBEDDING_DIM];
        e[u as usize] = 1.0;
        ReplicaSample {
            uid: [u; 16],
            kind: SampleKind::Positive,
            embedding: e.iter().flat_map(|v| v.to_le_bytes()).collect(),
            crop: vec![0xff, 0xd8, u],
            quality: "{}".into(),
            source: "test".into(),
            created_at_ms: 1,
        }
    }

    fn rec(name: &str, v: i64, samples: &[u8], removed: &[u8]) -> Record {
        Record {
            uid: [9; 16],
            erased: None,
            name: name.into(),
            name_v: v,
            origin: "a".into(),
            samples: samples.iter().map(|&u| sample(u)).collect(),
            removed: removed
                .iter()
                .map(|&u| Removed {
                    uid: [u; 16],
                    version: 5,
                })
                .collect(),
        }
    }

    #[test]
    fn merge_is_a_join_whatever_the_order() {
        let a = rec("Bob", 10, &[1, 2], &[]);
        let b = rec("Robert", 12, &[1], &[2]);
        let c = rec("Bobby", 12, &[3], &[]);
        let erased = Record::erased([9; 16], 20);
        let m1 = merge(&merge(&a, &b), &c);
        let m2 = merge(&c, &merge(&b, &a));
        let m3 = merge(&merge(&b, &c), &a);
        assert_eq!(m1, m2);
        assert_eq!(m1, m3);
        // Equal versions: the larger name wins, on both sides.
        assert_eq!(m1.name, "Robert");
        // A removal wins over the sample's presence elsewhere.
        assert_eq!(
            m1.samples.iter().map(|s| s.uid[0]).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!(m1.removed.len(), 1);
        assert_eq!(merge(&m1, &m1), m1);
        // Erase wins over a concurrent sample, in both orders.
        let late = rec("Bob", 30, &[4], &[]);
        assert_eq!(merge(&m1, &erased), erased);
        assert_eq!(merge(&late, &erased), erased);
        assert_eq!(merge(&erased, &late), erased);
        // Canonical bytes: equal records serialize equally.
        assert_eq!(
            serde_json::to_vec(&m1).unwrap(),
            serde_json::to_vec(&m2).unwrap()
        );
    }

    #[test]
    fn records_from_elsewhere_are_checked() {
        let ok = rec("Bob", 1, &[1, 2], &[]);
        ok.validate().unwrap();
        let mut unsorted = ok.clone();
        unsorted.samples.reverse();
        assert!(unsorted.validate().is_err());
        let mut bad_name = ok.clone();
        bad_name.name = "Bob\u{202E}".into();
        assert!(bad_name.validate().is_err());
        let mut zero = ok.clone();
        zero.samples[0].embedding = vec![0; 4 * crate::vision::EMBEDDING_DIM];
        assert!(zero.validate().is_err());
        let mut short = ok.clone();
        short.samples[0].embedding.truncate(8);
        assert!(short.validate().is_err());
        let mut erased = Record::erased([1; 16], 3);
        erased.validate().unwrap();
        erased.name = "Eve".into();
        assert!(erased.validate().is_err());
        let json = serde_json::to_string(&ok).unwrap();
        let back: Record = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ok);
        assert!(serde_json::from_str::<Record>(&json.replace("\"name\"", "\"nom\"")).is_err());
    }

    #[test]
    fn local_additions_stop_at_the_person_bound_and_records_carry_the_newest_removals() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = Gallery::open(&dir.path().join("g.db"), &Default::default()).unwrap();
        let p = g.add_person("Bob").unwrap();
        let emb: Vec<Vec<f32>> = (0..crate::gallery::MAX_PERSON_SAMPLES + 60)
            .map(|i| {
                let mut e = vec![0.01f32; crate::vision::EMBEDDING_DIM];
                e[i % crate::vision::EMBEDDING_DIM] = 1.0 + i as f32;
                e
            })
            .collect();
        fn new(e: &[f32]) -> crate::gallery::NewSample<'_> {
            crate::gallery::NewSample {
                kind: SampleKind::Positive,
                embedding: e,
                crop_jpeg: &[0xff, 0xd8, 1],
                quality_json: "{}",
                source: "test",
            }
        }
        // 160 added one by one, every added sample past the first 40 removing the oldest:
        // 120 removals, and the person never holds more than 40.
        let mut held = std::collections::VecDeque::new();
        for e in &emb {
            held.push_back(g.add_samples(p, &[new(e)]).unwrap()[0]);
            if held.len() > 40 {
                g.remove_sample(held.pop_front().unwrap()).unwrap();
            }
        }
        let uid = g.replica_uids().unwrap()[0];
        let r = g.replica(&uid).unwrap().unwrap();
        assert_eq!(r.samples.len(), 40);
        // 120 removals, 160 room left by 40 samples: all carried.
        assert_eq!(r.removed.len(), 120);
        r.validate().unwrap();
        // Fill the person up to the bound: the next addition is refused, clearly, and nothing
        // of it is stored.
        let fill: Vec<crate::gallery::NewSample> = emb[..crate::gallery::MAX_PERSON_SAMPLES - 40]
            .iter()
            .map(|e| new(e))
            .collect();
        g.add_samples(p, &fill).unwrap();
        let e = g.add_samples(p, &[new(&emb[0])]).unwrap_err();
        assert_eq!(e.kind(), crate::Kind::ResourceExhausted);
        assert!(e.to_string().contains("limit of 100"), "{e}");
        assert_eq!(
            g.samples(p).unwrap().len(),
            crate::gallery::MAX_PERSON_SAMPLES
        );
        // Now 100 samples leave room for 100 removals: the record carries the newest 100 of
        // the 120, sorted by uid, and stays acceptable to other units.
        let r = g.replica(&uid).unwrap().unwrap();
        assert_eq!(r.samples.len() + r.removed.len(), MAX_RECORD_SAMPLES);
        r.validate().unwrap();
        let versions: Vec<i64> = g
            .conn
            .prepare("SELECT version FROM tombstone WHERE kind = 'sample' ORDER BY version DESC")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|v| v.unwrap())
            .collect();
        assert_eq!(versions.len(), 120);
        let oldest_kept = versions[99];
        assert!(r.removed.iter().all(|x| x.version >= oldest_kept));
    }
}
