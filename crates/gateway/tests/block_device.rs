//! The block engine on a real block device: a loop device over a sparse file, set up
//! with `losetup` when this machine allows it (root, loop driver); skipped otherwise.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use bytes::Bytes;
use gateway::block::{BlockDevice, BlockError, Extent, OpenOptions};

/// A loop device we attached; detached on drop.
struct Loop {
    dev: PathBuf,
    _dir: tempfile::TempDir,
}

impl Loop {
    fn attach(size: u64) -> Option<Loop> {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).ok()?;
        let img = dir.path().join("loop.img");
        std::fs::File::create(&img).ok()?.set_len(size).ok()?;
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&img)
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let dev = String::from_utf8(out.stdout).ok()?.trim().to_string();
        Some(Loop {
            dev: PathBuf::from(dev),
            _dir: dir,
        })
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

#[tokio::test]
async fn loop_device() {
    let Some(lo) = Loop::attach(64 << 20) else {
        eprintln!("skipped: cannot attach a loop device here");
        return;
    };
    let dev = BlockDevice::open(&lo.dev, &OpenOptions::default()).unwrap();
    assert!(dev.is_block_device());
    assert!(dev.is_direct());
    assert_eq!(dev.size_bytes(), 64 << 20);
    assert_eq!(dev.logical_block_size(), 512);
    assert!(dev.physical_block_size() >= 512);

    // Exclusive: a second open (O_EXCL) is refused with Busy naming the device.
    match BlockDevice::open(&lo.dev, &OpenOptions::default()) {
        Err(e @ BlockError::Busy { .. }) => {
            assert!(e.to_string().contains(&lo.dev.display().to_string()))
        }
        other => panic!("expected Busy, got {other:?}"),
    }

    let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 253) as u8).collect();
    dev.write(4096, Bytes::from(data.clone()), true)
        .await
        .unwrap();
    dev.flush().await.unwrap();
    assert_eq!(&dev.read(4096, 1 << 20).await.unwrap()[..], &data[..]);

    dev.write_zeroes(8192, 65536, false).await.unwrap();
    assert!(dev.read(8192, 65536).await.unwrap().iter().all(|&b| b == 0));
    assert_eq!(dev.read(4096, 4096).await.unwrap()[..], data[..4096]);

    if dev.supports_discard() {
        dev.discard(1 << 20, 1 << 20).await.unwrap();
    }
    assert_eq!(
        dev.mapping_status(0, 64 << 20).await.unwrap(),
        vec![Extent {
            offset: 0,
            len: 64 << 20,
            mapped: true
        }]
    );
    drop(dev);
    // Released: opening again works.
    assert!(BlockDevice::open(&lo.dev, &OpenOptions::default()).is_ok());
}
