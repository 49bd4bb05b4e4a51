//! Idle polling: before a connection thread goes to sleep, it may keep checking its own
//! connections' sockets and rings for a short while, so that a command arriving (or an I/O
//! completing) within that while is picked up by a thread that is still running.
//!
//! Why: at queue depth 1 each command waits for the previous answer, so the thread sleeps
//! between every two commands. Waking a sleeping thread costs an inter-processor interrupt
//! and, when the CPU went idle, leaving the idle state: on a virtual machine whose idle
//! vCPUs halt that is an exit to the hypervisor, measured at 7-11 µs per wake-up, two or
//! three times per command (benches/README.md, "Queue depth 1: idle vCPUs and polling
//! before sleep").
//!
//! The window adapts like the kernel's haltpoll governor: a sleep that ended within the
//! window is a hit (kept), one that ended later but within the cap grows the window, and
//! one longer than the cap shrinks it, down to nothing. So an idle gateway, or one whose
//! initiators pause longer than the cap between commands, polls for nothing; the CPU is
//! spent only while commands come back to back. Between checks the thread yields, so a
//! task sharing its CPU still runs.
//!
//! Only fds are watched: work that reaches the thread another way (a new connection, a
//! timer, a blocking job finishing) is seen when the window ends, at most the cap later. A
//! connection whose block I/O completes elsewhere (the engine thread, when it has no ring of
//! its own) would make every poll run its full window, so while one lives on a thread, that
//! thread does not poll ([`unwatchable`]).
//!
//! Off by default (`[server] idle_poll_us = 0`): it trades CPU time for latency, which a
//! node that also runs virtual machines may not want to give.

use std::cell::RefCell;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The window a sleep that just missed it starts growing from.
const GROW_START: Duration = Duration::from_micros(10);
/// Windows below this after shrinking are dropped to zero.
const SHRINK_FLOOR: Duration = Duration::from_micros(5);

/// How often a thread adds its own counts to the gateway-wide totals: parks then share no
/// cache line between threads, and a scrape sees counts at most this old (or, for a thread
/// that went to sleep since, from before its last sleep).
const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// Gateway-wide totals (`iscsi_gateway_idle_polls_total`, `..._idle_poll_seconds_total`).
static HITS: AtomicU64 = AtomicU64::new(0);
static MISSES: AtomicU64 = AtomicU64::new(0);
static POLL_NANOS: AtomicU64 = AtomicU64::new(0);

/// What idle polling did so far, all threads together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Totals {
    /// Polls that found input within the window: the thread did not sleep.
    pub hits: u64,
    /// Polls whose window ran out: the thread slept after all.
    pub misses: u64,
    /// Time spent polling, in seconds (CPU time the thread would otherwise have slept).
    pub seconds: f64,
}

/// The totals so far (for the metrics).
pub fn totals() -> Totals {
    Totals {
        hits: HITS.load(Ordering::Relaxed),
        misses: MISSES.load(Ordering::Relaxed),
        seconds: POLL_NANOS.load(Ordering::Relaxed) as f64 / 1e9,
    }
}

/// One thread's counts not yet added to the totals.
#[derive(Default)]
struct Unflushed {
    hits: u64,
    misses: u64,
    nanos: u64,
    since: Option<Instant>,
}

impl Unflushed {
    fn flush_if_due(&mut self, now: Instant) {
        if self
            .since
            .is_some_and(|t| now.duration_since(t) < FLUSH_EVERY)
        {
            return;
        }
        HITS.fetch_add(std::mem::take(&mut self.hits), Ordering::Relaxed);
        MISSES.fetch_add(std::mem::take(&mut self.misses), Ordering::Relaxed);
        POLL_NANOS.fetch_add(std::mem::take(&mut self.nanos), Ordering::Relaxed);
        self.since = Some(now);
    }
}

thread_local! {
    static STATE: RefCell<IdlePoll> = RefCell::new(IdlePoll::default());
}

/// The adaptive window, apart from the polling itself (pure, so it is tested alone).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Window {
    /// The cap; zero turns idle polling off.
    pub(crate) max: Duration,
    /// How long the next idle period is polled.
    pub(crate) now: Duration,
}

