//! Typed PDUs sent by initiators (RFC 7143 §11): NOP-Out, SCSI Command, Task Management
//! Request, Login Request, Text Request, SCSI Data-Out, Logout Request and SNACK.
//!
//! Each type converts to and from a [`Bhs`] plus its data segment. Reserved bits are written
//! as zero and ignored when read.

use bytes::Bytes;

use super::bhs::Bhs;
use super::{opcode, AhsError};

/// NOP-Out (0x00): ping from the initiator, or answer to our NOP-In.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NopOut {
    pub immediate: bool,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub data: Bytes,
}

impl NopOut {
    pub(crate) fn decode(h: &Bhs, data: Bytes) -> Self {
        NopOut {
            immediate: h.immediate(),
            lun: h.lun(),
            itt: h.itt(),
            ttt: h.u32_20(),
            cmd_sn: h.u32_24(),
            exp_stat_sn: h.u32_28(),
            data,
        }
    }
    pub(crate) fn encode(&self) -> Bhs {
        let mut h = Bhs::new(opcode::NOP_OUT, self.immediate);
        h.set_flags(0x80);
        h.set_lun(self.lun);
        h.set_itt(self.itt);
        h.set_u32_20(self.ttt);
        h.set_u32_24(self.cmd_sn);
        h.set_u32_28(self.exp_stat_sn);
        h
    }
}

/// SCSI Command (0x01).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiCommandPdu {
    pub immediate: bool,
    /// F bit: no unsolicited Data-Out PDUs follow.
    pub final_: bool,
    pub read: bool,
    pub write: bool,
    /// Task attribute (3 bits).
    pub attr: u8,
    pub lun: u64,
    pub itt: u32,
    pub edtl: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub cdb: [u8; 16],
    /// CDB bytes beyond the first 16 (extended CDB AHS, type 1).
    pub ext_cdb: Option<Bytes>,
    /// Bidirectional expected read data length (AHS type 2).
    pub bidi_read_len: Option<u32>,
    /// Immediate data.
    pub data: Bytes,
}

impl ScsiCommandPdu {
    pub(crate) fn decode(h: &Bhs, ahs: &[u8], data: Bytes) -> Result<Self, AhsError> {
        let mut ext_cdb = None;
        let mut bidi_read_len = None;
        let mut rest = ahs;
        while !rest.is_empty() {
            let (len, ty) = match rest {
                [a, b, t, _, ..] => (u16::from_be_bytes([*a, *b]) as usize, *t),
                _ => return Err(AhsError),
            };
            let body = rest.get(4..4 + len).ok_or(AhsError)?;
            let padded = 4 + len.div_ceil(4) * 4;
            match ty {
                1 => {
                    // first byte reserved, then CDB bytes 16..
                    let cdb = body.get(1..).ok_or(AhsError)?;
                    if ext_cdb.is_some() {
                        return Err(AhsError);
                    }
                    ext_cdb = Some(Bytes::copy_from_slice(cdb));
                }
                2 => {
                    if len != 5 || bidi_read_len.is_some() {
                        return Err(AhsError);
                    }
                    let b = body.get(1..5).ok_or(AhsError)?;
                    bidi_read_len = Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                }
                _ => return Err(AhsError),
            }
            rest = rest.get(padded..).ok_or(AhsError)?;
        }
        let f = h.flags();
        Ok(ScsiCommandPdu {
            immediate: h.immediate(),
            final_: f & 0x80 != 0,
            read: f & 0x40 != 0,
            write: f & 0x20 != 0,
            attr: f & 0x07,
            lun: h.lun(),
            itt: h.itt(),
            edtl: h.u32_20(),
            cmd_sn: h.u32_24(),
            exp_stat_sn: h.u32_28(),
            cdb: h.cdb(),
            ext_cdb,
            bidi_read_len,
            data,
        })
    }
    pub(crate) fn encode(&self) -> (Bhs, Vec<u8>) {
        let mut h = Bhs::new(opcode::SCSI_COMMAND, self.immediate);
        let mut f = self.attr & 0x07;
        if self.final_ {
            f |= 0x80;
        }
        if self.read {
            f |= 0x40;
        }
        if self.write {
            f |= 0x20;
        }
        h.set_flags(f);
        h.set_lun(self.lun);
        h.set_itt(self.itt);
        h.set_u32_20(self.edtl);
        h.set_u32_24(self.cmd_sn);
        h.set_u32_28(self.exp_stat_sn);
        h.set_cdb(self.cdb);
        let mut ahs = Vec::new();
        if let Some(ext) = &self.ext_cdb {
            let len = (ext.len() + 1) as u16;
            ahs.extend_from_slice(&len.to_be_bytes());
            ahs.push(1);
            ahs.push(0);
            ahs.push(0);
            ahs.extend_from_slice(ext);
            while ahs.len() % 4 != 0 {
                ahs.push(0);
            }
        }
        if let Some(r) = self.bidi_read_len {
            ahs.extend_from_slice(&[0, 5, 2, 0, 0]);
            ahs.extend_from_slice(&r.to_be_bytes());
            ahs.extend_from_slice(&[0, 0, 0]);
        }
        (h, ahs)
    }
}

