//! Writer and reader tests: hand-written bytes, bincode equality, determinism,
//! the SPEC 4.2 check order, crafted corrupt files with valid CRCs, byte-flip
//! and truncation sweeps, and the golden files of `snapshots-testdata/`.
use super::format::*;
use super::split::Split;
use super::testkit::{self, assemble, put_str, Model};
use super::*;
use crate::store::{EventKind, LoadBatch};
use std::io::{Cursor, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const CREATED_AT: i64 = 1_700_000_000;

fn opts() -> LoadOptions {
    LoadOptions {
        default_dimension: 0,
        batch_records: 1024,
    }
}

/// One scratch file reused across calls (the reader takes a `File`).
struct Scratch(std::fs::File);

impl Scratch {
    fn new() -> Self {
        Scratch(tempfile::tempfile().unwrap())
    }
    fn put(&mut self, bytes: &[u8]) -> &mut std::fs::File {
        self.0.set_len(0).unwrap();
        self.0.seek(SeekFrom::Start(0)).unwrap();
        self.0.write_all(bytes).unwrap();
        &mut self.0
    }
    fn verify(&mut self, bytes: &[u8]) -> Result<VerifyReport, SnapshotError> {
        self.verify_with(bytes, opts())
    }
    /// Verifies sequentially and split into pieces as small as one pair
    /// record on three threads, and loads: all three must give the same
    /// answer (a LOAD checks the CRCs while it decodes, yet reports what
    /// VERIFY reports).
    fn verify_with(&mut self, bytes: &[u8], o: LoadOptions) -> Result<VerifyReport, SnapshotError> {
        let path = Path::new("test.nvec");
        let one = Split {
            workers: 1,
            ..Split::auto()
        };
        let sequential = reader::verify_split(self.put(bytes), path, o, one);
        let split = reader::verify_split(self.put(bytes), path, o, tiny_pieces());
        assert_eq!(
            split.as_ref().map_err(ToString::to_string),
            sequential.as_ref().map_err(ToString::to_string),
            "split and sequential VERIFY disagree"
        );
        let loaded = load_file(self.put(bytes), path, o, |_| Ok(()));
        assert_eq!(
            loaded.as_ref().map_err(ToString::to_string),
            sequential.as_ref().map_err(ToString::to_string),
            "LOAD and VERIFY disagree"
        );
        sequential
    }
    fn load(
        &mut self,
        bytes: &[u8],
        o: LoadOptions,
    ) -> Result<(VerifyReport, Vec<LoadBatch>), SnapshotError> {
        let mut batches = Vec::new();
        let r = load_file(self.put(bytes), Path::new("test.nvec"), o, |b| {
            batches.push(b);
            Ok(())
        })?;
        Ok((r, batches))
    }
}

fn verify(bytes: &[u8]) -> Result<VerifyReport, SnapshotError> {
    Scratch::new().verify(bytes)
}

/// A split that cuts the co-occurrence section after every record it can.
fn tiny_pieces() -> Split {
    Split {
        workers: 3,
        min_file: 0,
        pieces_per_worker: 1 << 20,
        min_piece: 1,
    }
}

/// Pairs encoded in parts of one row on three threads.
fn tiny_parts() -> Encode {
    Encode {
        workers: 3,
        part_entries: 1,
        min_rows: 0,
    }
}

/// Writes `source` on the writing thread and again in tiny parts on three
/// threads; the two must give the same bytes or the same error.
fn write_both<S: SnapshotSource + ?Sized>(
    source: &S,
    created_at: i64,
) -> Result<(WriteSummary, Vec<u8>), SnapshotError> {
    let write = |plan| {
        let mut out = Cursor::new(Vec::new());
        write_source_with(&mut out, source, created_at, Path::new("mem"), plan).map(|s| (s, out.into_inner()))
    };
    let (one, parts) = (write(Encode::sequential()), write(tiny_parts()));
    match (&one, &parts) {
        (Ok(a), Ok(b)) => assert!(a == b, "the parts wrote other bytes"),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!(
            "sequential {:?} / in parts {:?}",
            one.as_ref().map(|x| x.0),
            parts.map(|x| x.0)
        ),
    }
    one
}

fn write_model(m: &Model) -> Result<(WriteSummary, Vec<u8>), SnapshotError> {
    write_both(m, CREATED_AT)
}

fn tiny_model() -> Model {
    Model {
        contexts: vec![(
            "u".into(),
            vec![
                ("a".into(), 3, 1000, EventKind::Add),
                ("b".into(), 0, 2000, EventKind::Del),
            ],
        )],
        pairs: vec![("a".into(), "b".into(), 6.0)],
        vectors: vec![("a".into(), vec![1.0, -0.5])],
    }
}

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
        .collect()
}

/// `tiny_model()` written by hand (CRCs computed independently with zlib).
const TINY_HEX: &str = "
    4e564543 01000000 00000000 02000000 01000000 01000000  # NVEC v1 flags events=2 vectors=1 pairs=1
    00f1536500000000 e800000000000000                      # created_at 1700000000, file_size 232
    01000000 4500000000000000                              # events, payload 69
      0100000000000000                                     # 1 context
      0100000000000000 75  0200000000000000                # \"u\", 2 events
      0100000000000000 61  03000000 e803000000000000 00    # a 3 1000 ADD
      0100000000000000 62  00000000 d007000000000000 02    # b 0 2000 DEL
    9d0cdbeb                                               # section CRC
    02000000 1e00000000000000                              # co_occurrence, payload 30
      0100000000000000 0100000000000000 61 0100000000000000 62 0000c040   # (a, b, 6.0)
    b2acb65d
    03000000 2500000000000000                              # vectors, payload 37
      02000000 0100000000000000                            # dimension 2, 1 vector
      0100000000000000 61 0200000000000000 0000803f 000000bf  # a [1.0, -0.5]
    9cb6dc77
    f7170b93 00000000                                      # file CRC, reserved
";

fn tiny_bytes() -> Vec<u8> {
    // strip comments first: they contain hex-looking letters
    let clean: String = TINY_HEX
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    hex(&clean)
}

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("snapshots-testdata")
        .join(name)
}

fn batches_to_model(batches: Vec<LoadBatch>) -> (Model, Vec<usize>) {
    let mut m = Model::default();
    let mut names = crate::store::ItemNames::default();
    let mut dims = Vec::new();
    for b in batches {
        match b {
            LoadBatch::Contexts(cs) => m.push_contexts(&mut names, cs),
            LoadBatch::Pairs(ps) => m.push_pairs(&mut names, ps),
            LoadBatch::Dimension(d) => dims.push(d),
            LoadBatch::Vectors(vs) => m.vectors.extend(vs.into_iter().map(|v| (v.id, v.values))),
        }
    }
    (m, dims)
}

// ---------------------------------------------------------------- writer

#[test]
fn tiny_store_encodes_to_hand_written_bytes() {
    let (summary, bytes) = write_model(&tiny_model()).unwrap();
    let expected = tiny_bytes();
    assert_eq!(expected.len(), 232);
    assert_eq!(bytes, expected);
    assert_eq!(summary.crc, 0x930B_17F7);
    assert_eq!(summary.header.file_size, 232);
    assert_eq!(
        (
            summary.header.event_count,
            summary.header.pair_count,
            summary.header.vector_count
        ),
        (2, 1, 1)
    );
}

