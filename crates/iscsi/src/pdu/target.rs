//! Typed PDUs sent by targets (RFC 7143 §11): NOP-In, SCSI Response, Task Management
//! Response, Login Response, Text Response, SCSI Data-In, Logout Response, R2T, Asynchronous
//! Message and Reject.
//!
//! Decoding these is only needed by tests and tools, but it keeps the codec symmetric.

use bytes::Bytes;

use super::bhs::Bhs;
use super::initiator::login_flags;
use super::opcode;

/// Sequence numbers every target PDU carries at offsets 24/28/32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnFields {
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

impl SnFields {
    fn read(h: &Bhs) -> Self {
        SnFields {
            stat_sn: h.u32_24(),
            exp_cmd_sn: h.u32_28(),
            max_cmd_sn: h.u32_32(),
        }
    }
    fn write(&self, h: &mut Bhs) {
        h.set_u32_24(self.stat_sn);
        h.set_u32_28(self.exp_cmd_sn);
        h.set_u32_32(self.max_cmd_sn);
    }
}

/// NOP-In (0x20).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NopIn {
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub sn: SnFields,
    pub data: Bytes,
}

impl NopIn {
    pub(crate) fn decode(h: &Bhs, data: Bytes) -> Self {
        NopIn {
            lun: h.lun(),
            itt: h.itt(),
            ttt: h.u32_20(),
            sn: SnFields::read(h),
            data,
        }
    }
    pub(crate) fn encode(&self) -> Bhs {
        let mut h = Bhs::new(opcode::NOP_IN, false);
        h.set_flags(0x80);
        h.set_lun(self.lun);
        h.set_itt(self.itt);
        h.set_u32_20(self.ttt);
        self.sn.write(&mut h);
        h
    }
}

/// Residual flags and count shared by SCSI Response and Data-In.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Residual {
    #[default]
    None,
    Overflow(u32),
    Underflow(u32),
}

impl Residual {
    fn flags(&self) -> u8 {
        match self {
            Residual::None => 0,
            Residual::Overflow(_) => 0x04,
            Residual::Underflow(_) => 0x02,
        }
    }
    fn count(&self) -> u32 {
        match self {
            Residual::None => 0,
            Residual::Overflow(n) | Residual::Underflow(n) => *n,
        }
    }
    fn read(flags: u8, count: u32) -> Self {
        if flags & 0x04 != 0 {
            Residual::Overflow(count)
        } else if flags & 0x02 != 0 {
            Residual::Underflow(count)
        } else {
            Residual::None
        }
    }
}

/// SCSI Response (0x21).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiResponse {
    /// iSCSI response code (0 = command completed at target).
    pub response: u8,
    pub status: u8,
    pub itt: u32,
    pub snack_tag: u32,
    pub sn: SnFields,
    pub exp_data_sn: u32,
    pub bidi_residual: Residual,
    pub residual: Residual,
    /// SenseLength + sense data (or response data).
    pub data: Bytes,
}

impl ScsiResponse {
    pub(crate) fn decode(h: &Bhs, data: Bytes) -> Self {
        let f = h.flags();
        ScsiResponse {
            response: h.b2(),
            status: h.b3(),
            itt: h.itt(),
            snack_tag: h.u32_20(),
            sn: SnFields::read(h),
            exp_data_sn: h.u32_36(),
            bidi_residual: Residual::read(f >> 2, h.u32_40()),
            residual: Residual::read(f, h.u32_44()),
            data,
        }
    }
    pub(crate) fn encode(&self) -> Bhs {
        let mut h = Bhs::new(opcode::SCSI_RESPONSE, false);
        h.set_flags(0x80 | self.residual.flags() | (self.bidi_residual.flags() << 2));
        h.set_b2(self.response);
        h.set_b3(self.status);
        h.set_itt(self.itt);
        h.set_u32_20(self.snack_tag);
        self.sn.write(&mut h);
        h.set_u32_36(self.exp_data_sn);
        h.set_u32_40(self.bidi_residual.count());
        h.set_u32_44(self.residual.count());
        h
    }
}

/// Task Management Function Response (0x22).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMgmtResponse {
    pub response: u8,
    pub itt: u32,
    pub sn: SnFields,
}

