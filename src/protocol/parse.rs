//! `&str -> Result<Command, ParseError>`; pure, no I/O, no allocation beyond
//! what the line itself bounds.
//!
//! The input is one request line with its line ending already removed by the
//! codec. Tokens are separated by runs of spaces or tabs. Command words,
//! subcommand words, option keys and mode values are ASCII case-insensitive;
//! ids, contexts, paths, passwords and config sections are kept as typed.
//!
//! Decisions where SPEC section 3 is silent (each error text is exact):
//! - `EVENT` with fewer than two tokens (no type) gets
//!   `EVENT requires arguments: <ctx> <ADD|SET|DEL> <id> [<score>]`.
//! - `SIM`: options follow `top_k` in any order; a repeated option: the last
//!   wins; a `min_score` that is not a finite number gets
//!   `Invalid min_score: must be a number`; an unknown option or any other
//!   extra token gets `Invalid option: <token>`.
//! - `SIMV`: `min_score=` is recognised only right after `top_k`; anywhere
//!   else it is a vector value and so `Invalid vector format`.
//! - `top_k` that is not an integer in `1..=usize::MAX` gets
//!   [`ParseError::InvalidTopK`]; the parser does not know the configured
//!   maximum, so the caller fills it in with [`ParseError::with_max_top_k`].
//! - `CONFIG` alone gets `Invalid argument count`; `CONFIG <other>` gets
//!   `Unknown CONFIG subcommand: <other>`.
//! - `DUMP` alone gets `Invalid argument count`; `DUMP <other>` gets
//!   `Unknown DUMP subcommand: <other>`.
//!
//! Checks run in this order: argument structure (counts), then each value
//! from left to right; the first failure is the answer.

use super::command::{Command, DumpCommand, EventArgs, SimArgs, SimVArgs};
use crate::store::{EventKind, SimMode};

/// Why a request line is not a valid command. `Display` is exactly the text
/// that follows `(error) ` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The first word is not a command; carries the word as typed.
    #[error("Unknown command: {0}")]
    UnknownCommand(String),
    /// `EVENT` without a type (fewer than two tokens after the word).
    #[error("EVENT requires arguments: <ctx> <ADD|SET|DEL> <id> [<score>]")]
    EventMissingArguments,
    /// The EVENT type is not ADD, SET or DEL; carries it as typed.
    #[error("Invalid EVENT type: {0} (must be ADD, SET, or DEL)")]
    InvalidEventType(String),
    /// Wrong number of tokens for the EVENT type `kind`.
    #[error("{}", event_usage(*kind))]
    EventArgumentCount {
        /// The (valid) type that was given.
        kind: EventKind,
    },
    /// The EVENT score is not an integer in 0..=100.
    #[error("Invalid score: must be integer 0-100")]
    InvalidScore,
    /// Missing or surplus arguments.
    #[error("Invalid argument count")]
    InvalidArgumentCount,
    /// A vector value is not a finite `f32`.
    #[error("Invalid vector format")]
    InvalidVectorFormat,
    /// `top_k` is not a positive integer. `parse_line` sets `max` to
    /// `usize::MAX`; use [`ParseError::with_max_top_k`] before showing it.
    #[error("Invalid top_k: must be > 0 and <= {max}")]
    InvalidTopK {
        /// The configured `similarity.max_top_k`.
        max: usize,
    },
    /// `using=` is not events, vectors or fusion.
    #[error("Invalid mode: must be events, vectors, or fusion")]
    InvalidMode,
    /// `min_score=` is not a finite number.
    #[error("Invalid min_score: must be a number")]
    InvalidMinScore,
    /// An unknown SIM option or extra token; carries the token.
    #[error("Invalid option: {0}")]
    InvalidOption(String),
    /// `CONFIG <word>` where `<word>` is not SHOW.
    #[error("Unknown CONFIG subcommand: {0}")]
    UnknownConfigSubcommand(String),
    /// `DUMP <word>` where `<word>` is not SAVE, LOAD, VERIFY, INFO or STATUS.
    #[error("Unknown DUMP subcommand: {0}")]
    UnknownDumpSubcommand(String),
}

impl ParseError {
    /// Fills in the configured `similarity.max_top_k` of an
    /// [`ParseError::InvalidTopK`]; every other error is returned unchanged.
    pub fn with_max_top_k(self, max: usize) -> ParseError {
        match self {
            ParseError::InvalidTopK { .. } => ParseError::InvalidTopK { max },
            other => other,
        }
    }
}

/// Characters of a client's word that an error line repeats.
pub const ECHO_CHARS: usize = 128;

/// A word from the request as an error line repeats it: at most
/// [`ECHO_CHARS`] characters, then `…` if it was longer (as Redis cuts the
/// name in its unknown-command error), so a 16 MiB token is not sent back.
pub fn echoed(word: &str) -> String {
    match word.char_indices().nth(ECHO_CHARS) {
        Some((cut, _)) => format!("{}…", word.get(..cut).unwrap_or(word)),
        None => word.to_owned(),
    }
}

fn event_usage(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Add => "EVENT ADD requires 4 arguments: <ctx> ADD <id> <score>",
        EventKind::Set => "EVENT SET requires 4 arguments: <ctx> SET <id> <score>",
        EventKind::Del => "EVENT DEL requires 3 arguments: <ctx> DEL <id>",
    }
}

/// Parses one request line (without its line ending). `None` for an empty or
/// whitespace-only line, which the server ignores.
pub fn parse_line(line: &str) -> Option<Result<Command, ParseError>> {
    let mut tokens = tokenize(line);
    let word = tokens.next()?;
    // The two commands that carry a vector read its values straight from
    // the line; the others take a list of their few tokens.
    if is(word, "VECSET") {
        return Some(parse_vecset(tokens));
    }
    if is(word, "SIMV") {
        return Some(parse_simv(tokens).map(Command::SimV));
    }
    let mut args: Vec<&str> = Vec::with_capacity(8);
    args.extend(tokens);
    Some(parse_command(word, &args))
}