#[test]
fn payloads_are_bincode_default_encodings() {
    let m = tiny_model();
    let (_, bytes) = write_model(&m).unwrap();
    let [ev, co, ve] = testkit::payload_ranges(&bytes).unwrap();
    type BincodeContext = (String, Vec<(String, i32, u64, u8)>);
    let events: Vec<BincodeContext> = m
        .contexts
        .iter()
        .map(|(c, es)| {
            (
                c.clone(),
                es.iter()
                    .map(|(i, s, t, k)| (i.clone(), *s, *t, *k as u8))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(&bytes[ev], bincode::serialize(&events).unwrap().as_slice());
    assert_eq!(&bytes[co], bincode::serialize(&m.pairs).unwrap().as_slice());
    let vectors = (2u32, m.vectors.clone());
    assert_eq!(&bytes[ve], bincode::serialize(&vectors).unwrap().as_slice());
}

#[test]
fn writing_the_same_image_twice_gives_identical_bytes() {
    let m = big_model(50, 7, 30);
    let (a, x) = write_model(&m).unwrap();
    let (b, y) = write_model(&m).unwrap();
    assert_eq!(x, y);
    assert_eq!(a, b);
    assert_eq!(verify(&x).unwrap().crc, a.crc);
}

#[test]
fn a_snapshot_written_around_the_page_cache_has_the_same_bytes() {
    let m = big_model(300, 20, 50);
    let (_, want) = write_model(&m).unwrap();
    assert!(want.len() > 100_000);
    for blocks in [2, 1024] {
        let dir = tempfile::tempdir().unwrap();
        let d = files::SnapshotDir::open(dir.path()).unwrap();
        let target = d.root().join("s.nvec");
        d.write_atomically(&target, false, |f| {
            let (summary, done) =
                direct::write_direct_with(f, blocks, true, |out| write_source(out, &m, CREATED_AT, &target));
            done.unwrap();
            summary
        })
        .unwrap();
        assert!(std::fs::read(&target).unwrap() == want, "{blocks} blocks");
        verify_file(&mut std::fs::File::open(&target).unwrap(), &target, opts()).unwrap();
    }
}

#[test]
fn contexts_without_events_are_skipped_by_the_writer_and_refused_by_the_reader() {
    let mut m = tiny_model();
    m.contexts.insert(0, ("empty".into(), vec![]));
    assert_eq!(write_model(&m).unwrap().1, tiny_bytes());
    let mut c = Crafted::ok();
    c.ev = ev_payload(&[(b"b", &[]), (b"c", E1)]);
    expect_corrupt(
        &c,
        "Corrupt snapshot: events section: context \"b\" has no events",
    );
}

#[test]
fn empty_store_is_the_smallest_file() {
    let (s, bytes) = write_model(&Model::default()).unwrap();
    assert_eq!(bytes.len(), MIN_FILE_LEN);
    let r = verify(&bytes).unwrap();
    assert_eq!(r.crc, s.crc);
    let (_, batches) = Scratch::new().load(&bytes, opts()).unwrap();
    assert_eq!(batches, vec![LoadBatch::Dimension(0)]);
}

#[test]
fn writer_refuses_states_the_reader_would_refuse() {
    let one_event = || vec![("i".to_string(), 1, 0, EventKind::Add)];
    let pairs = |ps: &[(&str, &str)]| Model {
        pairs: ps
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string(), 1.0))
            .collect(),
        ..Model::default()
    };
    let cases: Vec<(Model, &str)> = vec![
        (
            Model {
                contexts: vec![("b".into(), one_event()), ("a".into(), one_event())],
                ..Model::default()
            },
            "contexts not strictly sorted",
        ),
        (
            Model {
                contexts: vec![("".into(), one_event())],
                ..Model::default()
            },
            "empty context name",
        ),
        (
            Model {
                contexts: vec![("c".into(), vec![("i".into(), 101, 0, EventKind::Add)])],
                ..Model::default()
            },
            "event score 101",
        ),
        (
            Model {
                contexts: vec![("c".into(), vec![("i".into(), 1, 0, EventKind::Del)])],
                ..Model::default()
            },
            "DEL event with score 1",
        ),
        (
            Model {
                pairs: vec![("a".into(), "b".into(), 0.0)],
                ..Model::default()
            },
            "score 0",
        ),
        (
            Model {
                pairs: vec![("b".into(), "a".into(), 1.0)],
                ..Model::default()
            },
            "is not a < b",
        ),
        (
            Model {
                pairs: vec![("a".into(), "b".into(), f32::NAN)],
                ..Model::default()
            },
            "score NaN",
        ),
        // the writer takes pairs a row (same `a`) at a time: the order checks
        // inside a row, across rows and against the first pair of a row
        (
            pairs(&[("a", "c"), ("a", "b")]),
            "pairs not strictly sorted: (\"a\", \"b\") after (\"a\", \"c\")",
        ),
        (pairs(&[("a", "b"), ("a", "b")]), "pairs not strictly sorted"),
        (
            pairs(&[("b", "c"), ("b", "a")]),
            "pair (\"b\", \"a\") is not a < b",
        ),
        (
            pairs(&[("b", "c"), ("a", "d")]),
            "pairs not strictly sorted: (\"a\", \"d\") after (\"b\", \"c\")",
        ),
        (
            pairs(&[("a", "b"), ("c", "d"), ("a", "e")]),
            "(\"a\", \"e\") after (\"c\", \"d\")",
        ),
        (pairs(&[("a", "b"), ("a", "c"), ("a", "")]), "empty pair item"),
        (
            pairs(&[("a", "b"), ("a", "c"), ("b", "c"), ("b", "d"), ("b", "c")]),
            "(\"b\", \"c\") after (\"b\", \"d\")",
        ),
        (
            Model {
                vectors: vec![("a".into(), vec![1.0]), ("b".into(), vec![1.0, 2.0])],
                ..Model::default()
            },
            "has 2 values, dimension is 1",
        ),
        (
            Model {
                vectors: vec![("a".into(), vec![f32::INFINITY])],
                ..Model::default()
            },
            "non-finite",
        ),
    ];
    for (m, want) in cases {
        match write_model(&m) {
            Err(SnapshotError::InvalidImage(msg)) => assert!(msg.contains(want), "{msg} / {want}"),
            other => panic!("{want}: {:?}", other.map(|x| x.0)),
        }
    }
}

/// What the writer's checks said when they took one pair at a time (before
/// it took rows): the first failing check of the first failing pair.
fn pair_checks_one_at_a_time(pairs: &[(String, String, f32)]) -> Result<(), String> {
    let mut prev: Option<(&str, &str)> = None;
    for (a, b, s) in pairs {
        if a.is_empty() || b.is_empty() {
            return Err("empty pair item".into());
        }
        if a >= b {
            return Err(format!("pair ({a:?}, {b:?}) is not a < b"));
        }
        if let Some((pa, pb)) = prev {
            if (a.as_str(), b.as_str()) <= (pa, pb) {
                return Err(format!(
                    "pairs not strictly sorted: ({a:?}, {b:?}) after ({pa:?}, {pb:?})"
                ));
            }
        }
        if !(s.is_finite() && *s > 0.0) {
            return Err(format!("pair ({a:?}, {b:?}) has score {s}"));
        }
        prev = Some((a, b));
    }
    Ok(())
}

#[test]
fn row_wise_pair_checks_give_the_pair_wise_answers() {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    const NAMES: [&str; 6] = ["", "a", "b", "ba", "c", "d"];
    let (mut ok, mut refused) = (0, 0);
    for round in 0..20_000 {
        let n = (next() % 7) as usize;
        let mut pairs: Vec<(String, String, f32)> = (0..n)
            .map(|_| {
                let a = NAMES[(next() % 6) as usize].to_string();
                let b = NAMES[(next() % 6) as usize].to_string();
                let s = if next() % 50 == 0 { 0.0 } else { 1.5 };
                (a, b, s)
            })
            .collect();
        if round % 2 == 0 {
            // mostly valid lists, so that the late checks are reached
            pairs.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
            if n > 2 && next() % 2 == 0 {
                pairs.swap((next() as usize) % n, (next() as usize) % n);
            }
        }
        let want = pair_checks_one_at_a_time(&pairs);
        let got = write_model(&Model {
            pairs: pairs.clone(),
            ..Model::default()
        });
        match (&want, got) {
            (Ok(()), Ok((summary, bytes))) => {
                ok += 1;
                assert_eq!(summary.header.pair_count as usize, pairs.len());
                let (_, batches) = Scratch::new().load(&bytes, opts()).unwrap();
                assert_eq!(batches_to_model(batches).0.pairs, pairs);
            }
            (Err(w), Err(SnapshotError::InvalidImage(msg))) => {
                refused += 1;
                assert!(msg.contains(w.as_str()), "{pairs:?}: {msg} / {w}");
            }
            (w, g) => panic!("{pairs:?}: want {w:?}, got {:?}", g.map(|x| x.0)),
        }
    }
    assert!(ok > 1000 && refused > 1000, "{ok} written, {refused} refused");
}

/// A sink that fails like a full disk after `room` bytes.
struct FullDisk {
    inner: Cursor<Vec<u8>>,
    room: usize,
    /// Panic instead of failing (a bug below the writer).
    panic: bool,
}
impl Write for FullDisk {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.inner.get_ref().len() + buf.len() > self.room {
            assert!(!self.panic, "the test sink panics when full");
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
impl Seek for FullDisk {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[test]
fn full_disk_error_keeps_the_os_message() {
    let m = big_model(2000, 10, 100);
    let mut out = FullDisk {
        inner: Cursor::new(Vec::new()),
        room: 300_000,
        panic: false,
    };
    let err = write_source(&mut out, &m, CREATED_AT, Path::new("/snap/x.nvec")).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, SnapshotError::Io { .. }), "{text}");
    assert!(text.contains("No space left on device"), "{text}");
    assert!(text.contains("/snap/x.nvec"), "{text}");
}

#[test]
fn a_failing_or_panicking_sink_stops_the_part_encoders() {
    // 10,000 pairs (~300 KB, more than the writer's buffer) in 2,000 rows
    let mut m = Model::default();
    for i in 0..2000 {
        for j in i + 1..=i + 5 {
            m.pairs.push((format!("p{i:04}"), format!("p{j:04}"), 1.0));
        }
    }
    let full = |panic| FullDisk {
        inner: Cursor::new(Vec::new()),
        room: 100_000,
        panic,
    };
    let err = write_source_with(&mut full(false), &m, CREATED_AT, Path::new("x"), tiny_parts()).unwrap_err();
    assert!(err.to_string().contains("No space left on device"), "{err}");
    // A panic on the writing thread reaches the caller; the workers stop
    // instead of waiting for it forever (the test would hang).
    let r = std::panic::catch_unwind(|| {
        let _ = write_source_with(&mut full(true), &m, CREATED_AT, Path::new("x"), tiny_parts());
    });
    assert!(r.is_err());
}

fn big_model(contexts: usize, per: usize, vectors: usize) -> Model {
    let mut m = Model::default();
    for c in 0..contexts {
        let evs = (0..per)
            .map(|i| {
                let kind = match i % 3 {
                    0 => EventKind::Add,
                    1 => EventKind::Set,
                    _ => EventKind::Del,
                };
                let score = if kind == EventKind::Del {
                    0
                } else {
                    (i * 7 % 101) as i32
                };
                (
                    format!("item{:03}", (c + i) % 97),
                    score,
                    (c * 1000 + i) as u64,
                    kind,
                )
            })
            .collect();
        m.contexts.push((format!("ctx{c:05}"), evs));
    }
    for a in 0..40 {
        for b in a + 1..40 {
            if (a * b) % 3 == 0 {
                m.pairs
                    .push((format!("item{a:03}"), format!("item{b:03}"), (a + b) as f32 * 0.5));
            }
        }
    }
    for v in 0..vectors {
        m.vectors
            .push((format!("item{v:03}"), vec![v as f32, -1.5, 0.25, 1e-3]));
    }
    m
}

// ---------------------------------------------------------------- reader

#[test]
fn tiny_file_verifies_and_loads_in_order() {
    let bytes = tiny_bytes();
    let r = verify(&bytes).unwrap();
    assert_eq!(r.crc, 0x930B_17F7);
    assert_eq!(r.header.created_at, CREATED_AT);
    let (_, batches) = Scratch::new().load(&bytes, opts()).unwrap();
    let (m, dims) = batches_to_model(batches);
    assert_eq!(m, tiny_model());
    assert_eq!(dims, vec![2]);
}

#[test]
fn load_batches_are_bounded_and_ordered() {
    let m = big_model(20, 2, 10);
    let (_, bytes) = write_model(&m).unwrap();
    let (_, batches) = Scratch::new()
        .load(
            &bytes,
            LoadOptions {
                default_dimension: 4,
                batch_records: 7,
            },
        )
        .unwrap();
    let mut phase = 0;
    for b in &batches {
        let (p, n) = match b {
            LoadBatch::Contexts(cs) => (0, cs.contexts.iter().map(|c| 1 + c.events.len()).sum()),
            LoadBatch::Pairs(ps) => (1, ps.pairs.len()),
            LoadBatch::Dimension(_) => (2, 1),
            LoadBatch::Vectors(vs) => (3, vs.len()),
        };
        assert!(p >= phase, "batch order");
        if p == 2 {
            assert!(phase < 2, "one Dimension batch");
        }
        phase = p;
        assert!((1..=7).contains(&n), "batch of {n}");
    }
    assert_eq!(batches_to_model(batches).0, m);
}

#[test]
fn sink_error_stops_the_load() {
    let bytes = tiny_bytes();
    let mut s = Scratch::new();
    let err = load_file(s.put(&bytes), Path::new("x"), opts(), |_| {
        Err(SnapshotError::LoadInProgress)
    })
    .unwrap_err();
    assert!(matches!(err, SnapshotError::LoadInProgress));
}

#[test]
fn read_header_checks_magic_version_and_length_only() {
    let mut s = Scratch::new();
    let bytes = tiny_bytes();
    let h = read_header(s.put(&bytes), Path::new("x")).unwrap();
    assert_eq!(h.file_size, 232);
    // size and CRC are not read_header's business
    let h = read_header(s.put(&bytes[..100]), Path::new("x")).unwrap();
    assert_eq!(h.event_count, 2);
    assert!(matches!(
        read_header(s.put(b"NVE"), Path::new("x")),
        Err(SnapshotError::BadMagic)
    ));
    assert!(matches!(
        read_header(s.put(&bytes[..39]), Path::new("x")),
        Err(SnapshotError::Truncated {
            expected: 40,
            actual: 39
        })
    ));
    let mut v2 = bytes.clone();
    v2[4] = 2;
    assert!(matches!(
        read_header(s.put(&v2), Path::new("x")),
        Err(SnapshotError::VersionMismatch { found: 2 })
    ));
    // DUMP INFO also refuses unknown flag bits (SPEC 4.3), after the above.
    let mut flagged = bytes.clone();
    flagged[11] = 0x80;
    assert_eq!(
        read_info(s.put(&flagged), Path::new("x"))
            .unwrap_err()
            .to_string(),
        "Corrupt snapshot: unknown flags 0x80000000"
    );
    assert!(read_header(s.put(&flagged), Path::new("x")).is_ok());
    flagged[0] = b'X';
    assert!(matches!(
        read_info(s.put(&flagged), Path::new("x")),
        Err(SnapshotError::BadMagic)
    ));
    assert_eq!(read_info(s.put(&bytes), Path::new("x")).unwrap().file_size, 232);
}

#[test]
fn errors_come_in_spec_order() {
    let good = tiny_bytes();
    let mut s = Scratch::new();
    // short files
    for n in 0..4 {
        assert!(
            matches!(s.verify(&good[..n]), Err(SnapshotError::BadMagic)),
            "{n}"
        );
    }
    for n in 4..40 {
        match s.verify(&good[..n]) {
            Err(SnapshotError::Truncated { expected: 40, actual }) => assert_eq!(actual, n as u64),
            other => panic!("{n}: {other:?}"),
        }
    }
    // bad magic wins over everything
    let mut b = good.clone();
    b[0] = b'X';
    b[4] = 9;
    assert!(matches!(s.verify(&b), Err(SnapshotError::BadMagic)));
    // version before size
    let mut b = good.clone();
    b[4] = 2;
    b.push(0);
    assert!(matches!(
        s.verify(&b),
        Err(SnapshotError::VersionMismatch { found: 2 })
    ));
    // size before CRC: a longer file too
    let mut b = good.clone();
    b.push(0);
    assert_eq!(
        s.verify(&b).unwrap_err().to_string(),
        "Snapshot truncated: header says 232 bytes, file has 233 bytes"
    );
    // file CRC before section CRC and before flags
    let mut b = good.clone();
    b[60] ^= 1;
    testkit::edit_header(&mut b, |h| h.flags = 4);
    match s.verify(&b) {
        Err(e @ SnapshotError::CrcMismatch { .. }) => {
            assert_eq!(e.detail_lines()[0].1, "0x930B17F7");
        }
        other => panic!("{other:?}"),
    }
    // reserved footer field
    let mut b = good.clone();
    let n = b.len();
    b[n - 1] = 1;
    assert!(s
        .verify(&b)
        .unwrap_err()
        .to_string()
        .contains("footer reserved field"));
    // section CRC before flags
    let mut b = good.clone();
    b[60] ^= 1;
    testkit::edit_header(&mut b, |h| h.flags = 4);
    testkit::fix_file_crc(&mut b);
    assert_eq!(
        s.verify(&b).unwrap_err().to_string(),
        "CRC mismatch in events section: file may be corrupted"
    );
    // flags after the CRCs, before decoding
    let mut b = good.clone();
    testkit::edit_header(&mut b, |h| {
        h.flags = 4;
        h.event_count = 9;
    });
    testkit::fix_file_crc(&mut b);
    assert_eq!(
        s.verify(&b).unwrap_err().to_string(),
        "Corrupt snapshot: unknown flags 0x00000004"
    );
}

/// A LOAD CRC-checks while it decodes: a file whose only fault is a stored
/// CRC (the bytes it covers intact) is still refused, with VERIFY's error.
#[test]
fn load_refuses_a_file_whose_only_fault_is_a_stored_crc() {
    let good = tiny_bytes();
    let mut s = Scratch::new();
    // the footer's file CRC
    let mut b = good.clone();
    let n = b.len();
    b[n - 8] ^= 0x10;
    assert!(matches!(s.verify(&b), Err(SnapshotError::CrcMismatch { .. })));
    // each section's stored CRC, the file CRC fixed to match
    let ranges = testkit::payload_ranges(&good).expect("framed");
    for (range, name) in ranges.iter().zip(["events", "co_occurrence", "vectors"]) {
        let mut b = good.clone();
        b[range.end] ^= 0x01;
        testkit::fix_file_crc(&mut b);
        assert_eq!(
            s.verify(&b).unwrap_err().to_string(),
            format!("CRC mismatch in {name} section: file may be corrupted")
        );
    }
}

#[test]
fn section_framing_is_checked() {
    let good = tiny_bytes();
    let mut s = Scratch::new();
    let cases: Vec<(usize, u8, &str)> = vec![
        (40, 2, "expected events section (tag 1), found tag 2"),
        (44, 0xFF, "events section: payload length"),
        (40 + 12 + 69 + 4, 3, "expected co_occurrence section"),
    ];
    for (off, val, want) in cases {
        let mut b = good.clone();
        b[off] = val;
        testkit::fix_file_crc(&mut b);
        let e = s.verify(&b).unwrap_err().to_string();
        assert!(e.starts_with("Corrupt snapshot: ") && e.contains(want), "{e}");
    }
    // sections that do not add up to the file: extra bytes before the footer
    let mut b = good[..good.len() - 8].to_vec();
    b.extend_from_slice(&[0, 0, 0]);
    b.extend_from_slice(&[0; 8]);
    let n = b.len() as u64;
    testkit::edit_header(&mut b, |h| h.file_size = n);
    testkit::fix_file_crc(&mut b);
    assert_eq!(
        s.verify(&b).unwrap_err().to_string(),
        "Corrupt snapshot: 3 unexpected bytes after the vectors section"
    );
    // a file too short for a footer
    let mut b = good[..44].to_vec();
    testkit::edit_header(&mut b, |h| h.file_size = 44);
    assert_eq!(
        s.verify(&b).unwrap_err().to_string(),
        "Corrupt snapshot: file of 44 bytes is shorter than the smallest snapshot (124 bytes)"
    );
    // header and footer only: the CRC is checked, then the sections are missing
    let mut b = good[..40].to_vec();
    b.extend_from_slice(&[0; 8]);
    testkit::edit_header(&mut b, |h| h.file_size = 48);
    assert!(matches!(s.verify(&b), Err(SnapshotError::CrcMismatch { .. })));
    testkit::fix_file_crc(&mut b);
    assert_eq!(
        s.verify(&b).unwrap_err().to_string(),
        "Corrupt snapshot: events section missing: 0 bytes left before the footer"
    );
}

#[test]
fn every_byte_flip_and_truncation_is_refused() {
    let mut files = vec![("tiny", tiny_bytes())];
    if let Ok(golden) = std::fs::read(testdata("valid.nvec")) {
        files.push(("valid.nvec", golden));
    }
    let mut s = Scratch::new();
    for (name, good) in files {
        assert!(s.verify(&good).is_ok());
        let mut flips = 0;
        for i in 0..good.len() {
            for mask in [0x01u8, 0x80, 0xFF] {
                let mut b = good.clone();
                b[i] ^= mask;
                assert!(s.verify(&b).is_err(), "{name}: flip {mask:#x} at {i} accepted");
                flips += 1;
            }
        }
        for n in 0..good.len() {
            assert!(
                s.verify(&good[..n]).is_err(),
                "{name}: truncation to {n} accepted"
            );
        }
        println!(
            "{name}: {flips} byte flips and {} truncations refused",
            good.len()
        );
    }
}

// ------------------------------------------------- crafted, valid CRCs

fn header(events: u32, vectors: u32, pairs: u32) -> Header {
    Header {
        version: VERSION,
        flags: 0,
        event_count: events,
        vector_count: vectors,
        pair_count: pairs,
        created_at: CREATED_AT,
        file_size: 0,
    }
}

type RawEvent<'a> = (&'a [u8], i32, u64, u8);

fn ev_payload(ctxs: &[(&[u8], &[RawEvent<'_>])]) -> Vec<u8> {
    let mut p = (ctxs.len() as u64).to_le_bytes().to_vec();
    for (name, evs) in ctxs {
        put_str(&mut p, name);
        p.extend_from_slice(&(evs.len() as u64).to_le_bytes());
        for (id, score, ts, kind) in *evs {
            put_str(&mut p, id);
            p.extend_from_slice(&score.to_le_bytes());
            p.extend_from_slice(&ts.to_le_bytes());
            p.push(*kind);
        }
    }
    p
}

fn co_payload(pairs: &[(&[u8], &[u8], f32)]) -> Vec<u8> {
    let mut p = (pairs.len() as u64).to_le_bytes().to_vec();
    for (a, b, s) in pairs {
        put_str(&mut p, a);
        put_str(&mut p, b);
        p.extend_from_slice(&s.to_le_bytes());
    }
    p
}

fn ve_payload(dim: u32, vecs: &[(&[u8], &[f32])]) -> Vec<u8> {
    let mut p = dim.to_le_bytes().to_vec();
    p.extend_from_slice(&(vecs.len() as u64).to_le_bytes());
    for (id, vals) in vecs {
        put_str(&mut p, id);
        p.extend_from_slice(&(vals.len() as u64).to_le_bytes());
        for v in *vals {
            p.extend_from_slice(&v.to_le_bytes());
        }
    }
    p
}

const E1: &[RawEvent<'static>] = &[(b"i", 5, 1, 0)];

struct Crafted {
    h: Header,
    ev: Vec<u8>,
    co: Vec<u8>,
    ve: Vec<u8>,
}

impl Crafted {
    /// One context with one event, one pair, one vector of dimension 2.
    fn ok() -> Self {
        Crafted {
            h: header(1, 1, 1),
            ev: ev_payload(&[(b"c", E1)]),
            co: co_payload(&[(b"a", b"b", 1.0)]),
            ve: ve_payload(2, &[(b"v", &[1.0, 2.0])]),
        }
    }
    fn bytes(&self) -> Vec<u8> {
        assemble(self.h, [&self.ev, &self.co, &self.ve])
    }
}

fn expect_corrupt(c: &Crafted, want: &str) {
    expect_corrupt_with(c, opts(), want);
}

fn expect_corrupt_with(c: &Crafted, o: LoadOptions, want: &str) {
    let bytes = c.bytes();
    let mut s = Scratch::new();
    for result in [
        s.verify_with(&bytes, o).map(|_| ()),
        s.load(&bytes, o).map(|_| ()),
    ] {
        match result {
            Err(SnapshotError::Corrupt(msg)) => {
                assert_eq!(format!("Corrupt snapshot: {msg}"), want)
            }
            other => panic!("wanted {want:?}, got {other:?}"),
        }
    }
}

#[test]
fn crafted_baseline_is_valid() {
    let bytes = Crafted::ok().bytes();
    verify(&bytes).unwrap();
}

#[test]
fn huge_counts_are_refused_before_allocating() {
    let mut c = Crafted::ok();
    c.ev = u64::MAX.to_le_bytes().to_vec();
    expect_corrupt(
        &c,
        "Corrupt snapshot: events section: context count 18446744073709551615 exceeds remaining bytes",
    );

    let mut c = Crafted::ok();
    c.ev = 1u64.to_le_bytes().to_vec();
    put_str(&mut c.ev, b"c");
    c.ev.extend_from_slice(&u64::MAX.to_le_bytes());
    expect_corrupt(
        &c,
        "Corrupt snapshot: events section: event count 18446744073709551615 exceeds remaining bytes",
    );

    let mut c = Crafted::ok();
    c.ev = 1u64.to_le_bytes().to_vec();
    c.ev.extend_from_slice(&u64::MAX.to_le_bytes());
    c.ev.extend_from_slice(&[0u8; 30]);
    expect_corrupt(
        &c,
        "Corrupt snapshot: events section: context name length 18446744073709551615 exceeds remaining bytes",
    );

    let mut c = Crafted::ok();
    c.co = u64::MAX.to_le_bytes().to_vec();
    expect_corrupt(
        &c,
        "Corrupt snapshot: co_occurrence section: pair count 18446744073709551615 exceeds remaining bytes",
    );

    let mut c = Crafted::ok();
    c.h.vector_count = u32::MAX;
    c.ve = 2u32.to_le_bytes().to_vec();
    c.ve.extend_from_slice(&u64::from(u32::MAX).to_le_bytes());
    expect_corrupt(
        &c,
        "Corrupt snapshot: vectors section: vector count 4294967295 with dimension 2 exceeds remaining bytes",
    );

    let mut c = Crafted::ok();
    c.ve = ve_payload(u32::MAX, &[(b"v", &[1.0, 2.0])]);
    expect_corrupt(
        &c,
        "Corrupt snapshot: vectors section: vector count 1 with dimension 4294967295 exceeds remaining bytes",
    );
    // even with a matching default dimension configured
    let mut c = Crafted::ok();
    c.ve = ve_payload(u32::MAX, &[(b"v", &[1.0, 2.0])]);
    expect_corrupt_with(
        &c,
        LoadOptions {
            default_dimension: u32::MAX as usize,
            batch_records: 10,
        },
        "Corrupt snapshot: vectors section: vector count 1 with dimension 4294967295 exceeds remaining bytes",
    );
}

#[test]
fn invalid_utf8_and_empty_strings_are_refused() {
    let mut c = Crafted::ok();
    c.ev = ev_payload(&[(b"\xff", E1)]);
    expect_corrupt(
        &c,
        "Corrupt snapshot: events section: invalid UTF-8 in context name",
    );
    let mut c = Crafted::ok();
    c.ev = ev_payload(&[(b"c", &[(b"\xc3", 5, 1, 0)])]);
    expect_corrupt(&c, "Corrupt snapshot: events section: invalid UTF-8 in event id");
    let mut c = Crafted::ok();
    c.co = co_payload(&[(b"a", b"\xe2\x82", 1.0)]);
    expect_corrupt(
        &c,
        "Corrupt snapshot: co_occurrence section: invalid UTF-8 in pair item",
    );
    let mut c = Crafted::ok();
    c.ve = ve_payload(2, &[(b"\x80", &[1.0, 2.0])]);
    expect_corrupt(
        &c,
        "Corrupt snapshot: vectors section: invalid UTF-8 in vector id",
    );
    let mut c = Crafted::ok();
    c.ev = ev_payload(&[(b"", E1)]);
    expect_corrupt(&c, "Corrupt snapshot: events section: empty context name");
    let mut c = Crafted::ok();
    c.h.event_count = 2;
    c.ev = ev_payload(&[(b"c", &[(b"", 5, 1, 0)]), (b"d", E1)]);
    expect_corrupt(&c, "Corrupt snapshot: events section: empty event id");
    let mut c = Crafted::ok();
    c.h.vector_count = 2;
    c.ve = ve_payload(2, &[(b"", &[1.0, 2.0]), (b"wwwww", &[1.0, 2.0])]);
    expect_corrupt(&c, "Corrupt snapshot: vectors section: empty vector id");
}

#[test]
fn unsorted_and_duplicate_records_are_refused() {
    let mut c = Crafted::ok();
    c.h.event_count = 2;
    c.ev = ev_payload(&[(b"d", E1), (b"c", E1)]);
    expect_corrupt(
        &c,
        "Corrupt snapshot: events section: contexts not sorted: \"c\" after \"d\"",
    );
    c.ev = ev_payload(&[(b"c", E1), (b"c", E1)]);
    expect_corrupt(&c, "Corrupt snapshot: events section: duplicate context \"c\"");

    let mut c = Crafted::ok();
    c.co = co_payload(&[(b"b", b"a", 1.0)]);
    expect_corrupt(
        &c,
        "Corrupt snapshot: co_occurrence section: pair (\"b\", \"a\") is not ordered a < b",
    );
    c.co = co_payload(&[(b"a", b"a", 1.0)]);
    expect_corrupt(
        &c,
        "Corrupt snapshot: co_occurrence section: pair (\"a\", \"a\") is not ordered a < b",
    );
    c.h.pair_count = 2;
    c.co = co_payload(&[(b"a", b"c", 1.0), (b"a", b"b", 1.0)]);
    expect_corrupt(
        &c,
        "Corrupt snapshot: co_occurrence section: pairs not sorted at (\"a\", \"b\")",
    );
    c.co = co_payload(&[(b"a", b"b", 1.0), (b"a", b"b", 2.0)]);
    expect_corrupt(
        &c,
        "Corrupt snapshot: co_occurrence section: duplicate pair (\"a\", \"b\")",
    );

    let mut c = Crafted::ok();
    c.h.vector_count = 2;
    c.ve = ve_payload(1, &[(b"w", &[1.0]), (b"v", &[1.0])]);
    expect_corrupt(
        &c,
        "Corrupt snapshot: vectors section: vectors not sorted: \"v\" after \"w\"",
    );
    c.ve = ve_payload(1, &[(b"v", &[1.0]), (b"v", &[1.0])]);
    expect_corrupt(&c, "Corrupt snapshot: vectors section: duplicate vector \"v\"");
}

#[test]
fn values_out_of_range_are_refused() {
    for (score, kind, want) in [
        (
            101,
            0,
            "Corrupt snapshot: events section: context \"c\": event score 101 out of range 0..=100",
        ),
        (
            -1,
            1,
            "Corrupt snapshot: events section: context \"c\": event score -1 out of range 0..=100",
        ),
        (
            5,
            3,
            "Corrupt snapshot: events section: context \"c\": event kind 3 is not 0, 1 or 2",
        ),
        (
            5,
            2,
            "Corrupt snapshot: events section: context \"c\": DEL event with score 5",
        ),
    ] {
        let mut c = Crafted::ok();
        c.ev = ev_payload(&[(b"c", &[(b"i", score, 1, kind)])]);
        expect_corrupt(&c, want);
    }
    // timestamps are not checked
    let mut c = Crafted::ok();
    c.ev = ev_payload(&[(b"c", &[(b"i", 0, u64::MAX, 2)])]);
    verify(&c.bytes()).unwrap();

    for (s, shown) in [
        (f32::NAN, "NaN"),
        (f32::INFINITY, "inf"),
        (f32::NEG_INFINITY, "-inf"),
        (-1.0, "-1"),
        (0.0, "0"),
        (-0.0, "-0"),
    ] {
        let mut c = Crafted::ok();
        c.co = co_payload(&[(b"a", b"b", s)]);
        expect_corrupt(
            &c,
            &format!(
                "Corrupt snapshot: co_occurrence section: pair (\"a\", \"b\"): score {shown} is not finite and > 0"
            ),
        );
    }
    for v in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut c = Crafted::ok();
        c.ve = ve_payload(2, &[(b"v", &[1.0, v])]);
        expect_corrupt(
            &c,
            "Corrupt snapshot: vectors section: vector \"v\": value 1 is not finite",
        );
    }
}

#[test]
fn vector_shape_is_checked() {
    let mut c = Crafted::ok();
    c.ve = ve_payload(2, &[(b"v", &[1.0, 2.0, 3.0])]);
    expect_corrupt(
        &c,
        "Corrupt snapshot: vectors section: vector \"v\": length 3 differs from dimension 2",
    );
    c.ve = ve_payload(0, &[(b"v", &[])]);
    expect_corrupt(
        &c,
        "Corrupt snapshot: vectors section: dimension 0 with 1 vectors",
    );
    c.h.vector_count = 0;
    c.ve = ve_payload(3, &[]);
    expect_corrupt(
        &c,
        "Corrupt snapshot: vectors section: dimension 3 with no vectors",
    );

    let c = Crafted::ok();
    expect_corrupt_with(
        &c,
        LoadOptions {
            default_dimension: 3,
            batch_records: 10,
        },
        "Corrupt snapshot: vector dimension 2 differs from vectors.default_dimension 3",
    );
    let o = LoadOptions {
        default_dimension: 2,
        batch_records: 10,
    };
    Scratch::new().verify_with(&c.bytes(), o).unwrap();
    // an empty vector section loads under any default dimension
    let mut c = Crafted::ok();
    c.h.vector_count = 0;
    c.ve = ve_payload(0, &[]);
    Scratch::new().verify_with(&c.bytes(), o).unwrap();
}

#[test]
fn header_totals_must_match_the_sections() {
    let mut c = Crafted::ok();
    c.h.event_count = 2;
    expect_corrupt(&c, "Corrupt snapshot: events section: 1 events, header says 2");
    c.h.event_count = 0;
    expect_corrupt(
        &c,
        "Corrupt snapshot: events section: more events than the header's event_store_count 0",
    );
    let mut c = Crafted::ok();
    c.h.pair_count = 7;
    expect_corrupt(
        &c,
        "Corrupt snapshot: co_occurrence section: 1 pairs, header says 7",
    );
    let mut c = Crafted::ok();
    c.h.vector_count = 0;
    expect_corrupt(&c, "Corrupt snapshot: vectors section: 1 vectors, header says 0");
}

#[test]
fn trailing_bytes_and_short_records_are_refused() {
    for (section, want) in [
        (0, "Corrupt snapshot: events section: 2 trailing bytes"),
        (1, "Corrupt snapshot: co_occurrence section: 2 trailing bytes"),
        (2, "Corrupt snapshot: vectors section: 2 trailing bytes"),
    ] {
        let mut c = Crafted::ok();
        [&mut c.ev, &mut c.co, &mut c.ve][section].extend_from_slice(&[0, 0]);
        expect_corrupt(&c, want);
    }
    // the count fits (records are longer than the minimum) but the last one is cut
    let mut c = Crafted::ok();
    c.co = co_payload(&[(b"aaaaa", b"bbbbb", 1.0)]);
    c.co.truncate(c.co.len() - 1);
    expect_corrupt(
        &c,
        "Corrupt snapshot: co_occurrence section: pair score runs past the end of the section",
    );
    let mut c = Crafted::ok();
    c.co = co_payload(&[(b"a", b"b", 1.0)]);
    c.co.truncate(c.co.len() - 1);
    expect_corrupt(
        &c,
        "Corrupt snapshot: co_occurrence section: pair count 1 exceeds remaining bytes",
    );
}

#[test]
fn error_text_never_carries_raw_control_characters() {
    let mut c = Crafted::ok();
    c.h.event_count = 2;
    c.ev = ev_payload(&[(b"z\r\nOK", E1), (b"a", E1)]);
    let e = verify(&c.bytes()).unwrap_err().to_string();
    assert!(!e.contains('\n') && !e.contains('\r'), "{e}");
    assert!(e.contains("\\r\\n"), "{e}");
}

/// Deterministic random mutations, most with every CRC recomputed so they
/// reach the decoder: it must refuse or accept, never panic, and a LOAD must
/// give what a VERIFY gives.
#[test]
fn random_mutations_with_fixed_crcs_never_panic() {
    let (_, good) = write_model(&big_model(6, 4, 5)).unwrap();
    let mut s = Scratch::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut refused, mut accepted) = (0, 0);
    for _ in 0..3000 {
        let mut b = good.clone();
        for _ in 0..1 + next() % 4 {
            let i = (next() as usize) % b.len();
            match next() % 3 {
                0 => b[i] ^= 1 << (next() % 8),
                1 => b[i] = next() as u8,
                _ => b[i] = 0xFF,
            }
        }
        // keep the header's magic/version/size to get past the early checks
        b[..8].copy_from_slice(&good[..8]);
        b[32..40].copy_from_slice(&good[32..40]);
        // Most with every CRC fixed; some with the file CRC only, or none,
        // so the CRC checks and their order against the rest are met too.
        match next() % 4 {
            0 => testkit::fix_file_crc(&mut b),
            1 => {}
            _ => testkit::fix_all_crcs(&mut b),
        }
        let verified = s.verify(&b).map(|r| r.crc).map_err(|e| e.to_string());
        match verified {
            Ok(_) => accepted += 1,
            Err(_) => refused += 1,
        }
        // A LOAD checks the CRCs while it decodes; it must still give what
        // VERIFY gives, error included.
        let loaded = s.load(&b, opts()).map(|(r, _)| r.crc).map_err(|e| e.to_string());
        assert_eq!(loaded, verified, "LOAD and VERIFY disagree");
    }
    println!("random mutations: {refused} refused, {accepted} accepted");
    assert!(refused > 0);
}

// ---------------------------------------------------------------- golden files

/// One MANIFEST entry: the file and its expected `DUMP VERIFY` block lines
/// (first line, then `key: value` lines, without `END`).
fn manifest() -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(testdata("MANIFEST")).expect("snapshots-testdata/MANIFEST");
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(extra) = line.strip_prefix('\t') {
            out.last_mut()
                .expect("continuation after an entry")
                .1
                .push(extra.to_string());
        } else {
            let (file, head) = line.split_once('\t').expect("file<TAB>head");
            out.push((file.to_string(), vec![head.to_string()]));
        }
    }
    out
}

/// The block `DUMP VERIFY` answers for a result (as protocol/response.rs renders it).
fn verify_block(r: &Result<VerifyReport, SnapshotError>) -> Vec<String> {
    match r {
        Ok(rep) => vec![
            format!("OK Snapshot is valid (CRC32: 0x{:08X})", rep.crc),
            "status: valid".into(),
            "crc: verified".into(),
            "size: verified".into(),
        ],
        Err(e) => {
            let mut v = vec![format!("(error) {e}")];
            v.extend(e.detail_lines().into_iter().map(|(k, val)| format!("{k}: {val}")));
            v
        }
    }
}

#[test]
fn golden_files_give_the_manifest_results() {
    let entries = manifest();
    assert!(entries.len() >= 11, "manifest has {} entries", entries.len());
    for (file, expected) in entries {
        let bytes = std::fs::read(testdata(&file)).unwrap();
        let r = Scratch::new().verify(&bytes);
        assert_eq!(verify_block(&r), expected, "{file}");
    }
}

#[test]
fn golden_valid_file_re_encodes_to_identical_bytes() {
    for name in ["valid.nvec", "empty.nvec"] {
        let bytes = std::fs::read(testdata(name)).unwrap();
        let (rep, batches) = Scratch::new().load(&bytes, opts()).unwrap();
        let (m, _) = batches_to_model(batches);
        let mut out = Cursor::new(Vec::new());
        let s = write_source(&mut out, &m, rep.header.created_at, Path::new("mem")).unwrap();
        assert_eq!(out.into_inner(), bytes, "{name}");
        assert_eq!(s.crc, rep.crc);
    }
}

// ---------------------------------------------------------------- with the store

fn load_into_store(
    bytes: &[u8],
    o: LoadOptions,
) -> Result<(VerifyReport, crate::store::Store), SnapshotError> {
    use crate::store::{StoreBuilder, StoreConfig, StoreError};
    let mut builder = StoreBuilder::new(StoreConfig {
        default_dimension: o.default_dimension,
        ..StoreConfig::default()
    });
    let mut s = Scratch::new();
    let rep = load_file(s.put(bytes), Path::new("x"), o, |batch| {
        builder.apply(batch).map_err(|e| match e {
            StoreError::InvalidData(m) => SnapshotError::Corrupt(m),
            other => SnapshotError::Corrupt(other.to_string()),
        })
    })?;
    Ok((rep, builder.finish()))
}

fn write_image(store: &crate::store::Store, created_at: i64) -> (WriteSummary, Vec<u8>) {
    write_both(&store.freeze(), created_at).unwrap()
}

#[test]
fn golden_files_round_trip_through_the_store() {
    for name in ["valid.nvec", "empty.nvec"] {
        let bytes = std::fs::read(testdata(name)).unwrap();
        let (rep, store) = load_into_store(&bytes, opts()).unwrap();
        let stats = store.stats();
        assert_eq!(stats.events, u64::from(rep.header.event_count));
        assert_eq!(stats.vectors, u64::from(rep.header.vector_count));
        assert_eq!(stats.co_occurrence_pairs, u64::from(rep.header.pair_count));
        let (s, again) = write_image(&store, rep.header.created_at);
        assert_eq!(again, bytes, "{name}");
        assert_eq!(s.crc, rep.crc);
    }
    let bytes = std::fs::read(testdata("valid.nvec")).unwrap();
    let (rep, _) = load_into_store(&bytes, opts()).unwrap();
    println!(
        "valid.nvec: {} events, {} pairs, {} vectors",
        rep.header.event_count, rep.header.pair_count, rep.header.vector_count
    );
}

#[test]
fn a_busy_store_round_trips_byte_for_byte() {
    use crate::store::{Store, StoreConfig};
    let mut store = Store::new(StoreConfig {
        ctx_buffer_size: 8,
        dedup_window_sec: 0,
        ..StoreConfig::default()
    });
    let mut x: u64 = 12345;
    let mut next = move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) as usize
    };
    for i in 0..3000u64 {
        let ctx = format!("user{}", next() % 60);
        let id = format!("item{}", next() % 120);
        let kind = match next() % 5 {
            0 => EventKind::Set,
            1 => EventKind::Del,
            _ => EventKind::Add,
        };
        let score = if kind == EventKind::Del {
            0
        } else {
            (next() % 101) as u8
        };
        store.add_event(&ctx, kind, &id, score, 1_000 + i);
    }
    for v in 0..80 {
        let vals: Vec<f32> = (0..16).map(|j| ((v * 31 + j * 7) % 13) as f32 - 6.5).collect();
        store.set_vector(&format!("item{v}"), &vals).unwrap();
    }
    store.decay(0.5);
    let (s1, bytes) = write_image(&store, CREATED_AT);
    let (rep, loaded) = load_into_store(
        &bytes,
        LoadOptions {
            default_dimension: 16,
            batch_records: 50,
        },
    )
    .unwrap();
    assert_eq!(rep.crc, s1.crc);
    let (s2, again) = write_image(&loaded, CREATED_AT);
    assert_eq!(again, bytes);
    assert_eq!(s2, s1);
    let a = store.stats();
    let b = loaded.stats();
    assert_eq!(
        (
            a.contexts,
            a.events,
            a.vectors,
            a.dimension,
            a.co_occurrence_pairs
        ),
        (
            b.contexts,
            b.events,
            b.vectors,
            b.dimension,
            b.co_occurrence_pairs
        )
    );
    println!(
        "busy store: {} bytes, {} events, {} pairs, {} vectors",
        bytes.len(),
        s1.header.event_count,
        s1.header.pair_count,
        s1.header.vector_count
    );
}

