//! A LUN's I/O gate: every command doing I/O holds it shared; a DRBD stop takes it
//! exclusively to wait until the I/O in flight has finished. (COMPARE AND WRITE took it
//! exclusively too; it now keeps only overlapping I/O away, `rmw_gate.rs`.)
//!
//! Shared holders are one atomic counter, so taking and leaving the gate costs one atomic
//! add each and no lock: a `tokio::sync::RwLock` here took its semaphore's waiter mutex on
//! every release, a lock all connections of the LUN shared per command. Waiting happens
//! only around exclusive use: an exclusive taker sets [`EXCLUSIVE`] and sleeps until the
//! count reaches zero; shared takers that find the bit set step back and sleep until it
//! clears. New commands therefore wait behind a pending exclusive taker (a stop drains
//! rather than racing new I/O). Sleepers use a `Notify`, registered before the condition
//! is checked again, so no wake-up is lost; it is only touched while the bit is set.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Mutex, MutexGuard, Notify};

/// Set while an exclusive holder waits or holds the gate; the low bits count shared holders.
const EXCLUSIVE: u64 = 1 << 63;

/// See the module docs.
#[derive(Debug, Default)]
pub struct DrainGate {
    state: AtomicU64,
    /// One exclusive taker at a time.
    exclusive: Mutex<()>,
    /// Wakes the exclusive taker when the last shared holder leaves, and shared takers
    /// when the exclusive holder leaves.
    changed: Notify,
}

/// Shared use of the gate, until dropped.
#[derive(Debug)]
pub struct SharedGuard<'a>(&'a DrainGate);

/// Exclusive use of the gate, until dropped.
#[derive(Debug)]
pub struct ExclusiveGuard<'a> {
    gate: &'a DrainGate,
    _turn: MutexGuard<'a, ()>,
}

impl DrainGate {
    /// Enters shared; waits while an exclusive taker is pending or holds the gate.
    pub async fn shared(&self) -> SharedGuard<'_> {
        loop {
            if self.state.fetch_add(1, Ordering::Acquire) & EXCLUSIVE == 0 {
                return SharedGuard(self);
            }
            self.leave_shared();
            let cleared = self.changed.notified();
            tokio::pin!(cleared);
            cleared.as_mut().enable();
            if self.state.load(Ordering::Acquire) & EXCLUSIVE != 0 {
                cleared.await;
            }
        }
    }

    /// Takes the gate alone: new shared takers wait from now on, and this returns once
    /// every shared holder has left. Dropping the future before then gives the gate back.
    pub async fn exclusive(&self) -> ExclusiveGuard<'_> {
        let turn = self.exclusive.lock().await;
        self.state.fetch_or(EXCLUSIVE, Ordering::AcqRel);
        // Until the guard exists, this clears the bit again if the wait is abandoned.
        let pending = ExclusiveGuard {
            gate: self,
            _turn: turn,
        };
        loop {
            let drained = self.changed.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.state.load(Ordering::Acquire) & !EXCLUSIVE == 0 {
                return pending;
            }
            drained.await;
        }
    }

    /// Shared holders now (for tests and diagnostics).
    pub fn shared_holders(&self) -> u64 {
        self.state.load(Ordering::Relaxed) & !EXCLUSIVE
    }

    fn leave_shared(&self) {
        let before = self.state.fetch_sub(1, Ordering::Release);
        if before == EXCLUSIVE | 1 {
            // The last one out while an exclusive taker waits.
            self.changed.notify_waiters();
        }
    }
}

impl Drop for SharedGuard<'_> {
    fn drop(&mut self) {
        self.0.leave_shared();
    }
}

impl Drop for ExclusiveGuard<'_> {
    fn drop(&mut self) {
        self.gate.state.fetch_and(!EXCLUSIVE, Ordering::Release);
        self.gate.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn shared_holders_count_and_leave() {
        let g = DrainGate::default();
        let a = g.shared().await;
        let b = g.shared().await;
        assert_eq!(g.shared_holders(), 2);
        drop(a);
        drop(b);
        assert_eq!(g.shared_holders(), 0);
        drop(g.exclusive().await);
        let _c = g.shared().await;
        assert_eq!(g.shared_holders(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exclusive_waits_for_shared_holders_and_holds_new_ones_back() {
        let g = Arc::new(DrainGate::default());
        let held = g.shared().await;
        let g2 = g.clone();
        let (took_tx, mut took_rx) = tokio::sync::oneshot::channel();
        let taker = tokio::spawn(async move {
            let x = g2.exclusive().await;
            let _ = took_tx.send(());
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(x);
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            took_rx.try_recv().is_err(),
            "exclusive while a shared holder is in"
        );
        // A new shared taker waits behind the pending exclusive one.
        let g3 = g.clone();
        let late = tokio::spawn(async move {
            let _s = g3.shared().await;
            std::time::Instant::now()
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !late.is_finished(),
            "a shared taker passed a pending exclusive one"
        );
        drop(held);
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(5), &mut took_rx)
            .await
            .expect("exclusive never came")
            .expect("sent");
        let entered = tokio::time::timeout(Duration::from_secs(5), late)
            .await
            .expect("shared never came back")
            .expect("task");
        assert!(
            entered.duration_since(started) >= Duration::from_millis(80),
            "a shared taker entered while exclusive was held"
        );
        taker.await.expect("task");
        assert_eq!(g.shared_holders(), 0);
    }

    #[tokio::test]
    async fn an_abandoned_exclusive_wait_gives_the_gate_back() {
        let g = DrainGate::default();
        let held = g.shared().await;
        let timed_out = tokio::time::timeout(Duration::from_millis(20), g.exclusive()).await;
        assert!(timed_out.is_err());
        // Not closed any more: shared takers get in, and exclusive works once they leave.
        let again = tokio::time::timeout(Duration::from_secs(1), g.shared())
            .await
            .expect("gate left closed");
        drop(again);
        drop(held);
        tokio::time::timeout(Duration::from_secs(1), g.exclusive())
            .await
            .expect("exclusive after the holders left");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_takers_neither_overlap_nor_hang() {
        let g = Arc::new(DrainGate::default());
        let inside = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for i in 0..8u64 {
            let (g, inside) = (g.clone(), inside.clone());
            tasks.push(tokio::spawn(async move {
                for n in 0..500u64 {
                    if (n + i) % 50 == 0 {
                        let _x = g.exclusive().await;
                        assert_eq!(
                            inside.swap(u64::MAX, Ordering::SeqCst),
                            0,
                            "exclusive overlapped"
                        );
                        tokio::task::yield_now().await;
                        inside.store(0, Ordering::SeqCst);
                    } else {
                        let _s = g.shared().await;
                        let before = inside.fetch_add(1, Ordering::SeqCst);
                        assert_ne!(before, u64::MAX, "shared inside an exclusive hold");
                        tokio::task::yield_now().await;
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            }));
        }
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(20), t)
                .await
                .expect("a taker hung")
                .expect("task panicked");
        }
        assert_eq!(g.shared_holders(), 0);
    }
}
