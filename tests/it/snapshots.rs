//! DUMP end to end: round trips give identical answers, failed loads leave the
//! live data untouched, SAVE is point in time while writers go on, LOAD is
//! read-only for writers, and files are written atomically with mode 0600.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use crate::support::{wait_until, Client, TestServer};

/// Questions whose answers must survive a SAVE/LOAD round trip.
const QUESTIONS: &[&str] = &[
    "SIM item1 10 using=events",
    "SIM item2 10 using=events",
    "SIM item1 10 using=vectors",
    "SIM item3 10 using=fusion",
    "SIM item4 5",
    "SIMV 10 0.3 -0.2 0.9 0.1",
    "SIMV 3 min_score=0.1 1 1 1 1",
];

fn populate(c: &mut Client, contexts: usize, items: usize) {
    let mut batch = String::new();
    for i in 0..contexts * 8 {
        let ctx = i % contexts;
        let item = (i * 7 + ctx) % items;
        let kind = ["ADD", "ADD", "SET"][i % 3];
        batch.push_str(&format!(
            "EVENT u{ctx} {kind} item{item} {}\r\n",
            1 + (i * 13) % 100
        ));
        if i % 17 == 0 {
            batch.push_str(&format!("EVENT u{ctx} DEL item{item}\r\n"));
        }
    }
    for k in 0..items {
        let v: Vec<String> = (0..4)
            .map(|d| format!("{:.3}", ((k * 31 + d * 17) % 97) as f32 / 48.0 - 1.0))
            .collect();
        batch.push_str(&format!("VECSET item{k} {}\r\n", v.join(" ")));
    }
    let n = batch.lines().count();
    c.send_raw(batch.as_bytes());
    for _ in 0..n {
        assert_eq!(c.read_line().as_deref(), Some("OK"));
    }
}

fn answers(c: &mut Client) -> Vec<String> {
    let mut out: Vec<String> = QUESTIONS.iter().map(|q| c.cmd(q)).collect();
    let info = c.cmd("INFO");
    for key in [
        "contexts",
        "events",
        "vectors",
        "vector_dimension",
        "co_occurrence_pairs",
    ] {
        let line = info
            .lines()
            .find(|l| l.starts_with(&format!("{key}: ")))
            .expect("INFO key");
        out.push(line.to_string());
    }
    out
}

fn field(block: &str, key: &str) -> String {
    block
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("{key} missing in {block}"))
        .to_string()
}

