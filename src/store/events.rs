//! Event store: per context a bounded ring of its newest events, plus the
//! live-only ADD dedup LRU.
//!
//! Rings live in a `CowVec<Arc<Ring>>` indexed by context number, so after a
//! freeze an append copies one chunk of 1024 pointers and that one ring.
//!
//! Duplicate rules (SPEC §3 EVENT):
//! - ADD: the same `(ctx, id, score)` whose last *stored* occurrence is less
//!   than `dedup_window_sec` seconds old (`now - last < window`, so the window
//!   is half-open) is a duplicate. The LRU holds at most `dedup_cache_size` keys
//!   and evicts the key stored longest ago (a duplicate does not refresh it, so
//!   the LRU rebuilt from a snapshot orders keys exactly as the live one did).
//!   Either setting at 0 turns ADD dedup off.
//! - SET/DEL: the state of `(ctx, id)` is the newest SET or DEL of that id still
//!   in the context's ring (none: no state). State is `(kind, score)`: a SET is a
//!   duplicate iff the state is a SET with the same score (a SET of 0 after a DEL
//!   is stored); a DEL is a duplicate iff the state is a DEL. Deriving the state
//!   from the ring makes behaviour identical before and after a snapshot restore.

use std::collections::VecDeque;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::cowvec::CowVec;
use super::intern::Interner;
use super::EventKind;

/// One stored event: 16 bytes, `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Event {
    pub(crate) timestamp_ms: u64,
    /// Interned item number.
    pub(crate) item: u32,
    /// 0..=100; 0 for DEL.
    pub(crate) score: u8,
    pub(crate) kind: EventKind,
}

const _: () = assert!(std::mem::size_of::<Event>() == 16);

/// A context's events, oldest first.
pub(crate) type Ring = VecDeque<Event>;

/// All contexts and their rings.
#[derive(Debug)]
pub(crate) struct EventStore {
    cap: usize,
    contexts: Interner,
    rings: CowVec<Arc<Ring>>,
    events: u64,
}

impl EventStore {
    /// `cap` is `ctx_buffer_size`; 0 is treated as 1 so a stored event is kept.
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            contexts: Interner::new(),
            rings: CowVec::new(),
            events: 0,
        }
    }

    /// The number of context `name`, if it exists.
    pub(crate) fn context(&self, name: &str) -> Option<u32> {
        self.contexts.get(name)
    }

    /// The ring of context `ctx`.
    pub(crate) fn ring(&self, ctx: u32) -> Option<&Ring> {
        self.rings.get(ctx as usize).map(|r| &**r)
    }

    /// The newest SET/DEL of `item` in context `ctx`, as `(kind, score)`.
    pub(crate) fn last_state(&self, ctx: u32, item: u32) -> Option<(EventKind, u8)> {
        self.ring(ctx)?
            .iter()
            .rev()
            .find(|e| e.item == item && e.kind != EventKind::Add)
            .map(|e| (e.kind, e.score))
    }

    /// Whether a SET/DEL with `kind` and `score` repeats the current state.
    pub(crate) fn is_state_duplicate(&self, ctx: u32, item: u32, kind: EventKind, score: u8) -> bool {
        match (kind, self.last_state(ctx, item)) {
            (EventKind::Set, Some((EventKind::Set, last))) => last == score,
            (EventKind::Del, Some((EventKind::Del, _))) => true,
            _ => false,
        }
    }

    /// Interns context `name`, creating an empty ring if new.
    pub(crate) fn context_or_create(&mut self, name: &str) -> u32 {
        let n = self.contexts.intern(name);
        if n as usize == self.rings.len() {
            self.rings.push(Arc::new(VecDeque::new()));
        }
        n
    }

    /// Appends `ev` to context `ctx`, first calling `pair` with every event
    /// already in the ring (oldest first); drops the oldest when full.
    pub(crate) fn append(&mut self, ctx: u32, ev: Event, mut pair: impl FnMut(&Event)) {
        let cap = self.cap;
        let ring = self
            .rings
            .get_mut(ctx as usize)
            .expect("context numbers come from context_or_create");
        ring.iter().for_each(&mut pair);
        let ring = Arc::make_mut(ring);
        if ring.len() >= cap {
            ring.pop_front();
        } else {
            self.events += 1;
        }
        if ring.capacity() == 0 {
            ring.reserve_exact(cap.min(64));
        }
        ring.push_back(ev);
    }

    /// Number of contexts.
    pub(crate) fn contexts(&self) -> u64 {
        self.contexts.len() as u64
    }

    /// Number of stored events over all rings.
    pub(crate) fn events(&self) -> u64 {
        self.events
    }

    /// Ring capacity.
    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    /// Context names (for images).
    pub(crate) fn context_names(&self) -> &Interner {
        &self.contexts
    }

    /// The rings (cheap to clone, for images).
    pub(crate) fn rings(&self) -> &CowVec<Arc<Ring>> {
        &self.rings
    }

    /// Rough heap bytes.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.contexts.heap_bytes()
            + self.rings.heap_bytes()
            + self.rings.len() * 48
            + self.events as usize * std::mem::size_of::<Event>()
    }
}

/// Key of the ADD dedup LRU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct DedupKey {
    pub(crate) ctx: u32,
    pub(crate) item: u32,
    pub(crate) score: u8,
}

/// Bounded map `(ctx, item, score) -> last stored ms`, evicting the key stored
/// longest ago. Amortised O(1): `order` holds `(key, stamp)` in store order and
/// may hold stale stamps, which are skipped and compacted away.
#[derive(Debug)]
pub(crate) struct DedupLru {
    cap: usize,
    window_ms: u64,
    map: FxHashMap<DedupKey, (u64, u64)>,
    order: VecDeque<(DedupKey, u64)>,
    next_stamp: u64,
}

