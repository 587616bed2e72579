//! The co-occurrence section's records, checked and encoded a row at a time,
//! on the writing thread or in parts on several threads.
//!
//! The pairs are most of a large snapshot (59.6 million records of 2.5 GB at
//! the large benchmark scale), and encoding them — walking the rows, sorting
//! each row's partners, the writer's checks, copying names — is what a save
//! spends its time on. With `Encode::workers > 1` the rows are cut into parts
//! of about `part_entries` row entries (whole rows; ~2 MB of records at the
//! default); worker threads encode parts (each into its own
//! buffer, with its CRC) in any order, a bounded number ahead of the writing
//! thread, which takes them in file order, checks the pair at each seam
//! against the one before it, and writes them. The bytes, and the first error
//! in pair order, are those of the sequential encoding (tested).
//!
//! Worker 0 runs at the caller's priority; the others run as `SCHED_IDLE` on
//! Linux, so they only take CPU time that nothing else wants. Even so, on the
//! 2-core machine of BENCHMARKS.md a second worker raised the p99 latency of
//! EVENTs sent during a save from ~0.3 ms to ~2 ms, so the server encodes on
//! the saving thread alone unless `snapshot.save_threads` asks for more;
//! offline tools (`write_snapshot`) use every core.

use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Condvar, Mutex, PoisonError};

use crc32fast::Hasher;

use super::writer::{check_name, invalid};
use super::SnapshotError;
use crate::store::PairRowFn;

/// A source's pairs as rows numbered `0..rows()`: row `r` is an item `a` with
/// its partners `b > a`, and listing the rows in order lists every unordered
/// pair once, sorted by `(a, b)`. `Sync`: parts may be listed on several
/// threads at once.
pub trait PairRows: Sync {
    /// Number of rows.
    fn rows(&self) -> usize;
    /// At least the number of partners row `row` lists (for cutting parts of
    /// similar size; a save's rows list about half their entries).
    fn row_len(&self, row: usize) -> usize;
    /// `f(a, [(b, score), ...])` for the rows in `range` that have partners,
    /// in order; stops at the first error of `f`.
    fn for_each_row(
        &self,
        range: Range<usize>,
        f: &mut PairRowFn<'_, SnapshotError>,
    ) -> Result<(), SnapshotError>;
}

/// How a save encodes the co-occurrence section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encode {
    /// Threads that encode parts; 1 encodes on the writing thread.
    pub workers: usize,
    /// A part ends after the row that brings its `row_len` sum to this.
    pub part_entries: usize,
    /// Below this many rows the section is encoded on the writing thread.
    pub min_rows: usize,
}

impl Encode {
    /// One worker per core, at most 4; sources under 16,384 rows (a few MB
    /// of pairs) on the writing thread.
    pub fn auto() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Encode {
            workers: cores.clamp(1, 4),
            part_entries: 100_000,
            min_rows: 16_384,
        }
    }
    /// `snapshot.save_threads`: 0 = `auto`, 1 = `sequential`, n = n workers.
    pub fn with_threads(threads: usize) -> Self {
        match threads {
            0 => Self::auto(),
            n => Encode {
                workers: n,
                ..Self::auto()
            },
        }
    }
    /// Everything on the writing thread.
    pub fn sequential() -> Self {
        Encode {
            workers: 1,
            ..Self::auto()
        }
    }
    fn parallel_for(&self, rows: usize) -> bool {
        self.workers > 1 && rows >= self.min_rows && rows > 1
    }
}

/// A refused pair: its number among the pairs the `PairCheck` saw, whether
/// it failed a check made after the order check (the score), and why.
pub(crate) struct Fault {
    pub at: u64,
    pub after_order: bool,
    pub error: SnapshotError,
}

impl Fault {
    /// A fault found after the order check (score, count, I/O).
    fn late(at: u64, error: SnapshotError) -> Self {
        Fault {
            at,
            after_order: true,
            error,
        }
    }
}

/// The writer's checks of the pair records, a row at a time: names not
/// empty, `a < b`, strictly increasing `(a, b)`, finite positive scores. The
/// first pair of a row is checked against the previous pair; each further
/// `b` against the one before it in the row (`b > last > a`).
#[derive(Default)]
pub(crate) struct PairCheck {
    /// The last pair checked (empty `a`: none yet).
    prev_a: String,
    prev_b: String,
    /// `a`'s length and bytes, encoded once per row.
    a_field: Vec<u8>,
    /// Pairs that passed.
    pub pairs: u64,
}

