//! Scoring for SIM / SIMV: vector kernels, a bounded top-k heap, min-max
//! normalisation and fusion. Pure functions over the stores' data.
//!
//! Result order everywhere: score descending (`f32::total_cmp`), ties by id
//! ascending in byte order. NaN scores (only possible when sums overflow to
//! infinity) are never results.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::cooccurrence::{Row, LEADERS_K};
use super::helper::helper_pool;
use super::prefetch::prefetch_ahead;
#[cfg(target_arch = "x86_64")]
use super::quant::idot_avx2;
use super::quant::{has_avx2, idot, QueryCodes};
use super::vectors::{VecChunk, VectorChunks};
use super::{Metric, Scored};

/// Lanes of the unrolled kernels: 8 independent accumulators let the compiler
/// use SIMD registers without reassociating floats itself.
const LANES: usize = 8;

/// A `chunks_exact(LANES)` item as a fixed-size array, so the loop body has no
/// bounds checks and the SLP vectoriser can pack the lanes.
#[inline(always)]
fn lanes(s: &[f32]) -> &[f32; LANES] {
    s.try_into().expect("chunks_exact yields LANES elements")
}

/// Dot product of two equal-length slices.
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let ca = a.chunks_exact(LANES);
    let cb = b.chunks_exact(LANES);
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        let (x, y) = (lanes(x), lanes(y));
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Squared euclidean distance of two equal-length slices.
#[inline]
pub(crate) fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let ca = a.chunks_exact(LANES);
    let cb = b.chunks_exact(LANES);
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    for (x, y) in ca.zip(cb) {
        let (x, y) = (lanes(x), lanes(y));
        for i in 0..LANES {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Euclidean norm.
#[inline]
pub(crate) fn norm(v: &[f32]) -> f32 {
    dot(v, v).sqrt()
}

/// Similarity of a query (with its norm) and a stored vector (with its norm).
/// Cosine of a zero-norm vector is 0.
#[inline]
pub(crate) fn vector_score(metric: Metric, q: &[f32], qn: f32, v: &[f32], vn: f32) -> f32 {
    match metric {
        Metric::Cosine => {
            let d = qn * vn;
            if d == 0.0 {
                0.0
            } else {
                dot(q, v) / d
            }
        }
        Metric::Dot => dot(q, v),
        Metric::L2 => 1.0 / (1.0 + l2_squared(q, v).sqrt()),
    }
}

/// A candidate result borrowing its name from the store or image.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cand<'a> {
    pub(crate) score: f32,
    pub(crate) item: u32,
    pub(crate) name: &'a Arc<str>,
}

/// `Less` when `a` ranks before `b` (higher score, then smaller name).
#[inline]
pub(crate) fn rank(a_score: f32, a_name: &str, b_score: f32, b_name: &str) -> Ordering {
    match b_score.total_cmp(&a_score) {
        Ordering::Equal => a_name.cmp(b_name),
        o => o,
    }
}

/// Heap entry ordered so the *worst* candidate is the maximum (the heap top).
struct Worst<'a>(Cand<'a>);

impl PartialEq for Worst<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Worst<'_> {}
impl PartialOrd for Worst<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Worst<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        rank(self.0.score, &self.0.name[..], other.0.score, &other.0.name[..])
    }
}

/// Keeps the best `k` candidates seen; O(k) memory.
pub(crate) struct TopK<'a> {
    k: usize,
    heap: BinaryHeap<Worst<'a>>,
}

impl<'a> TopK<'a> {
    /// Keeps at most `k` candidates.
    pub(crate) fn new(k: usize) -> Self {
        Self {
            k,
            heap: BinaryHeap::with_capacity(k.min(4096) + 1),
        }
    }

    /// Offers a candidate; `name` is only resolved when the score can enter.
    #[inline]
    pub(crate) fn offer(&mut self, score: f32, item: u32, name: impl FnOnce() -> &'a Arc<str>) {
        if self.k == 0 || score.is_nan() {
            return;
        }
        if self.heap.len() < self.k {
            self.heap.push(Worst(Cand {
                score,
                item,
                name: name(),
            }));
            return;
        }
        let worst = self.heap.peek().expect("heap is full, so not empty").0;
        match score.total_cmp(&worst.score) {
            Ordering::Less => {}
            Ordering::Greater => self.replace_top(score, item, name()),
            Ordering::Equal => {
                let name = name();
                if name[..] < worst.name[..] {
                    self.replace_top(score, item, name);
                }
            }
        }
    }

