//! Tools for tests, the test-data generator and fuzz targets: an in-memory
//! `SnapshotSource`, a raw encoder that builds files the writer would refuse,
//! and helpers that locate sections and recompute CRCs after a byte is changed
//! on purpose. Not used by the server. Works on small in-memory files only.
use super::format::{Section, FOOTER_LEN, HEADER_LEN, SECTION_CRC_LEN, SECTION_PREFIX_LEN};
use super::parts::PairRows;
use super::writer::SnapshotSource;
use super::{Header, SnapshotError};
use crate::store::{ContextBatch, EventView, ItemNames, PairBatch, PairRowFn};
use std::ops::Range;

/// One context of a `Model`: name and `(id, score, timestamp_ms, kind)` events.
pub type ModelContext = crate::store::NamedContext;

/// A snapshot's content as plain lists, handed to the writer exactly as held
/// (no sorting), so tests can also feed it invalid orders.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Model {
    pub contexts: Vec<ModelContext>,
    pub pairs: Vec<(String, String, f32)>,
    pub vectors: Vec<(String, Vec<f32>)>,
}

impl Model {
    /// Appends decoded contexts (what a `LoadBatch::Contexts` carries),
    /// naming their items with `names`, which must have seen every earlier
    /// batch of the load.
    ///
    /// # Panics
    /// On a number the batches never named (a reader bug).
    pub fn push_contexts(&mut self, names: &mut ItemNames, batch: ContextBatch) {
        let contexts = names
            .contexts(batch)
            .expect("every event's item number was named");
        self.contexts.extend(contexts);
    }

    /// Appends decoded pairs (what a `LoadBatch::Pairs` carries), naming them
    /// with `names`, which must have seen every earlier batch of the load.
    ///
    /// # Panics
    /// On a number the batches never named (a reader bug).
    pub fn push_pairs(&mut self, names: &mut ItemNames, batch: PairBatch) {
        let pairs = names.resolve(batch).expect("every pair number was named");
        self.pairs.extend(pairs);
    }
}

impl SnapshotSource for Model {
    fn contexts_sorted<F>(&self, mut f: F) -> Result<(), SnapshotError>
    where
        F: FnMut(&str, &[EventView<'_>]) -> Result<(), SnapshotError>,
    {
        for (name, events) in &self.contexts {
            let views: Vec<EventView<'_>> = events
                .iter()
                .map(|(id, score, ts, kind)| EventView {
                    id,
                    score: *score,
                    timestamp_ms: *ts,
                    kind: *kind,
                })
                .collect();
            f(name, &views)?;
        }
        Ok(())
    }
    fn pair_rows(&self) -> Box<dyn PairRows + '_> {
        // rows: runs of consecutive pairs with the same `a`, as listed
        let mut runs = Vec::new();
        let mut at = 0;
        for run in self.pairs.chunk_by(|x, y| x.0 == y.0) {
            runs.push(at..at + run.len());
            at += run.len();
        }
        Box::new(ModelRows {
            pairs: &self.pairs,
            runs,
        })
    }
    fn vectors_sorted<F>(&self, mut f: F) -> Result<(), SnapshotError>
    where
        F: FnMut(&str, &[f32]) -> Result<(), SnapshotError>,
    {
        for (id, v) in &self.vectors {
            f(id, v)?;
        }
        Ok(())
    }
}

/// A `Model`'s pairs as rows: runs of consecutive pairs with the same `a`.
struct ModelRows<'a> {
    pairs: &'a [(String, String, f32)],
    runs: Vec<Range<usize>>,
}

impl PairRows for ModelRows<'_> {
    fn rows(&self) -> usize {
        self.runs.len()
    }
    fn row_len(&self, row: usize) -> usize {
        self.runs.get(row).map_or(0, ExactSizeIterator::len)
    }
    fn for_each_row(
        &self,
        range: Range<usize>,
        f: &mut PairRowFn<'_, SnapshotError>,
    ) -> Result<(), SnapshotError> {
        for run in self.runs.get(range).unwrap_or(&[]) {
            let row = self.pairs.get(run.clone()).unwrap_or(&[]);
            let partners: Vec<(&str, f32)> = row.iter().map(|(_, b, s)| (b.as_str(), *s)).collect();
            if let Some((a, _, _)) = row.first() {
                f(a, &partners)?;
            }
        }
        Ok(())
    }
}

