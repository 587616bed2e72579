//! Streaming, hardened snapshot reader (format in `format.rs`).
//!
//! Two passes over the file, each through a `BufReader`, neither holding more
//! than one record in memory:
//! - pass A (`scan`) reads the header, checks magic, version and size, walks
//!   the section framing and computes the file CRC and each section's CRC;
//! - pass B (`decode`) decodes the payloads record by record, checking every
//!   length, count and dimension against the bytes left in its section before
//!   anything is allocated, and every value (UTF-8, ranges, order, finiteness,
//!   totals against the header).
//!
//! A VERIFY of a large file makes pass B in pieces on several threads beside
//! pass A (`split.rs`), with the same answers. A LOAD reads the file once
//! (`load_file`): the framing without the payloads, then pass B with the
//! CRC checks; only a file that fails gets pass A, for its error.
//!
//! Errors come in the order SPEC 4.2 fixes: bad magic, version, size, file CRC,
//! footer and framing, section CRCs, flags, then decoding (`Corrupt snapshot:`).
//! Nothing read from the file reaches `unwrap`, an unchecked index, or an
//! allocation it sized. Plain std I/O: no actix, no tokio.
use super::format::{
    Section, FOOTER_LEN, HEADER_LEN, MAGIC, MAX_SCORE, MIN_CONTEXT_LEN, MIN_EVENT_LEN, MIN_FILE_LEN,
    MIN_PAIR_LEN, MIN_VECTOR_LEN, SECTION_CRC_LEN, SECTION_OVERHEAD, SECTION_PREFIX_LEN, VERSION,
};
use super::split::{verify_parallel, PairWalker, Split};
use super::{Header, SnapshotError};
use crate::store::{
    ContextBatch, EventKind, ItemNamer, LoadBatch, LoadedContext, LoadedEvent, LoadedVector, PairBatch,
};
use crc32fast::Hasher;
use std::cmp::Ordering;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// Buffer between the file and the decoder.
pub const READ_BUFFER_BYTES: usize = 256 * 1024;

/// Capacity reserved up front for per-record vectors, whatever a count claims;
/// vectors grow past it only as records are actually read.
const MAX_PREALLOC: usize = 1024;

/// Whether the CRC comparisons are made. In a normal build this is the
/// constant `true`: the checks are always on and the branch costs nothing.
#[cfg(not(fuzzing))]
#[inline(always)]
fn crc_checks_on() -> bool {
    true
}

#[cfg(fuzzing)]
thread_local! {
    /// Fuzz builds (`--cfg fuzzing`, set by cargo-fuzz) skip the CRC
    /// comparisons by default so mutated inputs reach the decoder; a target
    /// that wants them turns them back on for its thread with
    /// [`set_crc_checks`]. One fuzz build thus serves both kinds of target.
    /// Never compiled in a normal build.
    static CRC_CHECKS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(fuzzing)]
fn crc_checks_on() -> bool {
    CRC_CHECKS.with(std::cell::Cell::get)
}

/// Fuzz builds only: turns the CRC comparisons of this thread's reads on
/// (`true`) or off (`false`, the default under `cfg(fuzzing)`). Does not
/// exist in a normal build, where the checks are always on.
#[cfg(fuzzing)]
pub fn set_crc_checks(on: bool) {
    CRC_CHECKS.with(|c| c.set(on));
}

/// What `verify_file` and `load_file` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyReport {
    /// The file's header (all checks passed).
    pub header: Header,
    /// The file CRC (footer), verified.
    pub crc: u32,
}

/// Reader settings taken from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Non-zero: a vector section of another dimension is `Corrupt snapshot`.
    pub default_dimension: usize,
    /// Records per `LoadBatch` (0 is taken as 1). A context counts as one record
    /// plus one per event and is never split, so a context with more events
    /// than this travels alone in its batch.
    pub batch_records: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            default_dimension: 0,
            batch_records: 4096,
        }
    }
}

/// Reads and checks the header only (magic, version, and a file of at least
/// the header's length).
pub fn read_header(file: &mut File, path: &Path) -> Result<Header, SnapshotError> {
    let io = io_err(path);
    let actual = file.metadata().map_err(io)?.len();
    file.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
    let mut buf = [0u8; HEADER_LEN];
    let got = read_up_to(file, &mut buf).map_err(io_err(path))?;
    check_header_start(&buf, got, actual)
}

/// DUMP INFO: the header, checked as far as it goes: `read_header`, and no
/// unknown flag bits (SPEC 4.3: a reader rejects them; a flag could change
/// what the other fields mean).
pub fn read_info(file: &mut File, path: &Path) -> Result<Header, SnapshotError> {
    let header = read_header(file, path)?;
    check_flags(&header)?;
    Ok(header)
}

fn check_flags(header: &Header) -> Result<(), SnapshotError> {
    if header.flags != 0 {
        return Err(corrupt(format!("unknown flags 0x{:08X}", header.flags)));
    }
    Ok(())
}

/// DUMP VERIFY: every check of a load, without building anything. A large
/// co-occurrence section is decoded on several threads (`split.rs`); the
/// result, error included, is the one a LOAD of the file would give.
pub fn verify_file(file: &mut File, path: &Path, opts: LoadOptions) -> Result<VerifyReport, SnapshotError> {
    verify_split(file, path, opts, Split::auto())
}

/// `verify_file` with the threads and the size of the pieces given.
pub(super) fn verify_split(
    file: &mut File,
    path: &Path,
    opts: LoadOptions,
    split: Split,
) -> Result<VerifyReport, SnapshotError> {
    let len = file.metadata().map_err(io_err(path))?.len();
    let scan = if split.workers > 1 && len >= split.min_file {
        verify_parallel(file, path, opts, split)?
    } else {
        let scan = scan(file, path, None)?;
        decode(file, path, &scan, opts, None, None)?;
        scan
    };
    Ok(VerifyReport {
        header: scan.header,
        crc: scan.file_crc,
    })
}

/// DUMP LOAD: verifies everything (header, size, file CRC, section CRCs)
/// and decodes the sections in order, handing `sink` bounded batches. An
/// error from `sink` stops the load and is returned.
///
/// One pass: the framing is read first (a few small reads), then each
/// payload is CRC-ed as it is decoded, and the file CRC is combined from
/// the sections' at the end. A file that fails anywhere gets the full pass
/// A, so it reports exactly the error it reported when pass A ran first
/// (the file CRC before the framing, the framing before a section CRC, and
/// those before any record); only a file that passes it reports the
/// decoding's error. The batches handed over before a failure are the
/// caller's to discard (the server's staged store is).
pub fn load_file(
    file: &mut File,
    path: &Path,
    opts: LoadOptions,
    mut sink: impl FnMut(LoadBatch) -> Result<(), SnapshotError>,
) -> Result<VerifyReport, SnapshotError> {
    let loaded = match frame(file) {
        Some(f) => decode_framed(file, path, &f, opts, &mut sink).map(|()| f.scan),
        None => Err(corrupt("the file changed while it was loaded")),
    };
    match loaded {
        Ok(scan) => Ok(VerifyReport {
            header: scan.header,
            crc: scan.file_crc,
        }),
        Err(e) => {
            scan(file, path, None)?;
            Err(e)
        }
    }
}

