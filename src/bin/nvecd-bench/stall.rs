//! Stall workload: EVENT latency on two connections (one request at a time),
//! without a save and while a DUMP SAVE runs on a third connection.

use crate::conn::{Conn, Errors, Target};
use crate::data::{Scale, STREAM_STALL};
use crate::rng::{Rng, Zipf};
use crate::snapshot::size_of;
use crate::stats::{r1, r3, rate, Latencies};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

pub const EVENT_CONNECTIONS: usize = 2;
pub const FILE: &str = "stall.nvec";
/// Upper bound on requests per connection and phase (keeps the loop bounded).
const MAX_REQUESTS: u64 = 50_000_000;
/// Contexts per connection the stall EVENTs rotate over.
const CONTEXTS: u64 = 1000;
/// Time the EVENT load runs before the save is sent and after its reply.
const MARGIN: Duration = Duration::from_millis(200);

struct Sample {
    sent: Instant,
    latency: Duration,
}

/// What every EVENT loop of one phase shares.
struct Shared<'a> {
    t: &'a Target,
    scale: &'a Scale,
    seed: u64,
    phase: u64,
    stop: AtomicBool,
    barrier: Barrier,
    errors: &'a Errors,
}

fn event_loop(sh: &Shared, idx: usize) -> Vec<Sample> {
    let (t, phase, errors) = (sh.t, sh.phase, sh.errors);
    let zipf = Zipf::new(sh.scale.items);
    let mut rng = Rng::derive(sh.seed ^ STREAM_STALL, phase << 8 | idx as u64);
    let mut out = Vec::new();
    let conn = Conn::open(t);
    sh.barrier.wait();
    let mut conn = match conn {
        Ok(c) => c,
        Err(e) => {
            errors.record("stall", e);
            return out;
        }
    };
    let mut n = 0u64;
    while !sh.stop.load(Ordering::Relaxed) && n < MAX_REQUESTS {
        let line = format!(
            "EVENT stall{phase}_{idx}_{} ADD item{} {}\n",
            n % CONTEXTS,
            zipf.sample(&mut rng),
            rng.range_inclusive(1, 100)
        );
        n += 1;
        let sent = Instant::now();
        let r = conn.send(&line).and_then(|_| conn.read_line());
        let latency = sent.elapsed();
        match r {
            Ok(l) if l == "OK" => out.push(Sample { sent, latency }),
            Ok(l) => {
                errors.record("stall EVENT", l);
                out.push(Sample { sent, latency });
            }
            Err(e) => {
                errors.record("stall EVENT", e);
                break;
            }
        }
    }
    out
}

pub struct Window {
    pub latencies: Latencies,
    pub elapsed: Duration,
}

pub struct StallReport {
    pub baseline: Window,
    pub during: Window,
    pub save_ok: bool,
    pub save_reply: String,
    pub save_size: Option<u64>,
}

/// Runs the EVENT loops while `middle` runs; returns the samples and middle's result.
fn with_load<R>(
    t: &Target,
    phase: u64,
    scale: &Scale,
    seed: u64,
    errors: &Errors,
    middle: impl FnOnce() -> R,
) -> (Vec<Sample>, R) {
    let sh = Shared {
        t,
        scale,
        seed,
        phase,
        stop: AtomicBool::new(false),
        barrier: Barrier::new(EVENT_CONNECTIONS + 1),
        errors,
    };
    thread::scope(|s| {
        let hs: Vec<_> = (0..EVENT_CONNECTIONS)
            .map(|i| {
                let sh = &sh;
                s.spawn(move || event_loop(sh, i))
            })
            .collect();
        sh.barrier.wait();
        let r = middle();
        sh.stop.store(true, Ordering::Relaxed);
        let samples = hs.into_iter().filter_map(|h| h.join().ok()).flatten().collect();
        (samples, r)
    })
}

pub fn run(t: &Target, scale: &Scale, seed: u64, baseline_secs: f64, errors: &Errors) -> StallReport {
    // (a) no save.
    let base_time = Duration::from_secs_f64(baseline_secs.max(0.1));
    let (samples, elapsed) = with_load(t, 0, scale, seed, errors, || {
        let t0 = Instant::now();
        thread::sleep(base_time);
        t0.elapsed()
    });
    let mut baseline = Window {
        latencies: Latencies::default(),
        elapsed,
    };
    for s in samples {
        baseline.latencies.push(s.latency);
    }

    // (b) during a DUMP SAVE on another connection.
    let save_conn = Conn::open(t);
    let (samples, (window, save_ok, save_reply, save_size)) = with_load(t, 1, scale, seed, errors, || {
        thread::sleep(MARGIN);
        let t0 = Instant::now();
        let r = match save_conn {
            Ok(mut c) => c.block(&format!("DUMP SAVE {FILE}")),
            Err(e) => Err(e),
        };
        let t1 = Instant::now();
        thread::sleep(MARGIN);
        match r {
            Ok(b) => {
                if !b.is_ok() {
                    errors.record("stall DUMP SAVE", b.describe());
                }
                let size = size_of(&b.fields);
                ((t0, t1), b.is_ok(), b.head, size)
            }
            Err(e) => {
                errors.record("stall DUMP SAVE", &e);
                ((t0, t1), false, e, None)
            }
        }
    });
    let (w0, w1) = window;
    let mut during = Window {
        latencies: Latencies::default(),
        elapsed: w1.duration_since(w0),
    };
    // Every EVENT that was in flight at some moment of the save.
    for s in samples.iter().filter(|s| s.sent < w1 && s.sent + s.latency > w0) {
        during.latencies.push(s.latency);
    }
    StallReport {
        baseline,
        during,
        save_ok,
        save_reply,
        save_size,
    }
}

impl StallReport {
    pub fn to_json(&self) -> Value {
        let mut b = self.baseline.latencies.summary().to_json();
        b["seconds"] = json!(r3(self.baseline.elapsed.as_secs_f64()));
        b["events_per_sec"] = json!(r1(rate(
            self.baseline.latencies.samples.len() as u64,
            self.baseline.elapsed
        )));
        let mut d = self.during.latencies.summary().to_json();
        d["save_seconds"] = json!(r3(self.during.elapsed.as_secs_f64()));
        d["save_ok"] = json!(self.save_ok);
        d["save_reply"] = json!(self.save_reply);
        d["save_size_bytes"] = json!(self.save_size);
        json!({
            "event_connections": EVENT_CONNECTIONS,
            "file": FILE,
            "baseline": b,
            "during_save": d,
        })
    }

    pub fn render(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "== stall (EVENT latency, {EVENT_CONNECTIONS} connections, one request at a time; ms) =="
        );
        let _ = writeln!(
            o,
            "{:<12} {:>9} {:>8} {:>8} {:>8} {:>9}",
            "window", "seconds", "events", "p50", "p99", "max"
        );
        for (name, w) in [("no save", &self.baseline), ("during SAVE", &self.during)] {
            let s = w.latencies.summary();
            let _ = writeln!(
                o,
                "{:<12} {:>9.3} {:>8} {:>8.3} {:>8.3} {:>9.3}",
                name,
                w.elapsed.as_secs_f64(),
                s.count,
                s.p50_ms,
                s.p99_ms,
                s.max_ms
            );
        }
        let _ = writeln!(
            o,
            "  DUMP SAVE {FILE}: {} ({})",
            if self.save_ok { "ok" } else { "FAILED" },
            self.save_reply
        );
        let _ = writeln!(o);
    }
}