impl PairCheck {
    /// Checks the row and hands each pair to `put(a_field, b, score)`.
    pub fn row(
        &mut self,
        a: &str,
        partners: &[(&str, f32)],
        mut put: impl FnMut(&[u8], &[u8], f32) -> Result<(), SnapshotError>,
    ) -> Result<(), Fault> {
        let mut last: Option<&str> = None;
        for &(b, score) in partners {
            let early = |error| Fault {
                at: self.pairs,
                after_order: false,
                error,
            };
            check_name(a, "pair item").map_err(early)?;
            check_name(b, "pair item").map_err(early)?;
            match last {
                // b > last > a: both checks at once
                Some(l) if b.as_bytes() > l.as_bytes() => {}
                Some(l) => {
                    if a.as_bytes() >= b.as_bytes() {
                        return Err(early(not_a_lt_b(a, b)));
                    }
                    return Err(early(not_sorted(a, b, a, l)));
                }
                None => {
                    if a.as_bytes() >= b.as_bytes() {
                        return Err(early(not_a_lt_b(a, b)));
                    }
                    if let Some(e) = seam_error(&self.prev_a, &self.prev_b, a, b) {
                        return Err(early(e));
                    }
                    self.a_field.clear();
                    self.a_field.extend_from_slice(&(a.len() as u64).to_le_bytes());
                    self.a_field.extend_from_slice(a.as_bytes());
                }
            }
            if !(score.is_finite() && score > 0.0) {
                return Err(Fault::late(
                    self.pairs,
                    invalid(format!("pair ({a:?}, {b:?}) has score {score}")),
                ));
            }
            if self.pairs >= u64::from(u32::MAX) {
                return Err(Fault::late(
                    self.pairs,
                    SnapshotError::TooLarge { what: "pair count" },
                ));
            }
            last = Some(b);
            put(&self.a_field, b.as_bytes(), score).map_err(|e| Fault::late(self.pairs, e))?;
            self.pairs += 1;
        }
        if let Some(l) = last {
            if self.prev_a != a {
                self.prev_a.clear();
                self.prev_a.push_str(a);
            }
            self.prev_b.clear();
            self.prev_b.push_str(l);
        }
        Ok(())
    }
}

/// `(a, b)` must come after `(prev_a, prev_b)`; an empty `prev_a` is "none".
fn seam_error(prev_a: &str, prev_b: &str, a: &str, b: &str) -> Option<SnapshotError> {
    (!prev_a.is_empty() && (a.as_bytes(), b.as_bytes()) <= (prev_a.as_bytes(), prev_b.as_bytes()))
        .then(|| not_sorted(a, b, prev_a, prev_b))
}

fn not_sorted(a: &str, b: &str, prev_a: &str, prev_b: &str) -> SnapshotError {
    invalid(format!(
        "pairs not strictly sorted: ({a:?}, {b:?}) after ({prev_a:?}, {prev_b:?})"
    ))
}

fn not_a_lt_b(a: &str, b: &str) -> SnapshotError {
    invalid(format!("pair ({a:?}, {b:?}) is not a < b"))
}

/// Appends one pair record.
#[inline]
pub(crate) fn encode_pair(out: &mut Vec<u8>, a_field: &[u8], b: &[u8], score: f32) {
    out.extend_from_slice(a_field);
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
    out.extend_from_slice(&score.to_le_bytes());
}

/// Where the writing thread puts the parts, in order.
pub(crate) trait PartSink {
    /// Encoded records and their CRC.
    fn put_encoded(&mut self, bytes: &[u8], crc: &Hasher) -> Result<(), SnapshotError>;
}

/// One encoded part.
struct Part {
    bytes: Vec<u8>,
    crc: Hasher,
    pairs: u64,
    /// Its first pair (set even when that pair is refused) and its last one.
    first: Option<(String, String)>,
    last: Option<(String, String)>,
    fault: Option<Fault>,
}

/// Walks the rows `range` through `check`, handing each pair that passes to
/// `put`; stops at the first refused pair (or error of the walk itself).
/// `first`, if given, gets the first pair of the range, checked or not.
fn check_rows(
    rows: &dyn PairRows,
    range: Range<usize>,
    check: &mut PairCheck,
    mut first: Option<&mut Option<(String, String)>>,
    mut put: impl FnMut(&[u8], &[u8], f32) -> Result<(), SnapshotError>,
) -> Result<(), Fault> {
    let mut fault = None;
    let walked = rows.for_each_row(range, &mut |a, partners| {
        if let Some(first) = first.as_deref_mut().filter(|f| f.is_none()) {
            *first = partners.first().map(|&(b, _)| (a.to_owned(), b.to_owned()));
        }
        check.row(a, partners, &mut put).map_err(|f| {
            fault = Some(f);
            // stops the walk; the fault is what counts
            invalid(String::new())
        })
    });
    match (fault, walked) {
        (Some(f), _) => Err(f),
        (None, Err(e)) => Err(Fault::late(check.pairs, e)),
        (None, Ok(())) => Ok(()),
    }
}