/// Splits on runs of spaces and tabs; no quoting.
pub(crate) fn tokenize(line: &str) -> Tokens<'_> {
    Tokens { line, at: 0 }
}

/// The tokens of a line. It looks at bytes, not chars: both separators are
/// ASCII, so every token starts and ends on a char boundary.
#[derive(Clone)]
pub(crate) struct Tokens<'a> {
    line: &'a str,
    at: usize,
}

/// A byte that separates tokens: a space or a tab.
pub(crate) fn is_separator(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let (start, token) = self.skip_separators()?;
        let len = token.iter().position(|&b| is_separator(b)).unwrap_or(token.len());
        self.at = start + len;
        self.line.get(start..start + len)
    }
}

impl Tokens<'_> {
    /// The next token as a finite `f32` (`Some(None)` when it is not one).
    /// A plain decimal is read in the same pass that finds the token's end;
    /// anything else goes to `parse_finite`.
    fn next_finite(&mut self) -> Option<Option<f32>> {
        let (start, token) = self.skip_separators()?;
        let (value, len) = scan_plain(token);
        self.at = start + len;
        Some(value.or_else(|| self.line.get(start..start + len).and_then(general_finite)))
    }

    /// Moves to the next token: its offset, and the bytes from there to the
    /// end of the line. `None` at the end.
    fn skip_separators(&mut self) -> Option<(usize, &[u8])> {
        let bytes = self.line.as_bytes();
        let start = self.at + bytes.get(self.at..)?.iter().position(|&b| !is_separator(b))?;
        self.at = start;
        Some((start, bytes.get(start..)?))
    }

    /// Bytes not read yet.
    fn rest_len(&self) -> usize {
        self.line.len().saturating_sub(self.at)
    }
}

fn is(word: &str, keyword: &str) -> bool {
    word.eq_ignore_ascii_case(keyword)
}

fn parse_command(word: &str, args: &[&str]) -> Result<Command, ParseError> {
    if is(word, "PING") {
        no_args(args, Command::Ping)
    } else if is(word, "QUIT") {
        no_args(args, Command::Quit)
    } else if is(word, "INFO") {
        no_args(args, Command::Info)
    } else if is(word, "AUTH") {
        match args {
            [password] => Ok(Command::Auth {
                password: (*password).to_owned(),
            }),
            _ => Err(ParseError::InvalidArgumentCount),
        }
    } else if is(word, "CONFIG") {
        parse_config(args)
    } else if is(word, "EVENT") {
        parse_event(args).map(Command::Event)
    } else if is(word, "VECDEL") {
        match args {
            [id] => Ok(Command::VecDel { id: (*id).to_owned() }),
            _ => Err(ParseError::InvalidArgumentCount),
        }
    } else if is(word, "SIM") {
        parse_sim(args).map(Command::Sim)
    } else if is(word, "DUMP") {
        parse_dump(args).map(Command::Dump)
    } else {
        Err(ParseError::UnknownCommand(echoed(word)))
    }
}

/// `VECSET <id> <f1> ... <fN>`: the bulk command, so its values are read
/// straight from the line, without a list of tokens.
fn parse_vecset(mut tokens: Tokens<'_>) -> Result<Command, ParseError> {
    let id = tokens.next().ok_or(ParseError::InvalidArgumentCount)?;
    let values = read_values(tokens)?;
    if values.is_empty() {
        return Err(ParseError::InvalidArgumentCount);
    }
    Ok(Command::VecSet {
        id: id.to_owned(),
        values,
    })
}

fn no_args(args: &[&str], command: Command) -> Result<Command, ParseError> {
    if args.is_empty() {
        Ok(command)
    } else {
        Err(ParseError::InvalidArgumentCount)
    }
}

/// `CONFIG SHOW [section]`.
fn parse_config(args: &[&str]) -> Result<Command, ParseError> {
    let (sub, rest) = match args {
        [sub, rest @ ..] => (*sub, rest),
        [] => return Err(ParseError::InvalidArgumentCount),
    };
    if !is(sub, "SHOW") {
        return Err(ParseError::UnknownConfigSubcommand(echoed(sub)));
    }
    match rest {
        [] => Ok(Command::ConfigShow { section: None }),
        [section] => Ok(Command::ConfigShow {
            section: Some((*section).to_owned()),
        }),
        _ => Err(ParseError::InvalidArgumentCount),
    }
}

/// `EVENT <ctx> ADD|SET <id> <score>` or `EVENT <ctx> DEL <id>`.
fn parse_event(args: &[&str]) -> Result<EventArgs, ParseError> {
    let (ctx, kind_word, rest) = match args {
        [ctx, kind, rest @ ..] => (*ctx, *kind, rest),
        _ => return Err(ParseError::EventMissingArguments),
    };
    let kind = if is(kind_word, "ADD") {
        EventKind::Add
    } else if is(kind_word, "SET") {
        EventKind::Set
    } else if is(kind_word, "DEL") {
        EventKind::Del
    } else {
        return Err(ParseError::InvalidEventType(echoed(kind_word)));
    };
    let (id, score) = match (kind, rest) {
        (EventKind::Add | EventKind::Set, [id, score]) => (*id, parse_score(score)?),
        (EventKind::Del, [id]) => (*id, 0),
        _ => return Err(ParseError::EventArgumentCount { kind }),
    };
    Ok(EventArgs {
        ctx: ctx.to_owned(),
        kind,
        id: id.to_owned(),
        score,
    })
}

/// Decimal digits only (no sign), value 0..=100; leading zeros are fine.
fn parse_score(s: &str) -> Result<u8, ParseError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::InvalidScore);
    }
    match s.parse::<u8>() {
        Ok(v) if v <= 100 => Ok(v),
        _ => Err(ParseError::InvalidScore),
    }
}

/// A positive integer (decimal digits only); `usize` overflow is invalid too.
fn parse_top_k(s: &str) -> Result<usize, ParseError> {
    let invalid = ParseError::InvalidTopK { max: usize::MAX };
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid);
    }
    match s.parse::<usize>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(invalid),
    }
}

