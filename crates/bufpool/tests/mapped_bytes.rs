//! `mapped_bytes` follows what the pool really holds from the kernel. A test binary of its
//! own (one test, one thread), because the counter is process-wide and other tests running
//! beside it would move it.

use bufpool::{mapped_bytes, set_thread_cache_limit, AlignedBuf, MAX_POOLED};

#[test]
fn mapped_bytes_counts_live_and_cached_blocks_and_drops_on_unmap() {
    assert_eq!(mapped_bytes(), 0, "nothing mapped before the first buffer");

    // A pooled class: mapped once, kept in the thread's list after the drop, reused.
    let a = AlignedBuf::zeroed(100 * 1024);
    assert_eq!(
        mapped_bytes(),
        128 * 1024,
        "a 100 KiB buffer takes a 128 KiB block"
    );
    drop(a);
    assert_eq!(mapped_bytes(), 128 * 1024, "the dropped block stays cached");
    let b = AlignedBuf::for_overwrite(128 * 1024);
    assert_eq!(
        mapped_bytes(),
        128 * 1024,
        "the cached block is reused, not mapped again"
    );

    // Above MAX_POOLED: a mapping of its own, gone on drop.
    let big = AlignedBuf::zeroed(MAX_POOLED + 1);
    assert_eq!(mapped_bytes(), 128 * 1024 + MAX_POOLED + 4096);
    drop(big);
    assert_eq!(mapped_bytes(), 128 * 1024);

    // With caching off, a dropped pooled block is unmapped too.
    set_thread_cache_limit(0);
    drop(b);
    assert_eq!(mapped_bytes(), 0);
    let c = AlignedBuf::zeroed(4096);
    assert_eq!(mapped_bytes(), 4096);
    drop(c);
    assert_eq!(mapped_bytes(), 0);
}
