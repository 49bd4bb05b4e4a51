//! Registered-buffer arenas: per-thread regions of I/O buffer memory that stay mapped, with
//! the same pages, for the life of the process, so an io_uring ring can register a region
//! once (`IORING_REGISTER_BUFFERS`) and read into and write from it with READ_FIXED and
//! WRITE_FIXED.
//!
//! Why: an O_DIRECT transfer from ordinary memory makes the kernel look up and pin the
//! buffer's pages for every operation and unpin them after it; a registered region was
//! pinned once, when the ring registered it.
//!
//! Why a region of its own instead of the pool's blocks: the kernel keeps using the pages it
//! pinned at registration, whatever the mapping holds later. The pool gives pages back to
//! the kernel (`munmap`, `MADV_DONTNEED`), after which the address is backed by new pages
//! while a ring would still read and write the old ones: data would silently go astray.
//! Arena memory is never unmapped, discarded or remapped, so what a ring pinned stays what
//! the process sees. An arena whose thread ended is kept for the next thread that asks for
//! one (rings made on the old thread may still use it), so arenas never exceed the most
//! threads that had one at a time.
//!
//! How: a thread that serves connections gets an arena ([`enable_thread_arena`]); the pool
//! (`pool.rs`) takes blocks of up to [`MAX_ARENA_BLOCK`] from the calling thread's arena
//! first and falls back to its free lists when the arena is full. The arena is a bitmap of
//! 4 KiB pages; a block of 2^k pages starts at a multiple of its size (so a block of up to
//! 64 pages lies in one 64-page word and a larger one in whole words, and a block of 64 KiB
//! and up sits inside one 2 MiB huge page). Only the owning thread takes blocks and any
//! thread may give one back (an atomic AND), so taking needs no lock: bits the owner saw
//! clear stay clear until it sets them.

use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::map;

/// Page granularity of the bitmap.
const PAGE: usize = 4096;
/// Pages per bitmap word.
const WORD_PAGES: usize = 64;
/// Arena sizes are whole huge pages (and arenas are huge-page aligned): the unit an arena's
/// size is rounded up to.
pub const ARENA_UNIT: usize = 2 << 20;
/// Largest block an arena serves: the pool's largest class (1 MiB, four bitmap words).
pub const MAX_ARENA_BLOCK: usize = crate::MAX_POOLED;

/// The address range of an arena, for registering it with a ring and for telling whether a
/// buffer lies inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArenaRegion {
    base: usize,
    len: usize,
}

