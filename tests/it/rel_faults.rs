//! Fault injection at every step of a save, through a failing `FileOps` given
//! to an in-process server (`server::start_with`): create temp, each write
//! call of the sections, header and footer, a byte budget running out inside
//! each section, fsync of the file, rename, fsync of the directory, and each
//! retention delete of an auto snapshot. For each: the reply is an `(error)`
//! block, the previous file is byte-identical (a failed directory fsync
//! leaves the complete new file, as docs/snapshot-format.md says), no temp
//! file is left, and the server goes on (PING, EVENT, a later SAVE).
//! `cargo test --test it rel_faults -- --nocapture`.

use std::fs::File;
use std::io::{self, Seek};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nvecd::snapshot::files::{FileOps, RealFileOps};
use nvecd::snapshot::testkit::payload_ranges;

use crate::rel_util::{field, first_line, offline_verdict, temp_files};
use crate::support::{test_config, wait_until, Client, TestServer};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    None,
    CreateTemp(i32),
    /// The k-th write call (1-based) of the save fails with EIO.
    WriteCall(usize),
    /// Writes succeed (partially at the edge) until n bytes, then ENOSPC.
    ByteBudget(u64),
    SyncFile,
    Rename,
    SyncDir,
    /// The k-th deletion of an auto snapshot (1-based, over the server's life).
    RemoveAuto(usize),
}

#[derive(Default)]
struct Counters {
    writes: usize,
    bytes: u64,
    auto_removes: usize,
    /// (offset, length) of every write call of the current save.
    calls: Vec<(u64, usize)>,
}

struct Faulty {
    fault: Mutex<Fault>,
    n: Mutex<Counters>,
}

impl Faulty {
    fn new() -> Arc<Faulty> {
        Arc::new(Faulty {
            fault: Mutex::new(Fault::None),
            n: Mutex::new(Counters::default()),
        })
    }
    fn set(&self, f: Fault) {
        *self.fault.lock().expect("lock") = f;
    }
    fn get(&self) -> Fault {
        *self.fault.lock().expect("lock")
    }
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

impl FileOps for Faulty {
    fn create_temp(&self, path: &Path) -> io::Result<File> {
        {
            let mut n = self.n.lock().expect("lock");
            n.writes = 0;
            n.bytes = 0;
            n.calls.clear();
        }
        if let Fault::CreateTemp(errno) = self.get() {
            return Err(io::Error::from_raw_os_error(errno));
        }
        RealFileOps.create_temp(path)
    }
    fn write(&self, file: &mut File, buf: &[u8]) -> io::Result<usize> {
        let pos = file.stream_position()?;
        let mut n = self.n.lock().expect("lock");
        n.writes += 1;
        n.calls.push((pos, buf.len()));
        match self.get() {
            Fault::WriteCall(k) if k == n.writes => return Err(eio()),
            Fault::ByteBudget(limit) => {
                let left = limit.saturating_sub(n.bytes);
                if left == 0 {
                    return Err(io::Error::from_raw_os_error(libc::ENOSPC));
                }
                let take = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let w = RealFileOps.write(file, &buf[..take])?;
                n.bytes += w as u64;
                return Ok(w);
            }
            _ => {}
        }
        let w = RealFileOps.write(file, buf)?;
        n.bytes += w as u64;
        Ok(w)
    }
    fn sync_file(&self, file: &File) -> io::Result<()> {
        if self.get() == Fault::SyncFile {
            return Err(eio());
        }
        RealFileOps.sync_file(file)
    }
    fn rename(&self, from: &Path, to: &Path, no_replace: bool) -> io::Result<()> {
        if self.get() == Fault::Rename {
            return Err(eio());
        }
        RealFileOps.rename(from, to, no_replace)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.get() == Fault::SyncDir {
            return Err(eio());
        }
        RealFileOps.sync_dir(dir)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if nvecd::snapshot::files::parse_auto_name(name).is_some() {
            let k = {
                let mut n = self.n.lock().expect("lock");
                n.auto_removes += 1;
                n.auto_removes
            };
            if self.get() == Fault::RemoveAuto(k) {
                return Err(eio());
            }
        }
        RealFileOps.remove(path)
    }
}

fn spawn(ops: Arc<Faulty>, edit: impl FnOnce(&mut nvecd::config::Config)) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    edit(&mut config);
    TestServer::spawn_options(config, dir, nvecd::server::StartOptions { file_ops: Some(ops) })
}

fn populate(c: &mut Client) {
    let mut batch = String::new();
    for i in 0..300 {
        batch.push_str(&format!("EVENT u{} ADD i{} {}\r\n", i % 20, i % 37, 1 + i % 100));
    }
    for k in 0..50 {
        batch.push_str(&format!("VECSET i{k} {} 1 0.5\r\n", k % 7));
    }
    c.send_raw(batch.as_bytes());
    for _ in 0..350 {
        assert_eq!(c.read_line().as_deref(), Some("OK"));
    }
}

