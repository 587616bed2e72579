//! An 8-bit copy of the vector store for a first pass of the exact scan.
//!
//! Each stored vector also keeps its values rounded to `i8` against a scale
//! (`scale * code ≈ value`), the largest rounding error `err` and the sum of
//! the codes' magnitudes `l1`. A query is rounded the same way; the integer
//! dot product of the two codes then gives, for every stored vector, an
//! interval that holds the score the exact `f32` kernel computes
//! (`similarity::vector_score`), with a margin for that kernel's own
//! rounding. `similarity::vector_top_k` scans the codes (a quarter of the
//! floats' bytes) and scores exactly only the vectors whose upper bound
//! reaches the floor of its top `k` so far (the `k`-th best exact score):
//! the same results, bit for bit, as scoring every vector.
//!
//! The bound. With `q = sq*d + f` and `v = sv*c + e` (`|f_i| <= errq`,
//! `|e_i| <= errv`):
//! `q.v = sq*sv*(d.c) + sq*(d.e) + sv*(f.c) + f.e`, so
//! `|q.v - sq*sv*(d.c)| <= sq*l1q*errv + sv*l1v*errq + D*errq*errv`.
//! The `f32` kernel's dot differs from `q.v` by at most
//! `gamma * |q| * |v|` (`gamma` below `(D + 16) * 1.2e-7`, at most 1.001 *
//! `qn * vn` for the norms' own rounding), and cosine divides by `qn * vn`
//! with two more roundings (an absolute `1e-6` covers them: `|cos| <= 1.001`).
//!
//! Only vectors the bound is sound for get one: finite values, largest
//! magnitude in `[1e-12, 1e12]` (no `f32` overflow or underflow to zero in
//! the kernel; a zero vector scores exactly 0 and is left out too),
//! dimension at most `MAX_DIM`. The others are `QInfo::UNBOUNDED` and always
//! scored exactly; a query outside those limits, or the `l2` metric, scans the
//! floats as before.

use super::Metric;

/// Largest dimension with codes (the integer dot stays far inside `i32`, the
/// `l1` sums exact in `f32`, and the kernel's error margin small).
pub(crate) const MAX_DIM: usize = 4096;

/// Largest magnitudes a vector may have to get a bound.
const MIN_MAGNITUDE: f32 = 1e-12;
const MAX_MAGNITUDE: f32 = 1e12;

/// A vector's scale, rounding error and code magnitude sum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct QInfo {
    pub(crate) scale: f32,
    /// Largest `|value - scale * code|`, rounded up; infinite: no bound.
    pub(crate) err: f32,
    /// Sum of `|code|`.
    pub(crate) l1: f32,
}

impl QInfo {
    /// A vector with no bound: always scored exactly.
    pub(crate) const UNBOUNDED: QInfo = QInfo {
        scale: 0.0,
        err: f32::INFINITY,
        l1: 0.0,
    };

    #[inline(always)]
    pub(crate) fn bounded(&self) -> bool {
        self.err.is_finite()
    }
}

