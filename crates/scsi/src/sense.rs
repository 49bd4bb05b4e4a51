//! Sense data: keys, additional sense codes and their encoding in fixed (0x70) or
//! descriptor (0x72) format, including the sense-key-specific field pointer and the
//! INFORMATION field.

use bytes::{BufMut, Bytes, BytesMut};

/// SCSI sense keys used by this device model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SenseKey {
    /// NO SENSE.
    NoSense = 0x0,
    /// NOT READY.
    NotReady = 0x2,
    /// MEDIUM ERROR.
    MediumError = 0x3,
    /// HARDWARE ERROR.
    HardwareError = 0x4,
    /// ILLEGAL REQUEST.
    IllegalRequest = 0x5,
    /// UNIT ATTENTION.
    UnitAttention = 0x6,
    /// DATA PROTECT.
    DataProtect = 0x7,
    /// ABORTED COMMAND.
    AbortedCommand = 0xB,
    /// MISCOMPARE.
    Miscompare = 0xE,
}

/// An additional sense code / qualifier pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Asc(pub u8, pub u8);

impl Asc {
    /// NO ADDITIONAL SENSE INFORMATION.
    pub const NO_ADDITIONAL_SENSE: Asc = Asc(0x00, 0x00);
    /// WRITE ERROR.
    pub const WRITE_ERROR: Asc = Asc(0x0C, 0x00);
    /// INVALID FIELD IN COMMAND INFORMATION UNIT.
    pub const INVALID_FIELD_IN_CMD_IU: Asc = Asc(0x0E, 0x03);
    /// UNRECOVERED READ ERROR.
    pub const UNRECOVERED_READ_ERROR: Asc = Asc(0x11, 0x00);
    /// PARAMETER LIST LENGTH ERROR.
    pub const PARAMETER_LIST_LENGTH_ERROR: Asc = Asc(0x1A, 0x00);
    /// MISCOMPARE DURING VERIFY OPERATION.
    pub const MISCOMPARE_DURING_VERIFY: Asc = Asc(0x1D, 0x00);
    /// INVALID COMMAND OPERATION CODE.
    pub const INVALID_OPCODE: Asc = Asc(0x20, 0x00);
    /// LOGICAL BLOCK ADDRESS OUT OF RANGE.
    pub const LBA_OUT_OF_RANGE: Asc = Asc(0x21, 0x00);
    /// INVALID FIELD IN CDB.
    pub const INVALID_FIELD_IN_CDB: Asc = Asc(0x24, 0x00);
    /// LOGICAL UNIT NOT SUPPORTED.
    pub const LU_NOT_SUPPORTED: Asc = Asc(0x25, 0x00);
    /// INVALID FIELD IN PARAMETER LIST.
    pub const INVALID_FIELD_IN_PARAM_LIST: Asc = Asc(0x26, 0x00);
    /// INVALID RELEASE OF PERSISTENT RESERVATION.
    pub const INVALID_RELEASE_OF_PR: Asc = Asc(0x26, 0x04);
    /// WRITE PROTECTED.
    pub const WRITE_PROTECTED: Asc = Asc(0x27, 0x00);
    /// SOFTWARE WRITE PROTECTED (control mode page SWP).
    pub const SOFTWARE_WRITE_PROTECTED: Asc = Asc(0x27, 0x02);
    /// SPACE ALLOCATION FAILED WRITE PROTECT.
    pub const SPACE_ALLOCATION_FAILED: Asc = Asc(0x27, 0x07);
    /// POWER ON, RESET, OR BUS DEVICE RESET OCCURRED.
    pub const POWER_ON_RESET: Asc = Asc(0x29, 0x00);
    /// POWER ON OCCURRED.
    pub const POWER_ON_OCCURRED: Asc = Asc(0x29, 0x01);
    /// BUS DEVICE RESET FUNCTION OCCURRED (logical unit reset).
    pub const BUS_DEVICE_RESET: Asc = Asc(0x29, 0x03);
    /// MODE PARAMETERS CHANGED.
    pub const MODE_PARAMETERS_CHANGED: Asc = Asc(0x2A, 0x01);
    /// RESERVATIONS PREEMPTED.
    pub const RESERVATIONS_PREEMPTED: Asc = Asc(0x2A, 0x03);
    /// RESERVATIONS RELEASED.
    pub const RESERVATIONS_RELEASED: Asc = Asc(0x2A, 0x04);
    /// REGISTRATIONS PREEMPTED.
    pub const REGISTRATIONS_PREEMPTED: Asc = Asc(0x2A, 0x05);
    /// CAPACITY DATA HAS CHANGED.
    pub const CAPACITY_DATA_CHANGED: Asc = Asc(0x2A, 0x09);
    /// SAVING PARAMETERS NOT SUPPORTED.
    pub const SAVING_PARAMS_NOT_SUPPORTED: Asc = Asc(0x39, 0x00);
    /// INTERNAL TARGET FAILURE.
    pub const INTERNAL_TARGET_FAILURE: Asc = Asc(0x44, 0x00);
}

