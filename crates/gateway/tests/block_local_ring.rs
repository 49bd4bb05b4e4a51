//! Per-connection rings (`block::LocalRing`): inside `ring_scope` a device's operations go
//! to the task's own ring, complete once the task reaps it, and read back what was written;
//! dropping a ring with operations still in the kernel frees their buffers only after the
//! kernel is done; on a thread with a registered-buffer arena, transfers from inside it use
//! READ_FIXED / WRITE_FIXED and all others plain reads and writes, and both land. Own test
//! binary, so the process-wide buffer and operation counters are not disturbed.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway::block::{
    registered_ops_total, ring_scope, AlignedBuf, BlockDevice, DirectMode, LocalRing, OpenOptions,
};

fn open(dir: &tempfile::TempDir) -> BlockDevice {
    open_with(dir, DirectMode::Auto)
}

/// A 16 MiB device `ring.img` in `dir`, opened in `direct` mode.
fn open_with(dir: &tempfile::TempDir, direct: DirectMode) -> BlockDevice {
    let opts = OpenOptions {
        create_size: Some(16 << 20),
        direct,
        read_only: false,
        read_cache: false,
    };
    BlockDevice::open(&dir.path().join("ring.img"), &opts).unwrap()
}

/// Drives `f` the way a connection task does: poll, submit what it queued (which reaps what
/// the kernel finished inside the submit), sleep until the ring has completions if any
/// operation is still out, reap. Records the most operations seen queued on the ring.
async fn drive<T>(ring: &Arc<LocalRing>, f: impl Future<Output = T>, seen: &mut usize) -> T {
    let mut f = pin!(f);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let step = std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = f.as_mut().poll(cx) {
                return Poll::Ready(Some(v));
            }
            *seen = (*seen).max(ring.busy());
            ring.submit();
            Poll::Ready(None)
        })
        .await;
        if let Some(v) = step {
            return v;
        }
        if ring.busy() == 0 {
            // Nothing on the ring: what the future waits for is elsewhere (bounded).
            assert!(Instant::now() < deadline, "the future never finished");
            tokio::task::yield_now().await;
            continue;
        }
        tokio::time::timeout(Duration::from_secs(10), ring.ready())
            .await
            .expect("ring never became ready");
        ring.reap();
    }
}

// One test function: the two parts must not run in parallel (shared buffer counter).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_rings() {
    operations_in_scope_run_on_the_local_ring().await;
    what_the_kernel_finishes_at_once_completes_in_the_same_wake_up().await;
    dropping_a_busy_ring_waits_for_the_kernel().await;
    std::thread::spawn(registered_buffers_are_used_where_they_may_be)
        .join()
        .unwrap();
}

/// Operations counted as (registered, unregistered) while `f` runs.
fn ops_during<T>(f: impl FnOnce() -> T) -> (T, u64, u64) {
    let (r0, u0) = registered_ops_total();
    let out = f();
    let (r1, u1) = registered_ops_total();
    (out, r1 - r0, u1 - u0)
}

/// On a thread of its own, as a connection thread: an arena, a ring registered with it.
fn registered_buffers_are_used_where_they_may_be() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let region = bufpool::enable_thread_arena(4 << 20).unwrap();
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = d.path().join("ring.img");
    let dev = open(&d);
    let ring = rt.block_on(async { LocalRing::new(16, false) }).unwrap();
    let run = |f: std::pin::Pin<Box<dyn Future<Output = ()> + '_>>| {
        rt.block_on(ring_scope(Some(ring.clone()), async {
            drive(&ring, f, &mut 0).await;
        }))
    };
    let pattern = |seed: u8, len: usize| -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    };

    // Unaligned data is copied into an arena buffer, reads land in arena buffers: all of
    // it registered, for 4 KiB up to the largest arena block.
    let sizes = [4096usize, 64 << 10, 128 << 10, 1 << 20];
    let ((), registered, unregistered) = ops_during(|| {
        run(Box::pin(async {
            for (i, len) in sizes.into_iter().enumerate() {
                let data = pattern(i as u8, len);
                let mut v = vec![0u8; len + 1];
                v[1..].copy_from_slice(&data);
                let off = (i as u64) << 20;
                dev.write(off, Bytes::from(v).slice(1..), true)
                    .await
                    .unwrap();
                let back = dev.read(off, len as u32).await.unwrap();
                assert!(region.contains(back.as_ptr(), len), "read into the arena");
                assert_eq!(&back[..], &data[..], "{len} bytes at {off}");
            }
        }))
    });
    assert_eq!(
        (registered, unregistered),
        (8, 0),
        "every transfer registered"
    );
    // What the ring wrote is in the file (read without the gateway's path).
    let file = std::fs::read(&path).unwrap();
    for (i, len) in sizes.into_iter().enumerate() {
        let off = i << 20;
        assert_eq!(&file[off..off + len], &pattern(i as u8, len)[..]);
    }

    // Larger than an arena block, and a buffer from another thread's arena (registered
    // with no ring of this thread): plain operations, and they land all the same.
    let foreign = std::thread::spawn(move || {
        bufpool::enable_thread_arena(2 << 20).unwrap();
        let mut b = AlignedBuf::for_overwrite(8192);
        b.as_mut_slice().copy_from_slice(&pattern(0x77, 8192));
        b
    })
    .join()
    .unwrap();
    assert!(!region.contains(foreign.as_slice().as_ptr(), 1));
    let big = pattern(0x42, 2 << 20);
    let ((), registered, unregistered) = ops_during(|| {
        run(Box::pin(async {
            dev.write(8 << 20, Bytes::from(big.clone()), false)
                .await
                .unwrap();
            dev.write(4 << 20, Bytes::from_owner(foreign), false)
                .await
                .unwrap();
            let back = dev.read(8 << 20, 2 << 20).await.unwrap();
            assert_eq!(&back[..], &big[..]);
            let back = dev.read(4 << 20, 8192).await.unwrap();
            assert_eq!(&back[..], &pattern(0x77, 8192)[..]);
        }))
    });
    // The 2 MiB write and read, and the foreign write; the 8 KiB read is registered.
    assert_eq!((registered, unregistered), (1, 3));
    drop(ring);
}

