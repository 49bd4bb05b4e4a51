//! Panic-free big-endian field access for CDBs and parameter lists.
//!
//! Callers check lengths first (CDB length against the command table, parameter list
//! length against the data-out); these accessors then never panic even if a check was
//! forgotten: bytes beyond the end read as zero.

/// Read-only view over a CDB or parameter list.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a>(pub &'a [u8]);

impl<'a> Fields<'a> {
    /// Byte `i`, or 0 past the end.
    pub fn u8(&self, i: usize) -> u8 {
        self.0.get(i).copied().unwrap_or(0)
    }

    /// Big-endian unsigned integer of `n` (≤ 8) bytes starting at `i`.
    pub fn be(&self, i: usize, n: usize) -> u64 {
        (0..n.min(8)).fold(0u64, |acc, k| (acc << 8) | u64::from(self.u8(i + k)))
    }

    /// 16-bit big-endian field.
    pub fn be16(&self, i: usize) -> u16 {
        self.be(i, 2) as u16
    }

    /// 24-bit big-endian field.
    pub fn be24(&self, i: usize) -> u32 {
        self.be(i, 3) as u32
    }

    /// 32-bit big-endian field.
    pub fn be32(&self, i: usize) -> u32 {
        self.be(i, 4) as u32
    }

    /// 64-bit big-endian field.
    pub fn be64(&self, i: usize) -> u64 {
        self.be(i, 8)
    }

    /// Sub-slice `[start, start+len)` clamped to the buffer.
    pub fn slice(&self, start: usize, len: usize) -> &'a [u8] {
        let s = start.min(self.0.len());
        let e = start.saturating_add(len).min(self.0.len());
        self.0.get(s..e).unwrap_or(&[])
    }
}

/// CDB length implied by the group code of an operation code.
#[cfg(test)]
pub fn cdb_len_for_opcode(opcode: u8) -> Option<usize> {
    match opcode >> 5 {
        0 => Some(6),
        1 | 2 => Some(10),
        4 => Some(16),
        5 => Some(12),
        _ => None,
    }
}

/// Copy `data` cut to `alloc` bytes (allocation length handling).
pub fn truncate(mut data: Vec<u8>, alloc: usize) -> bytes::Bytes {
    data.truncate(alloc);
    bytes::Bytes::from(data)
}

/// Write `v` big-endian into `buf[at..at+N]` if it fits (never panics).
pub fn put_be(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(at..at.saturating_add(bytes.len())) {
        dst.copy_from_slice(bytes);
    }
}

/// Copy ASCII text into a fixed-width, space-padded field.
pub fn put_ascii(buf: &mut [u8], at: usize, width: usize, text: &str) {
    for i in 0..width {
        let c = text
            .as_bytes()
            .get(i)
            .copied()
            .filter(|c| (0x20..=0x7e).contains(c))
            .unwrap_or(b' ');
        if let Some(b) = buf.get_mut(at + i) {
            *b = c;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_never_panic() {
        let f = Fields(&[0x12, 0x34]);
        assert_eq!(f.be16(0), 0x1234);
        assert_eq!(f.be32(0), 0x1234_0000);
        assert_eq!(f.be64(10), 0);
        assert_eq!(f.slice(1, 10), &[0x34]);
        assert_eq!(f.slice(5, 10), &[] as &[u8]);
    }

    #[test]
    fn group_codes() {
        assert_eq!(cdb_len_for_opcode(0x08), Some(6));
        assert_eq!(cdb_len_for_opcode(0x28), Some(10));
        assert_eq!(cdb_len_for_opcode(0x5e), Some(10));
        assert_eq!(cdb_len_for_opcode(0x88), Some(16));
        assert_eq!(cdb_len_for_opcode(0xa3), Some(12));
        assert_eq!(cdb_len_for_opcode(0x7f), None);
    }
}