    /// Candidates kept so far.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// A score below this cannot enter now (`-inf` until `k` are kept; the
    /// threshold only rises). Equal scores may still enter by name.
    pub(crate) fn floor(&self) -> f32 {
        match self.heap.peek() {
            Some(w) if self.heap.len() >= self.k => w.0.score,
            _ if self.k == 0 => f32::INFINITY,
            _ => f32::NEG_INFINITY,
        }
    }

    fn replace_top(&mut self, score: f32, item: u32, name: &'a Arc<str>) {
        if let Some(mut top) = self.heap.peek_mut() {
            *top = Worst(Cand { score, item, name });
        }
    }

    /// The kept candidates, best first.
    pub(crate) fn into_sorted(self) -> Vec<Cand<'a>> {
        self.heap.into_sorted_vec().into_iter().map(|w| w.0).collect()
    }
}

/// The best `k` stored vectors for `q`, excluding item `exclude`.
pub(crate) fn vector_top_k<'a>(
    chunks: &VectorChunks,
    metric: Metric,
    q: &[f32],
    k: usize,
    exclude: Option<u32>,
    name: impl Fn(u32) -> &'a Arc<str> + Sync,
) -> Vec<Cand<'a>> {
    let qn = norm(q);
    let codes = if k == 0 {
        None
    } else {
        QueryCodes::new(metric, q, qn)
    };
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    let avx2 = has_avx2();
    let scan = |part: &[Arc<VecChunk>]| {
        let mut top = TopK::new(k);
        let exact = Exact {
            metric,
            q,
            qn,
            exclude,
            name: &name,
        };
        match &codes {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX2 was detected by `has_avx2`.
            Some(codes) if avx2 => unsafe { first_pass_avx2(chunks.dim, part, codes, &exact, &mut top) },
            Some(codes) => first_pass(chunks.dim, part, codes, &exact, &mut top, idot),
            None => scan_floats(chunks, part, &exact, &mut top),
        }
        top.into_sorted()
    };
    let helper = if chunks.len < PARALLEL_SCAN_MIN_VECTORS || chunks.chunks.len() < 2 {
        None
    } else {
        helper_pool()
    };
    let Some(helper) = helper else {
        return scan(&chunks.chunks[..]);
    };
    // A large exact scan is bound by memory bandwidth; two threads reach
    // more of it than one. Each half keeps its own top k, then they merge.
    let (left, right) = chunks.chunks.split_at(chunks.chunks.len() / 2);
    let mut b = Vec::new();
    // Returns once the helper's half is scanned too; a panic in it is
    // raised here.
    let mut a = helper.in_place_scope(|s| {
        s.spawn(|_| b = scan(right));
        scan(left)
    });
    a.extend(b);
    let mut top = TopK::new(k);
    for c in a {
        top.offer(c.score, c.item, || c.name);
    }
    top.into_sorted()
}

/// What a scan scores vectors against, exactly.
struct Exact<'q, N> {
    metric: Metric,
    q: &'q [f32],
    qn: f32,
    exclude: Option<u32>,
    name: &'q N,
}

/// Offers every vector of `part` but `exclude` to `top`, scored exactly.
fn scan_floats<'a, N: Fn(u32) -> &'a Arc<str>>(
    chunks: &VectorChunks,
    part: &[Arc<VecChunk>],
    exact: &Exact<'_, N>,
    top: &mut TopK<'a>,
) {
    // Most scores cannot enter once the top k is full: compared here
    // with the floor, they skip the call (a score equal to it may still
    // enter by name, so only a lower one is skipped).
    let mut floor = top.floor();
    chunks.scan_part(part, |item, v, vn| {
        // the chunk's values are read in order; past its end the
        // address is only a hint
        prefetch_ahead(v.as_ptr(), v.len() * PREFETCH_VECTORS, v.len());
        let score = vector_score(exact.metric, exact.q, exact.qn, v, vn);
        if score.total_cmp(&floor) != Ordering::Less && Some(item) != exact.exclude {
            top.offer(score, item, || (exact.name)(item));
            floor = top.floor();
        }
    });
}

