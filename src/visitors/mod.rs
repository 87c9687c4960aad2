//! Unknown visitors: strangers grouped by face, so that "the same courier came 4 times this
//! week" is one visitor with 4 visits instead of dozens of unrelated `unknown` events.
//!
//! # The clustering
//!
//! Every unknown track (one that the pipeline decided is nobody in the gallery) gives one
//! *face*: the mean of its best embeddings, L2-normalised, with its best aligned crop. A face
//! joins the visitor whose **average linkage** with it is highest, if that is at least
//! [`SAME_VISITOR`]; otherwise it starts a new visitor. After every change the visitor is
//! compared with every other one, and two visitors whose average linkage (the mean cosine
//! similarity over all pairs of their faces) reaches [`SAME_VISITOR`] are merged into the older
//! one: evidence gathered later can show that two strangers are one face.
//!
//! Average linkage over unit vectors is a dot product of sums: mean(a_i · b_j) = (Σa · Σb) /
//! (n_a n_b). So each visitor is kept in memory as the sum of its faces' embeddings and their
//! count (~800 bytes), a face is placed with one pass over the visitors, and a merge check
//! costs the same — no pairwise matrix and no stored embedding is read.
//!
//! Why average linkage at 0.56, measured on `../shared/faces` (61 photos of 13 people) played as
//! a stream of strangers in 100 shuffled orders: single linkage (nearest face) at any threshold
//! from 0.40 to 0.54 chained two look-alike people (their closest photos are 0.55 apart, while
//! two photos of one person can be as far apart as 0.54) in a quarter of the orders; average
//! linkage at 0.56 (0.55–0.57 behave the same) gave 13 visitors of one person each in every
//! order. The recognition threshold (0.5) is lower because it compares with photos someone chose
//! to enroll; here a wrong merge shows one stranger's face as another's, so the rule errs
//! towards splitting, and merging repairs the splits as faces accumulate.
//!
//! # Ids, visits, and what is kept
//!
//! * Ids are allocated here, above every id in the `visitor` table and in `event.visitor_id`,
//!   so an event never comes to name a different stranger. A merged visitor keeps its row with
//!   `merged_into` set; [`Visitors::resolve`] maps an old id to the live one.
//! * A *visit* is a sighting more than `visit_gap_minutes` after the visitor's previous one.
//! * At most [`MAX_FACES_PER_VISITOR`] faces are kept per visitor (the best by quality) and at
//!   most [`MAX_VISITORS`] visitors (the one seen longest ago is forgotten first). Faces older
//!   than `retention_days` are erased, and a visitor with none left goes with them.
//! * Faces are sealed like every other face in the database (`db::crypto`, bound to table,
//!   column and row).
//! * Enrolling a visitor turns their enrollable faces into samples of a person, re-labels
//!   their `unknown` events with that person, and erases their faces. [`Visitors::recheck`]
//!   does the re-labelling for every visitor that a newly enrolled person matches.
//!
//! # Threads and crash windows
//!
//! [`Visitors::observe`] runs on the vision thread, once per unknown track (not per frame): a
//! pass over the visitors in memory and one small SQLite transaction. The console calls the
//! other methods from its blocking pool. One mutex guards the memory and the connection, so
//! the two never disagree while the daemon runs. Memory is updated first: if the transaction
//! fails (a full disk) the sighting still gets its visitor id and the failure is logged once
//! per outage; a restart then forgets that one face. Nothing else can be lost half-way: each
//! change (a face, a merge, an enrollment, an erase) is one transaction.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::base::{Clocks, rfc3339_utc};
use crate::db::{self, crypto};
use crate::error::{Error, Result};
use crate::gallery::{EnrollTarget, Enrolled, Gallery, NewSample, PersonId, SampleKind};
use crate::vision::EMBEDDING_DIM;
use crate::vision::quality::{Quality, QualityLimits};

/// Average-linkage similarity at which a face joins a visitor, and two visitors merge (see the
/// module docs for how it was chosen).
pub const SAME_VISITOR: f32 = 0.56;
/// Faces kept per visitor: the best by quality.
pub const MAX_FACES_PER_VISITOR: usize = 12;
/// Visitors kept: beyond this, the one seen longest ago is forgotten.
pub const MAX_VISITORS: usize = 5000;

const AAD_EMBEDDING: &str = "visitor_face.embedding";
const AAD_CROP: &str = "visitor_face.crop";

/// `[visitors]`: grouping unknown faces into visitors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VisitorsConfig {
    /// Group unknown faces into visitors (their faces are kept, sealed, for `retention_days`).
    pub enabled: bool,
    /// Days a stranger's faces are kept after they were seen: 1..=365.
    pub retention_days: u32,
    /// Minutes between two sightings for them to count as two visits: 0..=1440.
    pub visit_gap_minutes: f64,
}

impl Default for VisitorsConfig {
    fn default() -> Self {
        VisitorsConfig {
            enabled: true,
            retention_days: 14,
            visit_gap_minutes: 10.0,
        }
    }
}

