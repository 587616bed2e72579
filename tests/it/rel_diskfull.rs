//! Disk full: `snapshot.dir` on a 2 MiB tmpfs mounted for the test (root
//! only; otherwise the test prints why it skipped and passes). The disk is
//! filled so a save hits ENOSPC part-way: DUMP SAVE answers `(error) ... No
//! space left on device ...`, the previous snapshot stays byte-identical, no
//! temp file remains, and the server goes on; an auto snapshot failing the
//! same way is counted (`auto_snapshots_failed`) and prunes nothing.
//! `cargo test --test it rel_diskfull -- --nocapture`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::rel_util::{field, first_line, offline_verdict, temp_files};
use crate::support::{test_config, wait_until, Client, TestServer};

/// A tmpfs mounted on a directory; unmounted on drop (lazily if busy).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a `size` tmpfs on `dir`, or says why it cannot.
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root".into());
        }
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Fills the filesystem of `dir` with `filler`, then frees `keep` bytes.
fn fill(dir: &Path, keep: u64) -> PathBuf {
    let path = dir.join("filler.bin");
    let mut f = std::fs::File::create(&path).expect("filler");
    let chunk = vec![0xA5u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling: {e}"),
        }
    }
    f.set_len(written.saturating_sub(keep)).expect("free a little");
    path
}

fn populate(c: &mut Client, vectors: usize) {
    let mut bulk = String::new();
    for k in 0..vectors {
        bulk.push_str(&format!("VECSET v{k} {} 0.5 0.25 1 2 3 4 5\r\n", k % 10));
        if k % 3 == 0 {
            bulk.push_str(&format!("EVENT u{} ADD v{k} {}\r\n", k % 50, 1 + k % 100));
        }
    }
    let n = bulk.lines().count();
    c.send_raw(bulk.as_bytes());
    for _ in 0..n {
        assert_eq!(c.read_line().as_deref(), Some("OK"));
    }
}

#[test]
fn dump_save_on_a_full_disk_fails_cleanly_and_keeps_the_previous_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mnt = tmp.path().join("snapshots");
    let _mount = match Tmpfs::mount(&mnt, "2m") {
        Ok(m) => m,
        Err(why) => {
            println!("SKIPPED disk-full test: {why} (needs root and mount -t tmpfs)");
            return;
        }
    };
    let mut config = test_config(tmp.path());
    config.snapshot.dir = mnt.clone();
    let server = TestServer::spawn_config(config, tempfile::tempdir().expect("tempdir"));
    let mut c = server.client();
    populate(&mut c, 1_500);
    let r = c.cmd("DUMP SAVE prev.nvec");
    assert!(r.starts_with("OK Snapshot saved"), "{r}");
    let size: u64 = field(&r, "size")
        .trim_end_matches(" bytes")
        .parse()
        .expect("size");
    let previous = std::fs::read(mnt.join("prev.nvec")).expect("prev");
    assert_eq!(c.cmd("EVENT later ADD x 5"), "OK");

    // leave less room than one snapshot: ENOSPC part-way through the save
    let filler = fill(&mnt, size / 3);
    let r = c.cmd("DUMP SAVE prev.nvec");
    let head = first_line(&r);
    println!("snapshot {size} bytes, {} bytes left free -> {head}", size / 3);
    assert_eq!(
        head,
        format!(
            "(error) I/O error on {}: No space left on device (os error 28)",
            mnt.join("prev.nvec").display()
        )
    );
    assert!(r.ends_with("END"));
    assert_eq!(std::fs::read(mnt.join("prev.nvec")).expect("prev"), previous);
    assert!(temp_files(&mnt).is_empty(), "{:?}", temp_files(&mnt));
    // a fresh name fails the same way and leaves nothing behind
    let r = c.cmd("DUMP SAVE fresh.nvec");
    assert!(first_line(&r).contains("No space left on device"), "{r}");
    assert!(!mnt.join("fresh.nvec").exists());
    assert!(temp_files(&mnt).is_empty());
    // the server goes on
    assert_eq!(c.cmd("PING"), "OK PONG");
    assert_eq!(c.cmd("EVENT later ADD y 5"), "OK");
    assert_eq!(field(&c.cmd("DUMP STATUS"), "status"), "failed");
    // with room again, the same save succeeds and verifies
    std::fs::remove_file(filler).expect("free");
    let r = c.cmd("DUMP SAVE prev.nvec");
    assert!(r.starts_with("OK Snapshot saved"), "{r}");
    assert!(offline_verdict(&mnt.join("prev.nvec")).1);
    drop(c);
    drop(server);
}

#[test]
fn an_auto_snapshot_on_a_full_disk_is_counted_and_prunes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mnt = tmp.path().join("snapshots");
    let _mount = match Tmpfs::mount(&mnt, "2m") {
        Ok(m) => m,
        Err(why) => {
            println!("SKIPPED disk-full auto-snapshot test: {why} (needs root and mount -t tmpfs)");
            return;
        }
    };
    let old = [
        "auto_20200101_000000.snapshot",
        "auto_20200102_000000.snapshot",
        "auto_20200103_000000.snapshot",
    ];
    for o in old {
        std::fs::write(mnt.join(o), o).expect("old auto");
    }
    let filler = fill(&mnt, 4096);
    let mut config = test_config(tmp.path());
    config.snapshot.dir = mnt.clone();
    config.snapshot.interval_sec = 1;
    config.snapshot.retain = 1;
    let server = TestServer::spawn_config(config, tempfile::tempdir().expect("tempdir"));
    let mut c = server.client();
    populate(&mut c, 2_000);
    assert!(
        wait_until(Duration::from_secs(30), || field(
            &c.cmd("INFO"),
            "auto_snapshots_failed"
        ) != "0"),
        "no failed auto snapshot"
    );
    let info = c.cmd("INFO");
    println!(
        "full disk: auto_snapshots_failed {}, auto_snapshots_taken {}, last_save_status {}",
        field(&info, "auto_snapshots_failed"),
        field(&info, "auto_snapshots_taken"),
        field(&info, "last_save_status")
    );
    assert_eq!(field(&info, "auto_snapshots_taken"), "0");
    for o in old {
        assert!(mnt.join(o).exists(), "{o} pruned after a failed save");
    }
    assert!(temp_files(&mnt).is_empty(), "{:?}", temp_files(&mnt));
    assert_eq!(c.cmd("PING"), "OK PONG");
    assert_eq!(c.cmd("EVENT u ADD x 5"), "OK");
    // room again: the next tick saves and prunes down to `retain`
    std::fs::remove_file(filler).expect("free");
    assert!(wait_until(Duration::from_secs(30), || {
        field(&c.cmd("INFO"), "auto_snapshots_taken") != "0" && !mnt.join(old[2]).exists()
    }));
    let autos: Vec<_> = std::fs::read_dir(&mnt)
        .expect("dir")
        .map(|e| e.expect("e").file_name().to_string_lossy().to_string())
        .filter(|n| nvecd::snapshot::files::parse_auto_name(n).is_some())
        .collect();
    assert_eq!(autos.len(), 1, "{autos:?}");
    drop(c);
    drop(server);
}
