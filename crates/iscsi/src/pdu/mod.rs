//! iSCSI PDU codec: Basic Header Segment, Additional Header Segments, data segment with
//! padding, and optional CRC32C digests (RFC 7143 §11).
//!
//! [`Pdu`] is the typed view of every opcode; [`frame`] finds PDU boundaries in a byte stream
//! and classifies errors as recoverable (answer with a Reject) or fatal (drop the connection).

pub mod bhs;
pub mod frame;
pub mod initiator;
pub mod target;

use bytes::{BufMut, Bytes, BytesMut};

pub use bhs::{Bhs, BHS_LEN};
pub use frame::{
    decode_frame, decode_pdu_for_fuzz, decode_split, frame_layout, frame_len, next_pdu,
    Disposition, FrameConfig, FrameError,
};
pub use initiator::*;
pub use target::*;

use crate::digest;

/// Opcode values (RFC 7143 §11.1.1).
pub mod opcode {
    pub const NOP_OUT: u8 = 0x00;
    pub const SCSI_COMMAND: u8 = 0x01;
    pub const TASK_MGMT_REQUEST: u8 = 0x02;
    pub const LOGIN_REQUEST: u8 = 0x03;
    pub const TEXT_REQUEST: u8 = 0x04;
    pub const DATA_OUT: u8 = 0x05;
    pub const LOGOUT_REQUEST: u8 = 0x06;
    pub const SNACK: u8 = 0x10;
    pub const NOP_IN: u8 = 0x20;
    pub const SCSI_RESPONSE: u8 = 0x21;
    pub const TASK_MGMT_RESPONSE: u8 = 0x22;
    pub const LOGIN_RESPONSE: u8 = 0x23;
    pub const TEXT_RESPONSE: u8 = 0x24;
    pub const DATA_IN: u8 = 0x25;
    pub const LOGOUT_RESPONSE: u8 = 0x26;
    pub const R2T: u8 = 0x31;
    pub const ASYNC_MESSAGE: u8 = 0x32;
    pub const REJECT: u8 = 0x3f;
}

/// Reject reasons (RFC 7143 §11.17.1).
pub mod reject_reason {
    pub const DATA_DIGEST_ERROR: u8 = 0x02;
    pub const SNACK_REJECT: u8 = 0x03;
    pub const PROTOCOL_ERROR: u8 = 0x04;
    pub const COMMAND_NOT_SUPPORTED: u8 = 0x05;
    pub const IMMEDIATE_COMMAND_REJECT: u8 = 0x06;
    pub const TASK_IN_PROGRESS: u8 = 0x07;
    pub const INVALID_DATA_ACK: u8 = 0x08;
    pub const INVALID_PDU_FIELD: u8 = 0x09;
    pub const OUT_OF_RESOURCES: u8 = 0x0a;
    pub const NEGOTIATION_RESET: u8 = 0x0b;
    pub const WAITING_FOR_LOGOUT: u8 = 0x0c;
}

/// A malformed Additional Header Segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AhsError;

/// Any iSCSI PDU, typed by opcode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pdu {
    NopOut(NopOut),
    ScsiCommand(ScsiCommandPdu),
    TaskMgmtRequest(TaskMgmtRequest),
    LoginRequest(LoginRequest),
    TextRequest(TextRequest),
    DataOut(ScsiDataOut),
    LogoutRequest(LogoutRequest),
    Snack(Snack),
    NopIn(NopIn),
    ScsiResponse(ScsiResponse),
    TaskMgmtResponse(TaskMgmtResponse),
    LoginResponse(LoginResponse),
    TextResponse(TextResponse),
    DataIn(ScsiDataIn),
    LogoutResponse(LogoutResponse),
    R2t(R2t),
    AsyncMessage(AsyncMessage),
    Reject(Reject),
}

/// Why a header could not be turned into a typed PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    UnknownOpcode(u8),
    BadAhs,
}

impl Pdu {
    /// Builds the typed PDU from its header, AHS bytes and data segment (without padding).
    pub fn from_parts(h: &Bhs, ahs: &[u8], data: Bytes) -> Result<Pdu, DecodeError> {
        use opcode::*;
        let op = h.opcode();
        if op != SCSI_COMMAND && !ahs.is_empty() {
            return Err(DecodeError::BadAhs);
        }
        Ok(match op {
            NOP_OUT => Pdu::NopOut(NopOut::decode(h, data)),
            SCSI_COMMAND => Pdu::ScsiCommand(
                ScsiCommandPdu::decode(h, ahs, data).map_err(|_| DecodeError::BadAhs)?,
            ),
            TASK_MGMT_REQUEST => Pdu::TaskMgmtRequest(TaskMgmtRequest::decode(h)),
            LOGIN_REQUEST => Pdu::LoginRequest(LoginRequest::decode(h, data)),
            TEXT_REQUEST => Pdu::TextRequest(TextRequest::decode(h, data)),
            DATA_OUT => Pdu::DataOut(ScsiDataOut::decode(h, data)),
            LOGOUT_REQUEST => Pdu::LogoutRequest(LogoutRequest::decode(h)),
            SNACK => Pdu::Snack(Snack::decode(h)),
            NOP_IN => Pdu::NopIn(NopIn::decode(h, data)),
            SCSI_RESPONSE => Pdu::ScsiResponse(ScsiResponse::decode(h, data)),
            TASK_MGMT_RESPONSE => Pdu::TaskMgmtResponse(TaskMgmtResponse::decode(h)),
            LOGIN_RESPONSE => Pdu::LoginResponse(LoginResponse::decode(h, data)),
            TEXT_RESPONSE => Pdu::TextResponse(TextResponse::decode(h, data)),
            DATA_IN => Pdu::DataIn(ScsiDataIn::decode(h, data)),
            LOGOUT_RESPONSE => Pdu::LogoutResponse(LogoutResponse::decode(h)),
            R2T => Pdu::R2t(R2t::decode(h)),
            ASYNC_MESSAGE => Pdu::AsyncMessage(AsyncMessage::decode(h, data)),
            REJECT => Pdu::Reject(Reject::decode(h, data)),
            other => return Err(DecodeError::UnknownOpcode(other)),
        })
    }

