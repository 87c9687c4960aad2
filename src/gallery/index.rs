//! In-memory search index over every stored embedding.
//!
//! Owned by [`super::Gallery`] and mutated only through it, so it always mirrors the database
//! (the gallery updates it after each committed write). It can also be built directly, which the
//! benchmarks do for a million samples.
//!
//! # Layout and why
//!
//! A scan over 100k f32 embeddings reads 77 MB and is memory bound; the int8 scan reads 19 MB
//! and was 3–4× faster (100k samples: ~2 ms vs ~8 ms of CPU time; numbers and conditions in
//! `benches/gallery.rs`). So positives are kept twice:
//!
//! * int8-quantised, row-major, with a per-row scale (`x ≈ scale · q`): 192 bytes a row, scanned
//!   for every query;
//! * f32 (the normalised embedding), used only to rescore the few rows the int8 scan cannot rule
//!   out.
//!
//! The int8 scan is made **exact**, not just "usually right": for every row we know
//! `err = ‖x − scale·q‖` and for the query `e_q = ‖q − q̂‖`, so by Cauchy–Schwarz
//! `|x·q − x̂·q̂| ≤ ‖x‖·e_q + err·‖q̂‖`. Any person whose best upper bound is below a score
//! already proven exactly cannot win, and everyone else is rescored in f32. The result is
//! therefore identical to [`Index::search_f32`] (a plain f32 scan), which the tests check on
//! random and clustered data.
//!
//! Negative samples are few and are not scanned: they are kept in f32 per person and only looked
//! at when that person is a candidate.
//!
//! # Matching rule
//!
//! A person's score for a query is the cosine similarity to their best positive sample. A
//! person is **rejected** for the query when one of their negative samples is at least as
//! similar as that best positive minus [`IndexOptions::negative_margin`] (default 0: "the face is
//! closer to a face that was wrongly matched to this person than to any real sample of them", a
//! nearest-neighbour rule with the negatives as an "anyone else" class). A larger margin rejects
//! more eagerly.

use std::collections::HashMap;

use crate::vision::EMBEDDING_DIM;

use super::{PersonId, SampleId, SampleKind};

const DIM: usize = EMBEDDING_DIM;

/// Slack added to every int8 error bound to cover f32 rounding in both the approximate and the
/// exact dot products (each is within ~1e-5 of the real value for unit vectors of length 192).
const BOUND_SLACK: f32 = 1e-4;

/// Tuning knobs of the index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndexOptions {
    /// A person is rejected for a query when a negative sample of theirs has similarity
    /// `>= best_positive - negative_margin`. 0 (the default) means "closer to a negative than to
    /// every positive"; a positive margin rejects earlier.
    pub negative_margin: f32,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            negative_margin: 0.0,
        }
    }
}

/// One search result: a person and how similar their best positive sample is to the query.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Match {
    /// The matched person.
    pub person: PersonId,
    /// Their name at the time of the search.
    pub name: String,
    /// Cosine similarity to [`Match::sample`], clamped to [-1, 1] (f32 rounding can take a
    /// face compared with itself a few ulps above 1).
    pub similarity: f32,
    /// The positive sample that matched best.
    pub sample: SampleId,
}

#[derive(Debug, Default)]
struct PersonEntry {
    name: String,
    /// Rows (in the positive arrays) holding this person's positive samples.
    rows: Vec<u32>,
    /// Negative samples: ids, and their normalised embeddings back to back.
    neg_ids: Vec<SampleId>,
    neg_vecs: Vec<f32>,
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Positive(u32),
    Negative(PersonId),
}

/// The search index: see the module documentation.
#[derive(Debug, Default)]
pub struct Index {
    opts: IndexOptions,
    /// int8 rows, `DIM` per row.
    q8: Vec<i8>,
    /// Per row: dequantisation scale.
    scale: Vec<f32>,
    /// Per row: `‖x − scale·q‖`, the quantisation error.
    err: Vec<f32>,
    /// f32 rows (normalised), `DIM` per row; the exact side copy.
    f32s: Vec<f32>,
    row_sample: Vec<SampleId>,
    row_person: Vec<PersonId>,
    slots: HashMap<SampleId, Slot>,
    people: HashMap<PersonId, PersonEntry>,
}

