//! Per-thread shards for hot-path counters: a fixed array of cache-line-aligned slots, each
//! thread writing only the slot its thread-local shard id picks, readers summing all slots.
//!
//! Why: commands run on the connection threads (thread per core, `net::workers`) with no
//! lock or shared cache line between connections. One atomic counter that every thread
//! increments would be exactly such a shared line, bouncing between cores on every command.
//! With shards each connection thread updates (Relaxed) a line no other connection thread
//! touches, as long as there are no more connection threads than [`SHARDS`]; beyond that
//! threads share slots, which stays correct (atomic adds) and only costs some contention.
//! A scrape sums the slots; it may see a command half-counted (its count but not yet its
//! bytes), which the next scrape corrects.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Slots per sharded value. Thread ids are handed out round-robin, so up to this many
/// threads each have a slot to themselves.
pub const SHARDS: usize = 64;

/// Aligns its content to 128 bytes: two 64-byte lines, because adjacent-line prefetching on
/// x86 pulls lines in pairs.
#[derive(Default)]
#[repr(align(128))]
pub struct Padded<T>(pub T);

/// `SHARDS` padded slots of `T`.
pub struct Sharded<T> {
    slots: Box<[Padded<T>]>,
}

impl<T: Default> Default for Sharded<T> {
    fn default() -> Self {
        Sharded {
            slots: (0..SHARDS).map(|_| Padded::default()).collect(),
        }
    }
}

impl<T> Sharded<T> {
    /// The calling thread's slot.
    #[inline]
    pub fn local(&self) -> &T {
        // `slots` has SHARDS entries and `shard_id` is below SHARDS; `get` keeps clippy and
        // the reader certain, and falls back to slot 0 if that ever changed.
        let i = shard_id();
        match self.slots.get(i) {
            Some(p) => &p.0,
            None => &self.slots[0].0,
        }
    }

    /// Every slot, for summing at scrape time.
    pub fn all(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().map(|p| &p.0)
    }
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD_ID: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's shard index, assigned on first use (round-robin over [`SHARDS`]).
#[inline]
pub fn shard_id() -> usize {
    SHARD_ID.with(|id| {
        let v = id.get();
        if v != usize::MAX {
            return v;
        }
        let v = NEXT_ID.fetch_add(1, Ordering::Relaxed) % SHARDS;
        id.set(v);
        v
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    #[test]
    fn slots_are_cache_line_apart() {
        assert_eq!(std::mem::align_of::<Padded<AtomicU64>>(), 128);
        let s: Sharded<AtomicU64> = Sharded::default();
        assert_eq!(s.all().count(), SHARDS);
        let a = s.all().next().unwrap() as *const _ as usize;
        let b = s.all().nth(1).unwrap() as *const _ as usize;
        assert_eq!(b - a, 128);
    }

    #[test]
    fn a_thread_keeps_its_id_and_threads_sum_up() {
        assert_eq!(shard_id(), shard_id());
        let s: Arc<Sharded<AtomicU64>> = Arc::new(Sharded::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        s.local().fetch_add(1, Ordering::Relaxed);
                    }
                    shard_id()
                })
            })
            .collect();
        let ids: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let total: u64 = s.all().map(|c| c.load(Ordering::Relaxed)).sum();
        assert_eq!(total, 4000);
        assert!(ids.iter().all(|i| *i < SHARDS));
    }
}
