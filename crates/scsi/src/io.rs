//! The block I/O vocabulary between a [`crate::Task`] and the gateway's block engine:
//! requests the task asks for, and the completions the engine feeds back.
//! Offsets and lengths are in bytes.

use bytes::Bytes;

use crate::response::Response;

/// One block I/O the task needs done before it can continue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockRequest {
    /// Read `len` bytes at `offset`; answer with [`IoCompletion::Data`].
    Read {
        /// Byte offset.
        offset: u64,
        /// Byte length.
        len: u32,
    },
    /// Write `data` at `offset`; with `fua` the data must be on stable media before
    /// completion. Answer with [`IoCompletion::Done`].
    Write {
        /// Byte offset.
        offset: u64,
        /// Data to write.
        data: Bytes,
        /// Force unit access.
        fua: bool,
    },
    /// Flush the volatile cache of the backing store.
    Flush,
    /// Deallocate a range; afterwards it must read back as zeros (LBPRZ is reported).
    /// `Error(Unsupported)` makes the task fall back to `WriteZeroes`.
    Discard {
        /// Byte offset.
        offset: u64,
        /// Byte length.
        len: u64,
    },
    /// Make a range read as zeros; `unmap` allows deallocating it. `Error(Unsupported)`
    /// makes the task fall back to plain writes of zeros.
    WriteZeroes {
        /// Byte offset.
        offset: u64,
        /// Byte length.
        len: u64,
        /// Deallocation allowed.
        unmap: bool,
    },
    /// Report which parts of the range are allocated; answer with
    /// [`IoCompletion::Mapping`] (extents in ascending order; may cover only a prefix) or
    /// `Error(Unsupported)` (then everything is reported mapped).
    MappingStatus {
        /// Byte offset.
        offset: u64,
        /// Byte length.
        len: u64,
    },
}

impl BlockRequest {
    /// The bytes of the medium this request reads or changes; `None` for a flush and for
    /// a mapping query, which touch no data. Always within its task's
    /// [`span`](crate::Task::span).
    pub fn data_range(&self) -> Option<std::ops::Range<u64>> {
        let from = |offset: u64, len: u64| Some(offset..offset.saturating_add(len));
        match self {
            BlockRequest::Read { offset, len } => from(*offset, u64::from(*len)),
            BlockRequest::Write { offset, data, .. } => from(*offset, data.len() as u64),
            BlockRequest::Discard { offset, len }
            | BlockRequest::WriteZeroes { offset, len, .. } => from(*offset, *len),
            BlockRequest::Flush | BlockRequest::MappingStatus { .. } => None,
        }
    }
}

/// A contiguous byte range and whether it is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Byte offset.
    pub offset: u64,
    /// Byte length.
    pub len: u64,
    /// True if allocated (mapped).
    pub mapped: bool,
}

/// Which direction a medium error happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediumOp {
    /// A read failed (reported as 03/11/00 UNRECOVERED READ ERROR).
    Read,
    /// A write failed (reported as 03/0C/00 WRITE ERROR).
    Write,
}

/// Classes of I/O failure the block engine reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoErrorKind {
    /// EIO and friends on the medium.
    Medium(MediumOp),
    /// ENOSPC (thin pool exhausted): 07/27/07 SPACE ALLOCATION FAILED WRITE PROTECT.
    NoSpace,
    /// Anything else: 04/44/00 INTERNAL TARGET FAILURE.
    Hardware,
    /// The request kind is not supported by the backend (see fallbacks per request).
    Unsupported,
}

/// Result of a [`BlockRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoCompletion {
    /// Write, flush, discard or write-zeroes succeeded.
    Done,
    /// Read succeeded with exactly the requested number of bytes.
    Data(Bytes),
    /// Mapping status succeeded.
    Mapping(Vec<Extent>),
    /// The request failed.
    Error(IoErrorKind),
}

/// What a task wants next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Perform this I/O and call `poll(Some(result))`.
    Io(BlockRequest),
    /// The command is complete.
    Done(Response),
}