async fn operations_in_scope_run_on_the_local_ring() {
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dev = open(&d);
    let ring = LocalRing::new(8, false).unwrap();
    let mut seen = 0;
    let r = ring.clone();
    let got = ring_scope(Some(ring.clone()), async {
        let mut out = Vec::new();
        for i in 0..20u64 {
            let data: Vec<u8> = (0..4096u32).map(|b| (b as u64 + i) as u8).collect();
            let dev2 = dev.clone();
            let data2 = data.clone();
            // More operations than SQ entries at once: some wait in the ring's queue.
            let ops = async move {
                let mut writes = Vec::new();
                for k in 0..12u64 {
                    writes.push(dev2.write((i * 12 + k) * 4096, Bytes::from(data2.clone()), false));
                }
                for w in writes {
                    w.await.unwrap();
                }
                dev2.read(i * 12 * 4096 + 4096, 4096).await.unwrap()
            };
            let back = drive(&r, ops, &mut seen).await;
            out.push((back, data));
        }
        out
    })
    .await;
    assert!(seen > 0, "nothing was queued on the local ring");
    for (back, data) in got {
        assert_eq!(&back[..], &data[..]);
    }
    assert_eq!(ring.busy(), 0);
}

/// A read the page cache answers is done when `io_uring_enter` returns: the submit reaps
/// it, so the command's future is ready without waiting for the ring's fd (one reactor
/// round and one `epoll_wait` less per cached read).
async fn what_the_kernel_finishes_at_once_completes_in_the_same_wake_up() {
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dev = open_with(&d, DirectMode::Off);
    let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    dev.write(8192, Bytes::from(data.clone()), false)
        .await
        .unwrap();
    let ring = LocalRing::new(8, false).unwrap();
    let r = ring.clone();
    ring_scope(Some(ring.clone()), async move {
        let mut read = Box::pin(dev.read(8192, 4096));
        let first = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx).is_ready())).await;
        assert!(!first, "the read was queued on the ring");
        assert_eq!(r.busy(), 1);
        r.submit();
        assert_eq!(r.busy(), 0, "the cached read was reaped inside the submit");
        let back = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
        let Poll::Ready(back) = back else {
            panic!("the read's future is not ready after the submit");
        };
        assert_eq!(&back.unwrap()[..], &data[..]);
    })
    .await;
}

async fn dropping_a_busy_ring_waits_for_the_kernel() {
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dev = open(&d);
    // Reads of holes are answered inside the submit (and reaped there); written blocks
    // come from the disk, so some are still in the kernel when the ring goes.
    for k in 0..16u64 {
        dev.write(k << 20, Bytes::from(vec![0x5au8; 1 << 20]), false)
            .await
            .unwrap();
    }
    let baseline = AlignedBuf::live_count();
    let mut dropped_busy = 0;
    for _ in 0..20 {
        let ring = LocalRing::new(16, true).unwrap();
        let r = ring.clone();
        let dev2 = dev.clone();
        ring_scope(Some(ring.clone()), async move {
            let mut reads = Vec::new();
            for k in 0..16u64 {
                reads.push(Box::pin(dev2.read(k << 20, 1 << 20)));
            }
            // Poll each once (queues it), submit, then drop the futures and the ring while
            // the reads are in the kernel.
            std::future::poll_fn(|cx| {
                for f in reads.iter_mut() {
                    let _ = f.as_mut().poll(cx);
                }
                Poll::Ready(())
            })
            .await;
            r.submit();
        })
        .await;
        dropped_busy += usize::from(ring.busy() > 0);
        drop(ring);
    }
    assert!(
        dropped_busy > 0,
        "no ring was dropped with reads in the kernel"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while AlignedBuf::live_count() > baseline && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(AlignedBuf::live_count(), baseline, "buffers leaked");
    dev.write(0, Bytes::from(vec![1u8; 4096]), true)
        .await
        .unwrap();
}