/// Returns `v / ‖v‖`, or `None` for a zero or non-finite vector.
pub fn normalize(v: &[f32]) -> Option<Vec<f32>> {
    let n = dot_f32(v, v).sqrt();
    if !n.is_finite() || n <= f32::MIN_POSITIVE || v.iter().any(|x| !x.is_finite()) {
        return None;
    }
    Some(v.iter().map(|x| x / n).collect())
}

/// Dot product in f32, summed in 8 lanes (auto-vectorises; the same order everywhere, so exact
/// rescoring and the reference scan agree bit for bit).
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, ra) = a.as_chunks::<8>();
    let (cb, rb) = b.as_chunks::<8>();
    for (x, y) in ca.iter().zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Portable int8 dot product against a query widened to i16: products summed pairwise into i32
/// lanes, which LLVM turns into pmaddwd (x86) or smlal (NEON). 192 products of at most 127² fit
/// easily in i32.
#[inline(always)]
fn dot_i8(a: &[i8], q: &[i16; DIM]) -> i32 {
    let mut acc = [0i32; 8];
    for (x, y) in a.as_chunks::<16>().0.iter().zip(q.as_chunks::<16>().0) {
        for l in 0..8 {
            acc[l] += x[2 * l] as i32 * y[2 * l] as i32 + x[2 * l + 1] as i32 * y[2 * l + 1] as i32;
        }
    }
    acc.iter().sum()
}

/// Quantises a unit vector: returns (q, scale, ‖x − scale·q‖).
fn quantize(x: &[f32]) -> ([i8; DIM], f32, f32) {
    let max = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    let mut q = [0i8; DIM];
    let mut e2 = 0f64;
    for (qi, &xi) in q.iter_mut().zip(x) {
        let v = (xi / scale).round().clamp(-127.0, 127.0);
        *qi = v as i8;
        let d = xi as f64 - scale as f64 * v as f64;
        e2 += d * d;
    }
    (q, scale, e2.sqrt() as f32)
}

/// The quantised query and the terms of its error bound.
struct Query {
    q16: [i16; DIM],
    scale: f32,
    /// `‖q − q̂‖`, the query's own quantisation error.
    err: f32,
    /// `‖q̂‖`.
    norm: f32,
}

/// Approximate scores of every row into `ub`: `ub[i]` is an upper bound of the exact
/// similarity of row `i` (approximation plus its error bound). Returns the largest lower bound
/// (approximation minus error bound) over all rows.
fn scan_i8(rows: &[i8], scale: &[f32], err: &[f32], q: &Query, ub: &mut Vec<f32>) -> f32 {
    ub.clear();
    ub.reserve(scale.len());
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { avx2::scan(rows, scale, err, q, ub) };
        }
    }
    let mut max_lb = f32::NEG_INFINITY;
    for ((row, &s), &e) in rows.chunks_exact(DIM).zip(scale).zip(err) {
        let approx = dot_i8(row, &q.q16) as f32 * (s * q.scale);
        let b = q.err + e * q.norm + BOUND_SLACK;
        max_lb = max_lb.max(approx - b);
        ub.push(approx + b);
    }
    max_lb
}

/// Plain f32 scores of every row (the reference scan).
fn scan_f32(rows: &[f32], q: &[f32], out: &mut Vec<f32>) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { avx2::scan_f32(rows, q, out) };
        }
    }
    scan_f32_generic(rows, q, out)
}

#[inline(always)]
fn scan_f32_generic(rows: &[f32], q: &[f32], out: &mut Vec<f32>) -> f32 {
    out.clear();
    out.reserve(rows.len() / DIM);
    let mut max = f32::NEG_INFINITY;
    for row in rows.chunks_exact(DIM) {
        let s = dot_f32(row, q);
        max = max.max(s);
        out.push(s);
    }
    max
}

