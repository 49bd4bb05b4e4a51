//! The 48-byte Basic Header Segment as a fixed array with typed field accessors.
//!
//! All offsets are compile-time constants inside the fixed array, so no accessor can panic on
//! peer-controlled input.

/// Length of the Basic Header Segment.
pub const BHS_LEN: usize = 48;

/// A raw Basic Header Segment.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Bhs(pub [u8; BHS_LEN]);

impl std::fmt::Debug for Bhs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Bhs(op={:#04x} flags={:#04x} dsl={})",
            self.opcode(),
            self.flags(),
            self.data_segment_len()
        )
    }
}

impl Default for Bhs {
    fn default() -> Self {
        Bhs([0; BHS_LEN])
    }
}

macro_rules! field {
    ($get:ident, $set:ident, $ty:ty, $off:expr, $n:expr) => {
        #[doc = concat!("Field at byte offset ", stringify!($off), ".")]
        pub fn $get(&self) -> $ty {
            let mut b = [0u8; $n];
            b.copy_from_slice(&self.0[$off..$off + $n]);
            <$ty>::from_be_bytes(b)
        }
        #[doc = concat!("Sets the field at byte offset ", stringify!($off), ".")]
        pub fn $set(&mut self, v: $ty) {
            self.0[$off..$off + $n].copy_from_slice(&v.to_be_bytes());
        }
    };
}

impl Bhs {
    /// The header at the front of `buf`, if it holds one.
    pub fn read(buf: &[u8]) -> Option<Bhs> {
        let mut h = [0u8; BHS_LEN];
        h.copy_from_slice(buf.get(..BHS_LEN)?);
        Some(Bhs(h))
    }
    /// A header with the given opcode and immediate bit.
    pub fn new(opcode: u8, immediate: bool) -> Self {
        let mut b = Bhs::default();
        b.0[0] = (opcode & 0x3f) | if immediate { 0x40 } else { 0 };
        b
    }
    /// Opcode (low six bits of byte 0).
    pub fn opcode(&self) -> u8 {
        self.0[0] & 0x3f
    }
    /// The I (immediate delivery) bit.
    pub fn immediate(&self) -> bool {
        self.0[0] & 0x40 != 0
    }
    /// Byte 1: opcode-specific flags.
    pub fn flags(&self) -> u8 {
        self.0[1]
    }
    /// Sets byte 1.
    pub fn set_flags(&mut self, f: u8) {
        self.0[1] = f;
    }
    /// Byte 2.
    pub fn b2(&self) -> u8 {
        self.0[2]
    }
    /// Sets byte 2.
    pub fn set_b2(&mut self, v: u8) {
        self.0[2] = v;
    }
    /// Byte 3.
    pub fn b3(&self) -> u8 {
        self.0[3]
    }
    /// Sets byte 3.
    pub fn set_b3(&mut self, v: u8) {
        self.0[3] = v;
    }
    /// TotalAHSLength in 4-byte words.
    pub fn total_ahs_words(&self) -> u8 {
        self.0[4]
    }
    /// Sets TotalAHSLength (4-byte words).
    pub fn set_total_ahs_words(&mut self, v: u8) {
        self.0[4] = v;
    }
    /// DataSegmentLength (24 bits).
    pub fn data_segment_len(&self) -> u32 {
        u32::from_be_bytes([0, self.0[5], self.0[6], self.0[7]])
    }
    /// Sets DataSegmentLength; values are truncated to 24 bits.
    pub fn set_data_segment_len(&mut self, v: u32) {
        let b = v.to_be_bytes();
        self.0[5] = b[1];
        self.0[6] = b[2];
        self.0[7] = b[3];
    }
    field!(lun, set_lun, u64, 8, 8);
    field!(itt, set_itt, u32, 16, 4);
    field!(u32_20, set_u32_20, u32, 20, 4);
    field!(u32_24, set_u32_24, u32, 24, 4);
    field!(u32_28, set_u32_28, u32, 28, 4);
    field!(u32_32, set_u32_32, u32, 32, 4);
    field!(u32_36, set_u32_36, u32, 36, 4);
    field!(u32_40, set_u32_40, u32, 40, 4);
    field!(u32_44, set_u32_44, u32, 44, 4);
    field!(u16_20, set_u16_20, u16, 20, 2);
    field!(u16_14, set_u16_14, u16, 14, 2);
    field!(u16_38, set_u16_38, u16, 38, 2);
    field!(u16_40, set_u16_40, u16, 40, 2);
    field!(u16_42, set_u16_42, u16, 42, 2);
    /// ISID (bytes 8..14) of login PDUs.
    pub fn isid(&self) -> [u8; 6] {
        let mut b = [0u8; 6];
        b.copy_from_slice(&self.0[8..14]);
        b
    }
    /// Sets the ISID.
    pub fn set_isid(&mut self, isid: [u8; 6]) {
        self.0[8..14].copy_from_slice(&isid);
    }
    /// The 16-byte CDB of a SCSI Command.
    pub fn cdb(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b.copy_from_slice(&self.0[32..48]);
        b
    }
    /// Sets the 16-byte CDB.
    pub fn set_cdb(&mut self, cdb: [u8; 16]) {
        self.0[32..48].copy_from_slice(&cdb);
    }
    /// Byte at an arbitrary offset, if in range.
    pub fn byte(&self, i: usize) -> u8 {
        self.0.get(i).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        let mut b = Bhs::new(0x01, true);
        b.set_data_segment_len(0x0102_0304);
        assert_eq!(b.data_segment_len(), 0x02_0304);
        b.set_itt(0xdead_beef);
        assert_eq!(b.itt(), 0xdead_beef);
        assert_eq!(b.opcode(), 1);
        assert!(b.immediate());
    }
}
