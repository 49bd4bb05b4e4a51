//! Integration tests of the io_uring block engine on real files (under the cargo target
//! dir, i.e. on /work's ext4, and on /dev/shm tmpfs).
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use gateway::block::{
    BlockDevice, BlockError, DirectMode, Engine, EngineConfig, Extent, IoFailure, OpenOptions,
};
use tokio::sync::Mutex;

const MIB: u64 = 1 << 20;

fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn create(path: &Path, size: u64, direct: DirectMode) -> BlockDevice {
    BlockDevice::open(
        path,
        &OpenOptions {
            create_size: Some(size),
            direct,
            read_only: false,
            read_cache: false,
        },
    )
    .unwrap()
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng(seed | 1);
    (0..len).map(|_| r.next() as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundtrip_many_offsets_and_sizes() {
    let d = tmpdir();
    let dev = create(&d.path().join("a.img"), 8 * MIB, DirectMode::Auto);
    assert!(
        dev.is_direct(),
        "O_DIRECT should work on the target dir's filesystem"
    );
    assert!(!dev.is_block_device());
    assert_eq!(dev.size_bytes(), 8 * MIB);
    let lbs = u64::from(dev.logical_block_size());
    let sizes = [1u64, 2, 3, 7, 8, 16, 100, 256, 1024];
    for (i, blocks) in sizes.iter().enumerate() {
        for start in [0u64, 1, 9, 1000, (8 * MIB / lbs) - blocks] {
            let off = start * lbs;
            let len = blocks * lbs;
            let data = pattern(i as u64 * 1000 + start, len as usize);
            // Write from a deliberately misaligned Bytes (forces the aligned copy) and an aligned one.
            let mut v = vec![0u8; len as usize + 1];
            v[1..].copy_from_slice(&data);
            let misaligned = Bytes::from(v).slice(1..);
            dev.write(off, misaligned, i % 2 == 0).await.unwrap();
            let got = dev.read(off, len as u32).await.unwrap();
            assert_eq!(&got[..], &data[..], "offset {off} len {len}");
            assert_eq!(got.as_ptr() as usize % 4096, 0, "read buffer is aligned");
        }
    }
    dev.flush().await.unwrap();
}

#[tokio::test]
async fn buffered_and_direct_agree() {
    let d = tmpdir();
    let p = d.path().join("b.img");
    let data = pattern(7, 64 * 1024);
    {
        let dev = create(&p, MIB, DirectMode::Off);
        assert!(!dev.is_direct());
        dev.write(4096, Bytes::from(data.clone()), true)
            .await
            .unwrap();
    }
    let dev = BlockDevice::open(
        &p,
        &OpenOptions {
            direct: DirectMode::On,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(dev.is_direct());
    assert_eq!(&dev.read(4096, 65536).await.unwrap()[..], &data[..]);
}

#[tokio::test]
async fn range_and_alignment_checks() {
    let d = tmpdir();
    let dev = create(&d.path().join("c.img"), MIB, DirectMode::Auto);
    assert!(matches!(
        dev.read(MIB, 512).await,
        Err(IoFailure::OutOfRange { .. })
    ));
    assert!(matches!(
        dev.read(MIB - 512, 1024).await,
        Err(IoFailure::OutOfRange { .. })
    ));
    assert!(matches!(
        dev.read(u64::MAX - 100, 512).await,
        Err(IoFailure::OutOfRange { .. })
    ));
    assert!(matches!(
        dev.read(100, 512).await,
        Err(IoFailure::Misaligned { .. })
    ));
    assert!(matches!(
        dev.write(0, Bytes::from(vec![1u8; 100]), false).await,
        Err(IoFailure::Misaligned { .. })
    ));
    assert!(matches!(
        dev.discard(MIB - 512, 4096).await,
        Err(IoFailure::OutOfRange { .. })
    ));
    assert_eq!(dev.read(MIB - 512, 512).await.unwrap().len(), 512);
    assert_eq!(dev.read(0, 0).await.unwrap().len(), 0);
}

#[tokio::test]
async fn discard_punches_a_hole() {
    let d = tmpdir();
    let p = d.path().join("d.img");
    let dev = create(&p, 4 * MIB, DirectMode::Auto);
    assert!(dev.supports_discard());
    dev.write(0, Bytes::from(pattern(3, 4 * MIB as usize)), false)
        .await
        .unwrap();
    dev.flush().await.unwrap();
    let before = std::fs::metadata(&p).unwrap().blocks();
    assert!(
        before >= 8 * 1024,
        "file should be allocated, st_blocks={before}"
    );
    dev.discard(MIB, 2 * MIB).await.unwrap();
    let after = std::fs::metadata(&p).unwrap().blocks();
    assert!(after <= before - 4 * 1024, "st_blocks {before} -> {after}");
    assert!(dev
        .read(MIB, 2 * MIB as u32)
        .await
        .unwrap()
        .iter()
        .all(|&b| b == 0));
    let m = dev.mapping_status(0, 4 * MIB).await.unwrap();
    assert_eq!(
        m,
        vec![
            Extent {
                offset: 0,
                len: MIB,
                mapped: true
            },
            Extent {
                offset: MIB,
                len: 2 * MIB,
                mapped: false
            },
            Extent {
                offset: 3 * MIB,
                len: MIB,
                mapped: true
            },
        ]
    );
    // Data around the hole is untouched.
    let all = pattern(3, 4 * MIB as usize);
    assert_eq!(
        &dev.read(0, MIB as u32).await.unwrap()[..],
        &all[..MIB as usize]
    );
    assert_eq!(
        &dev.read(3 * MIB, MIB as u32).await.unwrap()[..],
        &all[3 * MIB as usize..]
    );
}

#[tokio::test]
async fn write_zeroes_both_ways() {
    let d = tmpdir();
    let p = d.path().join("z.img");
    let dev = create(&p, 2 * MIB, DirectMode::Auto);
    dev.write(0, Bytes::from(vec![0xAB; 2 * MIB as usize]), false)
        .await
        .unwrap();
    dev.write_zeroes(4096, 65536, false).await.unwrap();
    dev.write_zeroes(MIB, 65536, true).await.unwrap();
    let got = dev.read(0, 2 * MIB as u32).await.unwrap();
    for (i, &b) in got.iter().enumerate() {
        let i = i as u64;
        let zero = (4096..4096 + 65536).contains(&i) || (MIB..MIB + 65536).contains(&i);
        assert_eq!(b, if zero { 0 } else { 0xAB }, "byte {i}");
    }
    let m = dev.mapping_status(MIB, 65536).await.unwrap();
    assert_eq!(
        m,
        vec![Extent {
            offset: MIB,
            len: 65536,
            mapped: false
        }]
    );
}

#[tokio::test]
async fn mapping_status_of_sparse_file() {
    let d = tmpdir();
    let dev = create(&d.path().join("m.img"), 8 * MIB, DirectMode::Auto);
    assert_eq!(
        dev.mapping_status(0, 8 * MIB).await.unwrap(),
        vec![Extent {
            offset: 0,
            len: 8 * MIB,
            mapped: false
        }]
    );
    dev.write(2 * MIB, Bytes::from(vec![1u8; MIB as usize]), false)
        .await
        .unwrap();
    dev.flush().await.unwrap();
    let m = dev.mapping_status(0, 8 * MIB).await.unwrap();
    // Contiguous cover of the whole range, and the written MiB is mapped.
    let mut pos = 0;
    for e in &m {
        assert_eq!(e.offset, pos);
        pos += e.len;
    }
    assert_eq!(pos, 8 * MIB);
    assert!(
        m.iter()
            .any(|e| e.mapped && e.offset <= 2 * MIB && e.offset + e.len >= 3 * MIB),
        "{m:?}"
    );
    assert!(!m.first().unwrap().mapped);
    // A sub-range query is clipped to the range.
    let sub = dev.mapping_status(2 * MIB + 4096, 8192).await.unwrap();
    assert_eq!(
        sub,
        vec![Extent {
            offset: 2 * MIB + 4096,
            len: 8192,
            mapped: true
        }]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_mixed_ops_match_model() {
    const TASKS: u64 = 16;
    const OPS: u64 = 16; // 256 operations in all
    const REGION: u64 = 256 * 1024;
    let d = tmpdir();
    let dev = create(&d.path().join("cc.img"), TASKS * REGION, DirectMode::Auto);
    let model = Arc::new(Mutex::new(vec![0u8; (TASKS * REGION) as usize]));
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let dev = dev.clone();
        let model = model.clone();
        handles.push(tokio::spawn(async move {
            let mut r = Rng(0x9E37_79B9 + t);
            let base = t * REGION;
            for i in 0..OPS {
                let blocks = 1 + r.below(32);
                let off = base + r.below(REGION / 512 - blocks) * 512;
                let len = blocks * 512;
                let range = off as usize..(off + len) as usize;
                match r.below(5) {
                    0 | 1 => {
                        let data = pattern(t * 100 + i, len as usize);
                        dev.write(off, Bytes::from(data.clone()), r.below(4) == 0)
                            .await
                            .unwrap();
                        model.lock().await[range].copy_from_slice(&data);
                    }
                    2 => {
                        let got = dev.read(off, len as u32).await.unwrap();
                        assert_eq!(&got[..], &model.lock().await[range], "task {t} op {i}");
                    }
                    3 => {
                        if r.below(2) == 0 {
                            dev.discard(off, len).await.unwrap();
                        } else {
                            dev.write_zeroes(off, len, r.below(2) == 0).await.unwrap();
                        }
                        model.lock().await[range].fill(0);
                    }
                    _ => dev.flush().await.unwrap(),
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let all = dev.read(0, (TASKS * REGION) as u32).await.unwrap();
    assert!(
        all[..] == model.lock().await[..],
        "final contents differ from model"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_futures_are_harmless() {
    let d = tmpdir();
    let dev = create(&d.path().join("drop.img"), 16 * MIB, DirectMode::Auto);
    for round in 0..20u64 {
        let mut tasks = Vec::new();
        for i in 0..32u64 {
            let dev = dev.clone();
            tasks.push(tokio::spawn(async move {
                let off = (i % 16) * MIB;
                if i % 2 == 0 {
                    let _ = dev
                        .write(off, Bytes::from(vec![round as u8; MIB as usize]), false)
                        .await;
                } else {
                    let _ = dev.read(off, MIB as u32).await;
                }
            }));
        }
        // Cancel everything at once: some ops are queued, some in flight, some done.
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        // Futures dropped before their first poll never submit; poll-then-drop ones do.
        let f = dev.read(0, 4096);
        let _ = tokio::time::timeout(std::time::Duration::from_micros(1), f).await;
    }
    // The device (and the shared engine) still work, and the device can be dropped
    // while the engine may still hold its fd for cancelled operations.
    dev.write(0, Bytes::from(vec![9u8; 4096]), true)
        .await
        .unwrap();
    assert!(dev.read(0, 4096).await.unwrap().iter().all(|&b| b == 9));
    drop(dev);
}

#[tokio::test]
async fn own_engine_starts_and_stops() {
    let d = tmpdir();
    let engine = Engine::start(&EngineConfig { ring_entries: 8 }).unwrap();
    let opts = OpenOptions {
        create_size: Some(MIB),
        ..Default::default()
    };
    let dev =
        BlockDevice::open_with_engine(&d.path().join("e.img"), &opts, engine.clone()).unwrap();
    // More concurrent ops than ring entries: exercises the in-flight cap / pending queue.
    let futs: Vec<_> = (0..64u64)
        .map(|i| {
            let dev = dev.clone();
            tokio::spawn(async move {
                dev.write(i * 4096, Bytes::from(vec![i as u8; 4096]), false)
                    .await
            })
        })
        .collect();
    for f in futs {
        f.await.unwrap().unwrap();
    }
    for i in 0..64u64 {
        assert!(dev
            .read(i * 4096, 4096)
            .await
            .unwrap()
            .iter()
            .all(|&b| b == i as u8));
    }
    drop(engine);
    drop(dev); // last handle: the engine thread winds down
}

#[test]
fn second_open_is_busy() {
    let d = tmpdir();
    let p = d.path().join("busy.img");
    let _first = create(&p, MIB, DirectMode::Auto);
    match BlockDevice::open(&p, &OpenOptions::default()) {
        Err(e @ BlockError::Busy { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&p.display().to_string()), "{msg}");
            assert!(msg.contains("busy"), "{msg}");
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    drop(_first);
    assert!(BlockDevice::open(&p, &OpenOptions::default()).is_ok());
}

#[test]
fn missing_file_without_size() {
    let d = tmpdir();
    let p: PathBuf = d.path().join("nope.img");
    assert!(matches!(
        BlockDevice::open(&p, &OpenOptions::default()),
        Err(BlockError::NotFound { .. })
    ));
    assert!(matches!(
        BlockDevice::open(d.path(), &OpenOptions::default()),
        Err(BlockError::BadKind { .. })
    ));
}

#[test]
fn grows_but_never_shrinks() {
    let d = tmpdir();
    let p = d.path().join("grow.img");
    drop(create(&p, MIB, DirectMode::Auto));
    assert_eq!(create(&p, 2 * MIB, DirectMode::Auto).size_bytes(), 2 * MIB);
    assert_eq!(create(&p, MIB, DirectMode::Auto).size_bytes(), 2 * MIB);
}

#[tokio::test]
async fn read_only_refuses_writes() {
    let d = tmpdir();
    let p = d.path().join("ro.img");
    drop(create(&p, MIB, DirectMode::Auto));
    let dev = BlockDevice::open(
        &p,
        &OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(matches!(
        dev.write(0, Bytes::from(vec![0u8; 512]), false).await,
        Err(IoFailure::ReadOnly)
    ));
    assert!(matches!(
        dev.discard(0, 512).await,
        Err(IoFailure::ReadOnly)
    ));
    assert_eq!(dev.read(0, 512).await.unwrap().len(), 512);
}

/// Whether the kernel accepts O_DIRECT for a file in `dir`.
fn kernel_allows_direct(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_DIRECT)
        .open(dir.join("probe"))
        .is_ok()
}

#[tokio::test]
async fn dev_shm_direct_or_fallback() {
    let Ok(d) = tempfile::tempdir_in("/dev/shm") else {
        return; // no /dev/shm here
    };
    let expect = kernel_allows_direct(d.path());
    let dev = create(&d.path().join("shm.img"), MIB, DirectMode::Auto);
    // Older kernels' tmpfs refuses O_DIRECT (EINVAL) and Auto falls back to buffered;
    // since Linux 6.6 tmpfs accepts it. Either way is_direct() must tell the truth.
    assert_eq!(dev.is_direct(), expect);
    dev.write(0, Bytes::from(vec![5u8; 8192]), true)
        .await
        .unwrap();
    assert!(dev.read(0, 8192).await.unwrap().iter().all(|&b| b == 5));
}

/// The read cache serves reads from the page cache while writes go O_DIRECT through the
/// other fd: every read must still see the newest write, hole punch and zeroing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_cache_sees_every_direct_write() {
    let d = tmpdir();
    let path = d.path().join("rc.img");
    let dev = BlockDevice::open(
        &path,
        &OpenOptions {
            create_size: Some(4 * MIB),
            direct: DirectMode::On,
            read_cache: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(dev.is_direct() && dev.has_read_cache());
    let mut rng = Rng(7);
    for round in 0..200u64 {
        let off = rng.below(4 * MIB / 4096 - 4) * 4096;
        let len = 4096 * (1 + rng.below(4)) as usize;
        // Cache the old contents first, so a stale page would be there to be served.
        let _ = dev.read(off, len as u32).await.unwrap();
        let data = pattern(round + 1, len);
        dev.write(off, Bytes::from(data.clone()), false)
            .await
            .unwrap();
        let back = dev.read(off, len as u32).await.unwrap();
        assert!(back[..] == data[..], "round {round}: stale read at {off}");
    }
    dev.write_zeroes(0, MIB, true).await.unwrap();
    let back = dev.read(0, MIB as u32).await.unwrap();
    assert!(
        back.iter().all(|b| *b == 0),
        "stale data after a hole punch"
    );
    // Without the read cache a LUN opens one fd as before.
    drop(dev);
    let plain = create(&path, 4 * MIB, DirectMode::On);
    assert!(!plain.has_read_cache());
}
