//! Snapshot format version 1: constants, the header, and the section framing.
//!
//! This module is the code form of `docs/snapshot-format.md`; the two must agree
//! byte for byte. All integers are little-endian. Offsets are derived from field
//! sizes below, never written as literals.
//!
//! ```text
//! offset  size  field
//! ------  ----  ------------------------------------------------------------
//!  0       4    magic            b"NVEC"
//!  4       4    version          u32 = 1
//!  8       4    flags            u32 = 0 (unknown bits are refused)
//! 12       4    event_count      u32: stored events over all contexts
//! 16       4    vector_count     u32: vectors
//! 20       4    pair_count       u32: unordered co-occurrence pairs
//! 24       8    created_at       i64: Unix seconds, UTC
//! 32       8    file_size        u64: whole file, header and footer included
//! 40            three sections, in this order: events (1), co_occurrence (2),
//!               vectors (3); each one is
//!                 4   tag          u32
//!                 8   payload_len  u64
//!                 n   payload      (bincode 1, default options; see below)
//!                 4   section CRC  u32 CRC32 (IEEE) of tag + payload_len + payload
//! end-8    4    file CRC         u32 CRC32 (IEEE) of every byte before the footer
//! end-4    4    reserved         u32 = 0
//! ```
//!
//! Payloads (a string is `u64` length + UTF-8 bytes):
//! - events: `u64` contexts; per context `ctx` string, `u64` n, n events oldest
//!   first: `id` string, `score` i32 (0..=100), `timestamp` u64 (Unix ms),
//!   `kind` u8 (0 ADD, 1 SET, 2 DEL). Contexts sorted by name (byte order).
//! - co_occurrence: `u64` n, n × (`a` string, `b` string, `score` f32) with
//!   `a < b`, sorted by `(a, b)`.
//! - vectors: `u32` dimension (0 when empty), `u64` n, n × (`id` string,
//!   `u64` len = dimension, len × f32), sorted by id.

/// The first four bytes of every snapshot file.
pub const MAGIC: [u8; 4] = *b"NVEC";
/// The only format version this code reads and writes.
pub const VERSION: u32 = 1;

const MAGIC_LEN: usize = MAGIC.len();
const U32_LEN: usize = std::mem::size_of::<u32>();
const U64_LEN: usize = std::mem::size_of::<u64>();
const I64_LEN: usize = std::mem::size_of::<i64>();

/// Offset of `magic`. Each offset below is the previous one plus its field's size.
pub const OFF_MAGIC: usize = 0;
/// Offset of `version`.
pub const OFF_VERSION: usize = OFF_MAGIC + MAGIC_LEN;
/// Offset of `flags`.
pub const OFF_FLAGS: usize = OFF_VERSION + U32_LEN;
/// Offset of `event_count`.
pub const OFF_EVENT_COUNT: usize = OFF_FLAGS + U32_LEN;
/// Offset of `vector_count`.
pub const OFF_VECTOR_COUNT: usize = OFF_EVENT_COUNT + U32_LEN;
/// Offset of `pair_count`.
pub const OFF_PAIR_COUNT: usize = OFF_VECTOR_COUNT + U32_LEN;
/// Offset of `created_at`.
pub const OFF_CREATED_AT: usize = OFF_PAIR_COUNT + U32_LEN;
/// Offset of `file_size`.
pub const OFF_FILE_SIZE: usize = OFF_CREATED_AT + I64_LEN;
/// Length of the header: 40 bytes.
pub const HEADER_LEN: usize = OFF_FILE_SIZE + U64_LEN;

/// Size of a section's tag.
pub const SECTION_TAG_LEN: usize = U32_LEN;
/// Size of a section's payload length.
pub const SECTION_LEN_LEN: usize = U64_LEN;
/// Bytes before a section's payload (tag + payload_len).
pub const SECTION_PREFIX_LEN: usize = SECTION_TAG_LEN + SECTION_LEN_LEN;
/// Size of a section's CRC.
pub const SECTION_CRC_LEN: usize = U32_LEN;
/// Framing bytes around each payload.
pub const SECTION_OVERHEAD: usize = SECTION_PREFIX_LEN + SECTION_CRC_LEN;

