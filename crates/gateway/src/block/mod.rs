//! Block engine: an async block device over a regular file or a block device, with all
//! data I/O through io_uring (see [`engine`]) and O_DIRECT where the filesystem allows.
//!
//! [`BlockDevice`] validates every range (inside the device, logical-block aligned) before
//! anything reaches the kernel, and classifies failures into [`IoFailure`] so the SCSI
//! layer can map them to sense data. Opening is exclusive: `O_EXCL` for block devices and
//! an advisory `flock` for files, so two gateways cannot write one backing store.
//!
//! Buffers are [`AlignedBuf`]s from the `bufpool` crate: 4096-aligned, recycled through
//! bounded per-thread free lists (shared with the `iscsi` crate, which assembles write data
//! in them).

mod depth;
mod device;
mod engine;
mod error;
mod inline_write;
mod local;
mod props;
mod registered;
mod sys;

pub use bufpool::{AlignedBuf, BUF_ALIGN};
pub use device::{BlockDevice, DirectMode, Extent, OpenOptions};
pub use engine::{Engine, EngineConfig};
pub use error::{BlockError, IoFailure};
pub use inline_write::pauses_total as buffered_write_pauses_total;
pub use local::{scope as ring_scope, LocalRing};
pub use props::{DeviceProps, Probe};
pub use registered::ops_total as registered_ops_total;
