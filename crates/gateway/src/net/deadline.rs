//! A connection's timer for the protocol's next deadline (`Connection::poll_timeout`), kept
//! across the connection's loop instead of made anew each time round.
//!
//! The deadline of a busy connection is the idle ping's: the last PDU received plus the
//! NOP-In interval, so it moves later with every PDU. A timer made anew each time round
//! was registered with tokio's time driver on every wake-up, and registering one can wake
//! the driver through its eventfd: one extra `write` per PDU on a stream of large writes
//! (strace of a 128 KiB seqwrite). This timer is moved only when the deadline comes
//! earlier than the one it is set for. When a later deadline replaced it, it fires early:
//! the protocol's `handle_timeout` checks the time itself, so an early call does nothing
//! but let the timer be set again, once per interval rather than once per PDU.

use std::pin::Pin;

use tokio::time::{Instant, Sleep};

/// The timer.
pub(crate) struct Deadline {
    sleep: Pin<Box<Sleep>>,
    /// What `sleep` is set for, while the protocol has a deadline.
    armed: Option<Instant>,
}

impl Deadline {
    /// A timer set for nothing.
    pub(crate) fn new() -> Deadline {
        Deadline {
            sleep: Box::pin(tokio::time::sleep_until(Instant::now())),
            armed: None,
        }
    }

    /// Follows the protocol's next deadline: none, or `next` if it is earlier than what
    /// the timer is set for (or the timer is set for nothing).
    pub(crate) fn follow(&mut self, next: Option<Instant>) {
        match (next, self.armed) {
            (None, _) => self.armed = None,
            (Some(next), Some(armed)) if armed <= next => {}
            (Some(next), _) => {
                self.sleep.as_mut().reset(next);
                self.armed = Some(next);
            }
        }
    }

    /// Waits until the timer fires (for ever while it is set for nothing), and then sets
    /// it for nothing: the caller runs the protocol's timers and follows its next deadline.
    pub(crate) async fn fired(&mut self) {
        if self.armed.is_none() {
            return std::future::pending().await;
        }
        (&mut self.sleep).await;
        self.armed = None;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Follows deadlines `secs` seconds after `start`, in order, waits for the timer and
    /// says how long after `start` it fired.
    async fn fires_after(d: &mut Deadline, start: Instant, secs: &[u64]) -> Duration {
        for &s in secs {
            d.follow(Some(start + Duration::from_secs(s)));
        }
        d.fired().await;
        Instant::now() - start
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_deadline_keeps_the_earlier_one_and_fires_there() {
        let start = Instant::now();
        let mut d = Deadline::new();
        let first = fires_after(&mut d, start, &[5, 9]).await;
        assert_eq!(first, Duration::from_secs(5));
        // Fired: the next deadline sets it again, even a later one.
        let second = fires_after(&mut d, start, &[9]).await;
        assert_eq!(second, Duration::from_secs(9));
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_moves_it() {
        let start = Instant::now();
        let fired = fires_after(&mut Deadline::new(), start, &[9, 2]).await;
        assert_eq!(fired, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn no_deadline_never_fires() {
        let mut d = Deadline::new();
        d.follow(Some(Instant::now() + Duration::from_secs(1)));
        d.follow(None);
        let waited = tokio::time::timeout(Duration::from_secs(3600), d.fired()).await;
        assert!(waited.is_err(), "a timer set for nothing fired");
    }
}
