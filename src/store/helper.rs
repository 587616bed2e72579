//! The store's helper thread: a second core for the store actor's own work.

/// One thread, started on first use and kept for the life of the process,
/// that takes half of a store operation the store actor's thread splits: the
/// odd items' rows of a batch of EVENTs ([`super::cooccurrence::CoIndex::add_batch`])
/// and half of an exact vector scan ([`super::similarity::vector_top_k`]).
/// The store actor does one operation at a time, so the two never wait for
/// each other in a server; stores used at the same time (as tests' are) take
/// turns. A thread started per operation waited ~1.2 ms on average to be
/// first scheduled on a 2-vCPU VM; a kept one is woken in ~0.1 ms. `None` if
/// no thread could be started: callers then do both halves themselves.
pub(crate) fn helper_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "nvecd-helper".into())
            .build()
            .map_err(|e| tracing::warn!(error = %e, "no store helper thread; the store works on one thread"))
            .ok()
    })
    .as_ref()
}
