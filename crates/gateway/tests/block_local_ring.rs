//! Per-connection rings (`block::LocalRing`): inside `ring_scope` a device's operations go
//! to the task's own ring, complete once the task reaps it, and read back what was written;
//! dropping a ring with operations still in the kernel frees their buffers only after the
//! kernel is done. Own test binary, so the process-wide buffer counter is not disturbed.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway::block::{ring_scope, AlignedBuf, BlockDevice, DirectMode, LocalRing, OpenOptions};

fn open(dir: &tempfile::TempDir) -> BlockDevice {
    let opts = OpenOptions {
        create_size: Some(16 << 20),
        direct: DirectMode::Auto,
        read_only: false,
        read_cache: false,
    };
    BlockDevice::open(&dir.path().join("ring.img"), &opts).unwrap()
}

/// Drives `f` the way a connection task does: poll, submit what it queued, sleep until the
/// ring has completions, reap. Records the most operations seen queued on the ring.
async fn drive<T>(ring: &Arc<LocalRing>, f: impl Future<Output = T>, seen: &mut usize) -> T {
    let mut f = pin!(f);
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
    dropping_a_busy_ring_waits_for_the_kernel().await;
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

async fn dropping_a_busy_ring_waits_for_the_kernel() {
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dev = open(&d);
    let baseline = AlignedBuf::live_count();
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
        drop(ring);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while AlignedBuf::live_count() > baseline && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(AlignedBuf::live_count(), baseline, "buffers leaked");
    dev.write(0, Bytes::from(vec![1u8; 4096]), true)
        .await
        .unwrap();
}
