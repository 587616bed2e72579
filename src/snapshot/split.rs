//! DUMP VERIFY on several threads.
//!
//! Nearly all of a large snapshot is its co-occurrence section, and decoding
//! it (pass B) is what a VERIFY spends its time on. Its records have no fixed
//! length, so it cannot be cut at arbitrary offsets; instead pass A, which
//! reads every byte for the CRCs anyway, follows the records' two length
//! fields as the bytes go by ([`PairWalker`]) and marks a record boundary
//! every few megabytes, with the record number and where the previous
//! record starts (needed for the order check across the cut).
//!
//! Pass B then decodes the events section, each run of pairs between two
//! marks, and the vectors section as separate pieces on a few threads, each
//! with its own position in the file (`pread`) and the same decoding code as
//! a LOAD. Every check looks at one record and the one before it, so a run
//! started with the right record number and previous record checks exactly
//! what the sequential decoder checks there; the first error in file order
//! wins, and the CRCs of the runs, combined in order, must equal pass A's
//! section CRC. The result, error text included, is the sequential one
//! (tests run every verify both ways).
//!
//! The walker only reads lengths; it stops at the first one that does not
//! fit, leaving the rest to one piece, whose decoding finds the error.
use super::format::{Section, PAIRS_HEAD_LEN, STRING_LEN_LEN};
use super::reader::{
    corrupt, decode_events, decode_pair_run, decode_vectors, finish_section, io_err, pair_count, prefix_crc,
    read_header, scan, Cursor, LoadOptions, Scan, Span,
};
use super::{Header, SnapshotError};
use crate::store::ItemNamer;
use crc32fast::Hasher;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// At most this many threads decode one file.
const MAX_WORKERS: usize = 4;

/// A mark is placed only after a record of at most this many bytes: the
/// piece that starts there reads that record whole to know its order.
const MAX_PREV_RECORD: u64 = 64 * 1024;

/// How a VERIFY is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Split {
    /// Threads decoding beside pass A; 1 keeps the sequential decoder.
    pub workers: usize,
    /// Files shorter than this are verified sequentially.
    pub min_file: u64,
    /// Pieces of the co-occurrence section per thread (so that a slow piece
    /// does not hold the others up).
    pub pieces_per_worker: u64,
    /// Smallest piece, in bytes.
    pub min_piece: u64,
}

impl Split {
    /// One thread per core (at most [`MAX_WORKERS`]) for files of 32 MiB or
    /// more, in pieces of 8 MiB or more.
    pub(crate) fn auto() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Split {
            // Fuzz builds keep the sequential decoder: their CRC switch is
            // per thread.
            workers: if cfg!(fuzzing) { 1 } else { cores.min(MAX_WORKERS) },
            min_file: 32 << 20,
            pieces_per_worker: 8,
            min_piece: 8 << 20,
        }
    }
}

/// A record boundary in the co-occurrence payload (offsets from its start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    /// Where record `index` starts.
    offset: u64,
    index: u64,
    /// Where record `index - 1` starts.
    prev: u64,
}

/// What pass A has found so far, for the decoding threads.
#[derive(Debug, Default)]
struct Found {
    /// The header, once its magic and version were checked.
    header: Option<Header>,
    /// Each section's place, once its prefix was read (CRC not yet known).
    spans: [Option<Span>; 3],
    marks: Vec<Mark>,
    /// The co-occurrence payload has been read to its end: no more marks.
    walked: bool,
    /// Pass A has returned; `failed` if with an error.
    finished: bool,
    failed: bool,
}

/// `Found` behind a lock, and a signal for threads waiting on it.
#[derive(Debug, Default)]
struct Shared {
    found: Mutex<Found>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Found> {
        self.found.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, f: impl FnOnce(&mut Found)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }

