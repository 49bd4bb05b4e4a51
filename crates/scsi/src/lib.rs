//! Sans-IO SCSI block device (SPC-4 / SBC-3) target model. It knows nothing of iSCSI:
//! commands come in as CDB bytes plus data, block I/O goes out as requests, responses
//! come back as status, sense and data.
//!
//! Flow: [`ScsiTarget::start`] (or [`LogicalUnit::start`]) decodes and validates a
//! command and returns a [`Task`]; the caller drives [`Task::poll`], performing each
//! [`BlockRequest`] it yields and feeding back an [`IoCompletion`], until it yields
//! [`Step::Done`] with the [`Response`].
//!
//! The units are mutable state behind their owner's lock. READ, WRITE, WRITE AND VERIFY
//! and SYNCHRONIZE CACHE may instead be
//! started from a unit's [`FastPath`] without that lock, while the nexus's [`Admission`]
//! (granted by [`ScsiTarget::admit`] after a locked start) is current (`fast.rs`).

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod cdb;
mod commands;
mod fast;
mod fuzz;
mod io;
mod lun;
mod mode;
mod opcodes;
mod pr_state;
mod response;
mod sense;
mod target;
mod task;
mod types;
mod ua;
mod vpd;

#[cfg(test)]
mod tests;

pub use commands::spc::SUPPORTED_TMFS;
pub use fast::{Admission, FastPath};
pub use fuzz::fuzz_cdb;
pub use io::{BlockRequest, Extent, IoCompletion, IoErrorKind, MediumOp, Step};
pub use lun::LogicalUnit;
pub use opcodes::op;
pub use pr_state::{PrDecodeError, PrState, PrType, Registration, Reservation};
pub use response::{status, Response};
pub use sense::{Asc, FieldPointer, Sense, SenseKey};
pub use target::{decode_lun, encode_lun, ScsiTarget};
pub use task::{Task, CHUNK_BYTES};
pub use types::{Command, LunConfig, Nexus, ResetKind, TargetPort, TaskAttr};
