//! Registered buffers on a connection's ring: the connection thread's buffer arena
//! (`bufpool`'s `arena.rs`, `[limits] registered_buffers_per_thread`) is registered with
//! each ring made on that thread, and a read or write whose buffer lies inside it goes to
//! the kernel as READ_FIXED / WRITE_FIXED, so the kernel does not look up and pin the
//! buffer's pages per operation (they were pinned once, at registration).
//!
//! Registration can fail where pinned memory is limited: without CAP_IPC_LOCK (an
//! unprivileged container) each ring's registration counts against RLIMIT_MEMLOCK. Such a
//! ring works as before with unregistered buffers; the first failure is logged as a
//! warning, later ones at debug. `iscsi_gateway_block_ops_total{buffer=...}` shows the
//! share of operations that used registered buffers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

use bufpool::ArenaRegion;
use io_uring::IoUring;

use crate::metrics::shard::Sharded;

/// Counts of submitted reads and writes: `[registered, unregistered]`, per thread.
fn counters() -> &'static Sharded<[AtomicU64; 2]> {
    static COUNTS: OnceLock<Sharded<[AtomicU64; 2]>> = OnceLock::new();
    COUNTS.get_or_init(Sharded::default)
}

/// Registers the calling thread's arena (if it has one) with `ring` as buffer index 0 and
/// returns its region; `None` when there is no arena or the kernel refused.
pub(crate) fn register_thread_arena(ring: &IoUring) -> Option<ArenaRegion> {
    let region = bufpool::thread_arena()?;
    let iov = libc::iovec {
        iov_base: region.base().cast(),
        iov_len: region.len(),
    };
    // SAFETY: the region is an arena: mapped for the rest of the process and never
    // unmapped, discarded or remapped (bufpool's arena.rs), so the pages the kernel pins
    // stay the ones the process reads and writes there, however long the ring lives.
    match unsafe { ring.submitter().register_buffers(&[iov]) } {
        Ok(()) => Some(region),
        Err(e) => {
            static WARNED: AtomicBool = AtomicBool::new(false);
            if WARNED.swap(true, Ordering::Relaxed) {
                tracing::debug!(error = %e, "cannot register the buffer arena with a ring");
            } else {
                tracing::warn!(
                    error = %e,
                    bytes = region.len(),
                    "cannot register the buffer arena with io_uring (pinned memory is limited by \
                     RLIMIT_MEMLOCK without CAP_IPC_LOCK); this ring uses unregistered buffers"
                );
            }
            None
        }
    }
}

/// Counts one read or write handed to a ring.
#[inline]
pub(crate) fn count(registered: bool) {
    let slot = usize::from(!registered);
    if let Some(c) = counters().local().get(slot) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Reads and writes handed to rings so far: (with registered buffers, without).
pub fn ops_total() -> (u64, u64) {
    counters().all().fold((0, 0), |(r, u), c| {
        (
            r + c[0].load(Ordering::Relaxed),
            u + c[1].load(Ordering::Relaxed),
        )
    })
}