/// A finite `f32`; `NaN`, `inf` and values that overflow to infinity (`1e39`) are not.
fn parse_finite(s: &str) -> Option<f32> {
    fast_f32(s).or_else(|| general_finite(s))
}

/// `parse_finite` without the fast path (for a token it has refused).
fn general_finite(s: &str) -> Option<f32> {
    s.parse::<f32>().ok().filter(|v| v.is_finite())
}

/// Powers of ten exactly representable in `f32` (5^10 < 2^24).
const POW10_F32: [f32; 11] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];

/// How close, in `f64` steps, the `f64` route of `fast_f32` may come to a
/// point halfway between two `f32`s (its error is at most 2 steps).
const HALFWAY_MARGIN: u64 = 8;

/// Powers of ten exactly representable in `f64` (5^22 < 2^53), as many as a
/// plain decimal's 19 digits can need.
const POW10_F64: [f64; 20] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18,
    1e19,
];

/// The common case of VECSET and SIMV, `[+-]digits[.digits]` with at most 19
/// digits, without the general parser. With a mantissa `m < 2^24` and `10^k`
/// (k ≤ 10), both exact in `f32`, the one IEEE division `m / 10^k` is
/// correctly rounded — the same value `str::parse::<f32>` returns (Clinger's
/// fast path). Otherwise the division is done in `f64` and rounded to
/// `f32`. The `f64` result is within 2 of its steps of the exact value (one
/// rounding of `m`, exact below 2^53, and one of the division), so unless
/// it lies within `HALFWAY_MARGIN` steps of a point halfway between two
/// `f32`s (every such point is an `f64`), the exact value lies on the same
/// side of every such point and rounds to the same `f32`. Those near a
/// halfway point, and anything else (exponents, more digits, `inf`, `nan`),
/// are `None` and go to the general parser.
pub(crate) fn fast_f32(s: &str) -> Option<f32> {
    match scan_plain(s.as_bytes()) {
        (value, len) if len == s.len() => value,
        _ => None,
    }
}

/// Reads the decimal digits from `b[*i]` on into `m` (wrapping), moving `i`
/// past them; returns how many there were.
#[inline(always)]
fn digits(b: &[u8], i: &mut usize, m: &mut u64) -> usize {
    let from = *i;
    while let Some(d) = b.get(*i).map(|c| c.wrapping_sub(b'0')).filter(|&d| d < 10) {
        *m = m.wrapping_mul(10).wrapping_add(u64::from(d));
        *i += 1;
    }
    *i - from
}

/// `digits` for up to 8 digits at once, when 8 bytes follow `b[*i]`
/// (otherwise reads none and returns 0).
#[inline(always)]
fn eight_digits_at(b: &[u8], i: &mut usize, m: &mut u64) -> usize {
    let Some(w) = b.get(*i..*i + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) else {
        return 0;
    };
    let (value, n) = eight_digits(u64::from_le_bytes(w));
    if let Some(&scale) = POW10_U64.get(n) {
        *m = m.wrapping_mul(scale).wrapping_add(value);
        *i += n;
    }
    n
}

/// `10^n` for the digit counts `eight_digits` returns.
const POW10_U64: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// The decimal digits at the start of 8 bytes (little-endian `w`, the first
/// byte lowest): their value and how many there are (0..=8).
#[inline]
fn eight_digits(w: u64) -> (u64, usize) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x80 * ONES;
    // Per byte, in its high bit: at least '0', above '9', or not ASCII.
    // Each byte's arithmetic stays inside the byte (no carry or borrow).
    let low = w & !HIGH;
    let at_least_0 = (low | HIGH).wrapping_sub(0x30 * ONES) & HIGH;
    let above_9 = low.wrapping_add(0x46 * ONES) & HIGH;
    let not_digit = (!at_least_0 | above_9 | w) & HIGH;
    let n = (not_digit.trailing_zeros() / 8) as usize;
    if n == 0 {
        return (0, 0);
    }
    // The n digits moved to the top bytes, zeros (leading) below them.
    let mut v = w.wrapping_sub(0x30 * ONES) << (8 * (8 - n));
    // Pairs, then fours, then all eight (the first byte the most significant).
    v = (v & 0x0f0f_0f0f_0f0f_0f0f).wrapping_mul(10 * 256 + 1) >> 8;
    v = (v & 0x00ff_00ff_00ff_00ff).wrapping_mul(100 * 65536 + 1) >> 16;
    v = (v & 0x0000_ffff_0000_ffff).wrapping_mul(10_000 * (1 << 32) + 1) >> 32;
    (v, n)
}

/// Reads the token at the start of `b` (up to a space, a tab or the end):
/// its value when it is a decimal `fast_f32` takes, and its length.
fn scan_plain(b: &[u8]) -> (Option<f32>, usize) {
    let (neg, start) = match b.first() {
        Some(b'-') => (true, 1),
        Some(b'+') => (false, 1),
        _ => (false, 0),
    };
    // Digits before and after the point go into `m`, a tight loop each
    // (after the point, up to 8 at once first). More than 19 digits could
    // overflow it (wrapping, then refused below): those go to the general
    // parser.
    let mut m: u64 = 0;
    let mut i = start;
    let whole = digits(b, &mut i, &mut m);
    let fraction = if b.get(i) == Some(&b'.') {
        i += 1;
        let n = eight_digits_at(b, &mut i, &mut m);
        // 8 digits may be followed by more; fewer end at a non-digit
        n + if n == 8 || n == 0 {
            digits(b, &mut i, &mut m)
        } else {
            0
        }
    } else {
        0
    };
    if b.get(i).is_some_and(|&c| !is_separator(c)) {
        // something else in the token: the general parser decides
        let len = b
            .iter()
            .skip(i)
            .position(|&c| is_separator(c))
            .map_or(b.len(), |n| i + n);
        return (None, len);
    }
    let count = whole + fraction;
    if count == 0 || count > 19 {
        return (None, i);
    }
    let v = match (POW10_F32.get(fraction), POW10_F64.get(fraction)) {
        (Some(&scale), _) if m < 1 << 24 => m as f32 / scale,
        (_, Some(&scale)) => {
            let wide = m as f64 / scale;
            // Its distance, in f64 steps, from the nearest point halfway
            // between two f32s: the low 29 of its 52 fraction bits against
            // 1000...0 (`wide` is 0 or a normal f32 here, 1e-19 or more).
            let off = (wide.to_bits() & ((1 << 29) - 1)).abs_diff(1 << 28);
            if off <= HALFWAY_MARGIN {
                return (None, i);
            }
            wide as f32
        }
        _ => return (None, i),
    };
    (Some(if neg { -v } else { v }), i)
}

