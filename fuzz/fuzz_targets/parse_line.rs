//! The protocol line parser, fed the way the server feeds it.
//!
//! The input bytes go through the real `LineCodec` (in two reads, split in
//! the middle), whose lines must match a plain reference framing (split at
//! `\n`, one trailing `\r` dropped, a line over the limit ends the stream,
//! invalid UTF-8 reported, an unterminated last line dropped). Each text line,
//! and the whole input taken as (lossy) UTF-8, goes to `parse_line`, which
//! must not panic and must keep its promises: `None` only for blank lines;
//! parsed values within their documented ranges (a VECSET's values bit for
//! bit what `str::parse::<f32>` reads from each token); an error rendered through
//! `Response::parse_error` in exactly the shape `expected_shape` promises,
//! one `(error)` line or an `(error)` line and `END`, with no stray CR or LF.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use nvecd::protocol::command::DumpCommand;
use nvecd::protocol::{expected_shape, parse_line, Command, Line, LineCodec, Response, Shape};
use nvecd::store::EventKind;
use tokio_util::codec::Decoder;

/// Small, so overlong lines are reached too (the server's minimum is 64).
const LIMIT: usize = 200;

fn reference_lines(data: &[u8]) -> Vec<Line> {
    let mut out = Vec::new();
    let mut rest = data;
    loop {
        match rest.iter().position(|&b| b == b'\n') {
            Some(end) => {
                if end > LIMIT {
                    out.push(Line::TooLarge { limit: LIMIT });
                    return out;
                }
                let mut line = &rest[..end];
                if line.last() == Some(&b'\r') {
                    line = &line[..line.len() - 1];
                }
                out.push(match std::str::from_utf8(line) {
                    Ok(s) => Line::Text(s.to_owned()),
                    Err(_) => Line::InvalidUtf8 {
                        shape: expected_shape(&String::from_utf8_lossy(line)),
                    },
                });
                rest = &rest[end + 1..];
            }
            None => {
                if rest.len() > LIMIT {
                    out.push(Line::TooLarge { limit: LIMIT });
                }
                return out;
            }
        }
    }
}

fn codec_lines(data: &[u8]) -> Vec<Line> {
    let mut codec = LineCodec::new(LIMIT);
    codec.max_batch = 3;
    let mut out = Vec::new();
    let (first, second) = data.split_at(data.len() / 2);
    let mut buf = BytesMut::new();
    for chunk in [first, second] {
        buf.extend_from_slice(chunk);
        while let Some(batch) = codec.decode(&mut buf).expect("decode never fails") {
            assert!(!batch.is_empty() && batch.len() <= 3);
            out.extend(batch);
        }
    }
    while let Some(batch) = codec.decode_eof(&mut buf).expect("decode_eof never fails") {
        out.extend(batch);
    }
    out
}

fn check_command(line: &str, cmd: &Command) {
    let _ = format!("{cmd:?}");
    let _ = cmd.needs_auth();
    let no_space = |s: &str| !s.is_empty() && !s.contains([' ', '\t']);
    match cmd {
        Command::Event(e) => {
            assert!(e.score <= 100);
            assert!(e.kind != EventKind::Del || e.score == 0);
            assert!(no_space(&e.ctx) && no_space(&e.id));
        }
        Command::VecSet { id, values } => {
            assert!(no_space(id));
            assert!(!values.is_empty() && values.iter().all(|v| v.is_finite()));
            // each value, fast path or not, is what the standard parser reads
            let tokens = line.split([' ', '\t']).filter(|t| !t.is_empty()).skip(2);
            assert_eq!(tokens.clone().count(), values.len());
            for (t, v) in tokens.zip(values) {
                assert_eq!(t.parse::<f32>().ok().map(f32::to_bits), Some(v.to_bits()), "{t:?}");
            }
        }
        Command::VecDel { id } => assert!(no_space(id)),
        Command::Sim(s) => {
            assert!(no_space(&s.id) && s.top_k >= 1);
            assert!(s.min_score.is_none_or(f32::is_finite));
        }
        Command::SimV(s) => {
            assert!(s.top_k >= 1);
            assert!(s.min_score.is_none_or(f32::is_finite));
            assert!(!s.values.is_empty() && s.values.iter().all(|v| v.is_finite()));
        }
        Command::Dump(DumpCommand::Save { path: Some(p) })
        | Command::Dump(DumpCommand::Load { path: p })
        | Command::Dump(DumpCommand::Verify { path: p })
        | Command::Dump(DumpCommand::Info { path: p }) => assert!(no_space(p)),
        Command::Auth { password } => assert!(no_space(password)),
        Command::ConfigShow { section: Some(s) } => assert!(no_space(s)),
        _ => {}
    }
    // Pure: the same line parses the same way again.
    assert_eq!(parse_line(line), Some(Ok(cmd.clone())));
}

fn check_error_reply(line: &str, reply: &Response) {
    let bytes = reply.to_bytes();
    let text = String::from_utf8(bytes).expect("a reply to a UTF-8 line is UTF-8");
    let body = text.strip_suffix("\r\n").expect("a reply ends in CRLF");
    let lines: Vec<&str> = body.split("\r\n").collect();
    for l in &lines {
        assert!(!l.contains(['\r', '\n']), "stray CR or LF in {l:?}");
    }
    let first = lines.first().expect("one line at least");
    assert!(first.starts_with("(error) "), "{first:?}");
    match expected_shape(line) {
        Shape::Line | Shape::Results => assert_eq!(lines.len(), 1, "{text:?}"),
        Shape::Block => assert_eq!(lines[1..], ["END"], "{text:?}"),
    }
}

fn check_line(line: &str) {
    match parse_line(line) {
        None => assert!(
            line.split([' ', '\t']).all(str::is_empty),
            "None for a non-blank line"
        ),
        Some(Ok(cmd)) => check_command(line, &cmd),
        Some(Err(e)) => {
            let _ = format!("{e:?}");
            for max in [1, 1000, usize::MAX] {
                let e = e.clone().with_max_top_k(max);
                check_error_reply(line, &Response::parse_error(line, &e));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let lines = codec_lines(data);
    assert_eq!(
        lines,
        reference_lines(data),
        "codec framing differs from the reference"
    );
    for line in &lines {
        if let Line::Text(t) = line {
            assert!(t.len() <= LIMIT && !t.contains('\n'));
            check_line(t);
        }
    }
    check_line(&String::from_utf8_lossy(data));
});
