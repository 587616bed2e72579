//! The copy-on-write reserve: memory faulted in after a LOAD, ahead of the
//! next SAVE.
//!
//! A SAVE shares the store with its frozen image, so every write during it
//! copies what it changes (a row, a 16 KiB page of a large row, a chunk of
//! row pointers, a ring) into newly allocated memory. After a LOAD the
//! process has no free memory of its own: those copies land in pages it has
//! never touched, and on a VM the first touch of a page is slow (8–13 µs
//! per 4 KiB page, 0.3–0.5 GB/s, on the bench's host). Under the bench's
//! write load the first SAVE after a LOAD copies ~1 GB, which put its EVENT
//! p99 at 3–15× the no-save p99; later SAVEs reuse what the image before
//! them freed (BENCHMARKS.md, "the first SAVE after a LOAD").
//!
//! So after a LOAD the store thread allocates the reserve in pieces of
//! [`PIECE`] bytes, [`BATCH`] at a time, and holds them all, so that each
//! piece is memory of its own: glibc hands out what it has free first, then
//! fresh memory. Allocating a piece faults in only the page its successor's
//! header lands on; the rest of each piece is faulted in by a thread of its
//! own, `nvecd-reserve`, at a SAVE's nice value, which writes to every page
//! of a batch (volatile writes) and hands it back. Allocation stays on the
//! store thread because glibc gives each thread its own arena, and the next
//! SAVE's copies are allocated from the store thread's; which thread writes
//! to the pages does not matter. Once every piece is back, the store thread
//! shrinks each in place (`realloc`) to its first [`GUARD`] bytes, which it
//! keeps: glibc frees the rest of each piece as one chunk after its own
//! guard. So the freed parts cannot merge with each other or into the top
//! of the heap, which is all glibc trims on its own (`malloc_trim`, which
//! the reclaimer calls after freeing a replaced store, has run before the
//! reserve is started); they stay in the store thread's arena.
//!
//! Everything runs a step at a time between the store's other messages
//! ([`CowReserve::step`]): a batch allocated, batches taken back, or
//! [`STEP_SHRINKS`] pieces shrunk. A SAVE that starts while pieces are being
//! made stops the making (what was made is shrunk, for that SAVE).
//!
//! The reserve's size is `snapshot.cow_reserve_percent` of the store's
//! memory after the LOAD: held on purpose, as much as a SAVE under heavy
//! writes ends up holding anyway once it is done.
//!
//! Only the store thread's arena gets a reserve. A run of 64 or more
//! pipelined EVENTs shares its co-occurrence writes with `nvecd-helper`
//! (`store/helper.rs`), whose copies of the odd items' rows come from that
//! thread's arena; the bench's stall workload sends its EVENTs one at a
//! time, so all of its copies come from the store thread's.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::Instant;

/// Bytes of the copies a SAVE makes most of: a 16 KiB page of a large row
/// (`Page` in `store/cooccurrence.rs`), a glibc chunk of 16,400 bytes with
/// its header.
const PAGE_COPY_CHUNK: usize = 16 * 1024 + 16;

/// Bytes asked for per piece: a glibc chunk (request + 8, rounded up to 16)
/// of 32 bytes for the guard and 4 page copies' chunks after it, 65,632
/// bytes in all, below glibc's smallest `mmap` threshold (128 KiB), so
/// pieces come from the arena's heap. What is freed of a piece holds four
/// page copies exactly, or as many smaller copies.
pub(crate) const PIECE: usize = 32 + 4 * PAGE_COPY_CHUNK - 8;

/// Pieces allocated per step and handed to `nvecd-reserve` together: 2 MiB.
/// The store thread faults in one page per piece (0.2–0.4 ms a batch at a
/// VM's first-touch speed); the thread, the other fifteen.
pub(crate) const BATCH: usize = 32;

/// Batches out at `nvecd-reserve` at most, so that it always has the next
/// one while the store thread takes one back.
const IN_FLIGHT: usize = 2;

