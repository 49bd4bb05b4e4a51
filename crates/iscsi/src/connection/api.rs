//! Types exchanged between a [`super::Connection`] and the gateway: events out, command and
//! task-management completions in, and errors.

use bytes::Bytes;
use thiserror::Error;

use crate::config::SessionInfo;
use crate::pdu::FrameError;

/// A SCSI task, identified by its Initiator Task Tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub u32);

/// A task management request, identified by its Initiator Task Tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TmfId(pub u32);

/// SCSI task attribute (SAM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskAttr {
    Untagged,
    Simple,
    Ordered,
    HeadOfQueue,
    Aca,
}

impl TaskAttr {
    pub(crate) fn from_bits(b: u8) -> Self {
        match b & 7 {
            0 => TaskAttr::Untagged,
            1 => TaskAttr::Simple,
            2 => TaskAttr::Ordered,
            3 => TaskAttr::HeadOfQueue,
            4 => TaskAttr::Aca,
            _ => TaskAttr::Simple,
        }
    }
}

/// What the connection asks the gateway to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A session reached full feature phase (normal and discovery sessions).
    SessionEstablished(SessionInfo),
    /// A SCSI command with all of its write data.
    ScsiCommand(ScsiCommand),
    /// A task management request; answer with `complete_task_management`.
    TaskManagement(TmfRequest),
    /// The initiator logged out (informational; the connection answers by itself).
    Logout { reason: u8 },
}

/// Write data of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataOut {
    /// No Data-Out expected (EDTL 0 or no W bit).
    None,
    /// All write data, in one buffer of EDTL bytes.
    Complete(Bytes),
    /// EDTL exceeds `Limits::max_transfer_bytes`: nothing was solicited; answer CHECK CONDITION.
    TooLarge,
}

/// A SCSI command for the device model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiCommand {
    pub task: TaskId,
    /// The 8-byte SAM LUN field as sent (big-endian). Its format is SCSI's, not iSCSI's:
    /// the gateway decodes it with `scsi::decode_lun`.
    pub lun: u64,
    /// The full CDB (16 bytes + extended CDB AHS).
    pub cdb: Bytes,
    pub attr: TaskAttr,
    pub expected_data_in_len: u32,
    pub expected_data_out_len: u32,
    pub data_out: DataOut,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandResponse {
    /// SCSI status byte.
    pub status: u8,
    /// Sense data (without the 2-byte SenseLength, which the crate adds).
    pub sense: Option<Bytes>,
    /// Data produced for the initiator. Truncated to the expected length (overflow residual).
    pub data_in: Bytes,
    /// Bytes of Data-Out the CDB called for, for write residuals.
    pub data_out_len: Option<u32>,
}

/// Task management functions (RFC 7143 §11.5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmfFunction {
    AbortTask,
    AbortTaskSet,
    ClearAca,
    ClearTaskSet,
    LogicalUnitReset,
    TargetWarmReset,
    TargetColdReset,
    TaskReassign,
}

impl TmfFunction {
    pub(crate) fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1 => TmfFunction::AbortTask,
            2 => TmfFunction::AbortTaskSet,
            3 => TmfFunction::ClearAca,
            4 => TmfFunction::ClearTaskSet,
            5 => TmfFunction::LogicalUnitReset,
            6 => TmfFunction::TargetWarmReset,
            7 => TmfFunction::TargetColdReset,
            8 => TmfFunction::TaskReassign,
            _ => return None,
        })
    }
}

/// A task management request for the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmfRequest {
    pub id: TmfId,
    pub function: TmfFunction,
    /// The 8-byte SAM LUN field as sent (see [`ScsiCommand::lun`]).
    pub lun: u64,
    /// For AbortTask: the task to abort (the gateway has it in flight).
    pub referenced_task: Option<TaskId>,
    pub ref_cmd_sn: u32,
}

/// Task management response codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmfResponseCode {
    FunctionComplete,
    TaskDoesNotExist,
    LunDoesNotExist,
    TaskStillAllegiant,
    ReassignmentNotSupported,
    NotSupported,
    AuthorizationFailed,
    Rejected,
}

impl TmfResponseCode {
    /// Wire value.
    pub fn code(self) -> u8 {
        match self {
            TmfResponseCode::FunctionComplete => 0,
            TmfResponseCode::TaskDoesNotExist => 1,
            TmfResponseCode::LunDoesNotExist => 2,
            TmfResponseCode::TaskStillAllegiant => 3,
            TmfResponseCode::ReassignmentNotSupported => 4,
            TmfResponseCode::NotSupported => 5,
            TmfResponseCode::AuthorizationFailed => 6,
            TmfResponseCode::Rejected => 255,
        }
    }
}

/// Why the gateway closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Target shutting down / failing over: tell the initiator the session is being dropped
    /// (Async Message event 3) so it reconnects after DefaultTime2Wait.
    Shutdown,
    /// The session was reinstated on another connection: close silently.
    Reinstated,
    /// Any other reason: close silently.
    Other,
}

/// Fatal connection errors: flush pending transmits, then close the socket.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ConnectionError {
    #[error("framing error: {0}")]
    Framing(#[from] FrameError),
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("initiator does not read its responses")]
    TransmitBacklog,
    #[error("connection is closed")]
    Closed,
}
