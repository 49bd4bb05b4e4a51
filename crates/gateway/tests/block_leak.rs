//! Cancelled (dropped) block operations must not leak their buffers: once the kernel has
//! completed them, the engine frees what it held. Own test binary, so the process-wide
//! buffer counter is not disturbed by other tests running in parallel.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway::block::{AlignedBuf, BlockDevice, DirectMode, OpenOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_ops_release_their_buffers() {
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let opts = OpenOptions {
        create_size: Some(16 << 20),
        direct: DirectMode::Auto,
        read_only: false,
        read_cache: false,
    };
    let dev = BlockDevice::open(&d.path().join("leak.img"), &opts).unwrap();
    let baseline = AlignedBuf::live_count();
    let mut polled = 0;
    for round in 0..50u64 {
        let mut tasks = Vec::new();
        for i in 0..16u64 {
            let dev = dev.clone();
            tasks.push(tokio::spawn(async move {
                let off = i << 20;
                // Misaligned source forces an engine-owned aligned copy on O_DIRECT.
                let v = vec![round as u8; (1 << 20) + 1];
                let data = Bytes::from(v).slice(1..);
                if i % 2 == 0 {
                    let _ = dev.write(off, data, false).await;
                } else {
                    let _ = dev.read(off, 1 << 20).await;
                }
            }));
        }
        tokio::task::yield_now().await;
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            if t.await.is_err() {
                polled += 1;
            }
        }
    }
    assert!(
        polled > 0,
        "no operation was cancelled; the test proves nothing"
    );
    // Wait (bounded) for the kernel to finish what was in flight.
    let deadline = Instant::now() + Duration::from_secs(10);
    while AlignedBuf::live_count() > baseline && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(AlignedBuf::live_count(), baseline, "buffers leaked");
    // And the device still works.
    dev.write(0, Bytes::from(vec![1u8; 4096]), true)
        .await
        .unwrap();
    assert_eq!(dev.read(0, 4096).await.unwrap()[0], 1);
}