/// Appends a bincode string: `u64` length then the bytes.
pub fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
}

/// Builds a complete file from raw payloads: framing, section CRCs, footer.
/// `header.file_size` is replaced by the real size.
pub fn assemble(header: Header, payloads: [&[u8]; 3]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    for (section, payload) in Section::ALL.into_iter().zip(payloads) {
        let start = out.len();
        out.extend_from_slice(&section.tag().to_le_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(payload);
        let crc = crc32fast::hash(out.get(start..).unwrap_or_default());
        out.extend_from_slice(&crc.to_le_bytes());
    }
    let size = (out.len() + FOOTER_LEN) as u64;
    let head = Header {
        file_size: size,
        ..header
    }
    .encode();
    if let Some(h) = out.get_mut(..HEADER_LEN) {
        h.copy_from_slice(&head);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out
}

/// Payload ranges of the three sections, following the framing; `None` if the
/// framing is broken.
pub fn payload_ranges(bytes: &[u8]) -> Option<[Range<usize>; 3]> {
    let mut pos = HEADER_LEN;
    let mut out: Vec<Range<usize>> = Vec::new();
    for _ in Section::ALL {
        let len_bytes = bytes.get(pos + 4..pos + SECTION_PREFIX_LEN)?;
        let len = usize::try_from(u64::from_le_bytes(len_bytes.try_into().ok()?)).ok()?;
        let start = pos + SECTION_PREFIX_LEN;
        let end = start.checked_add(len)?;
        // checked: a length just short of usize::MAX overflowed here (found
        // by the `snapshot_reader` fuzz target)
        let crc_end = end.checked_add(SECTION_CRC_LEN)?;
        bytes.get(start..crc_end)?;
        out.push(start..end);
        pos = crc_end;
    }
    out.try_into().ok()
}

/// Recomputes the CRC of the section whose payload is `payload` (a range from
/// `payload_ranges`).
pub fn fix_section_crc(bytes: &mut [u8], payload: Range<usize>) -> Option<()> {
    let start = payload.start.checked_sub(SECTION_PREFIX_LEN)?;
    let crc = crc32fast::hash(bytes.get(start..payload.end)?);
    bytes
        .get_mut(payload.end..payload.end + SECTION_CRC_LEN)?
        .copy_from_slice(&crc.to_le_bytes());
    Some(())
}

/// Recomputes every section CRC (when the framing can be followed) and the file CRC.
pub fn fix_all_crcs(bytes: &mut [u8]) {
    if let Some(ranges) = payload_ranges(bytes) {
        for r in ranges {
            let _ = fix_section_crc(bytes, r);
        }
    }
    fix_file_crc(bytes);
}

/// Recomputes the footer's file CRC over everything before the footer.
pub fn fix_file_crc(bytes: &mut [u8]) {
    let Some(body_end) = bytes.len().checked_sub(FOOTER_LEN) else {
        return;
    };
    let crc = crc32fast::hash(bytes.get(..body_end).unwrap_or_default());
    if let Some(f) = bytes.get_mut(body_end..body_end + 4) {
        f.copy_from_slice(&crc.to_le_bytes());
    }
}

/// Rewrites the header of an encoded file (for count and flag variants);
/// CRCs are left as they are.
pub fn edit_header(bytes: &mut [u8], edit: impl FnOnce(&mut Header)) {
    let Some(head) = bytes.get_mut(..HEADER_LEN) else {
        return;
    };
    let mut buf = [0u8; HEADER_LEN];
    buf.copy_from_slice(head);
    let mut h = Header::decode(&buf);
    edit(&mut h);
    head.copy_from_slice(&h.encode());
}