/// What the framing of a file holds, read without its payloads.
struct Frame {
    /// Spans with the section CRCs stored in the file; `file_crc` is the
    /// footer's.
    scan: Scan,
    /// The CRC of the header's bytes.
    head: Hasher,
    /// The bytes between the payloads: a section's stored CRC and the next
    /// section's prefix.
    between: [[u8; SECTION_OVERHEAD]; 2],
}

/// Header, size, sections' tags and lengths, no trailing bytes, the
/// footer's reserved field, flags: every check of pass A but the CRCs, by
/// seeking over the payloads. `None` if any fails (the caller then runs pass
/// A, which says how).
fn frame(file: &mut File) -> Option<Frame> {
    let actual = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(0)).ok()?;
    let mut head = [0u8; HEADER_LEN];
    let got = read_up_to(file, &mut head).ok()?;
    let header = check_header_start(&head, got, actual).ok()?;
    check_flags(&header).ok()?;
    let body_end = check_size(&header, actual).ok()?;
    let mut pos = HEADER_LEN as u64;
    let mut spans: Vec<Span> = Vec::with_capacity(3);
    let mut raw: Vec<[u8; SECTION_OVERHEAD]> = Vec::with_capacity(3);
    let mut prefix = [0u8; SECTION_PREFIX_LEN];
    file.read_exact(&mut prefix).ok()?;
    for section in Section::ALL {
        let room = body_end.checked_sub(pos)?.checked_sub(SECTION_OVERHEAD as u64)?;
        let len = check_prefix(section, &prefix, room).ok()?;
        let payload_offset = pos + SECTION_PREFIX_LEN as u64;
        pos = payload_offset + len + SECTION_CRC_LEN as u64;
        file.seek(SeekFrom::Start(payload_offset + len)).ok()?;
        // The stored CRC, then (but after the last section) the next
        // section's prefix.
        let mut after = [0u8; SECTION_OVERHEAD];
        let (stored, next) = after.split_at_mut(SECTION_CRC_LEN);
        file.read_exact(stored).ok()?;
        let mut crc = [0u8; SECTION_CRC_LEN];
        crc.copy_from_slice(stored);
        spans.push(Span {
            section,
            payload_offset,
            payload_len: len,
            crc: u32::from_le_bytes(crc),
        });
        if section != Section::Vectors {
            file.read_exact(next).ok()?;
            prefix.copy_from_slice(next);
        }
        raw.push(after);
    }
    if pos != body_end {
        return None;
    }
    let mut footer = [0u8; FOOTER_LEN];
    file.read_exact(&mut footer).ok()?;
    let (stored_crc, reserved) = split_footer(&footer);
    if reserved != 0 {
        return None;
    }
    let mut head_crc = Hasher::new();
    head_crc.update(&head);
    match (spans.as_slice(), raw.as_slice()) {
        ([a, b, c], [x, y, _]) => Some(Frame {
            scan: Scan {
                header,
                file_crc: stored_crc,
                spans: [*a, *b, *c],
            },
            head: head_crc,
            between: [*x, *y],
        }),
        _ => None,
    }
}

/// Pass B on a framed file, with the CRC checks of pass A: each section's
/// at its end, the file's from the sections' at the end of the file.
fn decode_framed(
    file: &mut File,
    path: &Path,
    f: &Frame,
    opts: LoadOptions,
    sink: &mut dyn FnMut(LoadBatch) -> Result<(), SnapshotError>,
) -> Result<(), SnapshotError> {
    let sections = decode(file, path, &f.scan, opts, Some(sink), Some(&f.between))?;
    let mut file_crc = f.head.clone();
    for (i, (section, span)) in sections.iter().zip(&f.scan.spans).enumerate() {
        file_crc.combine(section);
        match f.between.get(i) {
            Some(between) => file_crc.update(between.get(..SECTION_CRC_LEN).unwrap_or_default()),
            None => file_crc.update(&span.crc.to_le_bytes()),
        }
    }
    let actual = file_crc.finalize();
    if crc_checks_on() && actual != f.scan.file_crc {
        return Err(SnapshotError::CrcMismatch {
            expected: f.scan.file_crc,
            actual,
        });
    }
    Ok(())
}

