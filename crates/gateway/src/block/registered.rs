//! Registered buffers on a connection's ring: the connection thread's buffer arena
//! (`bufpool`'s `arena.rs`, `[limits] registered_buffers_per_thread`) is registered with
//! each ring made on that thread, and a read or write whose buffer lies inside it goes to
//! the kernel as READ_FIXED / WRITE_FIXED, so the kernel does not look up and pin the
//! buffer's pages per operation (they were pinned once, at registration).
//!
//! The arena is registered once per thread, with a small ring kept for the purpose, and
//! each connection ring clones that registration (Linux 6.12 and later; before, each ring
//! registers the arena itself). Registration can fail where pinned memory is limited:
//! without CAP_IPC_LOCK, and in an unprivileged container whatever its capabilities, the
//! pinned arena is charged to RLIMIT_MEMLOCK (`net/registered_size.rs` sizes the arenas to
//! fit). A ring whose registration fails works as before with unregistered buffers, and a
//! thread whose own registration failed does not try again; the first failure is logged
//! as a warning, later ones at debug. `iscsi_gateway_block_ops_total{buffer=...}` shows the
//! share of operations that used registered buffers.

use std::cell::RefCell;
use std::os::fd::AsRawFd;
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

/// Where a thread's rings get their registration from: a one-entry ring that registered the
/// thread's arena once. Connection rings clone its table (`IORING_REGISTER_CLONE_BUFFERS`,
/// Linux 6.12): the kernel shares the pinned pages instead of pinning and charging them
/// again, so without CAP_IPC_LOCK a thread's arena counts against RLIMIT_MEMLOCK once, not
/// once per connection. A kernel that cannot clone (before 6.12) makes the thread register
/// with each ring instead (`PerRing`), and the one-entry ring is let go at once, so its
/// pinned copy is not charged on top of the rings' own.
enum Source {
    Untried,
    Ready(Box<IoUring>),
    PerRing,
    Failed,
}

thread_local! {
    static SOURCE: RefCell<Source> = const { RefCell::new(Source::Untried) };
}

/// Registers the calling thread's arena (if it has one) with `ring` as buffer index 0 and
/// returns its region; `None` when there is no arena or the kernel refused.
pub(crate) fn register_thread_arena(ring: &IoUring) -> Option<ArenaRegion> {
    let region = bufpool::thread_arena()?;
    SOURCE
        .try_with(|source| {
            let mut source = source.try_borrow_mut().ok()?;
            if matches!(*source, Source::Untried) {
                *source = match IoUring::new(1).and_then(|src| register(&src, region).map(|()| src))
                {
                    Ok(src) => Source::Ready(Box::new(src)),
                    Err(e) => {
                        report(&e, region);
                        Source::Failed
                    }
                };
            }
            let cloned = match &*source {
                Source::Ready(src) => clone_registration(ring, src),
                Source::PerRing => return register_per_ring(ring, region),
                Source::Untried | Source::Failed => return None,
            };
            match cloned {
                Ok(()) => Some(region),
                // Before Linux 6.12 there is no cloning: each ring pins (and is charged) on
                // its own.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    if let Source::Ready(src) = std::mem::replace(&mut *source, Source::PerRing) {
                        // Unpinned and uncharged now, not when the ring's teardown runs.
                        let _ = src.submitter().unregister_buffers();
                    }
                    register_per_ring(ring, region)
                }
                Err(e) => {
                    report(&e, region);
                    None
                }
            }
        })
        .ok()
        .flatten()
}

/// Gives `ring` the registered buffer table of `src` (`IORING_REGISTER_CLONE_BUFFERS`).
/// EINVAL means the kernel cannot (before Linux 6.12); tests can make it answer so.
fn clone_registration(ring: &IoUring, src: &IoUring) -> std::io::Result<()> {
    #[cfg(test)]
    if tests::PRETEND_NO_CLONE.get() {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    ring.submitter().register_buffers_clone(src.as_raw_fd())
}

/// Registers the arena with `ring` itself (no cloning on this kernel), saying so once;
/// a refusal is reported.
fn register_per_ring(ring: &IoUring, region: ArenaRegion) -> Option<ArenaRegion> {
    static SAID: AtomicBool = AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        tracing::info!(
            "this kernel cannot clone registered buffers between rings (before Linux 6.12): \
             each connection's ring registers the arena itself, and without CAP_IPC_LOCK each \
             is charged to RLIMIT_MEMLOCK"
        );
    }
    match register(ring, region) {
        Ok(()) => Some(region),
        Err(e) => {
            report(&e, region);
            None
        }
    }
}

fn register(ring: &IoUring, region: ArenaRegion) -> std::io::Result<()> {
    let iov = libc::iovec {
        iov_base: region.base().cast(),
        iov_len: region.len(),
    };
    // SAFETY: the region is an arena: mapped for the rest of the process and never
    // unmapped, discarded or remapped (bufpool's arena.rs), so the pages the kernel pins
    // stay the ones the process reads and writes there, however long the ring lives.
    unsafe { ring.submitter().register_buffers(&[iov]) }
}

/// Logs a refused registration: a warning the first time in the process, then at debug.
fn report(e: &std::io::Error, region: ArenaRegion) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if WARNED.swap(true, Ordering::Relaxed) {
        tracing::debug!(error = %e, "cannot register the buffer arena with a ring");
    } else {
        tracing::warn!(
            error = %e,
            bytes = region.len(),
            "cannot register the buffer arena with io_uring, so I/O uses unregistered buffers \
             (without CAP_IPC_LOCK pinned memory counts against RLIMIT_MEMLOCK: raise it by \
             limits.registered_buffers_per_thread for each connection thread, or set that to 0)"
        );
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

#[cfg(test)]
mod tests;
