//! Co-occurrence index: `co[a][b]`, a symmetric sparse matrix of `f32` scores
//! between item numbers.
//!
//! Rows live in a `CowVec<Option<Arc<Row>>>` indexed by item number: after a
//! freeze, touching one pair copies one chunk of 1024 row pointers per side plus
//! the two rows, never the whole index. Invariant: `co[a][b]` and `co[b][a]` are
//! always updated with the same operations in the same order, so they are
//! bit-identical and `entries` (directed) is always twice the unordered pairs.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::cowvec::CowVec;
use super::DecayReport;

/// One item's neighbours: other item number -> score, and the largest score.
#[derive(Debug, Clone, Default)]
pub(crate) struct Row {
    scores: FxHashMap<u32, f32>,
    /// The largest score (0 when empty), kept exact by every write, so a SIM
    /// reads the row once instead of once for the maximum and once to rank.
    max: f32,
}

impl Row {
    #[cfg(test)]
    pub(crate) fn get(&self, b: &u32) -> Option<&f32> {
        self.scores.get(b)
    }

    pub(crate) fn iter(&self) -> std::collections::hash_map::Iter<'_, u32, f32> {
        self.scores.iter()
    }

    pub(crate) fn len(&self) -> usize {
        self.scores.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// The largest score, exactly `max` over `iter()` (0 when empty).
    pub(crate) fn max(&self) -> f32 {
        self.max
    }

    fn contains_key(&self, b: &u32) -> bool {
        self.scores.contains_key(b)
    }

    /// Sets `co[.][b] = f(old)` (`f(None)` when absent); true if `b` is new.
    #[inline]
    fn write(&mut self, b: u32, f: impl FnOnce(Option<f32>) -> f32) -> bool {
        let (old, new) = match self.scores.get_mut(&b) {
            Some(v) => {
                let old = *v;
                *v = f(Some(old));
                (Some(old), *v)
            }
            None => {
                let new = f(None);
                self.scores.insert(b, new);
                (None, new)
            }
        };
        if new >= self.max || self.scores.len() == 1 {
            self.max = new;
        } else if old == Some(self.max) {
            // The largest score went down (never on the ingest path, where
            // scores only grow): find the new largest.
            self.recompute_max();
        }
        old.is_none()
    }

    fn recompute_max(&mut self) {
        self.max = self.scores.values().copied().fold(0.0, f32::max);
    }
}

/// Scores below this are dropped by decay.
pub(crate) const DECAY_FLOOR: f32 = 1e-6;

/// The whole index.
#[derive(Debug, Default)]
pub(crate) struct CoIndex {
    rows: CowVec<Option<Arc<Row>>>,
    /// Directed entries over all rows.
    entries: u64,
}

impl CoIndex {
    /// An empty index.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The neighbours of `item`, if it has any.
    pub(crate) fn row(&self, item: u32) -> Option<&Row> {
        self.rows
            .get(item as usize)
            .and_then(|r| r.as_deref())
            .filter(|r| !r.is_empty())
    }

    /// `co[a][b] += p` and `co[b][a] += p`. A zero product or `a == b` changes nothing.
    #[cfg(test)]
    pub(crate) fn add(&mut self, a: u32, b: u32, p: f32) {
        self.add_all(a, &[(b, p)]);
    }

    /// `add(a, b, p)` for every `(b, p)` of `partners`, in order, with one
    /// copy-on-write check for row `a` instead of one per pair (the ingest path).
    pub(crate) fn add_all(&mut self, a: u32, partners: &[(u32, f32)]) {
        if partners.is_empty() {
            return;
        }
        let mut added = 0u64;
        let row = self.row_mut(a);
        for &(b, p) in partners {
            if p == 0.0 || b == a {
                continue;
            }
            if row.write(b, |old| old.map_or(p, |v| v + p)) {
                added += 1;
            }
        }
        self.entries += added;
        self.warm(a, partners);
        for &(b, p) in partners {
            if p == 0.0 || b == a {
                continue;
            }
            self.update(b, a, |old| old.map_or(p, |v| v + p));
        }
    }

    /// Read-only lookups of `co[b][a]` for every partner, ahead of the updates.
    /// Each update of another item's row is a chain of dependent cache misses
    /// (row pointer, row header, hash slot); these lean, independent lookups
    /// let the CPU overlap the misses of many partners, so the updates that
    /// follow find their rows in cache. No effect on the result.
    fn warm(&self, a: u32, partners: &[(u32, f32)]) {
        let mut found = 0u32;
        for &(b, _) in partners {
            if let Some(Some(row)) = self.rows.get(b as usize) {
                found = found.wrapping_add(u32::from(row.contains_key(&a)));
            }
        }
        std::hint::black_box(found);
    }

    /// `co[item][b] = score` for every `(b, score)` of each part, with room
    /// made for all of them at once (snapshot load builds most rows in one
    /// call, at their final size). Only this side is written: the caller
    /// writes `co[b][item]` too, keeping the index symmetric.
    pub(crate) fn fill_row(&mut self, item: u32, parts: [&[(u32, f32)]; 2]) {
        let total = parts[0].len() + parts[1].len();
        if total == 0 {
            return;
        }
        let mut added = 0u64;
        let row = self.row_mut(item);
        row.scores.reserve(total);
        for &(b, score) in parts.iter().flat_map(|p| p.iter()) {
            if b != item && row.write(b, |_| score) {
                added += 1;
            }
        }
        self.entries += added;
    }

