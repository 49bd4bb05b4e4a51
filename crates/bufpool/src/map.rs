//! Anonymous memory mappings: where every pool block comes from and goes back to.
//! `munmap` returns the pages to the kernel at once, which is the point: freed memory does
//! not linger in an allocator arena.

use std::alloc::{handle_alloc_error, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::buf::BUF_ALIGN;

/// Bytes mapped by [`map`] and not yet unmapped: everything the pool holds from the kernel,
/// blocks in use and blocks idle in the free lists alike. Only a real `mmap` or `munmap`
/// touches it, not the reuse of a cached block, so it costs the hot path nothing.
static MAPPED: AtomicUsize = AtomicUsize::new(0);

/// Bytes the pool holds from the kernel right now (in use plus idle in free lists), for
/// metrics: with the count of live buffers it shows where a gateway's memory went.
pub fn mapped_bytes() -> usize {
    MAPPED.load(Ordering::Relaxed)
}

/// Maps `size` bytes (a multiple of [`BUF_ALIGN`]) of zeroed, page-aligned memory. Aborts
/// through `handle_alloc_error` when the kernel refuses, as `Vec` does on exhaustion.
pub(crate) fn map(size: usize) -> NonNull<u8> {
    // SAFETY: an anonymous private mapping at an address of the kernel's choice; no fd
    // and no existing memory is involved. The result is checked before use.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        out_of_memory(size)
    }
    // Mappings are page-aligned, and Linux pages are at least 4096 bytes.
    debug_assert!((p as usize).is_multiple_of(BUF_ALIGN));
    let ptr = NonNull::new(p.cast::<u8>()).unwrap_or_else(|| out_of_memory(size));
    MAPPED.fetch_add(size, Ordering::Relaxed);
    ptr
}

fn out_of_memory(size: usize) -> ! {
    handle_alloc_error(Layout::from_size_align(size, BUF_ALIGN).unwrap_or(Layout::new::<u8>()))
}

/// Unmaps a block returned by [`map`].
///
/// # Safety
/// `ptr` and `size` must be exactly those of one [`map`] call whose block is not used
/// (nor unmapped) afterwards.
pub(crate) unsafe fn unmap(ptr: NonNull<u8>, size: usize) {
    // SAFETY: the caller guarantees this is a live mapping of `size` bytes nobody uses.
    // munmap of a valid mapping only fails on invalid arguments; nothing to recover then.
    let _ = unsafe { libc::munmap(ptr.as_ptr().cast(), size) };
    MAPPED.fetch_sub(size, Ordering::Relaxed);
}