    /// Piece `p`, waiting until pass A has found where it lies; `None` when
    /// there is no such piece or pass A failed. Piece 0 is the events
    /// section, then come the runs of pairs between marks, then the vectors.
    fn piece(&self, p: usize) -> Option<(Job, Header)> {
        let mut f = self.lock();
        loop {
            if f.failed {
                return None;
            }
            if let Some(h) = f.header {
                match f.job(p) {
                    Known::Job(j) => return Some((j, h)),
                    Known::Nothing => return None,
                    Known::NotYet => {}
                }
            }
            if f.finished {
                return None;
            }
            f = self.changed.wait(f).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Found {
    /// What is known so far of piece `p`.
    fn job(&self, p: usize) -> Known {
        let known = |span: Option<Span>| span.map_or(Known::NotYet, |s| Known::Job(Job::Section(s)));
        let Some(k) = p.checked_sub(1) else {
            return known(self.spans[0]);
        };
        let Some(co) = self.spans[1] else {
            return Known::NotYet;
        };
        let from = k.checked_sub(1).and_then(|j| self.marks.get(j)).copied();
        if let Some(&to) = self.marks.get(k) {
            return Known::Job(Job::Run {
                co,
                from,
                to: Some(to),
            });
        }
        if !self.walked {
            return Known::NotYet;
        }
        let runs = self.marks.len() + 1;
        if k + 1 == runs {
            return Known::Job(Job::Run { co, from, to: None });
        }
        if k == runs {
            return known(self.spans[2]);
        }
        Known::Nothing
    }
}

/// What pass A has told of one piece of pass B.
enum Known {
    /// Not found yet: wait for pass A.
    NotYet,
    /// There is no such piece.
    Nothing,
    Job(Job),
}

/// One piece of pass B.
#[derive(Debug, Clone, Copy)]
enum Job {
    /// The whole events or vectors payload.
    Section(Span),
    /// The pair records from mark `from` (the payload's start if `None`) to
    /// mark `to` (its end if `None`).
    Run {
        co: Span,
        from: Option<Mark>,
        to: Option<Mark>,
    },
}

/// What a piece leaves to be checked in order: the bytes of its part it did
/// not use, and their CRC.
struct Piece {
    remaining: u64,
    crc: Hasher,
}

/// Follows the co-occurrence records' length fields through pass A, and
/// tells the decoding threads where each section and each mark is.
pub(crate) struct PairWalker<'s> {
    split: Split,
    shared: &'s Shared,
    /// File offset of the payload's first byte.
    base: u64,
    len: u64,
    every: u64,
    field: Field,
    /// Payload offset of the next length field.
    at: u64,
    /// The bytes of that field read so far (it may straddle two reads).
    carry: [u8; STRING_LEN_LEN],
    carried: usize,
    n: u64,
    /// Records walked; record `i` starts at `rec`.
    i: u64,
    rec: u64,
    next_mark: u64,
    done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// The payload's record count.
    Count,
    /// The length of `a`.
    LenA,
    /// The length of `b`.
    LenB,
}

impl<'s> PairWalker<'s> {
    fn new(split: Split, shared: &'s Shared) -> Self {
        PairWalker {
            split,
            shared,
            base: 0,
            len: 0,
            every: u64::MAX,
            field: Field::Count,
            at: 0,
            carry: [0; STRING_LEN_LEN],
            carried: 0,
            n: 0,
            i: 0,
            rec: 0,
            next_mark: u64::MAX,
            done: true,
        }
    }

    /// Pass A has read the prefix of the section at `span`.
    pub(crate) fn enter(&mut self, span: Span) {
        let slot = Section::ALL.iter().position(|&s| s == span.section);
        self.shared.update(|f| {
            if let Some(slot) = slot.and_then(|i| f.spans.get_mut(i)) {
                *slot = Some(span);
            }
        });
        if span.section == Section::CoOccurrence {
            let pieces = (self.split.workers as u64).saturating_mul(self.split.pieces_per_worker);
            let every = (span.payload_len / pieces.max(1))
                .max(self.split.min_piece)
                .max(1);
            *self = PairWalker {
                base: span.payload_offset,
                len: span.payload_len,
                every,
                next_mark: every,
                done: false,
                ..PairWalker::new(self.split, self.shared)
            };
        }
    }

    /// Pass A has read the whole payload of `section`.
    pub(crate) fn leave(&mut self, section: Section) {
        if section == Section::CoOccurrence {
            self.done = true;
            self.shared.update(|f| f.walked = true);
        }
    }

    /// `chunk` is the payload's bytes from file offset `pos`, in order.
    pub(crate) fn feed(&mut self, chunk: &[u8], pos: u64) {
        let Some(start) = pos.checked_sub(self.base) else {
            return;
        };
        let end = start.saturating_add(chunk.len() as u64);
        while !self.done {
            if self.carried == 0 {
                self.walk_whole(chunk, start);
            }
            let from = self.at + self.carried as u64;
            if from >= end {
                return;
            }
            if self
                .at
                .checked_add(STRING_LEN_LEN as u64)
                .map_or(true, |e| e > self.len)
            {
                self.done = true;
                return;
            }
            // `from` is never before `start`: a read ends only when the
            // chunk is used up.
            let Some(src) = usize::try_from(from - start).ok().and_then(|i| chunk.get(i..)) else {
                self.done = true;
                return;
            };
            if self.carried == 0 {
                if let Some(field) = src.get(..STRING_LEN_LEN) {
                    let mut v = [0u8; STRING_LEN_LEN];
                    v.copy_from_slice(field);
                    self.step(u64::from_le_bytes(v));
                    continue;
                }
            }
            let take = (STRING_LEN_LEN - self.carried).min(src.len());
            if let (Some(dst), Some(src)) = (
                self.carry.get_mut(self.carried..self.carried + take),
                src.get(..take),
            ) {
                dst.copy_from_slice(src);
            }
            self.carried += take;
            if self.carried < STRING_LEN_LEN {
                return;
            }
            self.carried = 0;
            self.step(u64::from_le_bytes(self.carry));
        }
    }

    /// The records whose two length fields are whole in `chunk` (payload
    /// bytes from offset `start`), with the walker's state in locals, from
    /// a record's start. It stops before any record that `step` would end
    /// the walk at, or that is not whole in view, and leaves that one to the
    /// general loop, so the walk is the same as one field at a time.
    fn walk_whole(&mut self, chunk: &[u8], start: u64) {
        const LEN: u64 = STRING_LEN_LEN as u64;
        if self.done || self.field != Field::LenA {
            return;
        }
        let len = self.len;
        // The length field at payload offset `at`, if it is in the payload
        // and in this chunk.
        let field_at = |at: u64| -> Option<u64> {
            at.checked_add(LEN).filter(|&e| e <= len)?;
            let i = usize::try_from(at.checked_sub(start)?).ok()?;
            Some(u64::from_le_bytes(
                *chunk.get(i..)?.first_chunk::<STRING_LEN_LEN>()?,
            ))
        };
        let (mut at, mut i) = (self.at, self.i);
        while i.saturating_add(1) < self.n {
            let Some(la) = field_at(at) else { break };
            let Some(at_b) = at.checked_add(LEN).and_then(|x| x.checked_add(la)) else {
                break;
            };
            let Some(lb) = field_at(at_b) else { break };
            let end = at_b.checked_add(LEN + 4).and_then(|x| x.checked_add(lb));
            let Some(end) = end.filter(|&e| e <= len) else {
                break;
            };
            i += 1;
            self.maybe_mark(end, i, at);
            at = end;
        }
        self.at = at;
        self.rec = at;
        self.i = i;
    }

    /// Record `index` starts at payload offset `end`, the one before it at
    /// `prev`: a mark there if one is due and that record is short enough
    /// for the piece starting there to read it whole.
    fn maybe_mark(&mut self, end: u64, index: u64, prev: u64) {
        if end >= self.next_mark && end - prev <= MAX_PREV_RECORD {
            let mark = Mark {
                offset: end,
                index,
                prev,
            };
            self.shared.update(|f| f.marks.push(mark));
            self.next_mark = end.saturating_add(self.every);
        }
    }

    /// One length field read: `v`.
    fn step(&mut self, v: u64) {
        const LEN: u64 = STRING_LEN_LEN as u64;
        match self.field {
            Field::Count => {
                self.n = v;
                self.at = PAIRS_HEAD_LEN as u64;
                self.rec = self.at;
                self.field = Field::LenA;
                self.done = v == 0;
            }
            Field::LenA => match self.at.checked_add(LEN).and_then(|x| x.checked_add(v)) {
                Some(at) => {
                    self.at = at;
                    self.field = Field::LenB;
                }
                None => self.done = true,
            },
            Field::LenB => {
                let end = self.at.checked_add(LEN + 4).and_then(|x| x.checked_add(v));
                let Some(end) = end.filter(|&e| e <= self.len) else {
                    self.done = true;
                    return;
                };
                self.i += 1;
                if self.i >= self.n {
                    self.done = true;
                    return;
                }
                self.maybe_mark(end, self.i, self.rec);
                self.rec = end;
                self.at = end;
                self.field = Field::LenA;
            }
        }
    }
}

/// Reads a file from a position of its own (`pread`), so that threads can
/// share one open file.
struct At<'f> {
    file: &'f File,
    pos: u64,
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// DUMP VERIFY with pass B in pieces on `split.workers` threads, each piece
/// started as soon as pass A (on this thread) has found where it lies.
pub(super) fn verify_parallel(
    file: &mut File,
    path: &Path,
    opts: LoadOptions,
    split: Split,
) -> Result<Scan, SnapshotError> {
    let reader = file.try_clone().map_err(io_err(path))?;
    let shared = Shared::default();
    let next = AtomicUsize::new(0);
    let first_err = AtomicUsize::new(usize::MAX);
    let worker = || {
        let mut out = Vec::new();
        loop {
            let p = next.fetch_add(1, Ordering::Relaxed);
            // Pieces after a failed one cannot change the answer.
            if p > first_err.load(Ordering::Relaxed) {
                return out;
            }
            let Some((job, h)) = shared.piece(p) else {
                return out;
            };
            let r = decode_piece(&reader, path, &h, opts, job);
            if r.is_err() {
                first_err.fetch_min(p, Ordering::Relaxed);
            }
            out.push((p, r));
        }
    };
    let mut done: Vec<Option<Result<Piece, SnapshotError>>> = Vec::new();
    let scanned = std::thread::scope(|s| {
        let handles: Vec<_> = (0..split.workers.max(1)).map(|_| s.spawn(worker)).collect();
        let mut walker = PairWalker::new(split, &shared);
        let scanned = read_header(file, path).and_then(|h| {
            shared.update(|f| f.header = Some(h));
            scan(file, path, Some(&mut walker))
        });
        let failed = scanned.is_err();
        shared.update(|f| {
            f.finished = true;
            f.failed = failed;
        });
        for h in handles {
            for (p, r) in h.join().unwrap_or_default() {
                if done.len() <= p {
                    done.resize_with(p + 1, || None);
                }
                if let Some(slot) = done.get_mut(p) {
                    *slot = Some(r);
                }
            }
        }
        scanned
    })?;

    // In file order, as the sequential decoder would have met them.
    let [ev, co, ve] = scanned.spans;
    let runs = shared.lock().marks.len() + 1;
    let mut co_crc: Option<Hasher> = None;
    for p in 0..runs + 2 {
        let Some(Some(piece)) = done.get_mut(p).map(Option::take) else {
            return Err(corrupt("internal: a verification thread stopped"));
        };
        let Piece { remaining, crc } = piece?;
        if p == 0 {
            finish_section(&ev, remaining, &crc)?;
        } else if p > runs {
            finish_section(&ve, remaining, &crc)?;
        } else {
            // The first run's CRC starts with the section prefix.
            let acc = match co_crc.as_mut() {
                Some(acc) => {
                    acc.combine(&crc);
                    acc
                }
                None => co_crc.insert(crc),
            };
            if p == runs {
                finish_section(&co, remaining, acc)?;
            } else if remaining != 0 {
                // The walker's boundaries were pass A's bytes: the file changed.
                return Err(SnapshotError::SectionCrcMismatch {
                    section: co.section.name(),
                });
            }
        }
    }
    Ok(scanned)
}

/// Decodes one piece, without building anything.
fn decode_piece(
    file: &File,
    path: &Path,
    header: &Header,
    opts: LoadOptions,
    job: Job,
) -> Result<Piece, SnapshotError> {
    let batch = opts.batch_records.max(1);
    let (co, from, to) = match job {
        Job::Section(span) => {
            let mut r = At {
                file,
                pos: span.payload_offset,
            };
            let mut cur = Cursor::new(&mut r, &span, path);
            if span.section == Section::Events {
                decode_events(&mut cur, header, batch, &mut None, &mut ItemNamer::default())?;
            } else {
                decode_vectors(&mut cur, header, opts, batch, &mut None)?;
            }
            return Ok(Piece {
                remaining: cur.remaining,
                crc: cur.crc,
            });
        }
        Job::Run { co, from, to } => (co, from, to),
    };
    let start = from.map_or(0, |m| m.offset);
    let end = to.map_or(co.payload_len, |m| m.offset);
    let mut r = At {
        file,
        pos: co.payload_offset + start,
    };
    let crc = if from.is_none() {
        prefix_crc(&co)
    } else {
        Hasher::new()
    };
    let mut cur = Cursor::part(
        &mut r,
        Section::CoOccurrence,
        end.saturating_sub(start),
        crc,
        path,
    );
    let last = to.map_or(u64::from(header.pair_count), |m| m.index);
    match from {
        None => {
            let n = pair_count(&mut cur, header, co.payload_len - end)?;
            decode_pair_run(
                &mut cur,
                0..last.min(n),
                Vec::new(),
                Vec::new(),
                batch,
                &mut None,
                ItemNamer::default(),
            )?;
        }
        Some(m) => {
            let (a, b) = previous_record(file, path, co.payload_offset, &m)?;
            decode_pair_run(
                &mut cur,
                m.index..last,
                a,
                b,
                batch,
                &mut None,
                ItemNamer::default(),
            )?;
        }
    }
    Ok(Piece {
        remaining: cur.remaining,
        crc: cur.crc,
    })
}

/// Record `m.index - 1`'s `a` and `b`, for the order check of record
/// `m.index`. The walker found its lengths consistent; if its contents are
/// not, an earlier piece fails first and this piece's answer is not used.
fn previous_record(
    file: &File,
    path: &Path,
    base: u64,
    m: &Mark,
) -> Result<(Vec<u8>, Vec<u8>), SnapshotError> {
    let len = m.offset.saturating_sub(m.prev).min(MAX_PREV_RECORD);
    let mut rec = vec![0u8; usize::try_from(len).unwrap_or(0)];
    file.read_exact_at(&mut rec, base + m.prev)
        .map_err(io_err(path))?;
    let string_at = |at: usize| -> Option<(&[u8], usize)> {
        let n = u64::from_le_bytes(rec.get(at..at + STRING_LEN_LEN)?.try_into().ok()?);
        let start = at + STRING_LEN_LEN;
        let end = start.checked_add(usize::try_from(n).ok()?)?;
        Some((rec.get(start..end)?, end))
    };
    let parsed = string_at(0).and_then(|(a, end)| Some((a, string_at(end)?.0)));
    Ok(parsed.map_or_else(Default::default, |(a, b)| (a.to_vec(), b.to_vec())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::testkit::put_str;

    /// A co-occurrence payload of `names.len()` records, names of the given
    /// lengths, and where each record starts.
    fn payload(lens: &[(usize, usize)]) -> (Vec<u8>, Vec<u64>) {
        let mut p = (lens.len() as u64).to_le_bytes().to_vec();
        let mut starts = Vec::new();
        for (i, &(la, lb)) in lens.iter().enumerate() {
            starts.push(p.len() as u64);
            put_str(&mut p, &vec![b'a' + (i % 26) as u8; la]);
            put_str(&mut p, &vec![b'b'; lb]);
            p.extend_from_slice(&1.0f32.to_le_bytes());
        }
        (p, starts)
    }

    fn split(min_piece: u64) -> Split {
        Split {
            workers: 2,
            min_file: 0,
            pieces_per_worker: 1 << 20,
            min_piece,
        }
    }

    /// Walks `p` (at file offset 1000) fed `chunk` bytes at a time.
    fn walk(p: &[u8], chunk: usize, split: Split) -> Vec<Mark> {
        let shared = Shared::default();
        let mut w = PairWalker::new(split, &shared);
        let span = Span {
            section: Section::CoOccurrence,
            payload_offset: 1000,
            payload_len: p.len() as u64,
            crc: 0,
        };
        w.enter(span);
        for (i, c) in p.chunks(chunk).enumerate() {
            w.feed(c, 1000 + (i * chunk) as u64);
        }
        w.leave(Section::CoOccurrence);
        let f = shared.lock();
        assert!(f.walked && f.spans[1].is_some());
        f.marks.clone()
    }

    #[test]
    fn marks_fall_on_record_boundaries_whatever_the_reads() {
        let mut lens: Vec<(usize, usize)> = (0..200).map(|i| (1 + i % 13, 1 + (i * 7) % 31)).collect();
        lens[50] = (70_000, 3); // too long to be read as a previous record
        lens[120] = (2, 100_000);
        let (p, starts) = payload(&lens);
        let want: Vec<Mark> = (1..starts.len())
            .filter(|&i| starts[i] - starts[i - 1] <= MAX_PREV_RECORD)
            .map(|i| Mark {
                offset: starts[i],
                index: i as u64,
                prev: starts[i - 1],
            })
            .collect();
        assert_eq!(want.len(), 197);
        for chunk in [1, 2, 3, 5, 7, 8, 9, 13, 16, 64, 4096, p.len()] {
            assert_eq!(walk(&p, chunk, split(1)), want, "reads of {chunk} bytes");
        }
    }

    #[test]
    fn marks_are_spaced_and_stop_at_a_length_that_does_not_fit() {
        let lens: Vec<(usize, usize)> = (0..1000).map(|i| (5 + i % 3, 6)).collect();
        let (mut p, starts) = payload(&lens);
        let marks = walk(&p, 4096, split(1000));
        assert!(marks.len() >= 20, "{} marks", marks.len());
        let mut last = 0;
        for m in &marks {
            assert!(m.offset >= last + 1000);
            assert_eq!(m.offset, starts[m.index as usize]);
            last = m.offset;
        }
        // Record 600's `b` claims more bytes than the payload has: no mark
        // past it.
        let at = starts[600] as usize + 8 + lens[600].0;
        p[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let cut = walk(&p, 4096, split(1000));
        assert!(!cut.is_empty());
        assert!(cut.iter().all(|m| m.index <= 600));
        assert_eq!(cut[..], marks[..cut.len()]);
        // No records, or a count that is not there: no marks.
        assert!(walk(&0u64.to_le_bytes(), 8, split(1)).is_empty());
        assert!(walk(&[1, 2, 3], 8, split(1)).is_empty());
    }
}
