//! Registration of a thread's arena with its rings: each ring gets the arena as buffer 0,
//! whether by cloning the thread's registration (Linux 6.12+) or, where the kernel cannot
//! clone, by registering it itself, and fixed reads and writes through either ring move the
//! right bytes. The kernel here can clone, so the second path is reached by making the clone
//! answer EINVAL as older kernels do. Each test runs on a thread of its own, as a
//! connection thread would, because the arena and the registration source are per thread.
#![allow(clippy::unwrap_used)]

use std::cell::Cell;
use std::os::fd::AsRawFd;

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

/// On a fresh thread with an arena: two rings registered through `register_thread_arena`;
/// a fixed write through the first ring and a fixed read through the second must move the
/// bytes of two arena buffers through a file.
fn two_rings_move_bytes(no_clone: bool) {
    std::thread::spawn(move || {
        PRETEND_NO_CLONE.set(no_clone);
        let arena = bufpool::enable_thread_arena(2 << 20).unwrap();
        let file = tempfile::tempfile().unwrap();
        let fd = types::Fd(file.as_raw_fd());
        let writer = IoUring::new(4).unwrap();
        let reader = IoUring::new(4).unwrap();
        assert_eq!(register_thread_arena(&writer), Some(arena));
        assert_eq!(register_thread_arena(&reader), Some(arena));

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
    .unwrap()
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
