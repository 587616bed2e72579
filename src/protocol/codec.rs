//! Bytes <-> request lines. Recoverable problems (overlong line, invalid UTF-8)
//! are items, not decoder errors, because `FramedRead` ends the stream after an
//! `Err` (tokio-rs/tokio#4166).
//!
//! Framing: a line ends at `\n`; one `\r` before it is dropped. A line's size is
//! its bytes without that ending (`\n` or `\r\n`), so a client's line ending
//! does not change what fits; a line of exactly `max_request_bytes` is allowed.
//! An overlong line is reported as soon as the buffer holds more than the
//! limit and an ending without a newline, so at most `limit + 2` bytes of it
//! are ever examined; after that the codec swallows all further
//! input, because the caller closes the connection. The scan position is kept
//! between calls, so a long line arriving in small reads costs O(n) in total.
//! No actix here.

use bytes::{Buf, Bytes, BytesMut};

use super::parse::is_separator;
use super::response::{expected_shape, Shape};

/// Default for [`LineCodec::max_batch`].
pub const DEFAULT_MAX_BATCH: usize = 1024;

/// Room a connection's next socket read gets at first, and again after a
/// quiet spell: enough for a whole batch of short lines.
pub const MIN_READ_BYTES: usize = 64 * 1024;

/// The most room a read gets. A client that keeps filling the room it is
/// given (pipelining faster than it is answered) has it doubled up to this,
/// so its long lines (a VECSET of 128 values is ~1 KB) still travel ~256 to a
/// batch and a batch costs one message to the store, not four.
pub const MAX_READ_BYTES: usize = 256 * 1024;

/// Reads in a row that leave room unused before a grown buffer is given
/// back (only when it holds no partial line).
pub const SHRINK_AFTER_READS: u32 = 16;

/// One framed request line, or why it could not be one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A complete line without its `\n` / `\r\n`; may be empty.
    Text(String),
    /// The line's bytes are not UTF-8; the connection stays open. `shape` is
    /// the reply's shape for the command word the line starts with (an error
    /// of a block command is a block).
    InvalidUtf8 {
        /// Shape of the reply.
        shape: Shape,
    },
    /// The line exceeded `max_request_bytes`; the connection must be closed after the reply.
    TooLarge {
        /// The configured `api.max_request_bytes`.
        limit: usize,
    },
}

/// `Line::InvalidUtf8` for `bytes`, with the shape of the reply to its
/// command word (its first token, read with invalid bytes replaced; only
/// that token is decoded, however long the line).
fn invalid_utf8(bytes: &[u8]) -> Line {
    let word = bytes
        .split(|&b| is_separator(b))
        .find(|w| !w.is_empty())
        .unwrap_or_default();
    Line::InvalidUtf8 {
        shape: expected_shape(&String::from_utf8_lossy(word)),
    }
}

/// Decoder that yields every complete line buffered so far as one batch
/// (at most `max_batch` lines), so pipelined requests are handled together.
/// As an encoder it appends already rendered reply bytes.
pub struct LineCodec {
    /// Longest allowed line, in bytes before the `\n`.
    pub max_request_bytes: usize,
    /// Most lines in one batch; 0 is treated as 1.
    pub max_batch: usize,
    /// Bytes of the current (unterminated) line at the buffer's start already
    /// known to hold no `\n`.
    scanned: usize,
    /// Set after `TooLarge` was yielded: all further input is dropped.
    discarding: bool,
    /// Room the next read gets (`MIN_READ_BYTES..=MAX_READ_BYTES`).
    read_bytes: usize,
    /// Reads in a row that left room unused, while `read_bytes` is grown.
    quiet_reads: u32,
}

impl LineCodec {
    /// A codec with the given line limit and a batch of [`DEFAULT_MAX_BATCH`].
    pub fn new(max_request_bytes: usize) -> Self {
        LineCodec {
            max_request_bytes,
            max_batch: DEFAULT_MAX_BATCH,
            scanned: 0,
            discarding: false,
            read_bytes: MIN_READ_BYTES,
            quiet_reads: 0,
        }
    }