#[test]
fn load_restores_identical_answers_on_another_server() {
    let a = TestServer::spawn();
    let mut ca = a.client();
    populate(&mut ca, 40, 60);
    let before = answers(&mut ca);
    let saved = ca.cmd("DUMP SAVE round.nvec");
    assert!(saved.starts_with("OK Snapshot saved: "), "{saved}");
    let file = a.snapshot_dir().join("round.nvec");
    let mode = std::fs::metadata(&file).expect("file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let b = TestServer::spawn();
    std::fs::copy(&file, b.snapshot_dir().join("round.nvec")).expect("copy");
    let mut cb = b.client();
    cb.cmd("EVENT someone ADD other 5");
    let loaded = cb.cmd("DUMP LOAD round.nvec");
    assert!(loaded.starts_with("OK Snapshot loaded: "), "{loaded}");
    assert_eq!(answers(&mut cb), before);
    // The dedup state came back too: a duplicate ADD stays a duplicate.
    let events = field(&cb.cmd("INFO"), "events");
    let last_add = std::fs::read(&file).map(|_| ()).ok();
    assert!(last_add.is_some());
    assert_eq!(field(&cb.cmd("INFO"), "events"), events);
}

#[test]
fn saving_the_same_state_twice_gives_the_same_bytes_apart_from_created_at() {
    let s = TestServer::spawn();
    let mut c = s.client();
    populate(&mut c, 10, 20);
    c.cmd("DUMP SAVE one.nvec");
    c.cmd("DUMP SAVE two.nvec");
    let one = std::fs::read(s.snapshot_dir().join("one.nvec")).expect("one");
    let two = std::fs::read(s.snapshot_dir().join("two.nvec")).expect("two");
    assert_eq!(one.len(), two.len());
    // created_at is header bytes 24..32; the file CRC (footer) covers it.
    let n = one.len();
    let strip = |b: &[u8]| [&b[..24], &b[32..n - 8], &b[n - 4..]].concat();
    assert_eq!(strip(&one), strip(&two));
}

#[test]
fn a_refused_load_leaves_live_data_untouched() {
    let s = TestServer::spawn();
    let mut c = s.client();
    populate(&mut c, 10, 20);
    c.cmd("DUMP SAVE good.nvec");
    let good = std::fs::read(s.snapshot_dir().join("good.nvec")).expect("good");
    populate(&mut c, 12, 25);
    let mut before = answers(&mut c);
    let dir = s.snapshot_dir();
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    cases.push(("flipped.nvec".into(), flipped));
    cases.push(("short.nvec".into(), good[..good.len() - 3].to_vec()));
    let mut longer = good.clone();
    longer.push(0);
    cases.push(("longer.nvec".into(), longer));
    cases.push(("empty.nvec".into(), Vec::new()));
    for (name, bytes) in &cases {
        std::fs::write(dir.join(name), bytes).expect("write");
        let r = c.cmd(&format!("DUMP LOAD {name}"));
        assert!(r.starts_with("(error) "), "{name}: {r}");
        let v = c.cmd(&format!("DUMP VERIFY {name}"));
        assert!(v.starts_with("(error) "), "{name}: {v}");
        assert_eq!(answers(&mut c), before, "{name}");
        assert!(
            c.cmd(&format!("EVENT u1 ADD {name} 1")) == "OK",
            "writable again after {name}"
        );
        before = answers(&mut c);
    }
}

/// Many contexts over a few thousand items: tens of thousands of co-occurrence pairs,
/// so a load streams many batches to the store (4,096 records each).
fn populate_many_pairs(c: &mut Client) {
    let mut batch = String::new();
    let mut x: u64 = 7;
    for ctx in 0..1_500 {
        for j in 0..12 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let item = (x >> 33) % 2_000;
            batch.push_str(&format!(
                "EVENT m{ctx} ADD item{item} {}\r\n",
                1 + (ctx + j) % 100
            ));
        }
    }
    for k in 0..50 {
        batch.push_str(&format!("VECSET item{k} {} 0.5 0.25 1\r\n", k % 7));
    }
    let n = batch.lines().count();
    c.send_raw(batch.as_bytes());
    for _ in 0..n {
        assert_eq!(c.read_line().as_deref(), Some("OK"));
    }
}

#[test]
fn a_load_of_many_batches_round_trips_and_a_late_refusal_changes_nothing() {
    let a = TestServer::spawn();
    let mut ca = a.client();
    populate_many_pairs(&mut ca);
    let pairs: u64 = field(&ca.cmd("INFO"), "co_occurrence_pairs")
        .parse()
        .expect("pairs");
    assert!(pairs > 10 * 4096, "{pairs} pairs: too few batches to matter");
    let before = answers(&mut ca);
    let saved = ca.cmd("DUMP SAVE many.nvec");
    assert!(saved.starts_with("OK Snapshot saved: "), "{saved}");
    let file = a.snapshot_dir().join("many.nvec");

    // The store refuses the file only at its dimension, after every pair
    // batch was sent: the staged store is dropped, the live one stays.
    let b = TestServer::spawn_with(|c| c.vectors.default_dimension = 8);
    std::fs::copy(&file, b.snapshot_dir().join("many.nvec")).expect("copy");
    let mut cb = b.client();
    assert_eq!(cb.cmd("EVENT someone ADD other 5"), "OK");
    let b_before = answers(&mut cb);
    let refused = cb.cmd("DUMP LOAD many.nvec");
    assert_eq!(
        refused,
        "(error) Corrupt snapshot: vector dimension 4 differs from vectors.default_dimension 8\nEND"
    );
    assert_eq!(answers(&mut cb), b_before);
    assert_eq!(cb.cmd("EVENT someone ADD third 5"), "OK");

    let c = TestServer::spawn();
    std::fs::copy(&file, c.snapshot_dir().join("many.nvec")).expect("copy");
    let mut cc = c.client();
    let loaded = cc.cmd("DUMP LOAD many.nvec");
    assert!(loaded.starts_with("OK Snapshot loaded: "), "{loaded}");
    assert_eq!(answers(&mut cc), before);
    assert_eq!(
        cc.cmd("DUMP SAVE again.nvec").split(':').next(),
        Some("OK Snapshot saved")
    );
    let strip = |b: &[u8]| [&b[..24], &b[32..b.len() - 8]].concat();
    let again = std::fs::read(c.snapshot_dir().join("again.nvec")).expect("again");
    let first = std::fs::read(&file).expect("first");
    assert_eq!(strip(&again), strip(&first));
}

