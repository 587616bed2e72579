//! Structured round trip: arbitrary state -> real writer (into memory) ->
//! real reader (CRC checks on) -> the same state.
//!
//! From one arbitrary input two models are made:
//! - `raw`: as generated (unsorted, duplicates, empty names, scores out of
//!   range, NaN, ragged vectors). The writer must accept it exactly when it
//!   satisfies the format's rules (an independent oracle, `valid` below) and
//!   refuse it with `InvalidImage` otherwise; what it accepts must read back
//!   equal (contexts without events are skipped by the writer);
//! - `clean`: `raw` normalised into a valid state (sorted, deduplicated,
//!   scores clamped, non-finite values replaced). It must write, verify and
//!   load back bit for bit equal, with the header counts and `created_at`
//!   given, and refuse only when a non-zero `default_dimension` differs.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use nvecd::snapshot::testkit::Model;
use nvecd::snapshot::{LoadOptions, SnapshotError};
use nvecd::store::EventKind;
use nvecd_fuzz::{read_checked, same_model, write_model, Verdict};

const MAX_CONTEXTS: usize = 32;
const MAX_EVENTS: usize = 32;
const MAX_PAIRS: usize = 64;
const MAX_VECTORS: usize = 64;
const MAX_DIMENSION: usize = 16;

/// A context name and its events: id, score, timestamp, kind byte (mod 3).
type RawContext = (String, Vec<(String, i32, u64, u8)>);

#[derive(Debug, Arbitrary)]
struct Input {
    contexts: Vec<RawContext>,
    pairs: Vec<(String, String, f32)>,
    /// Dimension of the clean model, 1..=MAX_DIMENSION.
    dimension: u8,
    vectors: Vec<(String, Vec<f32>)>,
    created_at: i64,
    batch_records: u8,
    /// Half the values: 0; the others: a dimension the reader requires.
    default_dimension: u8,
}

fn kind(k: u8) -> EventKind {
    match k % 3 {
        0 => EventKind::Add,
        1 => EventKind::Set,
        _ => EventKind::Del,
    }
}

fn raw_model(i: &Input) -> Model {
    Model {
        contexts: i
            .contexts
            .iter()
            .take(MAX_CONTEXTS)
            .map(|(name, evs)| {
                let evs = evs
                    .iter()
                    .take(MAX_EVENTS)
                    .map(|(id, score, ts, k)| (id.clone(), *score, *ts, kind(*k)))
                    .collect();
                (name.clone(), evs)
            })
            .collect(),
        pairs: i.pairs.iter().take(MAX_PAIRS).cloned().collect(),
        vectors: i
            .vectors
            .iter()
            .take(MAX_VECTORS)
            .map(|(id, v)| (id.clone(), v.iter().take(MAX_DIMENSION + 1).copied().collect()))
            .collect(),
    }
}

/// The format's rules (SPEC 4.3), written independently of the writer.
fn valid(m: &Model) -> bool {
    let mut prev: Option<&str> = None;
    for (name, evs) in &m.contexts {
        if evs.is_empty() {
            continue; // skipped by the writer
        }
        if name.is_empty() || prev.is_some_and(|p| p.as_bytes() >= name.as_bytes()) {
            return false;
        }
        prev = Some(name);
        for (id, score, _, k) in evs {
            if id.is_empty() || !(0..=100).contains(score) || (*k == EventKind::Del && *score != 0) {
                return false;
            }
        }
    }
    let mut prev: Option<(&str, &str)> = None;
    for (a, b, s) in &m.pairs {
        if a.is_empty() || b.is_empty() || a.as_bytes() >= b.as_bytes() {
            return false;
        }
        if prev.is_some_and(|(pa, pb)| (pa.as_bytes(), pb.as_bytes()) >= (a.as_bytes(), b.as_bytes())) {
            return false;
        }
        if !(s.is_finite() && *s > 0.0) {
            return false;
        }
        prev = Some((a, b));
    }
    let mut prev: Option<&str> = None;
    let d = m.vectors.first().map(|v| v.1.len());
    for (id, v) in &m.vectors {
        if id.is_empty() || prev.is_some_and(|p| p.as_bytes() >= id.as_bytes()) {
            return false;
        }
        if Some(v.len()) != d || v.is_empty() || v.iter().any(|x| !x.is_finite()) {
            return false;
        }
        prev = Some(id);
    }
    true
}

fn finite_or_zero(x: f32) -> f32 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