impl VisitorsConfig {
    /// Checks the ranges; errors name the key.
    pub fn validate(&self) -> Result<()> {
        if !(1..=365).contains(&self.retention_days) {
            return Err(Error::invalid(format!(
                "visitors.retention_days = {} is out of range 1..=365",
                self.retention_days
            )));
        }
        if !(0.0..=1440.0).contains(&self.visit_gap_minutes) {
            return Err(Error::invalid(format!(
                "visitors.visit_gap_minutes = {} is out of range 0..=1440",
                self.visit_gap_minutes
            )));
        }
        Ok(())
    }

    fn gap_ms(&self) -> i64 {
        (self.visit_gap_minutes * 60_000.0) as i64
    }
}

/// One unknown track's face, as the pipeline hands it over.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// Camera name.
    pub camera: &'a str,
    /// The track's mean embedding, L2-normalised, [`EMBEDDING_DIM`] values.
    pub embedding: &'a [f32],
    /// JPEG of the track's best aligned crop.
    pub crop_jpeg: &'a [u8],
    /// That crop's quality measures.
    pub quality: &'a Quality,
    /// The tracker's quality hint of that face (to keep a visitor's best faces).
    pub hint: f32,
    /// Wall-clock time of the sighting, Unix ms.
    pub wall_ms: i64,
}

/// What [`Visitors::observe`] decided about a face.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sighting {
    /// The visitor (live id).
    pub visitor_id: i64,
    /// Their distinct visits, this one included.
    pub visits: u32,
    /// Their first sighting, Unix ms.
    pub first_seen_ms: i64,
    /// Seen on an earlier visit (not new, and not the same visit).
    pub returning: bool,
    /// Marked ignored: raise no event.
    pub ignored: bool,
}

/// A visitor as the console lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VisitorInfo {
    /// Live id.
    pub id: i64,
    /// Distinct visits.
    pub visits: u32,
    /// First and last sighting, RFC 3339 UTC and Unix ms.
    pub first_seen: String,
    /// Unix ms.
    pub first_seen_ms: i64,
    /// RFC 3339 UTC.
    pub last_seen: String,
    /// Unix ms.
    pub last_seen_ms: i64,
    /// Marked ignored.
    pub ignored: bool,
    /// Cameras that saw them, sorted.
    pub cameras: Vec<String>,
    /// Their kept faces, best first.
    pub faces: Vec<FaceInfo>,
    /// Their `unknown` events still in the event log.
    pub events: u32,
}

/// One kept face of a visitor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaceInfo {
    /// Id (crop URL `/api/visitor-faces/{id}/crop`).
    pub id: i64,
    /// Camera.
    pub camera: String,
    /// When, Unix ms.
    pub at_ms: i64,
    /// Passes the enrollment quality limits.
    pub enrollable: bool,
}

/// The retained MQTT summary `faced/<device>/visitors`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The unit's local date the counts are for, `YYYY-MM-DD` (its time zone: `TZ` or
    /// /etc/localtime). The daemon publishes the summary again when the date changes.
    pub day: String,
    /// Visitors seen today (since local midnight).
    pub today: u32,
    /// Of those, first seen today (new strangers).
    pub new_today: u32,
    /// Visitors kept.
    pub total: u32,
    /// The visitor seen today with the most visits.
    pub most_frequent: Option<Frequent>,
    /// The latest unknown sighting.
    pub last: Option<LastSighting>,
}

/// See [`Summary::most_frequent`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Frequent {
    /// Visitor id.
    pub visitor_id: i64,
    /// Their visits.
    pub visits: u32,
}

/// See [`Summary::last`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastSighting {
    /// Visitor id.
    pub visitor_id: i64,
    /// Camera.
    pub camera: String,
    /// RFC 3339 UTC.
    pub time: String,
    /// Their visits.
    pub visits: u32,
    /// A returning stranger (seen on an earlier visit).
    pub returning: bool,
}

#[derive(Debug, Clone)]
struct Cluster {
    sum: Vec<f32>,
    n: u32,
    visits: u32,
    first_seen: i64,
    last_seen: i64,
    ignored: bool,
}

