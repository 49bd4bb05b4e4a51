//! The commands that access the medium started without the owner's lock: READ, WRITE,
//! WRITE AND VERIFY, VERIFY, PRE-FETCH, SYNCHRONIZE CACHE, WRITE SAME, UNMAP, COMPARE AND
//! WRITE and ORWRITE ([`Cmd::accesses_medium`](crate::opcodes::Cmd::accesses_medium)).
//!
//! A [`LogicalUnit`](crate::LogicalUnit) is mutable state behind its owner's lock (the
//! gateway keeps a target's units in one `Mutex`), and starting a command takes that lock.
//! For the commands that carry the data (and the flushes that make it durable) this would be
//! a lock shared by every connection of the target, taken per command. Their outcome depends
//! only on the capacity, block size and the configured limits, write protection, the write
//! cache setting, descriptor sense, whether a reservation lets the nexus read or write, and
//! whether the nexus has a unit attention pending. So:
//!
//! * The unit publishes the state common to all nexuses in a [`FastPath`] after every
//!   change, under its lock: a sequence lock (one writer, the lock holder; readers never
//!   wait). Any unit attention queued for any nexus, and any change to the reservations
//!   (RESERVE(6), registrations, the persistent reservation), moves the sequence on as well.
//! * A nexus holds an [`Admission`] per LUN: the sequence number at which a locked start
//!   found it with nothing pending ([`ScsiTarget::admit`](crate::ScsiTarget::admit)), and
//!   what the reservations at that number let it do: read, write, both or neither.
//! * [`FastPath::try_start`] starts one of those commands from the snapshot when the sequence
//!   still equals the admission and the admission lets the nexus run the command's class
//!   (reads, or writes and flushes): then the locked start would have done exactly the same
//!   (no unit attention to report, no reservation conflict), and it decodes through the same
//!   code (`Medium`). Otherwise it returns `None` and the caller takes the lock, which also
//!   answers RESERVATION CONFLICT.
//!
//! A command started from a snapshot that a concurrent change then replaces is ordered
//! before that change, as it would have been had it taken the lock first.

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use crate::cdb::Fields;
use crate::commands::sbc::{data_out_len, Medium};
use crate::lun::Fail;
use crate::opcodes::{lookup, CmdDesc, Lookup, PrClass};
use crate::response::Response;
use crate::task::Task;
use crate::types::{Command, TaskAttr};

/// Admission value that matches no sequence number (sequence numbers are even, and an
/// admission holds one shifted left by [`RIGHTS_BITS`]).
const NOT_ADMITTED: u64 = u64::MAX;

/// Low bits of an admission: what the reservations let the nexus do.
const RIGHTS_BITS: u32 = 2;
const MAY_READ: u64 = 1 << 0;
const MAY_WRITE: u64 = 1 << 1;

const DESCRIPTOR_SENSE: u32 = 1 << 0;
const SOFTWARE_WRITE_PROTECT: u32 = 1 << 1;
const CACHE_OFF: u32 = 1 << 2;

/// What the unit publishes: the parts of its state that change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub num_blocks: u64,
    pub descriptor_sense: bool,
    pub swp: bool,
    pub cache_off: bool,
    /// Unit attentions queued so far, any nexus (`Nexuses::queued`).
    pub attentions: u64,
}

impl Snapshot {
    fn flags(&self) -> u32 {
        let mut f = 0;
        for (on, bit) in [
            (self.descriptor_sense, DESCRIPTOR_SENSE),
            (self.swp, SOFTWARE_WRITE_PROTECT),
            (self.cache_off, CACHE_OFF),
        ] {
            if on {
                f |= bit;
            }
        }
        f
    }
}

/// One logical unit's state for lock-free data-path commands (see the module docs). Shared
/// (`Arc`) between the unit, which publishes, and the callers that start commands.
#[derive(Debug)]
pub struct FastPath {
    /// Even when stable; odd while the unit is publishing.
    seq: AtomicU64,
    num_blocks: AtomicU64,
    flags: AtomicU32,
    /// Fixed for the unit's life: the command table, and the medium's geometry and limits
    /// from its configuration (the snapshot supplies the rest).
    table: Vec<CmdDesc>,
    configured: Medium,
}

/// A nexus's admission to a unit's [`FastPath`]: the sequence number at which a locked
/// start found the nexus with no unit attention pending, and whether the reservations then
/// let it read and write. One per nexus and LUN, kept by the caller; starts out not
/// admitted.
#[derive(Debug)]
pub struct Admission(AtomicU64);

impl Default for Admission {
    fn default() -> Self {
        Admission(AtomicU64::new(NOT_ADMITTED))
    }
}

