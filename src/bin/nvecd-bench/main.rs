//! `nvecd-bench`: a load generator for any server speaking the Nvecd protocol.
//!
//! Workloads (always run in this order):
//! - `ingest`: C x E `EVENT ctx<c> ADD item<k> <score>` (k Zipf-like over I items,
//!   score 1..=100, event j to ctx j % C), then `VECSET item<k>` for k in 0..V,
//!   pipelined on one connection (1000 lines per write, replies read by a second
//!   thread). Then the N-connection phase: C/2 x E EVENTs to new contexts
//!   `mctx<c>` (context c on connection c % N), and the same V vectors again
//!   (identical values, so they replace and the data set does not grow).
//! - `query`: `SIM item<k> 10 using=vectors|events|fusion` and `SIMV 10 <D floats>`,
//!   one request at a time per connection, on 1 and on N connections.
//!   `(error) Item not found` is a valid answer, counted as `notfound`.
//! - `snapshot`: wall time of `DUMP SAVE|VERIFY|LOAD bench.nvec`, the LOAD twice
//!   (each replacing the server's state: first what the ingest built, then
//!   the loaded state), then the VERIFY again (the file now in the page cache).
//! - `stall`: EVENT latency on 2 connections without a save, then while
//!   `DUMP SAVE stall.nvec` runs on a third one.
//!
//! The data depend only on the seed and the scale (the `mctx` events also on N).
//! Talks TCP only; std threads and blocking sockets.
//! Exit status: 0 when every reply was as expected, 1 on any unexpected
//! `(error)` reply or protocol desync (the first few are printed), 2 on bad
//! arguments.

mod conn;
mod data;
mod ingest;
mod query;
mod rng;
mod snapshot;
mod stall;
mod stats;

use clap::Parser;
use conn::{Errors, Target};
use data::Scale;
use serde_json::{json, Value};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const WORKLOADS: [&str; 4] = ["ingest", "query", "snapshot", "stall"];

#[derive(Parser, Debug)]
#[command(
    name = "nvecd-bench",
    version,
    about = "Benchmark a running nvecd server over TCP"
)]
struct Args {
    /// Server address (host:port).
    #[arg(long, default_value = "127.0.0.1:11017")]
    addr: String,
    /// Data set size: tiny, small or large. --contexts etc. override single values.
    #[arg(long, default_value = "small")]
    scale: String,
    /// Contexts (C).
    #[arg(long)]
    contexts: Option<usize>,
    /// Events per context (E).
    #[arg(long)]
    events: Option<usize>,
    /// Distinct items events are drawn from (I).
    #[arg(long)]
    items: Option<usize>,
    /// Vectors (V), for item0 .. item<V-1>.
    #[arg(long)]
    vectors: Option<usize>,
    /// Vector dimension (D).
    #[arg(long)]
    dim: Option<usize>,
    /// Connections for the concurrent phases.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Comma-separated workloads (ingest,query,snapshot,stall); they always run in that order.
    #[arg(long, default_value = "ingest,query,snapshot,stall")]
    workloads: String,
    /// Write the JSON summary to this file ("-" = stdout; the tables then go to stderr).
    #[arg(long)]
    json: Option<String>,
    /// Queries per mode and phase.
    #[arg(long, default_value_t = 2000)]
    queries: usize,
    /// Send AUTH <password> first on every connection.
    #[arg(long)]
    password: Option<String>,
    /// Seed of the deterministic data.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Socket read/write timeout in seconds (a reply slower than this is an error).
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// Length of the no-save EVENT window of the stall workload, in seconds.
    #[arg(long, default_value_t = 2.0)]
    stall_secs: f64,
}

