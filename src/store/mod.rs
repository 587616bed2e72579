//! The three in-memory stores (events, co-occurrence, vectors) behind one `Store`.
//!
//! Plain Rust: no actix here. The `StoreActor` owns one `Store` and turns messages
//! into calls on it; the snapshot writer reads a `StoreImage` (see `freeze`), the
//! snapshot reader fills a `StoreBuilder`.
//!
//! Layout: every large collection is a `CowVec` (fixed-size chunks behind `Arc`),
//! so `freeze()` clones a few hundred `Arc`s and later writes copy only the chunk
//! they touch (copy-on-write). Item ids and context names are interned to dense
//! `u32`s, which keeps events 16 bytes and makes co-occurrence rows indexable.
//!
//! Files: `cowvec.rs` (the chunked copy-on-write vector), `intern.rs` (names to
//! numbers), `events.rs` (rings, SET/DEL state, ADD dedup), `cooccurrence.rs`
//! (the pair index), `vectors.rs` (vector storage), `similarity.rs` (scoring).
//! See `events.rs` for the exact duplicate rules.

// PUBLIC API CONTRACT — other modules (actors, snapshot) depend on exactly these
// signatures. Private helpers and extra modules may be added freely.

mod cooccurrence;
mod cowvec;
mod events;
mod helper;
mod intern;
mod namer;
mod prefetch;
mod quant;
mod similarity;
mod vectors;
mod waiting;

use std::fmt;
use std::sync::Arc;

use cooccurrence::{CoIndex, Row, RowTable};
use cowvec::CowVec;
use events::{DedupKey, DedupLru, Event, EventStore, Ring};
use intern::{name_of, Interner};
pub use namer::ItemNamer;
use similarity::{events_top_k, finish, fuse, vector_top_k, Cand};
use vectors::{VectorChunks, VectorStore};
use waiting::Waiting;

/// Store-level errors; `Display` is exactly the text after `(error) `.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// A vector's length differs from the fixed dimension.
    #[error("Dimension mismatch: expected {expected}, got {got}")]
    DimensionMismatch { expected: usize, got: usize },
    /// The id has no vector (VECDEL, SIM vectors) or no data at all (SIM).
    #[error("Item not found: {0}")]
    ItemNotFound(String),
    /// `top_k` is 0 or above `max_top_k`.
    #[error("Invalid top_k: must be > 0 and <= {max}")]
    InvalidTopK { max: usize },
    /// An empty vector.
    #[error("Invalid vector format")]
    InvalidVector,
    /// Only from `StoreBuilder` (snapshot load): the text follows `Corrupt snapshot: `.
    #[error("{0}")]
    InvalidData(String),
}

/// Distance used by vector similarity (`vectors.distance_metric`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Cosine similarity; a zero-norm vector scores 0.
    Cosine,
    /// Dot product.
    Dot,
    /// `1 / (1 + euclidean distance)`.
    L2,
}

/// Kind of a stored event; the discriminant is the snapshot's `kind` byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EventKind {
    Add = 0,
    Set = 1,
    Del = 2,
}

impl EventKind {
    /// The kind for a snapshot `kind` byte, `None` if unknown.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Add),
            1 => Some(Self::Set),
            2 => Some(Self::Del),
            _ => None,
        }
    }
}

/// Which source `SIM` scores with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimMode {
    Events,
    Vectors,
    Fusion,
}

/// Settings the stores need, taken from the `events`, `vectors` and `similarity`
/// config sections.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    pub ctx_buffer_size: usize,
    pub dedup_window_sec: u64,
    pub dedup_cache_size: usize,
    /// 0: the first stored vector fixes the dimension.
    pub default_dimension: usize,
    pub distance_metric: Metric,
    pub max_top_k: usize,
    pub fusion_alpha: f32,
    pub fusion_beta: f32,
    /// 2: `add_events` writes the co-occurrence rows on two threads when
    /// the machine has two cores or more; 1: on the caller's thread.
    pub write_threads: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            ctx_buffer_size: 50,
            dedup_window_sec: 60,
            dedup_cache_size: 10_000,
            default_dimension: 0,
            distance_metric: Metric::Cosine,
            max_top_k: 1000,
            fusion_alpha: 0.6,
            fusion_beta: 0.4,
            write_threads: 2,
        }
    }
}

/// One result line of SIM / SIMV.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub id: Arc<str>,
    pub score: f32,
}

/// Figures for INFO and the DUMP replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    pub contexts: u64,
    pub events: u64,
    pub vectors: u64,
    /// 0 while no dimension is fixed.
    pub dimension: u64,
    /// Unordered pairs.
    pub co_occurrence_pairs: u64,
    pub used_memory_bytes: u64,
}

/// What a decay pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecayReport {
    pub pairs_before: u64,
    pub pairs_after: u64,
}

/// An event as the snapshot writer sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventView<'a> {
    pub id: &'a str,
    pub score: i32,
    pub timestamp_ms: u64,
    pub kind: EventKind,
}