/// Encodes the rows `range` into `bytes` (emptied first).
fn encode_part(rows: &dyn PairRows, range: Range<usize>, mut bytes: Vec<u8>) -> Part {
    let mut check = PairCheck::default();
    bytes.clear();
    let mut first = None;
    let fault = check_rows(rows, range, &mut check, Some(&mut first), |a_field, b, s| {
        encode_pair(&mut bytes, a_field, b, s);
        Ok(())
    })
    .err();
    let mut crc = Hasher::new();
    crc.update(&bytes);
    let last = (check.pairs > 0).then(|| (check.prev_a.clone(), check.prev_b.clone()));
    Part {
        bytes,
        crc,
        pairs: check.pairs,
        first,
        last,
        fault,
    }
}

/// Parts handed from the workers to the writing thread.
struct Queue {
    /// Next part a worker may take.
    next: usize,
    /// Parts the writing thread has taken.
    taken: usize,
    done: Vec<Option<Part>>,
    /// Buffers of written parts, for the next ones (fresh memory costs a
    /// page fault and a page clear per 4 KiB).
    spare: Vec<Vec<u8>>,
    stop: bool,
}

/// Checks and encodes every row of `rows` into `sink`, in order, and returns
/// the number of pairs. Sequential or in parts as `plan` says; the same bytes
/// and the same first error either way.
pub(crate) fn encode_pairs<S: PartSink>(
    rows: &dyn PairRows,
    plan: Encode,
    sink: &mut S,
    mut put_one: impl FnMut(&mut S, &[u8], &[u8], f32) -> Result<(), SnapshotError>,
) -> Result<u64, SnapshotError> {
    let n = rows.rows();
    if !plan.parallel_for(n) {
        let mut check = PairCheck::default();
        check_rows(rows, 0..n, &mut check, None, |a_field, b, s| {
            put_one(sink, a_field, b, s)
        })
        .map_err(|f| f.error)?;
        return Ok(check.pairs);
    }
    // parts: consecutive rows, ends[j] = the row after part j
    let mut ends = Vec::new();
    let mut acc = 0usize;
    for r in 0..n {
        acc = acc.saturating_add(rows.row_len(r));
        if acc >= plan.part_entries || r + 1 == n {
            ends.push(r + 1);
            acc = 0;
        }
    }
    let parts = ends.len();
    let ends = &ends;
    let window = plan.workers + 2;
    let queue = Mutex::new(Queue {
        next: 0,
        taken: 0,
        done: (0..parts).map(|_| None).collect(),
        spare: Vec::new(),
        stop: false,
    });
    let ready = Condvar::new();
    let lock = || queue.lock().unwrap_or_else(PoisonError::into_inner);
    std::thread::scope(|scope| {
        for w in 0..plan.workers {
            let (queue, ready) = (&queue, &ready);
            scope.spawn(move || {
                if w > 0 {
                    idle_priority();
                }
                loop {
                    let (j, buf) = {
                        let mut q = queue.lock().unwrap_or_else(PoisonError::into_inner);
                        while !q.stop && q.next < parts && q.next >= q.taken + window {
                            q = ready.wait(q).unwrap_or_else(PoisonError::into_inner);
                        }
                        if q.stop || q.next >= parts {
                            return;
                        }
                        q.next += 1;
                        (q.next - 1, q.spare.pop().unwrap_or_default())
                    };
                    let start = j.checked_sub(1).and_then(|i| ends.get(i)).copied().unwrap_or(0);
                    let range = start..ends.get(j).copied().unwrap_or(n);
                    let part = catch_unwind(AssertUnwindSafe(|| encode_part(rows, range, buf)))
                        .unwrap_or_else(|_| Part {
                            bytes: Vec::new(),
                            crc: Hasher::new(),
                            pairs: 0,
                            first: None,
                            last: None,
                            fault: Some(Fault::late(
                                0,
                                invalid("the pair encoder failed (internal error)".into()),
                            )),
                        });
                    let mut q = queue.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Some(slot) = q.done.get_mut(j) {
                        *slot = Some(part);
                    }
                    ready.notify_all();
                }
            });
        }
        // Stops the workers however the writing thread leaves (an error, or
        // a panic: the scope would otherwise wait for them forever).
        let _stop = StopOnDrop {
            queue: &queue,
            ready: &ready,
        };
        (|| {
            let mut prev: Option<(String, String)> = None;
            let mut total = 0u64;
            for j in 0..parts {
                let part = {
                    let mut q = lock();
                    loop {
                        if let Some(p) = q.done.get_mut(j).and_then(Option::take) {
                            q.taken = j + 1;
                            ready.notify_all();
                            break p;
                        }
                        q = ready.wait(q).unwrap_or_else(PoisonError::into_inner);
                    }
                };
                let seam = match (&prev, &part.first) {
                    (Some((pa, pb)), Some((a, b))) => seam_error(pa, pb, a, b),
                    _ => None,
                };
                if let Some(f) = part.fault {
                    // the seam is checked after the names and a < b of the
                    // part's first pair, before its score
                    if f.at > 0 || f.after_order {
                        if let Some(e) = seam {
                            return Err(e);
                        }
                    }
                    if total + f.at > u64::from(u32::MAX) {
                        return Err(SnapshotError::TooLarge { what: "pair count" });
                    }
                    return Err(f.error);
                }
                if let Some(e) = seam {
                    return Err(e);
                }
                total += part.pairs;
                if total > u64::from(u32::MAX) {
                    return Err(SnapshotError::TooLarge { what: "pair count" });
                }
                sink.put_encoded(&part.bytes, &part.crc)?;
                lock().spare.push(part.bytes);
                if part.last.is_some() {
                    prev = part.last;
                }
            }
            Ok(total)
        })()
    })
}