/// AVX2 versions, chosen at run time (the release build targets baseline x86-64). The int8 scan
/// is explicit because LLVM's auto-vectorisation of the portable version was ~3× slower here
/// (21 vs 67 µs per 1k rows, measured on the loaded dev VM). The f32 one is the same Rust code
/// compiled for AVX2, lane for lane the same arithmetic, so its results are bit-identical.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{BOUND_SLACK, DIM, Query};

    #[target_feature(enable = "avx2")]
    pub(super) fn scan(
        rows: &[i8],
        scale: &[f32],
        err: &[f32],
        q: &Query,
        ub: &mut Vec<f32>,
    ) -> f32 {
        // The query stays in 12 registers of 16 i16 each.
        let mut qv = [_mm256_setzero_si256(); DIM / 16];
        for (v, c) in qv.iter_mut().zip(q.q16.as_chunks::<16>().0) {
            // SAFETY: `c` is 16 i16 = 32 readable bytes; loadu has no alignment requirement.
            *v = unsafe { _mm256_loadu_si256(c.as_ptr().cast()) };
        }
        let mut max_lb = f32::NEG_INFINITY;
        for ((row, &s), &e) in rows.chunks_exact(DIM).zip(scale).zip(err) {
            let (chunks, _) = row.as_chunks::<16>();
            let mut a0 = _mm256_setzero_si256();
            let mut a1 = _mm256_setzero_si256();
            for i in (0..DIM / 16).step_by(2) {
                // SAFETY: each chunk is 16 readable bytes; loadu has no alignment requirement.
                let (x0, x1) = unsafe {
                    (
                        _mm_loadu_si128(chunks[i].as_ptr().cast()),
                        _mm_loadu_si128(chunks[i + 1].as_ptr().cast()),
                    )
                };
                a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_cvtepi8_epi16(x0), qv[i]));
                a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_cvtepi8_epi16(x1), qv[i + 1]));
            }
            let a = _mm256_add_epi32(a0, a1);
            let h = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256::<1>(a));
            let h = _mm_add_epi32(h, _mm_shuffle_epi32::<0b01_00_11_10>(h));
            let h = _mm_add_epi32(h, _mm_shuffle_epi32::<0b10_11_00_01>(h));
            let approx = _mm_cvtsi128_si32(h) as f32 * (s * q.scale);
            let b = q.err + e * q.norm + BOUND_SLACK;
            max_lb = max_lb.max(approx - b);
            ub.push(approx + b);
        }
        max_lb
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn scan_f32(rows: &[f32], q: &[f32], out: &mut Vec<f32>) -> f32 {
        super::scan_f32_generic(rows, q, out)
    }
}

impl Index {
    /// An empty index.
    pub fn new(opts: IndexOptions) -> Index {
        Index {
            opts,
            ..Index::default()
        }
    }

    /// The options this index was built with.
    pub fn options(&self) -> IndexOptions {
        self.opts
    }

    /// Number of samples (positive and negative).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Number of people (with or without samples).
    pub fn people_len(&self) -> usize {
        self.people.len()
    }

    /// Whether there are no samples at all.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Adds or renames a person (a person needs a name before their samples can match).
    pub fn set_person(&mut self, id: PersonId, name: &str) {
        self.people.entry(id).or_default().name = name.to_owned();
    }

    /// Removes a person and all their samples.
    pub fn remove_person(&mut self, id: PersonId) {
        let Some(p) = self.people.get(&id) else {
            return;
        };
        let ids: Vec<SampleId> = p
            .rows
            .iter()
            .map(|&r| self.row_sample[r as usize])
            .chain(p.neg_ids.iter().copied())
            .collect();
        for s in ids {
            self.remove_sample(s);
        }
        self.people.remove(&id);
    }

