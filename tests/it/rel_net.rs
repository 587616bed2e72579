//! Network reliability: idle timeout, clients that never read, overlong and
//! NUL-laden input, connection churn, and a pipelined load test with a model of
//! every acknowledged write checked against a final snapshot. Servers listen
//! on port 0 in temp dirs; waits are bounded and nothing asserts a speed.
//! Figures are printed (`--nocapture`). The full load test:
//! `cargo test --test it -- --ignored load_full --nocapture`.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::write_config;
use crate::rel_util::{field, Rng};
use crate::support::{wait_until, Client, TestBinary, TestServer};
use nvecd::protocol::Shape;
use nvecd::snapshot::testkit::Model;
use nvecd::store::{EventKind, ItemNames, LoadBatch};

/// INFO `connected_clients`.
fn clients(c: &mut Client) -> u64 {
    field(&c.cmd("INFO"), "connected_clients")
        .parse()
        .expect("number")
}

/// VmRSS of a process in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A raw socket with a read timeout; true when the server closed it (EOF or
/// reset) within `within`. Bytes before the close are ignored.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let end = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(_) => return true,
        }
    }
    false
}

/// A read that timed out (the socket is still open).
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

#[test]
fn idle_timeout_closes_idle_and_trickling_clients_but_not_active_ones() {
    let server = TestServer::spawn_with(|c| c.api.idle_timeout_sec = 1);
    let addr = server.addr;
    // Idle: connects and sends nothing.
    let idle = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        closed_within(&mut s, Duration::from_secs(15))
    });
    // Trickling: one byte every 200 ms, never a newline.
    let trickle = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let end = Instant::now() + Duration::from_secs(15);
        let mut buf = [0u8; 64];
        while Instant::now() < end {
            if s.write_all(b"P").is_err() {
                return true;
            }
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => return false, // the server must not answer a partial line
                Err(e) if is_timeout(&e) => {}
                Err(_) => return true,
            }
        }
        false
    });
    // Active: a PING every 300 ms for 3 s.
    let mut active = server.client();
    for _ in 0..10 {
        assert_eq!(active.cmd("PING"), "OK PONG");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(active.cmd("PING"), "OK PONG");
    assert!(idle.join().expect("idle thread"), "idle client not closed");
    assert!(
        trickle.join().expect("trickle thread"),
        "trickling client not closed"
    );
    // The closes were silent and the active client is the only one left.
    assert!(wait_until(Duration::from_secs(10), || clients(&mut active) == 1));
    drop(active);
    // 0 disables it.
    let server = TestServer::spawn_with(|c| c.api.idle_timeout_sec = 0);
    let mut s = TcpStream::connect(server.addr).expect("connect");
    assert!(!closed_within(&mut s, Duration::from_millis(2500)));
    s.write_all(b"PING\r\n").expect("write");
    let mut c = Client::connect(server.addr);
    assert_eq!(c.cmd("PING"), "OK PONG");
}