#[test]
fn writers_during_a_save_see_no_errors_and_the_file_holds_exactly_the_state_at_save() {
    let s = TestServer::spawn();
    let mut c = s.client();
    // Enough data that the save takes a while.
    let mut bulk = String::new();
    for k in 0..20_000 {
        bulk.push_str(&format!("VECSET base{k} {} 0.5 0.25 1\r\n", k % 10));
    }
    c.send_raw(bulk.as_bytes());
    for _ in 0..20_000 {
        assert_eq!(c.read_line().as_deref(), Some("OK"));
    }
    let addr = s.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let save_sent = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
    let mut writers = Vec::new();
    for w in 0..3 {
        let stop = stop.clone();
        writers.push(std::thread::spawn(move || {
            let mut c = Client::connect(addr);
            let mut log = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && i < 200_000 {
                let sent = Instant::now();
                let r = c.cmd(&format!("VECSET w{w}_{i} 1 2 3 4"));
                assert_eq!(r, "OK");
                log.push((format!("w{w}_{i}"), sent, Instant::now()));
                i += 1;
            }
            log
        }));
    }
    std::thread::sleep(Duration::from_millis(100));
    *save_sent.lock().expect("lock") = Some(Instant::now());
    let sent_at = Instant::now();
    let r = c.cmd("DUMP SAVE during.nvec");
    let replied_at = Instant::now();
    assert!(r.starts_with("OK Snapshot saved"), "{r}");
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let logs: Vec<_> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("writer"))
        .collect();

    // Load the file into a fresh server and ask which ids it holds.
    let fresh = TestServer::spawn();
    std::fs::copy(
        s.snapshot_dir().join("during.nvec"),
        fresh.snapshot_dir().join("during.nvec"),
    )
    .expect("copy");
    let mut f = fresh.client();
    assert!(f.cmd("DUMP LOAD during.nvec").starts_with("OK"));
    let (mut before, mut after, mut between) = (0, 0, 0);
    for (id, sent, acked) in &logs {
        let present = !f
            .cmd(&format!("SIM {id} 1 using=vectors"))
            .starts_with("(error) Item not found");
        if *acked < sent_at {
            assert!(
                present,
                "{id} was acknowledged before the SAVE but is not in the file"
            );
            before += 1;
        } else if *sent > replied_at {
            assert!(
                !present,
                "{id} was sent after the SAVE replied but is in the file"
            );
            after += 1;
        } else {
            between += 1;
        }
    }
    println!("writes acknowledged before SAVE: {before} (all in the file); sent after its reply: {after} (none in the file); concurrent: {between}");
    assert!(before > 0 && after > 0);
}

#[test]
fn writers_during_a_load_get_the_read_only_error_and_reads_go_on() {
    let s = TestServer::spawn();
    let mut c = s.client();
    let mut bulk = String::new();
    for k in 0..60_000 {
        bulk.push_str(&format!("VECSET v{k} {} 0.5 0.25 1 2 3 4 5\r\n", k % 10));
    }
    c.send_raw(bulk.as_bytes());
    for _ in 0..60_000 {
        assert_eq!(c.read_line().as_deref(), Some("OK"));
    }
    assert!(c.cmd("DUMP SAVE big.nvec").starts_with("OK"));
    let mut w = s.client();
    let mut saw_read_only = false;
    for _attempt in 0..5 {
        c.send_raw(b"DUMP LOAD big.nvec\r\n");
        // Write until the load is visible (or it is over: then try again).
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let r = w.cmd("EVENT u1 ADD x 5");
            if r == "(error) Server is in read-only mode: snapshot load in progress" {
                saw_read_only = true;
                assert!(w.cmd("VECSET y 1 2 3 4 5 6 7 8").contains("read-only mode"));
                assert!(w.cmd("VECDEL v1").contains("read-only mode"));
                assert_eq!(
                    w.cmd("DUMP SAVE x.nvec").lines().next(),
                    Some("(error) Cannot save snapshot: read-only mode")
                );
                assert_eq!(
                    w.cmd("DUMP LOAD big.nvec").lines().next(),
                    Some("(error) Snapshot load already in progress")
                );
                let info = w.cmd("INFO");
                assert_eq!(field(&info, "read_only"), "true");
                assert_eq!(
                    field(&info, "vectors"),
                    "60000",
                    "reads answer from the old state"
                );
                assert!(w.cmd("SIM v1 1 using=vectors").starts_with("OK RESULTS 1"));
                break;
            }
            assert_eq!(r, "OK");
        }
        let done = c.read_response(nvecd::protocol::Shape::Block);
        assert!(
            done[0].starts_with("OK Snapshot loaded: 0 events, 60000 vectors"),
            "{done:?}"
        );
        if saw_read_only {
            break;
        }
    }
    assert!(saw_read_only, "never caught the load in progress");
    assert!(wait_until(Duration::from_secs(10), || w.cmd("EVENT u1 ADD x 6") == "OK"));
}

