//! Shared helpers of the snapshot reliability tests (`rel_*.rs`): a seeded
//! xorshift RNG, the figures that tell whether live data changed, directory
//! listings, the offline verifier (library and binary, with peak RSS).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::Client;

/// xorshift64*: tiny, seeded, deterministic.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform enough in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The valid golden file with all three sections non-empty.
pub fn valid_golden() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots-testdata/valid.nvec"))
        .expect("valid.nvec")
}

/// Live-data fingerprint: the INFO figures of the stores and two SIM answers.
pub fn live(c: &mut Client) -> Vec<String> {
    let info = c.cmd("INFO");
    let mut out: Vec<String> = info
        .lines()
        .filter(|l| {
            [
                "contexts:",
                "events:",
                "vectors:",
                "vector_dimension:",
                "co_occurrence_pairs:",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        })
        .map(String::from)
        .collect();
    out.push(c.cmd("SIM live1 10 using=events"));
    out.push(c.cmd("SIM live1 10 using=vectors"));
    out
}

/// Puts a small recognisable state into a server (different from any golden file).
pub fn seed_live(c: &mut Client) {
    for l in [
        "EVENT lu1 ADD live1 50",
        "EVENT lu1 ADD live2 40",
        "EVENT lu2 ADD live1 30",
        "EVENT lu2 ADD live3 90",
        "VECSET live1 1 0 0",
        "VECSET live2 0.5 0.5 0",
        "VECSET live3 0 0 1",
    ] {
        assert_eq!(c.cmd(l), "OK", "{l}");
    }
}

/// Value of `key: value` in a block.
pub fn field(block: &str, key: &str) -> String {
    block
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("{key} missing in {block}"))
        .to_string()
}

pub fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

/// The offline verifier's block (the library function the binary prints).
pub fn offline_verdict(path: &Path) -> (String, bool) {
    let (r, ok) = nvecd::offline::verify_response(path, 0);
    (nvecd::offline::render_text(&r), ok)
}

/// Every entry under `root` (recursively, symlinks not followed) with its
/// content (files), target (symlinks) or "<dir>".
pub fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, p: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(p) else { return };
        for e in rd {
            let e = e.expect("entry");
            let path = e.path();
            let rel = path.strip_prefix(root).expect("under root").to_path_buf();
            let ft = e.file_type().expect("type");
            if ft.is_symlink() {
                let t = std::fs::read_link(&path).expect("link");
                out.insert(rel, format!("<link {}>", t.display()).into_bytes());
            } else if ft.is_dir() {
                out.insert(rel, b"<dir>".to_vec());
                walk(root, &path, out);
            } else {
                out.insert(rel, std::fs::read(&path).expect("read"));
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// Names in `dir` that look like temp files of an atomic write.
pub fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .filter(|n| nvecd::snapshot::files::is_temp_name(n))
        .collect()
}

/// Runs the real `nvecd snapshot verify <file>`; returns stdout, success, and
/// the child's peak RSS in KiB (`wait4` rusage `ru_maxrss`). Linux counts
/// in that figure the peak RSS of the process it was started from (the
/// child shares its memory until `exec`), so here it is at least this test
/// process's own peak; `offline_binary_alone` measures the child alone.
#[allow(clippy::zombie_processes)] // reaped by wait4 below, which also gives the rusage
pub fn offline_binary(file: &Path) -> (String, bool, i64) {
    let child = Command::new(env!("CARGO_BIN_EXE_nvecd"))
        .args(["snapshot", "verify"])
        .arg(file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn nvecd");
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.expect("stdout");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut text).expect("read stdout");
    let mut status = 0;
    // SAFETY: plain syscall on our own child, with valid out pointers; the
    // `Child` handle is not waited on elsewhere.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4");
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (text, ok, usage.ru_maxrss)
}

/// Names the file `rss_probe` verifies, in the probe's environment.
const PROBE_FILE: &str = "NVECD_TEST_RSS_PROBE_FILE";

/// `offline_binary`, started from a small process of its own: this test
/// binary run again with only `rss_probe`, so that the peak RSS is the
/// verifier's and not this busy test process's own peak (seen: a run's
/// crafted-file test failing its bound that way).
pub fn offline_binary_alone(file: &Path) -> (String, bool, i64) {
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "rel_util::rss_probe", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(PROBE_FILE, file)
        .stderr(std::process::Stdio::null())
        .output()
        .expect("run the probe");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let (_, rest) = text.split_once("PROBE ").expect("the probe's report");
    let (head, rest) = rest.split_once('\n').expect("the probe's first line");
    let (ok, rss) = head.split_once(' ').expect("ok and rss");
    let (verify, _) = rest.split_once("END-PROBE").expect("the probe's end");
    (verify.to_string(), ok == "1", rss.parse().expect("rss"))
}

/// Run by `offline_binary_alone` in a process of its own; does nothing
/// when run otherwise.
#[test]
#[ignore = "run by offline_binary_alone in a process of its own"]
fn rss_probe() {
    let Some(file) = std::env::var_os(PROBE_FILE) else {
        return;
    };
    let (text, ok, rss) = offline_binary(Path::new(&file));
    println!("PROBE {} {rss}\n{text}END-PROBE", u8::from(ok));
}