pub(super) fn io_err(path: &Path) -> impl Fn(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(super) fn corrupt(msg: impl Into<String>) -> SnapshotError {
    SnapshotError::Corrupt(msg.into())
}

/// `Corrupt snapshot: <section> section: <msg>`.
pub(super) fn section_corrupt(section: Section, msg: impl std::fmt::Display) -> SnapshotError {
    corrupt(format!("{} section: {msg}", section.name()))
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while let Some(rest) = buf.get_mut(got..) {
        if rest.is_empty() {
            break;
        }
        match r.read(rest) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Magic, version and length checks on the first `got` bytes of a file of
/// `actual` bytes, in SPEC order.
fn check_header_start(buf: &[u8; HEADER_LEN], got: usize, actual: u64) -> Result<Header, SnapshotError> {
    if got < MAGIC.len() || Header::magic_of(buf) != MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    if got < MAGIC.len() + 4 {
        return Err(SnapshotError::Truncated {
            expected: HEADER_LEN as u64,
            actual,
        });
    }
    let header = Header::decode(buf);
    if header.version != VERSION {
        return Err(SnapshotError::VersionMismatch {
            found: header.version,
        });
    }
    if got < HEADER_LEN {
        return Err(SnapshotError::Truncated {
            expected: HEADER_LEN as u64,
            actual,
        });
    }
    Ok(header)
}

/// Where one section's payload lies, and its CRC as computed in pass A.
#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    pub(super) section: Section,
    pub(super) payload_offset: u64,
    pub(super) payload_len: u64,
    pub(super) crc: u32,
}

/// Result of pass A.
#[derive(Debug, Clone, Copy)]
pub(super) struct Scan {
    pub(super) header: Header,
    file_crc: u32,
    pub(super) spans: [Span; 3],
}

/// Pass A: header, size, framing, file CRC and section CRCs, streaming. A
/// `walker` learns where each section lies as soon as its prefix is read,
/// and sees the co-occurrence payload go by.
pub(super) fn scan(
    file: &mut File,
    path: &Path,
    mut walker: Option<&mut PairWalker<'_>>,
) -> Result<Scan, SnapshotError> {
    let io = io_err(path);
    let actual = file.metadata().map_err(&io)?.len();
    file.seek(SeekFrom::Start(0)).map_err(&io)?;
    let mut r = BufReader::with_capacity(READ_BUFFER_BYTES, &mut *file);
    let mut head = [0u8; HEADER_LEN];
    let got = read_up_to(&mut r, &mut head).map_err(&io)?;
    let header = check_header_start(&head, got, actual)?;
    let body_end = check_size(&header, actual)?;

    let mut s = Scanner {
        r,
        pos: HEADER_LEN as u64,
        file_crc: Hasher::new(),
    };
    s.file_crc.update(&head);

    // Framing problems are remembered, not returned: the file CRC comes first.
    let mut framing: Option<String> = None;
    let mut spans: Vec<(Span, u32)> = Vec::with_capacity(3);
    for section in Section::ALL {
        let left = body_end - s.pos;
        if left < SECTION_OVERHEAD as u64 {
            framing = Some(format!(
                "{} section missing: {left} bytes left before the footer",
                section.name()
            ));
            break;
        }
        let prefix: [u8; SECTION_PREFIX_LEN] = s.array().map_err(&io)?;
        let len = match check_prefix(section, &prefix, left - SECTION_OVERHEAD as u64) {
            Ok(len) => len,
            Err(msg) => {
                framing = Some(msg);
                break;
            }
        };
        let mut crc = Hasher::new();
        crc.update(&prefix);
        let payload_offset = s.pos;
        let mut walk = walker.as_deref_mut();
        if let Some(w) = walk.as_deref_mut() {
            w.enter(Span {
                section,
                payload_offset,
                payload_len: len,
                crc: 0,
            });
        }
        s.skip(len, Some(&mut crc), walk.as_deref_mut()).map_err(&io)?;
        if let Some(w) = walk {
            w.leave(section);
        }
        let stored: [u8; SECTION_CRC_LEN] = s.array().map_err(&io)?;
        spans.push((
            Span {
                section,
                payload_offset,
                payload_len: len,
                crc: crc.finalize(),
            },
            u32::from_le_bytes(stored),
        ));
    }
    if framing.is_none() && s.pos != body_end {
        framing = Some(format!(
            "{} unexpected bytes after the vectors section",
            body_end - s.pos
        ));
    }
    let rest = body_end - s.pos;
    s.skip(rest, None, None).map_err(&io)?;
    let file_crc = s.file_crc.clone().finalize();
    let mut footer = [0u8; FOOTER_LEN];
    s.r.read_exact(&mut footer).map_err(&io)?;
    let (stored_crc, reserved) = split_footer(&footer);

    if crc_checks_on() && stored_crc != file_crc {
        return Err(SnapshotError::CrcMismatch {
            expected: stored_crc,
            actual: file_crc,
        });
    }
    if reserved != 0 {
        return Err(corrupt(format!(
            "footer reserved field is 0x{reserved:08X}, must be 0"
        )));
    }
    if let Some(msg) = framing {
        return Err(corrupt(msg));
    }
    for (span, stored) in &spans {
        if crc_checks_on() && span.crc != *stored {
            return Err(SnapshotError::SectionCrcMismatch {
                section: span.section.name(),
            });
        }
    }
    check_flags(&header)?;
    match spans.as_slice() {
        [(a, _), (b, _), (c, _)] => Ok(Scan {
            header,
            file_crc: stored_crc,
            spans: [*a, *b, *c],
        }),
        _ => Err(corrupt("missing sections")),
    }
}

/// The header's size against the file's; returns where the footer begins.
fn check_size(header: &Header, actual: u64) -> Result<u64, SnapshotError> {
    if header.file_size != actual {
        return Err(SnapshotError::Truncated {
            expected: header.file_size,
            actual,
        });
    }
    // Without room for a footer there is no file CRC to check; anything
    // longer is CRC-checked first and its missing sections reported after.
    if actual < (HEADER_LEN + FOOTER_LEN) as u64 {
        return Err(corrupt(format!(
            "file of {actual} bytes is shorter than the smallest snapshot ({MIN_FILE_LEN} bytes)"
        )));
    }
    Ok(actual - FOOTER_LEN as u64)
}

/// A section's prefix: its tag, and a payload of at most `room` bytes;
/// returns the payload's length, or what is wrong (a framing message).
fn check_prefix(section: Section, prefix: &[u8; SECTION_PREFIX_LEN], room: u64) -> Result<u64, String> {
    let (tag, len) = split_prefix(prefix);
    if tag != section.tag() {
        return Err(format!(
            "expected {} section (tag {}), found tag {tag}",
            section.name(),
            section.tag()
        ));
    }
    if len > room {
        return Err(format!(
            "{} section: payload length {len} exceeds the file",
            section.name()
        ));
    }
    Ok(len)
}

fn split_prefix(p: &[u8; SECTION_PREFIX_LEN]) -> (u32, u64) {
    let (tag, len) = p.split_at(4);
    let mut t = [0u8; 4];
    let mut l = [0u8; 8];
    t.copy_from_slice(tag);
    l.copy_from_slice(len);
    (u32::from_le_bytes(t), u64::from_le_bytes(l))
}

fn split_footer(f: &[u8; FOOTER_LEN]) -> (u32, u32) {
    let (c, r) = f.split_at(4);
    let mut a = [0u8; 4];
    let mut b = [0u8; 4];
    a.copy_from_slice(c);
    b.copy_from_slice(r);
    (u32::from_le_bytes(a), u32::from_le_bytes(b))
}

/// Pass A's cursor: every byte it passes goes into the file CRC.
struct Scanner<'f> {
    r: BufReader<&'f mut File>,
    pos: u64,
    file_crc: Hasher,
}

impl Scanner<'_> {
    fn array<const N: usize>(&mut self) -> std::io::Result<[u8; N]> {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b)?;
        self.file_crc.update(&b);
        self.pos += N as u64;
        Ok(b)
    }

    /// Passes `n` bytes through the file CRC and, if given, a section CRC and
    /// a walker.
    fn skip(
        &mut self,
        mut n: u64,
        mut section: Option<&mut Hasher>,
        mut walker: Option<&mut PairWalker<'_>>,
    ) -> std::io::Result<()> {
        while n > 0 {
            let buf = self.r.fill_buf()?;
            if buf.is_empty() {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let take = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            let chunk = buf.get(..take).unwrap_or_default();
            self.file_crc.update(chunk);
            if let Some(h) = section.as_deref_mut() {
                h.update(chunk);
            }
            if let Some(w) = walker.as_deref_mut() {
                w.feed(chunk, self.pos);
            }
            self.r.consume(take);
            n -= take as u64;
            self.pos += take as u64;
        }
        Ok(())
    }
}

