//! `StoreActor`: owns the `Store` and answers typed messages. States: Serving
//! and Loading (a DUMP LOAD is filling a staged store; writes are refused,
//! reads answer from the live store until `FinishLoad` swaps it in).
//! Runs on its own arbiter (thread). Not supervised: a panic here stops the
//! whole system with exit code 1 (see `Drop`).

use actix::{Actor, AsyncContext, Context, Handler, Message, MessageResult, System};
use std::sync::Arc;
use std::time::Duration;

use super::now_ms;
use super::reserve::{self, CowReserve};
use crate::protocol::command::{EventArgs, SimArgs, SimVArgs};
use crate::protocol::Response;
use crate::snapshot::SnapshotError;
use crate::store::{
    DecayReport, EventRef, LoadBatch, Scored, Store, StoreBuilder, StoreConfig, StoreError, StoreImage,
    StoreStats,
};

/// Text of the error every write gets while a load runs.
pub const READ_ONLY: &str = "Server is in read-only mode: snapshot load in progress";

/// One store operation of a request batch.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreOp {
    AddEvent(EventArgs),
    SetVector { id: String, values: Vec<f32> },
    DeleteVector { id: String },
    QuerySimilar(SimArgs),
    QueryVector(SimVArgs),
}

impl StoreOp {
    fn is_write(&self) -> bool {
        matches!(
            self,
            StoreOp::AddEvent(_) | StoreOp::SetVector { .. } | StoreOp::DeleteVector { .. }
        )
    }
}

/// Sent by a `ConnectionActor` with every store operation of its buffered
/// requests, in order; the reply holds one response per operation, in order.
#[derive(Debug, Message)]
#[rtype(result = "Vec<Response>")]
pub struct ExecuteBatch(pub Vec<StoreOp>);

/// Sent by a connection (INFO) and the snapshot actor: figures and state.
#[derive(Debug, Message)]
#[rtype(result = "StoreStatus")]
pub struct GetStats;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStatus {
    pub stats: StoreStats,
    pub loading: bool,
    /// Bytes of the copy-on-write reserve made since the last LOAD.
    pub cow_reserve_bytes: u64,
}

/// Sent by the snapshot actor for a save: an O(chunks) point-in-time image.
/// Refused while loading.
#[derive(Debug, Message)]
#[rtype(result = "Result<StoreImage, SnapshotError>")]
pub struct FreezeStore;

/// Sent by the snapshot actor before streaming a file: enter Loading.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), SnapshotError>")]
pub struct BeginLoad;

/// Sent by the snapshot actor's reader thread: records for the staged store.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), SnapshotError>")]
pub struct ApplyLoadBatch(pub LoadBatch);

/// Sent by the snapshot actor when the whole file decoded: swap the staged
/// store in, back to Serving. Replies with the new figures.
#[derive(Debug, Message)]
#[rtype(result = "Result<StoreStats, SnapshotError>")]
pub struct FinishLoad;

/// Sent by the snapshot actor when a load failed: drop the staged store, back
/// to Serving with the live data untouched.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AbortLoad;

/// Time between the steps of the copy-on-write reserve while pieces are
/// made: each allocates a batch for `nvecd-reserve` or takes back the ones
/// it has faulted in (`reserve.rs`), a fraction of a millisecond of the
/// store thread's time each.
const RESERVE_PAUSE: Duration = Duration::from_millis(1);

/// Sent by the store actor to itself after a LOAD, until the copy-on-write
/// reserve is made (`reserve.rs`): one step each. It carries the reserve's
/// number, so a step still pending for a reserve given up does nothing.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct ReserveStep(u64);

/// Sent by the scheduler every `events.decay_interval_sec`.
#[derive(Debug, Message)]
#[rtype(result = "DecayReport")]
pub struct RunDecay {
    pub alpha: f32,
}

/// Owns the stores.
pub struct StoreActor {
    store: Store,
    /// `Some` while Loading.
    staged: Option<StoreBuilder>,
    config: StoreConfig,
    /// Frees the stores a LOAD replaced or aborted.
    reclaimer: Reclaimer,
    /// Memory faulted in after a LOAD for the next SAVE's copies.
    reserve: CowReserve,
    /// Its size: this share of the store's memory after a LOAD.
    reserve_percent: u8,
    /// Counts the reserves started and given up: the current one's number.
    reserve_number: u64,
}