/// Throughput on a ~100 MB file; run with
/// `cargo test --release --lib snapshot::tests::large_file_throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn large_file_throughput() {
    let mut m = Model::default();
    for c in 0..200_000 {
        let evs = (0..10)
            .map(|i| {
                (
                    format!("item{:06}", (c * 7 + i) % 50_000),
                    50,
                    (c * 10 + i) as u64,
                    EventKind::Add,
                )
            })
            .collect();
        m.contexts.push((format!("user{c:07}"), evs));
    }
    for a in 0..2000 {
        for b in a + 1..a + 300 {
            m.pairs.push((format!("item{a:06}"), format!("item{b:06}"), 1.5));
        }
    }
    for v in 0..100_000 {
        m.vectors.push((format!("item{v:06}"), vec![0.5; 128]));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.nvec");
    let mut f = std::fs::File::create(&path).unwrap();
    let t = std::time::Instant::now();
    let s = write_source(&mut f, &m, CREATED_AT, &path).unwrap();
    let w = t.elapsed();
    drop(f);
    let mut f = std::fs::File::open(&path).unwrap();
    let t = std::time::Instant::now();
    verify_file(&mut f, &path, opts()).unwrap();
    let v = t.elapsed();
    let t = std::time::Instant::now();
    let mut n = 0usize;
    load_file(&mut f, &path, opts(), |_| {
        n += 1;
        Ok(())
    })
    .unwrap();
    let l = t.elapsed();
    let mb = s.header.file_size as f64 / 1e6;
    println!(
        "{mb:.1} MB: write {w:?} ({:.0} MB/s), verify {v:?} ({:.0} MB/s), load {l:?} ({:.0} MB/s), {n} batches",
        mb / w.as_secs_f64(),
        mb / v.as_secs_f64(),
        mb / l.as_secs_f64()
    );
}

