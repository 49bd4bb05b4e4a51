//! End-to-end tests of the device model: commands run through [`crate::LogicalUnit`] and
//! [`crate::ScsiTarget`] with an in-memory disk completing the block I/O.

pub(crate) mod harness;
mod libiscsi;
mod pr;
mod props;
mod sbc;
mod spc;
