//! Buffered writes copied into the page cache on the serving thread, with a breaker.
//!
//! Why: ext4 files and block devices refuse non-blocking buffered writes (`RWF_NOWAIT`
//! answers EOPNOTSUPP), so io_uring hands every buffered write to an io-wq worker: a wake-up
//! of that worker and a wake-up of the connection thread when it is done, for what is
//! mostly a copy of a few KiB into the page cache. Done with `pwrite` on the connection's
//! own thread it costs the copy only (benches/README, "Buffered writes on the serving
//! thread": QD1 4 KiB p50 91-96 µs against 114-142 µs through io-wq).
//!
//! The risk is a write that blocks: dirty-page throttling sleeps up to 200 ms, a journal
//! may make the writer wait, and the thread serves other connections meanwhile. So only
//! writes that cannot need a read first (whole pages) and are small enough for the copy to
//! be short go inline, and a breaker watches each one: a write that took longer than
//! [`STALL`] sends this device's buffered writes back through io_uring for a pause that
//! doubles with each stall in a row ([`FIRST_PAUSE`] up to [`MAX_PAUSE`]) and starts over
//! after [`QUIET`] without one. Under sustained throttling that is at most one blocked
//! write per minute on any thread.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Largest write done inline: the copy stays in the tens of microseconds.
pub(crate) const INLINE_MAX: usize = 128 * 1024;
/// An inline write that took longer than this blocked (throttled or waited on a journal).
pub(crate) const STALL: Duration = Duration::from_millis(2);
/// Pause after a first stall.
pub(crate) const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// Longest pause.
pub(crate) const MAX_PAUSE: Duration = Duration::from_secs(60);
/// Without a stall for this long, the next one counts as a first one again.
pub(crate) const QUIET: Duration = Duration::from_secs(60);
/// How often one write is retried after EINTR before failing.
const MAX_INTERRUPTS: u32 = 32;

/// Pauses since the process started, all devices (the `iscsi_gateway_buffered_write_pauses_total`
/// metric). Touched only when a write stalled, never on the fast path.
static PAUSES: AtomicU64 = AtomicU64::new(0);

/// How many times a blocked inline write has paused inline writes, since start.
pub fn pauses_total() -> u64 {
    PAUSES.load(Ordering::Relaxed)
}

fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(v).ok().filter(|&p| p > 0).unwrap_or(4096)
    })
}

/// The breaker of one device, shared by every thread writing to it.
#[derive(Debug)]
pub(crate) struct InlineWrites {
    epoch: Instant,
    /// Milliseconds since `epoch` before which writes go through io_uring.
    paused_until: AtomicU64,
    /// Stalls in a row (each doubles the pause).
    stalls: AtomicU32,
    /// Milliseconds since `epoch` of the last stall.
    last_stall: AtomicU64,
}

/// What [`InlineWrites::record`] decided about a write that stalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Paused {
    pub took: Duration,
    pub pause: Duration,
}

impl InlineWrites {
    pub(crate) fn new() -> Self {
        InlineWrites {
            epoch: Instant::now(),
            paused_until: AtomicU64::new(0),
            stalls: AtomicU32::new(0),
            last_stall: AtomicU64::new(0),
        }
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether a write of `len` bytes at `offset` may be done inline at `now`.
    pub(crate) fn admits(&self, offset: u64, len: usize, now: Instant) -> bool {
        let page = page_size();
        len > 0
            && len <= INLINE_MAX
            && len.is_multiple_of(page)
            && offset.is_multiple_of(page as u64)
            && self.millis(now) >= self.paused_until.load(Ordering::Relaxed)
    }

    /// Records how long an inline write that ended at `now` took; a stall pauses inline
    /// writes and is returned (for the log).
    pub(crate) fn record(&self, took: Duration, now: Instant) -> Option<Paused> {
        if took <= STALL {
            return None;
        }
        let now_ms = self.millis(now);
        let last = self.last_stall.swap(now_ms, Ordering::Relaxed);
        let quiet = u64::try_from(QUIET.as_millis()).unwrap_or(u64::MAX);
        let in_a_row = if last != 0 && now_ms.saturating_sub(last) < quiet {
            self.stalls
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1)
        } else {
            self.stalls.store(1, Ordering::Relaxed);
            1
        };
        let pause = FIRST_PAUSE
            .saturating_mul(1u32 << in_a_row.saturating_sub(1).min(16))
            .min(MAX_PAUSE);
        let until = now_ms.saturating_add(u64::try_from(pause.as_millis()).unwrap_or(u64::MAX));
        self.paused_until.fetch_max(until, Ordering::Relaxed);
        PAUSES.fetch_add(1, Ordering::Relaxed);
        Some(Paused { took, pause })
    }
}

