//! Software prefetch: a hint to start loading a cache line before it is read.

/// Hints the CPU to start loading the cache line at `p`. No effect on
/// results: a prefetch reads nothing architecturally and never faults,
/// whatever the address, so `p` may point anywhere, past the end of an
/// allocation included.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint; it cannot fault or change memory.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p.cast::<i8>(), std::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Prefetches the cache lines of `len` elements starting `ahead` elements
/// past `p`: the part of a sequential scan it will reach soon. The hosts we
/// measured on did not prefetch a scan of the vector store well enough on
/// their own (BENCHMARKS.md, "SIM vectors").
#[inline(always)]
pub(crate) fn prefetch_ahead<T>(p: *const T, ahead: usize, len: usize) {
    let start = p.wrapping_add(ahead).cast::<u8>();
    for offset in (0..len * std::mem::size_of::<T>()).step_by(64) {
        prefetch(start.wrapping_add(offset));
    }
}
