//! The outgoing backlog budget of one connection (`[limits] max_outgoing_backlog`): read
//! data a command will produce is reserved before the command runs and released only once
//! its response was handed to the socket. A peer that stops reading its responses therefore
//! stalls its own commands at the budget instead of making the gateway buffer without
//! bound (its commands beyond the CmdSN window are not taken at all), and the write timeout
//! then drops it. The socket is still read while the budget is used up, so NOP-Out answers
//! and task management get through while a slow backend holds the budget.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Accounting unit: KiB, so a 1 GiB budget fits the semaphore's u32 acquisitions.
const UNIT: u64 = 1024;

/// Shared by a connection and its command tasks.
#[derive(Clone)]
pub struct Backlog {
    sem: Arc<Semaphore>,
    total: u32,
}

/// A reservation; dropping it gives the bytes back.
pub type Reservation = Option<OwnedSemaphorePermit>;

impl Backlog {
    /// A budget of `bytes` (at least one unit).
    pub fn new(bytes: u64) -> Self {
        let total = u32::try_from(bytes / UNIT).unwrap_or(u32::MAX).max(1);
        Backlog {
            sem: Arc::new(Semaphore::new(total as usize)),
            total,
        }
    }

    /// Units a command expecting `data_in_len` bytes of read data reserves: rounded up, and
    /// never more than the whole budget, so one large command can always run alone.
    fn units(&self, data_in_len: u32) -> u32 {
        let units = u64::from(data_in_len).div_ceil(UNIT);
        u32::try_from(units).unwrap_or(u32::MAX).min(self.total)
    }

    /// Waits until `data_in_len` bytes of read data fit in the budget and reserves them.
    /// Commands without read data reserve nothing and never wait.
    pub async fn reserve(&self, data_in_len: u32) -> Reservation {
        let n = self.units(data_in_len);
        if n == 0 {
            return None;
        }
        // The semaphore is never closed, so acquisition only fails if it were.
        self.sem.clone().acquire_many_owned(n).await.ok()
    }

    /// True while the budget is used up.
    #[cfg(test)]
    fn is_full(&self) -> bool {
        self.sem.available_permits() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn reservations_wait_at_the_budget_and_resume_when_released() {
        let b = Backlog::new(8 * 1024);
        let r1 = b.reserve(4096).await;
        let r2 = b.reserve(4000).await; // rounds up to 4 KiB
        assert!(b.is_full());
        // No read data: never waits, even with the budget used up.
        assert!(b.reserve(0).await.is_none());
        let waiting = tokio::time::timeout(Duration::from_millis(50), b.reserve(1)).await;
        assert!(
            waiting.is_err(),
            "a reservation beyond the budget must wait"
        );
        drop(r1);
        assert!(!b.is_full());
        let r3 = tokio::time::timeout(Duration::from_secs(1), b.reserve(4096))
            .await
            .unwrap();
        assert!(r3.is_some());
        drop((r2, r3));
    }

    #[tokio::test]
    async fn a_command_larger_than_the_budget_runs_alone() {
        let b = Backlog::new(1 << 20);
        let r = tokio::time::timeout(Duration::from_secs(1), b.reserve(8 << 20))
            .await
            .unwrap();
        assert!(r.is_some());
        assert!(b.is_full());
        drop(r);
        assert!(!b.is_full());
    }
}