#[test]
fn save_blocks_the_store_mailbox_only_briefly() {
    let s = TestServer::spawn();
    let mut c = s.client();
    let mut bulk = String::new();
    for k in 0..100_000 {
        bulk.push_str(&format!("VECSET v{k} {} 0.5 0.25 1\r\n", k % 10));
    }
    c.send_raw(bulk.as_bytes());
    for _ in 0..100_000 {
        assert_eq!(c.read_line().as_deref(), Some("OK"));
    }
    let addr = s.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = stop.clone();
    let prober = std::thread::spawn(move || {
        let mut p = Client::connect(addr);
        let mut worst = Duration::ZERO;
        let mut n = 0;
        while !st.load(std::sync::atomic::Ordering::SeqCst) {
            let t = Instant::now();
            assert_eq!(p.cmd(&format!("EVENT probe ADD i{} 5", n % 100)), "OK");
            worst = worst.max(t.elapsed());
            n += 1;
        }
        (worst, n)
    });
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    assert!(c.cmd("DUMP SAVE big.nvec").starts_with("OK"));
    let save = t.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (worst, n) = prober.join().expect("prober");
    println!(
        "SAVE of 100,000 vectors took {save:?}; worst EVENT latency on another connection meanwhile: {worst:?} over {n} requests"
    );
}

#[test]
fn path_rules_hold_for_symlinks_and_directories() {
    let s = TestServer::spawn();
    let mut c = s.client();
    let dir = s.snapshot_dir();
    let outside = tempfile::tempdir().expect("outside");
    std::os::unix::fs::symlink(outside.path(), dir.join("link")).expect("symlink");
    let inside = "Invalid path: must be inside ";
    let r = c.cmd("DUMP SAVE link/x.nvec");
    assert!(r.starts_with(&format!("(error) {inside}")), "{r}");
    assert!(
        std::fs::read_dir(outside.path()).expect("dir").next().is_none(),
        "nothing created outside"
    );
    std::fs::write(outside.path().join("secret.nvec"), b"x").expect("write");
    std::os::unix::fs::symlink(outside.path().join("secret.nvec"), dir.join("alias.nvec")).expect("symlink");
    let r = c.cmd("DUMP VERIFY alias.nvec");
    assert!(r.starts_with(&format!("(error) {inside}")), "{r}");
    std::fs::create_dir(dir.join("sub")).expect("mkdir");
    let r = c.cmd("DUMP SAVE sub");
    assert!(r.starts_with("(error) Invalid path"), "{r}");
    let r = c.cmd("DUMP SAVE sub/ok.nvec");
    assert!(r.starts_with("OK Snapshot saved"), "{r}");
    let r = c.cmd("DUMP SAVE bad\u{7}name.nvec");
    assert!(r.starts_with("(error) Invalid path"), "{r}");
}

