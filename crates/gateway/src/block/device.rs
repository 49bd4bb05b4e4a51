//! `BlockDevice`: opening (exclusive, O_DIRECT with fallback, create/grow for files),
//! device properties, and the async data operations built on the io_uring engine.

use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::engine::{Engine, Op, WriteData};
use super::error::{BlockError, IoFailure};
use super::inline_write::{pwrite_all, InlineWrites};
use super::sys;
use super::AlignedBuf;

/// Whether to use O_DIRECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectMode {
    /// O_DIRECT when the filesystem accepts it, buffered otherwise (logged).
    #[default]
    Auto,
    /// O_DIRECT or fail to open.
    On,
    /// Buffered I/O through the page cache: writes are acknowledged from it (the LUN
    /// reports a volatile write cache, so initiators flush what must be durable), reads
    /// are served from it. For a block device, what the page cache held from before the
    /// open is dropped.
    Off,
}

/// How to open a backing store.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Files only: create the file (sparse) with this size if missing, or grow it to this
    /// size if smaller. A larger file is never shrunk.
    pub create_size: Option<u64>,
    /// O_DIRECT policy.
    pub direct: DirectMode,
    /// Open read-only; write-type operations fail with [`IoFailure::ReadOnly`].
    pub read_only: bool,
    /// With O_DIRECT: read through the page cache (a second, buffered, read-only fd), so
    /// data read or written recently is served from memory; writes stay O_DIRECT. See
    /// [`BlockDevice::has_read_cache`].
    pub read_cache: bool,
}

/// A byte range and whether it is backed by allocated storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
    pub mapped: bool,
}

/// Size of the zero buffer used when zeroing has to be done by plain writes.
const ZERO_CHUNK: u64 = 1 << 20;
/// Bound on SEEK_DATA/SEEK_HOLE steps per mapping query; the rest is reported mapped.
const MAX_MAP_STEPS: usize = 100_000;

struct Inner {
    path: PathBuf,
    fd: Arc<OwnedFd>,
    /// The buffered fd reads use when the read cache is on.
    read_fd: Option<Arc<OwnedFd>>,
    engine: Engine,
    size: u64,
    lbs: u32,
    pbs: u32,
    direct: bool,
    is_bdev: bool,
    discard: AtomicBool,
    rotational: bool,
    volatile_cache: bool,
    read_only: bool,
    /// Buffered devices: small whole-page writes go straight into the page cache
    /// (`inline_write.rs`).
    inline: InlineWrites,
}

/// An open backing store. Cheap to clone (shared inside); `Send + Sync`.
#[derive(Clone)]
pub struct BlockDevice {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BlockDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let i = &self.inner;
        f.debug_struct("BlockDevice")
            .field("path", &i.path)
            .field("size", &i.size)
            .field("lbs", &i.lbs)
            .field("direct", &i.direct)
            .field("is_bdev", &i.is_bdev)
            .finish()
    }
}

fn open_raw(path: &Path, write: bool, create: bool, flags: i32) -> io::Result<File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true).write(write).custom_flags(flags);
    if create {
        o.create(true).mode(0o600);
    }
    o.open(path)
}

/// Opens the buffered, read-only fd of the read cache. For a block device it first drops
/// whatever the page cache holds for it from before this open: with DRBD, pages an earlier
/// Primary period of this node left behind are stale once another node has written the
/// device. A regular file's page cache is always the file's truth, so it is kept.
fn open_read_cache(path: &Path, is_bdev: bool) -> io::Result<OwnedFd> {
    let file = open_raw(path, false, false, 0)?;
    if is_bdev {
        sys::drop_page_cache(file.as_raw_fd())?;
    }
    Ok(OwnedFd::from(file))
}

