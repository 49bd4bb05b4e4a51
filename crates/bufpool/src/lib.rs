//! `bufpool`: 4096-aligned byte buffers for O_DIRECT, recycled through bounded per-thread
//! free lists.
//!
//! Why: the gateway moves every read and every assembled write through buffers of up to
//! MaxBurstLength (128 KiB in the usual workloads). Taking them from malloc made glibc keep
//! tens of MiB it never returned (per-thread arenas, a dynamic mmap threshold that rises
//! once a large block is freed); with 32 sessions x QD32 of 128 KiB writes the gateway
//! peaked at 140-155 MiB, against 79 MiB with `MALLOC_ARENA_MAX=1
//! MALLOC_MMAP_THRESHOLD_=65536`. Here the memory comes from anonymous mappings of our own
//! (`map`), a dropped buffer goes back to the free list of the thread that drops it
//! (`pool`), and whatever exceeds a list's byte bound is unmapped (or, for the blocks of
//! 64 KiB and up that come from huge-page slabs, `slab`, its pages discarded), so it really
//! returns to the kernel. Reuse also saves a read the zeroing and page faults of a fresh
//! buffer.
//!
//! A thread may also have a registered-buffer arena (`arena`): a fixed region that stays
//! mapped with the same pages for the life of the process, so the gateway can register it
//! with its io_uring rings; the pool cuts buffers from the calling thread's arena first.
//!
//! Used by `iscsi` (write data assembly) and the gateway (reads and aligned copies in its
//! block layer, large PDUs received in `net/large_pdu.rs`); both crates share the pool
//! because a buffer allocated by one is freed by the other. How the per-thread bound is
//! chosen and what it measured: the gateway's `net/buffers.rs` and ARCHITECTURE.md.

mod arena;
mod buf;
mod live;
mod map;
mod pool;
mod slab;

pub use arena::{
    arena_bytes, arena_bytes_in_use, arena_misses, enable_thread_arena, thread_arena, ArenaRegion,
    ARENA_UNIT, MAX_ARENA_BLOCK,
};
pub use buf::{AlignedBuf, BUF_ALIGN};
pub use pool::{
    held_bytes, set_thread_cache_limit, thread_cache_limit, thread_cached_bytes,
    DEFAULT_THREAD_CACHE, MAX_POOLED,
};