/// The rest of the line as a vector's values, each read in the pass that
/// finds its token's end. No values is `Ok` (empty); the first token that is
/// not a finite number is `InvalidVectorFormat`.
fn read_values(mut tokens: Tokens<'_>) -> Result<Vec<f32>, ParseError> {
    // a value and its separator take at least two bytes
    let mut values = Vec::with_capacity((tokens.rest_len() / 2).min(4096));
    while let Some(value) = tokens.next_finite() {
        values.push(value.ok_or(ParseError::InvalidVectorFormat)?);
    }
    Ok(values)
}

fn parse_mode(s: &str) -> Result<SimMode, ParseError> {
    if is(s, "events") {
        Ok(SimMode::Events)
    } else if is(s, "vectors") {
        Ok(SimMode::Vectors)
    } else if is(s, "fusion") {
        Ok(SimMode::Fusion)
    } else {
        Err(ParseError::InvalidMode)
    }
}

fn parse_min_score(s: &str) -> Result<f32, ParseError> {
    parse_finite(s).ok_or(ParseError::InvalidMinScore)
}

/// `Some(value)` when `token` is `min_score=<value>` (key case-insensitive).
fn min_score_option(token: &str) -> Option<&str> {
    match token.split_once('=') {
        Some((key, value)) if is(key, "min_score") => Some(value),
        _ => None,
    }
}

/// `SIM <id> <top_k> [using=events|vectors|fusion] [min_score=<f>]`.
fn parse_sim(args: &[&str]) -> Result<SimArgs, ParseError> {
    let (id, top_k, options) = match args {
        [id, top_k, options @ ..] => (*id, *top_k, options),
        _ => return Err(ParseError::InvalidArgumentCount),
    };
    let top_k = parse_top_k(top_k)?;
    let mut mode = SimMode::Fusion;
    let mut min_score = None;
    for token in options {
        match token.split_once('=') {
            Some((key, value)) if is(key, "using") => mode = parse_mode(value)?,
            Some((key, value)) if is(key, "min_score") => min_score = Some(parse_min_score(value)?),
            _ => return Err(ParseError::InvalidOption(echoed(token))),
        }
    }
    Ok(SimArgs {
        id: id.to_owned(),
        top_k,
        mode,
        min_score,
    })
}

/// `SIMV <top_k> [min_score=<f>] <f1> ... <fN>`. A missing part is checked
/// first, then top_k, min_score and the values, in that order.
fn parse_simv(mut tokens: Tokens<'_>) -> Result<SimVArgs, ParseError> {
    let top_k = tokens.next().ok_or(ParseError::InvalidArgumentCount)?;
    let mut ahead = tokens.clone();
    let min_score = ahead.next().and_then(min_score_option);
    if min_score.is_some() {
        tokens = ahead;
    }
    // an invalid value is a value: only an empty list is a missing part
    let values = read_values(tokens);
    if matches!(&values, Ok(v) if v.is_empty()) {
        return Err(ParseError::InvalidArgumentCount);
    }
    let top_k = parse_top_k(top_k)?;
    let min_score = min_score.map(parse_min_score).transpose()?;
    Ok(SimVArgs {
        top_k,
        min_score,
        values: values?,
    })
}