    fn update(&mut self, a: u32, b: u32, f: impl FnOnce(Option<f32>) -> f32) {
        if self.row_mut(a).write(b, f) {
            self.entries += 1;
        }
    }

    /// Row `item` for writing: created if absent, copied first if a frozen
    /// image shares it.
    fn row_mut(&mut self, item: u32) -> &mut Row {
        let at = item as usize;
        while self.rows.len() <= at {
            self.rows.push(None);
        }
        let slot = self.rows.get_mut(at).expect("rows were just extended");
        Arc::make_mut(slot.get_or_insert_with(Default::default))
    }

    /// Unordered pairs.
    pub(crate) fn pairs(&self) -> u64 {
        self.entries / 2
    }

    /// Multiplies every score by `alpha` and drops those below 1e-6.
    pub(crate) fn decay(&mut self, alpha: f32) -> DecayReport {
        let pairs_before = self.pairs();
        let mut entries = 0u64;
        self.rows.for_each_mut(|slot| {
            let Some(row) = slot else { return };
            let row = Arc::make_mut(row);
            row.scores.retain(|_, v| {
                *v *= alpha;
                *v >= DECAY_FLOOR
            });
            row.recompute_max();
            if row.is_empty() {
                *slot = None;
            } else {
                entries += row.len() as u64;
            }
        });
        self.entries = entries;
        DecayReport {
            pairs_before,
            pairs_after: self.pairs(),
        }
    }

    /// The rows (cheap to clone, for images).
    pub(crate) fn rows(&self) -> &CowVec<Option<Arc<Row>>> {
        &self.rows
    }

    /// Rough heap bytes: ~12 bytes per hash slot at load 7/8, plus row headers.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.rows.heap_bytes() + self.entries as usize * 14 + self.rows.len() * 48
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(co: &CoIndex, a: u32, b: u32) -> Option<f32> {
        co.row(a).and_then(|r| r.get(&b).copied())
    }

    #[test]
    fn add_is_symmetric_and_accumulates() {
        let mut co = CoIndex::new();
        co.add(0, 1, 2.0);
        co.add(1, 0, 3.0);
        assert_eq!(score(&co, 0, 1), Some(5.0));
        assert_eq!(score(&co, 1, 0), Some(5.0));
        assert_eq!(co.pairs(), 1);
    }

    #[test]
    fn zero_product_creates_no_pair() {
        let mut co = CoIndex::new();
        co.add(0, 5, 0.0);
        assert_eq!(co.pairs(), 0);
        assert!(co.row(0).is_none());
        assert!(co.row(5).is_none());
    }

    #[test]
    fn decay_scales_and_drops_pairs_below_the_floor() {
        let mut co = CoIndex::new();
        co.add(0, 1, 1.0);
        co.add(0, 2, 1e-5);
        co.add(3, 2, 100.0);
        let r = co.decay(0.5);
        assert_eq!(
            r,
            DecayReport {
                pairs_before: 3,
                pairs_after: 3
            }
        );
        assert_eq!(score(&co, 0, 1), Some(0.5));
        let r = co.decay(0.1);
        assert_eq!(
            r,
            DecayReport {
                pairs_before: 3,
                pairs_after: 2
            }
        );
        assert_eq!(score(&co, 0, 2), None);
        assert_eq!(score(&co, 2, 0), None);
        assert_eq!(score(&co, 2, 3), Some(5.0));
    }

    #[test]
    fn decay_removes_rows_that_become_empty() {
        let mut co = CoIndex::new();
        co.add(0, 1, 1e-6);
        co.decay(0.5);
        assert!(co.row(0).is_none());
        assert!(co.row(1).is_none());
        assert_eq!(co.pairs(), 0);
    }

    #[test]
    fn each_row_knows_its_largest_score_through_every_write() {
        let check = |co: &CoIndex, when: &str| {
            for item in 0..40 {
                if let Some(r) = co.row(item) {
                    let max = r.iter().map(|(_, &s)| s).fold(f32::NEG_INFINITY, f32::max);
                    assert_eq!(r.max(), max, "row {item} {when}");
                }
            }
        };
        let mut co = CoIndex::new();
        let mut x: u32 = 1;
        for step in 0..400 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let a = (x >> 8) % 40;
            let partners: Vec<(u32, f32)> = (0..(x >> 20) % 6)
                .map(|j| ((a + 1 + j * 7) % 40, ((x >> (j + 3)) % 97) as f32 + 0.5))
                .collect();
            if step % 3 == 0 {
                // Loads set scores, also lower ones over higher ones.
                co.fill_row(a, [&partners, &[]]);
                for &(b, s) in &partners {
                    co.fill_row(b, [&[(a, s)], &[]]);
                }
            } else {
                co.add_all(a, &partners);
            }
            check(&co, &format!("after step {step}"));
            if step % 50 == 49 {
                co.decay(0.01);
                check(&co, &format!("after decay at {step}"));
            }
        }
    }

    #[test]
    fn frozen_rows_keep_old_scores_after_an_add() {
        let mut co = CoIndex::new();
        co.add(0, 1, 1.0);
        let frozen = co.rows().clone();
        co.add(0, 1, 1.0);
        co.add(0, 2, 1.0);
        let old = frozen.get(0).and_then(|r| r.as_deref()).expect("row 0");
        assert_eq!(old.get(&1), Some(&1.0));
        assert_eq!(old.len(), 1);
        assert_eq!(score(&co, 0, 1), Some(2.0));
    }
}