pub(super) type Sink<'s> = Option<&'s mut dyn FnMut(LoadBatch) -> Result<(), SnapshotError>>;

/// Pass B: decodes the three payloads in order; returns each section's CRC
/// (of its prefix and payload), which was checked against `scan`'s. With
/// `between`, the bytes between the payloads must be those (the file did
/// not change since they were read).
fn decode(
    file: &mut File,
    path: &Path,
    scan: &Scan,
    opts: LoadOptions,
    mut sink: Sink<'_>,
    between: Option<&[[u8; SECTION_OVERHEAD]; 2]>,
) -> Result<[Hasher; 3], SnapshotError> {
    let batch = opts.batch_records.max(1);
    let [ev, co, ve] = scan.spans;
    let [after_ev, after_co] = match between {
        Some([a, b]) => [Some(a), Some(b)],
        None => [None, None],
    };
    file.seek(SeekFrom::Start(ev.payload_offset))
        .map_err(io_err(path))?;
    let mut r = BufReader::with_capacity(READ_BUFFER_BYTES, &mut *file);
    let mut cur = Cursor::new(&mut r, &ev, path);
    let mut namer = ItemNamer::default();
    decode_events(&mut cur, &scan.header, batch, &mut sink, &mut namer)?;
    let ev_crc = cur.crc.clone();
    cur.finish(&ev)?;
    skip_between(&mut r, path, after_ev)?;
    let mut cur = Cursor::new(&mut r, &co, path);
    decode_pairs(&mut cur, &scan.header, batch, &mut sink, namer)?;
    let co_crc = cur.crc.clone();
    cur.finish(&co)?;
    skip_between(&mut r, path, after_co)?;
    let mut cur = Cursor::new(&mut r, &ve, path);
    decode_vectors(&mut cur, &scan.header, opts, batch, &mut sink)?;
    let ve_crc = cur.crc.clone();
    cur.finish(&ve)?;
    Ok([ev_crc, co_crc, ve_crc])
}

/// Moves over the CRC of one section and the prefix of the next (checked in
/// pass A, or read by `frame`: then they must be the same bytes).
fn skip_between(
    r: &mut BufReader<&mut File>,
    path: &Path,
    expect: Option<&[u8; SECTION_OVERHEAD]>,
) -> Result<(), SnapshotError> {
    let mut skip = [0u8; SECTION_OVERHEAD];
    r.read_exact(&mut skip).map_err(io_err(path))?;
    match expect {
        Some(e) if *e != skip => Err(corrupt("the file changed while it was loaded")),
        _ => Ok(()),
    }
}

fn emit(sink: &mut Sink<'_>, batch: LoadBatch) -> Result<(), SnapshotError> {
    match sink {
        Some(f) => f(batch),
        None => Ok(()),
    }
}

/// A bounded view of one section's payload. Every read is checked against
/// `remaining` first; every byte read is CRC-ed again, so a file changed
/// between the two passes is caught.
pub(super) struct Cursor<'r> {
    r: &'r mut dyn Read,
    /// Payload bytes not yet consumed by the decoder.
    pub(super) remaining: u64,
    /// Payload bytes not yet read from the file.
    unread: u64,
    /// Read but not yet consumed: `buf[pos..filled]`. Filled a block at a
    /// time and CRC-ed as a block (CRC32 over 4-byte fields would be the
    /// bottleneck). Its length only grows, so it is zeroed once, not before
    /// every read.
    buf: Vec<u8>,
    pos: usize,
    filled: usize,
    section: Section,
    pub(super) crc: Hasher,
    path: &'r Path,
}

/// Bytes read into a cursor at a time.
const CURSOR_BLOCK: usize = 256 * 1024;

/// The section CRC of a whole payload starts with its tag and length.
pub(super) fn prefix_crc(span: &Span) -> Hasher {
    let mut crc = Hasher::new();
    crc.update(&span.section.tag().to_le_bytes());
    crc.update(&span.payload_len.to_le_bytes());
    crc
}

/// The end of a section's decoding: trailing bytes are an error, and the CRC
/// of the bytes decoded must equal pass A's.
pub(super) fn finish_section(span: &Span, remaining: u64, crc: &Hasher) -> Result<(), SnapshotError> {
    if remaining != 0 {
        return Err(section_corrupt(
            span.section,
            format_args!("{remaining} trailing bytes"),
        ));
    }
    if crc_checks_on() && crc.clone().finalize() != span.crc {
        // The file changed between pass A and pass B.
        return Err(SnapshotError::SectionCrcMismatch {
            section: span.section.name(),
        });
    }
    Ok(())
}

impl<'r> Cursor<'r> {
    /// The whole payload of `span`; `r` is at its first byte.
    pub(super) fn new(r: &'r mut dyn Read, span: &Span, path: &'r Path) -> Self {
        Self::part(r, span.section, span.payload_len, prefix_crc(span), path)
    }

    /// `len` bytes of a section's payload from where `r` is, CRC-ed into `crc`.
    pub(super) fn part(r: &'r mut dyn Read, section: Section, len: u64, crc: Hasher, path: &'r Path) -> Self {
        Cursor {
            r,
            remaining: len,
            unread: len,
            buf: Vec::new(),
            pos: 0,
            filled: 0,
            section,
            crc,
            path,
        }
    }

    fn err(&self, msg: impl std::fmt::Display) -> SnapshotError {
        section_corrupt(self.section, msg)
    }

    /// Trailing bytes are an error; the CRC must equal pass A's.
    pub(super) fn finish(self, span: &Span) -> Result<(), SnapshotError> {
        finish_section(span, self.remaining, &self.crc)
    }

    /// Makes `n` bytes available at `buf[pos..]`; `n <= remaining` (checked
    /// by the callers), so this never reads past the section.
    fn ensure(&mut self, n: usize) -> Result<(), SnapshotError> {
        let available = self.filled - self.pos;
        if available >= n {
            return Ok(());
        }
        self.buf.copy_within(self.pos..self.filled, 0);
        self.pos = 0;
        self.filled = available;
        let want = (n - available).max(CURSOR_BLOCK) as u64;
        let want = want.min(self.unread) as usize;
        let end = available + want;
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        let fresh = self.buf.get_mut(available..end).unwrap_or_default();
        self.r.read_exact(fresh).map_err(io_err(self.path))?;
        self.crc.update(fresh);
        self.unread -= want as u64;
        self.filled = end;
        if self.filled < n {
            return Err(self.err("section shorter than its records"));
        }
        Ok(())
    }