/// Where the offending field sits (sense-key-specific FIELD POINTER).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldPointer {
    /// True if the field is in the CDB (C/D = 1), false for the parameter list.
    pub in_cdb: bool,
    /// Byte offset of the field.
    pub byte: u16,
    /// Bit of the most significant offending bit, if known (BPV).
    pub bit: Option<u8>,
}

/// One sense condition. Built by command handlers, encoded once on completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sense {
    /// Sense key.
    pub key: SenseKey,
    /// Additional sense code and qualifier.
    pub asc: Asc,
    /// INFORMATION field (e.g. miscompare offset), if valid.
    pub info: Option<u64>,
    /// Field pointer for ILLEGAL REQUEST conditions.
    pub field: Option<FieldPointer>,
}

impl Sense {
    /// A sense condition without INFORMATION or field pointer.
    pub fn new(key: SenseKey, asc: Asc) -> Self {
        Sense {
            key,
            asc,
            info: None,
            field: None,
        }
    }

    /// ILLEGAL REQUEST / INVALID FIELD IN CDB pointing at `byte` (and `bit`, if given).
    pub fn invalid_cdb(byte: u16, bit: Option<u8>) -> Self {
        Sense {
            field: Some(FieldPointer {
                in_cdb: true,
                byte,
                bit,
            }),
            ..Sense::new(SenseKey::IllegalRequest, Asc::INVALID_FIELD_IN_CDB)
        }
    }

    /// ILLEGAL REQUEST / INVALID FIELD IN PARAMETER LIST pointing at `byte`/`bit`.
    pub fn invalid_param(byte: u16, bit: Option<u8>) -> Self {
        Sense {
            field: Some(FieldPointer {
                in_cdb: false,
                byte,
                bit,
            }),
            ..Sense::new(SenseKey::IllegalRequest, Asc::INVALID_FIELD_IN_PARAM_LIST)
        }
    }

    /// ILLEGAL REQUEST with the given code and no field pointer.
    pub fn illegal(asc: Asc) -> Self {
        Sense::new(SenseKey::IllegalRequest, asc)
    }

    /// ILLEGAL REQUEST / INVALID COMMAND OPERATION CODE (field pointer at byte 0).
    pub fn invalid_opcode() -> Self {
        Sense {
            field: Some(FieldPointer {
                in_cdb: true,
                byte: 0,
                bit: None,
            }),
            ..Sense::illegal(Asc::INVALID_OPCODE)
        }
    }

    /// ILLEGAL REQUEST / LOGICAL BLOCK ADDRESS OUT OF RANGE.
    pub fn lba_out_of_range() -> Self {
        Sense::illegal(Asc::LBA_OUT_OF_RANGE)
    }

    /// UNIT ATTENTION with the given code.
    pub fn unit_attention(asc: Asc) -> Self {
        Sense::new(SenseKey::UnitAttention, asc)
    }

    /// Set the INFORMATION field.
    pub fn with_info(mut self, info: u64) -> Self {
        self.info = Some(info);
        self
    }

