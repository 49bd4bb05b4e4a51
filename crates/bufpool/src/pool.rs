//! The free lists: one per power-of-two size class from 4 KiB to [`MAX_POOLED`], per
//! thread (a `thread_local!`, so taking and returning a block takes no lock), bounded in
//! bytes per thread by [`thread_cache_limit`].
//!
//! A block goes back to the list of the thread that drops it, whichever thread mapped it:
//! the gateway runs a connection, its ring and its buffers on one thread, so that is
//! nearly always the same thread, and when it is not (a ring drained by a helper thread,
//! the engine thread dropping a failed read) the block is simply cached there or, past
//! the bound, unmapped. A thread's list is unmapped when the thread exits; a block dropped
//! after that (by a later thread-local destructor) is unmapped directly.
//!
//! Blocks of 64 KiB and up come from huge-page slabs (`slab.rs`) and go back there
//! instead of being unmapped; larger requests than [`MAX_POOLED`] get a mapping of their
//! own, unmapped on drop. A thread with a registered-buffer arena (`arena.rs`) takes its
//! blocks from there first; those go back to their arena, never to a list or the kernel.

use std::cell::RefCell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::arena::{self, Arena};
use crate::buf::BUF_ALIGN;
use crate::{map, slab};

/// log2 of the smallest class (4 KiB).
const MIN_SHIFT: u32 = 12;
/// log2 of the largest class (1 MiB, the largest MaxBurstLength the gateway accepts).
const MAX_SHIFT: u32 = 20;
const CLASSES: usize = (MAX_SHIFT - MIN_SHIFT + 1) as usize;

/// Largest buffer served from the free lists; larger ones are mapped and unmapped each time.
pub const MAX_POOLED: usize = 1 << MAX_SHIFT;

/// Default bound of one thread's free lists: room for 128 idle 128 KiB buffers, which
/// covers the swing of a busy I/O thread between peaks, while idle memory stays small next
/// to the gateway's command data budget (48 MiB).
pub const DEFAULT_THREAD_CACHE: usize = 16 << 20;

static LIMIT: AtomicUsize = AtomicUsize::new(DEFAULT_THREAD_CACHE);

/// Bytes of blocks handed out or idle in a thread's list (see [`held_bytes`]). Changed only
/// when a block comes from or goes back to the kernel, never on reuse from a list.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// Bytes of the blocks the pool holds right now: in use, or idle in a thread's free list.
/// For metrics: with the count of live buffers it shows where a gateway's memory went.
/// Not counted: the part of a huge-page slab not cut into blocks yet (`slab.rs`), and the
/// registered-buffer arenas (`crate::arena_bytes`).
pub fn held_bytes() -> usize {
    HELD.load(Ordering::Relaxed)
}

/// Gets a block from the kernel: from a slab for the slab classes, else a mapping.
fn obtain(size: usize) -> NonNull<u8> {
    HELD.fetch_add(size, Ordering::Relaxed);
    match slab::slab_class(size) {
        Some(class) => slab::take(class, size),
        None => map::map(size),
    }
}

/// Returns a block to the kernel, the way [`obtain`] got it.
///
/// # Safety
/// `ptr` and `size` must be those of an [`obtain`] whose block is not used afterwards.
unsafe fn surrender(ptr: NonNull<u8>, size: usize) {
    HELD.fetch_sub(size, Ordering::Relaxed);
    match slab::slab_class(size) {
        // SAFETY: a slab-class block comes from slab::take with this class; handed over.
        Some(class) => unsafe { slab::give_back(class, ptr, size) },
        // SAFETY: any other block is a mapping of exactly `size` bytes; handed over.
        None => unsafe { map::unmap(ptr, size) },
    }
}

/// Sets the byte bound of every thread's free lists (0 disables caching). Lists above a
/// lowered bound shrink as their blocks are used; blocks dropped meanwhile are unmapped.
pub fn set_thread_cache_limit(bytes: usize) {
    LIMIT.store(bytes, Ordering::Relaxed);
}

/// The byte bound of one thread's free lists.
pub fn thread_cache_limit() -> usize {
    LIMIT.load(Ordering::Relaxed)
}

/// Bytes idle in the calling thread's free lists (for tests and metrics).
pub fn thread_cached_bytes() -> usize {
    CACHE
        .try_with(|c| c.try_borrow().map_or(0, |c| c.bytes))
        .unwrap_or(0)
}

struct Cache {
    free: [Vec<NonNull<u8>>; CLASSES],
    bytes: usize,
}

impl Drop for Cache {
    fn drop(&mut self) {
        for (i, list) in self.free.iter_mut().enumerate() {
            let size = class_size(i);
            for ptr in list.drain(..) {
                // SAFETY: every listed block came from `obtain` with its class size and
                // no AlignedBuf owns it any more (it was pushed by `release`).
                unsafe { surrender(ptr, size) };
            }
        }
    }
}