impl BlockDevice {
    /// Opens `path` on the process-wide engine.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Self, BlockError> {
        let engine = Engine::global().map_err(BlockError::Engine)?;
        Self::open_with_engine(path, opts, engine)
    }

    /// Opens `path`, submitting its I/O to `engine`.
    pub fn open_with_engine(
        path: &Path,
        opts: &OpenOptions,
        engine: Engine,
    ) -> Result<Self, BlockError> {
        Self::open_inner(path, opts, engine, false)
    }

    /// `refuse_direct` simulates a filesystem that rejects O_DIRECT (tests only).
    fn open_inner(
        path: &Path,
        opts: &OpenOptions,
        engine: Engine,
        refuse_direct: bool,
    ) -> Result<Self, BlockError> {
        let io_err = |source: io::Error| BlockError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = match std::fs::metadata(path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(e)),
        };
        let is_bdev = match &meta {
            Some(m) if m.file_type().is_block_device() => true,
            Some(m) if m.file_type().is_file() => false,
            Some(_) => {
                return Err(BlockError::BadKind {
                    path: path.to_path_buf(),
                })
            }
            None => {
                if opts.create_size.is_none() || opts.read_only {
                    return Err(BlockError::NotFound {
                        path: path.to_path_buf(),
                    });
                }
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(io_err)?;
                }
                false
            }
        };
        let write = !opts.read_only;
        let create = !is_bdev && opts.create_size.is_some() && write;
        let excl = if is_bdev { libc::O_EXCL } else { 0 };
        let busy = || BlockError::Busy {
            path: path.to_path_buf(),
        };
        let open = |flags: i32| -> Result<File, BlockError> {
            match open_raw(path, write, create, flags) {
                Ok(f) => Ok(f),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(busy()),
                Err(e) => Err(io_err(e)),
            }
        };
        let try_direct = |flags: i32| -> Result<File, BlockError> {
            if refuse_direct {
                return Err(io_err(io::Error::from_raw_os_error(libc::EINVAL)));
            }
            open(flags | libc::O_DIRECT)
        };
        let is_einval = |e: &BlockError| matches!(e, BlockError::Io { source, .. } if source.raw_os_error() == Some(libc::EINVAL));
        let (file, direct) = match opts.direct {
            DirectMode::Off => (open(excl)?, false),
            DirectMode::On => match try_direct(excl) {
                Ok(f) => (f, true),
                Err(e) if is_einval(&e) => {
                    return Err(BlockError::DirectUnsupported {
                        path: path.to_path_buf(),
                    })
                }
                Err(e) => return Err(e),
            },
            DirectMode::Auto => match try_direct(excl) {
                Ok(f) => (f, true),
                Err(e) if is_einval(&e) => {
                    tracing::info!(path = %path.display(), "O_DIRECT not supported here; using buffered I/O");
                    (open(excl)?, false)
                }
                Err(e) => return Err(e),
            },
        };
        let fd = file.as_raw_fd();
        if !is_bdev {
            if !sys::flock_exclusive(fd).map_err(io_err)? {
                return Err(busy());
            }
            if let Some(want) = opts.create_size {
                let have = file.metadata().map_err(io_err)?.len();
                if want > have && write {
                    file.set_len(want).map_err(io_err)?;
                } else if want < have {
                    tracing::warn!(path = %path.display(), have, want, "backing file is larger than the configured size; using the file size");
                }
            }
        }
        if is_bdev && !direct {
            // Buffered I/O serves reads from the page cache: drop what an earlier holder
            // left there (see `open_read_cache`).
            sys::drop_page_cache(fd).map_err(io_err)?;
        }
        let read_fd = if opts.read_cache && direct {
            Some(Arc::new(open_read_cache(path, is_bdev).map_err(io_err)?))
        } else {
            None
        };
        let meta = file.metadata().map_err(io_err)?;
        let props = if is_bdev {
            bdev_props(fd, &meta).map_err(io_err)?
        } else {
            file_props(&meta, direct)
        };
        if sys::accepts_nowait(fd, (props.lbs as usize).max(4096)) == Some(false) {
            // Each I/O then costs a thread wake-up: worth knowing when reading latencies.
            tracing::info!(
                path = %path.display(),
                "the device takes no non-blocking submissions (DRBD and zram do not): \
                 io_uring hands each of its I/Os to a kernel worker thread"
            );
        }
        Ok(BlockDevice {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                fd: Arc::new(OwnedFd::from(file)),
                read_fd,
                engine,
                size: props.size,
                lbs: props.lbs,
                pbs: props.pbs,
                direct,
                is_bdev,
                discard: AtomicBool::new(props.discard),
                rotational: props.rotational,
                volatile_cache: props.volatile_cache,
                read_only: opts.read_only,
                inline: InlineWrites::new(),
            }),
        })
    }

    /// The path this device was opened from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
    /// Capacity in bytes (fixed at open).
    pub fn size_bytes(&self) -> u64 {
        self.inner.size
    }
    /// Logical block size: BLKSSZGET for devices; 512 for files (or the underlying
    /// device's logical block size when that is larger and O_DIRECT is in use).
    pub fn logical_block_size(&self) -> u32 {
        self.inner.lbs
    }
    /// Physical block size (BLKPBSZGET for devices, the filesystem block size for files).
    pub fn physical_block_size(&self) -> u32 {
        self.inner.pbs
    }
    /// True when I/O bypasses the page cache.
    pub fn is_direct(&self) -> bool {
        self.inner.direct
    }
    /// True when reads go through the page cache while writes bypass it (O_DIRECT).
    ///
    /// Coherent because this process is the only writer (the exclusive open): the kernel
    /// invalidates cached pages a direct write, a hole punch or a discard covers, and what
    /// an earlier holder of a block device left in the cache is dropped at open.
    pub fn has_read_cache(&self) -> bool {
        self.inner.read_fd.is_some()
    }
    /// True for block devices, false for regular files.
    pub fn is_block_device(&self) -> bool {
        self.inner.is_bdev
    }
    /// True when discard is believed to work (files: until the first EOPNOTSUPP).
    pub fn supports_discard(&self) -> bool {
        self.inner.discard.load(Ordering::Relaxed)
    }
    /// True when the (underlying) device is rotational.
    pub fn is_rotational(&self) -> bool {
        self.inner.rotational
    }
    /// True when acknowledged writes may sit in a volatile cache until a flush: buffered
    /// files (page cache), and devices whose queue/write_cache says "write back" (or is
    /// unknown: claiming a cache is the safe side, it makes initiators flush).
    pub fn has_volatile_cache(&self) -> bool {
        self.inner.volatile_cache
    }
    /// True when opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    fn check(&self, offset: u64, len: u64, write: bool) -> Result<(), IoFailure> {
        if write && self.inner.read_only {
            return Err(IoFailure::ReadOnly);
        }
        let size = self.inner.size;
        match offset.checked_add(len) {
            Some(end) if end <= size => {}
            _ => return Err(IoFailure::OutOfRange { offset, len, size }),
        }
        let block = self.inner.lbs;
        if !offset.is_multiple_of(u64::from(block)) || !len.is_multiple_of(u64::from(block)) {
            return Err(IoFailure::Misaligned { offset, len, block });
        }
        Ok(())
    }

    async fn run(&self, offset: u64, op: Op) -> Result<Option<AlignedBuf>, IoFailure> {
        self.run_on(&self.inner.fd, offset, op).await
    }

    async fn run_on(
        &self,
        fd: &Arc<OwnedFd>,
        offset: u64,
        op: Op,
    ) -> Result<Option<AlignedBuf>, IoFailure> {
        self.inner
            .engine
            .run(fd.clone(), offset, op)
            .await
            .map_err(IoFailure::from_io)
    }

    /// Reads `len` bytes at `offset` into a pooled aligned buffer, returned without copying
    /// (the buffer goes back to the pool when the last `Bytes` of it is dropped).
    pub async fn read(&self, offset: u64, len: u32) -> Result<Bytes, IoFailure> {
        self.check(offset, u64::from(len), false)?;
        if len == 0 {
            return Ok(Bytes::new());
        }
        // A recycled buffer, not zeroed: the engine replies with it only once reads filled
        // all `len` bytes (a short read is resubmitted for the rest; end of file or an
        // error fails the operation and the buffer is dropped unread, see
        // `RingCore::complete`), so no byte of an earlier command can reach the initiator.
        let op = Op::Read {
            buf: AlignedBuf::for_overwrite(len as usize),
            done: 0,
        };
        let fd = self.inner.read_fd.as_ref().unwrap_or(&self.inner.fd);
        match self.run_on(fd, offset, op).await? {
            Some(buf) => Ok(Bytes::from_owner(buf)),
            None => Err(IoFailure::Hardware(io::Error::other(
                "read completed without its buffer",
            ))),
        }
    }

    /// Writes `data` at `offset`. With `fua` the write is durable when this returns
    /// (RWF_DSYNC). Copies into an aligned buffer only when O_DIRECT needs it.
    pub async fn write(&self, offset: u64, data: Bytes, fua: bool) -> Result<(), IoFailure> {
        self.check(offset, data.len() as u64, true)?;
        if data.is_empty() {
            return if fua { self.flush().await } else { Ok(()) };
        }
        if !self.inner.direct && !fua && self.inline_write_admits(offset, data.len()) {
            return self.write_inline(offset, &data);
        }
        let align = self.inner.lbs.max(512) as usize;
        let data = if self.inner.direct && !(data.as_ptr() as usize).is_multiple_of(align) {
            let copy = AlignedBuf::copy_from(&data);
            // Not kept until the write completes: it may pin a larger receive buffer.
            drop(data);
            WriteData::Aligned(copy)
        } else {
            WriteData::Shared(data)
        };
        let rw_flags = if fua { libc::RWF_DSYNC } else { 0 };
        self.run(
            offset,
            Op::Write {
                data,
                done: 0,
                rw_flags,
            },
        )
        .await
        .map(drop)
    }

    fn inline_write_admits(&self, offset: u64, len: usize) -> bool {
        self.inner
            .inline
            .admits(offset, len, std::time::Instant::now())
    }

    /// A buffered write copied into the page cache on this thread (see `inline_write.rs`);
    /// one that blocked sends the next ones through io_uring for a while.
    fn write_inline(&self, offset: u64, data: &[u8]) -> Result<(), IoFailure> {
        let start = std::time::Instant::now();
        let result = pwrite_all(self.inner.fd.as_raw_fd(), offset, data);
        let end = std::time::Instant::now();
        if let Some(p) = self.inner.inline.record(end.duration_since(start), end) {
            tracing::info!(
                path = %self.inner.path.display(),
                took_ms = p.took.as_millis() as u64,
                pause_ms = p.pause.as_millis() as u64,
                "a buffered write blocked the serving thread (page cache throttling or a \
                 journal wait); buffered writes go through io_uring workers for the pause"
            );
        }
        result.map_err(IoFailure::from_io)
    }

    /// Makes every completed write durable (fdatasync through the ring).
    pub async fn flush(&self) -> Result<(), IoFailure> {
        self.run(0, Op::FdataSync).await.map(drop)
    }

    /// Deallocates a range: hole punching for files, BLKDISCARD for devices. Afterwards the
    /// range reads as zeroes on files; on devices it is whatever the device returns.
    pub async fn discard(&self, offset: u64, len: u64) -> Result<(), IoFailure> {
        self.check(offset, len, true)?;
        if len == 0 {
            return Ok(());
        }
        if !self.supports_discard() {
            return Err(IoFailure::Unsupported);
        }
        if self.inner.is_bdev {
            return self
                .blocking(move |fd| sys::blk_discard(fd, offset, len))
                .await;
        }
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        match self.run(offset, Op::Fallocate { len, mode }).await {
            Err(IoFailure::Unsupported) => {
                self.inner.discard.store(false, Ordering::Relaxed);
                Err(IoFailure::Unsupported)
            }
            r => r.map(drop),
        }
    }

    /// Makes a range read as zeroes. `unmap` allows deallocating it (hole punch) instead of
    /// writing. Falls back to writing zero buffers when the fast paths are unsupported.
    pub async fn write_zeroes(&self, offset: u64, len: u64, unmap: bool) -> Result<(), IoFailure> {
        self.check(offset, len, true)?;
        if len == 0 {
            return Ok(());
        }
        let fast = if self.inner.is_bdev {
            self.blocking(move |fd| sys::blk_zeroout(fd, offset, len))
                .await
        } else {
            let mode = if unmap {
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
            } else {
                libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE
            };
            self.run(offset, Op::Fallocate { len, mode })
                .await
                .map(drop)
        };
        match fast {
            Err(IoFailure::Unsupported) => self.write_zero_buffers(offset, len).await,
            r => r,
        }
    }

    async fn write_zero_buffers(&self, offset: u64, len: u64) -> Result<(), IoFailure> {
        let zeroes = Bytes::from_owner(AlignedBuf::zeroed(len.min(ZERO_CHUNK) as usize));
        let mut pos = offset;
        let end = offset.saturating_add(len);
        while pos < end {
            let n = (end - pos).min(ZERO_CHUNK) as usize;
            self.write(pos, zeroes.slice(..n), false).await?;
            pos += n as u64;
        }
        Ok(())
    }

    /// Which parts of a range are allocated. Files: SEEK_DATA/SEEK_HOLE; devices: all
    /// mapped. Extents are contiguous and cover exactly `[offset, offset+len)`.
    pub async fn mapping_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, IoFailure> {
        let size = self.inner.size;
        match offset.checked_add(len) {
            Some(end) if end <= size => {}
            _ => return Err(IoFailure::OutOfRange { offset, len, size }),
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        if self.inner.is_bdev {
            return Ok(vec![Extent {
                offset,
                len,
                mapped: true,
            }]);
        }
        let fd = self.inner.fd.clone();
        tokio::task::spawn_blocking(move || map_file(fd.as_raw_fd(), offset, offset + len))
            .await
            .map_err(|e| IoFailure::Hardware(io::Error::other(e)))?
            .map_err(IoFailure::from_io)
    }

    /// Runs a blocking call on the fd on tokio's blocking pool.
    async fn blocking<F>(&self, f: F) -> Result<(), IoFailure>
    where
        F: FnOnce(i32) -> io::Result<()> + Send + 'static,
    {
        let fd = self.inner.fd.clone();
        tokio::task::spawn_blocking(move || f(fd.as_raw_fd()))
            .await
            .map_err(|e| IoFailure::Hardware(io::Error::other(e)))?
            .map_err(IoFailure::from_io)
    }
}

