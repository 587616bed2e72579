//! `Response` -> bytes. The only code that writes `OK` or `(error)` on the wire.
//!
//! Every rendered line ends in `\r\n`. Text that came from a request (an id, a
//! path, an unknown word) could hold a stray `\r` or `\n`; `render` writes those
//! as spaces so a reply never has more lines than its shape says.
//!
//! [`expected_shape`] is the rule a client (and the test harness) uses to know
//! where a reply ends, so it never has to rely on a read timeout.
// PUBLIC API CONTRACT — actors build these values.

use std::fmt::Display;

use super::parse::{tokenize, ParseError};

/// A reply in one of the three shapes of SPEC section 2.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// `OK` alone.
    Ok,
    /// `OK <text>`.
    OkText(String),
    /// `(error) <message>`: a line-shaped error (also the error form of SIM/SIMV).
    Error(String),
    /// `OK RESULTS <n>` then `<id> <score>` lines, score with 4 decimals.
    Results(Vec<(std::sync::Arc<str>, f32)>),
    /// A block: first line (already `OK ...` or `(error) ...` without CRLF),
    /// `key: value` lines, then `END`.
    Block {
        /// The first line.
        head: BlockHead,
        /// `key: value` lines, in order.
        fields: Vec<(String, String)>,
    },
}

/// The first line of a block reply.
#[derive(Debug, Clone, PartialEq)]
pub enum BlockHead {
    /// Rendered as `OK <text>`.
    Ok(String),
    /// Rendered as `(error) <message>`.
    Error(String),
}

/// How a client knows where a reply ends (SPEC section 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One line.
    Line,
    /// `OK RESULTS <n>` and `n` more lines, or one `(error)` line.
    Results,
    /// Lines up to and including `END`.
    Block,
}

/// The reply shape of a request line, decided by its command word alone
/// (case-insensitive): SIM and SIMV give [`Shape::Results`]; INFO, CONFIG and
/// DUMP give [`Shape::Block`], whatever follows (their errors are blocks too);
/// everything else, unknown words included, gives [`Shape::Line`]. An empty
/// line gets no reply at all; this returns [`Shape::Line`] for it, so callers
/// must skip empty lines themselves.
pub fn expected_shape(request_line: &str) -> Shape {
    match tokenize(request_line).next() {
        Some(w) if w.eq_ignore_ascii_case("SIM") || w.eq_ignore_ascii_case("SIMV") => Shape::Results,
        Some(w)
            if w.eq_ignore_ascii_case("INFO")
                || w.eq_ignore_ascii_case("CONFIG")
                || w.eq_ignore_ascii_case("DUMP") =>
        {
            Shape::Block
        }
        _ => Shape::Line,
    }
}

impl Response {
    /// `(error) <err>`, a line-shaped error.
    pub fn error(err: impl Display) -> Response {
        Response::Error(err.to_string())
    }

    /// `OK <text>`.
    pub fn ok_text(text: impl Into<String>) -> Response {
        Response::OkText(text.into())
    }

    /// A block whose first line is `OK <head>`.
    pub fn block_ok(head: impl Into<String>, fields: Vec<(String, String)>) -> Response {
        Response::Block {
            head: BlockHead::Ok(head.into()),
            fields,
        }
    }

    /// A block whose first line is `(error) <msg>`.
    pub fn block_error(msg: impl Display, fields: Vec<(String, String)>) -> Response {
        Response::Block {
            head: BlockHead::Error(msg.to_string()),
            fields,
        }
    }

    /// The reply to a request line that failed to parse, in the shape its
    /// command word promises ([`expected_shape`]): a field-less error block for
    /// INFO, CONFIG and DUMP, an `(error)` line otherwise. Apply
    /// [`ParseError::with_max_top_k`] first.
    pub fn parse_error(request_line: &str, err: &ParseError) -> Response {
        Response::error_in(expected_shape(request_line), err)
    }

    /// `err` in the reply shape `shape`: a field-less error block for a block
    /// command, an `(error)` line otherwise (SPEC 2: errors of block commands
    /// are blocks).
    pub fn error_in(shape: Shape, err: impl Display) -> Response {
        match shape {
            Shape::Block => Response::block_error(err, Vec::new()),
            Shape::Line | Shape::Results => Response::error(err),
        }
    }

    /// Appends the reply's bytes, every line ending in `\r\n`.
    pub fn render(&self, out: &mut Vec<u8>) {
        match self {
            Response::Ok => out.extend_from_slice(b"OK\r\n"),
            Response::OkText(text) => line(out, "OK ", text),
            Response::Error(msg) => line(out, "(error) ", msg),
            Response::Results(rows) => {
                line(out, "OK RESULTS ", &rows.len().to_string());
                for (id, score) in rows {
                    push_clean(out, id);
                    let text = format!(" {score:.4}\r\n");
                    // A score that rounds to zero from below prints as 0.0000.
                    let text = text
                        .strip_prefix(" -0.0000")
                        .map_or(text.as_str(), |_| " 0.0000\r\n");
                    out.extend_from_slice(text.as_bytes());
                }
            }
            Response::Block { head, fields } => {
                match head {
                    BlockHead::Ok(text) => line(out, "OK ", text),
                    BlockHead::Error(msg) => line(out, "(error) ", msg),
                }
                for (key, value) in fields {
                    push_clean(out, key);
                    out.extend_from_slice(b": ");
                    push_clean(out, value);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"END\r\n");
            }
        }
    }