/// Owned records decoded from a snapshot, handed to `StoreBuilder::apply` in batches.
///
/// Items are named by numbers local to the load, shared by its events and
/// pairs: each batch first lists the names met for the first time in this
/// load (numbered on from the previous batches' names), then its records in
/// those numbers. The reader names each item once per load instead of
/// allocating a string per event and two per pair, and the store interns each
/// name once instead of once per record.
///
/// One event of a context; `item` is a load-local number.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedEvent {
    pub item: u32,
    pub score: i32,
    pub timestamp_ms: u64,
    pub kind: EventKind,
}

/// One context with its events.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedContext {
    pub name: String,
    /// Oldest first.
    pub events: Vec<LoadedEvent>,
}

/// Contexts of a snapshot load, their events' items in load-local numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContextBatch {
    /// Names first met in this batch; the first gets the next free number.
    pub new_names: Vec<String>,
    pub contexts: Vec<LoadedContext>,
}

/// Unordered pairs `a < b` of a snapshot load, in load-local numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairBatch {
    /// Names first met in this batch; the first gets the next free number.
    pub new_names: Vec<String>,
    /// `(a, b, score)` in load-local numbers.
    pub pairs: Vec<(u32, u32, f32)>,
}

/// A context by name, with `(item, score, timestamp_ms, kind)` events.
pub type NamedContext = (String, Vec<(String, i32, u64, EventKind)>);

impl ItemNamer {
    /// One batch of named contexts, numbered on from this namer's earlier
    /// batches (tests and tools; the reader names events as it decodes them).
    /// Stops at the first event past `u32::MAX` names.
    pub fn contexts(&mut self, contexts: impl IntoIterator<Item = NamedContext>) -> ContextBatch {
        let mut out = ContextBatch::default();
        'contexts: for (name, events) in contexts {
            let mut loaded = Vec::with_capacity(events.len());
            for (id, score, timestamp_ms, kind) in events {
                let Some(item) = self.id(&id, &mut out.new_names) else {
                    out.contexts.push(LoadedContext { name, events: loaded });
                    break 'contexts;
                };
                loaded.push(LoadedEvent {
                    item,
                    score,
                    timestamp_ms,
                    kind,
                });
            }
            out.contexts.push(LoadedContext { name, events: loaded });
        }
        out
    }

    /// One batch of named pairs, numbered on from this namer's earlier batches.
    pub fn batch<'a>(&mut self, pairs: impl IntoIterator<Item = (&'a str, &'a str, f32)>) -> PairBatch {
        let mut out = PairBatch::default();
        for (a, b, score) in pairs {
            let (Some(a), Some(b)) = (self.id(a, &mut out.new_names), self.id(b, &mut out.new_names)) else {
                break;
            };
            out.pairs.push((a, b, score));
        }
        out
    }
}

/// Turns a load's `ContextBatch`es and `PairBatch`es back into names (tests
/// and tools). One per load: it must see every batch, in order.
#[derive(Debug, Default)]
pub struct ItemNames {
    names: Vec<String>,
}

impl ItemNames {
    /// The batch's contexts by name; `None` if it uses a number never named.
    pub fn contexts(&mut self, batch: ContextBatch) -> Option<Vec<NamedContext>> {
        self.names.extend(batch.new_names);
        let name = |n: u32| self.names.get(n as usize).cloned();
        batch
            .contexts
            .into_iter()
            .map(|c| {
                let events = c
                    .events
                    .into_iter()
                    .map(|e| Some((name(e.item)?, e.score, e.timestamp_ms, e.kind)))
                    .collect::<Option<Vec<_>>>()?;
                Some((c.name, events))
            })
            .collect()
    }

    /// The batch's pairs by name; `None` if it uses a number never named.
    pub fn resolve(&mut self, batch: PairBatch) -> Option<Vec<(String, String, f32)>> {
        self.names.extend(batch.new_names);
        let name = |n: u32| self.names.get(n as usize).cloned();
        batch
            .pairs
            .into_iter()
            .map(|(a, b, score)| Some((name(a)?, name(b)?, score)))
            .collect()
    }
}

/// One item's vector.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedVector {
    pub id: String,
    pub values: Vec<f32>,
}

/// A batch of decoded snapshot records. The reader sends all `Contexts` batches,
/// then all `Pairs`, then one `Dimension`, then all `Vectors`.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadBatch {
    Contexts(ContextBatch),
    Pairs(PairBatch),
    Dimension(usize),
    Vectors(Vec<LoadedVector>),
}

/// The live stores. Owned by one actor; `Send`, not shared.
pub struct Store {
    cfg: StoreConfig,
    /// Item ids of events, pairs and vectors share one number space.
    items: Interner,
    events: EventStore,
    dedup: DedupLru,
    co: CoIndex,
    vectors: VectorStore,
    /// Scratch for `add_events`: the new events' partners in their rings.
    partners: Vec<(u32, f32)>,
    /// Scratch for `add_events`: each stored event's item and its partners.
    group: Vec<(u32, std::ops::Range<usize>)>,
    /// `add_events` may write the rows on two threads.
    split_writes: bool,
}

