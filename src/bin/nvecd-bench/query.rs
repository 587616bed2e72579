//! Query workload: SIM (vectors, events, fusion) and SIMV, one request at a time
//! per connection, on one connection and on N concurrent ones.

use crate::conn::{Conn, Errors, Results, Target};
use crate::data::{push_floats, Scale, STREAM_QUERY};
use crate::rng::{Rng, Zipf};
use crate::stats::{r1, rate, Latencies};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

pub const TOP_K: usize = 10;
pub const MODES: [&str; 4] = ["vectors", "events", "fusion", "simv"];

pub struct Run {
    pub mode: &'static str,
    pub connections: usize,
    pub latencies: Latencies,
    pub not_found: u64,
    pub errors: u64,
    pub results: u64,
    pub elapsed: Duration,
}

impl Run {
    fn answered(&self) -> u64 {
        self.latencies.samples.len() as u64
    }

    fn qps(&self) -> f64 {
        rate(self.answered(), self.elapsed)
    }

    fn to_json(&self) -> Value {
        let mut v = self.latencies.summary().to_json();
        v["mode"] = json!(self.mode);
        v["connections"] = json!(self.connections);
        v["not_found"] = json!(self.not_found);
        v["errors"] = json!(self.errors);
        v["mean_results"] = json!(if self.answered() > 0 {
            r1(self.results as f64 / self.answered() as f64)
        } else {
            0.0
        });
        v["seconds"] = json!(crate::stats::r3(self.elapsed.as_secs_f64()));
        v["queries_per_sec"] = json!(r1(self.qps()));
        v
    }
}

/// The request lines of one connection for `mode`.
fn queries(mode: &str, scale: &Scale, n: usize, rng: &mut Rng) -> Vec<String> {
    let vec_zipf = Zipf::new(scale.vectors);
    let item_zipf = Zipf::new(scale.items);
    (0..n)
        .map(|_| match mode {
            "vectors" => format!("SIM item{} {TOP_K} using=vectors\n", vec_zipf.sample(rng)),
            "events" | "fusion" => format!("SIM item{} {TOP_K} using={mode}\n", item_zipf.sample(rng)),
            _ => {
                let mut l = format!("SIMV {TOP_K}");
                push_floats(&mut l, scale.dim, rng);
                l.push('\n');
                l
            }
        })
        .collect()
}

struct ConnOut {
    latencies: Latencies,
    not_found: u64,
    errors: u64,
    results: u64,
    start: Instant,
    end: Instant,
}

fn one_conn(t: &Target, lines: &[String], errors: &Errors, what: &str, barrier: &Barrier) -> ConnOut {
    let now = Instant::now();
    let mut out = ConnOut {
        latencies: Latencies::default(),
        not_found: 0,
        errors: 0,
        results: 0,
        start: now,
        end: now,
    };
    let conn = Conn::open(t);
    barrier.wait();
    let mut conn = match conn {
        Ok(c) => c,
        Err(e) => {
            errors.record(what, e);
            out.errors += 1;
            return out;
        }
    };
    out.start = Instant::now();
    for line in lines {
        let t0 = Instant::now();
        let r = conn.send(line).and_then(|_| conn.read_results());
        let dt = t0.elapsed();
        match r {
            Ok(Results::Ok(items)) => {
                out.latencies.push(dt);
                out.results += items.len() as u64;
                if items.len() > TOP_K {
                    errors.record(what, format!("{} results for top_k {TOP_K}", items.len()));
                    out.errors += 1;
                }
            }
            Ok(Results::Error(msg)) if msg.starts_with("Item not found") => {
                out.latencies.push(dt);
                out.not_found += 1;
            }
            Ok(Results::Error(msg)) => {
                out.latencies.push(dt);
                out.errors += 1;
                errors.record(what, format!("(error) {msg} <- {}", line.trim_end()));
            }
            Err(e) => {
                out.errors += 1;
                errors.record(what, e);
                break;
            }
        }
    }
    out.end = Instant::now();
    out
}

fn run_mode(
    t: &Target,
    scale: &Scale,
    seed: u64,
    mode: &'static str,
    conns: usize,
    q: usize,
    errors: &Errors,
) -> Run {
    let per = q.div_ceil(conns).max(1);
    let sets: Vec<Vec<String>> = (0..conns)
        .map(|i| {
            let label =
                (MODES.iter().position(|m| *m == mode).unwrap_or(0) as u64) << 32 | (conns as u64) << 16;
            let mut rng = Rng::derive(seed ^ STREAM_QUERY, label | i as u64);
            queries(mode, scale, per, &mut rng)
        })
        .collect();
    let what = format!("query {mode} x{conns}");
    let barrier = Barrier::new(conns);
    let outs: Vec<ConnOut> = thread::scope(|s| {
        let hs: Vec<_> = sets
            .iter()
            .map(|lines| {
                let (barrier, what) = (&barrier, &what);
                s.spawn(move || one_conn(t, lines, errors, what, barrier))
            })
            .collect();
        hs.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut run = Run {
        mode,
        connections: conns,
        latencies: Latencies::default(),
        not_found: 0,
        errors: 0,
        results: 0,
        elapsed: Duration::ZERO,
    };
    let start = outs.iter().map(|o| o.start).min();
    let end = outs.iter().map(|o| o.end).max();
    if let (Some(s), Some(e)) = (start, end) {
        run.elapsed = e.duration_since(s);
    }
    for o in outs {
        run.not_found += o.not_found;
        run.errors += o.errors;
        run.results += o.results;
        run.latencies.extend(o.latencies);
    }
    run
}

pub struct QueryReport {
    pub runs: Vec<Run>,
}

pub fn run(
    t: &Target,
    scale: &Scale,
    seed: u64,
    connections: usize,
    q: usize,
    errors: &Errors,
) -> QueryReport {
    let mut runs = Vec::new();
    for mode in MODES {
        runs.push(run_mode(t, scale, seed, mode, 1, q, errors));
        if connections > 1 {
            runs.push(run_mode(t, scale, seed, mode, connections, q, errors));
        }
    }
    QueryReport { runs }
}

impl QueryReport {
    pub fn to_json(&self) -> Value {
        json!({ "top_k": TOP_K, "runs": self.runs.iter().map(Run::to_json).collect::<Vec<_>>() })
    }

    pub fn render(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "== query (top_k {TOP_K}, one request at a time per connection; latency in ms) =="
        );
        let _ = writeln!(
            o,
            "{:<8} {:>5} {:>7} {:>9} {:>6} {:>8} {:>8} {:>8} {:>8} {:>10}",
            "mode", "conns", "queries", "notfound", "errors", "p50", "p90", "p99", "max", "queries/s"
        );
        for r in &self.runs {
            let s = r.latencies.summary();
            let _ = writeln!(
                o,
                "{:<8} {:>5} {:>7} {:>9} {:>6} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>10.0}",
                r.mode,
                r.connections,
                s.count,
                r.not_found,
                r.errors,
                s.p50_ms,
                s.p90_ms,
                s.p99_ms,
                s.max_ms,
                r.qps()
            );
        }
        let _ = writeln!(o);
    }
}