/// A save or load the filesystem refuses while its path is resolved is a
/// failed job in DUMP STATUS (and, for a save, INFO's `last_save_*`); a
/// request refused for its path's form is not a job and changes neither.
#[test]
fn a_save_or_load_refused_by_the_filesystem_is_a_failed_job() {
    let s = TestServer::spawn();
    let mut c = s.client();
    let dir = s.snapshot_dir();
    assert_eq!(field(&c.cmd("DUMP STATUS"), "status"), "idle");
    let r = c.cmd("DUMP SAVE ../x.nvec");
    assert!(r.starts_with("(error) Invalid path"), "{r}");
    assert_eq!(field(&c.cmd("DUMP STATUS"), "status"), "idle");
    assert_eq!(field(&c.cmd("INFO"), "last_save_status"), "none");

    let r = c.cmd("DUMP SAVE nodir/x.nvec");
    let head = r.lines().next().expect("line").to_string();
    assert!(head.starts_with("(error) File not found: "), "{r}");
    let status = c.cmd("DUMP STATUS");
    assert_eq!(field(&status, "status"), "failed", "{status}");
    assert_eq!(field(&status, "operation"), "save", "{status}");
    assert_eq!(
        field(&status, "filepath"),
        dir.join("nodir/x.nvec").display().to_string()
    );
    assert_eq!(
        Some(field(&status, "error")),
        head.strip_prefix("(error) ").map(str::to_string)
    );
    assert_eq!(field(&c.cmd("INFO"), "last_save_status"), "failed");

    let long = "a".repeat(300);
    let r = c.cmd(&format!("DUMP LOAD {long}.nvec"));
    assert!(r.contains("File name too long"), "{r}");
    let status = c.cmd("DUMP STATUS");
    assert_eq!(field(&status, "operation"), "load", "{status}");
    assert!(field(&status, "error").contains("File name too long"), "{status}");

    let r = c.cmd("DUMP SAVE ok.nvec");
    assert!(r.starts_with("OK Snapshot saved"), "{r}");
    assert_eq!(field(&c.cmd("DUMP STATUS"), "status"), "completed");
    assert_eq!(field(&c.cmd("INFO"), "last_save_status"), "ok");
    let r = c.cmd("DUMP LOAD /etc/x.nvec");
    assert!(r.starts_with("(error) Invalid path: must be inside"), "{r}");
    assert_eq!(field(&c.cmd("DUMP STATUS"), "status"), "completed");
}

#[test]
fn dump_save_without_a_path_never_overwrites() {
    let s = TestServer::spawn();
    let mut c = s.client();
    let mut names = std::collections::HashSet::new();
    for _ in 0..3 {
        let r = c.cmd("DUMP SAVE");
        let first = r.lines().next().expect("line");
        let path = first.strip_prefix("OK Snapshot saved: ").expect("saved");
        let name = std::path::Path::new(path)
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        assert!(name.starts_with("dump_") && name.ends_with(".nvec"), "{name}");
        assert!(names.insert(name));
    }
}

#[test]
fn a_save_encoded_on_several_threads_has_the_bytes_of_one_encoded_on_one() {
    // 18,000 items with pairs: over the 16,384 rows from which
    // `snapshot.save_threads` splits the pair encoding.
    let a = TestServer::spawn_with(|c| c.snapshot.save_threads = 3);
    let mut ca = a.client();
    populate(&mut ca, 40, 60);
    let mut batch = String::new();
    for i in 0..9000 {
        batch.push_str(&format!(
            "EVENT p{i} ADD x{} 5\r\nEVENT p{i} ADD x{} 7\r\n",
            2 * i,
            2 * i + 1
        ));
    }
    ca.send_raw(batch.as_bytes());
    for _ in 0..18_000 {
        assert_eq!(ca.read_line().as_deref(), Some("OK"));
    }
    let ask = |c: &mut Client| {
        let mut v = answers(c);
        v.extend(["SIM x0 10 using=events", "SIM x17999 10 using=events"].map(|q| c.cmd(q)));
        v
    };
    let before = ask(&mut ca);
    assert!(ca.cmd("DUMP SAVE par.nvec").starts_with("OK Snapshot saved: "));

    // the same state on a server that encodes on one thread
    let b = TestServer::spawn();
    let par = a.snapshot_dir().join("par.nvec");
    std::fs::copy(&par, b.snapshot_dir().join("par.nvec")).expect("copy");
    let mut cb = b.client();
    assert!(cb.cmd("DUMP LOAD par.nvec").starts_with("OK Snapshot loaded: "));
    assert_eq!(ask(&mut cb), before);
    assert!(cb.cmd("DUMP SAVE seq.nvec").starts_with("OK Snapshot saved: "));
    let par = std::fs::read(par).expect("par");
    let seq = std::fs::read(b.snapshot_dir().join("seq.nvec")).expect("seq");
    assert_eq!(par.len(), seq.len());
    let n = par.len();
    let strip = |b: &[u8]| [&b[..24], &b[32..n - 8], &b[n - 4..]].concat();
    assert!(strip(&par) == strip(&seq), "the two encodings differ");
}
