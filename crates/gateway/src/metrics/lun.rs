//! Per-LUN command counters and latency histograms, updated by every command on the
//! connection threads (`net::exec`) and summed at scrape time.
//!
//! Each counter lives in a per-thread shard (`shard.rs`): recording a command is a few
//! Relaxed atomic adds on a cache line only the calling connection thread writes, plus one
//! clock read for reads and writes. Bytes count only commands that ended GOOD (the data
//! went to or came from the device); commands count whatever their status.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use scsi::op;

use super::shard::Sharded;
use super::text::HistogramValue;

/// Upper bounds of the latency buckets, in seconds (100 µs to 10 s).
pub const LATENCY_BOUNDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// The same bounds in nanoseconds, for bucketing without floating point.
const LATENCY_BOUNDS_NS: [u64; 16] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];
const BUCKETS: usize = LATENCY_BOUNDS.len() + 1;

/// What kind of command a CDB is, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandClass {
    /// READ(6/10/12/16).
    Read,
    /// WRITE(6/10/12/16), WRITE AND VERIFY(10/12/16).
    Write,
    /// SYNCHRONIZE CACHE(10/16).
    Flush,
    /// UNMAP.
    Unmap,
    /// WRITE SAME(10/16).
    WriteSame,
    /// Everything else (INQUIRY, TEST UNIT READY, COMPARE AND WRITE, ...).
    Other,
}

impl CommandClass {
    /// The class of the command whose CDB starts with `cdb[0]`.
    pub fn of(cdb: &[u8]) -> CommandClass {
        match cdb.first().copied() {
            Some(op::READ_6 | op::READ_10 | op::READ_12 | op::READ_16) => CommandClass::Read,
            Some(
                op::WRITE_6
                | op::WRITE_10
                | op::WRITE_12
                | op::WRITE_16
                | op::WRITE_VERIFY_10
                | op::WRITE_VERIFY_12
                | op::WRITE_VERIFY_16,
            ) => CommandClass::Write,
            Some(op::SYNCHRONIZE_CACHE_10 | op::SYNCHRONIZE_CACHE_16) => CommandClass::Flush,
            Some(op::UNMAP) => CommandClass::Unmap,
            Some(op::WRITE_SAME_10 | op::WRITE_SAME_16) => CommandClass::WriteSame,
            _ => CommandClass::Other,
        }
    }
}

/// Indexes into a shard's plain counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Counter {
    Commands,
    ReadCommands,
    ReadBytes,
    WriteCommands,
    WriteBytes,
    Flushes,
    Unmaps,
    WriteSames,
    CheckConditions,
    IoErrors,
    LockedStarts,
}
const COUNTERS: usize = 11;

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

impl Histogram {
    #[inline]
    fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = LATENCY_BOUNDS_NS.partition_point(|b| *b < ns);
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

/// One thread's share of a LUN's numbers.
#[derive(Default)]
struct Shard {
    counters: [AtomicU64; COUNTERS],
    read_latency: Histogram,
    write_latency: Histogram,
}

/// The counters of one LUN (kept in its `LunBackend`).
#[derive(Default)]
pub struct LunMetrics {
    shards: Sharded<Shard>,
}

/// The outcome of one command, as [`LunMetrics::record`] needs it.
pub struct Outcome {
    pub class: CommandClass,
    /// Status GOOD.
    pub good: bool,
    /// CHECK CONDITION.
    pub check_condition: bool,
    /// Bytes moved: data-in for reads, data-out written for writes.
    pub bytes: u64,
    /// From start to response.
    pub latency: Duration,
}

impl LunMetrics {
    /// Counts one finished command.
    #[inline]
    pub fn record(&self, o: &Outcome) {
        let s = self.shards.local();
        let add = |c: Counter, n: u64| s.counters[c as usize].fetch_add(n, Ordering::Relaxed);
        add(Counter::Commands, 1);
        if o.check_condition {
            add(Counter::CheckConditions, 1);
        }
        match o.class {
            CommandClass::Read => {
                add(Counter::ReadCommands, 1);
                if o.good {
                    add(Counter::ReadBytes, o.bytes);
                }
                s.read_latency.observe(o.latency);
            }
            CommandClass::Write => {
                add(Counter::WriteCommands, 1);
                if o.good {
                    add(Counter::WriteBytes, o.bytes);
                }
                s.write_latency.observe(o.latency);
            }
            CommandClass::Flush => {
                add(Counter::Flushes, 1);
            }
            CommandClass::Unmap => {
                add(Counter::Unmaps, 1);
            }
            CommandClass::WriteSame => {
                add(Counter::WriteSames, 1);
            }
            CommandClass::Other => {}
        }
    }