impl ArenaRegion {
    /// First byte.
    pub fn base(&self) -> *mut u8 {
        self.base as *mut u8
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: an arena has at least one huge page.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when all of `ptr..ptr + len` lies inside the region.
    pub fn contains(&self, ptr: *const u8, len: usize) -> bool {
        let start = ptr as usize;
        start >= self.base
            && start
                .checked_add(len)
                .is_some_and(|end| end <= self.base + self.len)
    }
}

/// One arena: its region and which of its pages are taken.
pub struct Arena {
    region: ArenaRegion,
    /// Bit i of word w: page `w * 64 + i` belongs to a block in use.
    used: Box<[AtomicU64]>,
    /// The word the last block was found in (only the owner reads or writes it).
    hint: AtomicUsize,
    /// Takes that found no room (served by the pool instead).
    misses: AtomicU64,
}

/// Arenas whose thread ended: taken again by the next thread that enables one.
static ORPHANS: Mutex<Vec<&'static Arena>> = Mutex::new(Vec::new());
/// Every arena made in this process (for [`arena_bytes_in_use`]).
static ALL: Mutex<Vec<&'static Arena>> = Mutex::new(Vec::new());
/// Bytes mapped for arenas in this process.
static MAPPED: AtomicUsize = AtomicUsize::new(0);

/// Hands the calling thread's arena to the orphans when the thread ends.
struct Owner(Cell<Option<&'static Arena>>);

impl Drop for Owner {
    fn drop(&mut self) {
        if let Some(a) = self.0.take() {
            orphans().push(a);
        }
    }
}

thread_local! {
    static OWNER: Owner = const { Owner(Cell::new(None)) };
}

fn orphans() -> std::sync::MutexGuard<'static, Vec<&'static Arena>> {
    lock(&ORPHANS)
}

fn lock(
    list: &'static Mutex<Vec<&'static Arena>>,
) -> std::sync::MutexGuard<'static, Vec<&'static Arena>> {
    // Every step under the lock is a push, a pop or a read: a poisoned lock is consistent.
    list.lock().unwrap_or_else(|p| p.into_inner())
}

/// Gives the calling thread an arena of `bytes` rounded up to whole 2 MiB huge pages (0: none)
/// and returns its region. A thread keeps the arena it has; one left by an ended thread is
/// reused when it has the size asked for. The memory is mapped here and faults in when first
/// used or when a ring registers (pins) it.
pub fn enable_thread_arena(bytes: usize) -> Option<ArenaRegion> {
    if bytes == 0 {
        return None;
    }
    if let Some(r) = thread_arena() {
        return Some(r);
    }
    let size = bytes.div_ceil(ARENA_UNIT).saturating_mul(ARENA_UNIT);
    let adopted = {
        let mut list = orphans();
        let i = list.iter().position(|a| a.region.len == size);
        i.map(|i| list.swap_remove(i))
    };
    let arena = adopted.unwrap_or_else(|| create(size));
    match OWNER.try_with(|o| o.0.set(Some(arena))) {
        Ok(()) => Some(arena.region),
        // The thread is ending (its thread-locals are being destroyed): keep the arena for
        // the next thread instead of losing it.
        Err(_) => {
            orphans().push(arena);
            None
        }
    }
}

/// Maps a new arena of `size` bytes (whole huge pages); it lives for the rest of the process.
fn create(size: usize) -> &'static Arena {
    let base = map::map_aligned_huge(size, ARENA_UNIT).as_ptr() as usize;
    MAPPED.fetch_add(size, Ordering::Relaxed);
    let words = size / PAGE / WORD_PAGES;
    let arena: &'static Arena = Box::leak(Box::new(Arena {
        region: ArenaRegion { base, len: size },
        used: (0..words).map(|_| AtomicU64::new(0)).collect(),
        hint: AtomicUsize::new(0),
        misses: AtomicU64::new(0),
    }));
    lock(&ALL).push(arena);
    arena
}

/// The region of the calling thread's arena, if it has one.
pub fn thread_arena() -> Option<ArenaRegion> {
    OWNER
        .try_with(|o| o.0.get().map(|a| a.region))
        .ok()
        .flatten()
}

/// Bytes mapped for arenas in this process (each is fixed in size and never unmapped).
pub fn arena_bytes() -> usize {
    MAPPED.load(Ordering::Relaxed)
}

/// Bytes of arena blocks in use in this process, read from the bitmaps (no counter on the
/// hot path).
pub fn arena_bytes_in_use() -> usize {
    lock(&ALL).iter().map(|a| a.in_use()).sum()
}

/// Buffers that would have come from an arena but found it full (each arena counts its own,
/// so a full arena's misses share no counter between threads; this sums them).
pub fn arena_misses() -> u64 {
    lock(&ALL)
        .iter()
        .map(|a| a.misses.load(Ordering::Relaxed))
        .sum()
}

/// Bits at every multiple of `pages` (a power of two, 1..=64) in a word.
fn group_starts(pages: u32) -> u64 {
    (u128::from(u64::MAX) / ((1u128 << pages) - 1)) as u64
}

/// The first page index in `used` where `pages` (a power of two, 1..=64) pages starting at
/// a multiple of `pages` are all free.
fn free_group(used: u64, pages: u32) -> Option<u32> {
    // Fold: after the loop, bit i says pages i..i+pages are free (the shift brings zeros in
    // from the top, so a run cannot wrap past the word's end).
    let mut free = !used;
    let mut span = 1;
    while span < pages {
        free &= free >> span;
        span *= 2;
    }
    let starts = free & group_starts(pages);
    (starts != 0).then(|| starts.trailing_zeros())
}

fn group_mask(first: u32, pages: u32) -> u64 {
    let ones = if pages >= 64 {
        u64::MAX
    } else {
        (1u64 << pages) - 1
    };
    ones << first
}

