//! Streaming snapshot writer (format in `format.rs`).
//!
//! Writes a placeholder header, then each section: tag and placeholder length,
//! the records streamed through a `BufWriter` while they are CRC-ed, then a seek
//! back to patch the length and the section's leading counts, then the section
//! CRC. The header goes last, at offset 0. The file is never built in memory:
//! it stays O(buffer + one record), plus, when the co-occurrence records are
//! encoded in parts on several threads (`parts.rs`), a few parts of ~2 MB.
//!
//! CRCs are computed on the way through: a patched prefix is hashed on its own
//! and put in front of the payload's CRC with `crc32fast::Hasher::combine`, and
//! the file CRC is the header's CRC combined with the body's.
//!
//! The writer also checks every invariant the reader enforces (order, ranges,
//! finiteness, non-empty names, one dimension), so a save never produces a
//! file that would not load. Plain std I/O: no actix, no tokio.
use super::format::{
    Section, EVENTS_HEAD_LEN, FOOTER_LEN, HEADER_LEN, MAX_SCORE, PAIRS_HEAD_LEN, SECTION_PREFIX_LEN,
    VECTORS_HEAD_LEN, VERSION,
};
use super::parts::{encode_pair, encode_pairs, Encode, PairRows, PartSink};
use super::{Header, SnapshotError};
use crate::store::{EventKind, EventView, PairRowFn, SortedPairs, StoreImage};
use crc32fast::Hasher;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::Path;

/// Buffer between the encoder and the file.
pub const WRITE_BUFFER_BYTES: usize = 256 * 1024;

/// What `write_snapshot` wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteSummary {
    /// The header written at offset 0.
    pub header: Header,
    /// The file CRC written in the footer.
    pub crc: u32,
}