    /// The rendered bytes as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.render(&mut out);
        out
    }
}

/// `<prefix><text>\r\n`.
fn line(out: &mut Vec<u8>, prefix: &str, text: &str) {
    out.extend_from_slice(prefix.as_bytes());
    push_clean(out, text);
    out.extend_from_slice(b"\r\n");
}

/// Appends `text` with `\r` and `\n` written as spaces, keeping the framing.
fn push_clean(out: &mut Vec<u8>, text: &str) {
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn rendered(r: &Response) -> String {
        String::from_utf8(r.to_bytes()).unwrap()
    }

    #[test]
    fn ok_renders_as_a_bare_ok_line() {
        assert_eq!(rendered(&Response::Ok), "OK\r\n");
    }

    #[test]
    fn ok_text_renders_after_ok_and_a_space() {
        assert_eq!(rendered(&Response::ok_text("PONG")), "OK PONG\r\n");
        assert_eq!(rendered(&Response::OkText("PONG".into())), "OK PONG\r\n");
    }

    #[test]
    fn error_renders_with_the_error_prefix() {
        assert_eq!(
            rendered(&Response::error(ParseError::InvalidArgumentCount)),
            "(error) Invalid argument count\r\n"
        );
        assert_eq!(
            rendered(&Response::Error("Item not found: x".into())),
            "(error) Item not found: x\r\n"
        );
    }

    #[test]
    fn results_render_count_then_rows_with_four_decimals() {
        let r = Response::Results(vec![
            (Arc::from("b"), 1.0),
            (Arc::from("a"), 0.123456),
            (Arc::from("c"), -0.5),
        ]);
        assert_eq!(
            rendered(&r),
            "OK RESULTS 3\r\nb 1.0000\r\na 0.1235\r\nc -0.5000\r\n"
        );
        assert_eq!(rendered(&Response::Results(Vec::new())), "OK RESULTS 0\r\n");
        let r = Response::Results(vec![
            (Arc::from("a"), -0.00001),
            (Arc::from("b"), -0.0),
            (Arc::from("c"), -0.00006),
        ]);
        assert_eq!(
            rendered(&r),
            "OK RESULTS 3\r\na 0.0000\r\nb 0.0000\r\nc -0.0001\r\n"
        );
    }

    #[test]
    fn ok_block_renders_head_fields_and_end() {
        let r = Response::block_ok(
            "Snapshot saved: /d/x.nvec",
            vec![
                ("event_store_contexts".into(), "2".into()),
                ("size".into(), "100 bytes".into()),
            ],
        );
        assert_eq!(
            rendered(&r),
            "OK Snapshot saved: /d/x.nvec\r\nevent_store_contexts: 2\r\nsize: 100 bytes\r\nEND\r\n"
        );
    }

    #[test]
    fn error_block_renders_error_head_fields_and_end() {
        let r = Response::block_error(
            "CRC mismatch: file may be corrupted",
            vec![
                ("expected".into(), "0x0000ABCD".into()),
                ("actual".into(), "0x12345678".into()),
            ],
        );
        assert_eq!(
            rendered(&r),
            "(error) CRC mismatch: file may be corrupted\r\nexpected: 0x0000ABCD\r\nactual: 0x12345678\r\nEND\r\n"
        );
        assert_eq!(
            rendered(&Response::block_error("File not found: a", Vec::new())),
            "(error) File not found: a\r\nEND\r\n"
        );
    }

    #[test]
    fn render_appends_to_the_buffer() {
        let mut out = b"OK\r\n".to_vec();
        Response::Ok.render(&mut out);
        assert_eq!(out, b"OK\r\nOK\r\n");
    }

    #[test]
    fn line_breaks_inside_texts_are_written_as_spaces() {
        assert_eq!(
            rendered(&Response::error("Unknown command: A\rB\nC")),
            "(error) Unknown command: A B C\r\n"
        );
        let r = Response::Results(vec![(Arc::from("x\r\ny"), 0.5)]);
        assert_eq!(rendered(&r), "OK RESULTS 1\r\nx  y 0.5000\r\n");
    }

    #[test]
    fn shape_is_decided_by_the_command_word() {
        assert_eq!(expected_shape("SIM a 1"), Shape::Results);
        assert_eq!(expected_shape("simv 1 2"), Shape::Results);
        assert_eq!(expected_shape("INFO"), Shape::Block);
        assert_eq!(expected_shape(" config show"), Shape::Block);
        assert_eq!(expected_shape("\tDump bogus"), Shape::Block);
        assert_eq!(expected_shape("PING"), Shape::Line);
        assert_eq!(expected_shape("EVENT u ADD i 1"), Shape::Line);
        assert_eq!(expected_shape("nonsense"), Shape::Line);
        assert_eq!(expected_shape(""), Shape::Line);
    }

    #[test]
    fn parse_errors_of_block_commands_are_blocks() {
        let e = ParseError::InvalidArgumentCount;
        assert_eq!(
            rendered(&Response::parse_error("DUMP LOAD", &e)),
            "(error) Invalid argument count\r\nEND\r\n"
        );
        assert_eq!(
            rendered(&Response::parse_error("SIM a", &e)),
            "(error) Invalid argument count\r\n"
        );
        assert_eq!(
            rendered(&Response::parse_error("PING x", &e)),
            "(error) Invalid argument count\r\n"
        );
    }
}