struct StopOnDrop<'q> {
    queue: &'q Mutex<Queue>,
    ready: &'q Condvar,
}

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner).stop = true;
        self.ready.notify_all();
    }
}

/// Nice value of the thread a server SAVE encodes and writes on (Linux).
/// Against a thread at nice 0 it gets about a tenth of a shared core, so a
/// store or connection thread that wakes up takes the core from it at once
/// instead of waiting out its slice; on a core nothing else wants it runs
/// at full speed (the bench's snapshot workload measures SAVE speed so).
pub const SAVE_NICE: i32 = 10;

/// Runs `f` on a thread of its own (named `nvecd-save`) at nice `nice` and
/// returns what `f` returns; a panic in `f` is raised here. A thread cannot
/// take back a priority it gave up without privileges, so the calling
/// thread (a pooled one) keeps its own. Elsewhere than Linux, or when no
/// thread can be started, `f` runs on the calling thread.
pub fn at_lower_priority<R: Send>(nice: i32, f: impl FnOnce() -> R + Send) -> R {
    let job = Mutex::new(Some(f));
    let run = || {
        job.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .map(|f| f())
    };
    let on_thread = std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("nvecd-save".into())
            .spawn_scoped(scope, || {
                lower_priority(nice);
                run()
            });
        match worker {
            Ok(h) => h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(_) => None,
        }
    });
    // Without a thread, `f` is still in `job`: it runs here.
    on_thread
        .or_else(run)
        .expect("the job ran on its thread or runs here")
}

/// Raises the calling thread's nice value to `nice` (Linux: per thread).
pub(crate) fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions; setpriority on our own
        // thread id changes only this thread's nice value, and failure
        // leaves it as it was, which is fine.
        unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// The nice value of the calling thread (Linux: per thread), for tests.
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn own_nice() -> i32 {
    // SAFETY: gettid and getpriority only read this thread's attributes.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
}

/// Lets the calling thread run only when a core is otherwise idle.
fn idle_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sets the calling thread's policy from a parameter we own;
        // failure leaves the thread as it was, which is fine.
        unsafe {
            libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_runs_on_its_own_thread_at_the_lower_priority() {
        let caller = std::thread::current().id();
        let (name, other, value) = at_lower_priority(SAVE_NICE, || {
            let t = std::thread::current();
            (t.name().map(str::to_owned), t.id() != caller, 42)
        });
        assert_eq!(name.as_deref(), Some("nvecd-save"));
        assert!(other, "not the caller's thread");
        assert_eq!(value, 42);
        #[cfg(target_os = "linux")]
        {
            let before = own_nice();
            let inside = at_lower_priority(SAVE_NICE, own_nice);
            assert_eq!(inside, SAVE_NICE.max(before), "the job's thread is niced");
            assert_eq!(own_nice(), before, "the caller keeps its priority");
        }
    }

    #[test]
    fn a_panic_in_the_job_reaches_the_caller() {
        let caught = std::panic::catch_unwind(|| at_lower_priority(SAVE_NICE, || panic!("in the job")));
        let msg = caught.expect_err("the panic came through");
        assert_eq!(msg.downcast_ref::<&str>(), Some(&"in the job"));
    }
}
