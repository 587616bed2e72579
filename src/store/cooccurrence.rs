//! Co-occurrence index: `co[a][b]`, a symmetric sparse matrix of `f32` scores
//! between item numbers.
//!
//! Rows live in two `CowVec<Option<Arc<Row>>>`, the even and the odd item
//! numbers' ([`RowTable`]), which a batch of events can write on two threads
//! at once ([`CoIndex::add_batch`]). After a freeze, touching one pair copies
//! one chunk of 64 row pointers per side plus the two rows (of a row over
//! one page, 2,048 slots, only the page written: see `Table`), never the whole
//! index. Invariant: `co[a][b]` and `co[b][a]` are always updated with the
//! same operations in the same order, so they are bit-identical and `entries`
//! (directed) is always twice the unordered pairs.

use std::sync::Arc;

use super::cowvec::CowVec;
use super::helper::helper_pool;
use super::prefetch::prefetch;
use super::DecayReport;

/// log2 of the row pointers in a chunk of the [`RowTable`]: 64. An EVENT
/// writes up to a ring's worth of rows, and right after a freeze each of
/// them can copy its chunk: one atomic increment, a cache miss, per pointer.
/// With 1024 pointers a chunk the first EVENT after a freeze of the large
/// bench state took 2.0-2.4 ms in-process, with 64 0.66-0.77 ms; a freeze
/// clones 16 times as many chunk `Arc`s (3,125 for 200,000 items): 0.23 ms
/// instead of 0.07 ms (`examples/profile_load.rs`).
const ROW_CHUNK_BITS: u32 = 6;
/// One half of the [`RowTable`].
type Rows = CowVec<Option<Arc<Row>>, ROW_CHUNK_BITS>;

/// One slot of a row's table: a neighbour's item number (`EMPTY` when the
/// slot is free) and its score.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct Slot {
    key: u32,
    score: f32,
}

/// Key of a free slot. Item numbers never reach it (the interner stops below).
const EMPTY: u32 = u32::MAX;
const FREE: Slot = Slot {
    key: EMPTY,
    score: 0.0,
};
/// Smallest table: 4 slots (half a cache line).
const MIN_SLOTS: usize = 4;

/// log2 of the slots in a page of an overlay: 2,048 slots, 16 KiB. The
/// tests use 16-slot pages, so most of their rows get overlays.
#[cfg(not(test))]
const PAGE_BITS: u32 = 11;
#[cfg(test)]
const PAGE_BITS: u32 = 4;
const PAGE: usize = 1 << PAGE_BITS;
const PAGE_MASK: usize = PAGE - 1;
type Page = [Slot; PAGE];

/// A row's slots: normally one array. A row of more than `PAGE` slots that a
/// frozen image (a SAVE in progress) shares is not copied whole on its first
/// write: it becomes an overlay over the image's row, and each page of
/// `PAGE` slots is copied on its own first write. So an EVENT during a SAVE
/// copies at most a page per row it writes, not whole rows of up to 2 MiB
/// (each copy into fresh memory), while the ingest path outside a save reads
/// one flat array as before. Once the image is gone, writes go straight to
/// the base's pages not copied, and each write batch folds at most
/// [`FOLD_PAGES_PER_BATCH`] copied pages back into the base's array (a row
/// whose pages are all back is one flat array again), so the end of a save
/// does not make the first EVENTs after it copy megabytes each. Decay
/// flattens a row at once.
#[derive(Debug)]
enum Table {
    Flat(Box<[Slot]>),
    Overlay(Box<Overlay>),
}

/// The pages of a row written since a freeze, over the frozen row.
#[derive(Debug)]
struct Overlay {
    /// The row as frozen; its table is flat, of `pages.len() * PAGE` slots.
    base: Arc<Row>,
    /// Page `k`: `None` while slots `k * PAGE ..` are still the base's.
    pages: Box<[Option<Box<Page>>]>,
}

impl Default for Table {
    fn default() -> Self {
        Table::Flat(Box::default())
    }
}

/// A copy is always flat: an overlay is copied by reading it whole (only when
/// an image shares a row that is itself an overlay).
impl Clone for Table {
    fn clone(&self) -> Self {
        match self {
            Table::Flat(s) => Table::Flat(s.clone()),
            Table::Overlay(_) => Table::Flat(self.parts().flatten().copied().collect()),
        }
    }
}

impl Overlay {
    /// The base's array (never an overlay itself: see `overlay_of`).
    fn base(base: &Row) -> &[Slot] {
        match &base.slots {
            Table::Flat(s) => s,
            Table::Overlay(_) => &[],
        }
    }

    /// Page `k` as it reads now.
    fn page(&self, k: usize) -> Option<&[Slot]> {
        match self.pages.get(k)? {
            Some(p) => Some(&p[..]),
            None => Overlay::base(&self.base).get(k * PAGE..(k + 1) * PAGE),
        }
    }

    /// Page `k` for writing: the base's own, once no image shares the base
    /// any more; otherwise a copy of it, made on the page's first write.
    fn page_mut(&mut self, k: usize) -> Option<&mut [Slot]> {
        let page = self.pages.get_mut(k)?;
        if page.is_none() {
            if Arc::get_mut(&mut self.base).is_some() {
                let base = Arc::get_mut(&mut self.base)?;
                return match &mut base.slots {
                    Table::Flat(s) => s.get_mut(k * PAGE..(k + 1) * PAGE),
                    Table::Overlay(_) => None,
                };
            }
            let from = Overlay::base(&self.base).get(k * PAGE..(k + 1) * PAGE)?;
            let mut copy = Box::new([FREE; PAGE]);
            copy.copy_from_slice(from);
            *page = Some(copy);
        }
        page.as_deref_mut().map(|p| &mut p[..])
    }
}

/// Copied pages a write batch folds back into their rows' arrays, once no
/// image shares those rows: 64 pages (1 MiB) in each half of the rows, a few
/// hundred microseconds.
const FOLD_PAGES_PER_BATCH: usize = 64;

