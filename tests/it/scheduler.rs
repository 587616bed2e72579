//! Automatic snapshots, retention, restore on start, graceful shutdown.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::cli::write_config;
use crate::support::{wait_until, TestBinary, TestServer};

fn auto_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            let n = p.file_name().expect("name").to_string_lossy().to_string();
            nvecd::snapshot::files::parse_auto_name(&n).is_some()
        })
        .collect();
    v.sort();
    v
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(".tmp"))
        .collect()
}

fn offline_verify(file: &Path) -> bool {
    Command::new(env!("CARGO_BIN_EXE_nvecd"))
        .args(["snapshot", "verify"])
        .arg(file)
        .output()
        .expect("run verify")
        .status
        .success()
}

fn info_field(c: &mut crate::support::Client, key: &str) -> String {
    let info = c.cmd("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("{key} not in INFO"))
        .to_string()
}

#[test]
fn auto_snapshots_are_taken_and_pruned_and_foreign_files_stay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snaps = dir.path().join("snapshots");
    std::fs::create_dir_all(&snaps).expect("mkdir");
    let foreign = [
        "auto_notes.txt",
        "auto_20200101_000000.snapshot.bak",
        "manual.nvec",
        "auto_2020.snapshot",
    ];
    for f in foreign {
        std::fs::write(snaps.join(f), f).expect("write foreign");
    }
    // An old auto snapshot: the oldest, so it is pruned.
    std::fs::write(snaps.join("auto_20000101_000000.snapshot"), b"old").expect("write old");
    let server = TestServer::spawn_config(
        {
            let mut c = crate::support::test_config(dir.path());
            c.snapshot.interval_sec = 1;
            c.snapshot.retain = 2;
            c
        },
        dir,
    );
    let mut c = server.client();
    c.cmd("EVENT u1 ADD a 10");
    assert_eq!(info_field(&mut c, "auto_snapshot_interval_sec"), "1");
    assert!(wait_until(Duration::from_secs(30), || info_field(
        &mut c,
        "auto_snapshots_taken"
    )
    .parse::<u64>()
    .unwrap_or(0)
        >= 3));
    // Pruning follows each save; wait for it to settle.
    assert!(wait_until(Duration::from_secs(10), || auto_files(
        &server.snapshot_dir()
    )
    .len()
        == 2));
    let files = auto_files(&server.snapshot_dir());
    assert!(
        !files.iter().any(|p| p.ends_with("auto_20000101_000000.snapshot")),
        "{files:?}"
    );
    for f in &files {
        assert!(offline_verify(f), "{} does not verify", f.display());
    }
    for f in foreign {
        assert_eq!(
            std::fs::read_to_string(server.snapshot_dir().join(f)).expect("foreign file kept"),
            f
        );
    }
    assert_eq!(info_field(&mut c, "auto_snapshots_failed"), "0");
    assert!(!info_field(&mut c, "next_auto_snapshot_time").is_empty());
    assert!(info_field(&mut c, "last_save_path").contains("auto_"));
}

#[test]
fn a_failed_auto_save_is_counted_prunes_nothing_and_serving_goes_on() {
    let server = TestServer::spawn_with(|c| {
        c.snapshot.interval_sec = 1;
        c.snapshot.retain = 1;
    });
    let mut c = server.client();
    let dir = server.snapshot_dir();
    assert!(wait_until(Duration::from_secs(30), || info_field(
        &mut c,
        "auto_snapshots_taken"
    ) != "0"));
    let aside = dir.with_extension("aside");
    // The directory disappears: saves fail (root ignores permission bits, so
    // a read-only directory would not fail here).
    std::fs::rename(&dir, &aside).expect("move dir away");
    assert!(wait_until(Duration::from_secs(30), || info_field(
        &mut c,
        "auto_snapshots_failed"
    ) != "0"));
    assert_eq!(c.cmd("PING"), "OK PONG");
    assert_eq!(c.cmd("EVENT u1 ADD a 1"), "OK");
    assert_eq!(info_field(&mut c, "last_save_status"), "failed");
    let kept = auto_files(&aside);
    assert!(!kept.is_empty());
    std::fs::rename(&aside, &dir).expect("move dir back");
    let taken: u64 = info_field(&mut c, "auto_snapshots_taken")
        .parse()
        .expect("number");
    assert!(wait_until(Duration::from_secs(30), || {
        info_field(&mut c, "auto_snapshots_taken")
            .parse::<u64>()
            .unwrap_or(0)
            > taken
    }));
    assert!(wait_until(Duration::from_secs(10), || auto_files(&dir).len() == 1));
}

