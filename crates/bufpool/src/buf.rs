//! `AlignedBuf`: a 4096-aligned byte buffer, the memory type of every O_DIRECT transfer.
//! It is `Send`, gives its block back to the pool on drop, and implements `AsRef<[u8]>`
//! so a finished read can be handed out as `Bytes::from_owner(buf)` without copying.
//!
//! Two constructors, because a recycled block holds what its last user left in it:
//! [`AlignedBuf::zeroed`] for callers that need zeroes or may not write every byte, and
//! [`AlignedBuf::for_overwrite`] for callers that provably overwrite all of it before
//! anyone reads it (each call site says why). Either way every byte is initialised memory
//! (a fresh mapping is zero), so no constructor is `unsafe`; the hazard of `for_overwrite`
//! is leaking an earlier command's data, not undefined behaviour.

use std::ptr::NonNull;

use crate::{live, pool};

/// Alignment of every [`AlignedBuf`]: enough for any logical block size we accept
/// (512 or 4096) and for the page-granular DMA some devices want.
pub const BUF_ALIGN: usize = 4096;

/// A 4096-aligned byte buffer of a fixed logical length.
///
/// The block behind it is a power of two from 4 KiB to [`crate::MAX_POOLED`] (or a
/// page-rounded mapping of its own above that); only `len` bytes are visible.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    /// Size of the block, as `pool::acquire` returned it.
    size: usize,
    /// The registered-buffer arena of the block, if it came from one.
    arena: Option<&'static crate::arena::Arena>,
}

// SAFETY: AlignedBuf exclusively owns its block (like Vec<u8>); moving it between threads
// moves that ownership, and the pool accepts a block back on any thread.
unsafe impl Send for AlignedBuf {}
// SAFETY: `&AlignedBuf` only allows reading the bytes, which is data-race free.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    fn from_block(block: &pool::Block, len: usize) -> Self {
        live::created();
        AlignedBuf {
            ptr: block.ptr,
            len,
            size: block.size,
            arena: block.arena,
        }
    }

    /// `len` zero bytes (`len == 0` works and still has an aligned address).
    ///
    /// Aborts through `handle_alloc_error` when memory is exhausted, like `Vec`.
    pub fn zeroed(len: usize) -> Self {
        let block = pool::acquire(len);
        if !block.fresh {
            // SAFETY: the block has block.size >= len bytes and is owned by us alone.
            unsafe { std::ptr::write_bytes(block.ptr.as_ptr(), 0, len) };
        }
        Self::from_block(&block, len)
    }

    /// `len` bytes of unspecified content: zeroes, or bytes an earlier user of the block
    /// left, possibly another initiator's data. Only for a caller that overwrites all `len`
    /// bytes before the buffer is read, or drops it unread (e.g. when the read that was to
    /// fill it fails). Saves the zeroing [`AlignedBuf::zeroed`] does.
    pub fn for_overwrite(len: usize) -> Self {
        Self::from_block(&pool::acquire(len), len)
    }

    /// How many `AlignedBuf`s are alive in this process right now (including those
    /// owned by in-flight I/O and those inside `Bytes` handed out by reads); blocks idle in
    /// the free lists are not counted. Exact while no buffer is made or dropped meanwhile.
    pub fn live_count() -> usize {
        live::count()
    }

    /// A buffer holding a copy of `data`.
    pub fn copy_from(data: &[u8]) -> Self {
        // Every byte is overwritten by the copy right below.
        let mut buf = Self::for_overwrite(data.len());
        buf.as_mut_slice().copy_from_slice(data);
        buf
    }

    /// Visible length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the visible length is zero.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The visible bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for size >= len bytes, all initialised (a mapping starts
        // zeroed and is only ever written with bytes), and lives as long as self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The visible bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in as_slice, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Raw pointer to the first byte (for handing to the kernel); valid for `len` bytes.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: ptr/size/arena are the block pool::acquire gave this buffer, which is
        // dropped here and never used again.
        unsafe { pool::release(self.ptr, self.size, self.arena) };
        live::dropped();
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsMut<[u8]> for AlignedBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .finish()
    }
}

#[cfg(test)]
mod tests;