/// Rounds `values` into `out` (same length) and describes the rounding;
/// `out` is all zeros and the result `UNBOUNDED` when no bound is sound.
pub(crate) fn quantize(values: &[f32], out: &mut [i8]) -> QInfo {
    // eight lanes and comparisons rather than `f32::max`, so the loops
    // vectorise (a VECSET and a LOAD pay for this once per vector)
    let mut max = [0.0f32; 8];
    let mut finite = [true; 8];
    let lanes = values.chunks_exact(8);
    for &v in lanes.remainder() {
        finite[0] &= v.is_finite();
        if v.abs() > max[0] {
            max[0] = v.abs();
        }
    }
    for c in lanes {
        for i in 0..8 {
            finite[i] &= c[i].is_finite();
            if c[i].abs() > max[i] {
                max[i] = c[i].abs();
            }
        }
    }
    let max = max.iter().fold(0.0f32, |m, &x| if x > m { x } else { m });
    if values.len() > MAX_DIM
        || values.len() != out.len()
        || finite.contains(&false)
        || !(MIN_MAGNITUDE..=MAX_MAGNITUDE).contains(&max)
    {
        out.fill(0);
        return QInfo::UNBOUNDED;
    }
    let scale = (f64::from(max) / 127.0) as f32;
    let inv = 1.0 / scale;
    // To nearest by adding 1.5 * 2^23, whose last mantissa bits then hold
    // the integer (`round` is a library call on baseline x86-64, and a float
    // to `i8` conversion one instruction per value); the residual is
    // measured, so any rounding of `v * inv` would do.
    const ROUNDER: f32 = 12_582_912.0;
    for (o, &v) in out.iter_mut().zip(values) {
        let y = (v * inv).clamp(-127.0, 127.0) + ROUNDER;
        *o = (y.to_bits() as i32).wrapping_sub(ROUNDER.to_bits() as i32) as i8;
    }
    // The residuals in `f32`, in eight lanes: `fl(v - fl(scale * c))` is
    // within `u * |scale * c| + u * |r|` of the residual `r` (`u = 2^-24`,
    // `|scale * c| <= 1.01 * max`), which the margins of `err` cover.
    let mut err = [0.0f32; 8];
    let mut l1 = [0u32; 8];
    let mut step = |c: i8, v: f32, i: usize| {
        err[i] = err[i].max((v - scale * f32::from(c)).abs());
        l1[i] += u32::from(c.unsigned_abs());
    };
    let (codes, vals) = (out.chunks_exact(8), values.chunks_exact(8));
    for (&c, &v) in codes.remainder().iter().zip(vals.remainder()) {
        step(c, v, 0);
    }
    for (c, v) in codes.zip(vals) {
        for i in 0..8 {
            step(c[i], v[i], i);
        }
    }
    let err = err.iter().fold(0.0f32, |m, &x| if x > m { x } else { m });
    QInfo {
        scale,
        err: round_up(f64::from(err) * (1.0 + 1e-6) + f64::from(max) * 1.2e-7),
        l1: l1.iter().sum::<u32>() as f32,
    }
}

/// `x` as an `f32` no smaller than `x` (`x` finite, `>= 0`).
fn round_up(x: f64) -> f32 {
    let r = x as f32;
    if f64::from(r) < x {
        f32::from_bits(r.to_bits() + 1)
    } else {
        r
    }
}

/// A query rounded for the first pass, with the constants of its bounds.
#[derive(Debug)]
pub(crate) struct QueryCodes {
    /// The codes widened to `i16` (what the kernel multiplies).
    pub(crate) codes: Vec<i16>,
    cosine: bool,
    qn: f64,
    /// `sq`
    scale: f64,
    /// `sq * l1q`
    k_errv: f64,
    /// `errq`
    k_sl1v: f64,
    /// `D * errq`
    k_errv2: f64,
    /// `gamma * 1.001 * qn`
    k_vn: f64,
}

/// What the kernel's rounding can add: `(D + 16) * 1.2e-7` is at least twice
/// `gamma` for the summation depth of `similarity::dot` (`D/8 + 17`).
fn kernel_margin(dim: usize) -> f64 {
    (dim as f64 + 16.0) * 1.2e-7
}

/// Absolute margin on a cosine for its division's two roundings.
const COSINE_MARGIN: f64 = 1e-6;

impl QueryCodes {
    /// `None` when the query (with its `f32` norm `qn`) gets no bound or the
    /// metric has none here (`l2`): the scan then scores every vector.
    pub(crate) fn new(metric: Metric, q: &[f32], qn: f32) -> Option<Self> {
        let cosine = match metric {
            Metric::Cosine => true,
            Metric::Dot => false,
            Metric::L2 => return None,
        };
        let mut codes = vec![0i8; q.len()];
        let info = quantize(q, &mut codes);
        if !(info.bounded() && qn.is_finite() && qn > 0.0) {
            return None;
        }
        let (sq, errq, l1q) = (f64::from(info.scale), f64::from(info.err), f64::from(info.l1));
        let qn = f64::from(qn);
        Some(QueryCodes {
            codes: codes.into_iter().map(i16::from).collect(),
            cosine,
            qn,
            scale: sq,
            k_errv: sq * l1q,
            k_sl1v: errq,
            k_errv2: q.len() as f64 * errq,
            k_vn: kernel_margin(q.len()) * 1.001 * qn,
        })
    }

