//! Sizing of the buffer pool (`bufpool`): how many idle bytes each thread may keep in its
//! free lists of aligned buffers.
//!
//! The live data of commands is bounded by `[limits] max_command_data`; idle buffers only
//! serve to re-issue that memory without mapping it again, so by default all connection
//! threads together keep at most half the budget idle, and one thread at most
//! [`bufpool::DEFAULT_THREAD_CACHE`] (16 MiB). With the defaults (48 MiB, two cores) that is
//! 12 MiB per thread. Measured in ARCHITECTURE.md ("Data path"): the bound trades peak RSS
//! against fresh mappings (mmap, page faults, munmap) when a thread's load swings.
//!
//! `[limits] buffer_cache_per_thread` sets the bound instead (0 = keep nothing idle), and
//! the `GATEWAY_BUF_CACHE_KIB` environment variable (KiB) overrides both: an A/B knob for
//! benchmarks, which start the gateway with flags rather than a config file (like
//! `GATEWAY_IO`).

use crate::config::Limits;

/// Environment override of the per-thread bound, in KiB.
const ENV_OVERRIDE: &str = "GATEWAY_BUF_CACHE_KIB";

/// Derived per-thread bound for `io_threads` connection threads sharing `max_command_data`.
pub fn thread_cache_bytes(max_command_data: u64, io_threads: usize) -> usize {
    let budget = usize::try_from(max_command_data).unwrap_or(usize::MAX);
    let share = budget / 2 / io_threads.max(1);
    share.clamp(1 << 20, bufpool::DEFAULT_THREAD_CACHE)
}

/// Bytes from the value of an A/B environment knob given in KiB (`GATEWAY_*_KIB`); `None`
/// when unset or not a number, so the configured value applies.
pub fn env_kib(value: Option<&str>) -> Option<u64> {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kib| kib.saturating_mul(1024))
}

/// The per-thread bound: `env` (the value of [`ENV_OVERRIDE`], if set and a number of
/// KiB), else `limits.buffer_cache_per_thread`, else derived.
fn thread_cache_bound(env: Option<&str>, limits: &Limits, io_threads: usize) -> usize {
    if let Some(bytes) = env_kib(env) {
        return usize::try_from(bytes).unwrap_or(usize::MAX);
    }
    match limits.buffer_cache_per_thread {
        Some(bytes) => usize::try_from(bytes).unwrap_or(usize::MAX),
        None => thread_cache_bytes(limits.max_command_data, io_threads),
    }
}

/// Sets the pool's per-thread bound for this process (see the module docs) and returns it.
pub fn configure(limits: &Limits, io_threads: usize) -> usize {
    let env = std::env::var(ENV_OVERRIDE).ok();
    let bytes = thread_cache_bound(env.as_deref(), limits, io_threads);
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

    #[test]
    fn config_key_overrides_the_derived_bound_and_the_environment_both() {
        let derived = Limits::default();
        assert_eq!(thread_cache_bound(None, &derived, 2), 12 << 20);
        let set = |bytes| Limits {
            buffer_cache_per_thread: Some(bytes),
            ..Limits::default()
        };
        assert_eq!(thread_cache_bound(None, &set(0), 2), 0, "0 keeps nothing");
        assert_eq!(
            thread_cache_bound(None, &set(64 << 20), 2),
            64 << 20,
            "not clamped to the derived range"
        );
        assert_eq!(thread_cache_bound(Some("4096"), &set(0), 2), 4 << 20);
        assert_eq!(thread_cache_bound(Some("0"), &derived, 2), 0);
        assert_eq!(
            thread_cache_bound(Some("lots"), &set(3 << 20), 2),
            3 << 20,
            "an unparsable override is ignored"
        );
    }
}
