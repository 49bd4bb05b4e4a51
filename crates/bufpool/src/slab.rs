//! Huge-page slabs for the large classes (64 KiB to 1 MiB): the blocks that carry write
//! data and read data to the disk.
//!
//! Why: a block of its own mapping gets whatever 4 KiB pages the kernel has free, so a
//! 128 KiB write is up to 32 scattered pieces of memory, and the request the block layer
//! builds from a run of such writes has one segment per piece. Devices pay per segment:
//! on the test VM's virtio disk (no indirect descriptors, 254 segments per request) a
//! 1 MiB request of 4 KiB segments fills the whole ring, so writes went to the disk one at
//! a time, and 128 KiB sequential writes reached 631-730 MB/s against raw fio's 842-917.
//! Blocks cut from a 2 MiB-aligned region with `MADV_HUGEPAGE` sit in one huge page, one
//! segment each: 952-1310 MB/s in the same runs (benches/README.md).
//!
//! How: per class, the slab being cut (a cursor) and a list of blocks given back. A block
//! never changes class; given back, its pages go to the kernel (`MADV_DONTNEED`, the
//! address range stays) and its address waits in the list for the next taker, which gets
//! zeroed pages. Slabs are never unmapped, so the address space grows to the peak of
//! blocks in use, while memory follows what is in use. One mutex guards it all; it is
//! taken only when a thread's own free list has no block of the class or is full
//! (`pool.rs`), not per I/O.
//!
//! A given-back block is also advised `MADV_NOHUGEPAGE` until it is taken again. Without
//! that, khugepaged (which scans `MADV_HUGEPAGE` ranges and by default collapses a 2 MiB
//! range even when only one of its pages is present) rebuilt the huge pages with the
//! discarded blocks zero-filled: 30 s after a burst of 32 sessions x QD32 of 128 KiB
//! writes, the gateway's RSS had climbed from 33 to 62 MiB while its blocks held 24 MiB.
//! A 2 MiB range that is not all one advice cannot be collapsed.
//!
//! Cost: the first touch of a slab may fault in a whole 2 MiB huge page, so a class that
//! is used at all holds up to 2 MiB more than its blocks; five classes, at most 10 MiB.

use std::ptr::NonNull;
use std::sync::Mutex;

use crate::map;

/// Size and alignment of a slab: one x86-64 / arm64 (4 KiB base page) huge page.
const SLAB_SIZE: usize = 2 << 20;
/// log2 of the smallest block size cut from slabs.
const MIN_SHIFT: u32 = 16;
/// log2 of the largest (`crate::MAX_POOLED`).
const MAX_SHIFT: u32 = 20;
const CLASSES: usize = (MAX_SHIFT - MIN_SHIFT + 1) as usize;

struct Class {
    /// Addresses of given-back blocks, their pages already discarded.
    given_back: Vec<usize>,
    /// The part of the current slab not cut yet: `next..end`.
    next: usize,
    end: usize,
}

static CLASSES_STATE: Mutex<[Class; CLASSES]> = Mutex::new(
    [const {
        Class {
            given_back: Vec::new(),
            next: 0,
            end: 0,
        }
    }; CLASSES],
);

/// The slab class of a block size, if blocks of that size come from slabs.
pub(crate) fn slab_class(size: usize) -> Option<usize> {
    let sized = size.is_power_of_two() && ((1 << MIN_SHIFT)..=(1 << MAX_SHIFT)).contains(&size);
    sized.then(|| (size.trailing_zeros() - MIN_SHIFT) as usize)
}

fn with_classes<R>(f: impl FnOnce(&mut [Class; CLASSES]) -> R) -> R {
    // A panic while holding the lock leaves the lists consistent (every step is a push,
    // a pop or a cursor bump), so a poisoned lock is used as is.
    let mut guard = CLASSES_STATE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    f(&mut guard)
}

/// A zeroed block of `size` bytes, `size`-aligned; `class` is `slab_class(size)`.
pub(crate) fn take(class: usize, size: usize) -> NonNull<u8> {
    let taken = with_classes(|classes| {
        let c = classes.get_mut(class)?;
        if let Some(addr) = c.given_back.pop() {
            return Some((addr, true));
        }
        if c.next + size > c.end {
            let slab = map::map_aligned_huge(SLAB_SIZE, SLAB_SIZE).as_ptr() as usize;
            c.next = slab;
            c.end = slab + SLAB_SIZE;
        }
        let addr = c.next;
        c.next += size;
        Some((addr, false))
    });
    match taken.and_then(|(a, reused)| Some((NonNull::new(a as *mut u8)?, reused))) {
        Some((ptr, reused)) => {
            if reused {
                // Undo give_back's advice, so the slab can be whole huge pages again.
                map::advise_huge(ptr, size, true);
            }
            ptr
        }
        // Only for a class index out of range, which `slab_class` never gives.
        None => map::map(size),
    }
}

/// Gives a block from [`take`] back: its pages return to the kernel now, its address is
/// kept for the next [`take`] of the class.
///
/// # Safety
/// `class`, `ptr` and `size` must be those of a [`take`] whose block is not used after
/// this call.
pub(crate) unsafe fn give_back(class: usize, ptr: NonNull<u8>, size: usize) {
    // SAFETY: the block lies in a slab mapping that is never unmapped, and the caller does
    // not touch it again; the next `take` hands it out as zeroed, which it then is.
    unsafe { map::discard(ptr, size) };
    map::advise_huge(ptr, size, false);
    with_classes(|classes| {
        if let Some(c) = classes.get_mut(class) {
            c.given_back.push(ptr.as_ptr() as usize);
        }
    });
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(slab_class(32 << 10), None);
        assert_eq!(slab_class(64 << 10), Some(0));
        assert_eq!(slab_class(128 << 10), Some(1));
        assert_eq!(slab_class(1 << 20), Some(CLASSES - 1));
        assert_eq!(slab_class((1 << 20) + 4096), None);
        assert_eq!(slab_class(96 << 10), None);
    }

    #[test]
    fn blocks_are_aligned_distinct_and_zero_after_give_back() {
        let size = 256 << 10;
        let class = slab_class(size).expect("256 KiB is a slab class");
        let a = take(class, size);
        let b = take(class, size);
        assert_ne!(a, b);
        for p in [a, b] {
            assert_eq!(p.as_ptr() as usize % size, 0, "size-aligned");
        }
        // SAFETY: `a` is a live block of `size` bytes owned by this test.
        unsafe { std::ptr::write_bytes(a.as_ptr(), 0x5a, size) };
        // SAFETY: `a` came from take(size) and is not used after this.
        unsafe { give_back(class, a, size) };
        // Another test may take it first; whichever block comes back is zero.
        let c = take(class, size);
        // SAFETY: `c` is a live block of `size` bytes from take.
        let bytes = unsafe { std::slice::from_raw_parts(c.as_ptr(), size) };
        assert!(
            bytes.iter().all(|&x| x == 0),
            "a given-back block reads zero"
        );
        // SAFETY: both came from take(size) and are not used after this.
        unsafe {
            give_back(class, b, size);
            give_back(class, c, size);
        }
    }
}