/// Task Management Function Request (0x02).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMgmtRequest {
    pub immediate: bool,
    /// Function code (7 bits).
    pub function: u8,
    pub lun: u64,
    pub itt: u32,
    pub rtt: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub ref_cmd_sn: u32,
    pub exp_data_sn: u32,
}

impl TaskMgmtRequest {
    pub(crate) fn decode(h: &Bhs) -> Self {
        TaskMgmtRequest {
            immediate: h.immediate(),
            function: h.flags() & 0x7f,
            lun: h.lun(),
            itt: h.itt(),
            rtt: h.u32_20(),
            cmd_sn: h.u32_24(),
            exp_stat_sn: h.u32_28(),
            ref_cmd_sn: h.u32_32(),
            exp_data_sn: h.u32_36(),
        }
    }
    pub(crate) fn encode(&self) -> Bhs {
        let mut h = Bhs::new(opcode::TASK_MGMT_REQUEST, self.immediate);
        h.set_flags(0x80 | (self.function & 0x7f));
        h.set_lun(self.lun);
        h.set_itt(self.itt);
        h.set_u32_20(self.rtt);
        h.set_u32_24(self.cmd_sn);
        h.set_u32_28(self.exp_stat_sn);
        h.set_u32_32(self.ref_cmd_sn);
        h.set_u32_36(self.exp_data_sn);
        h
    }
}

/// Login Request (0x03).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRequest {
    pub transit: bool,
    pub cont: bool,
    pub csg: u8,
    pub nsg: u8,
    pub version_max: u8,
    pub version_min: u8,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub itt: u32,
    pub cid: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub data: Bytes,
}

impl LoginRequest {
    pub(crate) fn decode(h: &Bhs, data: Bytes) -> Self {
        let f = h.flags();
        LoginRequest {
            transit: f & 0x80 != 0,
            cont: f & 0x40 != 0,
            csg: (f >> 2) & 3,
            nsg: f & 3,
            version_max: h.b2(),
            version_min: h.b3(),
            isid: h.isid(),
            tsih: h.u16_14(),
            itt: h.itt(),
            cid: h.u16_20(),
            cmd_sn: h.u32_24(),
            exp_stat_sn: h.u32_28(),
            data,
        }
    }
    pub(crate) fn encode(&self) -> Bhs {
        let mut h = Bhs::new(opcode::LOGIN_REQUEST, true);
        h.set_flags(login_flags(self.transit, self.cont, self.csg, self.nsg));
        h.set_b2(self.version_max);
        h.set_b3(self.version_min);
        h.set_isid(self.isid);
        h.set_u16_14(self.tsih);
        h.set_itt(self.itt);
        h.set_u16_20(self.cid);
        h.set_u32_24(self.cmd_sn);
        h.set_u32_28(self.exp_stat_sn);
        h
    }
}

pub(crate) fn login_flags(transit: bool, cont: bool, csg: u8, nsg: u8) -> u8 {
    let mut f = ((csg & 3) << 2) | (nsg & 3);
    if transit {
        f |= 0x80;
    }
    if cont {
        f |= 0x40;
    }
    f
}

/// Text Request (0x04).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextRequest {
    pub immediate: bool,
    pub final_: bool,
    pub cont: bool,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub data: Bytes,
}