impl Admission {
    pub(crate) fn set(&self, seq: u64, may_read: bool, may_write: bool) {
        let rights = if may_read { MAY_READ } else { 0 } | if may_write { MAY_WRITE } else { 0 };
        self.0.store(seq << RIGHTS_BITS | rights, Ordering::Relaxed);
    }

    /// What the admission lets the nexus do at `seq`: `None` if it is not admitted there.
    fn rights_at(&self, seq: u64) -> Option<u64> {
        let v = self.0.load(Ordering::Relaxed);
        (v >> RIGHTS_BITS == seq).then_some(v & (MAY_READ | MAY_WRITE))
    }

    pub(crate) fn revoke(&self) {
        self.0.store(NOT_ADMITTED, Ordering::Relaxed);
    }
}

impl FastPath {
    pub(crate) fn new(table: Vec<CmdDesc>, configured: Medium) -> Self {
        FastPath {
            seq: AtomicU64::new(0),
            num_blocks: AtomicU64::new(0),
            // Nothing is admitted before the first publish anyway.
            flags: AtomicU32::new(0),
            table,
            configured,
        }
    }

    /// Publishes `now`. Called only by the unit, under its owner's lock (so there is one
    /// writer at a time), when its state differs from what it published last.
    pub(crate) fn publish(&self, now: Snapshot) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.num_blocks.store(now.num_blocks, Ordering::Relaxed);
        self.flags.store(now.flags(), Ordering::Relaxed);
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    /// The unit's command table (fixed for its life; the locked start uses it too).
    pub(crate) fn table(&self) -> &[CmdDesc] {
        &self.table
    }

    /// The sequence number now (even: only the publishing writer sees it odd, and it
    /// holds the lock the caller of this holds too).
    pub(crate) fn seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Starts `cmd` from the published state if it accesses the medium and `admission` is
    /// still current and lets the nexus run it; `None` means: take the lock and start it
    /// there.
    pub fn try_start(&self, admission: &Admission, cmd: &Command) -> Option<Task> {
        if cmd.attr == TaskAttr::Aca {
            return None;
        }
        let (medium, descriptor_sense, rights) = self.read_snapshot(admission)?;
        let Lookup::Found(d) = lookup(&self.table, cmd.cdb) else {
            return None;
        };
        if !d.cmd.accesses_medium() {
            return None;
        }
        let cdb = cmd.cdb.get(..d.cdb_len())?;
        // As in the locked start: a reserved bit set ends it before anything else.
        if let Err(s) = d.check_reserved(cdb) {
            return Some(Task::done(Response::check(&s, descriptor_sense)));
        }
        // A reservation conflict is the lock's to answer (it is rare and not the data path).
        let needs = match d.pr_class {
            PrClass::Read => MAY_READ,
            PrClass::Write => MAY_WRITE,
            PrClass::Allowed | PrClass::Special => return None,
        };
        if rights & needs == 0 {
            return None;
        }
        let mut task = match medium.start(d.cmd, Fields(cdb), cmd)? {
            Ok(t) => t,
            Err(Fail::Check(s)) => Task::done(Response::check(&s, descriptor_sense)),
            // The medium never answers a conflict; should it, the lock decides.
            Err(Fail::Conflict) => return None,
        };
        task.set_meta(
            descriptor_sense,
            data_out_len(d.cmd, Fields(cdb), self.configured.block_size),
        );
        Some(task)
    }

    /// The medium, the descriptor-sense setting and the nexus's rights, if the snapshot
    /// is unchanged since `admission`.
    fn read_snapshot(&self, admission: &Admission) -> Option<(Medium, bool, u64)> {
        let (seq, num_blocks, flags) = self.load()?;
        let rights = admission.rights_at(seq)?;
        let medium = Medium {
            num_blocks,
            swp: flags & SOFTWARE_WRITE_PROTECT != 0,
            cache_off: flags & CACHE_OFF != 0,
            ..self.configured
        };
        Some((medium, flags & DESCRIPTOR_SENSE != 0, rights))
    }

    /// One consistent reading of (sequence, capacity, flags), or `None` while the unit
    /// is publishing.
    fn load(&self) -> Option<(u64, u64, u32)> {
        let s1 = self.seq.load(Ordering::Acquire);
        if s1 & 1 != 0 {
            return None;
        }
        let num_blocks = self.num_blocks.load(Ordering::Relaxed);
        let flags = self.flags.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        (self.seq.load(Ordering::Relaxed) == s1).then_some((s1, num_blocks, flags))
    }
}

#[cfg(test)]
mod tests;
