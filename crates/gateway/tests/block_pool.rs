//! Read buffers come from the pool without zeroing (`AlignedBuf::for_overwrite`): a read
//! must never hand out bytes an earlier user of a recycled buffer left behind, whether it
//! reads a hole, data, or runs into the end of a file that shrank under the device.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use gateway::block::{AlignedBuf, BlockDevice, DirectMode, OpenOptions};

const LEN: usize = 128 << 10;

/// Leaves a buffer full of 0xee in this thread's free list (the class of `LEN`) and
/// returns its address, which the next buffer of that class gets.
fn seed_dirty_buffer() -> usize {
    let mut b = AlignedBuf::for_overwrite(LEN);
    b.as_mut_slice().fill(0xee);
    let p = b.as_mut_ptr() as usize;
    drop(b);
    p
}

fn open(dir: &tempfile::TempDir, size: u64) -> (BlockDevice, std::path::PathBuf) {
    let path = dir.path().join("pool.img");
    let opts = OpenOptions {
        create_size: Some(size),
        direct: DirectMode::Auto,
        read_only: false,
        read_cache: false,
    };
    (BlockDevice::open(&path, &opts).unwrap(), path)
}

// Current-thread runtime: the read allocates its buffer on this thread, from the list the
// seeding filled.
#[tokio::test]
async fn recycled_read_buffers_show_only_what_was_read() {
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (dev, _) = open(&d, 4 << 20);

    // A hole reads as zeroes, not as the recycled buffer's 0xee.
    let dirty = seed_dirty_buffer();
    let got = dev.read(0, LEN as u32).await.unwrap();
    assert_eq!(got.as_ptr() as usize, dirty, "the dirty buffer was reused");
    assert!(
        got.iter().all(|&b| b == 0),
        "stale bytes in a read of a hole"
    );
    drop(got);

    // Written data reads back exactly.
    dev.write(LEN as u64, Bytes::from(vec![7u8; LEN]), false)
        .await
        .unwrap();
    let dirty = seed_dirty_buffer();
    let got = dev.read(LEN as u64, LEN as u32).await.unwrap();
    assert_eq!(got.as_ptr() as usize, dirty, "the dirty buffer was reused");
    assert!(got.iter().all(|&b| b == 7));
}

#[tokio::test]
async fn a_read_cut_short_by_end_of_file_fails_instead_of_returning_stale_bytes() {
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (dev, path) = open(&d, 4 << 20);
    dev.write(0, Bytes::from(vec![5u8; 4 << 20]), false)
        .await
        .unwrap();
    // The backing file shrinks under the open device: the device still believes it has
    // 4 MiB, so reads past the new end get a short read from the kernel.
    let cut = (1u64 << 20) + 8192;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(cut)
        .unwrap();
    for offset in [cut - 8192, cut, 2 << 20] {
        seed_dirty_buffer();
        let r = dev.read(offset, LEN as u32).await;
        assert!(r.is_err(), "read at {offset} past the end returned {r:?}");
    }
    // Below the cut everything is still there.
    let got = dev.read(cut - LEN as u64 - 8192, LEN as u32).await.unwrap();
    assert!(got.iter().all(|&b| b == 5));
}