    /// Counts a block I/O the device failed.
    #[inline]
    pub fn io_error(&self) {
        self.shards.local().counters[Counter::IoErrors as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a command started under the target's lock rather than on the lock-free
    /// data path (`scsi::FastPath`).
    #[inline]
    pub fn locked_start(&self) {
        self.shards.local().counters[Counter::LockedStarts as usize]
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The sum of one counter over all shards.
    pub fn total(&self, c: Counter) -> u64 {
        self.shards
            .all()
            .map(|s| s.counters[c as usize].load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }

    /// The read (`write == false`) or write latency histogram, summed over all shards.
    pub fn latency(&self, write: bool) -> HistogramValue<'static> {
        let mut counts = [0u64; BUCKETS];
        let mut sum_ns = 0u64;
        for s in self.shards.all() {
            let h = if write {
                &s.write_latency
            } else {
                &s.read_latency
            };
            for (c, b) in counts.iter_mut().zip(&h.buckets) {
                *c = c.wrapping_add(b.load(Ordering::Relaxed));
            }
            sum_ns = sum_ns.wrapping_add(h.sum_ns.load(Ordering::Relaxed));
        }
        let (within, over) = counts.split_at(LATENCY_BOUNDS.len());
        HistogramValue {
            bounds: &LATENCY_BOUNDS,
            counts: within.to_vec(),
            overflow: over.iter().sum(),
            sum: sum_ns as f64 / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(class: CommandClass, good: bool, bytes: u64, us: u64) -> Outcome {
        Outcome {
            class,
            good,
            check_condition: !good,
            bytes,
            latency: Duration::from_micros(us),
        }
    }

    #[test]
    fn classes_by_opcode() {
        assert_eq!(CommandClass::of(&[0x28, 0]), CommandClass::Read);
        assert_eq!(CommandClass::of(&[0x88]), CommandClass::Read);
        assert_eq!(CommandClass::of(&[0x2A]), CommandClass::Write);
        assert_eq!(CommandClass::of(&[0x8E]), CommandClass::Write);
        assert_eq!(CommandClass::of(&[0x35]), CommandClass::Flush);
        assert_eq!(CommandClass::of(&[0x91]), CommandClass::Flush);
        assert_eq!(CommandClass::of(&[0x42]), CommandClass::Unmap);
        assert_eq!(CommandClass::of(&[0x93]), CommandClass::WriteSame);
        assert_eq!(CommandClass::of(&[0x12]), CommandClass::Other);
        assert_eq!(CommandClass::of(&[0x89]), CommandClass::Other);
        assert_eq!(CommandClass::of(&[]), CommandClass::Other);
    }

    #[test]
    fn counts_commands_bytes_of_good_ones_and_check_conditions() {
        let m = LunMetrics::default();
        m.record(&outcome(CommandClass::Read, true, 4096, 50));
        m.record(&outcome(CommandClass::Read, false, 4096, 50));
        m.record(&outcome(CommandClass::Write, true, 8192, 300));
        m.record(&outcome(CommandClass::Flush, true, 0, 10));
        m.record(&outcome(CommandClass::Other, true, 0, 1));
        m.io_error();
        m.locked_start();
        assert_eq!(m.total(Counter::Commands), 5);
        assert_eq!(m.total(Counter::LockedStarts), 1);
        assert_eq!(m.total(Counter::ReadCommands), 2);
        assert_eq!(m.total(Counter::ReadBytes), 4096);
        assert_eq!(m.total(Counter::WriteCommands), 1);
        assert_eq!(m.total(Counter::WriteBytes), 8192);
        assert_eq!(m.total(Counter::Flushes), 1);
        assert_eq!(m.total(Counter::CheckConditions), 1);
        assert_eq!(m.total(Counter::IoErrors), 1);
    }

    #[test]
    fn latencies_land_in_their_buckets_across_threads() {
        let m = std::sync::Arc::new(LunMetrics::default());
        m.record(&outcome(CommandClass::Read, true, 0, 100)); // exactly 100 us: first bucket
        m.record(&outcome(CommandClass::Read, true, 0, 101)); // second
        let m2 = m.clone();
        std::thread::spawn(move || m2.record(&outcome(CommandClass::Read, true, 0, 20_000_000)))
            .join()
            .unwrap_or_default();
        let h = m.latency(false);
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[1], 1);
        assert_eq!(h.overflow, 1);
        assert!((h.sum - 20.000201).abs() < 1e-9);
        assert_eq!(m.latency(true).counts.iter().sum::<u64>(), 0);
    }
}
