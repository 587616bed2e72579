//! In-process profile of the exact vector scan behind `SIM ... using=vectors`
//! and `SIMV`: 200,000 random vectors of 128 values (the large scale), then
//! `queries` SIMV-style queries, one at a time; p50 / p90 / min latency and
//! the stored floats' size over the p50 (the scan's first pass reads the
//! 8-bit codes, a quarter of that, and scores few vectors in full). Then,
//! for the floor the host's memory sets, a plain read of as many bytes as
//! the floats from one contiguous buffer, split over two threads as the scan
//! is, without and with a software prefetch ahead; and with the prefetch, a
//! read of as many bytes as the codes.
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
    let bytes = (n * d * 4) as f64;
    let (p50, p90, min) = summary(lat);
    println!(
        "{n} x {d}: p50 {p50:.3} ms  p90 {p90:.3} ms  min {min:.3} ms  (floats / p50: {:.1} GB/s)",
        bytes / p50 / 1e6
    );
    drop(store);
    let words: Vec<u64> = (0..n * d / 2).map(|i| i as u64).collect();
    for (prefetch, words) in [
        (false, &words[..]),
        (true, &words[..]),
        (true, &words[..n * d / 8]),
    ] {
        let bytes = (words.len() * 8) as f64;
        let mut lat = Vec::with_capacity(queries);
        for _ in 0..queries {
            let t = Instant::now();
            let (left, right) = words.split_at(words.len() / 2);
            let sum = std::thread::scope(|s| {
                let other = s.spawn(|| read(right, prefetch));
                read(left, prefetch).wrapping_add(other.join().expect("reader"))
            });
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(sum);
        }
        let (p50, _, min) = summary(lat);
        println!(
            "plain read of {:.0} MB, 2 threads, prefetch {prefetch}: p50 {p50:.3} ms  min {min:.3} ms  ({:.1} GB/s at p50)",
            bytes / 1e6,
            bytes / p50 / 1e6
        );
    }
}

/// p50, p90 and min of latencies in ms (at least one).
fn summary(mut lat: Vec<f64>) -> (f64, f64, f64) {
    lat.sort_by(f64::total_cmp);
    let at = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.9), lat[0])
}

/// Sums `words` 8 at a time (a loop the compiler vectorises), optionally
/// prefetching 4 KiB ahead as the scan does.
fn read(words: &[u64], prefetch: bool) -> u64 {
    let mut acc = [0u64; 8];
    for (i, w) in words.chunks_exact(8).enumerate() {
        #[cfg(target_arch = "x86_64")]
        if prefetch {
            let ahead = words.as_ptr().wrapping_add(i * 8 + 512).cast::<i8>();
            // SAFETY: a prefetch is only a hint and cannot fault.
            unsafe { std::arch::x86_64::_mm_prefetch(ahead, std::arch::x86_64::_MM_HINT_T0) };
        }
        for (a, x) in acc.iter_mut().zip(w) {
            *a = a.wrapping_add(*x);
        }
    }
    acc.iter().fold(0, |s, &a| s.wrapping_add(a))
}