#[test]
fn restore_on_start_loads_the_newest_valid_auto_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), "");
    let snaps = dir.path().join("snapshots");
    {
        let server = TestBinary::start(&cfg, &[]);
        let mut c = server.client();
        c.cmd("EVENT u1 ADD a 10");
        c.cmd("EVENT u1 ADD b 10");
        assert!(c.cmd("DUMP SAVE older.nvec").starts_with("OK"));
        c.cmd("VECSET a 1 2 3");
        assert!(c.cmd("DUMP SAVE newer.nvec").starts_with("OK"));
    }
    std::fs::rename(
        snaps.join("older.nvec"),
        snaps.join("auto_20240101_000000.snapshot"),
    )
    .expect("rename");
    std::fs::rename(
        snaps.join("newer.nvec"),
        snaps.join("auto_20240102_000000.snapshot"),
    )
    .expect("rename");
    let cfg = write_config(dir.path(), "  restore_on_start: true\n");
    {
        let server = TestBinary::start(&cfg, &[]);
        let mut c = server.client();
        assert_eq!(info_field(&mut c, "vectors"), "1");
        assert_eq!(info_field(&mut c, "events"), "2");
    }
    // Corrupt the newest: the older one is restored and the log says why.
    let newest = snaps.join("auto_20240102_000000.snapshot");
    let mut bytes = std::fs::read(&newest).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&newest, bytes).expect("write");
    {
        let server = TestBinary::start(&cfg, &[]);
        let mut c = server.client();
        assert_eq!(info_field(&mut c, "vectors"), "0");
        assert_eq!(info_field(&mut c, "events"), "2");
        assert!(
            server.logs().contains("auto_20240102_000000.snapshot"),
            "{}",
            server.logs()
        );
    }
    // None valid: start empty and say so.
    std::fs::write(snaps.join("auto_20240101_000000.snapshot"), b"junk").expect("write");
    let server = TestBinary::start(&cfg, &[]);
    let mut c = server.client();
    assert_eq!(info_field(&mut c, "events"), "0");
    assert!(server.logs().contains("starting empty"), "{}", server.logs());
}

#[test]
fn sigterm_during_a_large_save_leaves_a_complete_file_and_no_temp_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), "");
    let snaps = dir.path().join("snapshots");
    let mut server = TestBinary::start(&cfg, &[]);
    let mut c = server.client();
    assert!(c.cmd("DUMP SAVE big.nvec").starts_with("OK"));
    let old = std::fs::read(snaps.join("big.nvec")).expect("old");
    let mut bulk = String::new();
    for k in 0..100_000 {
        bulk.push_str(&format!("VECSET v{k} {} 0.5 0.25 1 2 3 4 5\r\n", k % 10));
    }
    c.send_raw(bulk.as_bytes());
    for _ in 0..100_000 {
        assert_eq!(c.read_line().as_deref(), Some("OK"));
    }
    c.send_raw(b"DUMP SAVE big.nvec\r\n");
    std::thread::sleep(Duration::from_millis(20));
    let status = server.signal_and_wait(libc::SIGTERM);
    assert!(status.success(), "{status:?}: {}", server.logs());
    let now = std::fs::read(snaps.join("big.nvec")).expect("file");
    assert!(
        now == old || offline_verify(&snaps.join("big.nvec")),
        "neither the old file nor a valid new one"
    );
    assert!(temp_files(&snaps).is_empty(), "{:?}", temp_files(&snaps));
}

#[test]
fn save_on_shutdown_writes_a_final_auto_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), "  save_on_shutdown: true\n  retain: 2\n");
    let mut server = TestBinary::start(&cfg, &[]);
    let mut c = server.client();
    assert_eq!(c.cmd("EVENT u1 ADD a 10"), "OK");
    // Older auto snapshots: the final one is followed by retention too.
    let snaps = dir.path().join("snapshots");
    for old in ["auto_20200101_000000.snapshot", "auto_20200102_000000.snapshot"] {
        assert!(c.cmd("DUMP SAVE x.nvec").starts_with("OK"));
        std::fs::rename(snaps.join("x.nvec"), snaps.join(old)).expect("rename");
    }
    let status = server.signal_and_wait(libc::SIGINT);
    assert!(status.success());
    let files = auto_files(&snaps);
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files[0].ends_with("auto_20200102_000000.snapshot"), "{files:?}");
    assert!(offline_verify(&files[1]));
}
