//! Command handlers, grouped by standard: SPC (primary commands), SBC (block
//! commands), persistent reservations and ALUA reporting. Each adds methods to
//! [`crate::LogicalUnit`].

pub(crate) mod alua;
pub(crate) mod pr;
pub(crate) mod sbc;
pub(crate) mod spc;