impl Table {
    #[inline]
    fn len(&self) -> usize {
        match self {
            Table::Flat(s) => s.len(),
            Table::Overlay(o) => o.pages.len() * PAGE,
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    fn get(&self, i: usize) -> Option<&Slot> {
        match self {
            Table::Flat(s) => s.get(i),
            Table::Overlay(o) => o.page(i >> PAGE_BITS)?.get(i & PAGE_MASK),
        }
    }

    #[inline]
    fn get_mut(&mut self, i: usize) -> Option<&mut Slot> {
        match self {
            Table::Flat(s) => s.get_mut(i),
            Table::Overlay(o) => o.page_mut(i >> PAGE_BITS)?.get_mut(i & PAGE_MASK),
        }
    }

    /// The slots in order, as contiguous runs.
    fn parts(&self) -> impl Iterator<Item = &[Slot]> + '_ {
        let (flat, overlay): (&[Slot], Option<&Overlay>) = match self {
            Table::Flat(s) => (s, None),
            Table::Overlay(o) => (&[], Some(o)),
        };
        let pages = overlay.map_or(0, |o| o.pages.len());
        std::iter::once(flat)
            .filter(|s| !s.is_empty())
            .chain((0..pages).filter_map(move |k| overlay.and_then(|o| o.page(k))))
    }

    /// Calls `f` on each contiguous run of slots, in order: a flat table
    /// (always, outside a save) is one call on one array.
    fn for_each_part(&self, f: impl FnMut(&[Slot])) {
        match self {
            Table::Flat(s) => std::iter::once(&s[..]).for_each(f),
            Table::Overlay(_) => self.parts().for_each(f),
        }
    }

    /// Folds copied pages of an overlay whose base no image shares any more
    /// back into the base's array, at most `budget` of them (which it
    /// lowers); once none is left the table is that array again, flat.
    /// Nothing happens while an image shares the base.
    fn fold(&mut self, budget: &mut usize) {
        let Table::Overlay(o) = self else { return };
        if *budget == 0 {
            return;
        }
        let Some(base) = Arc::get_mut(&mut o.base) else {
            return;
        };
        let Table::Flat(array) = &mut base.slots else {
            return;
        };
        let mut left = 0;
        for (k, page) in o.pages.iter_mut().enumerate() {
            let Some(copied) = page else { continue };
            match array.get_mut(k * PAGE..(k + 1) * PAGE) {
                Some(to) if *budget > 0 => {
                    to.copy_from_slice(&copied[..]);
                    *budget -= 1;
                    *page = None;
                }
                _ => left += 1,
            }
        }
        if left == 0 {
            *self = std::mem::take(&mut base.slots);
        }
    }

    /// Makes the table flat at once: the whole fold, or a copy while an
    /// image still shares the base.
    fn flatten(&mut self) {
        let mut all = usize::MAX;
        self.fold(&mut all);
        if matches!(self, Table::Overlay(_)) {
            *self = self.clone();
        }
    }
}

/// One item's neighbours: other item number -> score, and the largest score.
///
/// An open-addressing table of 8-byte slots with linear probing, at most 3/4
/// full: a lookup usually reads one cache line, whose address is known from
/// the row header alone (so the ingest path can prefetch it), and a SIM reads
/// the row as one contiguous array (as a few, while a save shares it). Scores are only removed by decay, which
/// rebuilds the rows it shrinks, so there are no tombstones.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    slots: Table,
    len: usize,
    /// The largest score (0 when empty), kept exact by every write, so a SIM
    /// reads the row once instead of once for the maximum and once to rank.
    max: f32,
    /// Every entry whose neighbour is not among `leaders` has a score at or
    /// below this (`+inf` while the row keeps no leaders, so a write never
    /// looks at them).
    lead_floor: f32,
    /// The neighbours that can have the row's best scores, kept by rows of
    /// at least [`LEADERS_MIN_SLOTS`] slots: a SIM of up to [`LEADERS_K`]
    /// results reads their scores instead of the whole row.
    leaders: Option<Box<Leaders>>,
}

impl Default for Row {
    fn default() -> Self {
        Row {
            slots: Table::default(),
            len: 0,
            max: 0.0,
            lead_floor: f32::INFINITY,
            leaders: None,
        }
    }
}

/// Rows of at least this many slots keep their leaders: a smaller row is
/// read whole in about a microsecond. The tests' rows are smaller.
#[cfg(not(test))]
const LEADERS_MIN_SLOTS: usize = 1024;
#[cfg(test)]
const LEADERS_MIN_SLOTS: usize = 32;

/// A SIM of up to this many results can be answered from a row's leaders.
pub(crate) const LEADERS_K: usize = 16;

/// Room for leaders: a write that lifts a neighbour above the floor adds it;
/// when full, the best `LEADERS_K` stay and the floor rises to the best
/// score of those let go.
const LEADERS_CAP: usize = 2 * LEADERS_K;

/// The best `LEADERS_K + 1` entries offered, best first (ties: the first
/// offered): the leaders, and the floor of every other entry.
struct Best {
    top: Vec<(f32, u32)>,
    /// A score must be above this to enter (`-inf` until `top` is full).
    bar: f32,
}

impl Default for Best {
    fn default() -> Self {
        Best {
            top: Vec::new(),
            bar: f32::NEG_INFINITY,
        }
    }
}

impl Best {
    /// One compare for most entries of a large row.
    #[inline(always)]
    fn offer(&mut self, score: f32, b: u32) {
        if score > self.bar {
            self.enter(score, b);
        }
    }

    #[inline(never)]
    fn enter(&mut self, score: f32, b: u32) {
        let at = self.top.partition_point(|&(s, _)| s >= score);
        self.top.insert(at, (score, b));
        self.top.truncate(LEADERS_K + 1);
        if self.top.len() > LEADERS_K {
            self.bar = self.top.last().map_or(f32::NEG_INFINITY, |&(s, _)| s);
        }
    }
}

/// A row's leaders: neighbours' item numbers, `EMPTY` where free. Two cache
/// lines, apart from the row header's, touched only by writes of scores
/// above the floor.
#[derive(Debug, Clone)]
#[repr(align(64))]
struct Leaders {
    keys: [u32; LEADERS_CAP],
}

/// Slots examined together when a row is read whole.
const BLOCK: usize = 8;

/// How far ahead a whole-row read prefetches, in blocks (a block is 8 slots,
/// 64 bytes: one prefetch per cache line read). 48 blocks are 3 KiB.
const SCAN_AHEAD_BLOCKS: usize = 48;

/// Bit `i` set when slot `i` of `block` (at most 32 slots) holds an entry.
#[inline]
fn occupied(block: &[Slot]) -> u32 {
    block
        .iter()
        .enumerate()
        .fold(0, |m, (i, s)| m | (u32::from(s.key != EMPTY) << i))
}

/// Home slot of `key` in a table of `mask + 1` slots (Fibonacci hashing).
#[inline]
fn home(key: u32, mask: usize) -> usize {
    let h = u64::from(key).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 32) as usize & mask
}