/// `add_events` makes the co-occurrence writes of at most this many events
/// at once, and of no more once their partners reach [`INGEST_PARTNERS`]
/// (each event has up to `ctx_buffer_size - 1`), which bounds its scratch
/// memory whatever the ring size.
pub const INGEST_GROUP: usize = 4096;

/// See [`INGEST_GROUP`]: 8 MiB of partners. The tests use 2,048, so that
/// their runs are cut by it too.
#[cfg(not(test))]
pub const INGEST_PARTNERS: usize = 1 << 20;
#[cfg(test)]
pub const INGEST_PARTNERS: usize = 2048;

/// One event for [`Store::add_events`].
#[derive(Debug, Clone, Copy)]
pub struct EventRef<'e> {
    pub ctx: &'e str,
    pub kind: EventKind,
    pub id: &'e str,
    pub score: u8,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("cfg", &self.cfg)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// An empty store.
    pub fn new(cfg: StoreConfig) -> Self {
        Self {
            items: Interner::new(),
            events: EventStore::new(cfg.ctx_buffer_size),
            dedup: DedupLru::new(cfg.dedup_cache_size, cfg.dedup_window_sec),
            co: CoIndex::new(),
            partners: Vec::new(),
            group: Vec::new(),
            split_writes: cfg.write_threads > 1
                && std::thread::available_parallelism().is_ok_and(|n| n.get() > 1),
            vectors: VectorStore::new(cfg.default_dimension),
            cfg,
        }
    }
    /// The settings this store was built with.
    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }
    /// EVENT. `score` is already checked to be 0..=100 (DEL passes 0).
    /// Returns true when the event was stored, false for a duplicate.
    pub fn add_event(&mut self, ctx: &str, kind: EventKind, id: &str, score: u8, now_ms: u64) -> bool {
        self.add_events([EventRef { ctx, kind, id, score }], now_ms) == 1
    }

    /// `add_event` for each event in order, all at time `now_ms`; how many
    /// were stored. The co-occurrence writes of up to [`INGEST_GROUP`]
    /// events are made together, on two threads when the machine has two
    /// cores or more (see [`Store::set_split_writes`]); the store is the
    /// same either way.
    pub fn add_events<'e>(&mut self, events: impl IntoIterator<Item = EventRef<'e>>, now_ms: u64) -> usize {
        let mut partners = std::mem::take(&mut self.partners);
        let mut group = std::mem::take(&mut self.group);
        partners.clear();
        group.clear();
        let mut stored = 0;
        for e in events {
            let start = partners.len();
            if let Some(item) = self.record_event(e.ctx, e.kind, e.id, e.score, now_ms, &mut partners) {
                stored += 1;
                group.push((item, start..partners.len()));
            }
            if group.len() >= INGEST_GROUP || partners.len() >= INGEST_PARTNERS {
                self.co.add_batch(&group, &partners, self.split_writes);
                partners.clear();
                group.clear();
            }
        }
        self.co.add_batch(&group, &partners, self.split_writes);
        self.partners = partners;
        self.group = group;
        stored
    }

    /// Whether `add_events` may write the co-occurrence rows on two threads
    /// (at first: `write_threads` is 2 and the machine has two cores or
    /// more).
    pub fn set_split_writes(&mut self, on: bool) {
        self.split_writes = on;
    }

    /// The event part of `add_events`: dedup, interning, the ring. Returns the
    /// item if the event was stored, with its partners (the ring's other
    /// items and their score products) appended to `partners`.
    fn record_event(
        &mut self,
        ctx: &str,
        kind: EventKind,
        id: &str,
        score: u8,
        now_ms: u64,
        partners: &mut Vec<(u32, f32)>,
    ) -> Option<u32> {
        // DEL is stored with score 0; clamp so a snapshot always holds 0..=100.
        let score = if kind == EventKind::Del { 0 } else { score.min(100) };
        // Interning first costs nothing extra: a duplicate needs both names
        // known already, and a stored event needs them interned anyway.
        let c = self.events.context_or_create(ctx);
        let item = self.items.intern(id);
        let duplicate = match kind {
            EventKind::Add => self.dedup.is_duplicate(&DedupKey { ctx: c, item, score }, now_ms),
            EventKind::Set | EventKind::Del => self.events.is_state_duplicate(c, item, kind, score),
        };
        if duplicate {
            return None;
        }
        let ev = Event {
            timestamp_ms: now_ms,
            item,
            score,
            kind,
        };
        self.events.append(c, ev, |old| {
            if old.item != item {
                partners.push((old.item, f32::from(score) * f32::from(old.score)));
            }
        });
        if kind == EventKind::Add {
            self.dedup.record(DedupKey { ctx: c, item, score }, now_ms);
        }
        Some(item)
    }
    /// VECSET: values are finite (checked by the parser).
    pub fn set_vector(&mut self, id: &str, values: &[f32]) -> Result<(), StoreError> {
        self.vectors.check(values)?;
        let item = self.items.intern(id);
        self.vectors.insert(item, values)
    }
    /// VECDEL.
    pub fn delete_vector(&mut self, id: &str) -> Result<(), StoreError> {
        match self.items.get(id) {
            Some(item) if self.vectors.remove(item) => Ok(()),
            _ => Err(StoreError::ItemNotFound(id.to_string())),
        }
    }
    /// SIM. Validates top_k against `max_top_k`.
    pub fn similar(
        &self,
        id: &str,
        top_k: usize,
        mode: SimMode,
        min_score: Option<f32>,
    ) -> Result<Vec<Scored>, StoreError> {
        self.check_top_k(top_k)?;
        let not_found = || StoreError::ItemNotFound(id.to_string());
        let item = self.items.get(id).ok_or_else(not_found)?;
        let names = self.items.names();
        let name = |n| name_of(names, n);
        let vector = self.vectors.get(item).map(|(v, _)| v);
        let row = self.co.row(item);
        let by_vector = |k| {
            vector.map_or_else(Vec::new, |q| {
                vector_top_k(
                    self.vectors.chunks(),
                    self.cfg.distance_metric,
                    q,
                    k,
                    Some(item),
                    name,
                )
            })
        };
        let by_events = |k| row.map_or_else(Vec::new, |r| events_top_k(r, k, name));
        let cands: Vec<Cand<'_>> = match mode {
            SimMode::Vectors => {
                if vector.is_none() {
                    return Err(not_found());
                }
                by_vector(top_k)
            }
            SimMode::Events => {
                if row.is_none() && vector.is_none() {
                    return Err(not_found());
                }
                by_events(top_k)
            }
            SimMode::Fusion => {
                if row.is_none() && vector.is_none() {
                    return Err(not_found());
                }
                let k = top_k.saturating_mul(3);
                fuse(
                    by_vector(k),
                    by_events(k),
                    self.cfg.fusion_alpha,
                    self.cfg.fusion_beta,
                )
            }
        };
        Ok(finish(cands, top_k, min_score))
    }
    /// SIMV. Validates top_k and the dimension.
    pub fn similar_to_vector(
        &self,
        query: &[f32],
        top_k: usize,
        min_score: Option<f32>,
    ) -> Result<Vec<Scored>, StoreError> {
        self.check_top_k(top_k)?;
        let dim = self.vectors.dim();
        if dim != 0 && query.len() != dim {
            return Err(StoreError::DimensionMismatch {
                expected: dim,
                got: query.len(),
            });
        }
        if self.vectors.len() == 0 {
            return Ok(Vec::new());
        }
        let names = self.items.names();
        let cands = vector_top_k(
            self.vectors.chunks(),
            self.cfg.distance_metric,
            query,
            top_k,
            None,
            |n| name_of(names, n),
        );
        Ok(finish(cands, top_k, min_score))
    }
    /// Counts and an estimate of the heap bytes held; O(1).
    pub fn stats(&self) -> StoreStats {
        let used = self.items.heap_bytes()
            + self.events.heap_bytes()
            + self.dedup.heap_bytes()
            + self.co.heap_bytes()
            + self.vectors.heap_bytes()
            + std::mem::size_of::<Self>();
        StoreStats {
            contexts: self.events.contexts(),
            events: self.events.events(),
            vectors: self.vectors.len() as u64,
            dimension: self.vectors.dim() as u64,
            co_occurrence_pairs: self.co.pairs(),
            used_memory_bytes: used as u64,
        }
    }
    /// Multiply every co-occurrence score by `alpha`, drop pairs below 1e-6.
    pub fn decay(&mut self, alpha: f32) -> DecayReport {
        self.co.decay(alpha)
    }
    /// A point-in-time image, O(number of chunks); later writes copy on write.
    pub fn freeze(&self) -> StoreImage {
        StoreImage {
            inner: Arc::new(ImageData {
                items: self.items.names().clone(),
                contexts: self.events.context_names().names().clone(),
                rings: self.events.rings().clone(),
                rows: self.co.rows().clone(),
                vectors: self.vectors.chunks().clone(),
                stats: self.stats(),
            }),
        }
    }

    fn check_top_k(&self, top_k: usize) -> Result<(), StoreError> {
        if top_k == 0 || top_k > self.cfg.max_top_k {
            return Err(StoreError::InvalidTopK {
                max: self.cfg.max_top_k,
            });
        }
        Ok(())
    }
}