fn resolve_scale(a: &Args) -> Result<Scale, String> {
    let mut s =
        Scale::named(&a.scale).ok_or_else(|| format!("unknown scale {:?} (tiny, small, large)", a.scale))?;
    s.contexts = a.contexts.unwrap_or(s.contexts);
    s.events = a.events.unwrap_or(s.events);
    s.items = a.items.unwrap_or(s.items);
    s.vectors = a.vectors.unwrap_or(s.vectors);
    s.dim = a.dim.unwrap_or(s.dim);
    if s.contexts == 0 || s.items == 0 || s.dim == 0 {
        return Err("--contexts, --items and --dim must be > 0".into());
    }
    Ok(s)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let scale = match resolve_scale(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("nvecd-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let mut selected = Vec::new();
    for w in args.workloads.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        if !WORKLOADS.contains(&w) {
            eprintln!("nvecd-bench: unknown workload {w:?} (ingest, query, snapshot, stall)");
            return ExitCode::from(2);
        }
        selected.push(w);
    }
    let connections = args.connections.max(1);
    let target = Target {
        addr: args.addr.clone(),
        password: args.password.clone(),
        timeout: Duration::from_secs(args.timeout_secs.max(1)),
    };
    let errors = Errors::default();
    let json_to_stdout = args.json.as_deref() == Some("-");
    let emit = |text: &str| {
        if json_to_stdout {
            eprint!("{text}");
        } else {
            print!("{text}");
        }
    };

    let started = chrono::Utc::now();
    let t0 = Instant::now();
    let mut out = String::new();
    out.push_str(&format!(
        "nvecd-bench: addr {} scale {} (C={} E={} I={} V={} D={}) connections {} queries {} seed {}\n\n",
        args.addr,
        args.scale,
        scale.contexts,
        scale.events,
        scale.items,
        scale.vectors,
        scale.dim,
        connections,
        args.queries,
        args.seed
    ));
    emit(&std::mem::take(&mut out));

    let mut results = serde_json::Map::new();
    let has = |w: &str| selected.contains(&w);
    if has("ingest") {
        let r = ingest::run(&target, &scale, args.seed, connections, &errors);
        r.render(&mut out);
        results.insert("ingest".into(), r.to_json());
        emit(&std::mem::take(&mut out));
    }
    if has("query") {
        let r = query::run(&target, &scale, args.seed, connections, args.queries, &errors);
        r.render(&mut out);
        results.insert("query".into(), r.to_json());
        emit(&std::mem::take(&mut out));
    }
    if has("snapshot") {
        let r = snapshot::run(&target, &errors);
        r.render(&mut out);
        results.insert("snapshot".into(), r.to_json());
        emit(&std::mem::take(&mut out));
    }
    if has("stall") {
        let r = stall::run(&target, &scale, args.seed, args.stall_secs, &errors);
        r.render(&mut out);
        results.insert("stall".into(), r.to_json());
        emit(&std::mem::take(&mut out));
    }

    let n_errors = errors.count();
    let first = errors.first();
    let summary: Value = json!({
        "tool": "nvecd-bench",
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "elapsed_seconds": stats::r3(t0.elapsed().as_secs_f64()),
        "addr": args.addr,
        "scale": {
            "name": args.scale,
            "contexts": scale.contexts,
            "events_per_context": scale.events,
            "items": scale.items,
            "vectors": scale.vectors,
            "dim": scale.dim,
        },
        "connections": connections,
        "queries": args.queries,
        "seed": args.seed,
        "workloads": selected,
        "results": Value::Object(results),
        "unexpected_errors": n_errors,
        "first_errors": first,
        "ok": n_errors == 0,
    });
    let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
    match args.json.as_deref() {
        Some("-") => println!("{text}"),
        Some(path) => {
            if let Err(e) = std::fs::write(path, format!("{text}\n")) {
                eprintln!("nvecd-bench: cannot write {path}: {e}");
                return ExitCode::from(2);
            }
        }
        None => {}
    }
    if n_errors > 0 {
        eprintln!("nvecd-bench: {n_errors} unexpected error(s); the first:");
        for e in &first {
            eprintln!("  {e}");
        }
        return ExitCode::from(1);
    }
    emit(&format!(
        "nvecd-bench: done in {:.1} s, no unexpected errors\n",
        t0.elapsed().as_secs_f64()
    ));
    ExitCode::SUCCESS
}