    fn sks_bytes(&self) -> Option<[u8; 3]> {
        let f = self.field?;
        let mut b0 = 0x80u8; // SKSV
        if f.in_cdb {
            b0 |= 0x40;
        }
        if let Some(bit) = f.bit {
            b0 |= 0x08 | (bit & 0x07);
        }
        let [hi, lo] = f.byte.to_be_bytes();
        Some([b0, hi, lo])
    }

    /// Encode in fixed format (response code 0x70, 18 bytes).
    pub fn encode_fixed(&self) -> Bytes {
        let mut b = [0u8; 18];
        b[0] = 0x70;
        b[2] = self.key as u8;
        if let Some(info) = self.info {
            if let Ok(v) = u32::try_from(info) {
                b[0] |= 0x80; // VALID
                b[3..7].copy_from_slice(&v.to_be_bytes());
            }
        }
        b[7] = 10;
        b[12] = self.asc.0;
        b[13] = self.asc.1;
        if let Some(sks) = self.sks_bytes() {
            b[15..18].copy_from_slice(&sks);
        }
        Bytes::copy_from_slice(&b)
    }

    /// Encode in descriptor format (response code 0x72) with information and
    /// sense-key-specific descriptors as needed.
    pub fn encode_descriptor(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(8 + 12 + 8);
        b.put_u8(0x72);
        b.put_u8(self.key as u8);
        b.put_u8(self.asc.0);
        b.put_u8(self.asc.1);
        b.put_slice(&[0, 0, 0, 0]); // byte 7 = additional length, patched below
        if let Some(info) = self.info {
            b.put_u8(0x00); // information descriptor
            b.put_u8(0x0A);
            b.put_u8(0x80); // VALID
            b.put_u8(0);
            b.put_u64(info);
        }
        if let Some(sks) = self.sks_bytes() {
            b.put_u8(0x02); // sense key specific descriptor
            b.put_u8(0x06);
            b.put_u8(0);
            b.put_u8(0);
            b.put_slice(&sks);
            b.put_u8(0);
        }
        let add = u8::try_from(b.len() - 8).unwrap_or(u8::MAX);
        if let Some(x) = b.get_mut(7) {
            *x = add;
        }
        b.freeze()
    }

    /// Encode in the format selected by D_SENSE.
    pub fn encode(&self, descriptor: bool) -> Bytes {
        if descriptor {
            self.encode_descriptor()
        } else {
            self.encode_fixed()
        }
    }
}

impl std::fmt::Display for Sense {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sense {:?} asc/ascq {:02x}/{:02x}",
            self.key, self.asc.0, self.asc.1
        )
    }
}

impl std::error::Error for Sense {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_format_with_field_pointer() {
        let s = Sense::invalid_cdb(2, Some(5)).encode_fixed();
        assert_eq!(s.len(), 18);
        assert_eq!(s[0], 0x70);
        assert_eq!(s[2], 0x05);
        assert_eq!(s[7], 10);
        assert_eq!((s[12], s[13]), (0x24, 0x00));
        assert_eq!(s[15], 0x80 | 0x40 | 0x08 | 5);
        assert_eq!((s[16], s[17]), (0, 2));
    }

    #[test]
    fn fixed_format_information() {
        let s = Sense::new(SenseKey::Miscompare, Asc::MISCOMPARE_DURING_VERIFY)
            .with_info(77)
            .encode_fixed();
        assert_eq!(s[0], 0xF0);
        assert_eq!(&s[3..7], &77u32.to_be_bytes());
        assert_eq!(s[2], 0x0E);
    }

    #[test]
    fn descriptor_format() {
        let s = Sense::invalid_param(4, None)
            .with_info(9)
            .encode_descriptor();
        assert_eq!(s[0], 0x72);
        assert_eq!(s[1], 0x05);
        assert_eq!((s[2], s[3]), (0x26, 0x00));
        assert_eq!(s[7] as usize, s.len() - 8);
        assert_eq!(s[8], 0x00);
        assert_eq!(&s[12..20], &9u64.to_be_bytes());
        assert_eq!(s[20], 0x02);
        assert_eq!(s[24], 0x80); // SKSV, C/D = 0
        assert_eq!((s[25], s[26]), (0, 4));
    }
}