#[test]
fn a_client_that_never_reads_is_dropped_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), "");
    let server = TestBinary::start(
        &cfg,
        &[("NVECD__API__IDLE_TIMEOUT_SEC", "2"), ("RUST_LOG", "info")],
    );
    let pid = server.child.id();
    let mut good = server.client();
    // 1000 vectors with 108-byte ids: a SIMV of top_k 1000 is about 120 KB.
    let mut batch = String::new();
    for i in 0..1000 {
        batch.push_str(&format!(
            "VECSET item-{i:06}-{} {} {} {} 1\r\n",
            "x".repeat(96),
            i % 7 + 1,
            i % 11 + 1,
            i % 13 + 1
        ));
    }
    good.send_raw(batch.as_bytes());
    for _ in 0..1000 {
        assert_eq!(good.read_response(Shape::Line), vec!["OK"]);
    }
    let one = good.cmd("SIMV 1000 1 2 3 4");
    let reply_bytes = one.len() + one.lines().count();
    let base_rss = rss_kib(pid);
    assert_eq!(clients(&mut good), 1);

    // The bad client asks for 5,000 large replies (~600 MB) in one write, so
    // the server reads hundreds of them per batch, and reads nothing back.
    let mut bad = TcpStream::connect(server.addr).expect("connect");
    bad.set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let sent = 5000;
    let _ = bad.write_all("SIMV 1000 1 2 3 4\r\n".repeat(sent).as_bytes());
    let start = Instant::now();
    let mut peak = base_rss;
    let mut pings = 0;
    let dropped = wait_until(Duration::from_secs(60), || {
        peak = peak.max(rss_kib(pid));
        assert_eq!(good.cmd("PING"), "OK PONG");
        pings += 1;
        clients(&mut good) == 1
    });
    assert!(dropped, "the never-reading client was not dropped");
    let secs = start.elapsed().as_secs_f64();
    let growth = peak.saturating_sub(base_rss);
    println!(
        "never-reading client: one reply {reply_bytes} bytes, {sent} requests sent (none read), \
         dropped after {secs:.1} s (stall timeout 2 s), {pings} PINGs \
         answered meanwhile, RSS {base_rss} KiB before, peak {peak} KiB (+{growth} KiB)"
    );
    assert!(
        wait_until(Duration::from_secs(10), || server
            .logs()
            .contains("dropping client")),
        "no log line"
    );
    // Output per connection: 64 KiB + one reply + one group of <= 1024 rows;
    // generous for allocator slack, far below one unbounded batch of replies
    // (hundreds of requests per read: tens of MB).
    assert!(growth < 16 * 1024, "RSS grew by {growth} KiB");
    drop(bad);
    assert_eq!(good.cmd("PING"), "OK PONG");
}

#[test]
fn a_stream_without_newline_longer_than_the_limit_is_refused() {
    let limit = 64 * 1024;
    let server = TestServer::spawn_with(|c| c.api.max_request_bytes = limit);
    let mut other = server.client();
    let mut s = TcpStream::connect(server.addr).expect("connect");
    // limit + 1 bytes in 4 KiB writes: exactly enough to pass the limit, so
    // nothing arrives after the server has closed.
    let mut left = limit + 1;
    while left > 0 {
        let n = left.min(4096);
        s.write_all(&vec![b'x'; n]).expect("write");
        left -= n;
        if left % (16 * 4096) == 0 {
            assert_eq!(other.cmd("PING"), "OK PONG");
        }
    }
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert_eq!(
        String::from_utf8_lossy(&got),
        format!("(error) Request too large: limit is {limit} bytes\r\n")
    );
    assert_eq!(other.cmd("PING"), "OK PONG");
    assert!(wait_until(Duration::from_secs(10), || clients(&mut other) == 1));
}

#[test]
fn nul_bytes_in_a_line_get_an_error_and_the_connection_stays_usable() {
    let server = TestServer::spawn();
    let mut c = server.client();
    for line in [
        &b"PING\0"[..],
        b"\0",
        b"EVENT u\0 ADD a 5",
        b"VECSET a\0b 1 2",
        b"\0\0\0 PING",
    ] {
        c.send_raw(line);
        c.send_raw(b"\r\n");
        assert_eq!(c.read_line().as_deref(), Some("(error) NUL byte in request"));
    }
    // Block commands get the error as a block; DUMP paths keep SPEC 4.2's reply.
    assert_eq!(c.cmd("CONFIG SHOW api\0"), "(error) NUL byte in request\nEND");
    let r = c.cmd("DUMP SAVE a\0b.nvec");
    assert_eq!(r.lines().next(), Some("(error) Invalid path"), "{r}");
    assert_eq!(c.cmd("PING"), "OK PONG");
    // Nothing was stored.
    let info = c.cmd("INFO");
    assert_eq!(field(&info, "events"), "0");
    assert_eq!(field(&info, "vectors"), "0");
}

