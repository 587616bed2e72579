//! Helpers shared by the Nvecd fuzz targets (see `README.md`). Not part of
//! the main build: this crate is its own workspace.
//!
//! The snapshot reader takes a `File`, so every input is written to one
//! scratch file per process: created once on a tmpfs when there is one,
//! unlinked at once (nothing is left behind, whatever way the process ends),
//! then truncated and rewritten for each input.
use nvecd::snapshot::format::{FOOTER_LEN, HEADER_LEN, SECTION_CRC_LEN};
use nvecd::snapshot::reader::set_crc_checks;
use nvecd::snapshot::testkit::{fix_file_crc, fix_section_crc, payload_ranges, Model};
use nvecd::snapshot::{
    load_file, verify_file, write_source, Header, LoadOptions, SnapshotError, VerifyReport,
};
use nvecd::store::{LoadBatch, ItemNames};
use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{Cursor, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The name the reader puts in I/O error messages (the real file is unlinked).
pub const SCRATCH_NAME: &str = "fuzz-input.nvec";

struct Scratch {
    file: File,
}

impl Scratch {
    fn new() -> Scratch {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let mut n = 0u32;
        loop {
            let path: PathBuf = dir.join(format!("nvecd-fuzz-{}-{n}.nvec", std::process::id()));
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    std::fs::remove_file(&path).expect("unlink the scratch file");
                    return Scratch { file };
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => panic!("cannot create a scratch file in {}: {e}", dir.display()),
            }
        }
    }

    fn put(&mut self, bytes: &[u8]) -> &mut File {
        self.file.set_len(0).expect("truncate the scratch file");
        self.file.seek(SeekFrom::Start(0)).expect("seek the scratch file");
        self.file.write_all(bytes).expect("write the scratch file");
        &mut self.file
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::new());
}

/// What the reader said about a file, in a comparable form.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Accepted: the header and the CRC the reader reports.
    Valid { header: Header, crc: u32 },
    /// Refused: the error's `Display`, i.e. the text a client would see.
    Refused(String),
}

impl Verdict {
    fn of(r: &Result<VerifyReport, SnapshotError>) -> Verdict {
        match r {
            Ok(rep) => Verdict::Valid {
                header: rep.header,
                crc: rep.crc,
            },
            Err(e) => Verdict::Refused(e.to_string()),
        }
    }

    /// The header of an accepted file.
    pub fn header(&self) -> Option<Header> {
        match self {
            Verdict::Valid { header, .. } => Some(*header),
            Verdict::Refused(_) => None,
        }
    }

    /// The verdict without the reported CRC (which differs between a file and
    /// a copy whose CRCs were recomputed).
    pub fn without_crc(&self) -> Verdict {
        match self {
            Verdict::Valid { header, .. } => Verdict::Valid {
                header: *header,
                crc: 0,
            },
            other => other.clone(),
        }
    }
}

/// Runs `verify_file` and `load_file` on `bytes` with CRC comparisons `crc`
/// (on or off for this thread), and checks what must hold whatever the bytes:
/// no panic, the same verdict from both, batches in the documented order and
/// within `opts.batch_records`, and on success the decoded records agreeing
/// with the header's counts. Returns the verdict and, on success, the records.
pub fn read_checked(bytes: &[u8], opts: LoadOptions, crc: bool) -> (Verdict, Option<Model>) {
    set_crc_checks(crc);
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let path = Path::new(SCRATCH_NAME);
        let verified = verify_file(s.put(bytes), path, opts);
        let mut batches = Vec::new();
        let loaded = load_file(s.put(bytes), path, opts, |b| {
            batches.push(b);
            Ok(())
        });
        let v = Verdict::of(&verified);
        let l = Verdict::of(&loaded);
        assert_eq!(v, l, "verify_file and load_file disagree");
        if let Err(e) = &verified {
            // No I/O can fail on the scratch file: a refusal is about the bytes.
            assert!(
                !matches!(e, SnapshotError::Io { .. }),
                "I/O error on the scratch file: {e}"
            );
        }
        let model = check_batches(batches, opts);
        match v.header() {
            Some(h) => {
                assert_eq!(h.file_size, bytes.len() as u64);
                let events: usize = model.contexts.iter().map(|c| c.1.len()).sum();
                assert_eq!(events as u64, u64::from(h.event_count));
                assert_eq!(model.pairs.len() as u64, u64::from(h.pair_count));
                assert_eq!(model.vectors.len() as u64, u64::from(h.vector_count));
                (v, Some(model))
            }
            None => (v, None),
        }
    })
}