    /// The next `n` bytes, consumed.
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], SnapshotError> {
        if (n as u64) > self.remaining {
            return Err(self.err(format_args!("{what} runs past the end of the section")));
        }
        self.ensure(n)?;
        let start = self.pos;
        self.pos += n;
        self.remaining -= n as u64;
        self.buf
            .get(start..start + n)
            .ok_or_else(|| corrupt("internal: cursor out of range"))
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], SnapshotError> {
        let bytes = self.take(N, what)?;
        let mut b = [0u8; N];
        b.copy_from_slice(bytes);
        Ok(b)
    }

    fn u8(&mut self, what: &str) -> Result<u8, SnapshotError> {
        let [b] = self.array::<1>(what)?;
        Ok(b)
    }
    fn u32(&mut self, what: &str) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn i32(&mut self, what: &str) -> Result<i32, SnapshotError> {
        Ok(i32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn f32(&mut self, what: &str) -> Result<f32, SnapshotError> {
        Ok(f32::from_le_bytes(self.array(what)?))
    }

    /// The unconsumed bytes in view, at least `min(want, remaining)` of them
    /// (all within the section); `consume` moves past what was used.
    fn window(&mut self, want: usize) -> Result<&[u8], SnapshotError> {
        let want = usize::try_from((want as u64).min(self.remaining)).unwrap_or(want);
        self.ensure(want)?;
        Ok(self.buf.get(self.pos..self.filled).unwrap_or_default())
    }

    /// Marks `n` bytes of the last `window` as used; `n` never exceeds it.
    fn consume(&mut self, n: usize) {
        let n = n.min(self.filled - self.pos);
        self.pos += n;
        self.remaining -= n as u64;
    }

    /// A non-empty UTF-8 string; its length is checked before allocating.
    fn string(&mut self, what: &str) -> Result<String, SnapshotError> {
        let mut s = String::new();
        self.string_into(what, &mut s)?;
        Ok(s)
    }

    /// `string` into a reused buffer: no allocation per record once `out` has
    /// grown to the longest string (the VERIFY path and the hot pair loop).
    fn string_into(&mut self, what: &str, out: &mut String) -> Result<(), SnapshotError> {
        let len = self.u64(what)?;
        if len == 0 {
            return Err(self.err(format_args!("empty {what}")));
        }
        if len > self.remaining {
            return Err(self.err(format_args!("{what} length {len} exceeds remaining bytes")));
        }
        let len =
            usize::try_from(len).map_err(|_| self.err(format_args!("{what} length {len} exceeds memory")))?;
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                out.clear();
                out.push_str(s);
                Ok(())
            }
            Err(_) => Err(self.err(format_args!("invalid UTF-8 in {what}"))),
        }
    }

    /// A count of records of at least `min_len` bytes each, checked to fit.
    fn count(&mut self, what: &str, min_len: usize) -> Result<u64, SnapshotError> {
        self.count_in(what, min_len, 0)
    }

    /// `count` for a cursor over part of a section, `beyond` bytes of which
    /// follow the part.
    fn count_in(&mut self, what: &str, min_len: usize, beyond: u64) -> Result<u64, SnapshotError> {
        let n = self.u64(what)?;
        let left = u128::from(self.remaining) + u128::from(beyond);
        if u128::from(n) * (min_len as u128) > left {
            return Err(self.err(format_args!("{what} {n} exceeds remaining bytes")));
        }
        Ok(n)
    }
}

/// Quoted, escaped and shortened for an error line: file bytes never reach a
/// response unescaped (a newline there would forge a protocol line).
fn show(s: &str) -> String {
    const MAX_CHARS: usize = 64;
    let mut out: String = s.chars().take(MAX_CHARS).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    format!("{out:?}")
}

/// Decodes the events payload; `namer` numbers the items of the batches it
/// emits (and goes on to the pairs, which share the numbering).
pub(super) fn decode_events(
    cur: &mut Cursor<'_>,
    header: &Header,
    batch: usize,
    sink: &mut Sink<'_>,
    namer: &mut ItemNamer,
) -> Result<(), SnapshotError> {
    let building = sink.is_some();
    let too_many = || section_corrupt(Section::Events, "too many item names");
    let n_contexts = cur.count("context count", MIN_CONTEXT_LEN)?;
    let mut prev = String::new();
    let mut id = String::new();
    let mut total: u64 = 0;
    let mut out = ContextBatch::default();
    let mut out_records = 0usize;
    for i in 0..n_contexts {
        let name = cur.string("context name")?;
        if i > 0 && name.as_bytes() <= prev.as_bytes() {
            return Err(if name == prev {
                cur.err(format_args!("duplicate context {}", show(&name)))
            } else {
                cur.err(format_args!(
                    "contexts not sorted: {} after {}",
                    show(&name),
                    show(&prev)
                ))
            });
        }
        let n = cur.count("event count", MIN_EVENT_LEN)?;
        if n == 0 {
            return Err(cur.err(format_args!("context {} has no events", show(&name))));
        }
        total += n;
        if total > u64::from(header.event_count) {
            return Err(cur.err(format_args!(
                "more events than the header's event_store_count {}",
                header.event_count
            )));
        }
        let mut events = Vec::with_capacity(if building {
            usize::try_from(n).unwrap_or(MAX_PREALLOC).min(MAX_PREALLOC)
        } else {
            0
        });
        for _ in 0..n {
            // Fast path: a whole, valid record in view.
            let win = cur.window(EVENT_WINDOW)?;
            if let Some((raw, score, timestamp_ms, kind, used)) = event_in_window(win) {
                if building {
                    events.push(LoadedEvent {
                        item: namer.id_bytes(raw, &mut out.new_names).ok_or_else(too_many)?,
                        score,
                        timestamp_ms,
                        kind,
                    });
                }
                cur.consume(used);
                continue;
            }
            // Checked path: the exact error, or a record longer than the window.
            cur.string_into("event id", &mut id)?;
            let score = cur.i32("event score")?;
            let timestamp_ms = cur.u64("event timestamp")?;
            let kind = cur.u8("event kind")?;
            let Some(kind) = EventKind::from_u8(kind) else {
                return Err(cur.err(format_args!(
                    "context {}: event kind {kind} is not 0, 1 or 2",
                    show(&name)
                )));
            };
            if !(0..=MAX_SCORE).contains(&score) {
                return Err(cur.err(format_args!(
                    "context {}: event score {score} out of range 0..={MAX_SCORE}",
                    show(&name)
                )));
            }
            if kind == EventKind::Del && score != 0 {
                return Err(cur.err(format_args!(
                    "context {}: DEL event with score {score}",
                    show(&name)
                )));
            }
            if building {
                events.push(LoadedEvent {
                    item: namer.id(&id, &mut out.new_names).ok_or_else(too_many)?,
                    score,
                    timestamp_ms,
                    kind,
                });
            }
        }
        prev.clear();
        prev.push_str(&name);
        if building {
            let records = events.len().saturating_add(1);
            if !out.contexts.is_empty() && out_records.saturating_add(records) > batch {
                emit(sink, LoadBatch::Contexts(std::mem::take(&mut out)))?;
                out_records = 0;
            }
            out.contexts.push(LoadedContext { name, events });
            out_records = out_records.saturating_add(records);
        }
    }
    if !out.contexts.is_empty() {
        emit(sink, LoadBatch::Contexts(out))?;
    }
    if cur.remaining != 0 {
        return Err(cur.err(format_args!("{} trailing bytes", cur.remaining)));
    }
    if total != u64::from(header.event_count) {
        return Err(cur.err(format_args!("{total} events, header says {}", header.event_count)));
    }
    Ok(())
}