fn clean_model(raw: &Model, dimension: usize) -> Model {
    let mut contexts: Vec<_> = raw
        .contexts
        .iter()
        .filter(|(name, _)| !name.is_empty())
        .map(|(name, evs)| {
            let evs: Vec<_> = evs
                .iter()
                .filter(|e| !e.0.is_empty())
                .map(|(id, score, ts, k)| {
                    let score = if *k == EventKind::Del {
                        0
                    } else {
                        score.rem_euclid(101)
                    };
                    (id.clone(), score, *ts, *k)
                })
                .collect();
            (name.clone(), evs)
        })
        .filter(|(_, evs)| !evs.is_empty())
        .collect();
    contexts.sort_by(|x, y| x.0.cmp(&y.0));
    contexts.dedup_by(|x, y| x.0 == y.0);

    let mut pairs: Vec<_> = raw
        .pairs
        .iter()
        .filter(|(a, b, _)| !a.is_empty() && !b.is_empty() && a != b)
        .map(|(a, b, s)| {
            let s = finite_or_zero(*s).abs();
            let s = if s > 0.0 { s } else { 1.0 };
            if a < b {
                (a.clone(), b.clone(), s)
            } else {
                (b.clone(), a.clone(), s)
            }
        })
        .collect();
    pairs.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
    pairs.dedup_by(|x, y| x.0 == y.0 && x.1 == y.1);

    let mut vectors: Vec<_> = raw
        .vectors
        .iter()
        .filter(|(id, _)| !id.is_empty())
        .map(|(id, v)| {
            let values = (0..dimension)
                .map(|j| v.get(j).copied().map_or(j as f32 * 0.5, finite_or_zero))
                .collect();
            (id.clone(), values)
        })
        .collect();
    vectors.sort_by(|x, y| x.0.cmp(&y.0));
    vectors.dedup_by(|x, y| x.0 == y.0);
    Model {
        contexts,
        pairs,
        vectors,
    }
}

/// Writes `m`, reads it back with CRC checks on, and checks it is `m` again.
fn round_trip(m: &Model, created_at: i64, opts: LoadOptions) {
    let bytes = match write_model(m, created_at) {
        Ok(b) => b,
        Err(e) => panic!("the writer refused a valid state: {e}"),
    };
    let (verdict, back) = read_checked(&bytes, opts, true);
    let d = m.vectors.first().map_or(0, |v| v.1.len());
    if !m.vectors.is_empty() && opts.default_dimension != 0 && opts.default_dimension != d {
        assert_eq!(
            verdict,
            Verdict::Refused(format!(
                "Corrupt snapshot: vector dimension {d} differs from vectors.default_dimension {}",
                opts.default_dimension
            ))
        );
        return;
    }
    let Verdict::Valid { header, crc } = verdict else {
        panic!("the reader refused the writer's file: {verdict:?}");
    };
    let back = back.expect("records of an accepted file");
    let expected = Model {
        contexts: m.contexts.iter().filter(|c| !c.1.is_empty()).cloned().collect(),
        ..m.clone()
    };
    assert!(same_model(&expected, &back), "round trip changed the state");
    let events: usize = expected.contexts.iter().map(|c| c.1.len()).sum();
    assert_eq!(header.event_count as usize, events);
    assert_eq!(header.pair_count as usize, m.pairs.len());
    assert_eq!(header.vector_count as usize, m.vectors.len());
    assert_eq!(header.created_at, created_at);
    assert_eq!(header.file_size, bytes.len() as u64);
    let footer = bytes.get(bytes.len() - 8..bytes.len() - 4).expect("footer");
    assert_eq!(footer, crc.to_le_bytes());
}

fuzz_target!(|input: Input| {
    let opts = LoadOptions {
        default_dimension: match input.default_dimension {
            0..=127 => 0,
            d => 1 + usize::from(d) % MAX_DIMENSION,
        },
        batch_records: usize::from(input.batch_records % 9),
    };
    let raw = raw_model(&input);
    let ok = valid(&raw);
    match write_model(&raw, input.created_at) {
        Ok(_) if ok => round_trip(&raw, input.created_at, opts),
        Ok(_) => panic!("the writer accepted an invalid state"),
        Err(SnapshotError::InvalidImage(msg)) => {
            assert!(!ok, "the writer refused a valid state: {msg}")
        }
        Err(e) => panic!("unexpected writer error: {e}"),
    }

    let dimension = 1 + usize::from(input.dimension) % MAX_DIMENSION;
    let clean = clean_model(&raw, dimension);
    assert!(valid(&clean), "clean_model made an invalid state");
    round_trip(&clean, input.created_at, opts);
});
