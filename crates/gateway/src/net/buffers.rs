//! Sizing of the buffer pool (`bufpool`): how many idle bytes each thread may keep in its
//! free lists of aligned buffers.
//!
//! The live data of commands is bounded by `[limits] max_command_data`; idle buffers only
//! serve to re-issue that memory without mapping it again, so all connection threads
//! together keep at most half the budget idle, and one thread at most
//! [`bufpool::DEFAULT_THREAD_CACHE`] (16 MiB). With the defaults (48 MiB, two cores) that is
//! 12 MiB per thread. Measured in ARCHITECTURE.md ("Data path"): the bound trades peak RSS
//! against fresh mappings (mmap, page faults, munmap) when a thread's load swings.
//!
//! `GATEWAY_BUF_CACHE_KIB` overrides the result (an A/B knob, like `GATEWAY_IO`).

/// Per-thread bound for `io_threads` connection threads sharing `max_command_data`.
pub fn thread_cache_bytes(max_command_data: u64, io_threads: usize) -> usize {
    let budget = usize::try_from(max_command_data).unwrap_or(usize::MAX);
    let share = budget / 2 / io_threads.max(1);
    share.clamp(1 << 20, bufpool::DEFAULT_THREAD_CACHE)
}

/// Sets the pool's per-thread bound for this process (see the module docs).
pub fn configure(max_command_data: u64, io_threads: usize) -> usize {
    let bytes = std::env::var("GATEWAY_BUF_CACHE_KIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map(|kib| kib.saturating_mul(1024))
        .unwrap_or_else(|| thread_cache_bytes(max_command_data, io_threads));
    bufpool::set_thread_cache_limit(bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_the_budget_split_over_threads_within_bounds() {
        assert_eq!(thread_cache_bytes(48 << 20, 2), 12 << 20);
        assert_eq!(thread_cache_bytes(48 << 20, 1), 16 << 20);
        assert_eq!(thread_cache_bytes(48 << 20, 64), 1 << 20);
        assert_eq!(thread_cache_bytes(16 << 30, 8), 16 << 20);
        assert_eq!(thread_cache_bytes(1 << 20, 0), 1 << 20);
    }
}