impl DedupLru {
    /// `cap` keys, a window of `window_sec` seconds; either 0 turns dedup off.
    pub(crate) fn new(cap: usize, window_sec: u64) -> Self {
        Self {
            cap,
            window_ms: window_sec.saturating_mul(1000),
            map: FxHashMap::default(),
            order: VecDeque::new(),
            next_stamp: 0,
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.cap > 0 && self.window_ms > 0
    }

    /// Keys held at most.
    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    /// Whether an ADD of `key` at `now_ms` is a duplicate.
    pub(crate) fn is_duplicate(&self, key: &DedupKey, now_ms: u64) -> bool {
        self.enabled()
            && self
                .map
                .get(key)
                .is_some_and(|&(last, _)| now_ms.saturating_sub(last) < self.window_ms)
    }

    /// Records that an ADD of `key` was stored at `ms`.
    pub(crate) fn record(&mut self, key: DedupKey, ms: u64) {
        if !self.enabled() {
            return;
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.map.insert(key, (ms, stamp));
        self.order.push_back((key, stamp));
        while self.map.len() > self.cap {
            let Some((old, s)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|&(_, cur)| cur == s) {
                self.map.remove(&old);
            }
        }
        if self.order.len() > 2 * self.cap + 64 {
            let map = &self.map;
            self.order
                .retain(|(k, s)| map.get(k).is_some_and(|&(_, cur)| cur == *s));
        }
    }

    /// The keys held with their last timestamps, least recently used first.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> Vec<(DedupKey, u64)> {
        let mut v: Vec<(u64, DedupKey, u64)> =
            self.map.iter().map(|(k, &(ms, stamp))| (stamp, *k, ms)).collect();
        v.sort_by_key(|e| e.0);
        v.into_iter().map(|(_, k, ms)| (k, ms)).collect()
    }

    /// Number of keys held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Rough heap bytes.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.map.capacity() * 32 + self.order.capacity() * 24
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(item: u32, score: u8, kind: EventKind, ts: u64) -> Event {
        Event {
            timestamp_ms: ts,
            item,
            score,
            kind,
        }
    }

    #[test]
    fn ring_drops_the_oldest_event_when_full() {
        let mut s = EventStore::new(2);
        let c = s.context_or_create("u");
        for i in 0..3 {
            s.append(c, ev(i, 1, EventKind::Add, i as u64), |_| {});
        }
        let items: Vec<u32> = s.ring(c).expect("ring").iter().map(|e| e.item).collect();
        assert_eq!(items, vec![1, 2]);
        assert_eq!(s.events(), 2);
    }

    #[test]
    fn append_pairs_with_every_event_already_in_the_ring() {
        let mut s = EventStore::new(10);
        let c = s.context_or_create("u");
        s.append(c, ev(1, 1, EventKind::Add, 0), |_| panic!("empty ring"));
        s.append(c, ev(2, 1, EventKind::Add, 0), |_| {});
        let mut seen = Vec::new();
        s.append(c, ev(3, 1, EventKind::Add, 0), |e| seen.push(e.item));
        assert_eq!(seen, vec![1, 2]);
    }

    #[test]
    fn state_is_the_newest_set_or_del_in_the_ring() {
        let mut s = EventStore::new(10);
        let c = s.context_or_create("u");
        assert_eq!(s.last_state(c, 1), None);
        s.append(c, ev(1, 5, EventKind::Set, 0), |_| {});
        s.append(c, ev(1, 7, EventKind::Add, 0), |_| {});
        assert_eq!(s.last_state(c, 1), Some((EventKind::Set, 5)));
        assert!(s.is_state_duplicate(c, 1, EventKind::Set, 5));
        assert!(!s.is_state_duplicate(c, 1, EventKind::Set, 6));
        assert!(!s.is_state_duplicate(c, 1, EventKind::Del, 0));
        s.append(c, ev(1, 0, EventKind::Del, 0), |_| {});
        assert!(s.is_state_duplicate(c, 1, EventKind::Del, 0));
        assert!(!s.is_state_duplicate(c, 1, EventKind::Set, 0));
    }

    #[test]
    fn lru_evicts_the_key_stored_longest_ago() {
        let mut l = DedupLru::new(2, 60);
        let k = |item| DedupKey {
            ctx: 0,
            item,
            score: 1,
        };
        l.record(k(1), 0);
        l.record(k(2), 0);
        l.record(k(1), 10);
        l.record(k(3), 20);
        assert_eq!(l.len(), 2);
        assert!(!l.is_duplicate(&k(2), 30));
        assert!(l.is_duplicate(&k(1), 30));
        assert!(l.is_duplicate(&k(3), 30));
    }

    #[test]
    fn lru_order_queue_stays_bounded() {
        let mut l = DedupLru::new(4, 60);
        for i in 0..10_000u64 {
            l.record(
                DedupKey {
                    ctx: 0,
                    item: (i % 3) as u32,
                    score: 1,
                },
                i,
            );
        }
        assert!(l.order.len() <= 2 * 4 + 64 + 1);
        assert_eq!(l.len(), 3);
    }

    #[test]
    fn zero_window_or_zero_cache_turns_dedup_off() {
        let k = DedupKey {
            ctx: 0,
            item: 0,
            score: 0,
        };
        for mut l in [DedupLru::new(0, 60), DedupLru::new(10, 0)] {
            l.record(k, 0);
            assert!(!l.is_duplicate(&k, 0));
        }
    }
}
