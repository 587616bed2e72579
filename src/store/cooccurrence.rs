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

/// One item's neighbours: other item number -> score.
pub(crate) type Row = FxHashMap<u32, f32>;

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
        let Some(max) = partners.iter().map(|&(b, _)| b).max() else {
            return;
        };
        let needed = max.max(a) as usize;
        while self.rows.len() <= needed {
            self.rows.push(None);
        }
        let mut added = 0u64;
        if let Some(slot) = self.rows.get_mut(a as usize) {
            let row = Arc::make_mut(slot.get_or_insert_with(Default::default));
            for &(b, p) in partners {
                if p == 0.0 || b == a {
                    continue;
                }
                match row.get_mut(&b) {
                    Some(v) => *v += p,
                    None => {
                        row.insert(b, p);
                        added += 1;
                    }
                }
            }
        }
        self.entries += added;
        self.warm(a, partners);
        for &(b, p) in partners {
            if p == 0.0 || b == a {
                continue;
            }
            self.update(b, a, |v| *v += p, p);
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
        let at = item as usize;
        while self.rows.len() <= at {
            self.rows.push(None);
        }
        let mut added = 0u64;
        if let Some(slot) = self.rows.get_mut(at) {
            let row = Arc::make_mut(slot.get_or_insert_with(Default::default));
            row.reserve(total);
            for &(b, score) in parts.iter().flat_map(|p| p.iter()) {
                if b != item && row.insert(b, score).is_none() {
                    added += 1;
                }
            }
        }
        self.entries += added;
    }

    fn update(&mut self, a: u32, b: u32, on_existing: impl FnOnce(&mut f32), new: f32) {
        let a = a as usize;
        while self.rows.len() <= a {
            self.rows.push(None);
        }
        let slot = self.rows.get_mut(a).expect("rows were just extended");
        let row = Arc::make_mut(slot.get_or_insert_with(Default::default));
        match row.get_mut(&b) {
            Some(v) => on_existing(v),
            None => {
                row.insert(b, new);
                self.entries += 1;
            }
        }
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
            row.retain(|_, v| {
                *v *= alpha;
                *v >= DECAY_FLOOR
            });
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