fn push_extent(v: &mut Vec<Extent>, offset: u64, end: u64, mapped: bool) {
    if end <= offset {
        return;
    }
    if let Some(last) = v.last_mut() {
        if last.mapped == mapped && last.offset + last.len == offset {
            last.len += end - offset;
            return;
        }
    }
    v.push(Extent {
        offset,
        len: end - offset,
        mapped,
    });
}

fn map_file(fd: i32, start: u64, end: u64) -> io::Result<Vec<Extent>> {
    let mut out = Vec::new();
    let mut pos = start;
    for _ in 0..MAX_MAP_STEPS {
        if pos >= end {
            return Ok(out);
        }
        let data = match sys::seek(fd, pos, libc::SEEK_DATA) {
            Ok(d) => d,
            // Filesystem without SEEK_DATA support: everything counts as mapped.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Some(pos),
            Err(e) => return Err(e),
        };
        let data = match data {
            Some(d) if d < end => d,
            _ => {
                push_extent(&mut out, pos, end, false);
                return Ok(out);
            }
        };
        push_extent(&mut out, pos, data, false);
        let hole = match sys::seek(fd, data, libc::SEEK_HOLE) {
            Ok(Some(h)) => h.min(end),
            Ok(None) => end,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => end,
            Err(e) => return Err(e),
        };
        let hole = hole.max(data + 1).min(end);
        push_extent(&mut out, data, hole, true);
        pos = hole;
    }
    push_extent(&mut out, pos, end, true);
    Ok(out)
}

