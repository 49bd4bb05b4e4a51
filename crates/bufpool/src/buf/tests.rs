//! Unit tests of `AlignedBuf` and the pool behind it. Each test runs on a thread of its
//! own, so it sees its own free lists; none changes the global cache limit.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::{thread_cache_limit, thread_cached_bytes, MAX_POOLED};
use bytes::Bytes;

#[test]
fn aligned_and_zeroed() {
    for len in [0usize, 1, 511, 512, 4096, 4097, 1 << 20, (1 << 20) + 1] {
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

#[test]
fn same_class_reuses_the_block_and_zeroed_clears_it() {
    let mut a = AlignedBuf::for_overwrite(128 << 10);
    a.as_mut_slice().fill(0xaa);
    let p = a.as_mut_ptr();
    drop(Bytes::from_owner(a));
    assert_eq!(thread_cached_bytes(), 128 << 10);
    // 100 KiB rounds up to the same 128 KiB class.
    let mut b = AlignedBuf::for_overwrite(100 << 10);
    assert_eq!(b.as_mut_ptr(), p, "recycled");
    assert_eq!(thread_cached_bytes(), 0);
    assert_eq!(b.as_slice()[0], 0xaa, "for_overwrite keeps what was there");
    drop(b);
    let mut z = AlignedBuf::zeroed(128 << 10);
    assert_eq!(z.as_mut_ptr(), p, "recycled");
    assert!(
        z.as_slice().iter().all(|&x| x == 0),
        "zeroed clears a recycled block"
    );
    // Another class does not take it.
    drop(z);
    let mut other = AlignedBuf::for_overwrite(64 << 10);
    assert_ne!(other.as_mut_ptr(), p);
    assert!(
        other.as_slice().iter().all(|&x| x == 0),
        "fresh mappings are zero"
    );
}

#[test]
fn free_lists_stay_within_the_bound() {
    let limit = thread_cache_limit();
    let n = limit / MAX_POOLED + 3;
    let bufs: Vec<AlignedBuf> = (0..n)
        .map(|_| AlignedBuf::for_overwrite(MAX_POOLED))
        .collect();
    drop(bufs);
    let cached = thread_cached_bytes();
    assert!(cached <= limit, "{cached} > {limit}");
    assert!(
        cached + MAX_POOLED > limit,
        "the list fills up to the bound: {cached}"
    );
    // Buffers above the largest class are never cached.
    drop(AlignedBuf::zeroed(MAX_POOLED + 1));
    assert_eq!(thread_cached_bytes(), cached);
}

#[test]
fn a_buffer_dropped_on_another_thread_goes_to_that_thread() {
    let mut b = AlignedBuf::zeroed(8192);
    b.as_mut_slice().fill(3);
    let before = thread_cached_bytes();
    let cached_there = std::thread::spawn(move || {
        let mine = thread_cached_bytes();
        drop(b);
        thread_cached_bytes() - mine
    })
    .join()
    .unwrap();
    assert_eq!(cached_there, 8192);
    assert_eq!(thread_cached_bytes(), before);
    // The other thread's list was unmapped when it exited; this thread still works.
    let z = AlignedBuf::zeroed(8192);
    assert!(z.as_slice().iter().all(|&x| x == 0));
}

#[test]
fn dropping_after_the_free_lists_are_gone_unmaps() {
    thread_local! {
        static KEEP: std::cell::RefCell<Vec<AlignedBuf>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    std::thread::spawn(|| {
        // Whichever thread-local is destroyed first, the buffer is cached or unmapped, and
        // a cache destroyed first is not touched again.
        drop(AlignedBuf::zeroed(4096));
        KEEP.with(|k| k.borrow_mut().push(AlignedBuf::zeroed(4096)));
    })
    .join()
    .unwrap();
}
