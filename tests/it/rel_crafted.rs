//! Crafted snapshot files whose CRCs are all valid (recomputed after each
//! edit) but whose content lies: lengths past the file, counts of u32::MAX /
//! u64::MAX, section lengths that do not add up, a dimension of u32::MAX,
//! invalid UTF-8, duplicates, wrong order, non-finite floats, out-of-range
//! scores. Each must give `(error) Corrupt snapshot: ...` through DUMP VERIFY
//! and DUMP LOAD (live data untouched) and through the offline verifier, and
//! the real `nvecd snapshot verify` must stay under `RSS_BOUND_KIB` of peak
//! RSS on every one (no allocation sized by a claim in the file):
//! `cargo test --test it rel_crafted -- --nocapture`.

use nvecd::snapshot::format::{FOOTER_LEN, HEADER_LEN, SECTION_PREFIX_LEN};
use nvecd::snapshot::testkit::{assemble, fix_all_crcs, fix_file_crc, payload_ranges, put_str};
use nvecd::snapshot::Header;

use crate::rel_util::{first_line, live, offline_binary_alone, offline_verdict, seed_live, valid_golden};
use crate::support::TestServer;

/// Peak RSS allowed to `nvecd snapshot verify` on any crafted file: 64 MiB.
const RSS_BOUND_KIB: i64 = 64 * 1024;

#[derive(Clone)]
struct Ev {
    id: Vec<u8>,
    score: i32,
    ts: u64,
    kind: u8,
}

#[derive(Clone)]
struct Ctx {
    name: Vec<u8>,
    /// Declared event count (normally `events.len()`).
    count: u64,
    events: Vec<Ev>,
}

#[derive(Clone)]
struct Vect {
    id: Vec<u8>,
    /// Declared value count (normally the dimension).
    len: u64,
    values: Vec<f32>,
}

/// A file's content with every count and length open to lies.
#[derive(Clone)]
struct Spec {
    header: Header,
    n_contexts: Option<u64>,
    contexts: Vec<Ctx>,
    n_pairs: Option<u64>,
    pairs: Vec<(Vec<u8>, Vec<u8>, f32)>,
    dimension: u32,
    n_vectors: Option<u64>,
    vectors: Vec<Vect>,
    /// Bytes appended inside a section's payload (covered by its CRC).
    trailing: [Vec<u8>; 3],
}

fn ev(id: &str, score: i32, ts: u64, kind: u8) -> Ev {
    Ev {
        id: id.as_bytes().to_vec(),
        score,
        ts,
        kind,
    }
}

fn ctx(name: &str, events: Vec<Ev>) -> Ctx {
    Ctx {
        name: name.as_bytes().to_vec(),
        count: events.len() as u64,
        events,
    }
}

fn vect(id: &str, values: &[f32]) -> Vect {
    Vect {
        id: id.as_bytes().to_vec(),
        len: values.len() as u64,
        values: values.to_vec(),
    }
}

fn base() -> Spec {
    Spec {
        header: Header {
            version: 1,
            flags: 0,
            event_count: 3,
            vector_count: 2,
            pair_count: 1,
            created_at: 1_700_000_000,
            file_size: 0,
        },
        n_contexts: None,
        contexts: vec![
            ctx("u1", vec![ev("a", 10, 1000, 0), ev("b", 20, 2000, 0)]),
            ctx("u2", vec![ev("a", 30, 3000, 1)]),
        ],
        n_pairs: None,
        pairs: vec![(b"a".to_vec(), b"b".to_vec(), 1.5)],
        dimension: 2,
        n_vectors: None,
        vectors: vec![vect("a", &[1.0, 2.0]), vect("b", &[3.0, 4.0])],
        trailing: [Vec::new(), Vec::new(), Vec::new()],
    }
}