/// Offers to `top` every vector of `part` but `exclude` whose score can
/// enter it, by the bound its codes give (`quant.rs`): a vector whose upper
/// bound is below the floor of `top` (the `k`-th best exact score so far)
/// cannot enter; every other one is scored exactly and offered. So `top`
/// ends as if every vector had been offered. `kernel` is `idot` or one
/// equal to it.
#[inline(always)]
fn first_pass<'a, N: Fn(u32) -> &'a Arc<str>>(
    dim: usize,
    part: &[Arc<VecChunk>],
    codes: &QueryCodes,
    exact: &Exact<'_, N>,
    top: &mut TopK<'a>,
    kernel: impl Fn(&[i16], &[i8]) -> i32,
) {
    if dim == 0 {
        return;
    }
    // the floor only rises; `-inf` until `top` holds `k`
    let mut floor = f64::from(top.floor());
    for chunk in part {
        let slots = chunk
            .codes
            .chunks_exact(dim)
            .zip(&chunk.quant)
            .zip(chunk.data.chunks_exact(dim))
            .zip(chunk.norms.iter().zip(&chunk.ids));
        for (((c, info), v), (&vn, &id)) in slots {
            // read in order; past the chunk's end the address is only a hint
            prefetch_ahead(c.as_ptr(), dim * PREFETCH_CODES, dim);
            if Some(id) == exact.exclude {
                continue;
            }
            if info.bounded() {
                let (_, hi, p) = codes.bounds(kernel(&codes.codes, c), info, vn);
                // `floor * p` is `-inf` while `floor` is; the bounds' margins
                // are far wider than the rounding of this product
                if hi < floor * p {
                    continue;
                }
            }
            let score = vector_score(exact.metric, exact.q, exact.qn, v, vn);
            top.offer(score, id, || (exact.name)(id));
            floor = f64::from(top.floor());
        }
    }
}

/// `first_pass` with the AVX2 kernel.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn first_pass_avx2<'a, N: Fn(u32) -> &'a Arc<str>>(
    dim: usize,
    part: &[Arc<VecChunk>],
    codes: &QueryCodes,
    exact: &Exact<'_, N>,
    top: &mut TopK<'a>,
) {
    // SAFETY: this function only runs where AVX2 is supported.
    first_pass(dim, part, codes, exact, top, |q, c| unsafe { idot_avx2(q, c) });
}

/// How far ahead the first pass prefetches: 32 vectors of 128 codes.
const PREFETCH_CODES: usize = 32;

/// How far ahead the vector scan prefetches: 8 vectors of 128 values are
/// 4 KiB.
const PREFETCH_VECTORS: usize = 8;

/// Below this many vectors one thread scans alone (waking the helper thread
/// costs more than the second half would).
const PARALLEL_SCAN_MIN_VECTORS: usize = 32 * 1024;

/// The best `k` neighbours in a co-occurrence row, scored `co / max`, where
/// `max` is the row's largest score.
pub(crate) fn events_top_k<'a>(row: &Row, k: usize, name: impl Fn(u32) -> &'a Arc<str>) -> Vec<Cand<'a>> {
    let max = row.max();
    let mut top = TopK::new(k);
    if max > 0.0 && k <= LEADERS_K {
        // A large row's leaders, offered alone, give the answer when the
        // worst of the `k` kept is strictly above every other entry's score
        // (`s / max` is monotone in `s`, so no other entry can enter or tie).
        let others = row.leaders(|item, s| top.offer(s / max, item, || name(item)));
        if let Some(others) = others {
            if top.len() == k && top.floor() > others / max {
                return top.into_sorted();
            }
            top = TopK::new(k);
        }
    }
    if max > 0.0 {
        // `scan` visits at least every entry whose score could enter `top`
        // now (its threshold only rises), and `offer` decides exactly as if
        // every entry were offered.
        row.scan(max, &mut top, TopK::floor, |top, item, s| {
            top.offer(s / max, item, || name(item))
        });
    }
    top.into_sorted()
}

/// Min-max normalises scores to [0, 1]; an all-equal list is clamped instead.
pub(crate) fn normalise(cands: &mut [Cand<'_>]) {
    let (min, max) = cands
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), c| {
            (lo.min(c.score), hi.max(c.score))
        });
    let span = max - min;
    for c in cands {
        c.score = if span > 0.0 && span.is_finite() {
            (c.score - min) / span
        } else {
            c.score.clamp(0.0, 1.0)
        };
    }
}