    /// Header (without DataSegmentLength/TotalAHSLength filled), AHS bytes and data segment.
    pub fn to_parts(&self) -> (Bhs, Vec<u8>, Bytes) {
        let empty = Bytes::new();
        match self {
            Pdu::NopOut(p) => (p.encode(), Vec::new(), p.data.clone()),
            Pdu::ScsiCommand(p) => {
                let (h, ahs) = p.encode();
                (h, ahs, p.data.clone())
            }
            Pdu::TaskMgmtRequest(p) => (p.encode(), Vec::new(), empty),
            Pdu::LoginRequest(p) => (p.encode(), Vec::new(), p.data.clone()),
            Pdu::TextRequest(p) => (p.encode(), Vec::new(), p.data.clone()),
            Pdu::DataOut(p) => (p.encode(), Vec::new(), p.data.clone()),
            Pdu::LogoutRequest(p) => (p.encode(), Vec::new(), empty),
            Pdu::Snack(p) => (p.encode(), Vec::new(), empty),
            Pdu::NopIn(p) => (p.encode(), Vec::new(), p.data.clone()),
            Pdu::ScsiResponse(p) => (p.encode(), Vec::new(), p.data.clone()),
            Pdu::TaskMgmtResponse(p) => (p.encode(), Vec::new(), empty),
            Pdu::LoginResponse(p) => (p.encode(), Vec::new(), p.data.clone()),
            Pdu::TextResponse(p) => (p.encode(), Vec::new(), p.data.clone()),
            Pdu::DataIn(p) => (p.encode(), Vec::new(), p.data.clone()),
            Pdu::LogoutResponse(p) => (p.encode(), Vec::new(), empty),
            Pdu::R2t(p) => (p.encode(), Vec::new(), empty),
            Pdu::AsyncMessage(p) => (p.encode(), Vec::new(), p.data.clone()),
            Pdu::Reject(p) => (p.encode(), Vec::new(), p.data.clone()),
        }
    }

    /// Appends the wire form to `out` as separate buffers: header (+AHS, +header digest), the
    /// data segment itself (shared, not copied), then padding and data digest.
    /// Returns the number of bytes appended.
    pub fn write_to(&self, header_digest: bool, data_digest: bool, out: &mut Vec<Bytes>) -> usize {
        let (mut h, ahs, data) = self.to_parts();
        h.set_total_ahs_words((ahs.len() / 4).min(255) as u8);
        h.set_data_segment_len(data.len() as u32);
        let mut head = BytesMut::with_capacity(BHS_LEN + ahs.len() + 4);
        head.put_slice(&h.0);
        head.put_slice(&ahs);
        if header_digest {
            let d = digest::crc32c(&head);
            head.put_slice(&digest::to_wire(d));
        }
        let mut total = head.len();
        out.push(head.freeze());
        if !data.is_empty() {
            let pad = pad_len(data.len());
            let mut tail = BytesMut::with_capacity(8);
            tail.put_bytes(0, pad);
            if data_digest {
                let d = digest::crc32c_parts([&data[..], &tail[..]]);
                tail.put_slice(&digest::to_wire(d));
            }
            total += data.len() + tail.len();
            out.push(data);
            if !tail.is_empty() {
                out.push(tail.freeze());
            }
        }
        total
    }

    /// Encodes into one contiguous buffer (tests and tools).
    pub fn to_bytes(&self, header_digest: bool, data_digest: bool) -> Bytes {
        let mut parts = Vec::new();
        self.write_to(header_digest, data_digest, &mut parts);
        let mut b = BytesMut::new();
        for p in parts {
            b.put_slice(&p);
        }
        b.freeze()
    }

    /// Opcode of this PDU.
    pub fn opcode(&self) -> u8 {
        self.to_parts().0.opcode()
    }
}

/// Bytes of padding after a data segment of `len` bytes.
pub fn pad_len(len: usize) -> usize {
    (4 - len % 4) % 4
}

#[cfg(test)]
mod proptests;

/// A one-line description of a PDU for logs: opcode, flags, ITT, the three sequence-number
/// words (CmdSN/StatSN/ExpCmdSN and friends, by position) and the data length. The data
/// itself is never printed: a write's payload would flood the log.
pub struct PduSummary<'a>(pub &'a Pdu);

impl std::fmt::Display for PduSummary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (h, ahs, data) = self.0.to_parts();
        write!(
            f,
            "op=0x{:02x} flags=0x{:02x} itt=0x{:08x} w20=0x{:08x} w24={} w28={} w32={} ahs={} data={}",
            h.opcode(),
            h.flags(),
            h.itt(),
            h.u32_20(),
            h.u32_24(),
            h.u32_28(),
            h.u32_32(),
            ahs.len(),
            data.len()
        )
    }
}