/// Bytes the pair decoder keeps in view at a time (its fast path parses
/// whole records inside this window).
const PAIR_WINDOW: usize = 64 * 1024;

/// A name in a pair window: its bytes and, when it is at most 16 bytes long
/// and 16 bytes can be read from where it starts, those bytes as a
/// big-endian integer with everything after the name zeroed ([`Name::cmp`]).
#[derive(Clone, Copy)]
struct Name<'w> {
    bytes: &'w [u8],
    key: Option<u128>,
}

impl<'w> Name<'w> {
    /// A name kept from an earlier window: compared byte by byte.
    fn slow(bytes: &'w [u8]) -> Self {
        Name { bytes, key: None }
    }

    /// Byte order of the names. Two short names compare by their keys and
    /// then by length: past the shorter name both keys hold zeros, so equal
    /// keys mean that the shorter is a prefix of the longer, which sorts
    /// first.
    #[inline(always)]
    fn cmp(self, other: Name<'_>) -> Ordering {
        match (self.key, other.key) {
            (Some(x), Some(y)) => x.cmp(&y).then(self.bytes.len().cmp(&other.bytes.len())),
            _ => self.bytes.cmp(other.bytes),
        }
    }
}

/// Bytes of names that get a key.
const NAME_KEY_LEN: usize = std::mem::size_of::<u128>();

/// One pair record as laid out in a window: `a`, `b` and the score, and
/// where the next record starts. `None` unless the whole record is in view,
/// both strings are non-empty UTF-8, and nothing in it needs an error message.
#[inline(always)]
fn pair_in_window(win: &[u8], at: usize) -> Option<(Name<'_>, Name<'_>, f32, usize)> {
    let (a, at) = name_at(win, at)?;
    let (b, at) = name_at(win, at)?;
    let end = at.checked_add(4)?;
    let score = f32::from_le_bytes(win.get(at..end)?.try_into().ok()?);
    Some((a, b, score, end))
}

/// One event record at the start of a window: id, score, timestamp, kind and
/// the record's length. `None` unless it is whole in view, its id is a
/// non-empty UTF-8 string and its fields are in range (score 0..=100, a
/// kind, 0 for a DEL): the checked path gives the error for those.
#[inline(always)]
fn event_in_window(win: &[u8]) -> Option<(&[u8], i32, u64, EventKind, usize)> {
    let (id, at) = name_at(win, 0)?;
    let end = at.checked_add(EVENT_FIELDS_LEN)?;
    let f: &[u8; EVENT_FIELDS_LEN] = win.get(at..end)?.try_into().ok()?;
    let (score, rest) = f.split_first_chunk::<4>()?;
    let (ts, kind) = rest.split_first_chunk::<8>()?;
    let score = i32::from_le_bytes(*score);
    let kind = EventKind::from_u8(*kind.first()?)?;
    let valid = (0..=MAX_SCORE).contains(&score) && (kind != EventKind::Del || score == 0);
    valid.then_some((id.bytes, score, u64::from_le_bytes(*ts), kind, end))
}

/// An event's bytes after its id: score, timestamp, kind.
const EVENT_FIELDS_LEN: usize = 4 + 8 + 1;

/// Bytes the event decoder asks to have in view (whole records in it are
/// read without the checked reads).
const EVENT_WINDOW: usize = 4 * 1024;

/// A non-empty UTF-8 string at `at` in a window, with its key when it has
/// one ([`Name`]), and where it ends; `None` if it is not whole in view or
/// not valid.
#[inline(always)]
fn name_at(win: &[u8], at: usize) -> Option<(Name<'_>, usize)> {
    let len = u64::from_le_bytes(win.get(at..at.checked_add(8)?)?.try_into().ok()?);
    let start = at + 8;
    let len = usize::try_from(len).ok()?;
    let end = start.checked_add(len)?;
    let bytes = win.get(start..end)?;
    if (1..=NAME_KEY_LEN).contains(&len) {
        if let Some(word) = win.get(start..start + NAME_KEY_LEN) {
            let word = u128::from_be_bytes(word.try_into().ok()?);
            let key = word & (u128::MAX << (8 * (NAME_KEY_LEN - len)));
            // ASCII, so UTF-8, when no byte of the name has its top bit set.
            let ascii = key & u128::from_ne_bytes([0x80; NAME_KEY_LEN]) == 0;
            let valid = ascii || std::str::from_utf8(bytes).is_ok();
            return valid.then_some((
                Name {
                    bytes,
                    key: Some(key),
                },
                end,
            ));
        }
    }
    let valid = !bytes.is_empty() && (bytes.is_ascii() || std::str::from_utf8(bytes).is_ok());
    valid.then_some((Name { bytes, key: None }, end))
}

/// What `decode_pairs` builds as it goes: the current batch and the naming
/// of items (`a` repeats over a whole row, so it is named once per run).
struct PairSink {
    out: PairBatch,
    namer: ItemNamer,
    a_id: Option<u32>,
    batch: usize,
}

impl PairSink {
    /// Adds one checked pair; `new_a` when `a` differs from the previous
    /// pair's; `b_hash` is `namer.hash(b)`.
    fn push(
        &mut self,
        a: &[u8],
        b: &[u8],
        score: f32,
        new_a: bool,
        b_hash: u64,
        sink: &mut Sink<'_>,
    ) -> Result<(), SnapshotError> {
        if self.out.pairs.len() >= self.batch {
            emit(sink, LoadBatch::Pairs(std::mem::take(&mut self.out)))?;
        }
        let too_many = || section_corrupt(Section::CoOccurrence, "too many item names");
        let ia = match self.a_id {
            Some(id) if !new_a => id,
            _ => {
                let id = self
                    .namer
                    .id_bytes(a, &mut self.out.new_names)
                    .ok_or_else(too_many)?;
                self.a_id = Some(id);
                id
            }
        };
        let ib = self
            .namer
            .id_hashed(b, b_hash, &mut self.out.new_names)
            .ok_or_else(too_many)?;
        self.out.pairs.push((ia, ib, score));
        Ok(())
    }

