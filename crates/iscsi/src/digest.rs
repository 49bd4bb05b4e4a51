//! CRC32C header and data digests (RFC 7143 §12.1, "CRC32C" digest).
//!
//! The digest is the CRC32C of the covered bytes, sent as a 4-byte word in little-endian
//! order (the byte order that makes the check over data+digest equal the magic residue;
//! this is what every deployed initiator uses).

/// CRC32C over one contiguous slice.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// CRC32C over several slices, as if they were concatenated.
pub fn crc32c_parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u32 {
    parts.into_iter().fold(0u32, crc32c::crc32c_append)
}

/// Encodes a digest value the way it travels on the wire.
pub fn to_wire(d: u32) -> [u8; 4] {
    d.to_le_bytes()
}

/// Decodes a digest value read from the wire.
pub fn from_wire(b: [u8; 4]) -> u32 {
    u32::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // RFC 3720 B.4: 32 bytes of zeros -> 0xaa36918a
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(to_wire(crc32c(&[0u8; 32])), [0xaa, 0x36, 0x91, 0x8a]);
    }

    #[test]
    fn parts_equal_whole() {
        let a = b"hello ";
        let b = b"world";
        assert_eq!(crc32c_parts([&a[..], &b[..]]), crc32c(b"hello world"));
    }
}