/// Slots needed for `n` entries at load ≤ 3/4.
fn slots_for(n: usize) -> usize {
    (n.saturating_mul(4) / 3 + 1).next_power_of_two().max(MIN_SLOTS)
}

/// Bits of a hint that hold the address (user-space addresses fit in 56 bits,
/// even with 5-level paging); the bits above hold log2 of the table size.
const HINT_ADDR_BITS: u32 = 56;

/// The address of the slot a lookup of `key` starts at in the table that
/// `hint` (from [`Row::hint`]) describes; `None` for a 0 hint.
#[inline]
fn hinted_line(hint: u64, key: u32) -> Option<usize> {
    if hint == 0 {
        return None;
    }
    let mask = (1usize << (hint >> HINT_ADDR_BITS)) - 1;
    let slots = (hint & ((1 << HINT_ADDR_BITS) - 1)) as usize;
    Some(slots.wrapping_add(home(key, mask) * std::mem::size_of::<Slot>()))
}

impl Row {
    /// The address of this row's slots and log2 of their number, packed in
    /// one word (0 for an empty or overlaid table): what
    /// [`CoIndex::warm`] needs to find a key's first slot line.
    fn hint(&self) -> u64 {
        match &self.slots {
            Table::Flat(s) if !s.is_empty() => {
                (s.as_ptr() as usize as u64) | (u64::from(s.len().trailing_zeros()) << HINT_ADDR_BITS)
            }
            _ => 0,
        }
    }

    #[cfg(test)]
    pub(crate) fn get(&self, b: &u32) -> Option<&f32> {
        self.slot_of(*b).map(|s| &s.score)
    }