/// What an image holds: chunk lists shared with the store at freeze time.
struct ImageData {
    items: CowVec<Arc<str>>,
    contexts: CowVec<Arc<str>>,
    rings: CowVec<Arc<Ring>>,
    rows: RowTable,
    vectors: VectorChunks,
    stats: StoreStats,
}

/// A frozen, immutable, `Send + Sync` view of a `Store` at one instant.
#[derive(Clone)]
pub struct StoreImage {
    inner: Arc<ImageData>,
}

impl fmt::Debug for StoreImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreImage")
            .field("stats", &self.inner.stats)
            .finish_non_exhaustive()
    }
}

impl StoreImage {
    /// The store's figures at freeze time.
    pub fn stats(&self) -> StoreStats {
        self.inner.stats
    }
    /// Every context in byte order of its name, with its events oldest first.
    pub fn for_each_context_sorted<E>(
        &self,
        mut f: impl FnMut(&str, &[EventView<'_>]) -> Result<(), E>,
    ) -> Result<(), E> {
        let d = &*self.inner;
        let mut order: Vec<u32> = (0..d.contexts.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| name_of(&d.contexts, a).cmp(name_of(&d.contexts, b)));
        let mut buf: Vec<EventView<'_>> = Vec::new();
        for c in order {
            buf.clear();
            if let Some(ring) = d.rings.get(c as usize) {
                buf.extend(ring.iter().map(|e| EventView {
                    id: name_of(&d.items, e.item),
                    score: i32::from(e.score),
                    timestamp_ms: e.timestamp_ms,
                    kind: e.kind,
                }));
            }
            f(name_of(&d.contexts, c), &buf)?;
        }
        Ok(())
    }
    /// Every unordered pair once, as `(a, b, score)` with `a < b` (byte order),
    /// sorted by `(a, b)`: the rows of `sorted_pairs` one pair at a time.
    /// Memory: O(items + largest row), never O(pairs).
    pub fn for_each_pair_sorted<E>(
        &self,
        mut f: impl FnMut(&str, &str, f32) -> Result<(), E>,
    ) -> Result<(), E> {
        let pairs = self.sorted_pairs();
        pairs.for_each_row(0..pairs.rows(), &mut |a, partners| {
            for &(b, s) in partners {
                f(a, b, s)?;
            }
            Ok(())
        })
    }
    /// Every item `a` that has a partner `b > a` (byte order), in order of `a`,
    /// with those partners in order of `b` (every unordered pair once, sorted
    /// by `(a, b)`), as rows numbered in order, to be walked in ranges (a save
    /// may encode them in parts on several threads).
    pub fn sorted_pairs(&self) -> SortedPairs<'_> {
        SortedPairs::new(&self.inner)
    }
    /// Every vector sorted by id (byte order).
    pub fn for_each_vector_sorted<E>(
        &self,
        mut f: impl FnMut(&str, &[f32]) -> Result<(), E>,
    ) -> Result<(), E> {
        let d = &*self.inner;
        let v = &d.vectors;
        let mut order: Vec<(&str, usize)> = (0..v.len)
            .filter_map(|slot| v.slot(slot).map(|(id, _)| (&**name_of(&d.items, id), slot)))
            .collect();
        order.sort_unstable_by(|x, y| x.0.cmp(y.0));
        for (name, slot) in order {
            if let Some((_, values)) = v.slot(slot) {
                f(name, values)?;
            }
        }
        Ok(())
    }
}

/// What is called with each row of pairs: `(a, [(b, score), ...])`.
pub type PairRowFn<'f, E> = dyn FnMut(&str, &[(&str, f32)]) -> Result<(), E> + 'f;

/// An image's co-occurrence rows in name order of their item, each to be
/// listed with its later partners (`StoreImage::sorted_pairs`). `Sync`: parts
/// of it may be walked on several threads at once.
///
/// The names of the items with pairs are copied into one buffer in name
/// order, so the millions of neighbour names a save writes are read from a
/// compact, ascending region instead of one heap string each.
pub struct SortedPairs<'a> {
    d: &'a ImageData,
    /// Item numbers of the non-empty rows, in name order (a row's rank is
    /// its position here).
    order: Vec<u32>,
    /// Rank of each item number (`u32::MAX` without a row).
    rank: Vec<u32>,
    arena: String,
    starts: Vec<usize>,
}