impl StoreActor {
    pub fn new(config: StoreConfig) -> Self {
        StoreActor {
            store: Store::new(config.clone()),
            staged: None,
            config,
            reclaimer: Reclaimer::default(),
            reserve: CowReserve::default(),
            reserve_percent: 0,
            reserve_number: 0,
        }
    }

    /// After each LOAD, fault in `percent` % of the store's memory for the
    /// next SAVE's copy-on-write (`snapshot.cow_reserve_percent`; at most
    /// 100; 0 = none). Only with glibc, whose heaps `reserve.rs` relies on.
    pub fn cow_reserve_percent(mut self, percent: u8) -> Self {
        self.reserve_percent = percent.min(100);
        self
    }

    /// Starts the reserve for the store just loaded.
    fn start_reserve(&mut self, ctx: &mut Context<Self>) {
        if !cfg!(all(target_os = "linux", target_env = "gnu")) || self.reserve_percent == 0 {
            return;
        }
        let bytes = self.store.stats().used_memory_bytes / 100 * u64::from(self.reserve_percent);
        self.reserve_number += 1;
        self.reserve.start(bytes);
        if self.reserve.in_progress() {
            ctx.notify(ReserveStep(self.reserve_number));
        }
    }

    fn execute(&mut self, op: StoreOp, now: u64) -> Response {
        if self.staged.is_some() && op.is_write() {
            return Response::Error(READ_ONLY.to_string());
        }
        match op {
            StoreOp::AddEvent(e) => {
                self.store.add_event(&e.ctx, e.kind, &e.id, e.score, now);
                Response::Ok
            }
            StoreOp::SetVector { id, values } => ok_or_error(self.store.set_vector(&id, &values)),
            StoreOp::DeleteVector { id } => ok_or_error(self.store.delete_vector(&id)),
            StoreOp::QuerySimilar(a) => results(self.store.similar(&a.id, a.top_k, a.mode, a.min_score)),
            StoreOp::QueryVector(a) => results(self.store.similar_to_vector(&a.values, a.top_k, a.min_score)),
        }
    }
}

/// Frees whole stores (the one a LOAD replaced, or a failed LOAD's staged
/// one) on a thread of its own, `nvecd-free`, at a lower priority, so the
/// LOAD's reply and the requests after it do not wait for the drop and the
/// trim (0.45–0.65 s for the bench's large state). A new load waits for
/// the free before it stages anything (`BeginLoad`), so memory stays bounded
/// by the live store and a staged one, and a load right after another does
/// not share the cores and the allocator's locks with the free (measured:
/// back-to-back LOADs of the large file took 1–1.5 s longer when they did).
/// Handing over a store also waits for the one before.
#[derive(Default)]
struct Reclaimer {
    freeing: Option<std::thread::JoinHandle<()>>,
}

/// The nice value of the `nvecd-free` thread: a SAVE's.
const FREE_NICE: i32 = crate::snapshot::parts::SAVE_NICE;

impl Reclaimer {
    fn hand_over<T: Send + 'static>(&mut self, store: T) {
        self.wait();
        let spawned = std::thread::Builder::new()
            .name("nvecd-free".into())
            .spawn(move || {
                crate::snapshot::parts::lower_priority(FREE_NICE);
                drop_and_trim(store);
            });
        match spawned {
            Ok(h) => self.freeing = Some(h),
            // The store was dropped with the closure, here; hand its memory
            // back all the same.
            Err(e) => {
                tracing::warn!(error = %e, "no thread to free the previous store; freed it in place");
                trim();
            }
        }
    }

    /// True while a handed-over store is being freed (and trimmed).
    fn busy(&self) -> bool {
        self.freeing.as_ref().is_some_and(|h| !h.is_finished())
    }

    /// Waits until the store handed over last is freed.
    fn wait(&mut self) {
        if let Some(h) = self.freeing.take() {
            if h.join().is_err() {
                tracing::error!("freeing the previous store panicked");
            }
        }
    }
}

impl Drop for Reclaimer {
    fn drop(&mut self) {
        self.wait();
    }
}

/// Drops a whole store and gives the memory it freed back to the system.
/// Without the trim, glibc keeps most of it, above all what the
/// co-occurrence writes' second thread allocated in its own arena, and the
/// server stays at the size of two states after a LOAD. The trim takes a
/// fraction of the drop's time.
fn drop_and_trim<T>(store: T) {
    let t = std::time::Instant::now();
    drop(store);
    let dropped = t.elapsed();
    trim();
    tracing::debug!(?dropped, trimmed = ?t.elapsed().saturating_sub(dropped), "previous store freed");
}

fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only hands free pages of the heap back to the
    // system; it touches no memory in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn event_ref(e: &EventArgs) -> EventRef<'_> {
    EventRef {
        ctx: &e.ctx,
        kind: e.kind,
        id: &e.id,
        score: e.score,
    }
}

fn ok_or_error(r: Result<(), StoreError>) -> Response {
    match r {
        Ok(()) => Response::Ok,
        Err(e) => Response::Error(e.to_string()),
    }
}

fn results(r: Result<Vec<Scored>, StoreError>) -> Response {
    match r {
        Ok(v) => Response::Results(
            v.into_iter()
                .map(|s| (s.id, s.score))
                .collect::<Vec<(Arc<str>, f32)>>(),
        ),
        Err(e) => Response::Error(e.to_string()),
    }
}

impl Actor for StoreActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Connections wait (back-pressure) when the mailbox is full; a larger
        // mailbox keeps many pipelining clients busy.
        ctx.set_mailbox_capacity(256);
    }
}

impl Drop for StoreActor {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!("store actor panicked; stopping the server");
            System::current().stop_with_code(1);
        }
    }
}

impl Handler<ExecuteBatch> for StoreActor {
    type Result = Vec<Response>;
    fn handle(&mut self, msg: ExecuteBatch, _: &mut Context<Self>) -> Vec<Response> {
        let now = now_ms();
        let mut out = Vec::with_capacity(msg.0.len());
        let mut ops = msg.0.into_iter().peekable();
        let mut events = Vec::new();
        while let Some(op) = ops.next() {
            // Anything else, and every write while loading (refused), one
            // at a time.
            let first = match op {
                StoreOp::AddEvent(e) if self.staged.is_none() => e,
                op => {
                    out.push(self.execute(op, now));
                    continue;
                }
            };
            // A run of EVENTs is stored in one call, which can make the
            // co-occurrence writes of many events at once.
            events.clear();
            events.push(first);
            while let Some(StoreOp::AddEvent(e)) = ops.next_if(|op| matches!(op, StoreOp::AddEvent(_))) {
                events.push(e);
            }
            self.store.add_events(events.iter().map(event_ref), now);
            out.extend(events.iter().map(|_| Response::Ok));
        }
        out
    }
}

impl Handler<GetStats> for StoreActor {
    type Result = MessageResult<GetStats>;
    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(StoreStatus {
            stats: self.store.stats(),
            loading: self.staged.is_some(),
            cow_reserve_bytes: self.reserve.bytes(),
        })
    }
}

impl Handler<FreezeStore> for StoreActor {
    type Result = Result<StoreImage, SnapshotError>;
    fn handle(&mut self, _: FreezeStore, _: &mut Context<Self>) -> Self::Result {
        if self.staged.is_some() {
            return Err(SnapshotError::ReadOnly);
        }
        // A reserve still being made is cut short: what it has made is
        // freed for this SAVE's copies (the next steps shrink it).
        self.reserve.stop_making();
        Ok(self.store.freeze())
    }
}

impl Handler<BeginLoad> for StoreActor {
    type Result = Result<(), SnapshotError>;
    fn handle(&mut self, _: BeginLoad, _: &mut Context<Self>) -> Self::Result {
        if self.staged.is_some() {
            return Err(SnapshotError::LoadInProgress);
        }
        self.reclaimer.wait();
        // A reserve still being made is given up: the load's own
        // allocations will use what it made so far.
        self.reserve = CowReserve::default();
        self.reserve_number += 1;
        self.staged = Some(StoreBuilder::new(self.config.clone()));
        Ok(())
    }
}

impl Handler<ApplyLoadBatch> for StoreActor {
    type Result = Result<(), SnapshotError>;
    fn handle(&mut self, msg: ApplyLoadBatch, _: &mut Context<Self>) -> Self::Result {
        match self.staged.as_mut() {
            Some(b) => b.apply(msg.0).map_err(|e| SnapshotError::Corrupt(e.to_string())),
            None => Err(SnapshotError::Corrupt("load batch outside a load".into())),
        }
    }
}