impl Window {
    /// Adjusts the window after an idle period of `idle` (polling plus sleep).
    pub(crate) fn after_idle(&mut self, idle: Duration) {
        if idle <= self.now {
            return;
        }
        if idle <= self.max {
            self.now = (self.now * 2).max(GROW_START).min(self.max);
        } else {
            self.now /= 2;
            if self.now < SHRINK_FLOOR {
                self.now = Duration::ZERO;
            }
        }
    }
}

#[derive(Default)]
struct IdlePoll {
    window: Window,
    /// What this thread watches, handed to `poll(2)` as it is.
    fds: Vec<libc::pollfd>,
    /// The registration id of each entry of `fds` (same index).
    ids: Vec<u64>,
    /// Connections on this thread whose completions no watched fd shows.
    unwatchable: usize,
    next_id: u64,
    /// When the current idle period began (set before parking, taken after).
    idle_since: Option<Instant>,
    counts: Unflushed,
}

/// Turns idle polling on for this thread with a cap of `max` (zero: off). Called once
/// when the thread starts.
pub fn enable(max: Duration) {
    STATE.with(|s| s.borrow_mut().window.max = max);
}

/// While alive, the thread that made it checks `fd` for input while idle polling. Dropped
/// on the same thread (a connection's future never leaves its thread).
pub struct Watch {
    id: u64,
}

/// While alive, the thread that made it does not poll (a connection whose completions
/// arrive through a channel, not an fd). Dropped on the same thread.
pub struct Unwatchable(());

/// Stops this thread's idle polling while the returned guard lives.
pub fn unwatchable() -> Unwatchable {
    STATE.with(|s| s.borrow_mut().unwatchable += 1);
    Unwatchable(())
}

impl Drop for Unwatchable {
    fn drop(&mut self) {
        let _ = STATE.try_with(|s| {
            let mut s = s.borrow_mut();
            s.unwatchable = s.unwatchable.saturating_sub(1);
        });
    }
}

/// Watches `fd` for input on this thread (see [`Watch`]).
pub fn watch(fd: RawFd) -> Watch {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let id = s.next_id;
        s.next_id += 1;
        s.ids.push(id);
        s.fds.push(libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        Watch { id }
    })
}

impl Drop for Watch {
    fn drop(&mut self) {
        let id = self.id;
        // try_with: a thread-local already torn down (thread exit) has nothing to remove.
        let _ = STATE.try_with(|s| {
            let mut s = s.borrow_mut();
            if let Some(at) = s.ids.iter().position(|&i| i == id) {
                s.ids.swap_remove(at);
                s.fds.swap_remove(at);
            }
        });
    }
}

/// The runtime's `on_thread_park` hook: polls the watched fds for up to the window, and
/// returns as soon as one has input (the runtime then finds it without sleeping).
pub fn before_park() {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let start = Instant::now();
        s.idle_since = Some(start);
        let window = s.window.now;
        if window.is_zero() || s.fds.is_empty() || s.unwatchable > 0 {
            return;
        }
        let hit = poll_until(&mut s.fds, start, window);
        let polled = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if hit {
            s.counts.hits += 1;
        } else {
            s.counts.misses += 1;
        }
        s.counts.nanos = s.counts.nanos.saturating_add(polled);
    });
}

/// Polls `fds` without blocking until one is ready or `window` has passed since `start`,
/// yielding the CPU between checks. True when one was ready.
fn poll_until(fds: &mut [libc::pollfd], start: Instant, window: Duration) -> bool {
    while start.elapsed() < window {
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds; timeout 0 never blocks.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
        if ready != 0 {
            // Input, a closed fd or an error: the runtime's own poll takes it from here.
            return true;
        }
        std::thread::yield_now();
    }
    false
}