    /// For a bounded vector with integer dot `dot`, its info and its `f32`
    /// norm `vn`: `(lo, hi, p)` with the exact kernel's score in
    /// `[lo / p, hi / p]`, `p > 0`.
    #[inline(always)]
    pub(crate) fn bounds(&self, dot: i32, info: &QInfo, vn: f32) -> (f64, f64, f64) {
        let (sv, errv, l1v, vn) = (
            f64::from(info.scale),
            f64::from(info.err),
            f64::from(info.l1),
            f64::from(vn),
        );
        let approx = self.scale * sv * f64::from(dot);
        let mut margin = self.k_errv * errv + sv * l1v * self.k_sl1v + self.k_errv2 * errv + self.k_vn * vn;
        let p = if self.cosine {
            let p = self.qn * vn;
            margin += COSINE_MARGIN * p;
            p
        } else {
            1.0
        };
        (approx - margin, approx + margin, p)
    }
}

/// Integer dot product of a query's codes and a vector's codes (equal
/// lengths); the result is the same on every path.
#[inline(always)]
pub(crate) fn idot(q: &[i16], c: &[i8]) -> i32 {
    let n = q.len().min(c.len());
    let (q, c) = (&q[..n], &c[..n]);
    let mut acc = [0i32; 16];
    let cq = q.chunks_exact(16);
    let cc = c.chunks_exact(16);
    let tail: i32 = cq
        .remainder()
        .iter()
        .zip(cc.remainder())
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum();
    for (x, y) in cq.zip(cc) {
        let x: &[i16; 16] = x.try_into().expect("chunks_exact yields 16");
        let y: &[i8; 16] = y.try_into().expect("chunks_exact yields 16");
        for i in 0..16 {
            acc[i] += i32::from(x[i]) * i32::from(y[i]);
        }
    }
    acc.iter().sum::<i32>() + tail
}

/// `idot` with AVX2: sixteen codes widened and multiplied in pairs
/// (`vpmaddwd`) per step.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn idot_avx2(q: &[i16], c: &[i8]) -> i32 {
    use std::arch::x86_64::*;
    let n = q.len().min(c.len());
    let blocks = n / 16;
    let mut acc = _mm256_setzero_si256();
    for b in 0..blocks {
        // SAFETY: `b * 16 + 16 <= n`, within both slices; unaligned loads.
        let (x, y) = unsafe {
            (
                _mm256_loadu_si256(q.as_ptr().add(b * 16).cast::<__m256i>()),
                _mm256_cvtepi8_epi16(_mm_loadu_si128(c.as_ptr().add(b * 16).cast::<__m128i>())),
            )
        };
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(x, y));
    }
    let s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    let tail: i32 = q[blocks * 16..n]
        .iter()
        .zip(&c[blocks * 16..n])
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum();
    _mm_cvtsi128_si32(s) + tail
}