/// Pieces shrunk per step (one `realloc` each).
pub(crate) const STEP_SHRINKS: usize = 256;

/// Bytes of a piece kept as its guard (a 32-byte chunk for glibc).
pub(crate) const GUARD: usize = 16;

/// Nice value of `nvecd-reserve`: a SAVE's, so a store or connection thread
/// that wakes up takes the core from it.
const TOUCH_NICE: i32 = crate::snapshot::parts::SAVE_NICE;

/// What to do after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Run the next step at once (shrinking).
    Now,
    /// Run the next step a little later (batches are out being faulted in,
    /// or the next one is to be allocated).
    Later,
    /// Nothing is left to do.
    Done,
}

/// The thread that faults batches in, and the way back from it.
struct Toucher {
    to: Sender<Vec<Vec<u8>>>,
    back: Receiver<Vec<Vec<u8>>>,
}

impl Toucher {
    /// Starts `nvecd-reserve`; `None` when no thread can be started. The
    /// thread ends once the reserve lets go of its end of the channels (a
    /// batch it still holds is freed there).
    fn start() -> Option<Toucher> {
        let (to, batches) = channel::<Vec<Vec<u8>>>();
        let (done, back) = channel();
        std::thread::Builder::new()
            .name("nvecd-reserve".into())
            .spawn(move || {
                crate::snapshot::parts::lower_priority(TOUCH_NICE);
                for mut batch in batches {
                    batch.iter_mut().for_each(touch_pages);
                    if done.send(batch).is_err() {
                        break;
                    }
                }
            })
            .ok()?;
        Some(Toucher { to, back })
    }
}

/// A reserve being made, made, or none.
#[derive(Default)]
pub(crate) struct CowReserve {
    /// When the reserve still being made was started.
    started: Option<Instant>,
    /// Every piece back from `nvecd-reserve`: whole from `shrunk`'s index
    /// on, guards before it. The guards are kept until the next reserve
    /// replaces this one.
    pieces: Vec<Vec<u8>>,
    /// Pieces still to allocate.
    left: usize,
    /// Batches out at `nvecd-reserve`.
    out: usize,
    /// Pieces shrunk to their guard so far.
    shrunk: usize,
    /// `None` before the first batch, or when no thread could be started
    /// (the store thread then faults its batches in itself).
    toucher: Option<Toucher>,
}

impl CowReserve {
    /// Forgets any reserve (freeing it and its guards, so that glibc can
    /// merge the old pieces again) and starts one of about `bytes`, rounded
    /// up to whole pieces; zero bytes start nothing.
    pub(crate) fn start(&mut self, bytes: u64) {
        *self = CowReserve::default();
        // Asked for as a share of the store's own memory; bounded all the
        // same by what a list of pieces can hold.
        let pieces = usize::try_from(bytes.div_ceil(PIECE as u64)).unwrap_or(usize::MAX);
        self.left = pieces.min(isize::MAX as usize / PIECE);
        self.pieces.reserve(self.left.min(1 << 20));
        if self.left > 0 {
            self.started = Some(Instant::now());
            self.toucher = Toucher::start();
        }
    }

    /// Once the last step has run: when the reserve was started (only once).
    pub(crate) fn take_finished(&mut self) -> Option<Instant> {
        if self.in_progress() {
            return None;
        }
        self.started.take()
    }

    /// Makes no more pieces: the next steps take back the batches out and
    /// shrink every piece made so far, so that they are free for a SAVE
    /// that starts now.
    pub(crate) fn stop_making(&mut self) {
        self.left = 0;
    }

    /// True while there are steps to run.
    pub(crate) fn in_progress(&self) -> bool {
        self.left > 0 || self.out > 0 || self.shrunk < self.pieces.len()
    }