impl TaskMgmtResponse {
    pub(crate) fn decode(h: &Bhs) -> Self {
        TaskMgmtResponse {
            response: h.b2(),
            itt: h.itt(),
            sn: SnFields::read(h),
        }
    }
    pub(crate) fn encode(&self) -> Bhs {
        let mut h = Bhs::new(opcode::TASK_MGMT_RESPONSE, false);
        h.set_flags(0x80);
        h.set_b2(self.response);
        h.set_itt(self.itt);
        self.sn.write(&mut h);
        h
    }
}

/// Login Response (0x23).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginResponse {
    pub transit: bool,
    pub cont: bool,
    pub csg: u8,
    pub nsg: u8,
    pub version_max: u8,
    pub version_active: u8,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub itt: u32,
    pub sn: SnFields,
    pub status_class: u8,
    pub status_detail: u8,
    pub data: Bytes,
}

impl LoginResponse {
    pub(crate) fn decode(h: &Bhs, data: Bytes) -> Self {
        let f = h.flags();
        LoginResponse {
            transit: f & 0x80 != 0,
            cont: f & 0x40 != 0,
            csg: (f >> 2) & 3,
            nsg: f & 3,
            version_max: h.b2(),
            version_active: h.b3(),
            isid: h.isid(),
            tsih: h.u16_14(),
            itt: h.itt(),
            sn: SnFields::read(h),
            status_class: h.byte(36),
            status_detail: h.byte(37),
            data,
        }
    }
    pub(crate) fn encode(&self) -> Bhs {
        let mut h = Bhs::new(opcode::LOGIN_RESPONSE, false);
        h.set_flags(login_flags(self.transit, self.cont, self.csg, self.nsg));
        h.set_b2(self.version_max);
        h.set_b3(self.version_active);
        h.set_isid(self.isid);
        h.set_u16_14(self.tsih);
        h.set_itt(self.itt);
        self.sn.write(&mut h);
        h.0[36] = self.status_class;
        h.0[37] = self.status_detail;
        h
    }
}

/// Text Response (0x24).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextResponse {
    pub final_: bool,
    pub cont: bool,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub sn: SnFields,
    pub data: Bytes,
}

impl TextResponse {
    pub(crate) fn decode(h: &Bhs, data: Bytes) -> Self {
        TextResponse {
            final_: h.flags() & 0x80 != 0,
            cont: h.flags() & 0x40 != 0,
            lun: h.lun(),
            itt: h.itt(),
            ttt: h.u32_20(),
            sn: SnFields::read(h),
            data,
        }
    }
    pub(crate) fn encode(&self) -> Bhs {
        let mut h = Bhs::new(opcode::TEXT_RESPONSE, false);
        h.set_flags(if self.final_ { 0x80 } else { 0 } | if self.cont { 0x40 } else { 0 });
        h.set_lun(self.lun);
        h.set_itt(self.itt);
        h.set_u32_20(self.ttt);
        self.sn.write(&mut h);
        h
    }
}

/// SCSI Data-In (0x25).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiDataIn {
    pub final_: bool,
    pub ack: bool,
    /// S bit: status is carried in this PDU.
    pub has_status: bool,
    pub residual: Residual,
    pub status: u8,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub sn: SnFields,
    pub data_sn: u32,
    pub buffer_offset: u32,
    pub data: Bytes,
}

impl ScsiDataIn {
    pub(crate) fn decode(h: &Bhs, data: Bytes) -> Self {
        let f = h.flags();
        ScsiDataIn {
            final_: f & 0x80 != 0,
            ack: f & 0x40 != 0,
            has_status: f & 0x01 != 0,
            residual: Residual::read(f, h.u32_44()),
            status: h.b3(),
            lun: h.lun(),
            itt: h.itt(),
            ttt: h.u32_20(),
            sn: SnFields::read(h),
            data_sn: h.u32_36(),
            buffer_offset: h.u32_40(),
            data,
        }
    }
    pub(crate) fn encode(&self) -> Bhs {
        let mut h = Bhs::new(opcode::DATA_IN, false);
        let mut f = self.residual.flags();
        if self.final_ {
            f |= 0x80;
        }
        if self.ack {
            f |= 0x40;
        }
        if self.has_status {
            f |= 0x01;
        }
        h.set_flags(f);
        h.set_b3(self.status);
        h.set_lun(self.lun);
        h.set_itt(self.itt);
        h.set_u32_20(self.ttt);
        self.sn.write(&mut h);
        h.set_u32_36(self.data_sn);
        h.set_u32_40(self.buffer_offset);
        h.set_u32_44(self.residual.count());
        h
    }
}