fn build(s: &Spec) -> Vec<u8> {
    let mut events = Vec::new();
    events.extend_from_slice(&s.n_contexts.unwrap_or(s.contexts.len() as u64).to_le_bytes());
    for c in &s.contexts {
        put_str(&mut events, &c.name);
        events.extend_from_slice(&c.count.to_le_bytes());
        for e in &c.events {
            put_str(&mut events, &e.id);
            events.extend_from_slice(&e.score.to_le_bytes());
            events.extend_from_slice(&e.ts.to_le_bytes());
            events.push(e.kind);
        }
    }
    events.extend_from_slice(&s.trailing[0]);
    let mut pairs = Vec::new();
    pairs.extend_from_slice(&s.n_pairs.unwrap_or(s.pairs.len() as u64).to_le_bytes());
    for (a, b, score) in &s.pairs {
        put_str(&mut pairs, a);
        put_str(&mut pairs, b);
        pairs.extend_from_slice(&score.to_le_bytes());
    }
    pairs.extend_from_slice(&s.trailing[1]);
    let mut vectors = Vec::new();
    vectors.extend_from_slice(&s.dimension.to_le_bytes());
    vectors.extend_from_slice(&s.n_vectors.unwrap_or(s.vectors.len() as u64).to_le_bytes());
    for v in &s.vectors {
        put_str(&mut vectors, &v.id);
        vectors.extend_from_slice(&v.len.to_le_bytes());
        for x in &v.values {
            vectors.extend_from_slice(&x.to_le_bytes());
        }
    }
    vectors.extend_from_slice(&s.trailing[2]);
    assemble(s.header, [&events, &pairs, &vectors])
}

fn spec(edit: impl FnOnce(&mut Spec)) -> Vec<u8> {
    let mut s = base();
    edit(&mut s);
    build(&s)
}

/// Sets the `payload_len` of section `k` (0, 1, 2) and recomputes every CRC
/// that can still be located, then the file CRC.
fn with_payload_len(mut bytes: Vec<u8>, k: usize, len: u64) -> Vec<u8> {
    let ranges = payload_ranges(&bytes).expect("framing");
    let at = ranges[k].start - SECTION_PREFIX_LEN + 4;
    bytes[at..at + 8].copy_from_slice(&len.to_le_bytes());
    fix_all_crcs(&mut bytes);
    bytes
}