#[test]
fn three_thousand_connects_and_disconnects_leave_no_trace() {
    let server = TestServer::spawn();
    let addr = server.addr;
    let mut watcher = server.client();
    let base = clients(&mut watcher);
    assert_eq!(base, 1);
    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let done = done.clone();
            std::thread::spawn(move || {
                for i in 0..750 {
                    let mut s = TcpStream::connect(addr).expect("connect");
                    match (t + i) % 3 {
                        0 => {}
                        1 => {
                            let _ = s.write_all(b"EVENT u1 ADD it");
                        }
                        _ => {
                            let _ = s.write_all(b"PING\r\n");
                        }
                    }
                    drop(s);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut pings = 0;
    while done.load(Ordering::Relaxed) < 3000 {
        assert_eq!(watcher.cmd("PING"), "OK PONG");
        pings += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    for t in threads {
        t.join().expect("churn thread");
    }
    assert!(
        wait_until(Duration::from_secs(30), || clients(&mut watcher) == base),
        "connected_clients did not return to {base}"
    );
    println!("churn: 3000 connections opened and closed, {pings} PINGs answered meanwhile");
    // Nothing of the partial lines was executed.
    assert_eq!(field(&watcher.cmd("INFO"), "events"), "0");
    assert_eq!(Client::connect(addr).cmd("PING"), "OK PONG");
}

// ---------------------------------------------------------------------------
// Load test with a model of acknowledged writes.

/// What an `OK` acknowledges.
enum Effect {
    Event {
        ctx: String,
        id: String,
        score: i32,
        kind: EventKind,
    },
    VecSet {
        id: String,
        values: Vec<f32>,
    },
    VecDel {
        id: String,
    },
}

enum Expect {
    Ok(Effect),
    Pong,
    Results,
}

/// Acknowledged state of one connection.
#[derive(Default)]
struct ConnModel {
    /// Context -> (id, score, kind) in order.
    contexts: BTreeMap<String, Vec<(String, i32, EventKind)>>,
    /// Id -> Some(values) when set, None when deleted.
    vectors: BTreeMap<String, Option<Vec<f32>>>,
}

/// What each worker generates against (may run ahead of the acknowledgements).
struct Gen {
    conn: usize,
    rng: Rng,
    ctx_no: usize,
    ctx_len: usize,
    item_no: usize,
    live_sets: Vec<String>,
    present: Vec<String>,
}

/// Events per context: below `events.ctx_buffer_size` (50), so none is dropped.
const CTX_EVENTS: usize = 40;
/// Vector ids per connection.
const IDS: u64 = 20;

impl Gen {
    fn ctx(&self) -> String {
        format!("w{}c{}", self.conn, self.ctx_no)
    }

    fn values(&mut self) -> Vec<f32> {
        (0..4).map(|_| (1 + self.rng.below(40)) as f32 / 4.0).collect()
    }

    fn text(values: &[f32]) -> String {
        values.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(" ")
    }

    fn event(&mut self, kind: EventKind) -> (String, Expect) {
        if self.ctx_len >= CTX_EVENTS {
            self.ctx_no += 1;
            self.ctx_len = 0;
            self.live_sets.clear();
        }
        self.ctx_len += 1;
        let ctx = self.ctx();
        let (id, score, line) = match kind {
            EventKind::Del => {
                let id = self.live_sets.pop().expect("a live SET");
                let line = format!("EVENT {ctx} DEL {id}");
                (id, 0, line)
            }
            _ => {
                self.item_no += 1;
                let id = format!("w{}i{}", self.conn, self.item_no);
                let score = 1 + self.rng.below(100) as i32;
                let word = if kind == EventKind::Set { "SET" } else { "ADD" };
                if kind == EventKind::Set {
                    self.live_sets.push(id.clone());
                }
                let line = format!("EVENT {ctx} {word} {id} {score}");
                (id, score, line)
            }
        };
        (line, Expect::Ok(Effect::Event { ctx, id, score, kind }))
    }

    fn next(&mut self) -> (String, Expect) {
        let r = self.rng.below(100);
        match r {
            0..=29 => self.event(EventKind::Add),
            30..=44 => self.event(EventKind::Set),
            45..=54 if !self.live_sets.is_empty() && self.ctx_len < CTX_EVENTS => self.event(EventKind::Del),
            45..=54 => self.event(EventKind::Add),
            55..=76 => {
                let id = format!("w{}v{}", self.conn, self.rng.below(IDS));
                if r >= 70 {
                    if let Some(pos) = self.present.iter().position(|p| *p == id) {
                        self.present.swap_remove(pos);
                        return (format!("VECDEL {id}"), Expect::Ok(Effect::VecDel { id }));
                    }
                }
                let values = self.values();
                if !self.present.contains(&id) {
                    self.present.push(id.clone());
                }
                (
                    format!("VECSET {id} {}", Self::text(&values)),
                    Expect::Ok(Effect::VecSet { id, values }),
                )
            }
            77..=86 => match self.present.first() {
                Some(id) => (format!("SIM {id} 10 using=vectors"), Expect::Results),
                None => ("PING".into(), Expect::Pong),
            },
            87..=94 => {
                let v = self.values();
                (format!("SIMV 10 {}", Self::text(&v)), Expect::Results)
            }
            _ => ("PING".into(), Expect::Pong),
        }
    }
}

/// One worker: `cmds` commands pipelined `PIPELINE` at a time.
fn worker(addr: SocketAddr, conn: usize, cmds: usize, seed: u64) -> (ConnModel, u64, Vec<String>) {
    const PIPELINE: usize = 100;
    let mut c = Client::connect(addr);
    let mut g = Gen {
        conn,
        rng: Rng::new(seed ^ (conn as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        ctx_no: 0,
        ctx_len: 0,
        item_no: 0,
        live_sets: Vec::new(),
        present: Vec::new(),
    };
    let mut model = ConnModel::default();
    let mut errors = 0;
    let mut samples = Vec::new();
    let mut left = cmds;
    while left > 0 {
        let n = left.min(PIPELINE);
        left -= n;
        let mut text = String::new();
        let mut expects = Vec::with_capacity(n);
        for _ in 0..n {
            let (line, e) = g.next();
            text.push_str(&line);
            text.push_str("\r\n");
            expects.push((line, e));
        }
        c.send_raw(text.as_bytes());
        for (line, e) in expects {
            let (shape, good): (Shape, fn(&[String]) -> bool) = match e {
                Expect::Ok(_) => (Shape::Line, |r| r == ["OK"]),
                Expect::Pong => (Shape::Line, |r| r == ["OK PONG"]),
                Expect::Results => (Shape::Results, |r| r[0].starts_with("OK RESULTS ")),
            };
            let reply = c.read_response(shape);
            if !good(&reply) {
                errors += 1;
                if samples.len() < 5 {
                    samples.push(format!("{line} -> {reply:?}"));
                }
                continue;
            }
            match e {
                Expect::Ok(Effect::Event { ctx, id, score, kind }) => {
                    model.contexts.entry(ctx).or_default().push((id, score, kind))
                }
                Expect::Ok(Effect::VecSet { id, values }) => {
                    model.vectors.insert(id, Some(values));
                }
                Expect::Ok(Effect::VecDel { id }) => {
                    model.vectors.insert(id, None);
                }
                _ => {}
            }
        }
    }
    (model, errors, samples)
}

struct SnapshotContent {
    contexts: HashMap<String, Vec<(String, i32, EventKind)>>,
    vectors: HashMap<String, Vec<f32>>,
}

fn read_snapshot(path: &std::path::Path) -> SnapshotContent {
    let mut model = Model::default();
    let mut names = ItemNames::default();
    let mut file = std::fs::File::open(path).expect("open snapshot");
    nvecd::snapshot::load_file(&mut file, path, nvecd::snapshot::LoadOptions::default(), |b| {
        match b {
            LoadBatch::Contexts(cs) => model.push_contexts(&mut names, cs),
            LoadBatch::Vectors(vs) => model.vectors.extend(vs.into_iter().map(|v| (v.id, v.values))),
            _ => {}
        }
        Ok(())
    })
    .expect("snapshot loads");
    SnapshotContent {
        contexts: model
            .contexts
            .into_iter()
            .map(|(name, evs)| {
                (
                    name,
                    evs.into_iter()
                        .map(|(id, score, _, kind)| (id, score, kind))
                        .collect(),
                )
            })
            .collect(),
        vectors: model.vectors.into_iter().collect(),
    }
}

/// Acknowledged writes the snapshot does not hold as acknowledged.
fn lost_writes(models: &[ConnModel], snap: &SnapshotContent) -> (u64, u64) {
    let mut acked = 0;
    let mut lost = 0;
    for m in models {
        for (ctx, events) in &m.contexts {
            acked += events.len() as u64;
            let got = snap.contexts.get(ctx).map(Vec::as_slice).unwrap_or_default();
            lost += events
                .iter()
                .enumerate()
                .filter(|(i, e)| got.get(*i) != Some(*e))
                .count() as u64;
            lost += got.len().saturating_sub(events.len()) as u64;
        }
        for (id, v) in &m.vectors {
            acked += 1;
            if snap.vectors.get(id) != v.as_ref() {
                lost += 1;
            }
        }
    }
    (acked, lost)
}

fn load_test(conns: usize, cmds: usize, seed: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), "");
    let server = TestBinary::start(&cfg, &[("RUST_LOG", "warn,nvecd=info")]);
    let (addr, pid) = (server.addr, server.child.id());
    let mut admin = server.client();
    assert_eq!(admin.cmd("VECSET seed 1 1 1 1"), "OK");
    let base_rss = rss_kib(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(base_rss));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(25));
            }
        })
    };
    let saver = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut c = Client::connect(addr);
            let (mut ok, mut failed) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let r = c.cmd("DUMP SAVE during_load.nvec");
                if r.starts_with("OK Snapshot saved: ") {
                    ok += 1;
                } else {
                    failed.push(r);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (ok, failed)
        })
    };

    let start = Instant::now();
    let workers: Vec<_> = (0..conns)
        .map(|i| std::thread::spawn(move || worker(addr, i, cmds, seed)))
        .collect();
    let mut models = Vec::new();
    let mut errors = 0;
    let mut samples = Vec::new();
    for w in workers {
        let (m, e, s) = w.join().expect("worker");
        models.push(m);
        errors += e;
        samples.extend(s);
    }
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (saves, save_errors) = saver.join().expect("saver");
    sampler.join().expect("sampler");
    let peak = peak.load(Ordering::Relaxed).max(rss_kib(pid));

    let reply = admin.cmd("DUMP SAVE final.nvec");
    let path = reply
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("OK Snapshot saved: "))
        .unwrap_or_else(|| panic!("final save: {reply}"))
        .to_string();
    let snap = read_snapshot(std::path::Path::new(&path));
    let (acked, lost) = lost_writes(&models, &snap);
    // The snapshots taken during the run are complete, valid files.
    let during = read_snapshot(&dir.path().join("snapshots/during_load.nvec"));
    let info = admin.cmd("INFO");
    let total = (conns * cmds) as u64;
    println!(
        "load: {conns} connections x {cmds} commands = {total} commands in {secs:.2} s \
         ({:.0} commands/s), errors {errors}, acknowledged writes {acked}, lost writes {lost}, \
         DUMP SAVE during the run {saves} ok / {} failed (last one holds {} contexts), \
         RSS {base_rss} KiB before, peak {peak} KiB; final state {} contexts, {} events, \
         {} co-occurrence pairs, used_memory_bytes {}",
        total as f64 / secs,
        save_errors.len(),
        during.contexts.len(),
        field(&info, "contexts"),
        field(&info, "events"),
        field(&info, "co_occurrence_pairs"),
        field(&info, "used_memory_bytes"),
    );
    assert!(samples.is_empty(), "errors: {samples:?}");
    assert_eq!(errors, 0);
    assert!(save_errors.is_empty(), "{save_errors:?}");
    assert!(saves >= 1, "no DUMP SAVE completed during the run");
    assert_eq!(lost, 0, "lost acknowledged writes");
    assert!(acked > 0);
    assert_eq!(admin.cmd("PING"), "OK PONG");
}

#[test]
fn load_small_pipelined_mixed_commands_lose_no_acknowledged_write() {
    load_test(16, 2_000, 0x10AD);
}

#[test]
#[ignore = "about a minute or more; run with --ignored load_full"]
fn load_full_64_connections_x_20000_commands() {
    load_test(64, 20_000, 0xF011);
}