/// Fusion of the two candidate lists (each already the top `3 * top_k` of its
/// source): normalise each; if both are non-empty score
/// `alpha * vec + beta * ev` (missing = 0), else the non-empty one alone.
pub(crate) fn fuse<'a>(
    mut vec: Vec<Cand<'a>>,
    mut ev: Vec<Cand<'a>>,
    alpha: f32,
    beta: f32,
) -> Vec<Cand<'a>> {
    normalise(&mut vec);
    normalise(&mut ev);
    if vec.is_empty() {
        return ev;
    }
    if ev.is_empty() {
        return vec;
    }
    let mut merged: FxHashMap<u32, Cand<'a>> =
        FxHashMap::with_capacity_and_hasher(vec.len() + ev.len(), Default::default());
    for c in vec {
        merged.insert(
            c.item,
            Cand {
                score: alpha * c.score,
                ..c
            },
        );
    }
    for c in ev {
        merged
            .entry(c.item)
            .and_modify(|m| m.score += beta * c.score)
            .or_insert(Cand {
                score: beta * c.score,
                ..c
            });
    }
    merged.into_values().collect()
}

/// Sorts, cuts to `top_k`, then drops scores below `min_score`.
pub(crate) fn finish(mut cands: Vec<Cand<'_>>, top_k: usize, min_score: Option<f32>) -> Vec<Scored> {
    cands.sort_by(|a, b| rank(a.score, &a.name[..], b.score, &b.name[..]));
    cands.truncate(top_k);
    cands
        .into_iter()
        .filter(|c| !matches!(min_score, Some(m) if c.score < m))
        .map(|c| Scored {
            id: Arc::clone(c.name),
            score: c.score,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::cooccurrence::CoIndex;
    use super::*;

    fn names(v: &[&str]) -> Vec<Arc<str>> {
        v.iter().map(|s| Arc::from(*s)).collect()
    }

    #[test]
    fn kernels_match_the_naive_formulas() {
        let a: Vec<f32> = (0..21).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..21).map(|i| 3.0 - i as f32).collect();
        let d: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let l: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
        assert!((dot(&a, &b) - d).abs() < 1e-3);
        assert!((l2_squared(&a, &b) - l).abs() < 1e-3);
        assert!((norm(&[3.0, 4.0]) - 5.0).abs() < 1e-6);
    }

    #[test]
    fn cosine_of_a_zero_vector_is_zero() {
        assert_eq!(vector_score(Metric::Cosine, &[0.0], 0.0, &[1.0], 1.0), 0.0);
        assert_eq!(vector_score(Metric::L2, &[0.0], 0.0, &[0.0], 0.0), 1.0);
    }

    /// `events_top_k` (which skips blocks of the row below the current
    /// floor) returns exactly what offering every entry would, ties included.
    #[test]
    fn events_top_k_equals_offering_every_entry() {
        let names = item_names(3000);
        let name = |i: u32| &names[i as usize];
        let mut co = CoIndex::new();
        let mut x: u32 = 3;
        for _ in 0..20_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let b = 1 + (x >> 8) % 2999;
            // Few distinct scores, so many ties are broken by name.
            co.add(0, b, ((x >> 20) % 5 + 1) as f32);
        }
        let row = co.row(0).expect("row 0");
        for k in [0, 1, 3, 10, 50, 5000] {
            assert_events_top_k_is_exact(row, k, name, &format!("k = {k}"));
        }
    }

    /// `item0`, `item1`, ... as the interner would name them.
    fn item_names(n: u32) -> Vec<Arc<str>> {
        (0..n).map(|i| Arc::from(format!("item{i}"))).collect()
    }

    /// `events_top_k(row, k)` returns, scores' bits included, what offering
    /// every entry to a `TopK` keeps; returns that.
    fn assert_events_top_k_is_exact<'a>(
        row: &Row,
        k: usize,
        name: impl Fn(u32) -> &'a Arc<str>,
        what: &str,
    ) -> Vec<Cand<'a>> {
        let got = events_top_k(row, k, &name);
        let mut all = TopK::new(k);
        for (b, s) in row.iter() {
            all.offer(s / row.max(), b, || name(b));
        }
        let want = all.into_sorted();
        let ids = |c: &[Cand<'_>]| c.iter().map(|c| (c.item, c.score.to_bits())).collect::<Vec<_>>();
        assert_eq!(ids(&got), ids(&want), "{what}");
        want
    }

    /// Rows that keep leaders, written as the ingest writes them (popular
    /// partners often, scores only growing), answer `events_top_k` exactly
    /// as offering every entry would, and mostly from their leaders.
    #[test]
    fn events_top_k_from_leaders_equals_offering_every_entry() {
        let names = item_names(3000);
        let name = |i: u32| &names[i as usize];
        let mut co = CoIndex::new();
        let mut x: u64 = 11;
        let mut from_leaders = 0;
        for round in 0..60 {
            for _ in 0..500 {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                // Partner drawn Zipf-like over 1..3000, rows 0..4.
                let u = ((x >> 11) as f64) / ((1u64 << 53) as f64);
                let b = 1 + (3000f64.powf(u) as u32).min(2998);
                co.add((x % 4) as u32, 4 + b % 2996, 1.0 + ((x >> 40) % 100) as f32);
            }
            if round % 20 == 19 {
                co.decay(0.5);
            }
            for a in 0..4 {
                let row = co.row(a).expect("row");
                for k in [1, 3, 10, LEADERS_K, LEADERS_K + 1] {
                    let want = assert_events_top_k_is_exact(
                        row,
                        k,
                        name,
                        &format!("row {a}, k = {k}, round {round}"),
                    );
                    let mut floor = None;
                    if k <= LEADERS_K {
                        let others = row.leaders(|_, _| {});
                        floor = others.filter(|&f| want.len() == k && want[k - 1].score > f / row.max());
                    }
                    from_leaders += usize::from(floor.is_some());
                }
            }
        }
        assert!(from_leaders > 500, "answered from leaders {from_leaders} times");
    }

    /// `vector_top_k` returns, scores' bits included, what offering every
    /// vector but `exclude` to a `TopK` keeps.
    fn assert_scan_keeps_what_offering_every_vector_keeps<'a>(
        chunks: &VectorChunks,
        metric: Metric,
        q: &[f32],
        k: usize,
        exclude: Option<u32>,
        name: impl Fn(u32) -> &'a Arc<str> + Sync,
    ) {
        let got = vector_top_k(chunks, metric, q, k, exclude, &name);
        let qn = norm(q);
        let mut all = TopK::new(k);
        chunks.scan(|item, v, vn| {
            if Some(item) != exclude {
                all.offer(vector_score(metric, q, qn, v, vn), item, || name(item));
            }
        });
        let want = all.into_sorted();
        let ids = |c: &[Cand<'_>]| c.iter().map(|c| (c.item, c.score.to_bits())).collect::<Vec<_>>();
        assert_eq!(ids(&got), ids(&want), "{metric:?} k = {k} exclude {exclude:?}");
        // the first pass with the portable kernel too, whatever this CPU runs
        if let Some(codes) = QueryCodes::new(metric, q, qn).filter(|_| k > 0) {
            let exact = Exact {
                metric,
                q,
                qn,
                exclude,
                name: &name,
            };
            let mut top = TopK::new(k);
            first_pass(chunks.dim, &chunks.chunks, &codes, &exact, &mut top, idot);
            assert_eq!(ids(&top.into_sorted()), ids(&want), "portable {metric:?} k = {k}");
        }
    }

    /// The scan skips scores below its top k's floor before offering them;
    /// it must keep what offering every vector keeps: ties broken by name
    /// included, on both halves of a split scan, with an excluded item.
    #[test]
    fn vector_top_k_equals_offering_every_vector() {
        use super::super::vectors::VectorStore;
        // over PARALLEL_SCAN_MIN_VECTORS: a split scan
        let n = 40_000u32;
        // names in another order than the item numbers
        let names: Vec<Arc<str>> = (0..n)
            .map(|i| Arc::from(format!("n{}", (u64::from(i) * 7919) % u64::from(n))))
            .collect();
        let name = |i: u32| &names[i as usize];
        let mut store = VectorStore::new(4);
        let mut x: u32 = 7;
        for item in 0..n {
            // values from {-1, 0, 1}: few distinct vectors, many ties
            let v: Vec<f32> = (0..4)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    ((x >> 16) % 3) as f32 - 1.0
                })
                .collect();
            store.insert(item, &v).expect("insert");
        }
        let chunks = store.chunks();
        let q = [1.0, 0.0, -1.0, 0.0];
        for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
            for exclude in [None, Some(5)] {
                for k in [0, 1, 3, 10, 100] {
                    assert_scan_keeps_what_offering_every_vector_keeps(chunks, metric, &q, k, exclude, name);
                }
            }
        }
    }

    /// With values of every kind the codes' first pass meets (close to the
    /// query and to each other, exact copies whose ties go by name, vectors
    /// with no bound), the scan keeps exactly what scoring every vector keeps.
    #[test]
    fn the_first_pass_over_codes_keeps_what_scoring_every_vector_keeps() {
        use super::super::vectors::VectorStore;
        use crate::protocol::parse::tests::xorshift;
        let mut rng = xorshift(5);
        let mut unit = move || (rng() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
        for (n, dim) in [(40_000u32, 24usize), (3_000, 128)] {
            let names: Vec<Arc<str>> = (0..n)
                .map(|i| Arc::from(format!("n{}", (u64::from(i) * 7919) % u64::from(n))))
                .collect();
            let name = |i: u32| &names[i as usize];
            let q: Vec<f32> = (0..dim).map(|_| unit()).collect();
            let mut store = VectorStore::new(dim);
            for item in 0..n {
                let noise = [1e-1f32, 1e-3, 1e-5, 1e-7][item as usize % 4];
                let v: Vec<f32> = match item % 50 {
                    // no bound: zero, too small, too large
                    0 => vec![0.0; dim],
                    1 => q.iter().map(|x| x * 1e-13).collect(),
                    2 => q.iter().map(|x| x * 1e13).collect(),
                    // exact copies of the query, scaled: equal cosines
                    3 | 4 => q.iter().map(|x| x * 2.0).collect(),
                    // a few values apart from the query
                    _ => q.iter().map(|x| x + noise * unit()).collect(),
                };
                store.insert(item, &v).expect("insert");
            }
            let chunks = store.chunks();
            for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
                for query in [q.clone(), q.iter().map(|x| -x * 3.0).collect()] {
                    for (k, exclude) in [(1, None), (10, Some(7)), (100, None), (2_000, Some(3))] {
                        assert_scan_keeps_what_offering_every_vector_keeps(
                            chunks, metric, &query, k, exclude, name,
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn top_k_keeps_the_best_and_breaks_ties_by_name() {
        let n = names(&["d", "c", "b", "a", "e"]);
        let mut t = TopK::new(3);
        for (i, s) in [1.0, 2.0, 1.0, 1.0, f32::NAN].into_iter().enumerate() {
            t.offer(s, i as u32, || &n[i]);
        }
        let got: Vec<(String, f32)> = t
            .into_sorted()
            .iter()
            .map(|c| (c.name.to_string(), c.score))
            .collect();
        let got: Vec<(&str, f32)> = got.iter().map(|(n, s)| (n.as_str(), *s)).collect();
        assert_eq!(got, vec![("c", 2.0), ("a", 1.0), ("b", 1.0)]);
    }

    #[test]
    fn top_k_resolves_names_only_for_scores_that_can_enter() {
        let n = names(&["a", "b"]);
        let mut t = TopK::new(1);
        t.offer(5.0, 0, || &n[0]);
        t.offer(1.0, 1, || panic!("a lower score never needs its name"));
        assert_eq!(t.into_sorted().len(), 1);
    }

    #[test]
    fn normalise_maps_min_to_zero_and_max_to_one() {
        let n = names(&["a", "b", "c"]);
        let mut c: Vec<Cand<'_>> = [4.0, 2.0, 3.0]
            .into_iter()
            .zip(&n)
            .map(|(score, name)| Cand { score, item: 0, name })
            .collect();
        normalise(&mut c);
        let s: Vec<f32> = c.iter().map(|c| c.score).collect();
        assert_eq!(s, vec![1.0, 0.0, 0.5]);
        let mut eq: Vec<Cand<'_>> = [7.0, 7.0]
            .into_iter()
            .zip(&n)
            .map(|(score, name)| Cand { score, item: 0, name })
            .collect();
        normalise(&mut eq);
        assert!(eq.iter().all(|c| c.score == 1.0));
    }
}
