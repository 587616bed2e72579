//! Generates `snapshots-testdata/`: a small valid snapshot written by the real
//! store and writer, an empty one, the broken variants SPEC 4.2 lists, and the
//! `MANIFEST` of expected `DUMP VERIFY` results.
//!
//! The golden files are the compatibility contract: a file that exists is never
//! rewritten unless `--force` is given. Without it, an existing file whose
//! bytes differ from what this generator would produce is reported and kept,
//! and the run exits with status 1.
//!
//! Expected results are derived from the mutation each variant makes, not by
//! running the reader, so the MANIFEST checks the reader rather than echoing it.
//!
//! Run: `cargo run --example gen_testdata [-- --force] [--dir <path>]`
use nvecd::snapshot::format::{FOOTER_LEN, HEADER_LEN};
use nvecd::snapshot::testkit::{edit_header, fix_file_crc, fix_section_crc, payload_ranges};
use nvecd::snapshot::write_snapshot;
use nvecd::store::{EventKind, Store, StoreConfig};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The fixed creation time of every golden file (2023-11-14T22:13:20Z).
const CREATED_AT: i64 = 1_700_000_000;
/// Event timestamps start here (ms) and advance one second per event.
const T0_MS: u64 = 1_700_000_000_000;

fn small_store() -> Store {
    let mut s = Store::new(StoreConfig::default());
    let events: &[(&str, EventKind, &str, u8)] = &[
        ("alice", EventKind::Add, "item1", 80),
        ("alice", EventKind::Add, "item2", 60),
        ("alice", EventKind::Set, "item3", 100),
        ("bob", EventKind::Add, "item1", 50),
        ("bob", EventKind::Set, "item2", 90),
        ("bob", EventKind::Del, "item2", 0),
        ("carol", EventKind::Add, "item3", 70),
        ("carol", EventKind::Add, "item4", 40),
        ("dave", EventKind::Set, "item4", 20),
        ("dave", EventKind::Add, "item1", 10),
    ];
    for (i, (ctx, kind, id, score)) in events.iter().enumerate() {
        let stored = s.add_event(ctx, *kind, id, *score, T0_MS + 1000 * i as u64);
        assert!(stored, "event {i} was not stored");
    }
    let vectors: &[(&str, [f32; 4])] = &[
        ("item1", [0.1, 0.2, 0.3, 0.4]),
        ("item2", [1.0, 0.0, 0.0, 0.0]),
        ("item3", [0.0, 1.0, 0.0, 0.0]),
        ("item4", [0.5, -0.5, 0.25, -0.25]),
    ];
    for (id, v) in vectors {
        s.set_vector(id, v).expect("vector");
    }
    s
}

fn encode(store: &Store) -> (Vec<u8>, u32) {
    let mut out = Cursor::new(Vec::new());
    let summary = write_snapshot(&mut out, &store.freeze(), CREATED_AT, Path::new("memory")).expect("write");
    (out.into_inner(), summary.crc)
}

fn file_crc(b: &[u8]) -> u32 {
    crc32fast::hash(&b[..b.len() - FOOTER_LEN])
}