// ---------------------------------------------------------------- fuzz findings
// Inputs found by the cargo-fuzz targets in `fuzz/` (see fuzz/README.md),
// minimised with `cargo fuzz tmin` and kept here inline.

/// `snapshot_reader` target: a first section whose payload length
/// (0xFFFF_FFFF_FFFF_FFCB) ends the payload exactly at `usize::MAX` made
/// `testkit::payload_ranges` overflow adding the CRC's 4 bytes (a panic in
/// debug builds, a wrapped range in release). It must say `None` (framing not
/// followable), and `fix_all_crcs` must then fix only the file CRC.
#[test]
fn regression_fuzz_payload_ranges_length_ending_at_usize_max() {
    let input = hex(
        "4e560000 00000000 0080b402 00000000 000000cb ffffe243 396f988b 5c5c7b02
         986f8b5c 5c7b0200 00000000 cbffffff ffffffff",
    );
    assert_eq!(input.len(), 52);
    assert_eq!(testkit::payload_ranges(&input), None);
    let mut fixed = input.clone();
    testkit::fix_all_crcs(&mut fixed);
    assert_eq!(fixed[..44], input[..44]);
    assert_eq!(fixed[48..], input[48..]);
    // and the reader refuses it without panicking
    assert!(matches!(verify(&input), Err(SnapshotError::BadMagic)));
}