    /// Adds a sample. `embedding` must have [`EMBEDDING_DIM`] finite values and not be zero; it
    /// is normalised here. Returns false (and adds nothing) when it is not.
    pub fn insert(
        &mut self,
        id: SampleId,
        person: PersonId,
        kind: SampleKind,
        embedding: &[f32],
    ) -> bool {
        if embedding.len() != DIM {
            return false;
        }
        let Some(x) = normalize(embedding) else {
            return false;
        };
        self.remove_sample(id);
        let p = self.people.entry(person).or_default();
        match kind {
            SampleKind::Negative => {
                p.neg_ids.push(id);
                p.neg_vecs.extend_from_slice(&x);
                self.slots.insert(id, Slot::Negative(person));
            }
            SampleKind::Positive => {
                let row = self.scale.len() as u32;
                let (q, s, e) = quantize(&x);
                self.q8.extend_from_slice(&q);
                self.scale.push(s);
                self.err.push(e);
                self.f32s.extend_from_slice(&x);
                self.row_sample.push(id);
                self.row_person.push(person);
                p.rows.push(row);
                self.slots.insert(id, Slot::Positive(row));
            }
        }
        true
    }

    /// Removes a sample if present; returns whether it was.
    pub fn remove_sample(&mut self, id: SampleId) -> bool {
        match self.slots.remove(&id) {
            None => false,
            Some(Slot::Negative(person)) => {
                if let Some(p) = self.people.get_mut(&person)
                    && let Some(i) = p.neg_ids.iter().position(|&s| s == id)
                {
                    p.neg_ids.swap_remove(i);
                    let last = p.neg_ids.len();
                    if i != last {
                        p.neg_vecs
                            .copy_within(last * DIM..(last + 1) * DIM, i * DIM);
                    }
                    p.neg_vecs.truncate(last * DIM);
                }
                true
            }
            Some(Slot::Positive(row)) => {
                let r = row as usize;
                let last = self.scale.len() - 1;
                let person = self.row_person[r];
                if let Some(p) = self.people.get_mut(&person) {
                    p.rows.retain(|&x| x != row);
                }
                if r != last {
                    // Move the last row into the hole and repoint everything that named it.
                    self.q8.copy_within(last * DIM..(last + 1) * DIM, r * DIM);
                    self.f32s.copy_within(last * DIM..(last + 1) * DIM, r * DIM);
                    let moved_sample = self.row_sample[last];
                    let moved_person = self.row_person[last];
                    if let Some(p) = self.people.get_mut(&moved_person) {
                        for x in p.rows.iter_mut().filter(|x| **x as usize == last) {
                            *x = row;
                        }
                    }
                    self.slots.insert(moved_sample, Slot::Positive(row));
                }
                self.scale.swap_remove(r);
                self.err.swap_remove(r);
                self.row_sample.swap_remove(r);
                self.row_person.swap_remove(r);
                self.q8.truncate(last * DIM);
                self.f32s.truncate(last * DIM);
                true
            }
        }
    }

    /// Exact score of one person: `Some((similarity, best sample))`, or `None` when they have no
    /// positive sample or a negative sample rejects them (see the module docs).
    fn score_person(&self, id: PersonId, q: &[f32]) -> Option<(f32, SampleId)> {
        let p = self.people.get(&id)?;
        let mut best: Option<(f32, SampleId)> = None;
        for &r in &p.rows {
            let r = r as usize;
            let s = dot_f32(&self.f32s[r * DIM..(r + 1) * DIM], q);
            // Unit vectors cannot give a non-finite dot product, but a NaN here would win no
            // comparison and could end up as a "similarity" downstream: never let one out.
            if !s.is_finite() {
                continue;
            }
            if best.is_none_or(|(b, _)| s > b) {
                best = Some((s, self.row_sample[r]));
            }
        }
        let (b, sample) = best?;
        let limit = b - self.opts.negative_margin;
        if p.neg_vecs.chunks_exact(DIM).any(|n| dot_f32(n, q) >= limit) {
            return None;
        }
        Some((b, sample))
    }