    /// `(neighbour, score)` pairs, in table order. Walks the table a block of
    /// `BLOCK` slots at a time, so which slots are free costs a bit mask per
    /// block instead of a hard-to-predict branch per slot.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, f32)> + '_ {
        self.slots
            .parts()
            .flat_map(|p| p.chunks(BLOCK))
            .flat_map(|block| {
                let mut used = occupied(block);
                std::iter::from_fn(move || {
                    let i = used.trailing_zeros() as usize;
                    used &= used.checked_sub(1)?;
                    block.get(i).map(|s| (s.key, s.score))
                })
            })
    }

    /// Calls `f(neighbour, score)` for every entry, in table order (the
    /// order of `iter`), without `iter`'s layers of adaptors.
    pub(crate) fn for_each(&self, mut f: impl FnMut(u32, f32)) {
        self.for_each_block(|block| {
            let mut used = occupied(block);
            while used != 0 {
                if let Some(s) = block.get(used.trailing_zeros() as usize) {
                    f(s.key, s.score);
                }
                used &= used - 1;
            }
        });
    }

    /// Calls `f` with every block of `BLOCK` slots, in table order, and
    /// prefetches `SCAN_AHEAD_BLOCKS` ahead within the part it reads.
    #[inline(always)]
    fn for_each_block(&self, mut f: impl FnMut(&[Slot])) {
        self.slots.for_each_part(|part| {
            for (i, block) in part.chunks(BLOCK).enumerate() {
                if let Some(ahead) = part.get((i + SCAN_AHEAD_BLOCKS) * BLOCK) {
                    prefetch(ahead);
                }
                f(block);
            }
        });
    }

    /// Calls `f(state, neighbour, score)` for the entries of every block of
    /// `BLOCK` slots that holds an entry with `score / div >= floor(state)`
    /// (`floor` is read once per block, before its entries are visited); other
    /// blocks are skipped without a branch per slot. So every entry with
    /// `score / div >= floor(state)` is visited, and a SIM whose top-k already
    /// holds better candidates skips most of a large row cheaply.
    pub(crate) fn scan<S>(
        &self,
        div: f32,
        state: &mut S,
        floor: impl Fn(&S) -> f32,
        mut f: impl FnMut(&mut S, u32, f32),
    ) {
        self.for_each_block(|block| {
            let t = floor(state);
            let hit = block
                .iter()
                .fold(false, |hit, s| hit | ((s.key != EMPTY) & (s.score / div >= t)));
            if hit {
                for s in block.iter().filter(|s| s.key != EMPTY) {
                    f(state, s.key, s.score);
                }
            }
        });
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The largest score, exactly `max` over `iter()` (0 when empty).
    pub(crate) fn max(&self) -> f32 {
        self.max
    }

    /// Index of `b`'s slot, or of the free slot where it would go (the table
    /// must have a free slot).
    #[inline]
    fn probe(&self, b: u32) -> usize {
        let mask = self.slots.len() - 1;
        let mut i = home(b, mask);
        while let Some(s) = self.slots.get(i) {
            if s.key == b || s.key == EMPTY {
                break;
            }
            i = (i + 1) & mask;
        }
        i
    }

    /// Address of the cache line a lookup of `b` reads first (for prefetching).
    #[inline]
    fn line_of(&self, b: u32) -> Option<*const Slot> {
        let mask = self.slots.len().checked_sub(1)?;
        self.slots.get(home(b, mask)).map(|s| s as *const Slot)
    }

    /// Makes room for `extra` more entries without growing again.
    fn reserve(&mut self, extra: usize) {
        let want = slots_for(self.len.saturating_add(extra));
        if want > self.slots.len() {
            self.resize(want);
        }
    }

    /// Grows the table if one more entry would fill it past 3/4 (always when
    /// it has no slots).
    fn make_room(&mut self) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.resize(slots_for(self.len + 1));
        }
    }

    /// Rehashes every entry into a table of `n` slots (a power of two that
    /// holds them at load ≤ 3/4).
    fn resize(&mut self, n: usize) {
        let old = std::mem::replace(&mut self.slots, Table::Flat(vec![FREE; n].into_boxed_slice()));
        for s in old.parts().flatten().filter(|s| s.key != EMPTY) {
            let i = self.probe(s.key);
            if let Some(slot) = self.slots.get_mut(i) {
                *slot = *s;
            }
        }
        // Leaders are neighbours, not slots: they stay valid as the table
        // grows. A row that reaches the size for them (or falls below it)
        // chooses (or drops) them.
        if self.leaders.is_none() != (n < LEADERS_MIN_SLOTS) {
            self.rebuild_leaders();
        }
    }

    /// A row that reads as `shared` and copies its pages from it as they are
    /// written, if `shared` is a flat table of more than one page.
    fn overlay_of(shared: &Arc<Row>) -> Option<Row> {
        match &shared.slots {
            Table::Flat(s) if s.len() > PAGE => Some(Row {
                slots: Table::Overlay(Box::new(Overlay {
                    base: Arc::clone(shared),
                    pages: (0..s.len() / PAGE).map(|_| None).collect(),
                })),
                len: shared.len,
                max: shared.max,
                lead_floor: shared.lead_floor,
                leaders: shared.leaders.clone(),
            }),
            _ => None,
        }
    }

    /// `co[.][b] = score` for every `(b, score)` of `entries` (at most
    /// `count` of them), with room made once: the load path, which fills
    /// most rows in one call. Same result as `write(b, |_| score)` for each.
    fn set_all<'e>(&mut self, entries: impl Iterator<Item = &'e (u32, f32)>, count: usize) {
        let fresh = self.len == 0;
        self.reserve(count);
        // A fresh row of the leaders' size chooses them from the entries as
        // they go in, without a second pass over the table (its leaders are
        // still empty, with a floor of 0, so `note_leader` would take every
        // entry).
        let mut best = (fresh && self.slots.len() >= LEADERS_MIN_SLOTS).then(Best::default);
        let mut replaced = false;
        let mut max = self.max;
        for &(b, score) in entries {
            debug_assert!(b != EMPTY);
            // Only grows if there are more entries than `count` said.
            self.make_room();
            let i = self.probe(b);
            let Some(slot) = self.slots.get_mut(i) else {
                continue;
            };
            if slot.key == b {
                replaced = true;
            } else {
                self.len += 1;
            }
            *slot = Slot { key: b, score };
            max = if self.len == 1 { score } else { max.max(score) };
            match &mut best {
                Some(best) => best.offer(score, b),
                // As `write` keeps them (a no-op without leaders).
                None if score > self.lead_floor => self.note_leader(b),
                None => {}
            }
        }
        if replaced {
            // A replaced score may have been the largest.
            self.recompute_max();
        } else {
            self.max = max;
        }
        // A fresh row chooses its leaders from what was offered (from the
        // table if an entry was replaced: `best` saw its old score too).
        // Any other row kept them entry by entry, as `write` does: a run of
        // pairs that spans load batches fills its row in several calls.
        match best {
            Some(best) if !replaced => self.set_leaders(best),
            Some(_) => self.rebuild_leaders(),
            None => {}
        }
    }

    /// Sets `co[.][b] = f(old)` (`f(None)` when absent); true if `b` is new.
    #[inline]
    fn write(&mut self, b: u32, f: impl FnOnce(Option<f32>) -> f32) -> bool {
        debug_assert!(b != EMPTY);
        if self.slots.is_empty() {
            self.make_room();
        }
        let mut i = self.probe(b);
        let present = self.slots.get(i).is_some_and(|s| s.key == b);
        if !present {
            self.make_room();
            i = self.probe(b);
        }
        let Some(slot) = self.slots.get_mut(i) else {
            return false;
        };
        let old = present.then_some(slot.score);
        let new = f(old);
        *slot = Slot { key: b, score: new };
        if old.is_none() {
            self.len += 1;
        }
        if new >= self.max || self.len == 1 {
            self.max = new;
        } else if old == Some(self.max) {
            // The largest score went down (never on the ingest path, where
            // scores only grow): find the new largest.
            self.recompute_max();
        }
        if new > self.lead_floor {
            self.note_leader(b);
        }
        old.is_none()
    }

    /// Keeps the leaders' invariant after `b`'s score rose above the floor:
    /// `b` becomes a leader if it is not one.
    #[inline(never)]
    fn note_leader(&mut self, b: u32) {
        let Some(leaders) = self.leaders.as_deref_mut() else {
            return;
        };
        if leaders.keys.iter().fold(false, |found, &k| found | (k == b)) {
            return;
        }
        if let Some(free) = leaders.keys.iter_mut().find(|k| **k == EMPTY) {
            *free = b;
            return;
        }
        self.compact_leaders(b);
    }

    /// Full leaders and one more, `b`: the best `LEADERS_K` by score stay,
    /// and the floor rises to the best score of the others (never falls:
    /// entries let go earlier may score above those let go now).
    #[cold]
    fn compact_leaders(&mut self, b: u32) {
        let Some(leaders) = self.leaders.as_deref() else {
            return;
        };
        let mut best = Best::default();
        for k in leaders.keys.iter().copied().chain(std::iter::once(b)) {
            if let Some(s) = self.score_of(k) {
                best.offer(s, k);
            }
        }
        let floor = self.lead_floor;
        self.set_leaders(best);
        self.lead_floor = self.lead_floor.max(floor);
    }

    /// Chooses the leaders afresh from every entry (a row that just reached
    /// [`LEADERS_MIN_SLOTS`], one filled by a load, or one decayed), or drops
    /// them from a row below that size.
    fn rebuild_leaders(&mut self) {
        if self.slots.len() < LEADERS_MIN_SLOTS {
            self.leaders = None;
            self.lead_floor = f32::INFINITY;
            return;
        }
        let mut best = Best::default();
        if self.len > 0 {
            self.for_each(|k, s| best.offer(s, k));
        }
        self.set_leaders(best);
    }

    /// Leaders chosen from `best`, which was offered every entry.
    fn set_leaders(&mut self, best: Best) {
        let mut keys = [EMPTY; LEADERS_CAP];
        for (to, &(_, k)) in keys.iter_mut().zip(best.top.iter().take(LEADERS_K)) {
            *to = k;
        }
        self.lead_floor = best.top.get(LEADERS_K).map_or(0.0, |&(s, _)| s);
        self.leaders = Some(Box::new(Leaders { keys }));
    }

    /// `b`'s score, if `b` is a neighbour.
    fn score_of(&self, b: u32) -> Option<f32> {
        self.slot_of(b).map(|s| s.score)
    }

    /// `b`'s slot, if `b` is a neighbour.
    fn slot_of(&self, b: u32) -> Option<&Slot> {
        if self.slots.is_empty() || b == EMPTY {
            return None;
        }
        self.slots.get(self.probe(b)).filter(|s| s.key == b)
    }

    /// For a SIM of at most [`LEADERS_K`] results: calls `f(neighbour,
    /// score)` for each leader, and returns the score every other entry is
    /// at or below. `None` (and no calls) when the row keeps no leaders.
    pub(crate) fn leaders(&self, mut f: impl FnMut(u32, f32)) -> Option<f32> {
        let leaders = self.leaders.as_deref()?;
        for &k in leaders.keys.iter().filter(|&&k| k != EMPTY) {
            if let Some(s) = self.score_of(k) {
                f(k, s);
            }
        }
        Some(self.lead_floor)
    }

    fn recompute_max(&mut self) {
        self.max = self.iter().map(|(_, s)| s).fold(0.0, f32::max);
    }

    /// Multiplies every score by `alpha`, drops those below `DECAY_FLOOR`, and
    /// rebuilds the table if any were dropped.
    fn decay(&mut self, alpha: f32) {
        let mut dropped = false;
        self.slots.flatten();
        let Table::Flat(slots) = &mut self.slots else {
            return;
        };
        for s in slots.iter_mut().filter(|s| s.key != EMPTY) {
            s.score *= alpha;
            if s.score < DECAY_FLOOR {
                // Freed in place: that breaks probe runs, so the table is
                // rebuilt below before any lookup.
                *s = FREE;
                self.len -= 1;
                dropped = true;
            }
        }
        if dropped {
            if self.len == 0 {
                self.slots = Table::default();
            } else {
                self.resize(slots_for(self.len));
            }
        }
        self.recompute_max();
        // Scaled scores keep their order, but the floor must scale too, and
        // dropped leaders make room.
        self.rebuild_leaders();
    }
}