/// Logout Response (0x26).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutResponse {
    pub response: u8,
    pub itt: u32,
    pub sn: SnFields,
    pub time2wait: u16,
    pub time2retain: u16,
}

impl LogoutResponse {
    pub(crate) fn decode(h: &Bhs) -> Self {
        LogoutResponse {
            response: h.b2(),
            itt: h.itt(),
            sn: SnFields::read(h),
            time2wait: h.u16_40(),
            time2retain: h.u16_42(),
        }
    }
    pub(crate) fn encode(&self) -> Bhs {
        let mut h = Bhs::new(opcode::LOGOUT_RESPONSE, false);
        h.set_flags(0x80);
        h.set_b2(self.response);
        h.set_itt(self.itt);
        self.sn.write(&mut h);
        h.set_u16_40(self.time2wait);
        h.set_u16_42(self.time2retain);
        h
    }
}

/// Ready To Transfer (0x31).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct R2t {
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub sn: SnFields,
    pub r2t_sn: u32,
    pub buffer_offset: u32,
    pub desired_length: u32,
}

impl R2t {
    pub(crate) fn decode(h: &Bhs) -> Self {
        R2t {
            lun: h.lun(),
            itt: h.itt(),
            ttt: h.u32_20(),
            sn: SnFields::read(h),
            r2t_sn: h.u32_36(),
            buffer_offset: h.u32_40(),
            desired_length: h.u32_44(),
        }
    }
    pub(crate) fn encode(&self) -> Bhs {
        let mut h = Bhs::new(opcode::R2T, false);
        h.set_flags(0x80);
        h.set_lun(self.lun);
        h.set_itt(self.itt);
        h.set_u32_20(self.ttt);
        self.sn.write(&mut h);
        h.set_u32_36(self.r2t_sn);
        h.set_u32_40(self.buffer_offset);
        h.set_u32_44(self.desired_length);
        h
    }
}

/// Asynchronous Message (0x32).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsyncMessage {
    pub lun: u64,
    pub sn: SnFields,
    /// 0 SCSI event, 1 logout request, 2 connection drop, 3 session drop, 4 negotiation request.
    pub event: u8,
    pub vcode: u8,
    pub param1: u16,
    pub param2: u16,
    pub param3: u16,
    pub data: Bytes,
}

impl AsyncMessage {
    pub(crate) fn decode(h: &Bhs, data: Bytes) -> Self {
        AsyncMessage {
            lun: h.lun(),
            sn: SnFields::read(h),
            event: h.byte(36),
            vcode: h.byte(37),
            param1: h.u16_38(),
            param2: h.u16_40(),
            param3: h.u16_42(),
            data,
        }
    }
    pub(crate) fn encode(&self) -> Bhs {
        let mut h = Bhs::new(opcode::ASYNC_MESSAGE, false);
        h.set_flags(0x80);
        h.set_lun(self.lun);
        h.set_itt(0xffff_ffff);
        self.sn.write(&mut h);
        h.0[36] = self.event;
        h.0[37] = self.vcode;
        h.set_u16_38(self.param1);
        h.set_u16_40(self.param2);
        h.set_u16_42(self.param3);
        h
    }
}

/// Reject (0x3f).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub reason: u8,
    pub sn: SnFields,
    pub data_sn: u32,
    /// The rejected PDU's header (48 bytes).
    pub data: Bytes,
}

impl Reject {
    pub(crate) fn decode(h: &Bhs, data: Bytes) -> Self {
        Reject {
            reason: h.b2(),
            sn: SnFields::read(h),
            data_sn: h.u32_36(),
            data,
        }
    }
    pub(crate) fn encode(&self) -> Bhs {
        let mut h = Bhs::new(opcode::REJECT, false);
        h.set_flags(0x80);
        h.set_b2(self.reason);
        h.set_itt(0xffff_ffff);
        self.sn.write(&mut h);
        h.set_u32_36(self.data_sn);
        h
    }
}