/// `DUMP SAVE [path]`, `DUMP LOAD|VERIFY|INFO <path>`, `DUMP STATUS`.
fn parse_dump(args: &[&str]) -> Result<DumpCommand, ParseError> {
    let (sub, rest) = match args {
        [sub, rest @ ..] => (*sub, rest),
        [] => return Err(ParseError::InvalidArgumentCount),
    };
    let one_path = |rest: &[&str]| match rest {
        [path] => Ok((*path).to_owned()),
        _ => Err(ParseError::InvalidArgumentCount),
    };
    if is(sub, "SAVE") {
        match rest {
            [] => Ok(DumpCommand::Save { path: None }),
            [path] => Ok(DumpCommand::Save {
                path: Some((*path).to_owned()),
            }),
            _ => Err(ParseError::InvalidArgumentCount),
        }
    } else if is(sub, "LOAD") {
        Ok(DumpCommand::Load {
            path: one_path(rest)?,
        })
    } else if is(sub, "VERIFY") {
        Ok(DumpCommand::Verify {
            path: one_path(rest)?,
        })
    } else if is(sub, "INFO") {
        Ok(DumpCommand::Info {
            path: one_path(rest)?,
        })
    } else if is(sub, "STATUS") {
        if rest.is_empty() {
            Ok(DumpCommand::Status)
        } else {
            Err(ParseError::InvalidArgumentCount)
        }
    } else {
        Err(ParseError::UnknownDumpSubcommand(echoed(sub)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A xorshift generator: the randomized tests' inputs, the same each run.
    pub(crate) fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    /// The fast path returns bit for bit what `str::parse::<f32>` returns, and
    /// declines what it cannot do exactly.
    #[test]
    fn fast_f32_agrees_with_the_standard_parser() {
        let fixed = [
            "0",
            "-0",
            "+0",
            "0.0",
            "-0.0",
            "1",
            "-1",
            "+1.5",
            "1.",
            ".5",
            "-.5",
            "16777215",
            "16777216",
            "1677721.5",
            "0.1",
            "0.2",
            "0.3",
            "-0.123456",
            "0.0000001",
            "0.00000000001",
            "9999999",
            "3.4028235",
            "00000000000001",
            "1.0000000",
            "0.99999994",
            "123.4567",
        ];
        let mut next = xorshift(0x9E37_79B9_7F4A_7C15);
        let mut cases: Vec<String> = fixed.iter().map(|s| s.to_string()).collect();
        for _ in 0..200_000 {
            let x = next();
            let digits = (x % 19) as usize + 1;
            let m = next() % 10u64.pow(digits as u32);
            let point = ((x >> 40) % (digits as u64 + 2)) as usize;
            let mut s = format!("{m:0digits$}");
            if point <= digits {
                s.insert(point, '.');
            }
            if x & (1 << 63) != 0 {
                s.insert(0, '-');
            }
            cases.push(s);
        }
        // Decimals near the point halfway between two f32s, where rounding
        // first to f64 can go wrong; some are refused (checked below).
        let mut near_halfway = Vec::new();
        for _ in 0..20_000 {
            let x = next();
            // a normal f32 between about 1e-3 and 1e3, and the one after it
            let lo = f32::from_bits((117 + (x % 20) as u32) << 23 | (x >> 20) as u32 & 0x7f_ffff);
            let mid = (f64::from(lo) + f64::from(f32::from_bits(lo.to_bits() + 1))) / 2.0;
            let decimals = 10 + (x >> 50) as usize % 10;
            near_halfway.push(format!("{mid:.decimals$}"));
        }
        // Both routes taken: some refused, a good part read by the fast path
        // (and compared with the standard parser below).
        let refused = near_halfway.iter().filter(|s| fast_f32(s).is_none()).count();
        assert!(
            refused > 0 && refused < near_halfway.len() * 3 / 4,
            "{refused} of {} refused",
            near_halfway.len()
        );
        cases.extend(near_halfway);
        for bad in [
            "", "-", "+", ".", "-.", "1.2.3", "1e5", "inf", "nan", "1,5", "--1", "0x1",
        ] {
            assert_eq!(fast_f32(bad), None, "{bad:?}");
        }
        let mut fast = 0;
        for s in &cases {
            if let Some(v) = fast_f32(s) {
                fast += 1;
                let std: f32 = s.parse().expect("the fast path only takes valid floats");
                assert_eq!(v.to_bits(), std.to_bits(), "{s:?}");
            }
        }
        assert!(
            fast > cases.len() / 2,
            "the fast path took only {fast} of {}",
            cases.len()
        );
    }

    /// `eight_digits` reads what a byte-at-a-time loop reads: every count of
    /// leading digits, ended by every byte value, with random bytes after.
    #[test]
    fn eight_digits_agrees_with_reading_one_digit_at_a_time() {
        let mut next = xorshift(0x2545_F491_4F6C_DD1D);
        for n in 0..=8usize {
            for end in 0..=255u8 {
                for _ in 0..8 {
                    let mut w = next().to_le_bytes();
                    for b in w.iter_mut().take(n) {
                        *b = b'0' + (next() % 10) as u8;
                    }
                    if let Some(b) = w.get_mut(n) {
                        *b = end;
                    }
                    let (mut want, mut count) = (0u64, 0usize);
                    for &b in w.iter().take_while(|b| b.is_ascii_digit()) {
                        want = want * 10 + u64::from(b - b'0');
                        count += 1;
                    }
                    assert_eq!(eight_digits(u64::from_le_bytes(w)), (want, count), "{w:?}");
                }
            }
        }
    }

    /// VECSET and SIMV read their values straight from the line; what they
    /// return must be what splitting the line into tokens and parsing each
    /// one gives, errors and their order included.
    #[test]
    fn vector_values_read_from_the_line_equal_the_tokens_parsed_one_by_one() {
        let pieces = [
            "0",
            "-0",
            "+1.5",
            "1.",
            ".5",
            "-.5",
            "0.1234",
            "-0.9999",
            "0.12345678",
            "-0.3871457427740097",
            "29.6452341079711914",
            "0.12345678901234567",
            "16777216",
            "1677721.5",
            "00000000000000000001",
            "1e5",
            "-2E-3",
            "inf",
            "-inf",
            "NaN",
            "1e39",
            "-",
            "+",
            ".",
            "1.2.3",
            "0x1",
            "1,5",
            "é",
            "12345678901234567890123",
            "3.4028235e38",
            "0.00000000001",
            "min_score=0.5",
            "MIN_SCORE=x",
        ];
        let heads = ["item", "5", "0", "x", "min_score=0.1"];
        let seps = [" ", "  ", "\t", " \t "];
        let mut next = {
            let mut next = xorshift(0x2545_F491_4F6C_DD1D);
            move || next() as usize
        };
        let values = |tokens: &[&str]| -> Result<Vec<f32>, ParseError> {
            tokens
                .iter()
                .map(|t| parse_finite(t).ok_or(ParseError::InvalidVectorFormat))
                .collect()
        };
        // the token-by-token reading, as the parser did before
        let vecset = |tokens: &[&str]| match tokens {
            [id, rest @ ..] if !rest.is_empty() => values(rest).map(|v| Command::VecSet {
                id: id.to_string(),
                values: v,
            }),
            _ => Err(ParseError::InvalidArgumentCount),
        };
        let simv = |tokens: &[&str]| {
            let [top_k, rest @ ..] = tokens else {
                return Err(ParseError::InvalidArgumentCount);
            };
            let (min_score, rest) = match rest {
                [first, more @ ..] if min_score_option(first).is_some() => (min_score_option(first), more),
                _ => (None, rest),
            };
            if rest.is_empty() {
                return Err(ParseError::InvalidArgumentCount);
            }
            let top_k = parse_top_k(top_k)?;
            let min_score = min_score.map(parse_min_score).transpose()?;
            values(rest).map(|v| {
                Command::SimV(SimVArgs {
                    top_k,
                    min_score,
                    values: v,
                })
            })
        };
        // compared through the debug form, so -0.0 and 0.0 differ
        let shown = |r: Result<Command, ParseError>| match r {
            Ok(cmd) => format!("{cmd:?}"),
            Err(e) => format!("(error) {e}"),
        };
        for round in 0..40_000 {
            let mut line = String::from(if round % 2 == 0 { "VECSET" } else { "simv" });
            if next() % 8 != 0 {
                line.push_str(seps[next() % seps.len()]);
                line.push_str(heads[next() % heads.len()]);
            }
            for _ in 0..next() % 6 {
                line.push_str(seps[next() % seps.len()]);
                line.push_str(pieces[next() % pieces.len()]);
            }
            if next() % 4 == 0 {
                line.push_str(seps[next() % seps.len()]);
            }
            let tokens: Vec<&str> = tokenize(&line).skip(1).collect();
            let expected = if round % 2 == 0 {
                vecset(&tokens)
            } else {
                simv(&tokens)
            };
            let got = parse_line(&line).unwrap_or_else(|| panic!("{line:?}"));
            assert_eq!(shown(got), shown(expected), "{line:?}");
        }
    }

    fn ok(line: &str) -> Command {
        match parse_line(line) {
            Some(Ok(cmd)) => cmd,
            other => panic!("{line:?} did not parse: {other:?}"),
        }
    }

    fn err(line: &str) -> String {
        match parse_line(line) {
            Some(Err(e)) => e.to_string(),
            other => panic!("{line:?} did not fail: {other:?}"),
        }
    }

    fn event(ctx: &str, kind: EventKind, id: &str, score: u8) -> Command {
        Command::Event(EventArgs {
            ctx: ctx.into(),
            kind,
            id: id.into(),
            score,
        })
    }

    #[test]
    fn empty_and_blank_lines_are_ignored() {
        assert_eq!(parse_line(""), None);
        assert_eq!(parse_line("   "), None);
        assert_eq!(parse_line("\t \t"), None);
    }

    #[test]
    fn command_words_are_case_insensitive() {
        assert_eq!(ok("ping"), Command::Ping);
        assert_eq!(ok("PiNg"), Command::Ping);
        assert_eq!(ok("quit"), Command::Quit);
        assert_eq!(ok("info"), Command::Info);
        assert_eq!(ok("event u1 add i1 5"), event("u1", EventKind::Add, "i1", 5));
        assert_eq!(
            ok("dump save /a/B.nvec"),
            Command::Dump(DumpCommand::Save {
                path: Some("/a/B.nvec".into())
            })
        );
        assert_eq!(ok("config show"), Command::ConfigShow { section: None });
    }

    #[test]
    fn ids_contexts_paths_and_passwords_keep_their_case() {
        assert_eq!(
            ok("EVENT User ADD Item 1"),
            event("User", EventKind::Add, "Item", 1)
        );
        assert_eq!(
            ok("AUTH SeCrEt"),
            Command::Auth {
                password: "SeCrEt".into()
            }
        );
        assert_eq!(
            ok("DUMP LOAD /Tmp/X.nvec"),
            Command::Dump(DumpCommand::Load {
                path: "/Tmp/X.nvec".into()
            })
        );
        assert_eq!(ok("VECDEL AbC"), Command::VecDel { id: "AbC".into() });
    }

    #[test]
    fn runs_of_spaces_and_tabs_separate_tokens() {
        assert_eq!(
            ok("  EVENT\t\tu1   ADD \t i1\t 7  "),
            event("u1", EventKind::Add, "i1", 7)
        );
        assert_eq!(
            ok("VECSET\tx\t1.5  -2\t0"),
            Command::VecSet {
                id: "x".into(),
                values: vec![1.5, -2.0, 0.0]
            }
        );
    }

    #[test]
    fn unknown_command_echoes_the_word_as_typed() {
        assert_eq!(err("FooBar 1 2"), "Unknown command: FooBar");
        assert_eq!(err("  hello"), "Unknown command: hello");
        assert_eq!(err("SHOW"), "Unknown command: SHOW");
    }

    #[test]
    fn long_words_are_echoed_cut_to_128_characters() {
        let exact = "é".repeat(ECHO_CHARS);
        assert_eq!(err(&exact), format!("Unknown command: {exact}"));
        let long = format!("{exact}xyz");
        assert_eq!(err(&long), format!("Unknown command: {exact}…"));
        let w = "w".repeat(100_000);
        let cut = format!("{}…", &w[..ECHO_CHARS]);
        assert_eq!(
            err(&format!("EVENT c {w} i")),
            format!("Invalid EVENT type: {cut} (must be ADD, SET, or DEL)")
        );
        assert_eq!(err(&format!("SIM i 10 {w}")), format!("Invalid option: {cut}"));
        assert_eq!(
            err(&format!("CONFIG {w}")),
            format!("Unknown CONFIG subcommand: {cut}")
        );
        assert_eq!(
            err(&format!("DUMP {w}")),
            format!("Unknown DUMP subcommand: {cut}")
        );
    }

    #[test]
    fn ping_quit_info_take_no_arguments() {
        assert_eq!(ok("PING"), Command::Ping);
        assert_eq!(ok("QUIT"), Command::Quit);
        assert_eq!(ok("INFO"), Command::Info);
        assert_eq!(err("PING x"), "Invalid argument count");
        assert_eq!(err("QUIT now"), "Invalid argument count");
        assert_eq!(err("INFO all"), "Invalid argument count");
    }

    #[test]
    fn auth_takes_exactly_one_password() {
        assert_eq!(
            ok("AUTH pw"),
            Command::Auth {
                password: "pw".into()
            }
        );
        assert_eq!(err("AUTH"), "Invalid argument count");
        assert_eq!(err("AUTH a b"), "Invalid argument count");
    }

    #[test]
    fn config_show_takes_an_optional_section() {
        assert_eq!(ok("CONFIG SHOW"), Command::ConfigShow { section: None });
        assert_eq!(
            ok("CONFIG SHOW events"),
            Command::ConfigShow {
                section: Some("events".into())
            }
        );
        assert_eq!(err("CONFIG"), "Invalid argument count");
        assert_eq!(err("CONFIG SHOW a b"), "Invalid argument count");
        assert_eq!(err("CONFIG Set x"), "Unknown CONFIG subcommand: Set");
    }

    #[test]
    fn event_forms_parse() {
        assert_eq!(ok("EVENT u ADD i 0"), event("u", EventKind::Add, "i", 0));
        assert_eq!(ok("EVENT u SET i 100"), event("u", EventKind::Set, "i", 100));
        assert_eq!(ok("EVENT u DEL i"), event("u", EventKind::Del, "i", 0));
        assert_eq!(ok("EVENT u add i 007"), event("u", EventKind::Add, "i", 7));
    }

    #[test]
    fn event_errors_have_exact_texts() {
        let missing = "EVENT requires arguments: <ctx> <ADD|SET|DEL> <id> [<score>]";
        assert_eq!(err("EVENT"), missing);
        assert_eq!(err("EVENT u"), missing);
        assert_eq!(
            err("EVENT u Upd i 5"),
            "Invalid EVENT type: Upd (must be ADD, SET, or DEL)"
        );
        assert_eq!(
            err("EVENT u FOO"),
            "Invalid EVENT type: FOO (must be ADD, SET, or DEL)"
        );
        let add = "EVENT ADD requires 4 arguments: <ctx> ADD <id> <score>";
        assert_eq!(err("EVENT u ADD"), add);
        assert_eq!(err("EVENT u ADD i"), add);
        assert_eq!(err("EVENT u add i 5 6"), add);
        let set = "EVENT SET requires 4 arguments: <ctx> SET <id> <score>";
        assert_eq!(err("EVENT u SET i"), set);
        assert_eq!(err("EVENT u SET i 5 6"), set);
        let del = "EVENT DEL requires 3 arguments: <ctx> DEL <id>";
        assert_eq!(err("EVENT u DEL"), del);
        assert_eq!(err("EVENT u DEL i 0"), del);
    }

    #[test]
    fn event_score_must_be_an_integer_from_0_to_100() {
        let bad = "Invalid score: must be integer 0-100";
        for score in [
            "101",
            "-1",
            "+5",
            "5.0",
            "abc",
            "256",
            "99999999999999999999",
            "1e2",
        ] {
            assert_eq!(err(&format!("EVENT u ADD i {score}")), bad, "{score}");
        }
        assert_eq!(err("EVENT u SET i 1000"), bad);
    }

    #[test]
    fn vecset_and_vecdel_forms_parse() {
        assert_eq!(
            ok("VECSET item 1 2.5 -3e2 .5"),
            Command::VecSet {
                id: "item".into(),
                values: vec![1.0, 2.5, -300.0, 0.5]
            }
        );
        assert_eq!(ok("vecdel item"), Command::VecDel { id: "item".into() });
    }

    #[test]
    fn vecset_and_vecdel_errors_have_exact_texts() {
        assert_eq!(err("VECSET"), "Invalid argument count");
        assert_eq!(err("VECSET id"), "Invalid argument count");
        assert_eq!(err("VECDEL"), "Invalid argument count");
        assert_eq!(err("VECDEL a b"), "Invalid argument count");
        for bad in [
            "NaN", "nan", "inf", "-inf", "infinity", "1e39", "-1e39", "abc", "1,0", "0x1",
        ] {
            assert_eq!(
                err(&format!("VECSET id 1 {bad} 2")),
                "Invalid vector format",
                "{bad}"
            );
        }
    }

    #[test]
    fn vecset_with_ten_thousand_values_parses() {
        let values: Vec<String> = (0..10_000).map(|i| format!("{}.25", i % 7)).collect();
        let line = format!("VECSET big {}", values.join(" "));
        match ok(&line) {
            Command::VecSet { id, values } => {
                assert_eq!(id, "big");
                assert_eq!(values.len(), 10_000);
                assert_eq!(values[9_999], 3.25); // 9999 % 7 == 3
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sim_defaults_to_fusion_without_min_score() {
        assert_eq!(
            ok("SIM item 10"),
            Command::Sim(SimArgs {
                id: "item".into(),
                top_k: 10,
                mode: SimMode::Fusion,
                min_score: None
            })
        );
    }

    #[test]
    fn sim_options_come_in_any_order_with_case_insensitive_keys_and_modes() {
        let expected = Command::Sim(SimArgs {
            id: "Item".into(),
            top_k: 3,
            mode: SimMode::Vectors,
            min_score: Some(0.5),
        });
        assert_eq!(ok("SIM Item 3 using=vectors min_score=0.5"), expected);
        assert_eq!(ok("sim Item 3 MIN_SCORE=0.5 USING=VECTORS"), expected);
        match ok("SIM a 1 using=Events") {
            Command::Sim(args) => assert_eq!(args.mode, SimMode::Events),
            other => panic!("{other:?}"),
        }
        match ok("SIM a 1 using=fusion") {
            Command::Sim(args) => assert_eq!(args.mode, SimMode::Fusion),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sim_repeated_option_last_wins() {
        match ok("SIM a 1 using=events using=vectors min_score=1 min_score=-2") {
            Command::Sim(args) => {
                assert_eq!(args.mode, SimMode::Vectors);
                assert_eq!(args.min_score, Some(-2.0));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sim_errors_have_exact_texts() {
        assert_eq!(err("SIM"), "Invalid argument count");
        assert_eq!(err("SIM item"), "Invalid argument count");
        assert_eq!(
            err("SIM item 5 using=cosine"),
            "Invalid mode: must be events, vectors, or fusion"
        );
        assert_eq!(
            err("SIM item 5 using="),
            "Invalid mode: must be events, vectors, or fusion"
        );
        assert_eq!(
            err("SIM item 5 min_score=abc"),
            "Invalid min_score: must be a number"
        );
        assert_eq!(
            err("SIM item 5 min_score=NaN"),
            "Invalid min_score: must be a number"
        );
        assert_eq!(
            err("SIM item 5 min_score=inf"),
            "Invalid min_score: must be a number"
        );
        assert_eq!(err("SIM item 5 extra"), "Invalid option: extra");
        assert_eq!(err("SIM item 5 limit=3"), "Invalid option: limit=3");
    }

    #[test]
    fn top_k_must_be_a_positive_integer() {
        for bad in ["0", "-1", "abc", "1.5", "+3", "99999999999999999999"] {
            let e = parse_line(&format!("SIM item {bad}"));
            assert_eq!(e, Some(Err(ParseError::InvalidTopK { max: usize::MAX })), "{bad}");
            let e = parse_line(&format!("SIMV {bad} 1.0"));
            assert_eq!(e, Some(Err(ParseError::InvalidTopK { max: usize::MAX })), "{bad}");
        }
    }

    #[test]
    fn with_max_top_k_fills_in_the_configured_maximum() {
        let e = ParseError::InvalidTopK { max: usize::MAX }.with_max_top_k(1000);
        assert_eq!(e.to_string(), "Invalid top_k: must be > 0 and <= 1000");
        let other = ParseError::InvalidMode.with_max_top_k(1000);
        assert_eq!(other, ParseError::InvalidMode);
    }

    #[test]
    fn simv_forms_parse() {
        assert_eq!(
            ok("SIMV 5 1 2 3"),
            Command::SimV(SimVArgs {
                top_k: 5,
                min_score: None,
                values: vec![1.0, 2.0, 3.0]
            })
        );
        assert_eq!(
            ok("simv 5 Min_Score=0.25 1 2"),
            Command::SimV(SimVArgs {
                top_k: 5,
                min_score: Some(0.25),
                values: vec![1.0, 2.0]
            })
        );
    }

    #[test]
    fn simv_errors_have_exact_texts() {
        assert_eq!(err("SIMV"), "Invalid argument count");
        assert_eq!(err("SIMV 5"), "Invalid argument count");
        assert_eq!(err("SIMV 5 min_score=0.1"), "Invalid argument count");
        assert_eq!(err("SIMV 5 1 NaN"), "Invalid vector format");
        assert_eq!(err("SIMV 5 1e39"), "Invalid vector format");
        assert_eq!(err("SIMV 5 1 min_score=0.1"), "Invalid vector format");
        assert_eq!(err("SIMV 5 min_score=x 1"), "Invalid min_score: must be a number");
        assert_eq!(
            err("SIMV 0 1"),
            "Invalid top_k: must be > 0 and <= 18446744073709551615"
        );
    }

    #[test]
    fn dump_forms_parse() {
        assert_eq!(ok("DUMP SAVE"), Command::Dump(DumpCommand::Save { path: None }));
        assert_eq!(
            ok("DUMP save a.nvec"),
            Command::Dump(DumpCommand::Save {
                path: Some("a.nvec".into())
            })
        );
        assert_eq!(
            ok("dump load A.nvec"),
            Command::Dump(DumpCommand::Load {
                path: "A.nvec".into()
            })
        );
        assert_eq!(
            ok("DUMP Verify a"),
            Command::Dump(DumpCommand::Verify { path: "a".into() })
        );
        assert_eq!(
            ok("DUMP INFO a"),
            Command::Dump(DumpCommand::Info { path: "a".into() })
        );
        assert_eq!(ok("DUMP status"), Command::Dump(DumpCommand::Status));
    }

    #[test]
    fn dump_errors_have_exact_texts() {
        assert_eq!(err("DUMP"), "Invalid argument count");
        assert_eq!(err("DUMP SAVE a b"), "Invalid argument count");
        assert_eq!(err("DUMP LOAD"), "Invalid argument count");
        assert_eq!(err("DUMP LOAD a b"), "Invalid argument count");
        assert_eq!(err("DUMP VERIFY"), "Invalid argument count");
        assert_eq!(err("DUMP INFO"), "Invalid argument count");
        assert_eq!(err("DUMP STATUS x"), "Invalid argument count");
        assert_eq!(err("DUMP Restore a"), "Unknown DUMP subcommand: Restore");
    }

    #[test]
    fn write_and_admin_commands_need_auth() {
        assert!(ok("EVENT u ADD i 1").needs_auth());
        assert!(ok("VECSET i 1").needs_auth());
        assert!(ok("VECDEL i").needs_auth());
        assert!(ok("DUMP STATUS").needs_auth());
        assert!(!ok("SIM i 1").needs_auth());
        assert!(!ok("PING").needs_auth());
        assert!(!ok("INFO").needs_auth());
    }

    #[test]
    fn random_token_soup_never_panics() {
        let words = [
            "EVENT",
            "add",
            "SET",
            "del",
            "VECSET",
            "VECDEL",
            "SIM",
            "simv",
            "DUMP",
            "save",
            "LOAD",
            "verify",
            "info",
            "STATUS",
            "CONFIG",
            "show",
            "AUTH",
            "PING",
            "QUIT",
            "0",
            "100",
            "101",
            "-1",
            "1e39",
            "NaN",
            "0.5",
            "using=",
            "using=events",
            "min_score=",
            "min_score=1",
            "=",
            "\t",
            " ",
            "\u{0}",
            "é",
            "99999999999999999999",
        ];
        let mut seed: u64 = 42;
        for _ in 0..20_000 {
            let mut line = String::new();
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let n = (seed >> 60) as usize;
            for _ in 0..n {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                line.push_str(words[(seed >> 33) as usize % words.len()]);
                line.push(' ');
            }
            let _ = parse_line(&line);
        }
    }

    #[test]
    fn odd_bytes_never_panic() {
        for line in [
            "\u{0}",
            "SIM \u{feff} 1",
            "EVENT é ADD ü 1",
            "DUMP SAVE \r",
            "=",
            "SIM a 1 =",
        ] {
            let _ = parse_line(line);
        }
        assert_eq!(err("SIM a 1 ="), "Invalid option: =");
    }
}