// ------------------------------------------- pair records across windows

/// Many pairs (several 64 KiB decoder windows), with a name longer than a
/// window and non-ASCII names among them, sorted as the format wants.
type RawPairs = Vec<(Vec<u8>, Vec<u8>, f32)>;

fn many_pairs() -> RawPairs {
    let mut names: Vec<Vec<u8>> = (0..120)
        .map(|k| format!("item-{k:04}-padding").into_bytes())
        .collect();
    names.push("é-ünïcode".as_bytes().to_vec());
    names.push(vec![b'z'; 100_000]);
    names.sort();
    let mut pairs = Vec::new();
    for (x, a) in names.iter().enumerate() {
        for (y, b) in names.iter().enumerate().skip(x + 1) {
            if (x * 7 + y * 3) % 5 != 0 {
                pairs.push((a.clone(), b.clone(), (1 + (x + y) % 50) as f32 / 4.0));
            }
        }
    }
    pairs
}

fn crafted_pairs(pairs: &[(Vec<u8>, Vec<u8>, f32)]) -> Crafted {
    let refs: Vec<(&[u8], &[u8], f32)> = pairs.iter().map(|(a, b, s)| (&a[..], &b[..], *s)).collect();
    let mut c = Crafted::ok();
    c.h.pair_count = pairs.len() as u32;
    c.co = co_payload(&refs);
    c
}