    /// Sizes `src` for the next socket read, once every complete line of
    /// the last one is taken. A read that filled the buffer (`len ==
    /// capacity`) doubles the room of the next, up to `MAX_READ_BYTES`;
    /// after `SHRINK_AFTER_READS` reads that did not, an empty buffer goes
    /// back to `MIN_READ_BYTES`. A line longer than the room still grows the
    /// buffer as it arrives (`FramedRead` reserves more), up to
    /// `max_request_bytes`.
    fn prepare_read(&mut self, src: &mut BytesMut) {
        if src.len() == src.capacity() {
            self.quiet_reads = 0;
            self.read_bytes = (self.read_bytes * 2).min(MAX_READ_BYTES);
        } else if src.capacity() > MIN_READ_BYTES || self.read_bytes > MIN_READ_BYTES {
            self.quiet_reads = self.quiet_reads.saturating_add(1);
            if self.quiet_reads >= SHRINK_AFTER_READS && src.is_empty() {
                self.quiet_reads = 0;
                self.read_bytes = MIN_READ_BYTES;
                *src = BytesMut::with_capacity(MIN_READ_BYTES);
            }
        }
        // Room for `read_bytes` in all, the partial line at the start
        // included: kept in place, or moved to the front of the buffer.
        src.reserve(self.read_bytes.saturating_sub(src.len()));
    }

    /// The next item from the start of `src`, or `None` when no complete line
    /// (and no overlong one) is buffered.
    fn next_line(&mut self, src: &mut BytesMut) -> Option<Line> {
        let limit = self.max_request_bytes;
        // A `\n` at index `limit + 1` still ends an allowed line (after a
        // `\r`); past it, none can.
        let window = src.len().min(limit.saturating_add(2));
        let start = self.scanned.min(window);
        let found = src
            .get(start..window)
            .and_then(|w| memchr::memchr(b'\n', w))
            .map(|p| start + p);
        let cr_at = |i: usize| src.get(i) == Some(&b'\r');
        let overlong = match found {
            Some(end) => end > limit && !(end == limit + 1 && cr_at(limit)),
            None => src.len() > limit.saturating_add(1) || (src.len() > limit && !cr_at(limit)),
        };
        match found {
            _ if overlong => {
                self.discarding = true;
                self.scanned = 0;
                src.clear();
                Some(Line::TooLarge { limit })
            }
            Some(end) => {
                self.scanned = 0;
                let mut bytes = src.split_to(end);
                src.advance(1); // the '\n'
                if bytes.last() == Some(&b'\r') {
                    bytes.truncate(end.saturating_sub(1));
                }
                Some(match std::str::from_utf8(&bytes) {
                    Ok(text) => Line::Text(text.to_owned()),
                    Err(_) => invalid_utf8(&bytes),
                })
            }
            None => {
                self.scanned = window;
                None
            }
        }
    }
}

impl tokio_util::codec::Decoder for LineCodec {
    type Item = Vec<Line>;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        if self.discarding {
            src.clear();
            return Ok(None);
        }
        let max_batch = self.max_batch.max(1);
        let mut batch = Vec::new();
        while batch.len() < max_batch {
            match self.next_line(src) {
                Some(line) => {
                    let last = matches!(line, Line::TooLarge { .. });
                    batch.push(line);
                    if last {
                        break;
                    }
                }
                None => break,
            }
        }
        if batch.is_empty() {
            self.prepare_read(src);
            return Ok(None);
        }
        Ok(Some(batch))
    }

    /// Complete lines still buffered are returned; a final unterminated line
    /// is dropped (a request must end in `\n`), never an error.
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        match self.decode(src)? {
            Some(batch) => Ok(Some(batch)),
            None => {
                src.clear();
                self.scanned = 0;
                Ok(None)
            }
        }
    }
}

impl tokio_util::codec::Encoder<Bytes> for LineCodec {
    type Error = std::io::Error;

