//! Thin wrappers over the Linux calls the block layer makes outside io_uring: block
//! device ioctls (size, block sizes, discard, zero-out), `flock`, `lseek(SEEK_DATA/HOLE)`,
//! the `RWF_NOWAIT` read probe, and reading queue attributes from sysfs. Every `unsafe`
//! here is one syscall on an fd we own with pointers to local variables or buffers.

use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;

// ioctl request numbers from <linux/fs.h> (generic encoding: x86, arm, riscv).
const BLKSSZGET: u64 = 0x1268;
const BLKPBSZGET: u64 = 0x127b;
const BLKGETSIZE64: u64 = 0x8008_1272;
const BLKDISCARD: u64 = 0x1277;
const BLKZEROOUT: u64 = 0x127f;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Size in bytes of a block device.
pub fn blk_size_bytes(fd: RawFd) -> io::Result<u64> {
    let mut v: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 to the pointer.
    cvt(unsafe { libc::ioctl(fd, BLKGETSIZE64 as _, &mut v as *mut u64) })?;
    Ok(v)
}

/// Logical block size of a block device.
pub fn blk_logical_block_size(fd: RawFd) -> io::Result<u32> {
    let mut v: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int to the pointer.
    cvt(unsafe { libc::ioctl(fd, BLKSSZGET as _, &mut v as *mut libc::c_int) })?;
    Ok(u32::try_from(v).unwrap_or(512))
}

/// Physical block size of a block device.
pub fn blk_physical_block_size(fd: RawFd) -> io::Result<u32> {
    let mut v: libc::c_uint = 0;
    // SAFETY: BLKPBSZGET writes one unsigned int to the pointer.
    cvt(unsafe { libc::ioctl(fd, BLKPBSZGET as _, &mut v as *mut libc::c_uint) })?;
    Ok(v)
}

/// Discards `[offset, offset+len)` of a block device.
pub fn blk_discard(fd: RawFd, offset: u64, len: u64) -> io::Result<()> {
    let range: [u64; 2] = [offset, len];
    // SAFETY: BLKDISCARD reads two u64 from the pointer.
    cvt(unsafe { libc::ioctl(fd, BLKDISCARD as _, range.as_ptr()) })?;
    Ok(())
}

/// Zeroes `[offset, offset+len)` of a block device (the kernel picks WRITE ZEROES,
/// or writes zero pages).
pub fn blk_zeroout(fd: RawFd, offset: u64, len: u64) -> io::Result<()> {
    let range: [u64; 2] = [offset, len];
    // SAFETY: BLKZEROOUT reads two u64 from the pointer.
    cvt(unsafe { libc::ioctl(fd, BLKZEROOUT as _, range.as_ptr()) })?;
    Ok(())
}

/// Drops the clean pages the page cache holds for the whole file or device
/// (`posix_fadvise(POSIX_FADV_DONTNEED)`; unlike BLKFLSBUF it needs no capability).
pub fn drop_page_cache(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain syscall on a caller-owned fd; no memory is passed.
    match unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) } {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Takes a non-blocking exclusive advisory lock; `Ok(false)` when someone else holds it.
pub fn flock_exclusive(fd: RawFd) -> io::Result<bool> {
    // SAFETY: flock on an fd we own.
    match cvt(unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) }) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `lseek(fd, offset, whence)`; `Ok(None)` for ENXIO (no more data/hole past offset).
pub fn seek(fd: RawFd, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let off =
        libc::off64_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: lseek64 on an fd we own; it only moves the file position, which the
    // engine never uses (all I/O is positional).
    let r = unsafe { libc::lseek64(fd, off, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENXIO) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(r as u64))
}

/// Major/minor of a dev_t.
pub fn major_minor(dev: u64) -> (u32, u32) {
    (libc::major(dev), libc::minor(dev))
}

/// Reads `/sys/dev/block/M:m/queue/<attr>`, falling back to the parent device's queue
/// for partitions. `None` when there is no such block device (tmpfs, overlay, ...).
pub fn queue_attr(dev: u64, attr: &str) -> Option<String> {
    let (maj, min) = major_minor(dev);
    let base = PathBuf::from(format!("/sys/dev/block/{maj}:{min}"));
    for dir in [base.join("queue"), base.join("../queue")] {
        if let Ok(s) = std::fs::read_to_string(dir.join(attr)) {
            return Some(s.trim().to_string());
        }
    }
    None
}

/// `queue_attr` parsed as an integer.
pub fn queue_attr_u64(dev: u64, attr: &str) -> Option<u64> {
    queue_attr(dev, attr).and_then(|s| s.parse().ok())
}

/// Whether reads of `fd` can be issued without blocking (`preadv2` with `RWF_NOWAIT`),
/// which is what io_uring needs to submit an operation from the calling thread. Where the
/// kernel says no (EOPNOTSUPP: block devices whose driver does not declare it, such as
/// DRBD and zram), io_uring hands every operation on the fd to one of its worker threads,
/// a thread wake-up per I/O. Probes with one read of `len` bytes at offset 0 into a
/// buffer aligned for O_DIRECT; `None` when the probe failed for another reason.
pub fn accepts_nowait(fd: RawFd, len: usize) -> Option<bool> {
    let mut buf = bufpool::AlignedBuf::for_overwrite(len.max(1));
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: one read into a buffer we own for the whole call, described by `iov`.
    let r = unsafe { libc::preadv2(fd, &iov, 1, 0, libc::RWF_NOWAIT) };
    if r >= 0 {
        return Some(true);
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::EOPNOTSUPP) => Some(false),
        // It would have blocked this time: it can be tried without blocking.
        Some(libc::EAGAIN) => Some(true),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_regular_file_is_probed_with_a_valid_direct_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 8192]).expect("write");
        // Written back first: with dirty pages in the range a NOWAIT direct read stops
        // at EAGAIN, before the checks this test is about.
        std::fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .expect("sync");
        let buffered = std::fs::File::open(&path).expect("open");
        assert!(accepts_nowait(buffered.as_raw_fd(), 4096).is_some());
        use std::os::unix::fs::OpenOptionsExt;
        // Where the filesystem takes O_DIRECT, the probe's read must be one it accepts
        // (aligned buffer, whole blocks): a malformed one would fail with EINVAL (None).
        if let Ok(direct) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
        {
            assert!(accepts_nowait(direct.as_raw_fd(), 4096).is_some());
        }
    }

    #[test]
    fn a_file_without_nowait_reads_is_told_apart() {
        // procfs files do not take RWF_NOWAIT: the kernel answers EOPNOTSUPP.
        let f = std::fs::File::open("/proc/self/stat").expect("open");
        assert_eq!(accepts_nowait(f.as_raw_fd(), 512), Some(false));
    }

    #[test]
    fn a_closed_descriptor_is_not_a_verdict() {
        assert_eq!(accepts_nowait(-1, 512), None);
    }
}
