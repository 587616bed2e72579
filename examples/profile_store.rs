//! In-process profile of the store's hot paths (no TCP): ingest, vector and
//! event similarity, freeze and snapshot write/verify/load. For finding where
//! the time goes; the user-facing figures come from `nvecd-bench`.
//!
//! `cargo run --release --example profile_store -- [small|large] [ingest]`
//! (`ingest`: stop after the event ingest)

use std::time::Instant;

/// CPU time of this thread, in seconds: robust to other load on the machine.
fn cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

use nvecd::snapshot::{load_file, verify_file, write_snapshot, LoadOptions};
use nvecd::store::{EventKind, EventRef, SimMode, Store, StoreBuilder, StoreConfig};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn main() {
    let scale = std::env::args().nth(1).unwrap_or_else(|| "small".into());
    let (c, e, i, v, d) = match scale.as_str() {
        "large" => (100_000, 50, 200_000, 200_000, 128),
        _ => (10_000, 20, 50_000, 10_000, 128),
    };
    let mut cum = Vec::with_capacity(i);
    let mut acc = 0.0;
    for r in 0..i {
        acc += 1.0 / (r as f64 + 1.0);
        cum.push(acc);
    }
    let mut rng = Rng(42);
    let zipf = |rng: &mut Rng| {
        let x = rng.unit() * acc;
        cum.partition_point(|&c| c < x).min(i - 1)
    };
    let ctxs: Vec<String> = (0..c).map(|k| format!("ctx{k}")).collect();
    let items: Vec<String> = (0..i).map(|k| format!("item{k}")).collect();
    let mut store = Store::new(StoreConfig::default());
    let t = Instant::now();
    let c0 = cpu();
    let n = c * e;
    // `PROFILE_BATCH=<n>`: events in calls of `add_events` of n each (as a
    // pipelining client's reads arrive), `PROFILE_SPLIT=0` keeps their
    // co-occurrence writes on one thread.
    let batch: usize = std::env::var("PROFILE_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    if let Ok(v) = std::env::var("PROFILE_SPLIT") {
        store.set_split_writes(v != "0");
    }
    let mut group = Vec::with_capacity(batch);
    for j in 0..n {
        let k = zipf(&mut rng);
        group.push(EventRef {
            ctx: &ctxs[j % c],
            kind: EventKind::Add,
            id: &items[k],
            score: 1 + (rng.next() % 100) as u8,
        });
        if group.len() >= batch || j + 1 == n {
            store.add_events(group.drain(..), j as u64);
        }
    }
    let el = t.elapsed();
    let s = store.stats();
    println!(
        "ingest: {n} events in {el:?} = {:.0}/s (cpu {:.0}/s); stored {} pairs {} mem {} MB",
        n as f64 / el.as_secs_f64(),
        n as f64 / (cpu() - c0),
        s.events,
        s.co_occurrence_pairs,
        s.used_memory_bytes >> 20
    );
    if std::env::args().nth(2).as_deref() == Some("ingest") {
        return;
    }
    let t = Instant::now();
    let mut vals = vec![0f32; d];
    for item in &items[..v] {
        for x in vals.iter_mut() {
            *x = (rng.unit() * 2.0 - 1.0) as f32;
        }
        store.set_vector(item, &vals).expect("vecset");
    }
    let el = t.elapsed();
    println!("vecset: {v} in {el:?} = {:.0}/s", v as f64 / el.as_secs_f64());
    for mode in [SimMode::Vectors, SimMode::Events, SimMode::Fusion] {
        let mut lat = Vec::new();
        for _ in 0..200 {
            let k = zipf(&mut rng).min(v - 1);
            let t = Instant::now();
            let _ = store.similar(&items[k], 10, mode, None);
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
        lat.sort_by(f64::total_cmp);
        println!(
            "sim {mode:?}: p50 {:.3} ms p99 {:.3} ms max {:.3} ms",
            lat[100], lat[198], lat[199]
        );
    }
    let t = Instant::now();
    let image = store.freeze();
    println!("freeze: {:?}", t.elapsed());
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("p.nvec");
    let t = Instant::now();
    let c0 = cpu();
    let mut f = std::fs::File::create(&path).expect("create");
    let sum = write_snapshot(&mut f, &image, 0, &path).expect("write");
    f.sync_all().expect("sync");
    let el = t.elapsed();
    let mb = sum.header.file_size as f64 / 1e6;
    println!(
        "write+fsync: {mb:.1} MB in {el:?} = {:.0} MB/s (cpu {:.0} MB/s)",
        mb / el.as_secs_f64(),
        mb / (cpu() - c0)
    );
    let opts = LoadOptions {
        default_dimension: 0,
        batch_records: 4096,
    };
    let t = Instant::now();
    let c0 = cpu();
    verify_file(&mut std::fs::File::open(&path).expect("open"), &path, opts).expect("verify");
    let el = t.elapsed();
    println!(
        "verify: {:.0} MB/s (cpu {:.0} MB/s)",
        mb / el.as_secs_f64(),
        mb / (cpu() - c0)
    );
    // The two halves of a server LOAD (which runs them on two threads):
    // the reader decoding into batches, then the builder applying them.
    let t = Instant::now();
    let c0 = cpu();
    let mut batches = Vec::new();
    load_file(
        &mut std::fs::File::open(&path).expect("open"),
        &path,
        opts,
        |batch| {
            batches.push(batch);
            Ok(())
        },
    )
    .expect("load");
    let el = t.elapsed();
    println!(
        "load, read half: {:.0} MB/s (cpu {:.0} MB/s) ({el:?})",
        mb / el.as_secs_f64(),
        mb / (cpu() - c0)
    );
    let t = Instant::now();
    let c0 = cpu();
    let mut b = StoreBuilder::new(StoreConfig::default());
    for batch in batches {
        b.apply(batch).expect("apply");
    }
    let _store = b.finish();
    let el = t.elapsed();
    println!(
        "load, build half: {:.0} MB/s (cpu {:.0} MB/s) ({el:?})",
        mb / el.as_secs_f64(),
        mb / (cpu() - c0)
    );
}
