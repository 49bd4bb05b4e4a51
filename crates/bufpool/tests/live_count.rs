#![allow(clippy::unwrap_used)]
//! `AlignedBuf::live_count` stays exact when buffers are made on one thread and dropped on
//! another (the count is sharded per thread). A test binary of its own: the count is
//! process-wide.

use bufpool::AlignedBuf;

#[test]
fn live_count_follows_buffers_across_threads() {
    let a = AlignedBuf::zeroed(4096);
    let b = AlignedBuf::zeroed(8192);
    assert_eq!(AlignedBuf::live_count(), 2);
    // Made here, dropped on another thread: the two slots must still sum right.
    std::thread::spawn(move || drop(a)).join().unwrap();
    assert_eq!(AlignedBuf::live_count(), 1);
    // Made on another thread, dropped here.
    let c = std::thread::spawn(|| AlignedBuf::zeroed(4096))
        .join()
        .unwrap();
    assert_eq!(AlignedBuf::live_count(), 2);
    drop(b);
    drop(c);
    assert_eq!(
        AlignedBuf::live_count(),
        0,
        "every buffer made and dropped is counted out"
    );
}
