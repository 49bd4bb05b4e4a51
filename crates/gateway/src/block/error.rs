//! Error types of the block layer: `BlockError` for opening a backing store and
//! `IoFailure` for a failed data operation, classified so the SCSI layer can pick sense
//! data (medium error, space allocation failure, unsupported, hardware error, gone).

use std::io;
use std::path::PathBuf;

/// Why a data operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IoFailure {
    /// The device reported a media/data error (EIO and friends), or a read hit the end
    /// of a backing file that shrank underneath us.
    #[error("medium error")]
    Medium,
    /// Out of space or quota (ENOSPC, EDQUOT), typically on a sparse/thin backing.
    #[error("no space left on the backing store")]
    NoSpace,
    /// The backing store cannot do this (e.g. discard on a filesystem without hole punching).
    #[error("operation not supported by the backing store")]
    Unsupported,
    /// The device disappeared (ENODEV, ENXIO), e.g. DRBD demoted or the disk was removed.
    #[error("backing device is gone")]
    Gone,
    /// Any other OS error; the errno is kept.
    #[error("I/O error: {0}")]
    Hardware(io::Error),
    /// The range goes past the end of the device (`size` bytes).
    #[error("range {offset}+{len} is beyond the device end ({size} bytes)")]
    OutOfRange { offset: u64, len: u64, size: u64 },
    /// Offset or length not a multiple of the logical block size; never sent to the kernel.
    #[error("range {offset}+{len} is not aligned to {block} bytes")]
    Misaligned { offset: u64, len: u64, block: u32 },
    /// A write-type operation on a device opened read-only.
    #[error("device is read-only")]
    ReadOnly,
}

impl IoFailure {
    /// Classifies an OS error.
    pub fn from_io(err: io::Error) -> Self {
        match err.raw_os_error() {
            Some(libc::EIO) | Some(libc::EILSEQ) | Some(libc::EBADMSG) | Some(libc::ENODATA) => {
                IoFailure::Medium
            }
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => IoFailure::NoSpace,
            Some(libc::EOPNOTSUPP) | Some(libc::ENOTTY) => IoFailure::Unsupported,
            Some(libc::ENODEV) | Some(libc::ENXIO) => IoFailure::Gone,
            _ => IoFailure::Hardware(err),
        }
    }
}

/// Why a backing store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// Another process (or another gateway) holds the device or file exclusively.
    #[error("{path}: busy: already opened exclusively by another process (another gateway, a mount, or LVM?)")]
    Busy { path: PathBuf },
    /// The path does not exist and no size was given to create it.
    #[error("{path}: does not exist (give a size to create a file)")]
    NotFound { path: PathBuf },
    /// Neither a regular file nor a block device.
    #[error("{path}: not a regular file or block device")]
    BadKind { path: PathBuf },
    /// O_DIRECT was demanded (`direct = "on"`) but the filesystem refuses it.
    #[error("{path}: O_DIRECT requested but not supported by this filesystem")]
    DirectUnsupported { path: PathBuf },
    /// The io_uring engine could not be started (kernel too old, io_uring disabled, limits).
    #[error("cannot start the io_uring engine: {0}")]
    Engine(io::Error),
    /// Any other OS error while opening or inspecting the path.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_classification() {
        let f = |e| IoFailure::from_io(io::Error::from_raw_os_error(e));
        assert!(matches!(f(libc::EIO), IoFailure::Medium));
        assert!(matches!(f(libc::ENOSPC), IoFailure::NoSpace));
        assert!(matches!(f(libc::EDQUOT), IoFailure::NoSpace));
        assert!(matches!(f(libc::EOPNOTSUPP), IoFailure::Unsupported));
        assert!(matches!(f(libc::ENODEV), IoFailure::Gone));
        assert!(matches!(f(libc::ENXIO), IoFailure::Gone));
        match f(libc::EPERM) {
            IoFailure::Hardware(e) => assert_eq!(e.raw_os_error(), Some(libc::EPERM)),
            other => panic!("unexpected {other:?}"),
        }
    }
}