    /// The `k` best-matching people for `query` (any length-[`EMBEDDING_DIM`] finite vector; it
    /// is normalised here), best first; ties go to the lower person id. People rejected by a
    /// negative sample are left out. Returns nothing for an invalid query.
    ///
    /// Scans the int8 copy, then rescores in f32 only the people the int8 bounds cannot rule
    /// out, so the result equals [`Index::search_f32`]. Timings: the table in
    /// `benches/gallery.rs`.
    pub fn search(&self, query: &[f32], k: usize) -> Vec<Match> {
        let Some(q) = self.prepare(query, k) else {
            return Vec::new();
        };
        let (qq, sq, _) = quantize(&q);
        let qhat: Vec<f32> = qq.iter().map(|&v| v as f32 * sq).collect();
        let query = Query {
            q16: qq.map(i16::from),
            scale: sq,
            err: q
                .iter()
                .zip(&qhat)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>()
                .sqrt(),
            norm: dot_f32(&qhat, &qhat).sqrt(),
        };
        let mut ub = Vec::new();
        let max_lb = scan_i8(&self.q8, &self.scale, &self.err, &query, &mut ub);
        self.select(&q, k, &ub, max_lb)
    }

    /// Same result as [`Index::search`] from a plain f32 scan of every row: the reference the
    /// int8 path is tested and benchmarked against.
    pub fn search_f32(&self, query: &[f32], k: usize) -> Vec<Match> {
        let Some(q) = self.prepare(query, k) else {
            return Vec::new();
        };
        let mut ub = Vec::new();
        let max = scan_f32(&self.f32s, &q, &mut ub);
        self.select(&q, k, &ub, max)
    }

    fn prepare(&self, query: &[f32], k: usize) -> Option<Vec<f32>> {
        if k == 0 || self.scale.is_empty() || query.len() != DIM {
            return None;
        }
        normalize(query)
    }

    /// Threshold rounds over the per-row upper bounds `ub`: every person with a row at or above
    /// `tau` is scored exactly; once `k` accepted people score `>= tau`, nobody unscored can beat
    /// them (all their rows are bounded below `tau`). Otherwise `tau` is lowered and repeated;
    /// in the worst case (everyone rejected) every person is scored once.
    fn select(&self, q: &[f32], k: usize, ub: &[f32], start: f32) -> Vec<Match> {
        let mut scored: HashMap<PersonId, Option<(f32, SampleId)>> = HashMap::new();
        let mut hi = f32::INFINITY;
        let mut tau = start;
        let mut step = 0.02f32;
        loop {
            for (i, &u) in ub.iter().enumerate() {
                if u >= tau && u < hi {
                    let p = self.row_person[i];
                    scored.entry(p).or_insert_with(|| self.score_person(p, q));
                }
            }
            let sure = scored
                .values()
                .filter(|v| v.is_some_and(|(s, _)| s >= tau))
                .count();
            if sure >= k || tau == f32::NEG_INFINITY {
                break;
            }
            hi = tau;
            tau -= step;
            step *= 2.0;
            if tau < -2.0 {
                tau = f32::NEG_INFINITY;
            }
        }
        let mut out: Vec<(PersonId, f32, SampleId)> = scored
            .into_iter()
            .filter_map(|(p, v)| v.map(|(s, id)| (p, s, id)))
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out.truncate(k);
        out.into_iter()
            .map(|(person, similarity, sample)| Match {
                person,
                name: self
                    .people
                    .get(&person)
                    .map(|p| p.name.clone())
                    .unwrap_or_default(),
                // A face compared with its own stored sample gives 1 + a few ulps (f32 rounding
                // of the normalisation and the dot product). Everything downstream (events, the
                // `event.similarity` CHECK, thresholds) relies on [-1, 1]; ranking above used
                // the unclamped value, so ties at 1.0 still go to the truly best row.
                similarity: similarity.clamp(-1.0, 1.0),
                sample,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: &mut u64) -> Vec<f32> {
        let v: Vec<f32> = (0..DIM)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
                    * if *seed & 1 == 0 { 1.0 } else { 3.0 }
            })
            .collect();
        normalize(&v).unwrap()
    }

