//! Per-connection rings: a connection task owns an io_uring of its own, registered with
//! tokio's reactor, so a command's block I/O is submitted and reaped by the task that
//! received the command, with no thread hop and no lock shared with other connections.
//!
//! [`scope`] makes a ring current for a future (a tokio task-local). While it is current,
//! [`super::Engine`] operations queue on it instead of going to the engine thread; the task
//! calls [`LocalRing::submit`] once per wake-up (one `io_uring_enter` for everything its
//! commands queued) and [`LocalRing::reap`] when [`LocalRing::ready`] says the ring has
//! completions. Measured against the engine thread in ARCHITECTURE.md.
//!
//! Dropping a ring whose operations are still in the kernel hands it to a short-lived
//! thread that waits for them, so no buffer is freed while the kernel may write into it.

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::io::unix::AsyncFd;

use super::engine::{Request, RingCore};

tokio::task_local! {
    static CURRENT: Arc<LocalRing>;
}

/// Runs `f` with `ring` as the current ring (no ring: operations go to the engine thread).
pub async fn scope<F: Future>(ring: Option<Arc<LocalRing>>, f: F) -> F::Output {
    match ring {
        Some(r) => CURRENT.scope(r, f).await,
        None => f.await,
    }
}

/// Queues `req` on the current task's ring; gives it back when there is none.
pub(crate) fn try_push(req: Request) -> Result<(), Request> {
    let mut slot = Some(req);
    let _ = CURRENT.try_with(|r| {
        if let Some(req) = slot.take() {
            r.core().pending.push_back(req);
        }
    });
    match slot {
        None => Ok(()),
        Some(req) => Err(req),
    }
}

struct RingFd(RawFd);

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// One connection's ring.
pub struct LocalRing {
    /// Taken first on drop: deregistered from the reactor before the ring's fd closes.
    readiness: Option<AsyncFd<RingFd>>,
    core: Mutex<Option<RingCore>>,
}

impl LocalRing {
    /// A ring with `entries` SQEs, registered with the current tokio reactor. With
    /// `adaptive_depth`, how many of them are in flight at once is measured (`depth.rs`).
    /// The calling thread's buffer arena, if it has one, is registered with it
    /// (`registered.rs`).
    pub fn new(entries: u32, adaptive_depth: bool) -> io::Result<Arc<Self>> {
        let mut core = RingCore::new(entries)?;
        core.register_thread_arena();
        if adaptive_depth {
            core.adapt_depth(Instant::now());
        }
        // SAFETY: the fd is the ring's, which stays open until after `readiness` is dropped
        // (Drop takes `readiness` first and only then lets the ring go).
        let readiness = unsafe {
            AsyncFd::register_with_interest(
                RingFd(core.ring.as_raw_fd()),
                tokio::io::Interest::READABLE,
            )
        }?;
        Ok(Arc::new(LocalRing {
            readiness: Some(readiness),
            core: Mutex::new(Some(core)),
        }))
    }

    /// The ring's fd: readable when completions may be waiting (what idle polling watches).
    pub fn raw_fd(&self) -> RawFd {
        self.readiness
            .as_ref()
            .map_or(-1, |r| r.get_ref().as_raw_fd())
    }

    fn core(&self) -> CoreGuard<'_> {
        CoreGuard(self.core.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Hands everything queued to the kernel (one `io_uring_enter`). Cheap when nothing is
    /// queued.
    pub fn submit(&self) {
        let mut core = self.core();
        if core.pending.is_empty() {
            return;
        }
        for round in 0..INLINE_REAP_ROUNDS {
            submit_queued(&mut core);
            // What the kernel finished inside that call (a page-cache hit, an error) is in
            // the CQ already: finish it now, so its command completes in this wake-up
            // rather than after a trip through the reactor. What that queues (a short
            // transfer's rest) goes in the next round; the last round only submits, so
            // nothing is left queued but unsubmitted.
            if round + 1 == INLINE_REAP_ROUNDS
                || !inline_reap()
                || core.ring.completion().is_empty()
            {
                break;
            }
            core.reap();
            if core.pending.is_empty() {
                break;
            }
        }
    }

    /// Waits until the ring may have completions (the reactor saw its fd readable).
    pub async fn ready(&self) {
        let Some(fd) = &self.readiness else {
            return std::future::pending().await;
        };
        match fd.readable().await {
            // Cleared before reaping: a completion posted after this re-arms readiness.
            Ok(mut guard) => guard.clear_ready(),
            Err(_) => std::future::pending().await,
        }
    }

    /// Finishes every completed operation, then submits what that queued (resubmissions,
    /// requests that waited for a free slot).
    pub fn reap(&self) {
        {
            let mut core = self.core();
            core.reap();
            if let Some(cap) = core.tick_depth(Instant::now()) {
                tracing::debug!(cap, "connection ring depth adapted");
            }
        }
        self.submit();
    }

    /// Operations in the kernel or waiting for a slot.
    pub fn busy(&self) -> usize {
        let c = self.core();
        c.in_flight + c.pending.len()
    }
}

/// Submit-and-reap rounds per [`LocalRing::submit`] (the last one only submits).
const INLINE_REAP_ROUNDS: usize = 4;

/// `GATEWAY_INLINE_REAP=0` turns reaping right after a submit off (A/B runs).
fn inline_reap() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("GATEWAY_INLINE_REAP").map_or(true, |v| v != "0"))
}

/// Moves what is queued into the SQ and hands it to the kernel (one `io_uring_enter`).
fn submit_queued(core: &mut RingCore) {
    core.fill_sq();
    if let Err(e) = core.ring.submit() {
        // The SQEs stay in the SQ and go with the next submit.
        if !matches!(
            e.raw_os_error(),
            Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)
        ) {
            tracing::warn!(error = %e, "io_uring submit failed");
        }
    }
}

struct CoreGuard<'a>(MutexGuard<'a, Option<RingCore>>);

impl std::ops::Deref for CoreGuard<'_> {
    type Target = RingCore;
    fn deref(&self) -> &RingCore {
        // The option is only emptied by Drop, which no guard outlives.
        self.0.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl std::ops::DerefMut for CoreGuard<'_> {
    fn deref_mut(&mut self) -> &mut RingCore {
        self.0.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for LocalRing {
    fn drop(&mut self) {
        drop(self.readiness.take());
        let Some(mut core) = self.core.get_mut().ok().and_then(Option::take) else {
            return;
        };
        core.fail_pending(&io::Error::other("connection closed"));
        if core.in_flight == 0 {
            return;
        }
        // The kernel still owns buffers of this ring: wait for them on a thread of its own.
        let spawned = std::thread::Builder::new()
            .name("io-uring-drain".into())
            .spawn(move || {
                while core.in_flight > 0 {
                    match core.ring.submit_and_wait(1) {
                        Ok(_) => {}
                        Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                        Err(e) => {
                            tracing::error!(error = %e, "draining a connection ring failed; leaking it");
                            std::mem::forget(core);
                            return;
                        }
                    }
                    core.reap();
                    core.pending.clear();
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot drain a connection ring; leaking it");
        }
    }
}
