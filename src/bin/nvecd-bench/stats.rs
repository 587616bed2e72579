//! Latency summaries.

use serde_json::{json, Value};
use std::time::Duration;

/// Latency samples in nanoseconds.
#[derive(Default, Clone)]
pub struct Latencies {
    pub samples: Vec<u64>,
}

pub struct Summary {
    pub count: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latencies {
    pub fn push(&mut self, d: Duration) {
        self.samples.push(d.as_nanos().min(u64::MAX as u128) as u64);
    }

    pub fn extend(&mut self, other: Latencies) {
        self.samples.extend(other.samples);
    }

    pub fn summary(&self) -> Summary {
        let mut s = self.samples.clone();
        s.sort_unstable();
        let ms = |ns: u64| ns as f64 / 1e6;
        let pct = |p: f64| -> f64 {
            if s.is_empty() {
                return 0.0;
            }
            // Nearest rank.
            let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
            ms(s[rank.clamp(1, s.len()) - 1])
        };
        let mean = if s.is_empty() {
            0.0
        } else {
            s.iter().map(|&x| x as f64).sum::<f64>() / s.len() as f64 / 1e6
        };
        Summary {
            count: s.len(),
            p50_ms: pct(50.0),
            p90_ms: pct(90.0),
            p99_ms: pct(99.0),
            max_ms: s.last().map(|&x| ms(x)).unwrap_or(0.0),
            mean_ms: mean,
        }
    }
}

/// Rounds to 3 decimals (for JSON).
pub fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Rounds to 1 decimal (for rates in JSON).
pub fn r1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub fn rate(count: u64, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s > 0.0 {
        count as f64 / s
    } else {
        0.0
    }
}

impl Summary {
    pub fn to_json(&self) -> Value {
        json!({
            "count": self.count,
            "p50_ms": r3(self.p50_ms),
            "p90_ms": r3(self.p90_ms),
            "p99_ms": r3(self.p99_ms),
            "max_ms": r3(self.max_ms),
            "mean_ms": r3(self.mean_ms),
        })
    }
}