impl Arena {
    /// Bytes in blocks in use: the pages marked in the bitmap.
    fn in_use(&self) -> usize {
        self.used
            .iter()
            .map(|w| w.load(Ordering::Relaxed).count_ones() as usize * PAGE)
            .sum()
    }

    /// A block of `size` bytes (a power of two from 4 KiB to [`MAX_ARENA_BLOCK`]), aligned to
    /// its size. Only the owning thread calls this.
    fn take(&self, size: usize) -> Option<NonNull<u8>> {
        if !size.is_power_of_two() || !(PAGE..=MAX_ARENA_BLOCK).contains(&size) {
            return None;
        }
        let pages = size / PAGE;
        let page = if pages <= WORD_PAGES {
            self.take_in_word(pages as u32)?
        } else {
            self.take_words(pages / WORD_PAGES)?
        };
        NonNull::new((self.region.base + page * PAGE) as *mut u8)
    }

    /// Marks a free aligned group of `pages` (1..=64) pages in one word as used; its first
    /// page index.
    fn take_in_word(&self, pages: u32) -> Option<usize> {
        let words = self.used.len();
        let start = self.hint.load(Ordering::Relaxed);
        for step in 0..words {
            let w = (start + step) % words;
            let word = self.used.get(w)?;
            // Acquire: a block given back by another thread is done with before we reuse it.
            let Some(first) = free_group(word.load(Ordering::Acquire), pages) else {
                continue;
            };
            // Only this thread sets bits, so the group seen free is still free.
            word.fetch_or(group_mask(first, pages), Ordering::Relaxed);
            self.hint.store(w, Ordering::Relaxed);
            return Some(w * WORD_PAGES + first as usize);
        }
        None
    }

    /// Marks `n` (a power of two) whole free words, starting at a multiple of `n`, as used;
    /// their first page index.
    fn take_words(&self, n: usize) -> Option<usize> {
        let group = (0..self.used.len() / n).find(|g| {
            self.used
                .get(g * n..(g + 1) * n)
                .is_some_and(|ws| ws.iter().all(|w| w.load(Ordering::Acquire) == 0))
        })?;
        for w in self.used.get(group * n..(group + 1) * n)? {
            w.fetch_or(u64::MAX, Ordering::Relaxed);
        }
        Some(group * n * WORD_PAGES)
    }

    /// Gives a block back (any thread).
    ///
    /// # Safety
    /// `ptr` and `size` must be those of a [`Arena::take`] of this arena whose block is not
    /// used afterwards.
    unsafe fn give_back(&self, ptr: NonNull<u8>, size: usize) {
        let page = (ptr.as_ptr() as usize - self.region.base) / PAGE;
        let pages = size / PAGE;
        // Release: our last use of the block comes before its next owner's.
        if pages <= WORD_PAGES {
            if let Some(word) = self.used.get(page / WORD_PAGES) {
                let mask = group_mask((page % WORD_PAGES) as u32, pages as u32);
                word.fetch_and(!mask, Ordering::Release);
            }
        } else {
            let first = page / WORD_PAGES;
            for w in self
                .used
                .get(first..first + pages / WORD_PAGES)
                .unwrap_or(&[])
            {
                w.fetch_and(0, Ordering::Release);
            }
        }
    }
}

/// A block of `size` bytes from the calling thread's arena, if it has one with room. `size`
/// is a pool block size (a power of two); larger ones than [`MAX_ARENA_BLOCK`] never fit.
pub(crate) fn take(size: usize) -> Option<(NonNull<u8>, &'static Arena)> {
    if size > MAX_ARENA_BLOCK {
        return None;
    }
    let arena = OWNER.try_with(|o| o.0.get()).ok().flatten()?;
    match arena.take(size) {
        Some(ptr) => Some((ptr, arena)),
        None => {
            arena.misses.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Gives a block from [`take`] back to its arena.
///
/// # Safety
/// `arena`, `ptr` and `size` must be those of one [`take`] whose block is not used afterwards.
pub(crate) unsafe fn give_back(arena: &'static Arena, ptr: NonNull<u8>, size: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { arena.give_back(ptr, size) }
}

#[cfg(test)]
mod tests;