thread_local! {
    static CACHE: RefCell<Cache> = const {
        RefCell::new(Cache { free: [const { Vec::new() }; CLASSES], bytes: 0 })
    };
}

fn class_size(index: usize) -> usize {
    1 << (MIN_SHIFT as usize + index)
}

/// The class index of a block size, if it is a class size.
fn class_index(size: usize) -> Option<usize> {
    let pooled = size.is_power_of_two() && ((1 << MIN_SHIFT)..=MAX_POOLED).contains(&size);
    pooled.then(|| (size.trailing_zeros() - MIN_SHIFT) as usize)
}

/// The size of the block that holds `len` bytes: its class, or the page-rounded length for
/// anything above [`MAX_POOLED`]. Never zero, so even an empty buffer has a real address.
pub(crate) fn block_size(len: usize) -> usize {
    let len = len.max(1);
    if len <= MAX_POOLED {
        len.next_power_of_two().max(1 << MIN_SHIFT)
    } else {
        len.div_ceil(BUF_ALIGN).saturating_mul(BUF_ALIGN)
    }
}

/// A block for a buffer of `len` bytes.
pub(crate) struct Block {
    pub(crate) ptr: NonNull<u8>,
    pub(crate) size: usize,
    /// Freshly mapped, so all zero; a recycled block holds its last user's bytes.
    pub(crate) fresh: bool,
    /// The registered-buffer arena the block was cut from, if any (`arena.rs`).
    pub(crate) arena: Option<&'static Arena>,
}

/// Takes a block of at least `len` bytes from the calling thread's registered-buffer arena,
/// else from its free list, else maps one.
pub(crate) fn acquire(len: usize) -> Block {
    let size = block_size(len);
    if let Some((ptr, arena)) = arena::take(size) {
        return Block {
            ptr,
            size,
            fresh: false,
            arena: Some(arena),
        };
    }
    if let Some(i) = class_index(size) {
        let hit = CACHE
            .try_with(|c| {
                let mut c = c.try_borrow_mut().ok()?;
                let ptr = c.free.get_mut(i)?.pop()?;
                c.bytes -= size;
                Some(ptr)
            })
            .ok()
            .flatten();
        if let Some(ptr) = hit {
            return Block {
                ptr,
                size,
                fresh: false,
                arena: None,
            };
        }
    }
    Block {
        ptr: obtain(size),
        size,
        fresh: true,
        arena: None,
    }
}

/// Gives a block back: to its arena if it came from one; onto the calling thread's list
/// when it is a class size and the list stays within its bound; unmapped otherwise.
///
/// # Safety
/// `ptr`, `size` and `arena` must be those of a [`Block`] from [`acquire`] that is not used
/// after this call.
pub(crate) unsafe fn release(ptr: NonNull<u8>, size: usize, arena: Option<&'static Arena>) {
    if let Some(a) = arena {
        // SAFETY: the block was cut from `a` with this size and is handed over.
        unsafe { arena::give_back(a, ptr, size) };
        return;
    }
    if let Some(i) = class_index(size) {
        let limit = thread_cache_limit();
        let kept = CACHE
            .try_with(|c| {
                let Ok(mut c) = c.try_borrow_mut() else {
                    return false;
                };
                if c.bytes.saturating_add(size) > limit {
                    return false;
                }
                let Some(list) = c.free.get_mut(i) else {
                    return false;
                };
                list.push(ptr);
                c.bytes += size;
                true
            })
            // The thread's list is already destroyed (called from a later TLS destructor).
            .unwrap_or(false);
        if kept {
            return;
        }
    }
    // SAFETY: the caller hands over a block from `acquire`, which `obtain`ed exactly
    // `size` bytes, and does not use it again; it was not put on a list.
    unsafe { surrender(ptr, size) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_classes() {
        assert_eq!(block_size(0), 4096);
        assert_eq!(block_size(4096), 4096);
        assert_eq!(block_size(4097), 8192);
        assert_eq!(block_size(128 << 10), 128 << 10);
        assert_eq!(block_size((128 << 10) + 1), 256 << 10);
        assert_eq!(block_size(MAX_POOLED), MAX_POOLED);
        assert_eq!(block_size(MAX_POOLED + 1), MAX_POOLED + 4096);
        assert_eq!(class_index(4096), Some(0));
        assert_eq!(class_index(MAX_POOLED), Some(CLASSES - 1));
        assert_eq!(class_index(MAX_POOLED + 4096), None);
        assert_eq!(class_index(12288), None);
        for i in 0..CLASSES {
            assert_eq!(class_index(class_size(i)), Some(i));
        }
    }
}