/// Size of the footer's file CRC.
pub const FOOTER_CRC_LEN: usize = U32_LEN;
/// Size of the footer's reserved word (must be 0).
pub const FOOTER_RESERVED_LEN: usize = U32_LEN;
/// Length of the footer: 8 bytes.
pub const FOOTER_LEN: usize = FOOTER_CRC_LEN + FOOTER_RESERVED_LEN;

/// Size of a string's length prefix.
pub const STRING_LEN_LEN: usize = U64_LEN;
/// Smallest encoded non-empty string.
pub const MIN_STRING_LEN: usize = STRING_LEN_LEN + 1;
/// Smallest encoded event: id, score i32, timestamp u64, kind u8.
pub const MIN_EVENT_LEN: usize = MIN_STRING_LEN + U32_LEN + U64_LEN + 1;
/// Smallest encoded context: name and event count.
pub const MIN_CONTEXT_LEN: usize = MIN_STRING_LEN + U64_LEN;
/// Smallest encoded pair: two ids and a score.
pub const MIN_PAIR_LEN: usize = 2 * MIN_STRING_LEN + U32_LEN;
/// Bytes of one vector record besides its values: id and length.
pub const MIN_VECTOR_LEN: usize = MIN_STRING_LEN + U64_LEN;
/// Fixed start of the events payload: `u64` context count.
pub const EVENTS_HEAD_LEN: usize = U64_LEN;
/// Fixed start of the co_occurrence payload: `u64` pair count.
pub const PAIRS_HEAD_LEN: usize = U64_LEN;
/// Fixed start of the vectors payload: `u32` dimension, `u64` count.
pub const VECTORS_HEAD_LEN: usize = U32_LEN + U64_LEN;

/// Smallest valid file: header, three empty sections, footer.
pub const MIN_FILE_LEN: usize =
    HEADER_LEN + 3 * SECTION_OVERHEAD + EVENTS_HEAD_LEN + PAIRS_HEAD_LEN + VECTORS_HEAD_LEN + FOOTER_LEN;

/// Highest valid event score.
pub const MAX_SCORE: i32 = 100;

const _: () = assert!(HEADER_LEN == 40);
const _: () = assert!(FOOTER_LEN == 8);
const _: () = assert!(SECTION_OVERHEAD == 16);

/// The three sections, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Tag 1.
    Events = 1,
    /// Tag 2.
    CoOccurrence = 2,
    /// Tag 3.
    Vectors = 3,
}

impl Section {
    /// Every section in the order it appears in the file.
    pub const ALL: [Section; 3] = [Section::Events, Section::CoOccurrence, Section::Vectors];

    /// The on-disk tag.
    pub fn tag(self) -> u32 {
        self as u32
    }

    /// The name used in error messages (`CRC mismatch in <name> section`).
    pub fn name(self) -> &'static str {
        match self {
            Section::Events => "events",
            Section::CoOccurrence => "co_occurrence",
            Section::Vectors => "vectors",
        }
    }
}

/// The 40-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Format version; 1.
    pub version: u32,
    /// No flag is defined; readers refuse any set bit.
    pub flags: u32,
    /// Stored events over all contexts.
    pub event_count: u32,
    /// Vectors.
    pub vector_count: u32,
    /// Unordered co-occurrence pairs.
    pub pair_count: u32,
    /// Unix seconds, UTC.
    pub created_at: i64,
    /// Length of the whole file, header and footer included.
    pub file_size: u64,
}