    /// `push`es every staged pair, in order, and empties the stage.
    fn push_staged(
        &mut self,
        staged: &mut Vec<Staged<'_>>,
        sink: &mut Sink<'_>,
    ) -> Result<(), SnapshotError> {
        for (a, b, score, new_a, b_hash) in staged.drain(..) {
            self.push(a, b, score, new_a, b_hash, sink)?;
        }
        Ok(())
    }
}

/// A checked pair waiting to be named: `a`, `b`, score, whether `a` is new,
/// and the hash of `b`, whose table slot was touched when it was staged.
type Staged<'w> = (&'w [u8], &'w [u8], f32, bool, u64);

/// Pairs staged before naming: enough for their slots' cache misses to
/// overlap, few enough that the slots are still cached when named.
const PAIR_STAGE: usize = 32;

/// `prev` becomes a copy of `bytes`, reusing its allocation.
fn keep(prev: &mut Vec<u8>, bytes: &[u8]) {
    prev.clear();
    prev.extend_from_slice(bytes);
}

fn decode_pairs(
    cur: &mut Cursor<'_>,
    header: &Header,
    batch: usize,
    sink: &mut Sink<'_>,
    namer: ItemNamer,
) -> Result<(), SnapshotError> {
    let n = pair_count(cur, header, 0)?;
    decode_pair_run(cur, 0..n, Vec::new(), Vec::new(), batch, sink, namer)
}

/// The co-occurrence payload's record count, checked against the bytes left
/// (`cur`'s and the `beyond` after them) and the header.
pub(super) fn pair_count(cur: &mut Cursor<'_>, header: &Header, beyond: u64) -> Result<u64, SnapshotError> {
    let n = cur.count_in("pair count", MIN_PAIR_LEN, beyond)?;
    if n != u64::from(header.pair_count) {
        return Err(cur.err(format_args!("{n} pairs, header says {}", header.pair_count)));
    }
    Ok(n)
}

/// Decodes pair records `run` (numbered from 0 in the section) from where
/// `cur` is; `prev_a`, `prev_b` is record `run.start - 1` (unused for 0);
/// `namer` numbers on from the load's earlier batches.
pub(super) fn decode_pair_run(
    cur: &mut Cursor<'_>,
    run: std::ops::Range<u64>,
    mut prev_a: Vec<u8>,
    mut prev_b: Vec<u8>,
    batch: usize,
    sink: &mut Sink<'_>,
    namer: ItemNamer,
) -> Result<(), SnapshotError> {
    let building = sink.is_some();
    let n = run.end;
    let (mut a, mut b) = (String::new(), String::new());
    // The previous pair is kept across windows (inside one, it is a slice of it).
    let mut pairs = PairSink {
        out: PairBatch::default(),
        namer,
        a_id: None,
        batch,
    };
    let mut i: u64 = run.start;
    while i < n {
        // Fast path: whole, well-formed records inside the window, checked
        // and named without copying. It stops at the first record that does
        // not fit or needs an error; the slow path below takes that one.
        let win = cur.window(PAIR_WINDOW)?;
        let mut at = 0usize;
        let mut last: Option<(Name<'_>, Name<'_>)> = None;
        let mut staged: Vec<Staged<'_>> = Vec::with_capacity(if building { PAIR_STAGE } else { 0 });
        let mut touched = 0u32;
        while i < n {
            let Some((ra, rb, score, next)) = pair_in_window(win, at) else {
                break;
            };
            let (pa, pb) = last.unwrap_or((Name::slow(&prev_a), Name::slow(&prev_b)));
            let by_a = if i == 0 { Ordering::Greater } else { ra.cmp(pa) };
            let new_a = by_a != Ordering::Equal;
            // With the same `a`, `a < b` follows from `a < b' < b` for the
            // previous pair's `b'` (checked when it was read).
            let in_order = match by_a {
                Ordering::Greater => ra.cmp(rb) == Ordering::Less,
                Ordering::Equal => rb.cmp(pb) == Ordering::Greater,
                Ordering::Less => false,
            };
            if !(in_order && score.is_finite() && score > 0.0) {
                break;
            }
            if building {
                let hash = pairs.namer.hash(rb.bytes);
                touched = touched.wrapping_add(pairs.namer.touch(hash));
                staged.push((ra.bytes, rb.bytes, score, new_a, hash));
                if staged.len() >= PAIR_STAGE {
                    pairs.push_staged(&mut staged, sink)?;
                }
            }
            last = Some((ra, rb));
            at = next;
            i += 1;
        }
        pairs.push_staged(&mut staged, sink)?;
        std::hint::black_box(touched);
        if let Some((la, lb)) = last {
            keep(&mut prev_a, la.bytes);
            keep(&mut prev_b, lb.bytes);
        }
        cur.consume(at);
        if at > 0 || i == n {
            continue;
        }
        // Slow path: one record through the checked reads, which give the
        // exact error (or read a record longer than the window).
        cur.string_into("pair item", &mut a)?;
        cur.string_into("pair item", &mut b)?;
        let score = cur.f32("pair score")?;
        if a.as_bytes() >= b.as_bytes() {
            return Err(cur.err(format_args!(
                "pair ({}, {}) is not ordered a < b",
                show(&a),
                show(&b)
            )));
        }
        if i > 0 && (a.as_bytes(), b.as_bytes()) <= (prev_a.as_slice(), prev_b.as_slice()) {
            let what = if a.as_bytes() == prev_a && b.as_bytes() == prev_b {
                "duplicate pair"
            } else {
                "pairs not sorted at"
            };
            return Err(cur.err(format_args!("{what} ({}, {})", show(&a), show(&b))));
        }
        if !(score.is_finite() && score > 0.0) {
            return Err(cur.err(format_args!(
                "pair ({}, {}): score {score} is not finite and > 0",
                show(&a),
                show(&b)
            )));
        }
        if building {
            let new_a = i == 0 || a.as_bytes() != prev_a;
            let hash = pairs.namer.hash(b.as_bytes());
            pairs.push(a.as_bytes(), b.as_bytes(), score, new_a, hash, sink)?;
        }
        keep(&mut prev_a, a.as_bytes());
        keep(&mut prev_b, b.as_bytes());
        i += 1;
    }
    if !pairs.out.pairs.is_empty() {
        emit(sink, LoadBatch::Pairs(pairs.out))?;
    }
    Ok(())
}