impl<'a> SortedPairs<'a> {
    fn new(d: &'a ImageData) -> Self {
        let name = |n: u32| &**name_of(&d.items, n);
        let mut order: Vec<u32> = d
            .rows
            .iter()
            .filter(|(_, r)| r.as_ref().is_some_and(|r| !r.is_empty()))
            .map(|(i, _)| i as u32)
            .collect();
        order.sort_unstable_by(|&a, &b| name(a).cmp(name(b)));
        // Rows are sorted by comparing ranks instead of strings. Every
        // neighbour has a row (symmetry); were one missing, its empty name
        // would make the writer refuse the save.
        let mut rank = vec![u32::MAX; d.rows.end()];
        let mut arena = String::with_capacity(order.iter().map(|&i| name(i).len()).sum());
        let mut starts = Vec::with_capacity(order.len() + 1);
        for (r, &i) in order.iter().enumerate() {
            if let Some(slot) = rank.get_mut(i as usize) {
                *slot = r as u32;
            }
            starts.push(arena.len());
            arena.push_str(name(i));
        }
        starts.push(arena.len());
        SortedPairs {
            d,
            order,
            rank,
            arena,
            starts,
        }
    }

    /// Rows (items with at least one pair), numbered `0..rows()` in name order.
    pub fn rows(&self) -> usize {
        self.order.len()
    }

    /// Entries of row `row` (its partners in both directions).
    pub fn row_len(&self, row: usize) -> usize {
        let item = self.order.get(row).map_or(usize::MAX, |&i| i as usize);
        self.d
            .rows
            .get(item)
            .and_then(|r| r.as_deref())
            .map_or(0, Row::len)
    }