/// Scores below this are dropped by decay.
pub(crate) const DECAY_FLOOR: f32 = 1e-6;

/// Rows by item number: the even items' rows in one copy-on-write vector and
/// the odd items' in another, so that a batch of events can write the two
/// halves on two threads at once ([`CoIndex::add_batch`]). Items' popularity
/// does not depend on the parity of the numbers they were given in order of
/// first use, so the halves take about the same share of writes.
#[derive(Debug, Clone, Default)]
pub(crate) struct RowTable {
    halves: [Rows; 2],
}

impl RowTable {
    /// Row `item`'s slot, if the table reaches that far.
    pub(crate) fn get(&self, item: usize) -> Option<&Option<Arc<Row>>> {
        self.halves.get(item & 1)?.get(item >> 1)
    }

    /// Every item number with a slot is below this.
    pub(crate) fn end(&self) -> usize {
        self.halves.iter().map(Rows::len).max().unwrap_or(0) * 2
    }

    /// Every slot with its item number (the even items first).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, &Option<Arc<Row>>)> + '_ {
        self.halves
            .iter()
            .enumerate()
            .flat_map(|(parity, half)| half.iter().enumerate().map(move |(k, r)| (k << 1 | parity, r)))
    }

    /// Row slots in both halves.
    fn len(&self) -> usize {
        self.halves.iter().map(Rows::len).sum()
    }

    fn heap_bytes(&self) -> usize {
        self.halves.iter().map(Rows::heap_bytes).sum()
    }
}

/// The whole index.
#[derive(Debug, Default)]
pub(crate) struct CoIndex {
    rows: RowTable,
    /// Directed entries over all rows.
    entries: u64,
    /// Per item, split by parity like the rows: where its row's slots were
    /// when last written (see [`Row::hint`]), so the ingest can prefetch a
    /// partner's slot line without waiting for the partner's row header
    /// first. Only ever used as a prefetch address: a stale hint costs a
    /// useless prefetch, never a wrong result.
    hints: [Vec<u64>; 2],
}

/// Batches of at least this many events are written on two threads when
/// [`CoIndex::add_batch`] is allowed to.
pub(crate) const MIN_SPLIT_EVENTS: usize = 64;

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
    /// copy-on-write check for row `a` instead of one per pair (what
    /// [`Self::add_batch`] does for each event).
    #[cfg(test)]
    pub(crate) fn add_all(&mut self, a: u32, partners: &[(u32, f32)]) {
        let mut w = self.writer();
        w.add_all(a, partners);
        let added = w.added;
        self.entries += added;
    }

    /// `add_all(a, partners[range])` for every `(a, range)` of `events`, in
    /// order. With `split`, and at least [`MIN_SPLIT_EVENTS`] events, the odd
    /// items' rows are written on a second thread while this one writes the
    /// even items' rows. Every row still gets its writes in the same order
    /// (all of them come from the events in order), so the index is the same
    /// bit for bit either way.
    pub(crate) fn add_batch(
        &mut self,
        events: &[(u32, std::ops::Range<usize>)],
        partners: &[(u32, f32)],
        split: bool,
    ) {
        let run = |mut w: Writer<'_>| {
            for (a, range) in events {
                w.add_all(*a, partners.get(range.clone()).unwrap_or(&[]));
            }
            w.added
        };
        // Without the helper thread (too few events, not allowed, or
        // none to be had) both halves are written here.
        let pool = if split && events.len() >= MIN_SPLIT_EVENTS {
            helper_pool()
        } else {
            None
        };
        let Some(pool) = pool else {
            let added = run(self.writer());
            self.entries += added;
            return;
        };
        let [r0, r1] = &mut self.rows.halves;
        let [h0, h1] = &mut self.hints;
        let mut odd = 0;
        // Returns once the spawned half is written too; a panic in it is
        // raised here.
        let even = pool.in_place_scope(|s| {
            s.spawn(|_| odd = run(Writer::only(1, r1, h1)));
            run(Writer::only(0, r0, h0))
        });
        self.entries += even + odd;
    }

    /// Writes to both halves.
    fn writer(&mut self) -> Writer<'_> {
        let [r0, r1] = &mut self.rows.halves;
        let [h0, h1] = &mut self.hints;
        Writer {
            halves: [Some(Half::new(r0, h0)), Some(Half::new(r1, h1))],
            added: 0,
        }
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
        let mut w = self.writer();
        let Some(half) = w.half(item) else {
            return;
        };
        let added = half.with_row(item, |row| {
            let before = row.len();
            row.set_all(
                parts.iter().flat_map(|p| p.iter()).filter(|&&(b, _)| b != item),
                total,
            );
            (row.len() - before) as u64
        });
        self.entries += added;
    }

    /// Unordered pairs.
    pub(crate) fn pairs(&self) -> u64 {
        self.entries / 2
    }

    /// Multiplies every score by `alpha` and drops those below 1e-6.
    pub(crate) fn decay(&mut self, alpha: f32) -> DecayReport {
        let pairs_before = self.pairs();
        let mut entries = 0u64;
        for half in &mut self.rows.halves {
            half.for_each_mut(|slot| {
                let Some(row) = slot else { return };
                let row = Arc::make_mut(row);
                row.decay(alpha);
                if row.is_empty() {
                    *slot = None;
                } else {
                    entries += row.len() as u64;
                }
            });
        }
        self.entries = entries;
        // Decay rebuilt the rows it shrank: hint where they are now.
        for (hints, rows) in self.hints.iter_mut().zip(&self.rows.halves) {
            *hints = rows
                .iter()
                .map(|row| row.as_ref().map_or(0, |r| r.hint()))
                .collect();
        }
        DecayReport {
            pairs_before,
            pairs_after: self.pairs(),
        }
    }

    /// The rows (cheap to clone, for images).
    pub(crate) fn rows(&self) -> &RowTable {
        &self.rows
    }

    /// Rough heap bytes: 8-byte slots at load 3/8..3/4 (~14 bytes per entry),
    /// plus row headers (56 bytes with the `Arc`'s counts; a large row's
    /// leaders, 128 bytes, are left out: at most 1/64 of its slots).
    pub(crate) fn heap_bytes(&self) -> usize {
        let hints: usize = self.hints.iter().map(Vec::capacity).sum();
        self.rows.heap_bytes() + self.entries as usize * 14 + self.rows.len() * 56 + hints * 8
    }
}

