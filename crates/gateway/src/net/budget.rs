//! The gateway-wide command data budget (`[limits] max_command_data`): bytes of command
//! data (write payload being assembled or executed, read buffers) all connections together
//! hold, against a limit. It bounds the gateway's memory with many sessions at a deep
//! queue (32 sessions x QD32 x 128 KiB would be 128 MiB of data alone).
//!
//! A connection uses it as the gate of its protocol intake
//! (`iscsi::Connection::set_intake_open`): while the budget is used up, a connection that
//! has commands running holds new ones (and solicits no write data) but keeps reading, so
//! NOP-Outs, task management and logouts are still answered. A connection with nothing
//! running is always admitted, so every connection makes progress and one command larger
//! than the budget runs alone.
//!
//! Connections run on several threads (`net::workers`): a connection whose intake waits is
//! woken through [`DataBudget::freed`] when a release, on any thread, brings the total
//! back below the limit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

/// Shared by all connections (one per server, in `ServerContext`).
pub struct DataBudget {
    in_use: AtomicUsize,
    limit: usize,
    freed: Notify,
}

impl DataBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(DataBudget {
            in_use: AtomicUsize::new(0),
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            freed: Notify::new(),
        })
    }

    /// Takes `bytes` from the budget (never refused: the gate decides beforehand) until the
    /// reservation is dropped.
    pub fn reserve(self: &Arc<Self>, bytes: usize) -> DataReservation {
        self.in_use.fetch_add(bytes, Ordering::Relaxed);
        DataReservation {
            budget: self.clone(),
            bytes,
        }
    }

    /// Whether a connection with `running` commands may take new ones: always with none
    /// running, otherwise while the budget is not used up.
    pub fn admits(&self, running: usize) -> bool {
        running == 0 || self.in_use.load(Ordering::Relaxed) < self.limit
    }

    /// Completes after the next release that brings the total below the limit. Create it
    /// *before* checking [`DataBudget::admits`]: a release in between then still wakes it.
    pub fn freed(&self) -> Notified<'_> {
        self.freed.notified()
    }

    /// Bytes held now (tests, metrics).
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    fn release(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let before = self.in_use.fetch_sub(bytes, Ordering::Relaxed);
        // Only a release can cross the limit downwards, and each crossing is seen by exactly
        // the release that made it.
        if before >= self.limit && before.saturating_sub(bytes) < self.limit {
            self.freed.notify_waiters();
        }
    }
}

/// A share of the [`DataBudget`], given back when dropped.
pub struct DataReservation {
    budget: Arc<DataBudget>,
    bytes: usize,
}

impl DataReservation {
    /// Changes the share to `bytes` (e.g. the write data a connection is assembling).
    pub fn set(&mut self, bytes: usize) {
        if bytes > self.bytes {
            self.budget
                .in_use
                .fetch_add(bytes - self.bytes, Ordering::Relaxed);
        } else {
            self.budget.release(self.bytes - bytes);
        }
        self.bytes = bytes;
    }
}

impl Drop for DataReservation {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_connection_with_nothing_running_is_always_admitted() {
        let b = DataBudget::new(1000);
        let r = b.reserve(5000);
        assert!(b.admits(0));
        assert!(!b.admits(1));
        drop(r);
        assert!(b.admits(1));
        assert_eq!(b.in_use(), 0);
    }

    #[test]
    fn set_moves_the_share_both_ways() {
        let b = DataBudget::new(1000);
        let mut r = b.reserve(0);
        r.set(1500);
        assert!(!b.admits(1));
        r.set(200);
        assert!(b.admits(1));
        assert_eq!(b.in_use(), 200);
        drop(r);
        assert_eq!(b.in_use(), 0);
    }

    #[tokio::test]
    async fn a_release_on_another_thread_wakes_a_waiting_connection() {
        let b = DataBudget::new(1000);
        let r = b.reserve(1000);
        let freed = b.freed();
        assert!(!b.admits(1));
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(r);
        });
        tokio::time::timeout(Duration::from_secs(5), freed)
            .await
            .expect("woken by the release");
        assert!(b.admits(1));
        t.join().unwrap();
    }

    #[tokio::test]
    async fn a_release_between_check_and_wait_is_not_lost() {
        let b = DataBudget::new(1000);
        let r = b.reserve(2000);
        let freed = b.freed();
        drop(r); // before the future is first polled
        tokio::time::timeout(Duration::from_secs(1), freed)
            .await
            .expect("the notification was kept");
    }

    #[tokio::test]
    async fn releases_that_stay_above_the_limit_wake_nobody() {
        let b = DataBudget::new(1000);
        let _a = b.reserve(1500);
        let r = b.reserve(300);
        let freed = b.freed();
        drop(r);
        assert!(tokio::time::timeout(Duration::from_millis(30), freed)
            .await
            .is_err());
    }
}