    fn by_rank(&self, r: u32) -> &str {
        let r = r as usize;
        match (self.starts.get(r), self.starts.get(r + 1)) {
            (Some(&s), Some(&e)) => self.arena.get(s..e).unwrap_or(""),
            _ => "",
        }
    }

    /// `f(a, partners)` for the rows numbered `range` that have a partner
    /// after them, in order; partners `b > a` in order of `b`.
    pub fn for_each_row<E>(&self, range: std::ops::Range<usize>, f: &mut PairRowFn<'_, E>) -> Result<(), E> {
        let rank_of = |i: u32| self.rank.get(i as usize).copied().unwrap_or(u32::MAX);
        // (rank of b, score bits) packed in one integer: a row has each
        // neighbour once, so sorting the integers sorts by rank.
        let mut keys: Vec<u64> = Vec::new();
        let mut partners: Vec<(&str, f32)> = Vec::new();
        let start = range.start;
        for (i, &a) in self.order.get(range).unwrap_or(&[]).iter().enumerate() {
            let ra = (start + i) as u32;
            let Some(row) = self.d.rows.get(a as usize).and_then(|r| r.as_deref()) else {
                continue;
            };
            // Half of a row's neighbours come after it; which half is not
            // predictable, so every entry is stored and only the later ones
            // are kept (no branch per entry).
            keys.clear();
            keys.resize(row.len(), 0);
            let mut n = 0;
            row.for_each(|b, s| {
                let rb = rank_of(b);
                if let Some(k) = keys.get_mut(n) {
                    *k = u64::from(rb) << 32 | u64::from(s.to_bits());
                }
                n += usize::from(rb > ra);
            });
            keys.truncate(n);
            if keys.is_empty() {
                continue;
            }
            keys.sort_unstable();
            partners.clear();
            partners.extend(
                keys.iter()
                    .map(|&k| (self.by_rank((k >> 32) as u32), f32::from_bits(k as u32))),
            );
            f(self.by_rank(ra), &partners)?;
        }
        Ok(())
    }
}

/// Builds a fresh `Store` from snapshot records (DUMP LOAD, restore on start).
/// The snapshot reader has already checked order, ranges and finiteness.
///
/// Contexts are rebuilt without pairing (pairs come from `Pairs` batches); a
/// context with more events than `ctx_buffer_size` keeps its newest ones; a
/// context without events is skipped.
pub struct StoreBuilder {
    store: Store,
    /// The load-local names (`ContextBatch`, `PairBatch`).
    load_items: LoadItems,
    /// `co[b][a]` entries waiting for row `b` to be built, by store item `b`.
    /// Pairs come sorted by `a`, so every pair naming `b` second comes before
    /// `b`'s own run: row `b` is built once, at its final size, when that run
    /// arrives (or in `finish` for items never named first).
    pending: Waiting,
    /// Row `a`'s waiting entries while it is built (kept for its capacity).
    gathered: Vec<(u32, f32)>,
    /// Events of the file's contexts beyond `ctx_buffer_size`, not kept.
    dropped_events: u64,
}

/// How many pairs ahead a load prefetches the waiting list it will append
/// to, and (nearer, once the list is cached) the list's end.
const PENDING_LIST_AHEAD: usize = 16;
const PENDING_END_AHEAD: usize = 8;

/// A load's item names in their load-local numbers (see `ContextBatch`), each
/// interned when first used: a name met only in events that a smaller ring
/// drops is not interned, as no record of the store uses it.
#[derive(Default)]
struct LoadItems {
    names: Vec<String>,
    /// Store item number of each name; `NOT_INTERNED` until first used.
    items: Vec<u32>,
}

/// Never an interned number (the interner keeps `u32::MAX` unused).
const NOT_INTERNED: u32 = u32::MAX;

impl LoadItems {
    /// Numbers a batch's new names on from the earlier batches'.
    fn extend(&mut self, new_names: Vec<String>) {
        self.items
            .resize(self.items.len() + new_names.len(), NOT_INTERNED);
        self.names.extend(new_names);
    }

    /// The store item of load-local number `local`, which a `what` record
    /// names.
    fn item(&mut self, interner: &mut Interner, local: u32, what: &str) -> Result<u32, StoreError> {
        let at = local as usize;
        match (self.items.get_mut(at), self.names.get(at)) {
            (Some(n), _) if *n != NOT_INTERNED => Ok(*n),
            (Some(n), Some(name)) => {
                *n = interner.intern(name);
                Ok(*n)
            }
            _ => Err(StoreError::InvalidData(format!(
                "{what} names item #{local}, never named"
            ))),
        }
    }
}

impl fmt::Debug for StoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreBuilder")
            .field("store", &self.store)
            .finish()
    }
}