/// Which part of the file `offset` lies in.
fn part(bytes: &[u8], offset: u64) -> &'static str {
    let r = payload_ranges(bytes).expect("framing");
    let o = offset as usize;
    let hdr = nvecd::snapshot::format::HEADER_LEN;
    let names = ["events", "co_occurrence", "vectors"];
    if o < hdr {
        return "header";
    }
    for (k, range) in r.iter().enumerate() {
        if o < range.end + 4 {
            return names[k];
        }
    }
    "footer"
}

#[test]
fn a_fault_at_every_step_of_a_save_leaves_the_previous_file_and_no_temp() {
    let ops = Faulty::new();
    let server = spawn(ops.clone(), |_| {});
    let dir = server.snapshot_dir();
    let mut c = server.client();
    populate(&mut c);
    assert!(c.cmd("DUMP SAVE victim.nvec").starts_with("OK Snapshot saved"));
    let calls = ops.n.lock().expect("lock").calls.clone();
    let previous = std::fs::read(dir.join("victim.nvec")).expect("read");
    let ranges = payload_ranges(&previous).expect("framing");

    let mut plan: Vec<(String, Fault)> = vec![
        ("create temp (EIO)".into(), Fault::CreateTemp(libc::EIO)),
        ("create temp (EACCES)".into(), Fault::CreateTemp(libc::EACCES)),
        ("create temp (ENOSPC)".into(), Fault::CreateTemp(libc::ENOSPC)),
    ];
    for (k, (off, len)) in calls.iter().enumerate() {
        plan.push((
            format!(
                "write call {} of {} (offset {off}, {len} bytes, {})",
                k + 1,
                calls.len(),
                part(&previous, *off)
            ),
            Fault::WriteCall(k + 1),
        ));
    }
    let hdr = nvecd::snapshot::format::HEADER_LEN as u64;
    let mut budgets = vec![("header".to_string(), 0u64), ("header".to_string(), hdr / 2)];
    for (name, r) in ["events", "co_occurrence", "vectors"].iter().zip(&ranges) {
        budgets.push((format!("{name} prefix"), r.start as u64 - 6));
        budgets.push((format!("{name} payload"), (r.start + r.len() / 2) as u64));
        budgets.push((format!("{name} CRC"), r.end as u64 + 2));
    }
    budgets.push(("footer".into(), previous.len() as u64 - 3));
    for (what, n) in budgets {
        plan.push((format!("ENOSPC after {n} bytes ({what})"), Fault::ByteBudget(n)));
    }
    plan.push(("fsync file".into(), Fault::SyncFile));
    plan.push(("rename".into(), Fault::Rename));
    plan.push(("fsync dir".into(), Fault::SyncDir));

    for (i, (what, fault)) in plan.iter().enumerate() {
        // a little new data each time, so a new file would differ
        assert_eq!(c.cmd(&format!("EVENT fault ADD step{i} 5")), "OK");
        let before = std::fs::read(dir.join("victim.nvec")).expect("read");
        ops.set(*fault);
        let reply = c.cmd("DUMP SAVE victim.nvec");
        ops.set(Fault::None);
        let head = first_line(&reply);
        assert!(head.starts_with("(error) "), "{what}: {reply}");
        assert!(reply.ends_with("END"), "{what}: {reply}");
        let expect = match fault {
            Fault::CreateTemp(libc::EACCES) => "Permission denied: ",
            Fault::CreateTemp(libc::ENOSPC) | Fault::ByteBudget(_) => "No space left on device",
            _ => "Input/output error",
        };
        assert!(head.contains(expect), "{what}: {head}");
        // Regression: create-temp and fsync failures used to name the temp
        // file (`.victim.nvec.tmp.<pid>.<n>`), already deleted when the reply
        // is read; errors name the target (or the directory for its fsync).
        let named = if *fault == Fault::SyncDir {
            dir.display().to_string()
        } else {
            dir.join("victim.nvec").display().to_string()
        };
        assert!(head.contains(&named) && !head.contains(".tmp."), "{what}: {head}");
        let after = std::fs::read(dir.join("victim.nvec")).expect("read");
        if *fault == Fault::SyncDir {
            // renamed already: the new file is complete; durability unconfirmed
            assert_ne!(after, before, "{what}");
            assert!(offline_verdict(&dir.join("victim.nvec")).1, "{what}");
        } else {
            assert_eq!(after, before, "{what}: previous file changed");
        }
        assert!(
            temp_files(&dir).is_empty(),
            "{what}: temp left {:?}",
            temp_files(&dir)
        );
        let status = c.cmd("DUMP STATUS");
        assert_eq!(field(&status, "status"), "failed", "{what}");
        assert_eq!(field(&c.cmd("INFO"), "last_save_status"), "failed", "{what}");
        assert_eq!(c.cmd("PING"), "OK PONG");
        assert_eq!(c.cmd(&format!("EVENT fault ADD after{i} 5")), "OK");
        println!("{what:<60} -> {head}");
    }
    // and a save with no fault works, and its file verifies
    let r = c.cmd("DUMP SAVE victim.nvec");
    assert!(r.starts_with("OK Snapshot saved"), "{r}");
    assert!(offline_verdict(&dir.join("victim.nvec")).1);
    assert_eq!(field(&c.cmd("INFO"), "last_save_status"), "ok");
    println!(
        "{n} of {n} injected faults gave an (error) block, kept the previous file, left no temp file",
        n = plan.len()
    );
}