impl Cluster {
    /// Average linkage with one unit vector.
    fn link_face(&self, e: &[f32]) -> f32 {
        dot(&self.sum, e) / self.n.max(1) as f32
    }
    /// Average linkage with another visitor.
    fn link(&self, o: &Cluster) -> f32 {
        dot(&self.sum, &o.sum) / (self.n.max(1) as f32 * o.n.max(1) as f32)
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Called with the summary after every sighting and change; with the face's JPEG after a
/// sighting of a visitor not marked ignored (theirs is `summary.last`); and with the ids of
/// the visitors just erased, by the console, the count limit or retention, so that whatever
/// was published about them can be withdrawn (the daemon does all three on MQTT).
pub type Listener = Box<dyn Fn(&Summary, Option<&[u8]>, &[i64]) + Send + Sync>;

struct Inner {
    conn: Connection,
    cfg: VisitorsConfig,
    live: HashMap<i64, Cluster>,
    next_id: i64,
    last: Option<LastSighting>,
    /// The newest sighting ever stored (retention refuses to run while the clock is behind it).
    newest_ms: i64,
    last_retention_ms: Option<i64>,
    failing: bool,
    /// Visitors erased since the listener was last called (it withdraws what MQTT holds).
    erased: Vec<i64>,
}

/// The visitors of one database: see the module docs.
pub struct Visitors {
    inner: Mutex<Inner>,
    cipher: crypto::Cipher,
    limits: QualityLimits,
    clocks: Arc<dyn Clocks>,
    listener: Mutex<Option<Listener>>,
}

impl std::fmt::Debug for Visitors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Visitors(..)")
    }
}