impl StoreBuilder {
    /// A builder for an empty store with `cfg`.
    pub fn new(cfg: StoreConfig) -> Self {
        Self {
            store: Store::new(cfg),
            load_items: LoadItems::default(),
            pending: Waiting::new(),
            gathered: Vec::new(),
            dropped_events: 0,
        }
    }
    /// Adds one batch; `InvalidData` for records that cannot form a valid store.
    pub fn apply(&mut self, batch: LoadBatch) -> Result<(), StoreError> {
        let s = &mut self.store;
        match batch {
            LoadBatch::Contexts(batch) => {
                self.load_items.extend(batch.new_names);
                for c in batch.contexts {
                    let dropped = s.load_context(c, &mut self.load_items)?;
                    self.dropped_events = self.dropped_events.saturating_add(dropped as u64);
                }
            }
            LoadBatch::Pairs(batch) => self.apply_pairs(batch)?,
            LoadBatch::Dimension(d) => {
                let default = s.cfg.default_dimension;
                if default != 0 && d != 0 && d != default {
                    return Err(StoreError::InvalidData(format!(
                        "vector dimension {d} differs from vectors.default_dimension {default}"
                    )));
                }
                if s.vectors.len() != 0 {
                    return Err(StoreError::InvalidData("vector dimension after vectors".into()));
                }
                s.vectors.fix_dim(if d != 0 { d } else { default });
            }
            LoadBatch::Vectors(list) => {
                for v in list {
                    let dim = s.vectors.dim();
                    if dim == 0 {
                        return Err(StoreError::InvalidData(format!(
                            "vector {} present but the vector dimension is 0",
                            v.id
                        )));
                    }
                    if v.values.len() != dim {
                        return Err(StoreError::InvalidData(format!(
                            "vector {} has {} values, expected {dim}",
                            v.id,
                            v.values.len()
                        )));
                    }
                    let item = s.items.intern(&v.id);
                    if s.vectors.get(item).is_some() {
                        return Err(StoreError::InvalidData(format!("duplicate vector {}", v.id)));
                    }
                    s.vectors
                        .insert(item, &v.values)
                        .map_err(|e| StoreError::InvalidData(format!("vector {}: {e}", v.id)))?;
                }
            }
        }
        Ok(())
    }

    fn apply_pairs(&mut self, batch: PairBatch) -> Result<(), StoreError> {
        let s = &mut self.store;
        self.load_items.extend(batch.new_names);
        // First the batch in store numbers, checked, so that the loop below
        // knows which waiting lists it appends to next.
        let mut pairs: Vec<(u32, u32, f32)> = Vec::with_capacity(batch.pairs.len());
        let mut named_a: Option<(u32, u32)> = None;
        let mut max_b = None;
        for &(la, lb, score) in &batch.pairs {
            let a = match named_a {
                Some((l, n)) if l == la => n,
                _ => {
                    let n = self.load_items.item(&mut s.items, la, "pair")?;
                    named_a = Some((la, n));
                    n
                }
            };
            let b = self.load_items.item(&mut s.items, lb, "pair")?;
            if a == b {
                return Err(StoreError::InvalidData("pair of an item with itself".into()));
            }
            if !(score.is_finite() && score > 0.0) {
                let name = |n| name_of(s.items.names(), n);
                return Err(StoreError::InvalidData(format!(
                    "pair {} {} has score {score}, must be positive",
                    name(a),
                    name(b)
                )));
            }
            max_b = max_b.max(Some(b));
            pairs.push((a, b, score));
        }
        if let Some(b) = max_b {
            self.pending.reach(b as usize + 1);
        }
        // Pairs come sorted by `a`: each run of one `a` fills row `a`
        // in one go, together with the entries waiting for it. Appending to
        // `b`'s waiting list misses the cache twice (the list, then its
        // end), so both are fetched ahead, a few pairs apart.
        let mut run: Vec<(u32, f32)> = Vec::new();
        let mut current: Option<u32> = None;
        for (i, &(a, b, score)) in pairs.iter().enumerate() {
            if let Some(&(_, b, _)) = pairs.get(i + PENDING_LIST_AHEAD) {
                self.pending.prefetch_list(b);
            }
            if let Some(&(_, b, _)) = pairs.get(i + PENDING_END_AHEAD) {
                self.pending.prefetch_end(b);
            }
            if current != Some(a) {
                if let Some(prev) = current.replace(a) {
                    self.fill_row(prev, &run);
                    run.clear();
                }
            }
            run.push((b, score));
            self.pending
                .push(b, (a, score))
                .map_err(|_| StoreError::InvalidData("more pairs than a load can hold".into()))?;
        }
        if let Some(a) = current {
            self.fill_row(a, &run);
        }
        Ok(())
    }

    /// Events so far that a context of the file had beyond
    /// `events.ctx_buffer_size`: its oldest ones, not kept (the ring buffer
    /// would have dropped them as the newer ones came in).
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    /// Rebuilds the dedup and SET/DEL caches from the stored events.
    ///
    /// The SET/DEL state is read from the rings, so only the ADD dedup LRU is
    /// rebuilt: every stored ADD, oldest timestamp first.
    pub fn finish(mut self) -> Store {
        self.flush_pairs();
        let mut store = self.store;
        if !store.dedup.enabled() {
            return store;
        }
        for (ts, key) in store.newest_adds(store.dedup.capacity()) {
            store.dedup.record(key, ts);
        }
        store
    }