/// Copies `N` bytes at `off` out of the header buffer. The offsets are
/// compile-time constants inside `HEADER_LEN`, so the `get` never fails; the
/// fallback only keeps this free of panicking indexing.
fn field<const N: usize>(buf: &[u8; HEADER_LEN], off: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = buf.get(off..off + N) {
        out.copy_from_slice(src);
    }
    out
}

fn put(buf: &mut [u8; HEADER_LEN], off: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(off..off + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

impl Header {
    /// The on-disk form.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut buf = [0u8; HEADER_LEN];
        put(&mut buf, OFF_MAGIC, &MAGIC);
        put(&mut buf, OFF_VERSION, &self.version.to_le_bytes());
        put(&mut buf, OFF_FLAGS, &self.flags.to_le_bytes());
        put(&mut buf, OFF_EVENT_COUNT, &self.event_count.to_le_bytes());
        put(&mut buf, OFF_VECTOR_COUNT, &self.vector_count.to_le_bytes());
        put(&mut buf, OFF_PAIR_COUNT, &self.pair_count.to_le_bytes());
        put(&mut buf, OFF_CREATED_AT, &self.created_at.to_le_bytes());
        put(&mut buf, OFF_FILE_SIZE, &self.file_size.to_le_bytes());
        buf
    }

    /// Reads every field; checks nothing (the reader checks magic, version,
    /// size and flags in the order SPEC 4.2 fixes).
    pub fn decode(buf: &[u8; HEADER_LEN]) -> Header {
        Header {
            version: u32::from_le_bytes(field(buf, OFF_VERSION)),
            flags: u32::from_le_bytes(field(buf, OFF_FLAGS)),
            event_count: u32::from_le_bytes(field(buf, OFF_EVENT_COUNT)),
            vector_count: u32::from_le_bytes(field(buf, OFF_VECTOR_COUNT)),
            pair_count: u32::from_le_bytes(field(buf, OFF_PAIR_COUNT)),
            created_at: i64::from_le_bytes(field(buf, OFF_CREATED_AT)),
            file_size: u64::from_le_bytes(field(buf, OFF_FILE_SIZE)),
        }
    }

    /// The magic bytes of an encoded header.
    pub fn magic_of(buf: &[u8; HEADER_LEN]) -> [u8; 4] {
        field(buf, OFF_MAGIC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            version: VERSION,
            flags: 0,
            event_count: 0x0102_0304,
            vector_count: 5,
            pair_count: 6,
            created_at: 1_700_000_000,
            file_size: 0x1122_3344_5566_7788,
        }
    }

    #[test]
    fn header_round_trips() {
        let h = sample();
        assert_eq!(Header::decode(&h.encode()), h);
    }

    #[test]
    fn header_layout_is_little_endian_at_fixed_offsets() {
        let b = sample().encode();
        assert_eq!(&b[0..4], b"NVEC");
        assert_eq!(&b[4..8], &[1, 0, 0, 0]);
        assert_eq!(&b[8..12], &[0, 0, 0, 0]);
        assert_eq!(&b[12..16], &[4, 3, 2, 1]);
        assert_eq!(&b[16..20], &[5, 0, 0, 0]);
        assert_eq!(&b[20..24], &[6, 0, 0, 0]);
        assert_eq!(&b[24..32], &1_700_000_000i64.to_le_bytes());
        assert_eq!(&b[32..40], &[0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
    }

    #[test]
    fn derived_sizes_match_the_spec() {
        assert_eq!(HEADER_LEN, 40);
        assert_eq!(FOOTER_LEN, 8);
        assert_eq!(MIN_FILE_LEN, 40 + 48 + 8 + 8 + 12 + 8);
        assert_eq!(MIN_EVENT_LEN, 22);
        assert_eq!(MIN_PAIR_LEN, 22);
        assert_eq!(
            Section::ALL.map(|s| (s.tag(), s.name())),
            [(1, "events"), (2, "co_occurrence"), (3, "vectors")]
        );
    }
}
