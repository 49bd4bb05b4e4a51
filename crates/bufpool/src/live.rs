//! The number of live [`crate::AlignedBuf`]s, for metrics and leak tests, counted without a
//! cache line that every thread writes: each thread adds to and subtracts from a slot of its
//! own (64 slots of 128 bytes, handed out round-robin; more threads than slots share them,
//! which stays correct). A buffer made on one thread and dropped on another leaves +1 in one
//! slot and -1 in the other; the sum over all slots is the count.
//!
//! A reader sums the slots one after another while buffers come and go, so the sum is a
//! snapshot only when nothing moves; a momentary negative sum reads as 0.

use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

const SLOTS: usize = 64;

/// 128 bytes: adjacent-line prefetch pairs 64-byte lines, so two slots never share a pair.
#[repr(align(128))]
struct Slot(AtomicIsize);

static COUNTS: [Slot; SLOTS] = [const { Slot(AtomicIsize::new(0)) }; SLOTS];
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static MY_SLOT: Cell<Option<usize>> = const { Cell::new(None) };
}

fn my_slot() -> &'static AtomicIsize {
    let index = MY_SLOT
        .try_with(|mine| {
            mine.get().unwrap_or_else(|| {
                let i = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SLOTS;
                mine.set(Some(i));
                i
            })
        })
        // The thread's locals are being destroyed: any slot keeps the sum right.
        .unwrap_or(0);
    match COUNTS.get(index) {
        Some(slot) => &slot.0,
        None => &COUNTS[0].0,
    }
}

/// One more live buffer, counted on the calling thread's slot.
pub(crate) fn created() {
    my_slot().fetch_add(1, Ordering::Relaxed);
}

/// One buffer fewer, counted on the calling thread's slot.
pub(crate) fn dropped() {
    my_slot().fetch_sub(1, Ordering::Relaxed);
}

/// The sum over all slots.
pub(crate) fn count() -> usize {
    let sum: isize = COUNTS.iter().map(|s| s.0.load(Ordering::Relaxed)).sum();
    usize::try_from(sum).unwrap_or(0)
}