    /// Takes back the batches `nvecd-reserve` has faulted in, then either
    /// allocates the next batch and hands it over, or waits for those out,
    /// or, once every piece is back, shrinks up to [`STEP_SHRINKS`] of them.
    pub(crate) fn step(&mut self) -> Step {
        if let Some(t) = &self.toucher {
            while let Ok(batch) = t.back.try_recv() {
                self.out -= 1;
                self.pieces.extend(batch);
            }
        }
        if self.left > 0 {
            if self.out < IN_FLIGHT {
                let n = BATCH.min(self.left);
                self.left -= n;
                let batch: Vec<Vec<u8>> = (0..n).map(|_| Vec::with_capacity(PIECE)).collect();
                let unsent = match &self.toucher {
                    Some(t) => match t.to.send(batch) {
                        Ok(()) => {
                            self.out += 1;
                            None
                        }
                        // The thread is gone (it cannot panic, but all the
                        // same): this batch and the rest are faulted in here.
                        Err(back) => {
                            self.toucher = None;
                            Some(back.0)
                        }
                    },
                    None => Some(batch),
                };
                if let Some(mut batch) = unsent {
                    batch.iter_mut().for_each(touch_pages);
                    self.pieces.extend(batch);
                }
            }
            return Step::Later;
        }
        if self.out > 0 {
            return Step::Later;
        }
        // Every piece is back: the thread is no longer needed.
        self.toucher = None;
        let end = self.pieces.len().min(self.shrunk + STEP_SHRINKS);
        for piece in self.pieces.get_mut(self.shrunk..end).into_iter().flatten() {
            piece.clear();
            piece.shrink_to(GUARD);
        }
        self.shrunk = end;
        if self.in_progress() {
            Step::Now
        } else {
            Step::Done
        }
    }

    /// Bytes made so far (held while the reserve is made, then free in the
    /// allocator, or reused).
    pub(crate) fn bytes(&self) -> u64 {
        self.pieces.len() as u64 * PIECE as u64
    }
}

/// Bytes between two writes of `touch_pages`: the smallest page size.
const PAGE: usize = 4096;