    /// The Cauchy–Schwarz bound the exact search relies on holds, and is not uselessly loose.
    #[test]
    fn int8_error_bound_holds() {
        let mut seed = 42;
        let mut worst_ratio = 0f32;
        for _ in 0..2000 {
            let x = unit(&mut seed);
            let q = unit(&mut seed);
            let (qx, sx, ex) = quantize(&x);
            let (qq, sq, _) = quantize(&q);
            let qhat: Vec<f32> = qq.iter().map(|&v| v as f32 * sq).collect();
            let e_q = q
                .iter()
                .zip(&qhat)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>()
                .sqrt();
            let nq = dot_f32(&qhat, &qhat).sqrt();
            let approx = dot_i8(&qx, &qq.map(i16::from)) as f32 * sx * sq;
            let bound = e_q + ex * nq + BOUND_SLACK;
            let exact = dot_f32(&x, &q);
            assert!(
                (approx - exact).abs() <= bound,
                "{approx} vs {exact}, bound {bound}"
            );
            assert!(bound < 0.05, "bound {bound} too loose to prune anything");
            worst_ratio = worst_ratio.max((approx - exact).abs() / bound);
        }
        assert!(
            worst_ratio > 0.01,
            "suspiciously exact approximation: is the int8 path used?"
        );
    }

    #[test]
    fn invalid_input_is_not_indexed() {
        let mut idx = Index::new(IndexOptions::default());
        assert!(!idx.insert(
            SampleId(1),
            PersonId(1),
            SampleKind::Positive,
            &[1.0; DIM - 1]
        ));
        assert!(!idx.insert(SampleId(1), PersonId(1), SampleKind::Positive, &[0.0; DIM]));
        assert!(!idx.insert(
            SampleId(1),
            PersonId(1),
            SampleKind::Positive,
            &[f32::INFINITY; DIM]
        ));
        assert!(idx.is_empty());
        assert!(idx.search(&[1.0; DIM], 1).is_empty());
    }

    /// A query equal to a stored sample can score 1 + a few ulps in f32; the index reports
    /// at most 1 (the event table's CHECK refuses anything outside [-1, 1]).
    #[test]
    fn self_similarity_is_clamped_to_one() {
        let mut seed = 11;
        let mut over = 0;
        for i in 0..200 {
            let x = unit(&mut seed);
            if dot_f32(&x, &x) > 1.0 {
                over += 1;
            }
            let mut idx = Index::new(IndexOptions::default());
            idx.insert(SampleId(i), PersonId(1), SampleKind::Positive, &x);
            for m in idx.search(&x, 1).into_iter().chain(idx.search_f32(&x, 1)) {
                assert!(
                    (-1.0..=1.0).contains(&m.similarity),
                    "similarity {} out of range",
                    m.similarity
                );
                assert!(m.similarity > 0.9999);
            }
        }
        assert!(
            over > 0,
            "no vector rounded above 1: the test proves nothing"
        );
    }

    /// The run-time-selected scan (AVX2 here) equals the portable one bit for bit.
    #[test]
    fn simd_scan_matches_portable() {
        let mut seed = 7;
        let mut idx = Index::new(IndexOptions::default());
        for i in 0..500 {
            idx.insert(
                SampleId(i),
                PersonId(i),
                SampleKind::Positive,
                &unit(&mut seed),
            );
        }
        let q = unit(&mut seed);
        let (qq, sq, _) = quantize(&q);
        let query = Query {
            q16: qq.map(i16::from),
            scale: sq,
            err: 0.01,
            norm: 1.0,
        };
        let mut fast = Vec::new();
        let m = scan_i8(&idx.q8, &idx.scale, &idx.err, &query, &mut fast);
        let portable: Vec<f32> = idx
            .q8
            .chunks_exact(DIM)
            .zip(&idx.scale)
            .zip(&idx.err)
            .map(|((r, &s), &e)| dot_i8(r, &query.q16) as f32 * (s * sq) + (0.01 + e + BOUND_SLACK))
            .collect();
        assert_eq!(fast, portable);
        assert!(m.is_finite());
        let mut f = Vec::new();
        scan_f32(&idx.f32s, &q, &mut f);
        let mut g = Vec::new();
        scan_f32_generic(&idx.f32s, &q, &mut g);
        assert_eq!(f, g);
    }
}
