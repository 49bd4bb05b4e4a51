//! Registration of a thread's arena with its rings: each ring gets the arena as buffer 0,
//! whether by cloning the thread's registration (Linux 6.12+) or, where the kernel cannot
//! clone, by registering it itself, and fixed reads and writes through either ring move the
//! right bytes. Where the kernel can clone, the second path is reached by making the clone
//! answer EINVAL as older kernels do. Each test runs on a thread of its own, as a connection
//! thread would, because the arena and the registration source are per thread. What the
//! kernel pinned is read from `VmPin` (io_uring counts registered pages there, with or
//! without CAP_IPC_LOCK): cloned rings pin the arena once per thread, rings that register it
//! themselves once each, and never the thread's one-entry ring on top.
#![allow(clippy::unwrap_used)]

use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bufpool::AlignedBuf;
use io_uring::{opcode, squeue, types, IoUring};

use super::*;

thread_local! {
    /// Set by a test: the clone fails as on a kernel before 6.12.
    pub(super) static PRETEND_NO_CLONE: Cell<bool> = const { Cell::new(false) };
}

/// Runs one SQE on `ring` and returns its result.
fn run_one(ring: &IoUring, sqe: squeue::Entry) -> i32 {
    // SAFETY: the SQE's buffer is borrowed by the caller until this returns, and this
    // waits for its completion.
    unsafe { ring.submission_shared().push(&sqe).unwrap() };
    ring.submit_and_wait(1).unwrap();
    // SAFETY: the ring is used by this thread only.
    let cqe = unsafe { ring.completion_shared() }.next().unwrap();
    cqe.result()
}

/// Pages the process has pinned (`VmPin`), in KiB.
fn pinned_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmPin:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Only these tests pin memory in this test binary; one at a time, so `VmPin` moves by
/// what the running one does.
static PINNING: Mutex<()> = Mutex::new(());

/// On a fresh thread with a 2 MiB arena: two rings registered through
/// `register_thread_arena`; a fixed write through the first ring and a fixed read through
/// the second must move the bytes of two arena buffers through a file. While the rings
/// live, the arena is pinned once when they cloned the thread's registration and once per
/// ring when they registered it themselves (as the kernel made them: `no_clone`, or a kernel
/// before 6.12). Waits (bounded) for the kernel to unpin it all once the thread is gone.
fn two_rings_move_bytes(no_clone: bool) {
    let _one_at_a_time = PINNING.lock().unwrap_or_else(|p| p.into_inner());
    let before = pinned_kib();
    std::thread::spawn(move || {
        PRETEND_NO_CLONE.set(no_clone);
        let arena = bufpool::enable_thread_arena(2 << 20).unwrap();
        let file = tempfile::tempfile().unwrap();
        let fd = types::Fd(file.as_raw_fd());
        let writer = IoUring::new(4).unwrap();
        let reader = IoUring::new(4).unwrap();
        assert_eq!(register_thread_arena(&writer), Some(arena));
        assert_eq!(register_thread_arena(&reader), Some(arena));
        let per_ring = SOURCE.with(|s| matches!(*s.borrow(), Source::PerRing));
        assert!(
            per_ring || !no_clone,
            "a refused clone makes the thread register per ring"
        );
        let copies = if per_ring { 2 } else { 1 };
        assert_eq!(pinned_kib() - before, copies * 2048, "KiB pinned");

        let len = 64 << 10;
        let mut out = AlignedBuf::for_overwrite(len);
        for (i, b) in out.as_mut_slice().iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(13) ^ 0x5a;
        }
        let mut back = AlignedBuf::zeroed(len);
        assert!(arena.contains(out.as_slice().as_ptr(), len));
        assert!(arena.contains(back.as_slice().as_ptr(), len));

        let write = opcode::WriteFixed::new(fd, out.as_slice().as_ptr(), len as u32, 0)
            .offset(4096)
            .build();
        assert_eq!(run_one(&writer, write), len as i32, "fixed write");
        let read = opcode::ReadFixed::new(fd, back.as_mut_slice().as_mut_ptr(), len as u32, 0)
            .offset(4096)
            .build();
        assert_eq!(run_one(&reader, read), len as i32, "fixed read");
        assert_eq!(back.as_slice(), out.as_slice());
    })
    .join()
    .unwrap();
    // Ring teardown runs in the kernel's workqueue: give it a moment, bounded.
    let deadline = Instant::now() + Duration::from_secs(5);
    while pinned_kib() != before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        pinned_kib(),
        before,
        "all unpinned after the rings are gone"
    );
}

#[test]
fn rings_clone_the_thread_registration() {
    two_rings_move_bytes(false);
}

#[test]
fn without_cloning_each_ring_registers_the_arena_itself() {
    two_rings_move_bytes(true);
}

#[test]
fn a_thread_without_an_arena_registers_nothing() {
    let region = std::thread::spawn(|| register_thread_arena(&IoUring::new(2).unwrap()))
        .join()
        .unwrap();
    assert_eq!(region, None);
}