/// Writes one byte in every page of `v`'s spare capacity, so that the
/// system backs each of them now. The writes are volatile: the compiler
/// would drop plain ones, since nothing reads them before the memory is
/// freed (it did, measured: the whole reserve took 60 ms and no memory).
fn touch_pages(v: &mut Vec<u8>) {
    let spare = v.spare_capacity_mut();
    let base = spare.as_mut_ptr().cast::<u8>();
    for at in (0..spare.len()).step_by(PAGE) {
        // SAFETY: `at` is below the spare capacity's length, so the byte is
        // inside `v`'s allocation, and a `u8` has no alignment or validity
        // requirement; the byte stays outside `v`'s length, so nothing reads
        // it as initialized.
        unsafe { std::ptr::write_volatile(base.add(at), 0x5a) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs every step, waiting a little after each `Later`; returns how
    /// many steps said `Now`.
    fn run_to_end(r: &mut CowReserve) -> usize {
        let mut now = 0;
        loop {
            match r.step() {
                Step::Now => now += 1,
                Step::Later => std::thread::sleep(std::time::Duration::from_millis(1)),
                Step::Done => return now,
            }
        }
    }

    fn all_guards(r: &CowReserve) -> bool {
        r.pieces.iter().all(|g| g.capacity() == GUARD && g.is_empty())
    }

    #[test]
    fn nothing_asked_nothing_made() {
        let mut r = CowReserve::default();
        r.start(0);
        assert!(!r.in_progress());
        assert!(r.toucher.is_none(), "no thread for nothing");
        assert_eq!(r.step(), Step::Done);
        assert_eq!(r.bytes(), 0);
        assert!(r.take_finished().is_none(), "nothing was started");
    }

    #[test]
    fn pieces_are_held_whole_until_all_are_back_then_shrunk_to_their_guards() {
        let mut r = CowReserve::default();
        let pieces = 2 * BATCH + 3;
        r.start((pieces * PIECE - 1) as u64);
        assert!(r.toucher.is_some(), "nvecd-reserve started");
        let mut allocated = 0;
        let last = loop {
            let left = r.left;
            let step = r.step();
            allocated += left - r.left;
            assert!(r.out <= IN_FLIGHT);
            if step != Step::Later {
                break step;
            }
            assert!(
                r.pieces.iter().all(|p| p.capacity() >= PIECE),
                "held whole while pieces are made"
            );
            assert!(r.take_finished().is_none(), "not finished yet");
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        assert_eq!(allocated, pieces);
        assert_eq!(r.pieces.len(), pieces, "every batch came back");
        assert_eq!(
            last,
            Step::Done,
            "the step that took the last batch back shrank all 67"
        );
        assert!(r.toucher.is_none(), "the thread is let go");
        assert!(r.take_finished().is_some());
        assert!(r.take_finished().is_none(), "told once");
        assert!(all_guards(&r));
        assert_eq!(r.bytes(), (pieces * PIECE) as u64);
        assert!(!r.in_progress());
        assert_eq!(r.step(), Step::Done);
    }

    #[test]
    fn the_shrinking_is_a_bounded_number_of_reallocs_a_step() {
        let mut r = CowReserve::default();
        let pieces = STEP_SHRINKS + 3;
        r.start((pieces * PIECE) as u64);
        assert_eq!(run_to_end(&mut r), 1, "two shrinking steps, the first says Now");
        assert_eq!(r.pieces.len(), pieces);
        assert!(all_guards(&r));
    }

    #[test]
    fn without_the_thread_the_store_thread_faults_its_batches_in() {
        let mut r = CowReserve::default();
        r.start((BATCH + 1) as u64 * PIECE as u64);
        r.toucher = None;
        assert_eq!(r.step(), Step::Later);
        assert_eq!(r.pieces.len(), BATCH, "the batch is made in place");
        run_to_end(&mut r);
        assert_eq!(r.pieces.len(), BATCH + 1);
        assert!(all_guards(&r));
    }

    #[test]
    fn a_reserve_stopped_half_made_shrinks_what_it_made() {
        let mut r = CowReserve::default();
        r.start(10 * (BATCH * PIECE) as u64);
        assert_eq!(r.step(), Step::Later);
        assert_eq!(r.step(), Step::Later);
        r.stop_making();
        assert!(r.in_progress(), "batches are out or whole");
        run_to_end(&mut r);
        assert!(!r.in_progress());
        assert_eq!(
            r.bytes(),
            (2 * BATCH * PIECE) as u64,
            "the two batches out came back"
        );
        assert!(all_guards(&r));
    }

    #[test]
    fn starting_again_forgets_the_reserve_before() {
        let mut r = CowReserve::default();
        r.start(3 * PIECE as u64);
        run_to_end(&mut r);
        assert_eq!(r.pieces.len(), 3);
        r.start(PIECE as u64);
        assert_eq!(r.pieces.len(), 0, "the old guards are freed");
        run_to_end(&mut r);
        assert_eq!(r.pieces.len(), 1);
        assert!(!r.in_progress());
    }

    #[test]
    fn a_reserve_dropped_with_a_batch_out_ends_cleanly() {
        let mut r = CowReserve::default();
        r.start(4 * (BATCH * PIECE) as u64);
        assert_eq!(r.step(), Step::Later);
        assert_eq!(r.out, 1);
        // The thread frees the batch it holds and ends.
        r.start(0);
        assert!(!r.in_progress());
        assert_eq!(r.bytes(), 0);
    }

    #[test]
    fn a_huge_request_is_bounded() {
        let mut r = CowReserve::default();
        r.start(u64::MAX);
        assert!(r.in_progress());
        assert!(r.left <= isize::MAX as usize / PIECE);
        let left = r.left;
        assert_eq!(r.step(), Step::Later);
        assert_eq!(left - r.left, BATCH, "one batch at a time");
    }
}