fn cases() -> Vec<(&'static str, Vec<u8>)> {
    let good = build(&base());
    let size = good.len() as u64;
    let bad_utf8 = vec![0xFF, 0xFE, 0x80];
    let mut v: Vec<(&'static str, Vec<u8>)> = vec![
        // lengths beyond the file
        (
            "events payload_len past the end of the file",
            with_payload_len(good.clone(), 0, size),
        ),
        (
            "events payload_len u64::MAX",
            with_payload_len(good.clone(), 0, u64::MAX),
        ),
        (
            "co_occurrence payload_len u64::MAX",
            with_payload_len(good.clone(), 1, u64::MAX),
        ),
        ("vectors payload_len one past the footer", {
            let r = payload_ranges(&good).expect("framing");
            with_payload_len(good.clone(), 2, (r[2].len() + FOOTER_LEN + 1) as u64)
        }),
        ("string length u64::MAX (context name)", {
            let mut b = good.clone();
            let r = payload_ranges(&b).expect("framing");
            let at = r[0].start + 8;
            b[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
            fix_all_crcs(&mut b);
            b
        }),
        ("string length past the section (vector id)", {
            let mut b = good.clone();
            let r = payload_ranges(&b).expect("framing");
            let at = r[2].start + 12;
            b[at..at + 8].copy_from_slice(&1_000_000u64.to_le_bytes());
            fix_all_crcs(&mut b);
            b
        }),
        // header counts
        (
            "header event_count u32::MAX",
            spec(|s| s.header.event_count = u32::MAX),
        ),
        (
            "header vector_count u32::MAX",
            spec(|s| s.header.vector_count = u32::MAX),
        ),
        (
            "header pair_count u32::MAX",
            spec(|s| s.header.pair_count = u32::MAX),
        ),
        // in-section counts
        ("context count u64::MAX", spec(|s| s.n_contexts = Some(u64::MAX))),
        (
            "context count u32::MAX",
            spec(|s| s.n_contexts = Some(u64::from(u32::MAX))),
        ),
        (
            "events in a context u64::MAX",
            spec(|s| s.contexts[0].count = u64::MAX),
        ),
        ("pair count u64::MAX", spec(|s| s.n_pairs = Some(u64::MAX))),
        ("vector count u64::MAX", spec(|s| s.n_vectors = Some(u64::MAX))),
        ("vector length u64::MAX", spec(|s| s.vectors[0].len = u64::MAX)),
        ("counts one more than the records", spec(|s| s.n_pairs = Some(2))),
        // section lengths that do not add up
        ("events payload_len one short (framing shifts)", {
            let r = payload_ranges(&good).expect("framing");
            with_payload_len(good.clone(), 0, (r[0].len() - 1) as u64)
        }),
        (
            "bytes left over inside the events payload",
            spec(|s| s.trailing[0] = vec![0; 3]),
        ),
        (
            "bytes left over inside the vectors payload",
            spec(|s| s.trailing[2] = vec![0; 12]),
        ),
        ("bytes between the last section and the footer", {
            let mut b = good.clone();
            let at = b.len() - FOOTER_LEN;
            b.splice(at..at, [0u8; 16]);
            let n = b.len() as u64;
            b[HEADER_LEN - 8..HEADER_LEN].copy_from_slice(&n.to_le_bytes());
            fix_all_crcs(&mut b);
            b
        }),
        ("sections in the wrong order (tags 2, 1, 3)", {
            let mut b = good.clone();
            let r = payload_ranges(&b).expect("framing");
            let (t0, t1) = (r[0].start - SECTION_PREFIX_LEN, r[1].start - SECTION_PREFIX_LEN);
            b[t0..t0 + 4].copy_from_slice(&2u32.to_le_bytes());
            b[t1..t1 + 4].copy_from_slice(&1u32.to_le_bytes());
            fix_all_crcs(&mut b);
            b
        }),
        // dimension
        ("dimension u32::MAX", spec(|s| s.dimension = u32::MAX)),
        (
            "dimension u32::MAX with matching vector lengths",
            spec(|s| {
                s.dimension = u32::MAX;
                for v in &mut s.vectors {
                    v.len = u64::from(u32::MAX);
                }
            }),
        ),
        ("dimension 0 with vectors", spec(|s| s.dimension = 0)),
        (
            "vector length other than the dimension",
            spec(|s| s.vectors[1] = vect("b", &[3.0, 4.0, 5.0])),
        ),
        // invalid UTF-8
        (
            "invalid UTF-8 context name",
            spec(|s| s.contexts[0].name = bad_utf8.clone()),
        ),
        (
            "invalid UTF-8 event id",
            spec(|s| s.contexts[0].events[0].id = bad_utf8.clone()),
        ),
        (
            "invalid UTF-8 pair item",
            spec(|s| s.pairs[0].1 = [b"b".as_slice(), &bad_utf8].concat()),
        ),
        (
            "invalid UTF-8 vector id",
            spec(|s| s.vectors[1].id = [b"b".as_slice(), &bad_utf8].concat()),
        ),
        ("empty context name", spec(|s| s.contexts[0].name.clear())),
        ("empty vector id", spec(|s| s.vectors[0].id.clear())),
        // duplicates
        (
            "duplicate context",
            spec(|s| {
                s.contexts[1].name = b"u1".to_vec();
            }),
        ),
        (
            "duplicate pair",
            spec(|s| {
                s.pairs.push(s.pairs[0].clone());
                s.header.pair_count = 2;
            }),
        ),
        ("duplicate vector id", spec(|s| s.vectors[1].id = b"a".to_vec())),
        // order
        ("contexts unsorted", spec(|s| s.contexts.swap(0, 1))),
        (
            "pairs unsorted",
            spec(|s| {
                s.pairs = vec![
                    (b"b".to_vec(), b"c".to_vec(), 1.0),
                    (b"a".to_vec(), b"b".to_vec(), 1.0),
                ];
                s.header.pair_count = 2;
            }),
        ),
        (
            "pair with a > b",
            spec(|s| s.pairs[0] = (b"b".to_vec(), b"a".to_vec(), 1.0)),
        ),
        (
            "pair with a == b",
            spec(|s| s.pairs[0] = (b"a".to_vec(), b"a".to_vec(), 1.0)),
        ),
        ("vectors unsorted", spec(|s| s.vectors.swap(0, 1))),
        // non-finite floats, scores out of range
        ("vector value NaN", spec(|s| s.vectors[0].values[1] = f32::NAN)),
        (
            "vector value +inf",
            spec(|s| s.vectors[1].values[0] = f32::INFINITY),
        ),
        (
            "vector value -inf",
            spec(|s| s.vectors[1].values[1] = f32::NEG_INFINITY),
        ),
        ("pair score NaN", spec(|s| s.pairs[0].2 = f32::NAN)),
        ("pair score +inf", spec(|s| s.pairs[0].2 = f32::INFINITY)),
        ("pair score 0", spec(|s| s.pairs[0].2 = 0.0)),
        ("pair score negative", spec(|s| s.pairs[0].2 = -1.0)),
        ("event score 101", spec(|s| s.contexts[0].events[1].score = 101)),
        ("event score -1", spec(|s| s.contexts[1].events[0].score = -1)),
        (
            "event score i32::MIN",
            spec(|s| s.contexts[1].events[0].score = i32::MIN),
        ),
        (
            "DEL event with a score",
            spec(|s| s.contexts[1].events[0].kind = 2),
        ),
        ("event kind 3", spec(|s| s.contexts[0].events[0].kind = 3)),
        ("event kind 255", spec(|s| s.contexts[0].events[0].kind = 255)),
        // flags
        ("unknown flag bit 31", spec(|s| s.header.flags = 1 << 31)),
    ];
    // every header count off by one in both directions
    for (name, f) in [
        (
            "event_count + 1",
            (|h: &mut Header| h.event_count += 1) as fn(&mut Header),
        ),
        ("event_count - 1", |h: &mut Header| h.event_count -= 1),
        ("vector_count + 1", |h: &mut Header| h.vector_count += 1),
        ("pair_count - 1", |h: &mut Header| h.pair_count -= 1),
    ] {
        v.push((name, spec(|s| f(&mut s.header))));
    }
    let mut tail = good;
    let n = tail.len();
    tail[n - 4] = 1;
    fix_file_crc(&mut tail);
    v.push(("reserved footer word 1", tail));
    v
}

#[test]
fn crafted_files_with_valid_crcs_are_corrupt_and_cost_bounded_memory() {
    let server = TestServer::spawn();
    let mut c = server.client();
    seed_live(&mut c);
    let before = live(&mut c);
    let dir = server.snapshot_dir();

    // The crafting itself is right: the unedited base is valid everywhere.
    std::fs::write(dir.join("base.nvec"), build(&base())).expect("write");
    assert!(c.cmd("DUMP VERIFY base.nvec").starts_with("OK Snapshot is valid"));
    let (_, ok, base_rss) = offline_binary_alone(&dir.join("base.nvec"));
    assert!(ok);
    std::fs::write(dir.join("golden.nvec"), valid_golden()).expect("write");
    let (_, ok, golden_rss) = offline_binary_alone(&dir.join("golden.nvec"));
    assert!(ok);

    let cases = cases();
    let mut worst = (0i64, "");
    for (i, (name, bytes)) in cases.iter().enumerate() {
        let file = format!("crafted_{i:02}.nvec");
        let path = dir.join(&file);
        std::fs::write(&path, bytes).expect("write");
        let verify = c.cmd(&format!("DUMP VERIFY {file}"));
        let head = first_line(&verify);
        assert!(head.starts_with("(error) Corrupt snapshot: "), "{name}: {verify}");
        let (offline, ok) = offline_verdict(&path);
        assert!(!ok);
        assert_eq!(first_line(&offline), head, "{name}: offline verifier");
        let load = c.cmd(&format!("DUMP LOAD {file}"));
        assert_eq!(first_line(&load), head, "{name}: DUMP LOAD");
        assert_eq!(live(&mut c), before, "{name}: live data changed");
        let (text, ok, rss) = offline_binary_alone(&path);
        assert!(!ok, "{name}: exit status");
        assert_eq!(first_line(&text), head, "{name}: nvecd snapshot verify");
        assert!(rss < RSS_BOUND_KIB, "{name}: peak RSS {rss} KiB");
        if rss > worst.0 {
            worst = (rss, name);
        }
        println!("{name:<50} {:>6} KiB  {head}", rss);
    }
    println!(
        "{n} of {n} crafted files rejected with `Corrupt snapshot:`; peak RSS of `nvecd snapshot verify`: \
         worst {} KiB ({}), valid files {} / {} KiB, bound {} KiB",
        worst.0,
        worst.1,
        base_rss,
        golden_rss,
        RSS_BOUND_KIB,
        n = cases.len()
    );
    assert_eq!(c.cmd("PING"), "OK PONG");
}