fn autos(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .filter(|n| nvecd::snapshot::files::parse_auto_name(n).is_some())
        .collect();
    v.sort();
    v
}

#[test]
fn a_failing_retention_delete_is_logged_deletes_nothing_more_and_serving_goes_on() {
    let old = [
        "auto_20200101_000000.snapshot",
        "auto_20200102_000000.snapshot",
        "auto_20200103_000000.snapshot",
        "auto_20200104_000000.snapshot",
    ];
    let foreign = ["manual.nvec", "auto_notes.txt"];
    // retain 2: the first prune deletes old[2], old[1], old[0] in that order
    for k in 1..=3usize {
        let ops = Faulty::new();
        ops.set(Fault::RemoveAuto(k));
        let tmp = tempfile::tempdir().expect("tempdir");
        let snaps = tmp.path().join("snapshots");
        std::fs::create_dir_all(&snaps).expect("mkdir");
        for f in old.iter().chain(&foreign) {
            std::fs::write(snaps.join(f), f.as_bytes()).expect("write");
        }
        let mut config = test_config(tmp.path());
        config.snapshot.interval_sec = 1;
        config.snapshot.retain = 2;
        let server = TestServer::spawn_options(
            config,
            tmp,
            nvecd::server::StartOptions {
                file_ops: Some(ops.clone()),
            },
        );
        let dir = server.snapshot_dir();
        let mut c = server.client();
        let removes = || ops.n.lock().expect("lock").auto_removes;
        assert!(wait_until(Duration::from_secs(30), || removes() >= k));
        // k deletions were attempted: k - 1 done, the k-th failed and the
        // prune stopped. Unless the next tick has started deleting already,
        // the directory shows exactly that.
        let present = autos(&dir);
        let deleted_first: Vec<&str> = [old[2], old[1], old[0]].into_iter().take(k - 1).collect();
        if removes() == k {
            for o in old {
                assert_eq!(
                    present.contains(&o.to_string()),
                    !deleted_first.contains(&o),
                    "k={k}: {o}: {present:?}"
                );
            }
        } else {
            println!("k={k}: the next tick pruned before the listing; exact check skipped");
        }
        assert!(present.contains(&old[3].to_string()), "k={k}: kept one deleted");
        for f in foreign {
            assert!(dir.join(f).exists(), "k={k}: {f} deleted");
        }
        assert_eq!(field(&c.cmd("INFO"), "auto_snapshots_failed"), "0");
        assert_eq!(c.cmd("PING"), "OK PONG");
        assert_eq!(c.cmd("EVENT u ADD x 5"), "OK");
        // the next tick prunes the rest: only `retain` auto snapshots remain
        assert!(
            wait_until(Duration::from_secs(30), || autos(&dir).len() == 2
                && !autos(&dir).iter().any(|a| a.starts_with("auto_2020"))),
            "k={k}: {:?}",
            autos(&dir)
        );
        for f in foreign {
            assert!(dir.join(f).exists(), "k={k}: {f} deleted");
        }
        println!("retention delete {k} of 3 failed: earlier deletes kept, later ones not attempted, foreign files kept, serving went on; next tick finished the pruning");
    }
}

/// Regression: a failed temp-file creation or fsync during DUMP SAVE was
/// reported as `I/O error on <dir>/.x.nvec.tmp.<pid>.<n>: ...`, naming a
/// temp file that had already been deleted when the client read the reply.
/// The error now names the file the client asked for.
#[test]
fn regression_save_errors_name_the_target_not_the_deleted_temp_file() {
    let ops = Faulty::new();
    let server = spawn(ops.clone(), |_| {});
    let mut c = server.client();
    let target = server.snapshot_dir().join("x.nvec");
    for fault in [Fault::CreateTemp(libc::EIO), Fault::SyncFile] {
        ops.set(fault);
        let r = c.cmd("DUMP SAVE x.nvec");
        ops.set(Fault::None);
        assert_eq!(
            first_line(&r),
            format!(
                "(error) I/O error on {}: Input/output error (os error 5)",
                target.display()
            ),
            "{fault:?}"
        );
    }
}