pub(super) fn decode_vectors(
    cur: &mut Cursor<'_>,
    header: &Header,
    opts: LoadOptions,
    batch: usize,
    sink: &mut Sink<'_>,
) -> Result<(), SnapshotError> {
    let building = sink.is_some();
    let d = cur.u32("dimension")?;
    let n = cur.u64("vector count")?;
    if n != u64::from(header.vector_count) {
        return Err(cur.err(format_args!("{n} vectors, header says {}", header.vector_count)));
    }
    if n == 0 && d != 0 {
        return Err(cur.err(format_args!("dimension {d} with no vectors")));
    }
    if n > 0 && d == 0 {
        return Err(cur.err(format_args!("dimension 0 with {n} vectors")));
    }
    let record_len = MIN_VECTOR_LEN as u128 + 4 * u128::from(d);
    if u128::from(n) * record_len > u128::from(cur.remaining) {
        return Err(cur.err(format_args!(
            "vector count {n} with dimension {d} exceeds remaining bytes"
        )));
    }
    let expected = opts.default_dimension as u64;
    if n > 0 && expected != 0 && u64::from(d) != expected {
        return Err(corrupt(format!(
            "vector dimension {d} differs from vectors.default_dimension {expected}"
        )));
    }
    // `d` now fits in the section, hence in memory.
    let dim = usize::try_from(d).map_err(|_| cur.err("dimension exceeds memory"))?;
    emit(sink, LoadBatch::Dimension(dim))?;
    let mut prev = String::new();
    let mut out: Vec<LoadedVector> = Vec::new();
    for i in 0..n {
        let id = cur.string("vector id")?;
        if i > 0 && id.as_bytes() <= prev.as_bytes() {
            return Err(if id == prev {
                cur.err(format_args!("duplicate vector {}", show(&id)))
            } else {
                cur.err(format_args!(
                    "vectors not sorted: {} after {}",
                    show(&id),
                    show(&prev)
                ))
            });
        }
        let len = cur.u64("vector length")?;
        if len != u64::from(d) {
            return Err(cur.err(format_args!(
                "vector {}: length {len} differs from dimension {d}",
                show(&id)
            )));
        }
        let raw = cur.take(dim.saturating_mul(4), "vector values")?;
        let mut values = Vec::with_capacity(if building { dim } else { 0 });
        let mut bad = None;
        for (j, c) in raw.chunks_exact(4).enumerate() {
            let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            if !v.is_finite() && bad.is_none() {
                bad = Some(j);
            }
            if building {
                values.push(v);
            }
        }
        if let Some(j) = bad {
            return Err(cur.err(format_args!("vector {}: value {j} is not finite", show(&id))));
        }
        prev.clear();
        prev.push_str(&id);
        if building {
            if out.len() >= batch {
                emit(sink, LoadBatch::Vectors(std::mem::take(&mut out)))?;
            }
            out.push(LoadedVector { id, values });
        }
    }
    if !out.is_empty() {
        emit(sink, LoadBatch::Vectors(out))?;
    }
    Ok(())
}

#[cfg(test)]
mod name_tests {
    use super::{pair_in_window, Name, NAME_KEY_LEN};

    fn record(out: &mut Vec<u8>, a: &[u8], b: &[u8]) {
        for s in [a, b] {
            out.extend_from_slice(&(s.len() as u64).to_le_bytes());
            out.extend_from_slice(s);
        }
        out.extend_from_slice(&1.0f32.to_le_bytes());
    }

    /// Names of 1 to 20 bytes over NUL, `a`, `b` and the two bytes of `é`:
    /// prefixes of each other, equal up to trailing NULs, on both sides of
    /// the 16 bytes that get a key.
    fn names() -> Vec<Vec<u8>> {
        let parts: [&[u8]; 4] = [b"\0", b"a", b"b", "é".as_bytes()];
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut out: Vec<Vec<u8>> = vec![b"a".to_vec(), b"a\0".to_vec(), b"a\0\0".to_vec(), b"b".to_vec()];
        while out.len() < 120 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let want = 1 + (x % 20) as usize;
            let mut s = Vec::new();
            let mut y = x;
            while s.len() < want {
                s.extend_from_slice(parts[(y % 4) as usize]);
                y /= 4;
                if y == 0 {
                    y = x.rotate_left(s.len() as u32) | 1;
                }
            }
            let mut n = out[out.len() / 2].clone();
            n.truncate(want / 2);
            n.extend_from_slice(&s);
            if std::str::from_utf8(&n).is_ok() {
                out.push(n);
            }
        }
        out
    }

    #[test]
    fn window_names_compare_in_byte_order() {
        let names = names();
        let short = names.iter().filter(|n| n.len() <= NAME_KEY_LEN).count();
        assert!(
            short > 10 && names.len() - short > 10,
            "{short} of {}",
            names.len()
        );
        for x in &names {
            for y in &names {
                // Two records, then bytes that are not zero, so that a key
                // which kept what follows its name would compare wrongly.
                let mut win = Vec::new();
                record(&mut win, x, y);
                let second = win.len();
                record(&mut win, y, x);
                win.extend_from_slice(&[0xAB; 32]);
                let (a1, b1, _, next) = pair_in_window(&win, 0).expect("first record");
                assert_eq!(next, second);
                let (a2, b2, _, _) = pair_in_window(&win, second).expect("second record");
                assert_eq!(
                    (a1.bytes, b1.bytes, a2.bytes, b2.bytes),
                    (&x[..], &y[..], &y[..], &x[..])
                );
                for n in [a1, b1, a2, b2] {
                    assert_eq!(n.key.is_some(), n.bytes.len() <= NAME_KEY_LEN);
                }
                let want = x.cmp(y);
                assert_eq!(a1.cmp(b1), want, "{x:?} {y:?}");
                assert_eq!(a1.cmp(a2), want, "{x:?} {y:?}");
                assert_eq!(b2.cmp(b1), want, "{x:?} {y:?}");
                assert_eq!(a1.cmp(b2), std::cmp::Ordering::Equal);
                assert_eq!(a1.cmp(Name::slow(y)), want, "{x:?} {y:?}");
            }
        }
    }

    #[test]
    fn window_names_that_are_not_utf8_are_left_to_the_checked_path() {
        for bad in [&b"\xff"[..], b"a\xc3", b"\xc3(abc", b"0123456789abcdef\xff"] {
            let mut win = Vec::new();
            record(&mut win, bad, b"zz");
            win.extend_from_slice(&[0; 32]);
            assert!(pair_in_window(&win, 0).is_none(), "{bad:?}");
            let mut win = Vec::new();
            record(&mut win, b"a", bad);
            assert!(pair_in_window(&win, 0).is_none(), "{bad:?}");
        }
    }
}
