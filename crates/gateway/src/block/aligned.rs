//! `AlignedBuf`: a heap buffer aligned to 4096 bytes, the memory type every O_DIRECT
//! transfer uses. It is `Send`, frees itself on drop, and implements `AsRef<[u8]>` so a
//! finished read can be handed out as `Bytes::from_owner(buf)` without copying.

use std::alloc::{self, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Number of live `AlignedBuf`s in the process (for metrics and leak tests).
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Alignment of every [`AlignedBuf`]: enough for any logical block size we accept
/// (512 or 4096) and for the page-granular DMA some devices want.
pub const BUF_ALIGN: usize = 4096;

/// A zero-initialised, 4096-aligned byte buffer of a fixed logical length.
///
/// The allocation is rounded up to a multiple of [`BUF_ALIGN`]; only `len` bytes are
/// visible through the slice accessors.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    layout: Layout,
}

// SAFETY: AlignedBuf exclusively owns its allocation (like Vec<u8>); moving it between
// threads moves that ownership, and shared references only give `&[u8]`.
unsafe impl Send for AlignedBuf {}
// SAFETY: `&AlignedBuf` only allows reading the bytes, which is data-race free.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `len` zeroed bytes (at least one page is reserved, so `len == 0` works).
    ///
    /// Aborts through `handle_alloc_error` when memory is exhausted, like `Vec`.
    pub fn zeroed(len: usize) -> Self {
        let cap = len.max(1).div_ceil(BUF_ALIGN).saturating_mul(BUF_ALIGN);
        let layout = match Layout::from_size_align(cap, BUF_ALIGN) {
            Ok(l) => l,
            // Only reachable for sizes near usize::MAX, which no caller can produce
            // because reads are bounded by u32 lengths.
            Err(_) => alloc::handle_alloc_error(Layout::new::<[u8; BUF_ALIGN]>()),
        };
        // SAFETY: layout has a non-zero size (cap >= BUF_ALIGN).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        LIVE.fetch_add(1, Ordering::Relaxed);
        AlignedBuf { ptr, len, layout }
    }

    /// How many `AlignedBuf`s are alive in this process right now (including those
    /// owned by in-flight I/O and those inside `Bytes` handed out by reads).
    pub fn live_count() -> usize {
        LIVE.load(Ordering::Relaxed)
    }

    /// Allocates a buffer holding a copy of `data`.
    pub fn copy_from(data: &[u8]) -> Self {
        let mut buf = Self::zeroed(data.len());
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
        // SAFETY: ptr is valid for layout.size() >= len initialised (zeroed) bytes and
        // lives as long as self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The visible bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in as_slice, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Raw pointer to the first byte (for handing to the kernel).
    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: ptr was allocated with exactly this layout and is freed only here.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
        LIVE.fetch_sub(1, Ordering::Relaxed);
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
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn aligned_and_zeroed() {
        for len in [0usize, 1, 511, 512, 4096, 4097, 1 << 20] {
            let b = AlignedBuf::zeroed(len);
            assert_eq!(b.len(), len);
            assert_eq!(b.as_slice().as_ptr() as usize % BUF_ALIGN, 0);
            assert!(b.as_slice().iter().all(|&x| x == 0));
        }
    }

    #[test]
    fn bytes_from_owner_does_not_copy() {
        let mut b = AlignedBuf::zeroed(8192);
        b.as_mut_slice()[100] = 7;
        let p = b.as_slice().as_ptr();
        let bytes = Bytes::from_owner(b);
        assert_eq!(bytes.as_ptr(), p);
        assert_eq!(bytes.len(), 8192);
        assert_eq!(bytes[100], 7);
    }

    #[test]
    fn copy_from_roundtrip() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let b = AlignedBuf::copy_from(&data);
        assert_eq!(b.as_slice(), &data[..]);
    }
}