fn valid_block(crc: u32) -> Vec<String> {
    vec![
        format!("OK Snapshot is valid (CRC32: 0x{crc:08X})"),
        "status: valid".into(),
        "crc: verified".into(),
        "size: verified".into(),
    ]
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let force = args.iter().any(|a| a == "--force");
    let dir = args
        .iter()
        .position(|a| a == "--dir")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots-testdata"));
    std::fs::create_dir_all(&dir).expect("create testdata dir");

    let (valid, crc) = encode(&small_store());
    let (empty, empty_crc) = encode(&Store::new(StoreConfig::default()));
    let [ev, co, ve] = payload_ranges(&valid).expect("framing");
    let header = nvecd::snapshot::Header::decode(valid[..HEADER_LEN].try_into().unwrap());
    let size = valid.len();

    let mut files: Vec<(&str, Vec<u8>, Vec<String>)> = vec![
        ("valid.nvec", valid.clone(), valid_block(crc)),
        ("empty.nvec", empty, valid_block(empty_crc)),
    ];

    let mut b = valid.clone();
    b[0] = b'X';
    files.push((
        "bad_magic.nvec",
        b,
        vec!["(error) Not a snapshot file: bad magic".into()],
    ));

    let mut b = valid.clone();
    edit_header(&mut b, |h| h.version = 2);
    fix_file_crc(&mut b);
    files.push((
        "version2.nvec",
        b,
        vec!["(error) Version mismatch: expected 1, got 2".into()],
    ));

    let cut = size / 2;
    files.push((
        "truncated.nvec",
        valid[..cut].to_vec(),
        vec![format!(
            "(error) Snapshot truncated: header says {size} bytes, file has {cut} bytes"
        )],
    ));

    let mut b = valid.clone();
    b.push(0);
    files.push((
        "extra_byte.nvec",
        b,
        vec![format!(
            "(error) Snapshot truncated: header says {size} bytes, file has {} bytes",
            size + 1
        )],
    ));

    // first byte of the first context name ("alice" -> "blice"); nothing recomputed
    let mut b = valid.clone();
    b[ev.start + 8 + 8] ^= 0x03;
    let actual = file_crc(&b);
    files.push((
        "file_crc_flip.nvec",
        b,
        vec![
            "(error) CRC mismatch: file may be corrupted".into(),
            format!("expected: 0x{crc:08X}"),
            format!("actual: 0x{actual:08X}"),
        ],
    ));

    // first byte of the first pair's first item; section CRC left, file CRC fixed
    let mut b = valid.clone();
    b[co.start + 8 + 8] ^= 0x01;
    fix_file_crc(&mut b);
    files.push((
        "section_crc_flip.nvec",
        b,
        vec!["(error) CRC mismatch in co_occurrence section: file may be corrupted".into()],
    ));

    let mut b = valid.clone();
    edit_header(&mut b, |h| h.event_count += 1);
    fix_file_crc(&mut b);
    files.push((
        "count_mismatch.nvec",
        b,
        vec![format!(
            "(error) Corrupt snapshot: events section: {} events, header says {}",
            header.event_count,
            header.event_count + 1
        )],
    ));

    // first value of the first vector ("item1"): dimension u32, count u64,
    // id (u64 + 5 bytes), length u64
    let mut b = valid.clone();
    let at = ve.start + 4 + 8 + 8 + "item1".len() + 8;
    b[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    fix_section_crc(&mut b, ve.clone()).expect("section");
    fix_file_crc(&mut b);
    files.push((
        "nan_vector.nvec",
        b,
        vec!["(error) Corrupt snapshot: vectors section: vector \"item1\": value 0 is not finite".into()],
    ));

    let mut b = valid.clone();
    edit_header(&mut b, |h| h.flags = 4);
    fix_file_crc(&mut b);
    files.push((
        "unknown_flags.nvec",
        b,
        vec!["(error) Corrupt snapshot: unknown flags 0x00000004".into()],
    ));

    let mut manifest = String::from(
        "# Golden snapshot files and the exact DUMP VERIFY block each must produce.\n\
         # Written by `cargo run --example gen_testdata`; never rewritten without --force.\n\
         #\n\
         # Format: lines starting with '#' and blank lines are comments.\n\
         # An entry is '<file name><TAB><first line of the reply>', followed by zero\n\
         # or more '<TAB><key: value>' lines: the rest of the block, without END.\n\
         # The CRC mismatch entry lists its expected/actual lines; valid files list\n\
         # status/crc/size.\n",
    );
    for (name, _, block) in &files {
        let mut lines = block.iter();
        if let Some(head) = lines.next() {
            manifest.push_str(&format!("{name}\t{head}\n"));
        }
        for l in lines {
            manifest.push_str(&format!("\t{l}\n"));
        }
    }

    let mut differs = false;
    let mut outputs: Vec<(&str, Vec<u8>)> = files.into_iter().map(|(n, b, _)| (n, b)).collect();
    outputs.push(("MANIFEST", manifest.into_bytes()));
    for (name, bytes) in outputs {
        let path = dir.join(name);
        match std::fs::read(&path) {
            Ok(old) if old == bytes => println!("unchanged  {name}"),
            Ok(_) if !force => {
                println!("DIFFERS    {name} (kept; --force rewrites it)");
                differs = true;
            }
            _ => {
                std::fs::write(&path, &bytes).expect("write");
                println!("written    {name} ({} bytes)", bytes.len());
            }
        }
    }
    if differs {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