/// Anything the writer can read records from, in the order the format needs.
/// `StoreImage` is the real source; tests and tools may supply their own.
pub trait SnapshotSource {
    /// Every context in byte order of its name, events oldest first.
    fn contexts_sorted<F>(&self, f: F) -> Result<(), SnapshotError>
    where
        F: FnMut(&str, &[EventView<'_>]) -> Result<(), SnapshotError>;
    /// Every unordered pair once, `a < b`, sorted by `(a, b)`, as numbered
    /// rows of pairs sharing `a` (see `PairRows`).
    fn pair_rows(&self) -> Box<dyn PairRows + '_>;
    /// Every vector sorted by id.
    fn vectors_sorted<F>(&self, f: F) -> Result<(), SnapshotError>
    where
        F: FnMut(&str, &[f32]) -> Result<(), SnapshotError>;
}

impl SnapshotSource for StoreImage {
    fn contexts_sorted<F>(&self, f: F) -> Result<(), SnapshotError>
    where
        F: FnMut(&str, &[EventView<'_>]) -> Result<(), SnapshotError>,
    {
        self.for_each_context_sorted(f)
    }
    fn pair_rows(&self) -> Box<dyn PairRows + '_> {
        Box::new(self.sorted_pairs())
    }
    fn vectors_sorted<F>(&self, f: F) -> Result<(), SnapshotError>
    where
        F: FnMut(&str, &[f32]) -> Result<(), SnapshotError>,
    {
        self.for_each_vector_sorted(f)
    }
}

impl PairRows for SortedPairs<'_> {
    fn rows(&self) -> usize {
        SortedPairs::rows(self)
    }
    fn row_len(&self, row: usize) -> usize {
        SortedPairs::row_len(self, row)
    }
    fn for_each_row(
        &self,
        range: Range<usize>,
        f: &mut PairRowFn<'_, SnapshotError>,
    ) -> Result<(), SnapshotError> {
        SortedPairs::for_each_row(self, range, f)
    }
}

/// Writes `image` as a complete snapshot to `out` (positioned at 0), streaming
/// section by section; never builds the whole file in memory. `path` is only for
/// error messages. Does not fsync (the caller does).
pub fn write_snapshot<W: Write + Seek>(
    out: &mut W,
    image: &StoreImage,
    created_at: i64,
    path: &Path,
) -> Result<WriteSummary, SnapshotError> {
    write_source(out, image, created_at, path)
}

/// `write_snapshot` for any `SnapshotSource`. Offsets are relative to the
/// stream position at entry (0 for a fresh file).
pub fn write_source<W: Write + Seek, S: SnapshotSource + ?Sized>(
    out: &mut W,
    source: &S,
    created_at: i64,
    path: &Path,
) -> Result<WriteSummary, SnapshotError> {
    write_source_with(out, source, created_at, path, Encode::auto())
}

/// `write_source` with the pairs encoded as `plan` says (the bytes do not
/// depend on it).
pub fn write_source_with<W: Write + Seek, S: SnapshotSource + ?Sized>(
    out: &mut W,
    source: &S,
    created_at: i64,
    path: &Path,
    plan: Encode,
) -> Result<WriteSummary, SnapshotError> {
    let io = |source: std::io::Error| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    };
    let base = out.stream_position().map_err(io)?;
    let mut w = BufWriter::with_capacity(WRITE_BUFFER_BYTES, &mut *out);
    w.write_all(&[0u8; HEADER_LEN]).map_err(io)?;

    let mut file = FileCrc {
        body: Hasher::new(),
        pos: HEADER_LEN as u64,
        base,
    };

    // events
    let mut n_contexts = 0u64;
    let mut n_events = 0u64;
    let events_head = file.section(&mut w, Section::Events, EVENTS_HEAD_LEN, path, |p| {
        // Names are never empty, so an empty `prev` means "no previous one".
        let mut prev = String::new();
        source.contexts_sorted(|name, events| {
            if events.is_empty() {
                // carries no data; the format has no empty contexts
                return Ok(());
            }
            check_name(name, "context name")?;
            if !prev.is_empty() && name.as_bytes() <= prev.as_bytes() {
                return Err(invalid(format!(
                    "contexts not strictly sorted: {name:?} after {prev:?}"
                )));
            }
            prev.clear();
            prev.push_str(name);
            n_contexts += 1;
            n_events += events.len() as u64;
            if n_events > u64::from(u32::MAX) {
                return Err(SnapshotError::TooLarge { what: "event count" });
            }
            p.put_str(name)?;
            p.put_u64(events.len() as u64)?;
            for e in events {
                check_name(e.id, "event id")?;
                if !(0..=MAX_SCORE).contains(&e.score) {
                    return Err(invalid(format!("event score {} out of range", e.score)));
                }
                if e.kind == EventKind::Del && e.score != 0 {
                    return Err(invalid(format!("DEL event with score {}", e.score)));
                }
                p.put_str(e.id)?;
                p.put(&e.score.to_le_bytes())?;
                p.put_u64(e.timestamp_ms)?;
                p.put(&[e.kind as u8])?;
            }
            Ok(())
        })?;
        Ok(n_contexts.to_le_bytes().to_vec())
    })?;
    debug_assert_eq!(events_head.len(), EVENTS_HEAD_LEN);

    // co_occurrence
    let mut n_pairs = 0u64;
    file.section(&mut w, Section::CoOccurrence, PAIRS_HEAD_LEN, path, |p| {
        let rows = source.pair_rows();
        n_pairs = encode_pairs(&*rows, plan, p, |p, a_field, b, score| {
            p.put_pair(a_field, b, score)
        })?;
        Ok(n_pairs.to_le_bytes().to_vec())
    })?;

    // vectors
    let mut n_vectors = 0u64;
    let mut dimension: Option<usize> = None;
    file.section(&mut w, Section::Vectors, VECTORS_HEAD_LEN, path, |p| {
        let mut prev = String::new();
        source.vectors_sorted(|id, values| {
            check_name(id, "vector id")?;
            if !prev.is_empty() && id.as_bytes() <= prev.as_bytes() {
                return Err(invalid(format!(
                    "vectors not strictly sorted: {id:?} after {prev:?}"
                )));
            }
            prev.clear();
            prev.push_str(id);
            let d = *dimension.get_or_insert(values.len());
            if values.len() != d {
                return Err(invalid(format!(
                    "vector {id:?} has {} values, dimension is {d}",
                    values.len()
                )));
            }
            if d == 0 {
                return Err(invalid(format!("vector {id:?} is empty")));
            }
            if u32::try_from(d).is_err() {
                return Err(SnapshotError::TooLarge {
                    what: "vector dimension",
                });
            }
            if values.iter().any(|v| !v.is_finite()) {
                return Err(invalid(format!("vector {id:?} has a non-finite value")));
            }
            n_vectors += 1;
            if n_vectors > u64::from(u32::MAX) {
                return Err(SnapshotError::TooLarge { what: "vector count" });
            }
            p.put_str(id)?;
            p.put_u64(d as u64)?;
            for v in values {
                p.put(&v.to_le_bytes())?;
            }
            Ok(())
        })?;
        let d = u32::try_from(dimension.unwrap_or(0)).map_err(|_| SnapshotError::TooLarge {
            what: "vector dimension",
        })?;
        let mut head = d.to_le_bytes().to_vec();
        head.extend_from_slice(&n_vectors.to_le_bytes());
        Ok(head)
    })?;

    let count = |n: u64, what: &'static str| u32::try_from(n).map_err(|_| SnapshotError::TooLarge { what });
    let header = Header {
        version: VERSION,
        flags: 0,
        event_count: count(n_events, "event count")?,
        vector_count: count(n_vectors, "vector count")?,
        pair_count: count(n_pairs, "pair count")?,
        created_at,
        file_size: file.pos + FOOTER_LEN as u64,
    };
    let header_bytes = header.encode();
    let mut crc = Hasher::new();
    crc.update(&header_bytes);
    crc.combine(&file.body);
    let crc = crc.finalize();

    // footer at the end, then the header at the start, then leave the stream
    // positioned after the footer.
    w.write_all(&crc.to_le_bytes()).map_err(io)?;
    w.write_all(&0u32.to_le_bytes()).map_err(io)?;
    w.seek(SeekFrom::Start(base)).map_err(io)?;
    w.write_all(&header_bytes).map_err(io)?;
    w.seek(SeekFrom::Start(base + header.file_size)).map_err(io)?;
    w.flush().map_err(io)?;
    Ok(WriteSummary { header, crc })
}

pub(super) fn invalid(msg: String) -> SnapshotError {
    SnapshotError::InvalidImage(msg)
}

pub(super) fn check_name(s: &str, what: &str) -> Result<(), SnapshotError> {
    if s.is_empty() {
        Err(invalid(format!("empty {what}")))
    } else {
        Ok(())
    }
}

/// Running state of the file CRC (everything after the header) and position.
struct FileCrc {
    body: Hasher,
    /// Bytes written so far, relative to `base`.
    pos: u64,
    base: u64,
}

impl FileCrc {
    /// Writes one section. `records` streams the payload after its fixed head of
    /// `head_len` bytes and returns that head, which is patched in afterwards.
    fn section<W: Write + Seek>(
        &mut self,
        w: &mut BufWriter<W>,
        section: Section,
        head_len: usize,
        path: &Path,
        records: impl FnOnce(&mut Payload<'_, W>) -> Result<Vec<u8>, SnapshotError>,
    ) -> Result<Vec<u8>, SnapshotError> {
        let io = |source: std::io::Error| SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        };
        let start = self.pos;
        w.write_all(&[0u8; SECTION_PREFIX_LEN]).map_err(io)?;
        w.write_all(&vec![0u8; head_len]).map_err(io)?;
        let mut payload = Payload {
            w,
            buf: Vec::with_capacity(WRITE_BUFFER_BYTES),
            crc: Hasher::new(),
            len: 0,
            path,
        };
        let head = records(&mut payload)?;
        payload.flush()?;
        let Payload {
            w,
            crc: records_crc,
            len: records_len,
            ..
        } = payload;
        if head.len() != head_len {
            return Err(invalid(format!(
                "{} section head has the wrong size",
                section.name()
            )));
        }
        let payload_len = head_len as u64 + records_len;
        let mut prefix = Vec::with_capacity(SECTION_PREFIX_LEN + head_len);
        prefix.extend_from_slice(&section.tag().to_le_bytes());
        prefix.extend_from_slice(&payload_len.to_le_bytes());
        prefix.extend_from_slice(&head);

        let end = start + (SECTION_PREFIX_LEN as u64) + payload_len;
        w.seek(SeekFrom::Start(self.base + start)).map_err(io)?;
        w.write_all(&prefix).map_err(io)?;
        w.seek(SeekFrom::Start(self.base + end)).map_err(io)?;

        let mut section_crc = Hasher::new();
        section_crc.update(&prefix);
        section_crc.combine(&records_crc);
        let section_crc = section_crc.finalize().to_le_bytes();
        w.write_all(&section_crc).map_err(io)?;

        self.body.update(&prefix);
        self.body.combine(&records_crc);
        self.body.update(&section_crc);
        self.pos = end + section_crc.len() as u64;
        Ok(head)
    }
}

impl<W: Write> PartSink for Payload<'_, W> {
    fn put_encoded(&mut self, bytes: &[u8], crc: &Hasher) -> Result<(), SnapshotError> {
        self.flush()?;
        self.crc.combine(crc);
        self.w.write_all(bytes).map_err(|source| SnapshotError::Io {
            path: self.path.to_path_buf(),
            source,
        })?;
        self.len += bytes.len() as u64;
        Ok(())
    }
}

