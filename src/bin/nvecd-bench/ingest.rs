//! Ingest workload: pipelined EVENT and VECSET, on one and on N connections.

use crate::conn::{Conn, Errors, Target};
use crate::data::{self, Lines, Scale, STREAM_EVENTS, STREAM_MULTI_EVENTS};
use crate::rng::{Rng, Zipf};
use crate::stats::{r1, r3, rate};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

/// The outcome of one pipelined stream of line-reply requests.
#[derive(Clone, Copy)]
pub struct PipeResult {
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    pub bytes: u64,
    pub start: Instant,
    pub end: Instant,
}

/// Aggregate over one or more connections.
pub struct Phase {
    pub connections: usize,
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Phase {
    fn from(results: &[PipeResult]) -> Phase {
        let start = results.iter().map(|r| r.start).min();
        let end = results.iter().map(|r| r.end).max();
        Phase {
            connections: results.len(),
            sent: results.iter().map(|r| r.sent).sum(),
            ok: results.iter().map(|r| r.ok).sum(),
            errors: results.iter().map(|r| r.errors).sum(),
            bytes: results.iter().map(|r| r.bytes).sum(),
            elapsed: match (start, end) {
                (Some(s), Some(e)) => e.duration_since(s),
                _ => Duration::ZERO,
            },
        }
    }

    pub fn ops_per_sec(&self) -> f64 {
        rate(self.ok + self.errors, self.elapsed)
    }

    fn to_json(&self) -> Value {
        json!({
            "connections": self.connections,
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.errors,
            "request_bytes": self.bytes,
            "seconds": r3(self.elapsed.as_secs_f64()),
            "ops_per_sec": r1(self.ops_per_sec()),
            "request_mb_per_sec": r1(rate(self.bytes, self.elapsed) / 1e6),
        })
    }
}

/// Sends `lines` pipelined on a new connection: the chunks are written by this
/// thread while a second thread reads the replies, so neither side blocks. Every
/// reply must be a single line; anything but `OK` is an unexpected error.
pub fn pipeline(
    t: &Target,
    lines: &Lines,
    errors: &Errors,
    what: &str,
    barrier: Option<&Barrier>,
) -> PipeResult {
    let now = Instant::now();
    let mut res = PipeResult {
        sent: 0,
        ok: 0,
        errors: 0,
        bytes: 0,
        start: now,
        end: now,
    };
    let conn = match Conn::open(t) {
        Ok(c) => c,
        Err(e) => {
            errors.record(what, e);
            if let Some(b) = barrier {
                b.wait();
            }
            return res;
        }
    };
    let mut writer = match conn.writer_clone() {
        Ok(w) => w,
        Err(e) => {
            errors.record(what, e);
            if let Some(b) = barrier {
                b.wait();
            }
            return res;
        }
    };
    if let Some(b) = barrier {
        b.wait();
    }
    let abort = AtomicBool::new(false);
    let start = Instant::now();
    let expected = lines.count;
    let (ok, errs, end) = thread::scope(|s| {
        let abort = &abort;
        let reader = s.spawn(move || {
            let mut conn = conn;
            let (mut ok, mut errs) = (0u64, 0u64);
            for _ in 0..expected {
                match conn.read_line() {
                    Ok(l) if l == "OK" => ok += 1,
                    Ok(l) if l.starts_with("(error)") => {
                        errs += 1;
                        errors.record(what, l);
                    }
                    Ok(l) => {
                        errors.record(what, format!("protocol desync: expected OK, got {l:?}"));
                        abort.store(true, Ordering::SeqCst);
                        conn.shutdown();
                        break;
                    }
                    Err(e) => {
                        if !abort.swap(true, Ordering::SeqCst) {
                            errors.record(what, e);
                        }
                        conn.shutdown();
                        break;
                    }
                }
            }
            (ok, errs, Instant::now())
        });
        for chunk in &lines.chunks {
            if abort.load(Ordering::SeqCst) {
                break;
            }
            if let Err(e) = writer.write_all(chunk) {
                if !abort.swap(true, Ordering::SeqCst) {
                    errors.record(what, format!("write: {e}"));
                }
                let _ = writer.shutdown(std::net::Shutdown::Both);
                break;
            }
            res.sent += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
            res.bytes += chunk.len() as u64;
        }
        reader.join().unwrap_or((0, 0, Instant::now()))
    });
    res.ok = ok;
    res.errors = errs;
    res.start = start;
    res.end = end;
    res
}

/// Runs one `pipeline` per element of `sets`, concurrently, started together.
fn pipelines(t: &Target, sets: &[Lines], errors: &Errors, what: &str) -> Phase {
    let barrier = Barrier::new(sets.len());
    let results: Vec<PipeResult> = thread::scope(|s| {
        let handles: Vec<_> = sets
            .iter()
            .map(|lines| {
                let barrier = &barrier;
                s.spawn(move || pipeline(t, lines, errors, what, Some(barrier)))
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    Phase::from(&results)
}

pub struct IngestReport {
    pub single_events: Phase,
    pub single_vectors: Phase,
    pub multi: Option<(usize, Phase, Phase)>,
    pub info: Option<Vec<(String, String)>>,
}

/// Contexts used by the N-connection phase: `mctx0 .. mctx<C/2 - 1>`.
pub fn multi_contexts(scale: &Scale) -> usize {
    (scale.contexts / 2).max(1)
}

pub fn run(t: &Target, scale: &Scale, seed: u64, connections: usize, errors: &Errors) -> IngestReport {
    let zipf = Zipf::new(scale.items);

    // Phase 1: one connection.
    let all_ctx: Vec<usize> = (0..scale.contexts).collect();
    let mut rng = Rng::derive(seed, STREAM_EVENTS);
    let ev = data::events("ctx", &all_ctx, scale.events, &zipf, &mut rng);
    let single_events = Phase::from(&[pipeline(t, &ev, errors, "ingest EVENT", None)]);
    drop(ev);
    let vecs = data::vectors(seed, 0..scale.vectors, scale.dim);
    let single_vectors = Phase::from(&[pipeline(t, &vecs, errors, "ingest VECSET", None)]);
    drop(vecs);

    // Phase 2: N connections. Events go to new contexts mctx<c> (half as many
    // contexts as phase 1, split by c % N so each context is on one connection);
    // vectors are the same V vectors again (identical values, so the data set
    // does not grow: these VECSETs replace), split by k % N.
    let multi = if connections > 0 {
        let mc = multi_contexts(scale);
        let ev_sets: Vec<Lines> = (0..connections)
            .map(|i| {
                let ctxs: Vec<usize> = (i..mc).step_by(connections).collect();
                let mut rng = Rng::derive(seed ^ STREAM_MULTI_EVENTS, i as u64);
                data::events("mctx", &ctxs, scale.events, &zipf, &mut rng)
            })
            .collect();
        let me = pipelines(t, &ev_sets, errors, "ingest EVENT (multi)");
        drop(ev_sets);
        let vec_sets: Vec<Lines> = (0..connections)
            .map(|i| data::vectors(seed, (i..scale.vectors).step_by(connections), scale.dim))
            .collect();
        let mv = pipelines(t, &vec_sets, errors, "ingest VECSET (multi)");
        Some((mc, me, mv))
    } else {
        None
    };

    let info = Conn::open(t)
        .and_then(|mut c| c.block("INFO"))
        .ok()
        .map(|b| b.fields);
    IngestReport {
        single_events,
        single_vectors,
        multi,
        info,
    }
}

const INFO_KEYS: [&str; 5] = [
    "contexts",
    "events",
    "vectors",
    "co_occurrence_pairs",
    "used_memory_bytes",
];

impl IngestReport {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "single": {
                "events": self.single_events.to_json(),
                "vectors": self.single_vectors.to_json(),
            },
        });
        if let Some((mc, me, mv)) = &self.multi {
            v["multi"] = json!({
                "connections": me.connections,
                "note": "EVENTs to mctx<c> contexts (C/2 contexts x E events, split by context); \
                         VECSETs re-send the same V vectors (replacements), split by item",
                "contexts": mc,
                "events": me.to_json(),
                "vectors": mv.to_json(),
            });
        }
        if let Some(info) = &self.info {
            let mut m = serde_json::Map::new();
            for (k, val) in info {
                if INFO_KEYS.contains(&k.as_str()) {
                    let jv = val
                        .parse::<u64>()
                        .map(Value::from)
                        .unwrap_or_else(|_| Value::from(val.clone()));
                    m.insert(k.clone(), jv);
                }
            }
            v["server_info_after"] = Value::Object(m);
        }
        v
    }

    pub fn render(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "== ingest (pipelined, {} lines per write) ==",
            data::CHUNK_LINES
        );
        let _ = writeln!(
            o,
            "{:<8} {:<6} {:>5} {:>10} {:>8} {:>9} {:>12} {:>8}",
            "command", "phase", "conns", "requests", "errors", "seconds", "ops/s", "MB/s"
        );
        let mut row = |cmd: &str, phase: &str, p: &Phase| {
            let _ = writeln!(
                o,
                "{:<8} {:<6} {:>5} {:>10} {:>8} {:>9.3} {:>12.0} {:>8.1}",
                cmd,
                phase,
                p.connections,
                p.ok + p.errors,
                p.errors,
                p.elapsed.as_secs_f64(),
                p.ops_per_sec(),
                rate(p.bytes, p.elapsed) / 1e6
            );
        };
        row("EVENT", "single", &self.single_events);
        row("VECSET", "single", &self.single_vectors);
        if let Some((mc, me, mv)) = &self.multi {
            row("EVENT", "multi", me);
            row("VECSET", "multi", mv);
            let _ = writeln!(
                o,
                "  (multi: EVENTs to {mc} new contexts mctx<c>; VECSETs replace the same vectors)"
            );
        }
        if let Some(info) = &self.info {
            let parts: Vec<String> = info
                .iter()
                .filter(|(k, _)| INFO_KEYS.contains(&k.as_str()))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(o, "  server after ingest: {}", parts.join(" "));
        }
        let _ = writeln!(o);
    }
}