/// One half of the rows (the even or the odd items) and their hints, for
/// writing.
struct Half<'a> {
    rows: &'a mut Rows,
    hints: &'a mut Vec<u64>,
    /// Copied pages this writer may still fold back (see [`Table::fold`]).
    fold_budget: usize,
}

impl<'a> Half<'a> {
    fn new(rows: &'a mut Rows, hints: &'a mut Vec<u64>) -> Self {
        Half {
            rows,
            hints,
            fold_budget: FOLD_PAGES_PER_BATCH,
        }
    }
}

impl Half<'_> {
    /// `f` on row `item` (created if absent, copied first if a frozen image
    /// shares it), then its hint updated.
    fn with_row<R>(&mut self, item: u32, f: impl FnOnce(&mut Row) -> R) -> R {
        let at = (item >> 1) as usize;
        while self.rows.len() <= at {
            self.rows.push(None);
        }
        let slot = self.rows.get_mut(at).expect("rows were just extended");
        let row = slot.get_or_insert_with(Default::default);
        if Arc::strong_count(row) > 1 {
            // Shared with an image: a large flat row gets an overlay
            // instead of a copy; anything else is copied (flat).
            if let Some(overlay) = Row::overlay_of(row) {
                *row = Arc::new(overlay);
            }
        }
        let row = Arc::make_mut(row);
        row.slots.fold(&mut self.fold_budget);
        let out = f(row);
        let hint = row.hint();
        if self.hints.len() <= at {
            self.hints.resize(at + 1, 0);
        }
        if let Some(h) = self.hints.get_mut(at) {
            *h = hint;
        }
        out
    }

    /// Prefetches, ahead of its update, what `co[b][a]` will read: row `b`'s
    /// header and the slot its lookup of `a` starts at, the latter found
    /// from `b`'s hint rather than its header, so both misses are in flight
    /// at once. No effect on the result.
    fn warm(&self, a: u32, b: u32) {
        let at = (b >> 1) as usize;
        if let Some(Some(row)) = self.rows.get(at) {
            prefetch(Arc::as_ptr(row));
        }
        if let Some(line) = self.hints.get(at).and_then(|&h| hinted_line(h, a)) {
            prefetch(line as *const u8);
        }
    }
}

/// Writes to the rows of one half or of both, counting the entries added.
struct Writer<'a> {
    /// Indexed by parity; `None` for a half another thread writes.
    halves: [Option<Half<'a>>; 2],
    added: u64,
}

impl<'a> Writer<'a> {
    /// Writes to half `parity` only.
    fn only(parity: usize, rows: &'a mut Rows, hints: &'a mut Vec<u64>) -> Self {
        let mut halves = [None, None];
        if let Some(h) = halves.get_mut(parity) {
            *h = Some(Half::new(rows, hints));
        }
        Writer { halves, added: 0 }
    }

