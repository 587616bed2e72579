//! The copy-on-write reserve: memory the store thread faults in after a LOAD,
//! ahead of the next SAVE.
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
//! [`PIECE`] bytes and writes to every page of each (volatile writes),
//! holding them all, so that each piece is memory of its own: glibc hands
//! out what it has free first, then fresh memory. Then it shrinks every
//! piece in place (`realloc`) to its first [`GUARD`] bytes, which it keeps:
//! glibc frees the rest of each piece as one chunk after its own guard. So
//! the freed parts cannot merge with each other or into the top of the
//! heap, which is all glibc trims on its own (`malloc_trim`, which the
//! reclaimer calls after freeing a replaced store, has run before the
//! reserve is made); they stay in the store thread's arena, where the next
//! SAVE's copies are allocated from. Both halves run a step at a time
//! ([`STEP_PIECES`] pieces made, or [`STEP_SHRINKS`] shrunk), between the
//! store's other messages; the store actor pauses between the steps that
//! make pieces, and a SAVE that starts while they run stops them (what was
//! made is shrunk at once, for that SAVE).
//!
//! The reserve's size is `snapshot.cow_reserve_percent` of the store's
//! memory after the LOAD: held on purpose, as much as a SAVE under heavy
//! writes ends up holding anyway once it is done.

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

/// Pieces made per step: 128 KiB, a fraction of a millisecond even at a
/// VM's first-touch speed, so requests in between wait little.
pub(crate) const STEP_PIECES: usize = 2;

/// Pieces shrunk per step (one `realloc` each).
pub(crate) const STEP_SHRINKS: usize = 256;

/// Bytes of a piece kept as its guard (a 32-byte chunk for glibc).
pub(crate) const GUARD: usize = 16;

/// A reserve being made, made, or none.
#[derive(Default)]
pub(crate) struct CowReserve {
    /// When the reserve still being made was started.
    started: Option<Instant>,
    /// Every piece made: whole up to `shrunk`'s index, guards before it.
    /// The guards are kept until the next reserve replaces this one.
    pieces: Vec<Vec<u8>>,
    /// Pieces still to make.
    left: usize,
    /// Pieces shrunk to their guard so far.
    shrunk: usize,
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
        self.started = (self.left > 0).then(Instant::now);
    }

    /// Once the last step has run: when the reserve was started (only once).
    pub(crate) fn take_finished(&mut self) -> Option<Instant> {
        if self.in_progress() {
            return None;
        }
        self.started.take()
    }

    /// True while pieces are still to be made (the steps that fault memory in).
    pub(crate) fn making(&self) -> bool {
        self.left > 0
    }

    /// Makes no more pieces: the next steps shrink those made so far, so
    /// that they are free for a SAVE that starts now.
    pub(crate) fn stop_making(&mut self) {
        self.left = 0;
    }

    /// True while there are steps to run.
    pub(crate) fn in_progress(&self) -> bool {
        self.left > 0 || self.shrunk < self.pieces.len()
    }

    /// Makes up to [`STEP_PIECES`] more pieces or, once all are made,
    /// shrinks up to [`STEP_SHRINKS`] of them. Returns whether steps remain.
    pub(crate) fn step(&mut self) -> bool {
        if self.left > 0 {
            for _ in 0..STEP_PIECES.min(self.left) {
                let mut piece: Vec<u8> = Vec::with_capacity(PIECE);
                touch_pages(&mut piece);
                self.pieces.push(piece);
                self.left -= 1;
            }
        } else {
            let end = self.pieces.len().min(self.shrunk + STEP_SHRINKS);
            for piece in self.pieces.get_mut(self.shrunk..end).into_iter().flatten() {
                piece.clear();
                piece.shrink_to(GUARD);
            }
            self.shrunk = end;
        }
        self.in_progress()
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

    fn run_to_end(r: &mut CowReserve) -> usize {
        let mut steps = 1;
        while r.step() {
            steps += 1;
        }
        steps
    }

    #[test]
    fn nothing_asked_nothing_made() {
        let mut r = CowReserve::default();
        r.start(0);
        assert!(!r.in_progress());
        assert!(!r.step());
        assert_eq!(r.bytes(), 0);
        assert!(r.take_finished().is_none(), "nothing was started");
    }

    #[test]
    fn pieces_are_made_a_few_a_step_held_then_shrunk_to_their_guards() {
        let mut r = CowReserve::default();
        let pieces = 5;
        r.start((pieces * PIECE - 1) as u64);
        assert!(r.in_progress());
        for made in 1..=pieces.div_ceil(STEP_PIECES) {
            assert!(r.step(), "the shrinking is still to come");
            assert_eq!(r.bytes(), ((made * STEP_PIECES).min(pieces) * PIECE) as u64);
            assert!(
                r.pieces.iter().all(|p| p.capacity() >= PIECE),
                "held whole while made"
            );
        }
        assert!(r.take_finished().is_none(), "not finished yet");
        assert!(!r.step(), "five pieces shrink in one step");
        assert!(r.take_finished().is_some());
        assert!(r.take_finished().is_none(), "told once");
        assert_eq!(r.pieces.len(), pieces);
        assert!(r.pieces.iter().all(|g| g.capacity() == GUARD && g.is_empty()));
        assert_eq!(r.bytes(), (pieces * PIECE) as u64);
        assert!(!r.in_progress());
        assert!(!r.step());
    }

    #[test]
    fn the_shrinking_is_a_bounded_number_of_reallocs_a_step() {
        let mut r = CowReserve::default();
        let pieces = STEP_SHRINKS + 3;
        r.start((pieces * PIECE) as u64);
        let steps = run_to_end(&mut r);
        assert_eq!(steps, pieces.div_ceil(STEP_PIECES) + 2);
        assert!(r.pieces.iter().all(|g| g.capacity() == GUARD));
    }

    #[test]
    fn a_reserve_stopped_half_made_shrinks_what_it_made() {
        let mut r = CowReserve::default();
        r.start(10 * PIECE as u64);
        assert!(r.making());
        assert!(r.step() && r.step());
        r.stop_making();
        assert!(!r.making());
        assert!(r.in_progress(), "the pieces made are still whole");
        assert!(!r.step());
        assert_eq!(r.bytes(), (2 * STEP_PIECES * PIECE) as u64);
        assert!(r.pieces.iter().all(|g| g.capacity() == GUARD));
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
    fn a_huge_request_is_bounded() {
        let mut r = CowReserve::default();
        r.start(u64::MAX);
        assert!(r.in_progress());
        assert!(r.left <= isize::MAX as usize / PIECE);
        assert!(r.step());
        assert_eq!(r.bytes(), (STEP_PIECES * PIECE) as u64);
    }
}