impl Handler<FinishLoad> for StoreActor {
    type Result = Result<StoreStats, SnapshotError>;
    fn handle(&mut self, _: FinishLoad, ctx: &mut Context<Self>) -> Self::Result {
        match self.staged.take() {
            Some(b) => {
                let dropped = b.dropped_events();
                if dropped > 0 {
                    tracing::warn!(
                        dropped,
                        ctx_buffer_size = self.store.config().ctx_buffer_size,
                        "snapshot load: contexts of the file held more events than events.ctx_buffer_size; \
                         their oldest events were not kept"
                    );
                }
                let old = std::mem::replace(&mut self.store, b.finish());
                self.reclaimer.hand_over(old);
                self.start_reserve(ctx);
                Ok(self.store.stats())
            }
            None => Err(SnapshotError::Corrupt("finish outside a load".into())),
        }
    }
}

impl Handler<AbortLoad> for StoreActor {
    type Result = ();
    fn handle(&mut self, _: AbortLoad, _: &mut Context<Self>) {
        if let Some(staged) = self.staged.take() {
            self.reclaimer.hand_over(staged);
        }
    }
}

impl Handler<ReserveStep> for StoreActor {
    type Result = ();
    fn handle(&mut self, step: ReserveStep, ctx: &mut Context<Self>) {
        if step.0 != self.reserve_number || !self.reserve.in_progress() {
            return;
        }
        // The free of the replaced store ends with `malloc_trim`, which
        // would hand the reserve back: wait for it.
        if self.reclaimer.busy() {
            ctx.notify_later(step, Duration::from_millis(20));
            return;
        }
        match self.reserve.step() {
            reserve::Step::Now => ctx.notify(step),
            reserve::Step::Later => {
                ctx.notify_later(step, RESERVE_PAUSE);
            }
            reserve::Step::Done => {
                if let Some(since) = self.reserve.take_finished() {
                    tracing::info!(
                        bytes = self.reserve.bytes(),
                        elapsed_ms = since.elapsed().as_millis() as u64,
                        "copy-on-write reserve made"
                    );
                }
            }
        }
    }
}

impl Handler<RunDecay> for StoreActor {
    type Result = MessageResult<RunDecay>;
    fn handle(&mut self, msg: RunDecay, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.store.decay(msg.alpha))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records, when dropped, its name, the thread it was dropped on and
    /// that thread's nice value; `linger` keeps the drop busy for a while.
    struct Tracked {
        name: &'static str,
        log: Arc<Mutex<Vec<String>>>,
        linger: std::time::Duration,
    }

    impl Drop for Tracked {
        fn drop(&mut self) {
            let push = |what: String| {
                self.log
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(what)
            };
            let thread = std::thread::current().name().unwrap_or("?").to_owned();
            push(format!("{} begins on {thread}", self.name));
            #[cfg(target_os = "linux")]
            push(format!(
                "{} nice {}",
                self.name,
                crate::snapshot::parts::own_nice()
            ));
            std::thread::sleep(self.linger);
            push(format!("{} ends", self.name));
        }
    }

    fn tracked(name: &'static str, log: &Arc<Mutex<Vec<String>>>, linger_ms: u64) -> Tracked {
        Tracked {
            name,
            log: Arc::clone(log),
            linger: std::time::Duration::from_millis(linger_ms),
        }
    }

    #[test]
    fn a_handed_over_store_is_freed_on_its_own_thread_one_at_a_time() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut reclaimer = Reclaimer::default();
        // The first lingers, so without the wait the second's drop would
        // begin before the first's ends.
        reclaimer.hand_over(tracked("first", &log, 50));
        reclaimer.hand_over(tracked("second", &log, 0));
        reclaimer.wait();
        let log = log.lock().expect("not poisoned").clone();
        let lines = |name: &str| {
            let mut v = vec![format!("{name} begins on nvecd-free")];
            #[cfg(target_os = "linux")]
            v.push(format!(
                "{name} nice {}",
                FREE_NICE.max(crate::snapshot::parts::own_nice())
            ));
            v.push(format!("{name} ends"));
            v
        };
        assert_eq!(log, [lines("first"), lines("second")].concat());
    }

    #[test]
    fn dropping_the_reclaimer_waits_for_the_store_being_freed() {
        let log = Arc::new(Mutex::new(Vec::new()));
        {
            let mut reclaimer = Reclaimer::default();
            reclaimer.hand_over(tracked("only", &log, 20));
        }
        let log = log.lock().expect("not poisoned");
        assert_eq!(log.last().map(String::as_str), Some("only ends"));
    }
}