/// Whether `idot_avx2` may run here (checked once per scan).
#[inline]
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::parse::tests::xorshift;

    fn values(rng: &mut impl FnMut() -> u64, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| ((rng() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale)
            .collect()
    }

    #[test]
    fn codes_reproduce_the_values_within_err() {
        let mut seed = xorshift(7);
        for (n, scale) in [(1, 1.0), (3, 1e-11), (128, 1.0), (100, 1e11), (4096, 3.0)] {
            let v = values(&mut seed, n, scale);
            let mut c = vec![0i8; n];
            let info = quantize(&v, &mut c);
            assert!(info.bounded());
            let mut l1 = 0.0;
            for (x, &k) in v.iter().zip(&c) {
                let back = f64::from(info.scale) * f64::from(k);
                assert!((f64::from(*x) - back).abs() <= f64::from(info.err), "{x} {k}");
                l1 += f64::from(k).abs();
            }
            assert_eq!(f64::from(info.l1), l1);
            // the largest value maps to ±127 (or one step off by rounding)
            assert!(c.iter().any(|k| k.unsigned_abs() >= 126));
        }
    }

    #[test]
    fn vectors_outside_the_limits_get_no_bound() {
        let mut c = vec![1i8; 3];
        for v in [
            vec![0.0, 0.0, 0.0],
            vec![1e-13, 0.0, -1e-13],
            vec![2e12, 1.0, 0.0],
            vec![f32::NAN, 1.0, 0.0],
            vec![f32::INFINITY, 1.0, 0.0],
        ] {
            assert_eq!(quantize(&v, &mut c), QInfo::UNBOUNDED, "{v:?}");
            assert_eq!(c, [0, 0, 0]);
        }
        // NaN (which no comparison catches) among the first eight, or the ninth
        for at in [5, 8] {
            let mut v = vec![1.0f32; 9];
            v[at] = f32::NAN;
            assert_eq!(quantize(&v, &mut [0; 9]), QInfo::UNBOUNDED);
        }
        let mut big = vec![0i8; MAX_DIM + 1];
        assert!(!quantize(&vec![1.0; MAX_DIM + 1], &mut big).bounded());
        assert!(QueryCodes::new(Metric::L2, &[1.0], 1.0).is_none());
        assert!(QueryCodes::new(Metric::Cosine, &[0.0], 0.0).is_none());
        assert!(QueryCodes::new(Metric::Dot, &[1.0], 1.0).is_some());
    }

    #[test]
    fn the_avx2_kernel_equals_the_portable_one() {
        if !has_avx2() {
            return;
        }
        let mut seed = xorshift(11);
        for n in [0, 1, 15, 16, 17, 31, 128, 130, 4096] {
            for extreme in [false, true] {
                let q: Vec<i16> = (0..n)
                    .map(|_| {
                        if extreme {
                            -127
                        } else {
                            (seed() % 255) as i16 - 127
                        }
                    })
                    .collect();
                let c: Vec<i8> = (0..n)
                    .map(|_| {
                        if extreme {
                            -127
                        } else {
                            ((seed() % 255) as i16 - 127) as i8
                        }
                    })
                    .collect();
                let want: i64 = q.iter().zip(&c).map(|(&x, &y)| i64::from(x) * i64::from(y)).sum();
                assert_eq!(i64::from(idot(&q, &c)), want, "n = {n}");
                // SAFETY: AVX2 was detected above.
                assert_eq!(i64::from(unsafe { idot_avx2(&q, &c) }), want, "n = {n}");
            }
        }
    }

    /// The exact kernel's score lies inside the bounds, for both metrics and
    /// values of every size the bound accepts, near-duplicates included.
    #[test]
    fn the_exact_score_lies_within_the_bounds() {
        use super::super::similarity::{norm, vector_score};
        let mut seed = xorshift(3);
        let mut worst = 0.0f64;
        for dim in [1, 2, 7, 16, 128, 300] {
            for scale in [1e-11f32, 1e-3, 1.0, 1e11] {
                let q = values(&mut seed, dim, scale);
                let qn = norm(&q);
                for metric in [Metric::Cosine, Metric::Dot] {
                    let Some(qc) = QueryCodes::new(metric, &q, qn) else {
                        continue;
                    };
                    for j in 0..200 {
                        let v = match j % 4 {
                            // the query itself and near copies: scores at the top
                            0 => q.clone(),
                            1 => q.iter().map(|x| x * (1.0 + 1e-6)).collect(),
                            2 => q.iter().map(|x| -x).collect(),
                            _ => values(&mut seed, dim, scale * 0.5f32.powi(j % 7)),
                        };
                        let mut c = vec![0i8; dim];
                        let info = quantize(&v, &mut c);
                        if !info.bounded() {
                            continue;
                        }
                        let vn = norm(&v);
                        let exact = f64::from(vector_score(metric, &q, qn, &v, vn));
                        let (lo, hi, p) = qc.bounds(idot(&qc.codes, &c), &info, vn);
                        assert!(
                            lo / p <= exact && exact <= hi / p,
                            "{metric:?} dim {dim} scale {scale}: {exact} not in [{}, {}]",
                            lo / p,
                            hi / p
                        );
                        if metric == Metric::Cosine {
                            worst = worst.max((hi - lo) / p);
                        }
                    }
                }
            }
        }
        // and tight enough to be worth it: a cosine is known within ~0.1
        assert!(worst < 0.2, "widest cosine interval {worst}");
    }
}
