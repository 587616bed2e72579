//! In-process profile of the exact vector scan behind `SIM ... using=vectors`
//! and `SIMV`: 200,000 random vectors of 128 values (the large scale), then
//! `queries` SIMV-style queries, one at a time; p50 / p90 / min latency and
//! the scan's rate over the stored floats.
//!
//! `cargo run --release --example profile_sim [queries=400] [vectors=200000]`

use std::time::Instant;

use nvecd::store::{Store, StoreConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let queries: usize = args.next().map_or(400, |s| s.parse().expect("queries"));
    let n: usize = args.next().map_or(200_000, |s| s.parse().expect("vectors"));
    let d = 128;
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut unit = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ((x >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0) as f32
    };
    let mut store = Store::new(StoreConfig::default());
    let mut vals = vec![0f32; d];
    for k in 0..n {
        vals.iter_mut().for_each(|v| *v = unit());
        store.set_vector(&format!("item{k}"), &vals).expect("vecset");
    }
    let mut lat = Vec::with_capacity(queries);
    for _ in 0..queries {
        vals.iter_mut().for_each(|v| *v = unit());
        let t = Instant::now();
        let found = store.similar_to_vector(&vals, 10, None).expect("simv");
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(found.len(), 10.min(n));
    }
    lat.sort_by(f64::total_cmp);
    let at = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
    let bytes = (n * d * 4) as f64;
    println!(
        "{n} x {d}: p50 {:.3} ms  p90 {:.3} ms  min {:.3} ms  ({:.1} GB/s at p50)",
        at(0.5),
        at(0.9),
        lat[0],
        bytes / at(0.5) / 1e6
    );
}