    /// Row `a` from its waiting entries and `run` (its own pairs `a < b`).
    fn fill_row(&mut self, a: u32, run: &[(u32, f32)]) {
        self.gathered.clear();
        self.pending.take_into(a, &mut self.gathered);
        self.store.co.fill_row(a, [&self.gathered, run]);
    }

    /// Builds the rows still waiting at the end of a load (items only ever
    /// named second, and entries that came after their row was built, as in
    /// unsorted batches).
    fn flush_pairs(&mut self) {
        let items: Vec<u32> = self.pending.items().collect();
        for b in items {
            self.fill_row(b, &[]);
        }
        self.pending = Waiting::new();
        self.gathered = Vec::new();
    }
}

impl Store {
    /// Every stored ADD as a dedup key, oldest first (ties in context and
    /// ring order).
    #[cfg(test)]
    fn stored_adds(&self) -> Vec<(u64, DedupKey)> {
        let mut adds = Vec::new();
        self.for_each_add(|ts, key| adds.push((ts, key)));
        adds.sort_by_key(|&(ts, _)| ts);
        adds
    }

    /// The newest stored ADDs that hold `keys` distinct keys (all of them if
    /// there are fewer), oldest first, ties as in `stored_adds`. Replaying
    /// every ADD into an LRU of `keys` keys leaves exactly the keys, last
    /// timestamps and order that replaying these leaves, without sorting the
    /// millions of ADDs a large store holds: the newest few are selected
    /// first, and more only when they hold too few keys.
    fn newest_adds(&self, keys: usize) -> Vec<(u64, DedupKey)> {
        use std::cmp::Reverse;
        let mut take = keys.saturating_mul(4).max(64);
        loop {
            // The newest `take` ADDs by (timestamp, position), kept in a
            // bounded heap: the ADDs are never all held at once.
            let mut heap = std::collections::BinaryHeap::with_capacity(take.min(1 << 20) + 1);
            let mut total = 0usize;
            self.for_each_add(|ts, key| {
                let entry = Reverse(((ts, total), key));
                total += 1;
                if heap.len() < take {
                    heap.push(entry);
                } else if heap.peek().is_some_and(|oldest| entry < *oldest) {
                    if let Some(mut oldest) = heap.peek_mut() {
                        *oldest = entry;
                    }
                }
            });
            let mut newest: Vec<((u64, usize), DedupKey)> = heap.into_iter().map(|Reverse(e)| e).collect();
            newest.sort_unstable_by_key(|e| e.0);
            let mut seen = rustc_hash::FxHashSet::default();
            let mut start = newest.len();
            while start > 0 && seen.len() < keys {
                start -= 1;
                if let Some(&(_, key)) = newest.get(start) {
                    seen.insert(key);
                }
            }
            if seen.len() >= keys || newest.len() == total {
                let chosen = newest.get(start..).unwrap_or_default();
                return chosen.iter().map(|&((ts, _), key)| (ts, key)).collect();
            }
            take = take.saturating_mul(4);
        }
    }

    /// Calls `f(timestamp, key)` for every stored ADD, context by context.
    fn for_each_add(&self, mut f: impl FnMut(u64, DedupKey)) {
        for c in 0..self.events.contexts() as u32 {
            if let Some(ring) = self.events.ring(c) {
                for e in ring.iter().filter(|e| e.kind == EventKind::Add) {
                    let key = DedupKey {
                        ctx: c,
                        item: e.item,
                        score: e.score,
                    };
                    f(e.timestamp_ms, key);
                }
            }
        }
    }

    /// Builder step: one context's events, oldest first, without pairing.
    /// Adds a context from a snapshot; returns how many of its oldest events
    /// did not fit in the ring buffer.
    /// `load_items`: the load's names so far.
    fn load_context(&mut self, c: LoadedContext, load_items: &mut LoadItems) -> Result<usize, StoreError> {
        if c.events.is_empty() {
            return Ok(0);
        }
        if self.events.context(&c.name).is_some() {
            return Err(StoreError::InvalidData(format!("duplicate context {}", c.name)));
        }
        let n = self.events.context_or_create(&c.name);
        let skip = c.events.len().saturating_sub(self.events.capacity());
        for e in c.events.into_iter().skip(skip) {
            let item = load_items.item(&mut self.items, e.item, "event")?;
            let score = match u8::try_from(e.score) {
                Ok(s) if s <= 100 && (e.kind != EventKind::Del || s == 0) => s,
                _ => {
                    return Err(StoreError::InvalidData(format!(
                        "event {} in context {} has score {} ({:?})",
                        name_of(self.items.names(), item),
                        c.name,
                        e.score,
                        e.kind
                    )))
                }
            };
            let ev = Event {
                timestamp_ms: e.timestamp_ms,
                item,
                score,
                kind: e.kind,
            };
            self.events.append(n, ev, |_| {});
        }
        Ok(skip)
    }
}

#[cfg(test)]
mod tests;