/// The runtime's `on_thread_unpark` hook: adapts the window to how long the thread was
/// idle, and now and then adds this thread's counts to the totals.
pub fn after_unpark() {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let now = Instant::now();
        if let Some(since) = s.idle_since.take() {
            s.window.after_idle(now.duration_since(since));
        }
        s.counts.flush_if_due(now);
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn short_gaps_grow_the_window_to_the_cap() {
        let mut w = Window {
            max: us(50),
            now: Duration::ZERO,
        };
        w.after_idle(us(30));
        assert_eq!(w.now, GROW_START);
        w.after_idle(us(30));
        assert_eq!(w.now, us(20));
        w.after_idle(us(30));
        assert_eq!(w.now, us(40));
        w.after_idle(us(45));
        assert_eq!(w.now, us(50));
        w.after_idle(us(49));
        assert_eq!(w.now, us(50), "a hit keeps the window");
    }

    #[test]
    fn long_gaps_shrink_the_window_to_nothing() {
        let mut w = Window {
            max: us(50),
            now: us(40),
        };
        w.after_idle(Duration::from_secs(5));
        assert_eq!(w.now, us(20));
        w.after_idle(Duration::from_secs(5));
        assert_eq!(w.now, us(10));
        w.after_idle(Duration::from_secs(5));
        assert_eq!(w.now, us(5));
        w.after_idle(Duration::from_secs(5));
        assert_eq!(w.now, Duration::ZERO);
        w.after_idle(Duration::from_secs(5));
        assert_eq!(w.now, Duration::ZERO);
    }

    #[test]
    fn a_zero_cap_never_opens_a_window() {
        let mut w = Window::default();
        for gap in [us(1), us(30), Duration::from_secs(5)] {
            w.after_idle(gap);
            assert_eq!(w.now, Duration::ZERO);
        }
    }

    #[test]
    fn polling_returns_at_once_when_a_watched_fd_has_input() {
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        use std::io::Write;
        use std::os::fd::AsRawFd;
        enable(Duration::from_secs(10));
        STATE.with(|s| s.borrow_mut().window.now = Duration::from_secs(10));
        let _w = watch(b.as_raw_fd());
        a.write_all(b"x").unwrap();
        let start = Instant::now();
        before_park();
        assert!(start.elapsed() < Duration::from_secs(5));
        after_unpark();
    }

    #[test]
    fn an_unwatchable_connection_stops_polling_on_its_thread() {
        let (_a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        use std::os::fd::AsRawFd;
        enable(Duration::from_secs(10));
        STATE.with(|s| s.borrow_mut().window.now = Duration::from_secs(10));
        let _w = watch(b.as_raw_fd());
        let guard = unwatchable();
        let start = Instant::now();
        before_park();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "polled although unwatchable"
        );
        drop(guard);
        assert_eq!(STATE.with(|s| s.borrow().unwatchable), 0);
    }

    #[test]
    fn polling_gives_up_after_the_window() {
        let (_a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        use std::os::fd::AsRawFd;
        let mut fds = [libc::pollfd {
            fd: b.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let start = Instant::now();
        poll_until(&mut fds, start, Duration::from_millis(2));
        assert!(start.elapsed() >= Duration::from_millis(2));
    }

    #[test]
    fn hits_misses_and_polling_time_reach_the_totals() {
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let before = totals();
        enable(Duration::from_millis(1));
        STATE.with(|s| s.borrow_mut().window.now = Duration::from_millis(1));
        let _w = watch(b.as_raw_fd());
        before_park(); // nothing to read: the whole window, a miss
        after_unpark(); // the first flush is due at once
        a.write_all(b"x").unwrap();
        STATE.with(|s| s.borrow_mut().window.now = Duration::from_millis(1));
        before_park(); // input: a hit
        STATE.with(|s| s.borrow_mut().counts.since = None); // make the next flush due
        after_unpark();
        let after = totals();
        // Other tests run in parallel threads and may add to the totals too.
        assert!(after.misses > before.misses);
        assert!(after.hits > before.hits);
        assert!(after.seconds - before.seconds >= 0.001);
    }

    #[test]
    fn dropping_a_watch_stops_watching_its_fd() {
        let w1 = watch(3);
        let w2 = watch(4);
        drop(w1);
        let fds: Vec<RawFd> = STATE.with(|s| s.borrow().fds.iter().map(|p| p.fd).collect());
        assert_eq!(fds, vec![4]);
        drop(w2);
    }
}