/// The record part of one section's payload: counts and CRCs what it writes.
/// Records are gathered in `buf` and CRC-ed and written a block at a time:
/// CRC32 over blocks runs at memory speed, over 4-byte fields it does not.
struct Payload<'a, W: Write> {
    w: &'a mut BufWriter<W>,
    buf: Vec<u8>,
    crc: Hasher,
    len: u64,
    path: &'a Path,
}

impl<W: Write> Payload<'_, W> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        if self.buf.len() + bytes.len() > WRITE_BUFFER_BYTES {
            self.flush()?;
        }
        self.buf.extend_from_slice(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }
    /// Writes and CRCs what is gathered.
    fn flush(&mut self) -> Result<(), SnapshotError> {
        self.crc.update(&self.buf);
        self.w.write_all(&self.buf).map_err(|source| SnapshotError::Io {
            path: self.path.to_path_buf(),
            source,
        })?;
        self.buf.clear();
        Ok(())
    }
    /// One pair record: `a_field` (a's length and bytes, encoded once per
    /// row), then b's length and bytes, then the score.
    fn put_pair(&mut self, a_field: &[u8], b: &[u8], score: f32) -> Result<(), SnapshotError> {
        let n = a_field.len() + 8 + b.len() + 4;
        if self.buf.len() + n > WRITE_BUFFER_BYTES {
            self.flush()?;
        }
        encode_pair(&mut self.buf, a_field, b, score);
        self.len += n as u64;
        Ok(())
    }
    fn put_u64(&mut self, v: u64) -> Result<(), SnapshotError> {
        self.put(&v.to_le_bytes())
    }
    fn put_str(&mut self, s: &str) -> Result<(), SnapshotError> {
        self.put_u64(s.len() as u64)?;
        self.put(s.as_bytes())
    }
}