impl TextRequest {
    pub(crate) fn decode(h: &Bhs, data: Bytes) -> Self {
        TextRequest {
            immediate: h.immediate(),
            final_: h.flags() & 0x80 != 0,
            cont: h.flags() & 0x40 != 0,
            lun: h.lun(),
            itt: h.itt(),
            ttt: h.u32_20(),
            cmd_sn: h.u32_24(),
            exp_stat_sn: h.u32_28(),
            data,
        }
    }
    pub(crate) fn encode(&self) -> Bhs {
        let mut h = Bhs::new(opcode::TEXT_REQUEST, self.immediate);
        h.set_flags(if self.final_ { 0x80 } else { 0 } | if self.cont { 0x40 } else { 0 });
        h.set_lun(self.lun);
        h.set_itt(self.itt);
        h.set_u32_20(self.ttt);
        h.set_u32_24(self.cmd_sn);
        h.set_u32_28(self.exp_stat_sn);
        h
    }
}

/// SCSI Data-Out (0x05).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiDataOut {
    pub final_: bool,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub exp_stat_sn: u32,
    pub data_sn: u32,
    pub buffer_offset: u32,
    pub data: Bytes,
}

impl ScsiDataOut {
    pub(crate) fn decode(h: &Bhs, data: Bytes) -> Self {
        ScsiDataOut {
            final_: h.flags() & 0x80 != 0,
            lun: h.lun(),
            itt: h.itt(),
            ttt: h.u32_20(),
            exp_stat_sn: h.u32_28(),
            data_sn: h.u32_36(),
            buffer_offset: h.u32_40(),
            data,
        }
    }
    pub(crate) fn encode(&self) -> Bhs {
        let mut h = Bhs::new(opcode::DATA_OUT, false);
        h.set_flags(if self.final_ { 0x80 } else { 0 });
        h.set_lun(self.lun);
        h.set_itt(self.itt);
        h.set_u32_20(self.ttt);
        h.set_u32_28(self.exp_stat_sn);
        h.set_u32_36(self.data_sn);
        h.set_u32_40(self.buffer_offset);
        h
    }
}

/// Logout Request (0x06).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequest {
    pub immediate: bool,
    /// Reason code: 0 close session, 1 close connection, 2 remove connection for recovery.
    pub reason: u8,
    pub itt: u32,
    pub cid: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

impl LogoutRequest {
    pub(crate) fn decode(h: &Bhs) -> Self {
        LogoutRequest {
            immediate: h.immediate(),
            reason: h.flags() & 0x7f,
            itt: h.itt(),
            cid: h.u16_20(),
            cmd_sn: h.u32_24(),
            exp_stat_sn: h.u32_28(),
        }
    }
    pub(crate) fn encode(&self) -> Bhs {
        let mut h = Bhs::new(opcode::LOGOUT_REQUEST, self.immediate);
        h.set_flags(0x80 | (self.reason & 0x7f));
        h.set_itt(self.itt);
        h.set_u16_20(self.cid);
        h.set_u32_24(self.cmd_sn);
        h.set_u32_28(self.exp_stat_sn);
        h
    }
}

/// SNACK Request (0x10). Not supported at ErrorRecoveryLevel 0; decoded so it can be rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snack {
    /// SNACK type (4 bits).
    pub kind: u8,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub exp_stat_sn: u32,
    pub beg_run: u32,
    pub run_length: u32,
}

impl Snack {
    pub(crate) fn decode(h: &Bhs) -> Self {
        Snack {
            kind: h.flags() & 0x0f,
            lun: h.lun(),
            itt: h.itt(),
            ttt: h.u32_20(),
            exp_stat_sn: h.u32_28(),
            beg_run: h.u32_40(),
            run_length: h.u32_44(),
        }
    }
    pub(crate) fn encode(&self) -> Bhs {
        let mut h = Bhs::new(opcode::SNACK, false);
        h.set_flags(0x80 | (self.kind & 0x0f));
        h.set_lun(self.lun);
        h.set_itt(self.itt);
        h.set_u32_20(self.ttt);
        h.set_u32_28(self.exp_stat_sn);
        h.set_u32_40(self.beg_run);
        h.set_u32_44(self.run_length);
        h
    }
}
