//! How large each connection thread's registered-buffer arena is (`block/registered.rs`):
//! `[limits] registered_buffers_per_thread`, or the `GATEWAY_REGISTERED_KIB` environment
//! variable (KiB, an A/B knob for benchmarks), fitted to what the process may pin.
//!
//! Why fit it: a process without CAP_IPC_LOCK, and any process in an unprivileged
//! container (io_uring checks the capability against the host's user namespace), is
//! charged for the pages io_uring pins against RLIMIT_MEMLOCK, and so are its rings. The
//! shipped systemd unit runs without capabilities and with `LimitMEMLOCK=8M`, where two
//! 8 MiB arenas cannot be pinned. Such a process gives the arenas half of its limit, split
//! over the connection threads and rounded down to whole 2 MiB huge pages (none below one),
//! and keeps the other half for its rings. A limit of `infinity`, or CAP_IPC_LOCK outside a
//! user namespace, keeps the configured size. This assumes one charge per thread, which
//! holds from Linux 6.12 (rings clone their thread's registration); on older kernels each
//! connection's ring is charged, and rings past the limit run with unregistered buffers.

use crate::config::Limits;

/// Environment override of `registered_buffers_per_thread`, in KiB.
const ENV_OVERRIDE: &str = "GATEWAY_REGISTERED_KIB";

/// Arena sizes are whole huge pages (bufpool rounds them up to this).
const HUGE: u64 = bufpool::ARENA_UNIT as u64;

/// What pinning memory costs this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinLimit {
    /// Pinned pages count against RLIMIT_MEMLOCK.
    pub charged: bool,
    /// The soft RLIMIT_MEMLOCK in bytes (`None`: unlimited).
    pub memlock: Option<u64>,
}

/// The configured size: `env` (KiB, if set and a number), else the config key.
fn configured(env: Option<&str>, limits: &Limits) -> u64 {
    super::buffers::env_kib(env).unwrap_or(limits.registered_buffers_per_thread)
}

/// `wanted` bytes per thread, fitted to `pin` for `threads` connection threads.
pub fn fit(wanted: u64, pin: PinLimit, threads: usize) -> u64 {
    let (true, Some(memlock)) = (pin.charged, pin.memlock) else {
        return wanted;
    };
    let share = memlock / 2 / (threads.max(1) as u64);
    wanted.min(share / HUGE * HUGE)
}

/// Reads this process's capability, user namespace and RLIMIT_MEMLOCK.
pub fn pin_limit() -> PinLimit {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid_map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let mut rlim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct we own.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rlim) } == 0;
    let memlock = match ok {
        true if rlim.rlim_cur == libc::RLIM_INFINITY => None,
        true => Some(rlim.rlim_cur),
        // Unknown: assume the common default.
        false => Some(8 << 20),
    };
    PinLimit {
        charged: !has_ipc_lock(&status) || in_user_namespace(&uid_map),
        memlock,
    }
}

/// CAP_IPC_LOCK (bit 14) in the effective set of a `/proc/self/status` text.
fn has_ipc_lock(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 14) != 0)
}

/// True unless `/proc/self/uid_map` is the initial namespace's identity map.
fn in_user_namespace(uid_map: &str) -> bool {
    let fields: Vec<&str> = uid_map.split_whitespace().collect();
    fields != ["0", "0", "4294967295"]
}

/// The arena each of `threads` connection threads gets (0: none), logging when the
/// memlock limit made it smaller than configured.
pub fn per_thread(limits: &Limits, threads: usize) -> usize {
    let wanted = configured(std::env::var(ENV_OVERRIDE).ok().as_deref(), limits);
    let pin = pin_limit();
    let size = fit(wanted, pin, threads);
    if size < wanted {
        tracing::info!(
            configured = wanted,
            registered_buffers_per_thread = size,
            memlock = pin.memlock,
            threads,
            "registered buffers reduced to fit RLIMIT_MEMLOCK (pinned memory is charged to it \
             without CAP_IPC_LOCK or in a user namespace): raise LimitMEMLOCK for more"
        );
    }
    usize::try_from(size).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_from_the_key_or_the_environment() {
        let d = Limits::default();
        assert_eq!(configured(None, &d), 8 << 20);
        assert_eq!(configured(Some("0"), &d), 0);
        assert_eq!(configured(Some("2048"), &d), 2 << 20);
        assert_eq!(configured(Some("x"), &d), 8 << 20, "unparsable is ignored");
        let off = Limits {
            registered_buffers_per_thread: 0,
            ..Limits::default()
        };
        assert_eq!(configured(None, &off), 0);
    }

    #[test]
    fn fitted_to_half_the_memlock_limit_when_charged() {
        let charged = |memlock| PinLimit {
            charged: true,
            memlock,
        };
        // The shipped unit: LimitMEMLOCK=8M, two threads: 2 MiB each.
        assert_eq!(fit(8 << 20, charged(Some(8 << 20)), 2), 2 << 20);
        // Four threads: 1 MiB each is less than a huge page: none.
        assert_eq!(fit(8 << 20, charged(Some(8 << 20)), 4), 0);
        // Never more than configured, and rounded down to huge pages.
        assert_eq!(fit(4 << 20, charged(Some(1 << 30)), 2), 4 << 20);
        assert_eq!(fit(8 << 20, charged(Some(22 << 20)), 2), 4 << 20);
        assert_eq!(fit(8 << 20, charged(Some(8 << 20)), 0), 4 << 20);
        assert_eq!(fit(8 << 20, charged(None), 64), 8 << 20, "unlimited");
        let free = PinLimit {
            charged: false,
            memlock: Some(64 << 10),
        };
        assert_eq!(fit(8 << 20, free, 64), 8 << 20, "CAP_IPC_LOCK");
    }

    #[test]
    fn capability_and_namespace_from_proc_text() {
        assert!(has_ipc_lock("Name:\tx\nCapEff:\t000001ffffffffff\n"));
        assert!(!has_ipc_lock("CapEff:\t000001fffeffbfff\n"));
        assert!(!has_ipc_lock("CapEff:\t0000000000000000\n"));
        assert!(!has_ipc_lock(""));
        assert!(!in_user_namespace("         0          0 4294967295\n"));
        assert!(in_user_namespace("         0     100000      65536\n"));
        assert!(in_user_namespace(""));
    }
}