    /// The half holding row `item`, if this writer writes it.
    fn half(&mut self, item: u32) -> Option<&mut Half<'a>> {
        self.halves.get_mut((item & 1) as usize)?.as_mut()
    }

    /// `co[a][b] += p` and `co[b][a] += p` for every `(b, p)` of `partners`
    /// (skipping zero products and `b == a`), in order, in the rows this
    /// writer writes.
    fn add_all(&mut self, a: u32, partners: &[(u32, f32)]) {
        if partners.is_empty() {
            return;
        }
        if let Some(half) = self.half(a) {
            self.added += half.with_row(a, |row| {
                for &(b, _) in partners {
                    if let Some(p) = row.line_of(b) {
                        prefetch(p);
                    }
                }
                let mut added = 0u64;
                for &(b, p) in partners {
                    if p != 0.0 && b != a && row.write(b, |old| old.map_or(p, |v| v + p)) {
                        added += 1;
                    }
                }
                added
            });
        }
        // Each update of another item's row is otherwise a chain of
        // dependent cache misses (row header, then slot): start them all.
        for &(b, _) in partners {
            if let Some(half) = self.halves.get((b & 1) as usize).and_then(Option::as_ref) {
                half.warm(a, b);
            }
        }
        for &(b, p) in partners {
            if p == 0.0 || b == a {
                continue;
            }
            if let Some(half) = self.half(b) {
                let added = half.with_row(b, |row| row.write(a, |old| old.map_or(p, |v| v + p)));
                self.added += u64::from(added);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A seeded stream of numbers below `m` (a linear congruential generator).
    fn numbers(seed: u64) -> impl FnMut(u64) -> u64 {
        let mut x = seed;
        move |m| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 33) % m
        }
    }

    fn score(co: &CoIndex, a: u32, b: u32) -> Option<f32> {
        co.row(a).and_then(|r| r.get(&b).copied())
    }

    /// A row keeps leaders exactly when it is large enough, reports their
    /// scores as stored, and every other entry scores at or below the floor.
    fn assert_leaders_hold(row: &Row) {
        let mut leaders = Vec::new();
        let floor = row.leaders(|b, s| leaders.push((b, s)));
        assert_eq!(
            floor.is_some(),
            row.slots.len() >= LEADERS_MIN_SLOTS,
            "leaders kept by size"
        );
        let Some(floor) = floor else { return };
        assert!(leaders.len() <= LEADERS_CAP);
        for (b, s) in row.iter() {
            match leaders.iter().find(|&&(l, _)| l == b) {
                Some(&(_, ls)) => assert_eq!(ls.to_bits(), s.to_bits(), "leader {b}"),
                None => assert!(s <= floor, "{b} scores {s}, above the floor {floor}"),
            }
        }
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
                    let max = r.iter().map(|(_, s)| s).fold(f32::NEG_INFINITY, f32::max);
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

    /// Once the image is gone, a write batch folds at most
    /// `FOLD_PAGES_PER_BATCH` copied pages back; writes to pages not copied
    /// go to the base's array, copying nothing; every score reads right
    /// throughout, and the row ends up flat.
    #[test]
    fn after_the_image_copied_pages_fold_back_a_budget_at_a_time() {
        let mut co = CoIndex::new();
        let n: u32 = 4000;
        let partners: Vec<(u32, f32)> = (1..=n).map(|b| (b, 1.0)).collect();
        co.add_all(0, &partners);
        let mut want: HashMap<u32, f32> = partners.iter().copied().collect();
        let copied = |co: &CoIndex| match &co.row(0).expect("row 0").slots {
            Table::Overlay(o) => Some(o.pages.iter().filter(|p| p.is_some()).count()),
            Table::Flat(_) => None,
        };
        let check = |co: &CoIndex, want: &HashMap<u32, f32>, when: &str| {
            let row = co.row(0).expect("row 0");
            assert_eq!(row.len(), want.len(), "{when}");
            for (b, s) in want {
                assert_eq!(row.get(b), Some(s), "{b} {when}");
            }
        };
        let frozen = co.rows().clone();
        // One write per partner copies every page that holds an entry.
        co.add_all(0, &partners);
        for s in want.values_mut() {
            *s += 1.0;
        }
        let all = copied(&co).expect("an overlay");
        assert!(all > 2 * FOLD_PAGES_PER_BATCH, "{all} pages copied");
        drop(frozen);

        co.add(0, 1, 1.0);
        *want.entry(1).or_default() += 1.0;
        assert_eq!(copied(&co), Some(all - FOLD_PAGES_PER_BATCH), "one budget folded");
        check(&co, &want, "after one fold");
        // Pages not copied (any more) take writes in place: nothing is copied.
        co.add_all(0, &partners);
        for s in want.values_mut() {
            *s += 1.0;
        }
        assert_eq!(copied(&co), Some(all - 2 * FOLD_PAGES_PER_BATCH));
        check(&co, &want, "after writes through the overlay");
        for _ in 0..all {
            co.add(0, 2, 1.0);
            *want.entry(2).or_default() += 1.0;
        }
        assert_eq!(copied(&co), None, "flat again");
        check(&co, &want, "once flat");
        let frozen = co.rows().clone();
        co.add(0, 3, 1.0);
        assert_eq!(copied(&co), Some(1), "a new image: copies again");
        drop(frozen);
    }

    /// A large row shared with an image: its first write copies one page
    /// into an overlay, not the row; the image keeps every old score; once
    /// the image is gone the next write folds the overlay back into one
    /// array, and a decay flattens an overlay whose base is still shared.
    #[test]
    fn a_write_to_a_frozen_large_row_copies_one_page() {
        let mut co = CoIndex::new();
        let partners: Vec<(u32, f32)> = (1..=300).map(|b| (b, 1.0)).collect();
        co.add_all(0, &partners);
        let frozen = co.rows().clone();
        let old = |item: usize| frozen.get(item).and_then(|r| r.as_deref()).expect("row");
        let copied = |co: &CoIndex| match &co.row(0).expect("row 0").slots {
            Table::Overlay(o) => Some(o.pages.iter().filter(|p| p.is_some()).count()),
            Table::Flat(_) => None,
        };
        co.add(0, 7, 2.0);
        assert_eq!(copied(&co), Some(1), "one page copied");
        co.add(0, 7, 1.0);
        assert_eq!(copied(&co), Some(1), "the same page again: no copy");
        assert_eq!(old(0).get(&7), Some(&1.0));
        assert_eq!(score(&co, 0, 7), Some(4.0));
        for b in 1..=300 {
            assert_eq!(old(0).get(&b), Some(&1.0), "frozen {b}");
            assert_eq!(score(&co, 0, b), Some(if b == 7 { 4.0 } else { 1.0 }), "live {b}");
        }
        drop(frozen);
        co.add(0, 8, 1.0);
        assert_eq!(copied(&co), None, "folded back after the image went");
        assert_eq!(score(&co, 0, 7), Some(4.0));
        assert_eq!(score(&co, 0, 8), Some(2.0));
        assert_eq!(co.row(0).expect("row 0").len(), 300);

        let frozen = co.rows().clone();
        co.add(0, 9, 1.0);
        assert_eq!(copied(&co), Some(1));
        co.decay(0.5);
        assert_eq!(copied(&co), None, "decay works on a flat copy");
        let old = frozen.get(0).and_then(|r| r.as_deref()).expect("row");
        assert_eq!(old.get(&9), Some(&1.0));
        assert_eq!(score(&co, 0, 9), Some(1.0));
        assert_eq!(score(&co, 0, 7), Some(2.0));
    }

    /// Images taken between writes (and dropped in between) keep exactly
    /// what the rows held when they were taken, through overlays, folds,
    /// growth, loads and decays, and the live rows follow every write.
    #[test]
    fn images_keep_their_rows_through_any_later_writes() {
        use std::collections::BTreeMap;
        type Model = BTreeMap<(u32, u32), f32>;
        fn read(rows: &RowTable) -> Model {
            (0..12u32)
                .flat_map(|a| {
                    rows.get(a as usize)
                        .and_then(|r| r.as_deref())
                        .into_iter()
                        .flat_map(move |r| {
                            let mut each = Vec::new();
                            r.for_each(|b, s| each.push((b, s)));
                            assert!(r.iter().eq(each.iter().copied()), "for_each and iter of row {a}");
                            assert_leaders_hold(r);
                            r.iter().map(move |(b, s)| ((a, b), s))
                        })
                })
                .collect()
        }
        let mut co = CoIndex::new();
        let mut model = Model::new();
        let mut images: Vec<(RowTable, Model)> = Vec::new();
        let mut next = numbers(99);
        let mut overlays = 0;
        for step in 0..3_000 {
            match next(20) {
                0 => images.push((co.rows().clone(), read(co.rows()))),
                1 if !images.is_empty() => {
                    let i = next(images.len() as u64) as usize;
                    images.remove(i);
                }
                2 if step % 7 == 0 => {
                    co.decay(0.9);
                    model.values_mut().for_each(|v| *v *= 0.9);
                    model.retain(|_, v| *v >= DECAY_FLOOR);
                }
                3 => {
                    let a = next(12) as u32;
                    let part: Vec<(u32, f32)> = (0..next(40)).map(|k| (100 + k as u32 * 3, 2.0)).collect();
                    co.fill_row(a, [&part, &[]]);
                    for &(b, v) in &part {
                        model.insert((a, b), v);
                    }
                }
                _ => {
                    let a = next(12) as u32;
                    let partners: Vec<(u32, f32)> = (0..next(50))
                        .map(|_| (next(12) as u32 + next(3) as u32 * 40, 1.0 + next(9) as f32))
                        .collect();
                    co.add_all(a, &partners);
                    for &(b, p) in &partners {
                        if b != a {
                            *model.entry((a, b)).or_insert(0.0) += p;
                            if b < 12 {
                                *model.entry((b, a)).or_insert(0.0) += p;
                            }
                        }
                    }
                }
            }
            overlays += (0..12)
                .filter(|&a| matches!(co.row(a).map(|r| &r.slots), Some(Table::Overlay(_))))
                .count();
            // Every flat row's hint leads where its own lookups start.
            for a in 0..200u32 {
                let Some(row) = co.rows().get(a as usize).and_then(|r| r.as_deref()) else {
                    continue;
                };
                if let Table::Flat(_) = row.slots {
                    let hint = co.hints[(a & 1) as usize]
                        .get((a >> 1) as usize)
                        .copied()
                        .unwrap_or(0);
                    for key in [0, 7, a, 1000] {
                        let want = row.line_of(key).map(|p| p as usize);
                        assert_eq!(hinted_line(hint, key), want, "hint of row {a} at step {step}");
                    }
                }
            }
            if step % 50 == 0 {
                assert_eq!(read(co.rows()), model, "live rows at step {step}");
                for (k, (rows, want)) in images.iter().enumerate() {
                    assert_eq!(&read(rows), want, "image {k} at step {step}");
                }
            }
        }
        for (k, (rows, want)) in images.iter().enumerate() {
            assert_eq!(&read(rows), want, "image {k} at the end");
        }
        assert!(model.len() > 200, "rows grew past a page");
        assert!(overlays > 100, "overlays were made: {overlays}");
    }

    /// The row table against a `BTreeMap` model through inserts, updates
    /// (also lowering ones), growth, loads and decays that drop entries.
    #[test]
    fn the_row_table_behaves_like_a_map() {
        use std::collections::BTreeMap;
        let mut row = Row::default();
        let mut model: BTreeMap<u32, f32> = BTreeMap::new();
        let mut next = numbers(7);
        let check = |row: &Row, model: &BTreeMap<u32, f32>, when: u64| {
            assert_eq!(row.len(), model.len(), "len at {when}");
            let mut got: Vec<(u32, f32)> = row.iter().collect();
            let mut each = Vec::new();
            row.for_each(|b, s| each.push((b, s)));
            assert_eq!(each, got, "for_each and iter at {when}");
            got.sort_by_key(|&(b, _)| b);
            let want: Vec<(u32, f32)> = model.iter().map(|(&b, &s)| (b, s)).collect();
            assert_eq!(got, want, "entries at {when}");
            for b in 0..600 {
                assert_eq!(row.get(&b), model.get(&b), "get({b}) at {when}");
            }
            let max = model.values().copied().fold(0.0, f32::max);
            assert_eq!(row.max(), max, "max at {when}");
            assert_leaders_hold(row);
            assert!(row.len() * 4 <= row.slots.len() * 3 || row.slots.is_empty());
        };
        for step in 0..20_000u64 {
            // Keys spread over 0..600 but clustered, so probe runs form and wrap.
            let b = (next(300) * 2 + next(2)) as u32;
            match next(10) {
                0..=6 => {
                    let p = (next(100) + 1) as f32;
                    let new = row.write(b, |old| old.map_or(p, |v| v + p));
                    assert_eq!(new, !model.contains_key(&b));
                    *model.entry(b).or_insert(0.0) += p;
                }
                7 | 8 => {
                    let v = next(1000) as f32 / 10.0 + 1e-3;
                    row.write(b, |_| v);
                    model.insert(b, v);
                }
                _ => {
                    if step % 500 == 9 {
                        let alpha = if next(2) == 0 { 0.5 } else { 1e-3 };
                        row.decay(alpha);
                        model.retain(|_, v| {
                            *v *= alpha;
                            *v >= DECAY_FLOOR
                        });
                    }
                }
            }
            if step % 97 == 0 {
                check(&row, &model, step);
            }
        }
        check(&row, &model, u64::MAX);
        row.decay(0.0);
        model.clear();
        check(&row, &model, u64::MAX);
        assert!(row.slots.is_empty(), "an emptied row frees its table");
    }

    /// A load fills rows with `set_all`: fresh rows choose their leaders
    /// from the entries (from the table when an entry repeats), and a row
    /// filled again (a run of pairs spanning load batches) keeps them entry
    /// by entry.
    #[test]
    fn rows_filled_by_a_load_keep_their_leaders() {
        let mut next = numbers(5);
        for round in 0..50u64 {
            let mut row = Row::default();
            let mut model = std::collections::BTreeMap::new();
            for part in 0..4 {
                let entries: Vec<(u32, f32)> = (0..next(200))
                    .map(|_| (next(400) as u32, (next(1000) + 1) as f32 * (part + 1) as f32))
                    .collect();
                row.set_all(entries.iter(), entries.len());
                model.extend(entries.iter().copied());
                assert_leaders_hold(&row);
                let mut got: Vec<(u32, f32)> = row.iter().collect();
                got.sort_by_key(|&(b, _)| b);
                assert!(
                    got.iter().copied().eq(model.iter().map(|(&b, &s)| (b, s))),
                    "round {round}"
                );
            }
        }
    }

    #[test]
    fn scan_visits_every_entry_at_or_above_the_floor() {
        let mut row = Row::default();
        for b in 0..1000u32 {
            row.write(b * 7, |_| (b % 97) as f32);
        }
        for floor in [0.0f32, 0.5, 0.9, 1.0, 2.0] {
            let mut seen = Vec::new();
            row.scan(96.0, &mut seen, |_| floor, |seen, b, s| seen.push((b, s)));
            let mut want: Vec<(u32, f32)> = row.iter().filter(|&(_, s)| s / 96.0 >= floor).collect();
            want.sort_by_key(|&(b, _)| b);
            let mut hit: Vec<(u32, f32)> = seen.iter().copied().filter(|&(_, s)| s / 96.0 >= floor).collect();
            hit.sort_by_key(|&(b, _)| b);
            assert_eq!(hit, want, "floor {floor}");
            assert!(
                floor < 1.0 || seen.len() < row.len(),
                "floor {floor} should skip blocks"
            );
        }
    }
}
