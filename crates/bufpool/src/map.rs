//! Anonymous memory mappings: where every pool block comes from and goes back to.
//! `munmap` (or, inside a huge-page slab, `MADV_DONTNEED`) returns the pages to the kernel
//! at once, which is the point: freed memory does not linger in an allocator arena.

use std::alloc::{handle_alloc_error, Layout};
use std::ptr::NonNull;

use crate::buf::BUF_ALIGN;

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
    NonNull::new(p.cast::<u8>()).unwrap_or_else(|| out_of_memory(size))
}

/// Maps `size` bytes (a multiple of `align`) aligned to `align` (a power of two, at least a
/// page), and asks for transparent huge pages there (`MADV_HUGEPAGE`; where THP is off the
/// advice is simply not followed). Over-maps by `align` and unmaps the slack on both sides.
pub(crate) fn map_aligned_huge(size: usize, align: usize) -> NonNull<u8> {
    let whole = map(size.saturating_add(align));
    let start = whole.as_ptr() as usize;
    let aligned = start.next_multiple_of(align);
    let head = aligned - start;
    let tail = align - head;
    // SAFETY: [start, start + size + align) is the mapping made just above; the head and
    // tail cut off here lie inside it and are never used. A zero-length piece is skipped.
    unsafe {
        if head > 0 {
            libc::munmap(whole.as_ptr().cast(), head);
        }
        if tail > 0 {
            libc::munmap((aligned + size) as *mut libc::c_void, tail);
        }
        // Advice only: a kernel without THP returns an error and plain pages are used.
        libc::madvise(aligned as *mut libc::c_void, size, libc::MADV_HUGEPAGE);
    }
    NonNull::new(aligned as *mut u8).unwrap_or_else(|| out_of_memory(size))
}

/// Asks for (`huge`) or against transparent huge pages over `size` bytes at `ptr`. Advice
/// only: where THP is off, or on an error, plain pages are used as before.
pub(crate) fn advise_huge(ptr: NonNull<u8>, size: usize, huge: bool) {
    let advice = if huge {
        libc::MADV_HUGEPAGE
    } else {
        libc::MADV_NOHUGEPAGE
    };
    // SAFETY: changes only the THP policy of a range of our own mapping, not its contents.
    let _ = unsafe { libc::madvise(ptr.as_ptr().cast(), size, advice) };
}

/// Returns the pages of `size` bytes at `ptr` to the kernel but keeps the address range:
/// the next access faults in zeroed pages.
///
/// # Safety
/// `ptr..ptr + size` must lie inside a live private anonymous mapping that nobody reads
/// or writes until it is handed out again (as a zeroed block).
pub(crate) unsafe fn discard(ptr: NonNull<u8>, size: usize) {
    // SAFETY: the caller guarantees the range is ours and unused. MADV_DONTNEED on private
    // anonymous memory cannot fail on a valid range; nothing to recover otherwise.
    let _ = unsafe { libc::madvise(ptr.as_ptr().cast(), size, libc::MADV_DONTNEED) };
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
}
