//! Integrity sweeps over `snapshots-testdata/valid.nvec` (all three sections
//! non-empty): every byte flip, every bit flip, all 255 XOR masks of every
//! header and footer byte, every truncation, appended bytes and a doubled
//! file. Each mutant must be rejected by DUMP VERIFY on a running server and
//! by the offline verifier (`nvecd::offline::verify_response`, what
//! `nvecd snapshot verify` prints) with the same first line; the real binary
//! is run on a sample, and a DUMP LOAD of every 50th mutant must leave the
//! live data unchanged. Prints "N of N rejected" per sweep:
//! `cargo test --test it rel_integrity -- --nocapture`.

use std::path::Path;

use crate::rel_util::{first_line, live, offline_binary, offline_verdict, seed_live, valid_golden, Rng};
use crate::support::{Client, TestServer};

const HEADER_LEN: usize = nvecd::snapshot::format::HEADER_LEN;
const FOOTER_LEN: usize = nvecd::snapshot::format::FOOTER_LEN;

struct Sweeper<'a> {
    c: Client,
    dir: &'a Path,
    live: Vec<String>,
    seen: usize,
    loads: usize,
    binary_runs: usize,
}

impl Sweeper<'_> {
    /// Checks one mutant; true when both verifiers rejected it identically.
    fn rejected(&mut self, what: &str, bytes: &[u8]) -> bool {
        let path = self.dir.join("m.nvec");
        std::fs::write(&path, bytes).expect("write mutant");
        let server = self.c.cmd("DUMP VERIFY m.nvec");
        let (offline, offline_ok) = offline_verdict(&path);
        let head = first_line(&server);
        assert_eq!(
            head,
            first_line(&offline),
            "{what}: server and offline verifier disagree"
        );
        assert_eq!(server.trim_end(), offline.trim_end(), "{what}: blocks differ");
        assert!(!offline_ok || head.starts_with("OK "), "{what}");
        if self.seen % 50 == 0 {
            let load = self.c.cmd("DUMP LOAD m.nvec");
            if head.starts_with("(error) ") {
                assert_eq!(first_line(&load), head, "{what}: LOAD and VERIFY differ");
                assert_eq!(
                    live(&mut self.c),
                    self.live,
                    "{what}: refused LOAD changed live data"
                );
            }
            self.loads += 1;
        }
        if self.seen % 997 == 0 {
            let (text, ok, _) = offline_binary(&path);
            assert_eq!(first_line(&text), head, "{what}: nvecd snapshot verify");
            assert_eq!(ok, !head.starts_with("(error) "), "{what}: exit status");
            self.binary_runs += 1;
        }
        self.seen += 1;
        head.starts_with("(error) ")
    }

    fn sweep(&mut self, name: &str, mutants: impl Iterator<Item = (String, Vec<u8>)>) -> (usize, usize) {
        let (mut n, mut rejected) = (0, 0);
        let mut accepted = Vec::new();
        for (what, bytes) in mutants {
            n += 1;
            if self.rejected(&what, &bytes) {
                rejected += 1;
            } else {
                accepted.push(what);
            }
        }
        println!("{name}: {rejected} of {n} rejected");
        assert!(accepted.is_empty(), "{name}: accepted {accepted:?}");
        (rejected, n)
    }
}

#[test]
fn every_flip_mask_truncation_and_extension_of_a_valid_file_is_rejected_identically() {
    let server = TestServer::spawn();
    let mut c = server.client();
    seed_live(&mut c);
    let live_before = live(&mut c);
    let dir = server.snapshot_dir();
    let valid = valid_golden();
    let s = valid.len();
    // sanity: the file itself is valid on both paths
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots-testdata/valid.nvec"),
        dir.join("valid.nvec"),
    )
    .expect("copy");
    assert!(c
        .cmd("DUMP VERIFY valid.nvec")
        .starts_with("OK Snapshot is valid"));
    assert!(offline_verdict(&dir.join("valid.nvec")).1);
    let ranges = nvecd::snapshot::testkit::payload_ranges(&valid).expect("framing");
    assert!(
        ranges.iter().all(|r| !r.is_empty()),
        "all three sections non-empty"
    );

    let mut sw = Sweeper {
        c,
        dir: &dir,
        live: live_before.clone(),
        seen: 0,
        loads: 0,
        binary_runs: 0,
    };
    println!("file: snapshots-testdata/valid.nvec, S = {s} bytes");
    let v = valid.clone();
    sw.sweep(
        "byte flips (XOR 0xFF at each offset)",
        (0..s).map(|i| {
            let mut b = v.clone();
            b[i] ^= 0xFF;
            (format!("byte {i} ^ 0xFF"), b)
        }),
    );
    let v = valid.clone();
    sw.sweep(
        "bit flips",
        (0..s * 8).map(|k| {
            let mut b = v.clone();
            b[k / 8] ^= 1 << (k % 8);
            (format!("bit {} of byte {}", k % 8, k / 8), b)
        }),
    );
    let v = valid.clone();
    let edge: Vec<usize> = (0..HEADER_LEN).chain(s - FOOTER_LEN..s).collect();
    sw.sweep(
        "XOR masks 1..=255 on each header and footer byte",
        edge.into_iter().flat_map(|i| {
            let v = v.clone();
            (1..=255u8).map(move |m| {
                let mut b = v.clone();
                b[i] ^= m;
                (format!("byte {i} ^ {m:#04x}"), b)
            })
        }),
    );
    let v = valid.clone();
    sw.sweep(
        "truncations to 0..S bytes",
        (0..s).map(|n| (format!("first {n} bytes"), v[..n].to_vec())),
    );
    let v = valid.clone();
    let mut rng = Rng::new(0x5EED_0001);
    let tails: Vec<Vec<u8>> = (1..=64)
        .map(|n| (0..n).map(|_| rng.next() as u8).collect())
        .collect();
    sw.sweep(
        "1..64 appended bytes and a doubled file",
        tails
            .into_iter()
            .map(|t| {
                let mut b = v.clone();
                b.extend_from_slice(&t);
                (format!("{} bytes appended", t.len()), b)
            })
            .chain(std::iter::once((
                "doubled".to_string(),
                [v.clone(), v.clone()].concat(),
            ))),
    );
    println!(
        "{} mutants; DUMP LOAD tried on {} (live data unchanged each time); binary run on {}",
        sw.seen, sw.loads, sw.binary_runs
    );
    assert_eq!(live(&mut sw.c), live_before);
    assert_eq!(sw.c.cmd("PING"), "OK PONG");
}
