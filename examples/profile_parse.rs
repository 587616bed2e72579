//! In-process profile of request parsing: `parse_line` over lines shaped
//! like the benchmark's (VECSET of 128 values with 4 decimals, EVENT, SIMV),
//! five passes each, the fastest reported. The connection's thread spends
//! most of a VECSET ingest here. Also VECSET with values as clients often
//! print them, on a tenth of the lines: an `f32`'s shortest form (up to 9
//! digits, `VECSET-f32`) and an `f64`'s (up to 17, `VECSET-f64`).
//!
//! `cargo run --release --example profile_parse [lines=200000]`

use std::fmt::Write;
use std::hint::black_box;
use std::time::Instant;

use nvecd::protocol::parse_line;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(200_000, |s| s.parse().expect("lines"));
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let unit = |r: u64| (r >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0;
    let mut vecset = Vec::with_capacity(n);
    let mut simv = Vec::with_capacity(n / 10);
    let mut event = Vec::with_capacity(n);
    let mut long32 = Vec::with_capacity(n / 10);
    let mut long64 = Vec::with_capacity(n / 10);
    for k in 0..n {
        let mut line = format!("VECSET item{k}");
        for _ in 0..128 {
            let _ = write!(line, " {:.4}", unit(next()));
        }
        if k % 10 == 0 {
            simv.push(line.replacen(&format!("VECSET item{k}"), "SIMV 10", 1));
            let (mut l32, mut l64) = (format!("VECSET item{k}"), format!("VECSET item{k}"));
            for _ in 0..128 {
                let v = unit(next()) + (next() >> 40) as f64 / (1u64 << 48) as f64;
                let _ = write!(l32, " {}", v as f32);
                let _ = write!(l64, " {v}");
            }
            long32.push(l32);
            long64.push(l64);
        }
        vecset.push(line);
        event.push(format!(
            "EVENT ctx{} ADD item{} {}",
            k % 1000,
            next() % 200_000,
            next() % 100 + 1
        ));
    }
    for (what, lines) in [
        ("VECSET", &vecset),
        ("SIMV", &simv),
        ("EVENT", &event),
        ("VECSET-f32", &long32),
        ("VECSET-f64", &long64),
    ] {
        let bytes: usize = lines.iter().map(|l| l.len() + 2).sum();
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let t = Instant::now();
            for line in lines {
                let parsed = parse_line(line);
                assert!(matches!(parsed, Some(Ok(_))), "{line:?}");
                black_box(parsed);
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{what:<10} {:>7} lines  {:8.1} ns/line  {:7.0}k lines/s  {:6.0} MB/s",
            lines.len(),
            best / lines.len() as f64 * 1e9,
            lines.len() as f64 / best / 1e3,
            bytes as f64 / best / 1e6
        );
    }
}