    /// Appends rendered reply bytes unchanged.
    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), Self::Error> {
        dst.extend_from_slice(&item);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::codec::{Decoder, Encoder};

    fn text(s: &str) -> Line {
        Line::Text(s.to_owned())
    }

    fn buf(bytes: &[u8]) -> BytesMut {
        BytesMut::from(bytes)
    }

    #[test]
    fn pipelined_lines_come_out_as_one_batch() {
        let mut codec = LineCodec::new(1024);
        let mut src = buf(b"PING\nINFO\nSIM a 1\npart");
        let batch = codec.decode(&mut src).unwrap().unwrap();
        assert_eq!(batch, vec![text("PING"), text("INFO"), text("SIM a 1")]);
        assert_eq!(&src[..], b"part");
        assert_eq!(codec.decode(&mut src).unwrap(), None);
    }

    #[test]
    fn a_line_split_across_reads_is_joined() {
        let mut codec = LineCodec::new(1024);
        let mut src = buf(b"EVENT u A");
        assert_eq!(codec.decode(&mut src).unwrap(), None);
        src.extend_from_slice(b"DD i 5\r");
        assert_eq!(codec.decode(&mut src).unwrap(), None);
        src.extend_from_slice(b"\nPI");
        assert_eq!(
            codec.decode(&mut src).unwrap(),
            Some(vec![text("EVENT u ADD i 5")])
        );
        src.extend_from_slice(b"NG\n");
        assert_eq!(codec.decode(&mut src).unwrap(), Some(vec![text("PING")]));
        assert!(src.is_empty());
    }

    #[test]
    fn crlf_and_lf_endings_are_both_removed() {
        let mut codec = LineCodec::new(1024);
        let mut src = buf(b"PING\r\nQUIT\n\r\n\n");
        assert_eq!(
            codec.decode(&mut src).unwrap(),
            Some(vec![text("PING"), text("QUIT"), text(""), text("")])
        );
    }

    #[test]
    fn only_one_trailing_carriage_return_is_removed() {
        let mut codec = LineCodec::new(1024);
        let mut src = buf(b"a\r\r\nb\rc\n");
        assert_eq!(
            codec.decode(&mut src).unwrap(),
            Some(vec![text("a\r"), text("b\rc")])
        );
    }

    #[test]
    fn invalid_utf8_in_the_middle_of_a_batch_is_one_item() {
        let mut codec = LineCodec::new(1024);
        let mut src = buf(b"PING\nbad \xff\xfe line\nINFO\n");
        assert_eq!(
            codec.decode(&mut src).unwrap(),
            Some(vec![
                text("PING"),
                Line::InvalidUtf8 { shape: Shape::Line },
                text("INFO")
            ])
        );
        // The shape follows the first token, after any spaces or tabs.
        let mut src = buf(b" \tdump VERIFY \xff.nvec\n\xff\n");
        assert_eq!(
            codec.decode(&mut src).unwrap(),
            Some(vec![
                Line::InvalidUtf8 { shape: Shape::Block },
                Line::InvalidUtf8 { shape: Shape::Line }
            ])
        );
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_allowed() {
        let mut codec = LineCodec::new(8);
        let mut src = buf(b"12345678\n");
        assert_eq!(codec.decode(&mut src).unwrap(), Some(vec![text("12345678")]));
        // The line ending does not count toward the limit.
        let mut src = buf(b"12345678\r\n");
        assert_eq!(codec.decode(&mut src).unwrap(), Some(vec![text("12345678")]));
        // Nor does a `\r` that has not had its `\n` yet.
        let mut src = buf(b"12345678\r");
        assert_eq!(codec.decode(&mut src).unwrap(), None);
        src.extend_from_slice(b"\n");
        assert_eq!(codec.decode(&mut src).unwrap(), Some(vec![text("12345678")]));
        // A full unterminated line of exactly the limit is still waiting.
        let mut src = buf(b"12345678");
        assert_eq!(codec.decode(&mut src).unwrap(), None);
        src.extend_from_slice(b"\n");
        assert_eq!(codec.decode(&mut src).unwrap(), Some(vec![text("12345678")]));
    }

    #[test]
    fn an_overlong_line_with_newline_ends_the_batch_and_later_input_is_dropped() {
        let mut codec = LineCodec::new(8);
        let mut src = buf(b"PING\n123456789\nPING\n");
        assert_eq!(
            codec.decode(&mut src).unwrap(),
            Some(vec![text("PING"), Line::TooLarge { limit: 8 }])
        );
        assert!(src.is_empty());
        src.extend_from_slice(b"PING\n");
        assert_eq!(codec.decode(&mut src).unwrap(), None);
        assert!(src.is_empty());
        assert_eq!(codec.decode_eof(&mut src).unwrap(), None);
    }

    #[test]
    fn an_overlong_line_without_newline_is_reported_once_the_limit_is_passed() {
        let mut codec = LineCodec::new(8);
        let mut src = buf(b"1234");
        assert_eq!(codec.decode(&mut src).unwrap(), None);
        src.extend_from_slice(b"5678");
        assert_eq!(codec.decode(&mut src).unwrap(), None);
        src.extend_from_slice(b"9");
        assert_eq!(
            codec.decode(&mut src).unwrap(),
            Some(vec![Line::TooLarge { limit: 8 }])
        );
        assert!(src.is_empty());
    }

    #[test]
    fn an_overlong_line_is_found_without_scanning_past_the_limit() {
        let mut codec = LineCodec::new(4);
        // The newline far beyond the limit is never looked for.
        let mut src = buf(b"ok\n0123456789\n");
        assert_eq!(
            codec.decode(&mut src).unwrap(),
            Some(vec![text("ok"), Line::TooLarge { limit: 4 }])
        );
    }

    #[test]
    fn batches_hold_at_most_max_batch_lines() {
        let mut codec = LineCodec::new(1024);
        codec.max_batch = 2;
        let mut src = buf(b"a\nb\nc\n");
        assert_eq!(codec.decode(&mut src).unwrap(), Some(vec![text("a"), text("b")]));
        assert_eq!(codec.decode(&mut src).unwrap(), Some(vec![text("c")]));
        assert_eq!(codec.decode(&mut src).unwrap(), None);
    }

    #[test]
    fn new_uses_the_default_batch_size() {
        let codec = LineCodec::new(16);
        assert_eq!(codec.max_batch, DEFAULT_MAX_BATCH);
        assert_eq!(codec.max_request_bytes, 16);
    }

    #[test]
    fn decode_eof_returns_complete_lines_and_drops_the_partial_one() {
        let mut codec = LineCodec::new(1024);
        let mut src = buf(b"PING\nINFO\nunterminated");
        assert_eq!(
            codec.decode_eof(&mut src).unwrap(),
            Some(vec![text("PING"), text("INFO")])
        );
        assert_eq!(codec.decode_eof(&mut src).unwrap(), None);
        assert!(src.is_empty());
    }

    #[test]
    fn scan_offset_resets_after_a_partial_line_is_completed() {
        let mut codec = LineCodec::new(1024);
        let mut src = buf(b"abcdef");
        assert_eq!(codec.decode(&mut src).unwrap(), None);
        src.extend_from_slice(b"\nx\n");
        assert_eq!(
            codec.decode(&mut src).unwrap(),
            Some(vec![text("abcdef"), text("x")])
        );
    }

    #[test]
    fn encoder_appends_bytes() {
        let mut codec = LineCodec::new(16);
        let mut dst = BytesMut::from(&b"OK\r\n"[..]);
        codec
            .encode(Bytes::from_static(b"OK PONG\r\n"), &mut dst)
            .unwrap();
        assert_eq!(&dst[..], b"OK\r\nOK PONG\r\n");
    }

    /// Splits `input` into lines the obvious way, as the codec should.
    fn model(input: &[u8], limit: usize) -> Vec<Line> {
        let mut out = Vec::new();
        let mut rest = input;
        loop {
            match rest.iter().position(|&b| b == b'\n') {
                Some(p) => {
                    let mut line = &rest[..p];
                    if line.last() == Some(&b'\r') {
                        line = &line[..p - 1];
                    }
                    if line.len() > limit {
                        out.push(Line::TooLarge { limit });
                        return out;
                    }
                    out.push(match std::str::from_utf8(line) {
                        Ok(t) => text(t),
                        Err(_) => invalid_utf8(line),
                    });
                    rest = &rest[p + 1..];
                }
                // Longer than the limit even if a `\r\n` came next.
                None if rest.len() > limit + 1 || (rest.len() > limit && rest[limit] != b'\r') => {
                    out.push(Line::TooLarge { limit });
                    return out;
                }
                None => return out,
            }
        }
    }

    #[test]
    fn any_chunking_of_random_input_matches_the_simple_model() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize
        };
        let alphabet = b"ab \t\r\n\n\xff";
        for _ in 0..500 {
            let limit = 1 + next() % 12;
            let len = next() % 80;
            let input: Vec<u8> = (0..len).map(|_| alphabet[next() % alphabet.len()]).collect();
            let mut codec = LineCodec::new(limit);
            codec.max_batch = 1 + next() % 4;
            let mut src = BytesMut::new();
            let mut got = Vec::new();
            let mut pos = 0;
            while pos < input.len() {
                let step = (1 + next() % 9).min(input.len() - pos);
                src.extend_from_slice(&input[pos..pos + step]);
                pos += step;
                while let Some(batch) = codec.decode(&mut src).unwrap() {
                    assert!(batch.len() <= codec.max_batch);
                    got.extend(batch);
                }
                assert!(src.len() <= limit + 9, "buffered {} bytes", src.len());
            }
            while let Some(batch) = codec.decode_eof(&mut src).unwrap() {
                got.extend(batch);
            }
            assert_eq!(got, model(&input, limit), "input {input:?} limit {limit}");
        }
    }

    /// What a client pipelines: lines `L<i> xxx...` of about 1 KB (a VECSET
    /// of 128 values is about as long).
    fn kilobyte_lines(count: usize) -> Vec<u8> {
        let mut bytes = Vec::new();
        for i in 0..count {
            bytes.extend_from_slice(format!("L{i} ").as_bytes());
            bytes.extend(std::iter::repeat_n(b'x', 1000));
            bytes.push(b'\n');
        }
        bytes
    }

    /// Appends the next `n` bytes of `stream` at `pos` (one socket read,
    /// which may end inside a line) and takes every line the codec yields.
    fn read_and_decode(
        codec: &mut LineCodec,
        src: &mut BytesMut,
        stream: &[u8],
        pos: &mut usize,
        n: usize,
        got: &mut Vec<Line>,
    ) {
        src.extend_from_slice(&stream[*pos..*pos + n]);
        *pos += n;
        while let Some(batch) = codec.decode(src).unwrap() {
            got.extend(batch);
        }
    }

    #[test]
    fn a_read_that_fills_the_buffer_doubles_the_next_reads_room_up_to_the_maximum() {
        let stream = kilobyte_lines(4000);
        let (mut pos, mut got) = (0, Vec::new());
        let mut codec = LineCodec::new(1 << 20);
        let mut src = BytesMut::with_capacity(MIN_READ_BYTES);
        let mut room = MIN_READ_BYTES;
        for _ in 0..6 {
            // A client pipelining faster than it is answered: every read
            // takes all the room it is given.
            let fill = src.capacity() - src.len();
            assert!(src.capacity() >= room, "{} < {room}", src.capacity());
            read_and_decode(&mut codec, &mut src, &stream, &mut pos, fill, &mut got);
            room = (room * 2).min(MAX_READ_BYTES);
            assert!(src.capacity() >= room, "{} < {room}", src.capacity());
            assert!(src.capacity() <= 2 * MAX_READ_BYTES, "{}", src.capacity());
        }
        assert_eq!(codec.read_bytes, MAX_READ_BYTES);
        // Reads that leave room unused: the grown buffer is given back once
        // it holds no partial line after `SHRINK_AFTER_READS` of them.
        for _ in 0..SHRINK_AFTER_READS - 1 {
            read_and_decode(&mut codec, &mut src, &stream, &mut pos, 10_000, &mut got);
            assert!(src.capacity() >= MAX_READ_BYTES);
        }
        let to_end_of_line = stream[pos..].iter().position(|&b| b == b'\n').unwrap() + 1;
        read_and_decode(&mut codec, &mut src, &stream, &mut pos, to_end_of_line, &mut got);
        assert!(src.is_empty());
        assert_eq!(src.capacity(), MIN_READ_BYTES);
        assert_eq!(codec.read_bytes, MIN_READ_BYTES);
        // Every line came out whole and in order.
        assert_eq!(got, model(&stream[..pos], 1 << 20));
        assert!(got.len() > 1000, "{}", got.len());
    }

    #[test]
    fn reads_that_fill_the_buffer_or_not_match_the_simple_model() {
        let mut random = crate::protocol::parse::tests::xorshift(0x2545_F491_4F6C_DD1D);
        let mut next = move || random() as usize;
        let (mut grown, mut shrunk) = (false, false);
        for round in 0..12 {
            // Lines of 0..3000 bytes, ~2 MB in all; a few are invalid
            // UTF-8 (whose items carry no text, so most must be valid for
            // the comparison to see every byte).
            let mut input = Vec::new();
            while input.len() < 2_000_000 {
                let len = next() % 3000;
                let invalid = next() % 50 == 0;
                input.extend((0..len).map(|i| match next() % 8 {
                    _ if invalid && i == len / 2 => 0xff,
                    k => b"abcxyz \r"[k],
                }));
                input.push(b'\n');
            }
            let limit = if round % 3 == 0 {
                1000 + next() % 2000
            } else {
                1 << 20
            };
            let mut codec = LineCodec::new(limit);
            let mut src = BytesMut::with_capacity(MIN_READ_BYTES);
            let (mut pos, mut got) = (0, Vec::new());
            // Spells of reads that take all the room they are given (a
            // client that keeps the buffer full) and spells of slow reads:
            // a few bytes, or the rest of the current line.
            let quiet_spell = 12 + round % 8;
            let mut reads = 0;
            while pos < input.len() {
                let room = src.capacity() - src.len();
                let filling = reads % (2 + quiet_spell) < 2;
                reads += 1;
                let want = match next() % 8 {
                    k if filling && k > 0 => room.max(1),
                    k if k % 2 == 0 => 1 + next() % 5000,
                    _ => input[pos..].iter().position(|&b| b == b'\n').map_or(1, |p| p + 1),
                };
                let n = want.min(input.len() - pos);
                read_and_decode(&mut codec, &mut src, &input, &mut pos, n, &mut got);
                assert!(
                    src.capacity() <= 2 * MAX_READ_BYTES + 2 * limit,
                    "{}",
                    src.capacity()
                );
                grown |= codec.read_bytes == MAX_READ_BYTES;
                shrunk |= grown && src.capacity() == MIN_READ_BYTES;
                if matches!(got.last(), Some(Line::TooLarge { .. })) {
                    break;
                }
            }
            assert_eq!(got, model(&input[..pos], limit), "round {round}");
        }
        assert!(grown && shrunk, "grown {grown} shrunk {shrunk}");
    }

    #[test]
    fn a_huge_limit_does_not_overflow() {
        let mut codec = LineCodec::new(usize::MAX);
        let mut src = buf(b"PING\npartial");
        assert_eq!(codec.decode(&mut src).unwrap(), Some(vec![text("PING")]));
        assert_eq!(codec.decode(&mut src).unwrap(), None);
    }
}
