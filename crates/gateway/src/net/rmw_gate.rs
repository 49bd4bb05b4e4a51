//! Read-modify-write commands against the I/O that overlaps them.
//!
//! COMPARE AND WRITE and ORWRITE read blocks, decide what to write from them, and write
//! them; no other command may change those blocks in between. VMware-style initiators
//! build their on-disk locks and heartbeats on COMPARE AND WRITE (ATS). Such a command
//! used to take the LUN's [`DrainGate`](super::drain_gate::DrainGate) alone: it waited
//! for every I/O in flight on the LUN and held every new one back until it had finished,
//! so each heartbeat stalled all initiators' I/O on the LUN for about three I/O times.
//! This gate keeps out only the I/O whose span (`scsi::Task::span`) overlaps its own:
//!
//! * A read-modify-write first waits until no overlapping one is registered, then
//!   registers its span, then waits out a *grace period*: every command that entered
//!   before the registration, which may not have seen it. It does its I/O after that and
//!   unregisters when dropped.
//! * A command entering while any span is registered checks the registry: if it overlaps,
//!   it steps back and waits until a registration ends; otherwise it goes on. With nothing
//!   registered (almost always) it does not look at the registry at all.
//! * The grace period is epoch-based, as in the kernel's SRCU: a command counts itself in
//!   one of two cohorts, by the parity of the epoch it entered in, and re-reads the epoch
//!   afterwards, retrying if it moved, so it is always counted in the cohort of the epoch
//!   it saw. A read-modify-write moves the epoch on (after registering) and waits until
//!   the old cohort is empty. Grace periods run one at a time.
//!
//! Why that is enough: all operations on the epoch, the cohorts and the registration count
//! are sequentially consistent. A command that did not see a registration read the count
//! before the registration, so it had counted itself before, in the cohort of an epoch no
//! later than the one the registering command moves on from. If it is that epoch, the
//! grace period waits for it; if it is an older one, the grace period that moved on from
//! that epoch waited for it, and that one finished before this one started.
//!
//! Cost for a command: one atomic add and three loads on entry, one atomic subtraction and
//! a load on exit; about 40 ns uncontended (`benches/micro`, `lun-gates`). The DRBD drain is still the `DrainGate`, which every command (these
//! included) holds shared.

use std::ops::Range;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;

use tokio::sync::Notify;

/// See the module docs.
#[derive(Debug, Default)]
pub struct RmwGate {
    /// Moved on by each grace period; its parity names the cohort new commands join.
    epoch: AtomicU64,
    /// Commands in flight, by the parity of the epoch they entered in.
    cohorts: [AtomicU64; 2],
    /// How many spans are registered: lets commands skip the registry while it is empty.
    registered: AtomicUsize,
    /// The spans of the read-modify-writes registered now; they never overlap.
    registry: Mutex<Vec<Range<u64>>>,
    /// A registration ended.
    released: Notify,
    /// A cohort other than the current one became empty.
    drained: Notify,
    /// One grace period at a time.
    grace: tokio::sync::Mutex<()>,
}

fn overlaps(registered: &[Range<u64>], span: &Range<u64>) -> bool {
    registered
        .iter()
        .any(|s| s.start < span.end && span.start < s.end)
}

/// What a command holds while it does its I/O; dropping it lets waiters on.
#[derive(Debug)]
#[must_use = "the gate is left when this is dropped"]
pub struct RmwGuard<'a>(Held<'a>);

#[derive(Debug)]
enum Held<'a> {
    /// Touches no logical block: not counted.
    Nothing,
    /// An ordinary command counted in this cohort.
    Cohort(&'a RmwGate, usize),
    /// A read-modify-write that registered this span.
    Span(&'a RmwGate, Range<u64>),
}

impl RmwGate {
    /// Enters for a command that will read or write `span` (`None`: no logical block), as
    /// a read-modify-write when `rmw`. Returns once the command may do its I/O; cancel
    /// safe (dropping the future leaves nothing behind).
    pub async fn enter(&self, span: Option<Range<u64>>, rmw: bool) -> RmwGuard<'_> {
        match span {
            None => RmwGuard(Held::Nothing),
            Some(span) if rmw => self.read_modify_write(span).await,
            Some(span) => self.ordinary(&span).await,
        }
    }

    async fn ordinary(&self, span: &Range<u64>) -> RmwGuard<'_> {
        loop {
            let cohort = self.join();
            if self.registered.load(SeqCst) == 0 {
                return RmwGuard(Held::Cohort(self, cohort));
            }
            let mut released = pin!(self.released.notified());
            released.as_mut().enable();
            if !overlaps(&self.lock_registry(), span) {
                return RmwGuard(Held::Cohort(self, cohort));
            }
            // Not counted while waiting: the read-modify-write it waits for may be waiting
            // for this cohort to empty.
            self.leave(cohort);
            released.await;
        }
    }

    async fn read_modify_write(&self, span: Range<u64>) -> RmwGuard<'_> {
        let registered = loop {
            let mut released = pin!(self.released.notified());
            released.as_mut().enable();
            if self.try_register(&span) {
                break RmwGuard(Held::Span(self, span));
            }
            released.await;
        };
        let _turn = self.grace.lock().await;
        let old = cohort_of(self.epoch.fetch_add(1, SeqCst));
        loop {
            let mut drained = pin!(self.drained.notified());
            drained.as_mut().enable();
            if self.cohorts[old].load(SeqCst) == 0 {
                return registered;
            }
            drained.await;
        }
    }

    /// Registers `span` unless a registered one overlaps it; returns whether it did.
    fn try_register(&self, span: &Range<u64>) -> bool {
        let mut registry = self.lock_registry();
        if overlaps(&registry, span) {
            return false;
        }
        registry.push(span.clone());
        self.registered.fetch_add(1, SeqCst);
        true
    }

    fn unregister(&self, span: &Range<u64>) {
        {
            let mut registry = self.lock_registry();
            // Registered spans never overlap, so equal ones are empty and interchangeable.
            if let Some(at) = registry.iter().position(|s| s == span) {
                registry.swap_remove(at);
                self.registered.fetch_sub(1, SeqCst);
            }
        }
        self.released.notify_waiters();
    }

    /// Counts a command in the cohort of the current epoch; returns that cohort.
    fn join(&self) -> usize {
        loop {
            let epoch = self.epoch.load(SeqCst);
            let cohort = cohort_of(epoch);
            self.cohorts[cohort].fetch_add(1, SeqCst);
            if self.epoch.load(SeqCst) == epoch {
                return cohort;
            }
            self.leave(cohort);
        }
    }

    fn leave(&self, cohort: usize) {
        let before = self.cohorts[cohort].fetch_sub(1, SeqCst);
        if before == 1 && cohort_of(self.epoch.load(SeqCst)) != cohort {
            // The last one out of an old cohort: a grace period may be waiting for it.
            self.drained.notify_waiters();
        }
    }

    fn lock_registry(&self) -> std::sync::MutexGuard<'_, Vec<Range<u64>>> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Commands counted now, in both cohorts.
    #[cfg(test)]
    pub(crate) fn counted(&self) -> u64 {
        self.cohorts.iter().map(|c| c.load(SeqCst)).sum()
    }
}

fn cohort_of(epoch: u64) -> usize {
    (epoch & 1) as usize
}

impl Drop for RmwGuard<'_> {
    fn drop(&mut self) {
        match &self.0 {
            Held::Nothing => {}
            Held::Cohort(gate, cohort) => gate.leave(*cohort),
            Held::Span(gate, span) => gate.unregister(span),
        }
    }
}

#[cfg(test)]
mod tests;
