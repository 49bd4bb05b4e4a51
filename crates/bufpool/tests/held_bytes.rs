//! `held_bytes` follows the blocks the pool holds, and a large block given back to its
//! slab comes back zeroed. A test binary of its own (one test, one thread), because the
//! counter and the cache limit are process-wide and other tests beside it would move them.
#![allow(clippy::unwrap_used)]

use bufpool::{held_bytes, set_thread_cache_limit, AlignedBuf, MAX_POOLED};

#[test]
fn held_bytes_counts_live_and_cached_blocks_and_drops_when_given_back() {
    assert_eq!(held_bytes(), 0, "nothing held before the first buffer");

    // A pooled class: obtained once, kept in the thread's list after the drop, reused.
    let a = AlignedBuf::zeroed(100 * 1024);
    assert_eq!(
        held_bytes(),
        128 * 1024,
        "a 100 KiB buffer takes a 128 KiB block"
    );
    drop(a);
    assert_eq!(held_bytes(), 128 * 1024, "the dropped block stays cached");
    let b = AlignedBuf::for_overwrite(128 * 1024);
    assert_eq!(held_bytes(), 128 * 1024, "the cached block is reused");

    // Above MAX_POOLED: a mapping of its own, gone on drop.
    let big = AlignedBuf::zeroed(MAX_POOLED + 1);
    assert_eq!(held_bytes(), 128 * 1024 + MAX_POOLED + 4096);
    drop(big);
    assert_eq!(held_bytes(), 128 * 1024);

    // With caching off, a dropped block goes back at once: a slab block (128 KiB) and a
    // small mapped one (4 KiB).
    set_thread_cache_limit(0);
    drop(b);
    assert_eq!(held_bytes(), 0);
    let c = AlignedBuf::zeroed(4096);
    assert_eq!(held_bytes(), 4096);
    drop(c);
    assert_eq!(held_bytes(), 0);

    // A slab block given back keeps its address for the next taker and reads zero.
    let mut d = AlignedBuf::for_overwrite(128 * 1024);
    d.as_mut_slice().fill(0xff);
    let p = d.as_mut_ptr();
    drop(d);
    let mut e = AlignedBuf::for_overwrite(128 * 1024);
    assert_eq!(e.as_mut_ptr(), p, "the given-back block is taken again");
    assert!(
        e.as_slice().iter().all(|&x| x == 0),
        "its pages were discarded, so it reads zero"
    );
    assert_eq!(held_bytes(), 128 * 1024);
    drop(e);
    assert_eq!(held_bytes(), 0);
}
