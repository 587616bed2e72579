//! Deterministic benchmark data: EVENT and VECSET request lines, in chunks.

use crate::rng::{Rng, Zipf};
use std::fmt::Write as _;

/// Lines per pipelined write.
pub const CHUNK_LINES: usize = 1000;

/// Stream labels for `Rng::derive`, so each kind of data has its own stream.
pub const STREAM_EVENTS: u64 = 1;
pub const STREAM_MULTI_EVENTS: u64 = 2;
pub const STREAM_VECTORS: u64 = 3;
pub const STREAM_QUERY: u64 = 4;
pub const STREAM_STALL: u64 = 5;

#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub contexts: usize,
    pub events: usize,
    pub items: usize,
    pub vectors: usize,
    pub dim: usize,
}

impl Scale {
    pub fn named(name: &str) -> Option<Scale> {
        let (contexts, events, items, vectors, dim) = match name {
            "tiny" => (200, 10, 1_000, 500, 16),
            "small" => (10_000, 20, 50_000, 10_000, 128),
            "large" => (100_000, 50, 200_000, 200_000, 128),
            _ => return None,
        };
        Some(Scale {
            contexts,
            events,
            items,
            vectors,
            dim,
        })
    }
}

/// A batch of request lines, split into chunks of at most `CHUNK_LINES` lines.
#[derive(Default)]
pub struct Lines {
    pub chunks: Vec<Vec<u8>>,
    pub count: u64,
    pub bytes: u64,
    current: Vec<u8>,
    in_current: usize,
}

impl Lines {
    pub fn push(&mut self, line: &str) {
        self.current.extend_from_slice(line.as_bytes());
        self.current.push(b'\n');
        self.in_current += 1;
        self.count += 1;
        self.bytes += line.len() as u64 + 1;
        if self.in_current == CHUNK_LINES {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.in_current > 0 {
            self.chunks.push(std::mem::take(&mut self.current));
            self.in_current = 0;
        }
    }

    pub fn finish(mut self) -> Lines {
        self.flush();
        self
    }
}

/// Events for contexts `<prefix><c>` for every `c` in `contexts`, `per_ctx` events
/// each, sent round-robin over those contexts (round 0 for every context, then
/// round 1, ...). Items are Zipf-distributed over `items`, scores 1..=100.
pub fn events(prefix: &str, contexts: &[usize], per_ctx: usize, zipf: &Zipf, rng: &mut Rng) -> Lines {
    let mut out = Lines::default();
    let mut line = String::with_capacity(64);
    for _round in 0..per_ctx {
        for &c in contexts {
            let k = zipf.sample(rng);
            let score = rng.range_inclusive(1, 100);
            line.clear();
            let _ = write!(line, "EVENT {prefix}{c} ADD item{k} {score}");
            out.push(&line);
        }
    }
    out.finish()
}

/// Appends `n` floats in [-1, 1) with 4 decimals, each preceded by a space.
pub fn push_floats(line: &mut String, n: usize, rng: &mut Rng) {
    for _ in 0..n {
        let _ = write!(line, " {:.4}", rng.unit_signed());
    }
}

/// The vector of `item<k>`: the same values whichever connection sends it.
pub fn vector_line(seed: u64, k: usize, dim: usize, line: &mut String) {
    let mut rng = Rng::derive(seed ^ STREAM_VECTORS, k as u64);
    line.clear();
    let _ = write!(line, "VECSET item{k}");
    push_floats(line, dim, &mut rng);
}

/// `VECSET item<k> ...` for every `k` in `ks`.
pub fn vectors(seed: u64, ks: impl Iterator<Item = usize>, dim: usize) -> Lines {
    let mut out = Lines::default();
    let mut line = String::with_capacity(16 + dim * 8);
    for k in ks {
        vector_line(seed, k, dim, &mut line);
        out.push(&line);
    }
    out.finish()
}