fn embedding_bytes(e: &[f32]) -> Vec<u8> {
    e.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn embedding_from(b: &[u8]) -> Result<Vec<f32>> {
    if b.len() != EMBEDDING_DIM * 4 {
        return Err(Error::precondition(format!(
            "visitor face embedding has {} bytes, expected {}",
            b.len(),
            EMBEDDING_DIM * 4
        )));
    }
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

const DAY_MS: i64 = 86_400_000;

/// Deletes the visitors `roots`, every id merged into them, their faces, their `unknown`
/// events (with the snapshots) and their event JSON still waiting in the MQTT outbox, in `tx`;
/// returns every id deleted. The one way visitors go: the console's erase, the count limit and
/// retention all come here, so none of them leaves a stranger's face behind.
fn delete_visitors(tx: &rusqlite::Transaction<'_>, roots: &[i64]) -> Result<Vec<i64>> {
    let mut ids = Vec::new();
    {
        let mut st =
            tx.prepare_cached("SELECT id FROM visitor WHERE id = ?1 OR merged_into = ?1")?;
        for &root in roots {
            ids.push(root);
            for id in st.query_map([root], |r| r.get::<_, i64>(0))? {
                let id = id?;
                if id != root {
                    ids.push(id);
                }
            }
        }
    }
    let mut events = tx.prepare_cached("DELETE FROM event WHERE visitor_id = ?1")?;
    let mut faces = tx.prepare_cached("DELETE FROM visitor_face WHERE visitor_id = ?1")?;
    let mut rows = tx.prepare_cached("DELETE FROM visitor WHERE id = ?1")?;
    for id in &ids {
        events.execute([id])?;
        faces.execute([id])?;
        rows.execute([id])?;
    }
    db::erase::visitor_traces(tx, &ids)?;
    for id in &ids {
        crate::audit::forget_subject(tx, crate::audit::SubjectKind::Visitor, &id.to_string())?;
    }
    Ok(ids)
}

impl Visitors {
    /// Opens the visitors of the database at `db_path` (already created by the gallery, whose
    /// key file `key_path` seals the faces), loads the live visitors, and applies retention.
    pub fn open(
        db_path: &Path,
        key_path: &Path,
        cfg: VisitorsConfig,
        limits: QualityLimits,
        clocks: Arc<dyn Clocks>,
    ) -> Result<Arc<Visitors>> {
        cfg.validate()?;
        let conn = db::open(db_path)?;
        let what = db::describe(db_path);
        db::require_table(
            &conn,
            "visitor",
            &what,
            "open it with the gallery first (it upgrades the schema)",
        )?;
        let cipher = crypto::load_cipher(key_path)?;
        let mut live: HashMap<i64, Cluster> = HashMap::new();
        {
            let mut st = conn.prepare(
                "SELECT id, first_seen, last_seen, visits, ignored FROM visitor
                 WHERE merged_into IS NULL AND resolved = 0",
            )?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    Cluster {
                        sum: vec![0.0; EMBEDDING_DIM],
                        n: 0,
                        first_seen: r.get(1)?,
                        last_seen: r.get(2)?,
                        visits: r.get(3)?,
                        ignored: r.get(4)?,
                    },
                ))
            })?;
            for row in rows {
                let (id, c) = row?;
                live.insert(id, c);
            }
            let mut st = conn.prepare("SELECT id, visitor_id, uid, embedding FROM visitor_face")?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                let (fid, vid): (i64, i64) = (r.get(0)?, r.get(1)?);
                let uid: Vec<u8> = r.get(2)?;
                let sealed: Vec<u8> = r.get(3)?;
                let Some(c) = live.get_mut(&vid) else {
                    continue;
                };
                let plain = cipher.open(
                    &crypto::aad(AAD_EMBEDDING, &uid),
                    &sealed,
                    &format!("visitor_face {fid} embedding"),
                )?;
                for (s, v) in c.sum.iter_mut().zip(embedding_from(&plain)?) {
                    *s += v;
                }
                c.n += 1;
            }
        }
        live.retain(|_, c| c.n > 0);
        let next_id: i64 = conn.query_row(
            "SELECT MAX(COALESCE((SELECT MAX(id) FROM visitor), 0),
                        COALESCE((SELECT MAX(visitor_id) FROM event), 0)) + 1",
            [],
            |r| r.get(0),
        )?;
        let newest_ms: i64 =
            conn.query_row("SELECT COALESCE(MAX(last_seen), 0) FROM visitor", [], |r| {
                r.get(0)
            })?;
        let v = Arc::new(Visitors {
            inner: Mutex::new(Inner {
                conn,
                cfg,
                live,
                next_id,
                last: None,
                newest_ms,
                last_retention_ms: None,
                failing: false,
                erased: Vec::new(),
            }),
            cipher,
            limits,
            clocks,
            listener: Mutex::new(None),
        });
        {
            let mut g = v.lock();
            if let Err(e) = v.retention(&mut g) {
                tracing::warn!("visitor retention failed: {e}");
            }
        }
        Ok(v)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Calls `f` with the summary after every change (replacing an earlier listener).
    pub fn set_listener(&self, f: Listener) {
        *self.listener.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
    }

    fn notify(&self, g: &mut Inner) {
        self.notify_with(g, None);
    }

    fn notify_with(&self, g: &mut Inner, face: Option<&[u8]>) {
        let erased = std::mem::take(&mut g.erased);
        if let Some(f) = &*self.listener.lock().unwrap_or_else(|p| p.into_inner()) {
            f(&self.summary_of(g), face, &erased);
        }
    }

    /// Applies new settings (SIGHUP).
    pub fn set_config(&self, cfg: VisitorsConfig) {
        self.lock().cfg = cfg;
    }

    /// Places one unknown track's face (see the module docs); `None` only for an embedding
    /// of the wrong size.
    pub fn observe(&self, o: &Observation<'_>) -> Option<Sighting> {
        if o.embedding.len() != EMBEDDING_DIM || o.embedding.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let mut g = self.lock();
        let gap = g.cfg.gap_ms();
        let best = g
            .live
            .iter()
            .map(|(&id, c)| (id, c.link_face(o.embedding)))
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
        let (id, is_new) = match best {
            Some((id, s)) if s >= SAME_VISITOR => (id, false),
            _ => {
                let id = g.next_id;
                g.next_id += 1;
                (id, true)
            }
        };
        let returning = {
            let c = g.live.entry(id).or_insert_with(|| Cluster {
                sum: vec![0.0; EMBEDDING_DIM],
                n: 0,
                visits: 0,
                first_seen: o.wall_ms,
                last_seen: o.wall_ms,
                ignored: false,
            });
            let new_visit = is_new || (o.wall_ms - c.last_seen).abs() > gap;
            if new_visit {
                c.visits += 1;
            }
            c.first_seen = c.first_seen.min(o.wall_ms);
            c.last_seen = c.last_seen.max(o.wall_ms);
            for (s, v) in c.sum.iter_mut().zip(o.embedding) {
                *s += v;
            }
            c.n += 1;
            new_visit && !is_new
        };
        g.newest_ms = g.newest_ms.max(o.wall_ms);
        let enrollable = self.limits.check(o.quality).is_none();
        let r = self.store_face(&mut g, id, is_new, o, enrollable);
        let root = match r {
            Ok(root) => {
                if g.failing {
                    tracing::info!("visitor faces are stored again");
                    g.failing = false;
                }
                root
            }
            Err(e) => {
                if !g.failing {
                    tracing::warn!(
                        "could not store an unknown visitor's face (kept in memory): {e}"
                    );
                    g.failing = true;
                }
                id
            }
        };
        let c = g.live.get(&root)?.clone();
        let s = Sighting {
            visitor_id: root,
            visits: c.visits,
            first_seen_ms: c.first_seen,
            returning,
            ignored: c.ignored,
        };
        if !c.ignored {
            g.last = Some(LastSighting {
                visitor_id: root,
                camera: o.camera.to_string(),
                time: rfc3339_utc(o.wall_ms),
                visits: c.visits,
                returning,
            });
        }
        let now = self.clocks.unix_ms();
        if g.last_retention_ms
            .is_none_or(|t| (now - t).abs() > 3_600_000)
            && let Err(e) = self.retention(&mut g)
        {
            tracing::warn!("visitor retention failed: {e}");
        }
        self.notify_with(&mut g, (!c.ignored).then_some(o.crop_jpeg));
        Some(s)
    }

    /// Stores the face and the visitor's row, trims, merges; returns the live id it ended in.
    fn store_face(
        &self,
        g: &mut Inner,
        id: i64,
        is_new: bool,
        o: &Observation<'_>,
        enrollable: bool,
    ) -> Result<i64> {
        let c = g.live[&id].clone();
        let uid: [u8; 16] = self.cipher.random()?;
        let emb = self.cipher.seal(
            &crypto::aad(AAD_EMBEDDING, &uid),
            &embedding_bytes(o.embedding),
        )?;
        let crop = self
            .cipher
            .seal(&crypto::aad(AAD_CROP, &uid), o.crop_jpeg)?;
        let qjson = serde_json::to_string(o.quality).unwrap_or_else(|_| "{}".into());
        let camera: String = o.camera.chars().take(32).collect();
        let tx = g.conn.transaction()?;
        if is_new {
            tx.execute(
                "INSERT INTO visitor (id, first_seen, last_seen, visits) VALUES (?1, ?2, ?3, ?4)",
                params![id, c.first_seen, c.last_seen, c.visits],
            )?;
        } else {
            tx.execute(
                "UPDATE visitor SET first_seen = ?2, last_seen = ?3, visits = ?4 WHERE id = ?1",
                params![id, c.first_seen, c.last_seen, c.visits],
            )?;
        }
        tx.execute(
            "INSERT INTO visitor_face (uid, visitor_id, camera, at, quality, enrollable,
                                       quality_json, embedding, crop)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                &uid[..],
                id,
                camera,
                o.wall_ms,
                if o.hint.is_finite() { o.hint } else { 0.0 },
                enrollable,
                qjson,
                emb,
                crop
            ],
        )?;
        tx.commit()?;
        let mut root = id;
        // Merge while evidence says two visitors are one face.
        loop {
            let cur = &g.live[&root];
            let other = g
                .live
                .iter()
                .filter(|(o, _)| **o != root)
                .map(|(&o, c)| (o, cur.link(c)))
                .filter(|(_, s)| *s >= SAME_VISITOR)
                .max_by(|a, b| a.1.total_cmp(&b.1));
            let Some((other, _)) = other else { break };
            root = self.merge(g, root.min(other), root.max(other))?;
        }
        self.trim(g, root)?;
        self.limit_count(g)?;
        Ok(root)
    }

    /// Merges visitor `young` into the older `old`; returns `old`.
    fn merge(&self, g: &mut Inner, old: i64, young: i64) -> Result<i64> {
        let y = g.live[&young].clone();
        let tx = g.conn.transaction()?;
        let o = {
            let o = g.live.get(&old).cloned().unwrap_or(y.clone());
            let mut m = o.clone();
            for (s, v) in m.sum.iter_mut().zip(&y.sum) {
                *s += v;
            }
            m.n += y.n;
            m.visits += y.visits;
            m.first_seen = o.first_seen.min(y.first_seen);
            m.last_seen = o.last_seen.max(y.last_seen);
            m.ignored = o.ignored || y.ignored;
            m
        };
        tx.execute(
            "UPDATE visitor SET first_seen = ?2, last_seen = ?3, visits = ?4, ignored = ?5
             WHERE id = ?1",
            params![old, o.first_seen, o.last_seen, o.visits, o.ignored],
        )?;
        tx.execute(
            "UPDATE visitor_face SET visitor_id = ?1 WHERE visitor_id = ?2",
            params![old, young],
        )?;
        tx.execute(
            "UPDATE visitor SET merged_into = ?1 WHERE id = ?2 OR merged_into = ?2",
            params![old, young],
        )?;
        tx.execute(
            "UPDATE event SET visitor_id = ?1 WHERE visitor_id = ?2",
            params![old, young],
        )?;
        tx.commit()?;
        g.live.remove(&young);
        g.live.insert(old, o);
        tracing::info!(
            visitor = old,
            merged = young,
            "two unknown visitors are one face: merged"
        );
        Ok(old)
    }

    /// Keeps the visitor's best [`MAX_FACES_PER_VISITOR`] faces.
    fn trim(&self, g: &mut Inner, id: i64) -> Result<()> {
        let n = g.live.get(&id).map_or(0, |c| c.n as usize);
        if n <= MAX_FACES_PER_VISITOR {
            return Ok(());
        }
        let gone = self.faces_where(
            &g.conn,
            "visitor_id = ?1 ORDER BY quality ASC, id ASC LIMIT ?2",
            params![id, (n - MAX_FACES_PER_VISITOR) as i64],
        )?;
        self.forget_faces(g, &gone)
    }

    /// (face id, visitor id, embedding) of the faces matching `cond`.
    fn faces_where(
        &self,
        conn: &Connection,
        cond: &str,
        p: impl rusqlite::Params,
    ) -> Result<Vec<(i64, i64, Vec<f32>)>> {
        let mut st = conn.prepare(&format!(
            "SELECT id, visitor_id, uid, embedding FROM visitor_face WHERE {cond}"
        ))?;
        let mut rows = st.query(p)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let (fid, vid): (i64, i64) = (r.get(0)?, r.get(1)?);
            let uid: Vec<u8> = r.get(2)?;
            let sealed: Vec<u8> = r.get(3)?;
            let plain = self.cipher.open(
                &crypto::aad(AAD_EMBEDDING, &uid),
                &sealed,
                &format!("visitor_face {fid} embedding"),
            )?;
            out.push((fid, vid, embedding_from(&plain)?));
        }
        Ok(out)
    }

    /// Deletes faces and takes them out of their visitors' sums; a live visitor left with no
    /// face is deleted too.
    fn forget_faces(&self, g: &mut Inner, gone: &[(i64, i64, Vec<f32>)]) -> Result<()> {
        if gone.is_empty() {
            return Ok(());
        }
        let tx = g.conn.transaction()?;
        for (fid, _, _) in gone {
            tx.execute("DELETE FROM visitor_face WHERE id = ?1", [fid])?;
        }
        let mut emptied = Vec::new();
        for (_, vid, e) in gone {
            if let Some(c) = g.live.get_mut(vid) {
                for (s, v) in c.sum.iter_mut().zip(e) {
                    *s -= v;
                }
                c.n = c.n.saturating_sub(1);
                if c.n == 0 {
                    emptied.push(*vid);
                }
            }
        }
        let erased = delete_visitors(&tx, &emptied)?;
        tx.commit()?;
        for vid in emptied {
            g.live.remove(&vid);
        }
        Self::erased(g, erased);
        Ok(())
    }

    /// Forgets the visitors seen longest ago beyond [`MAX_VISITORS`].
    fn limit_count(&self, g: &mut Inner) -> Result<()> {
        if g.live.len() <= MAX_VISITORS {
            return Ok(());
        }
        let mut by_age: Vec<(i64, i64)> = g.live.iter().map(|(&id, c)| (c.last_seen, id)).collect();
        by_age.sort_unstable();
        let n = g.live.len() - MAX_VISITORS;
        for (_, id) in by_age.into_iter().take(n) {
            Self::erase_locked(g, id)?;
        }
        Ok(())
    }

    /// Retention: faces older than `retention_days` go, and visitors (live or resolved) last
    /// seen before that. Skipped while the wall clock is behind the newest sighting (a Pi that
    /// booted in 1970), so a clock jump back cannot be mistaken for time passing — and a jump
    /// forward is bounded by the same rule once it is corrected.
    fn retention(&self, g: &mut Inner) -> Result<usize> {
        let now = self.clocks.unix_ms();
        g.last_retention_ms = Some(now);
        if now < g.newest_ms {
            return Ok(0);
        }
        let cutoff = now - i64::from(g.cfg.retention_days) * DAY_MS;
        let gone = self.faces_where(&g.conn, "at < ?1", [cutoff])?;
        let n = gone.len();
        self.forget_faces(g, &gone)?;
        let tx = g.conn.transaction()?;
        // Events of a merged-away id mean the visitor it joined: say so before the row that
        // links them goes, or a later erase of that visitor would miss them.
        tx.execute(
            "UPDATE event SET visitor_id = (SELECT merged_into FROM visitor v WHERE v.id = event.visitor_id)
             WHERE visitor_id IN (SELECT id FROM visitor WHERE last_seen < ?1 AND merged_into IS NOT NULL)",
            [cutoff],
        )?;
        tx.execute(
            "DELETE FROM visitor WHERE last_seen < ?1 AND (resolved = 1 OR merged_into IS NOT NULL)",
            [cutoff],
        )?;
        // `unknown` events whose visitor is gone (erased before their events went with them,
        // by an older faced): their snapshots are a stranger's face kept past the visitor.
        let orphans: Vec<i64> = {
            let mut st = tx.prepare(
                "SELECT DISTINCT visitor_id FROM event WHERE visitor_id IS NOT NULL AND at < ?1
                   AND visitor_id NOT IN (SELECT id FROM visitor)",
            )?;
            st.query_map([cutoff], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        let erased = delete_visitors(&tx, &orphans)?;
        tx.commit()?;
        Self::erased(g, erased);
        Ok(n)
    }

    /// Notes visitors just erased, for the listener, and leaves no byte of them in the file.
    fn erased(g: &mut Inner, ids: Vec<i64>) {
        if ids.is_empty() {
            return;
        }
        g.erased.extend(ids);
        if let Err(e) = db::erase::scrub(&g.conn) {
            tracing::warn!("visitors are erased but their pages could not be overwritten yet: {e}");
        }
    }

    /// Erases visitor `id` (any of its ids) and everything about them: faces, rows, and their
    /// `unknown` events (with the snapshots).
    pub fn erase(&self, id: i64) -> Result<()> {
        let mut g = self.lock();
        let root = Self::resolve_locked(&g, id)?;
        Self::erase_locked(&mut g, root)?;
        self.notify(&mut g);
        Ok(())
    }

    fn erase_locked(g: &mut Inner, root: i64) -> Result<()> {
        let tx = g.conn.transaction()?;
        let erased = delete_visitors(&tx, &[root])?;
        tx.commit()?;
        g.live.remove(&root);
        if g.last.as_ref().is_some_and(|l| l.visitor_id == root) {
            g.last = None;
        }
        Self::erased(g, erased);
        Ok(())
    }

    /// The live visitor that `id` (theirs, or one merged into them) names.
    pub fn resolve(&self, id: i64) -> Result<i64> {
        Self::resolve_locked(&self.lock(), id)
    }

    fn resolve_locked(g: &Inner, id: i64) -> Result<i64> {
        if g.live.contains_key(&id) {
            return Ok(id);
        }
        let row: Option<(Option<i64>, bool)> = g
            .conn
            .query_row(
                "SELECT merged_into, resolved FROM visitor WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match row {
            Some((Some(root), _)) if g.live.contains_key(&root) => Ok(root),
            Some((_, true)) => Err(Error::new(
                crate::error::Kind::Conflict,
                format!("visitor {id} was enrolled or recognized as a person; see People"),
            )),
            _ => Err(Error::not_found(format!("no visitor {id}"))),
        }
    }

    /// Marks a visitor ignored (no more `unknown` events for their face) or not.
    pub fn set_ignored(&self, id: i64, ignored: bool) -> Result<()> {
        let mut g = self.lock();
        let root = Self::resolve_locked(&g, id)?;
        g.conn.execute(
            "UPDATE visitor SET ignored = ?2 WHERE id = ?1",
            params![root, ignored],
        )?;
        if let Some(c) = g.live.get_mut(&root) {
            c.ignored = ignored;
        }
        self.notify(&mut g);
        Ok(())
    }

    /// Every live visitor, last seen first.
    pub fn list(&self) -> Result<Vec<VisitorInfo>> {
        let g = self.lock();
        let mut ids: Vec<(i64, i64)> = g.live.iter().map(|(&id, c)| (c.last_seen, id)).collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.into_iter().map(|(_, id)| Self::info(&g, id)).collect()
    }

    /// One visitor, by any of their ids.
    pub fn get(&self, id: i64) -> Result<VisitorInfo> {
        let g = self.lock();
        let root = Self::resolve_locked(&g, id)?;
        Self::info(&g, root)
    }

    fn info(g: &Inner, id: i64) -> Result<VisitorInfo> {
        let c = g
            .live
            .get(&id)
            .ok_or_else(|| Error::not_found(format!("no visitor {id}")))?;
        let mut st = g.conn.prepare_cached(
            "SELECT id, camera, at, enrollable FROM visitor_face WHERE visitor_id = ?1
             ORDER BY quality DESC, id DESC",
        )?;
        let faces: Vec<FaceInfo> = st
            .query_map([id], |r| {
                Ok(FaceInfo {
                    id: r.get(0)?,
                    camera: r.get(1)?,
                    at_ms: r.get(2)?,
                    enrollable: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut cameras: Vec<String> = faces.iter().map(|f| f.camera.clone()).collect();
        cameras.sort();
        cameras.dedup();
        let events: u32 = g.conn.query_row(
            "SELECT COUNT(*) FROM event WHERE visitor_id IN
               (SELECT id FROM visitor WHERE id = ?1 OR merged_into = ?1)",
            [id],
            |r| r.get(0),
        )?;
        Ok(VisitorInfo {
            id,
            visits: c.visits,
            first_seen: rfc3339_utc(c.first_seen),
            first_seen_ms: c.first_seen,
            last_seen: rfc3339_utc(c.last_seen),
            last_seen_ms: c.last_seen,
            ignored: c.ignored,
            cameras,
            faces,
            events,
        })
    }

    /// JPEG of one kept face.
    pub fn face_crop(&self, face_id: i64) -> Result<Vec<u8>> {
        let g = self.lock();
        let (uid, sealed): (Vec<u8>, Vec<u8>) = g
            .conn
            .query_row(
                "SELECT uid, crop FROM visitor_face WHERE id = ?1",
                [face_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .ok_or_else(|| Error::not_found(format!("no visitor face {face_id}")))?;
        self.cipher.open(
            &crypto::aad(AAD_CROP, &uid),
            &sealed,
            &format!("visitor_face {face_id} crop"),
        )
    }

    /// Enrolls visitor `id` as `to`: every kept face that passes the enrollment quality limits
    /// becomes a sample; then their `unknown` events are re-labelled and their faces erased
    /// ([`Visitors::recheck`] does the same for other visitors the person now matches).
    pub fn enroll(&self, id: i64, gallery: &mut Gallery, to: EnrollTarget<'_>) -> Result<Enrolled> {
        let mut g = self.lock();
        let root = Self::resolve_locked(&g, id)?;
        let mut st = g.conn.prepare(
            "SELECT id, uid, embedding, crop, quality_json FROM visitor_face
             WHERE visitor_id = ?1 AND enrollable = 1 ORDER BY quality DESC, id DESC",
        )?;
        let mut rows = st.query([root])?;
        let mut faces = Vec::new();
        while let Some(r) = rows.next()? {
            let fid: i64 = r.get(0)?;
            let uid: Vec<u8> = r.get(1)?;
            let e: Vec<u8> = r.get(2)?;
            let c: Vec<u8> = r.get(3)?;
            let q: String = r.get(4)?;
            let e = self.cipher.open(
                &crypto::aad(AAD_EMBEDDING, &uid),
                &e,
                &format!("visitor_face {fid} embedding"),
            )?;
            let c = self.cipher.open(
                &crypto::aad(AAD_CROP, &uid),
                &c,
                &format!("visitor_face {fid} crop"),
            )?;
            faces.push((embedding_from(&e)?, c, q, format!("visitor {root}")));
        }
        drop(rows);
        drop(st);
        if faces.is_empty() {
            return Err(Error::precondition(format!(
                "none of visitor {root}'s faces passes the enrollment quality limits (size, \
                 sharpness, pose); enroll this person from photos instead"
            )));
        }
        let samples: Vec<NewSample<'_>> = faces
            .iter()
            .map(|(e, c, q, s)| NewSample {
                kind: SampleKind::Positive,
                embedding: e,
                crop_jpeg: c,
                quality_json: q,
                source: s,
            })
            .collect();
        let done = gallery.enroll(to, &samples)?;
        let name = gallery
            .person(done.person)?
            .map(|p| p.name)
            .unwrap_or_default();
        Self::resolve_as(&mut g, root, done.person, &name)?;
        tracing::info!(visitor = root, person = %name, samples = done.samples.len(), "visitor enrolled");
        self.notify(&mut g);
        Ok(done)
    }

    /// Marks `root` as `person`: re-labels their `unknown` events, erases their faces.
    fn resolve_as(g: &mut Inner, root: i64, person: PersonId, name: &str) -> Result<()> {
        let tx = g.conn.transaction()?;
        tx.execute(
            "UPDATE event SET person_id = ?2, person_name = ?3
             WHERE person_id IS NULL AND visitor_id IN
               (SELECT id FROM visitor WHERE id = ?1 OR merged_into = ?1)",
            params![root, person.0, name],
        )?;
        tx.execute("DELETE FROM visitor_face WHERE visitor_id = ?1", [root])?;
        tx.execute(
            "UPDATE visitor SET person_id = ?2, resolved = 1 WHERE id = ?1",
            params![root, person.0],
        )?;
        tx.commit()?;
        g.live.remove(&root);
        Ok(())
    }

    /// Compares every visitor with the gallery: one whose mean face matches an enrolled person
    /// at `threshold` is resolved as them (events re-labelled, faces erased). Run after the
    /// gallery changes. Returns the (visitor, person) pairs resolved.
    pub fn recheck(&self, gallery: &Gallery, threshold: f32) -> Result<Vec<(i64, PersonId)>> {
        let mut g = self.lock();
        let mut hits = Vec::new();
        for (&id, c) in &g.live {
            let Some(centroid) = crate::gallery::index::normalize(&c.sum) else {
                continue;
            };
            if let Some(m) = gallery.identify(&centroid, threshold)? {
                hits.push((id, m.person, m.name));
            }
        }
        let mut out = Vec::new();
        for (id, person, name) in hits {
            Self::resolve_as(&mut g, id, person, &name)?;
            tracing::info!(visitor = id, person = %name, "unknown visitor matches an enrolled person: events re-labelled");
            out.push((id, person));
        }
        if !out.is_empty() {
            self.notify(&mut g);
        }
        Ok(out)
    }

    /// The MQTT summary now.
    pub fn summary(&self) -> Summary {
        self.summary_of(&self.lock())
    }

    /// The summary if its local day is not `*day` (which it then becomes): the daemon asks every
    /// minute, so that "today" starts again from zero at midnight, not at the next stranger.
    pub fn summary_on_new_day(&self, day: &mut String) -> Option<Summary> {
        let s = self.summary();
        (s.day != *day).then(|| {
            day.clone_from(&s.day);
            s
        })
    }

    fn summary_of(&self, g: &Inner) -> Summary {
        let now = self.clocks.unix_ms();
        let (day, day_start) = self.clocks.local_day(now);
        let (y, m, d) = crate::base::civil_from_days(day);
        let today: Vec<(&i64, &Cluster)> = g
            .live
            .iter()
            .filter(|(_, c)| c.last_seen >= day_start)
            .collect();
        let most = today
            .iter()
            .max_by(|a, b| a.1.visits.cmp(&b.1.visits).then(b.0.cmp(a.0)))
            .map(|(id, c)| Frequent {
                visitor_id: **id,
                visits: c.visits,
            });
        Summary {
            day: format!("{y:04}-{m:02}-{d:02}"),
            today: today.len() as u32,
            new_today: today
                .iter()
                .filter(|(_, c)| c.first_seen >= day_start)
                .count() as u32,
            total: g.live.len() as u32,
            most_frequent: most,
            last: g.last.clone(),
        }
    }

    /// Live visitors (tests, bench).
    pub fn len(&self) -> usize {
        self.lock().live.len()
    }

    /// No live visitor.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

mod metrics;
#[cfg(test)]
mod tests;