/// Writes all of `data` at `offset` with `pwrite` on this thread.
pub(crate) fn pwrite_all(fd: RawFd, mut offset: u64, mut data: &[u8]) -> io::Result<()> {
    let mut interrupts = 0;
    while !data.is_empty() {
        let off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: `data` is a live slice of `data.len()` bytes for the whole call.
        let n = unsafe { libc::pwrite(fd, data.as_ptr().cast(), data.len(), off) };
        match usize::try_from(n) {
            Ok(0) => return Err(io::Error::from_raw_os_error(libc::ENOSPC)),
            Ok(n) => {
                let n = n.min(data.len());
                data = &data[n..];
                offset += n as u64;
            }
            Err(_) => {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted && interrupts < MAX_INTERRUPTS {
                    interrupts += 1;
                    continue;
                }
                return Err(err);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn admits_whole_pages_up_to_the_limit() {
        let w = InlineWrites::new();
        let now = Instant::now();
        let page = page_size();
        assert!(w.admits(0, page, now));
        assert!(w.admits(page as u64 * 3, INLINE_MAX, now));
        assert!(!w.admits(0, 0, now));
        assert!(
            !w.admits(0, 512, now),
            "a partial page may need a read first"
        );
        assert!(!w.admits(512, page, now));
        assert!(!w.admits(0, INLINE_MAX + page, now));
    }

    #[test]
    fn a_stall_pauses_and_the_pause_doubles_then_resets() {
        let w = InlineWrites::new();
        let t0 = Instant::now() + Duration::from_secs(1);
        assert_eq!(w.record(Duration::from_micros(50), t0), None);
        assert!(w.admits(0, 4096, t0));

        let before = pauses_total();
        let p = w.record(Duration::from_millis(150), t0).expect("a stall");
        assert!(pauses_total() > before, "the process-wide count grows");
        assert_eq!(p.pause, FIRST_PAUSE);
        assert!(!w.admits(0, 4096, t0 + Duration::from_millis(50)));
        assert!(w.admits(0, 4096, t0 + FIRST_PAUSE));

        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            w.record(Duration::from_millis(3), t1).map(|p| p.pause),
            Some(FIRST_PAUSE * 2)
        );
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(
            w.record(Duration::from_millis(3), t2).map(|p| p.pause),
            Some(FIRST_PAUSE * 4)
        );
        assert!(!w.admits(0, 4096, t2 + FIRST_PAUSE * 3));
        assert!(w.admits(0, 4096, t2 + FIRST_PAUSE * 4));

        // Many in a row: capped.
        let mut t = t2;
        let mut last = Duration::ZERO;
        for _ in 0..40 {
            t += Duration::from_secs(1);
            last = w
                .record(Duration::from_millis(3), t)
                .map(|p| p.pause)
                .unwrap_or_default();
        }
        assert_eq!(last, MAX_PAUSE);

        // A quiet minute later a stall counts as the first again.
        let later = t + QUIET + Duration::from_secs(1);
        assert_eq!(
            w.record(Duration::from_millis(3), later).map(|p| p.pause),
            Some(FIRST_PAUSE)
        );
    }

    #[test]
    fn pwrite_all_writes_and_reports_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let f = std::fs::File::create(&path).expect("create");
        pwrite_all(f.as_raw_fd(), 8192, &[7u8; 4096]).expect("write");
        let got = std::fs::read(&path).expect("read");
        assert_eq!(got.len(), 12288);
        assert!(got[8192..].iter().all(|&b| b == 7) && got[..8192].iter().all(|&b| b == 0));
        drop(f);
        let ro = std::fs::File::open(&path).expect("open");
        let err = pwrite_all(ro.as_raw_fd(), 0, &[1u8; 4096]).expect_err("read-only fd");
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    }
}
