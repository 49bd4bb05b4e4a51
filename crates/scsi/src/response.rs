//! The outcome of a command: SCSI status, encoded sense data, data-in, and the side
//! information the transport needs (data-out length for residuals, PR persistence,
//! nexuses whose tasks must be aborted after PREEMPT AND ABORT).

use bytes::Bytes;

use crate::sense::Sense;

/// SCSI status codes.
pub mod status {
    /// GOOD.
    pub const GOOD: u8 = 0x00;
    /// CHECK CONDITION.
    pub const CHECK_CONDITION: u8 = 0x02;
    /// CONDITION MET.
    pub const CONDITION_MET: u8 = 0x04;
    /// BUSY.
    pub const BUSY: u8 = 0x08;
    /// RESERVATION CONFLICT.
    pub const RESERVATION_CONFLICT: u8 = 0x18;
    /// TASK SET FULL.
    pub const TASK_SET_FULL: u8 = 0x28;
    /// ACA ACTIVE.
    pub const ACA_ACTIVE: u8 = 0x30;
    /// TASK ABORTED.
    pub const TASK_ABORTED: u8 = 0x40;
}

/// Final result of one command.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    /// SCSI status byte.
    pub status: u8,
    /// Encoded sense data (fixed or descriptor format per D_SENSE), for CHECK CONDITION.
    pub sense: Option<Bytes>,
    /// Data-in, already cut to the CDB's allocation length (the transport additionally
    /// cuts it to the expected data transfer length and reports residuals).
    pub data_in: Bytes,
    /// Bytes of data-out the CDB asked for (None: the command takes no data-out or the
    /// CDB could not be decoded), so the transport can compute residuals.
    pub data_out_len: Option<u32>,
    /// Persistent reservation state changed: persist [`crate::LogicalUnit::pr_state`]
    /// before sending this response.
    pub pr_state_changed: bool,
    /// PREEMPT AND ABORT: abort all tasks of these nexus ids (other than this command).
    pub abort_nexuses: Vec<u64>,
}

impl Response {
    /// GOOD with data-in.
    pub fn good(data_in: Bytes) -> Self {
        Response {
            status: status::GOOD,
            data_in,
            ..Response::default()
        }
    }

    /// CHECK CONDITION with the sense encoded in the requested format.
    pub fn check(sense: &Sense, descriptor: bool) -> Self {
        Response {
            status: status::CHECK_CONDITION,
            sense: Some(sense.encode(descriptor)),
            ..Response::default()
        }
    }

    /// RESERVATION CONFLICT (no sense data).
    pub fn conflict() -> Self {
        Response {
            status: status::RESERVATION_CONFLICT,
            ..Response::default()
        }
    }

    /// Set `data_out_len`.
    pub fn with_data_out_len(mut self, len: Option<u32>) -> Self {
        self.data_out_len = len;
        self
    }
}