#[test]
fn pairs_across_windows_and_longer_than_one_load_in_order() {
    let pairs = many_pairs();
    let c = crafted_pairs(&pairs);
    assert!(c.co.len() > 4 * 64 * 1024, "spans several windows");
    let (report, batches) = Scratch::new().load(&c.bytes(), opts()).unwrap();
    assert_eq!(report.header.pair_count as usize, pairs.len());
    let (model, _) = batches_to_model(batches);
    let want: Vec<(String, String, f32)> = pairs
        .iter()
        .map(|(a, b, s)| {
            (
                String::from_utf8(a.clone()).unwrap(),
                String::from_utf8(b.clone()).unwrap(),
                *s,
            )
        })
        .collect();
    assert_eq!(model.pairs, want);
}

#[test]
fn a_bad_pair_deep_in_the_section_gives_the_same_error_as_a_first_one() {
    let good = many_pairs();
    // Deep in the section, between short names (no shortening in messages).
    let at = (0..good.len() - 1)
        .rev()
        .find(|&k| (k - 1..k + 2).all(|j| good[j].0.len() < 30 && good[j].1.len() < 30))
        .unwrap();
    assert!(at > good.len() / 2);
    let (a, b, _) = good[at].clone();
    let show = |s: &[u8]| format!("{:?}", String::from_utf8_lossy(s));
    type Edit = Box<dyn Fn(&mut RawPairs)>;
    let cases: Vec<(Edit, String)> = vec![
        (
            Box::new(move |p| p[at].2 = 0.0),
            format!("pair ({}, {}): score 0 is not finite and > 0", show(&a), show(&b)),
        ),
        (
            Box::new(move |p| p[at] = p[at - 1].clone()),
            format!(
                "duplicate pair ({}, {})",
                show(&good[at - 1].0),
                show(&good[at - 1].1)
            ),
        ),
        (
            Box::new(move |p| p.swap(at, at + 1)),
            format!("pairs not sorted at ({}, {})", show(&a), show(&b)),
        ),
        (
            Box::new(move |p| {
                let (a, b, s) = p[at].clone();
                p[at] = (b, a, s);
            }),
            format!("pair ({}, {}) is not ordered a < b", show(&b), show(&a)),
        ),
        (
            Box::new(move |p| p[at].1 = vec![b'x', 0xff]),
            "invalid UTF-8 in pair item".into(),
        ),
        (Box::new(move |p| p[at].0 = Vec::new()), "empty pair item".into()),
    ];
    for (edit, want) in cases {
        let mut pairs = many_pairs();
        edit(&mut pairs);
        expect_corrupt(
            &crafted_pairs(&pairs),
            &format!("Corrupt snapshot: co_occurrence section: {want}"),
        );
    }
}
