//! The async runtime a binary runs on, sized by its `RUNTIME_THREADS` setting.
//!
//! By default tokio starts one worker thread per core it may use (cgroup CPU quotas
//! included). Where several courier processes, a broker and a database share a few
//! cores, that is more runnable threads than cores, and each message's hops between
//! them wait in the kernel's run queue: one thread per process is then both cheaper and
//! faster (docs/benchmarks.md).

/// Most runtime threads a process may ask for.
pub const MAX_THREADS: usize = 256;

/// A multi-threaded runtime with `threads` workers (unset: one per usable core).
pub fn build(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        builder.worker_threads(n.clamp(1, MAX_THREADS));
    }
    builder.enable_all().build()
}