struct Props {
    size: u64,
    lbs: u32,
    pbs: u32,
    discard: bool,
    rotational: bool,
    volatile_cache: bool,
}

fn valid_block(v: u32) -> bool {
    v.is_power_of_two() && (512..=65536).contains(&v)
}

fn bdev_props(fd: i32, meta: &Metadata) -> io::Result<Props> {
    let dev = meta.rdev();
    let lbs = sys::blk_logical_block_size(fd)?;
    let lbs = if valid_block(lbs) { lbs } else { 512 };
    let pbs = sys::blk_physical_block_size(fd).unwrap_or(lbs);
    Ok(Props {
        size: sys::blk_size_bytes(fd)?,
        lbs,
        pbs: if valid_block(pbs) { pbs.max(lbs) } else { lbs },
        discard: sys::queue_attr_u64(dev, "discard_max_bytes").unwrap_or(0) > 0,
        rotational: sys::queue_attr_u64(dev, "rotational") == Some(1),
        volatile_cache: sys::queue_attr(dev, "write_cache").as_deref() != Some("write through"),
    })
}

fn file_props(meta: &Metadata, direct: bool) -> Props {
    let dev = meta.dev();
    let lbs = if direct {
        sys::queue_attr_u64(dev, "logical_block_size")
            .and_then(|v| u32::try_from(v).ok())
            .filter(|v| valid_block(*v))
            .unwrap_or(512)
    } else {
        512
    };
    let blk = u32::try_from(meta.blksize()).unwrap_or(4096);
    Props {
        size: meta.len(),
        lbs,
        pbs: if valid_block(blk) { blk.max(lbs) } else { 4096 },
        discard: true,
        rotational: sys::queue_attr_u64(dev, "rotational") == Some(1),
        volatile_cache: !direct
            || sys::queue_attr(dev, "write_cache").as_deref() != Some("write through"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_auto_falls_back_when_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f.img");
        let opts = OpenOptions {
            create_size: Some(1 << 20),
            direct: DirectMode::Auto,
            read_only: false,
            read_cache: false,
        };
        let engine = Engine::global().expect("engine");
        let dev = BlockDevice::open_inner(&p, &opts, engine.clone(), true).expect("open");
        assert!(!dev.is_direct());
        assert_eq!(dev.size_bytes(), 1 << 20);
        drop(dev);
        let on = OpenOptions {
            direct: DirectMode::On,
            ..opts
        };
        match BlockDevice::open_inner(&p, &on, engine, true) {
            Err(BlockError::DirectUnsupported { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn extents_merge() {
        let mut v = Vec::new();
        push_extent(&mut v, 0, 10, true);
        push_extent(&mut v, 10, 20, true);
        push_extent(&mut v, 20, 20, false);
        push_extent(&mut v, 20, 30, false);
        assert_eq!(
            v,
            vec![
                Extent {
                    offset: 0,
                    len: 20,
                    mapped: true
                },
                Extent {
                    offset: 20,
                    len: 10,
                    mapped: false
                }
            ]
        );
    }
}