/// Checks the order and size of the batches a load produced and gathers them.
fn check_batches(batches: Vec<LoadBatch>, opts: LoadOptions) -> Model {
    let limit = opts.batch_records.max(1);
    let mut m = Model::default();
    let mut names = ItemNames::default();
    // 0 contexts, 1 pairs, 2 dimension seen, 3 vectors
    let mut stage = 0;
    let mut dimension = None;
    for b in batches {
        match b {
            LoadBatch::Contexts(cs) => {
                assert_eq!(stage, 0, "contexts batch out of order");
                assert!(!cs.contexts.is_empty(), "empty contexts batch");
                let records: usize = cs.contexts.iter().map(|c| 1 + c.events.len()).sum();
                assert!(
                    records <= limit || cs.contexts.len() == 1,
                    "contexts batch of {records} records, limit {limit}"
                );
                m.push_contexts(&mut names, cs);
            }
            LoadBatch::Pairs(ps) => {
                assert!(stage <= 1, "pairs batch out of order");
                stage = 1;
                let n = ps.pairs.len();
                assert!(n > 0 && n <= limit, "pairs batch of {n}");
                m.push_pairs(&mut names, ps);
            }
            LoadBatch::Dimension(d) => {
                assert!(stage <= 1, "second or late dimension batch");
                stage = 2;
                dimension = Some(d);
            }
            LoadBatch::Vectors(vs) => {
                assert!(stage >= 2, "vectors before the dimension");
                stage = 3;
                assert!(
                    !vs.is_empty() && vs.len() <= limit,
                    "vectors batch of {}",
                    vs.len()
                );
                for v in vs {
                    assert_eq!(Some(v.values.len()), dimension, "vector of another dimension");
                    m.vectors.push((v.id, v.values));
                }
            }
        }
    }
    m
}

/// The real writer's bytes for `m` (in memory).
pub fn write_model(m: &Model, created_at: i64) -> Result<Vec<u8>, SnapshotError> {
    let mut out = Cursor::new(Vec::new());
    write_source(&mut out, m, created_at, Path::new("fuzz-write.nvec"))?;
    Ok(out.into_inner())
}

/// Equality with floats compared bit for bit (so `-0.0 != 0.0`).
pub fn same_model(a: &Model, b: &Model) -> bool {
    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }
    a.contexts == b.contexts
        && a.pairs.len() == b.pairs.len()
        && a.pairs
            .iter()
            .zip(&b.pairs)
            .all(|(x, y)| x.0 == y.0 && x.1 == y.1 && x.2.to_bits() == y.2.to_bits())
        && a.vectors.len() == b.vectors.len()
        && a.vectors
            .iter()
            .zip(&b.vectors)
            .all(|(x, y)| x.0 == y.0 && bits(&x.1) == bits(&y.1))
}

/// Reader options derived from the input's length, so a raw-bytes target
/// exercises several batch sizes and the `default_dimension` check without
/// spending input bytes on them (seed files stay plain snapshot files).
pub fn opts_for(bytes: &[u8]) -> LoadOptions {
    let n = bytes.len();
    LoadOptions {
        default_dimension: if n % 7 == 3 { 4 } else { 0 },
        batch_records: 1 + n % 5,
    }
}

/// An accepted file is canonical: the writer, given the records and the
/// creation time read from it, must produce exactly its bytes.
pub fn assert_reencodes(bytes: &[u8], header: Header, model: &Model) {
    let again = match write_model(model, header.created_at) {
        Ok(b) => b,
        Err(e) => panic!("the reader accepted records the writer refuses: {e}"),
    };
    assert!(
        again == bytes,
        "accepted file does not re-encode to the same bytes ({} vs {} bytes)",
        again.len(),
        bytes.len()
    );
}

/// Recomputes the CRCs the reader would compare: the section CRCs only when
/// the three sections fill the body exactly (otherwise the reader stops at the
/// framing and never compares them, and `testkit::fix_all_crcs` could write a
/// "section CRC" over the footer), then the file CRC. A file too short to
/// hold a header and a footer is left alone (the reader refuses it before any
/// CRC, and a "footer" there would overlap the header).
pub fn fix_crcs(bytes: &mut [u8]) {
    if bytes.len() < HEADER_LEN + FOOTER_LEN {
        return;
    }
    if let Some(ranges) = payload_ranges(bytes) {
        let body_end = bytes.len().checked_sub(FOOTER_LEN);
        if ranges[2].end.checked_add(SECTION_CRC_LEN) == body_end {
            for r in ranges {
                let _ = fix_section_crc(bytes, r);
            }
        }
    }
    fix_file_crc(bytes);
}
