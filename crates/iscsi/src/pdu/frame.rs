//! Finding PDU boundaries in a byte stream, verifying digests, and classifying errors.
//!
//! The framer never buffers or allocates more than the negotiated MaxRecvDataSegmentLength
//! for one data segment: the length is checked as soon as the 48-byte header is present.

use bytes::{Bytes, BytesMut};
use thiserror::Error;

use super::bhs::{Bhs, BHS_LEN};
use super::{pad_len, reject_reason, DecodeError, Pdu};
use crate::digest;

/// Digest settings and our receive limit for the current connection phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameConfig {
    pub header_digest: bool,
    pub data_digest: bool,
    /// Largest data segment we accept (our MaxRecvDataSegmentLength).
    pub max_recv_data_segment_length: u32,
}

impl FrameConfig {
    /// The framing of a session's full feature phase: its negotiated digests and our
    /// MaxRecvDataSegmentLength.
    pub fn for_session(s: &crate::SessionInfo) -> Self {
        FrameConfig {
            header_digest: s.params.header_digest,
            data_digest: s.params.data_digest,
            max_recv_data_segment_length: s.params.target_max_recv_data_segment_length,
        }
    }
}

impl Default for FrameConfig {
    fn default() -> Self {
        FrameConfig {
            header_digest: false,
            data_digest: false,
            max_recv_data_segment_length: 8192,
        }
    }
}

/// What the connection must do about a [`FrameError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Framing or integrity of the header is lost: drop the connection.
    Fatal,
    /// The PDU is discarded and answered with a Reject carrying its header.
    Reject { reason: u8, header: Bhs },
}

/// Errors found while framing or decoding one PDU.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("header digest mismatch (expected {expected:#010x}, got {got:#010x})")]
    HeaderDigest { expected: u32, got: u32 },
    #[error("data segment of {len} bytes exceeds MaxRecvDataSegmentLength {max}")]
    DataSegmentTooLong { len: u32, max: u32 },
    #[error("data digest mismatch")]
    DataDigest { header: Bhs },
    #[error("unknown opcode {opcode:#04x}")]
    UnknownOpcode { opcode: u8, header: Bhs },
    #[error("malformed additional header segment")]
    BadAhs { header: Bhs },
}

impl FrameError {
    /// Whether the error can be answered by a Reject or must close the connection.
    pub fn disposition(&self) -> Disposition {
        match self {
            FrameError::HeaderDigest { .. } | FrameError::DataSegmentTooLong { .. } => {
                Disposition::Fatal
            }
            FrameError::DataDigest { header } => Disposition::Reject {
                reason: reject_reason::DATA_DIGEST_ERROR,
                header: *header,
            },
            FrameError::UnknownOpcode { header, .. } => Disposition::Reject {
                reason: reject_reason::COMMAND_NOT_SUPPORTED,
                header: *header,
            },
            FrameError::BadAhs { header } => Disposition::Reject {
                reason: reject_reason::INVALID_PDU_FIELD,
                header: *header,
            },
        }
    }
}

/// Total length of the PDU at the start of `buf`, or `None` if more bytes are needed.
/// Checks the data segment limit and (when enough bytes are present) the header digest.
pub fn frame_len(buf: &[u8], cfg: &FrameConfig) -> Result<Option<usize>, FrameError> {
    let Some(h) = Bhs::read(buf) else {
        return Ok(None);
    };
    let dsl = h.data_segment_len();
    if dsl > cfg.max_recv_data_segment_length {
        return Err(FrameError::DataSegmentTooLong {
            len: dsl,
            max: cfg.max_recv_data_segment_length,
        });
    }
    let head = BHS_LEN + h.total_ahs_words() as usize * 4;
    if cfg.header_digest {
        if let Some(d) = buf.get(head..head + 4) {
            let got = digest::from_wire([d[0], d[1], d[2], d[3]]);
            let expected = digest::crc32c(buf.get(..head).unwrap_or_default());
            if got != expected {
                return Err(FrameError::HeaderDigest { expected, got });
            }
        }
    }
    let (_, total) = frame_layout(&h, cfg);
    Ok((buf.len() >= total).then_some(total))
}

/// Where the data segment of the PDU with header `h` starts (after BHS, AHS and header
/// digest) and the PDU's total length (padded data segment and data digest included).
/// Does not check the data segment limit: [`frame_len`] does.
pub fn frame_layout(h: &Bhs, cfg: &FrameConfig) -> (usize, usize) {
    let hd = if cfg.header_digest { 4 } else { 0 };
    let data_at = BHS_LEN + h.total_ahs_words() as usize * 4 + hd;
    let dsl = h.data_segment_len() as usize;
    let dd = if cfg.data_digest && dsl > 0 { 4 } else { 0 };
    (data_at, data_at + dsl + pad_len(dsl) + dd)
}

/// Decodes one complete frame (exactly the bytes [`frame_len`] reported).
pub fn decode_frame(frame: Bytes, cfg: &FrameConfig) -> Result<Pdu, FrameError> {
    let h = Bhs::read(&frame).ok_or(FrameError::DataSegmentTooLong { len: 0, max: 0 })?;
    let (data_at, _) = frame_layout(&h, cfg);
    let split = data_at.min(frame.len());
    decode_split(&frame[..split], frame.slice(split..), cfg)
}

/// Decodes one complete PDU received in two parts: `head` is everything in front of the
/// data segment (BHS, AHS, header digest) and `tail` the rest (data segment, padding, data
/// digest). This lets a large data segment be received into a buffer of its own, sized for
/// the data alone; the data handed on is a slice of `tail`, not a copy.
pub fn decode_split(head: &[u8], tail: Bytes, cfg: &FrameConfig) -> Result<Pdu, FrameError> {
    let h = Bhs::read(head).ok_or(FrameError::DataSegmentTooLong { len: 0, max: 0 })?;
    let ahs_end = BHS_LEN + h.total_ahs_words() as usize * 4;
    if cfg.header_digest {
        let d = head
            .get(ahs_end..ahs_end + 4)
            .ok_or(FrameError::HeaderDigest {
                expected: 0,
                got: 0,
            })?;
        let got = digest::from_wire([d[0], d[1], d[2], d[3]]);
        let expected = digest::crc32c(head.get(..ahs_end).unwrap_or_default());
        if got != expected {
            return Err(FrameError::HeaderDigest { expected, got });
        }
    }
    let (data_at, _) = frame_layout(&h, cfg);
    let dsl = h.data_segment_len() as usize;
    let padded = dsl + pad_len(dsl);
    if head.len() < data_at || tail.len() < padded {
        return Err(FrameError::DataSegmentTooLong {
            len: dsl as u32,
            max: cfg.max_recv_data_segment_length,
        });
    }
    if cfg.data_digest && dsl > 0 {
        let d = tail
            .get(padded..padded + 4)
            .ok_or(FrameError::DataDigest { header: h })?;
        let got = digest::from_wire([d[0], d[1], d[2], d[3]]);
        let expected = digest::crc32c(tail.get(..padded).unwrap_or_default());
        if got != expected {
            return Err(FrameError::DataDigest { header: h });
        }
    }
    let ahs = head.get(BHS_LEN..ahs_end).unwrap_or_default();
    let data = tail.slice(..dsl);
    Pdu::from_parts(&h, ahs, data).map_err(|e| match e {
        DecodeError::UnknownOpcode(opcode) => FrameError::UnknownOpcode { opcode, header: h },
        DecodeError::BadAhs => FrameError::BadAhs { header: h },
    })
}

/// Takes the next complete PDU off the front of `buf`. A frame with a recoverable error is
/// consumed too, so the caller can Reject it and continue; after a fatal error the buffer
/// state is unspecified.
pub fn next_pdu(buf: &mut BytesMut, cfg: &FrameConfig) -> Result<Option<Pdu>, FrameError> {
    let Some(len) = frame_len(buf, cfg)? else {
        return Ok(None);
    };
    let frame = buf.split_to(len).freeze();
    decode_frame(frame, cfg).map(Some)
}

/// Cheap entry point for fuzzing: frames and decodes `bytes` repeatedly under both digest
/// settings. Must never panic.
pub fn decode_pdu_for_fuzz(bytes: &[u8]) {
    for (hd, dd) in [(false, false), (true, true)] {
        let cfg = FrameConfig {
            header_digest: hd,
            data_digest: dd,
            max_recv_data_segment_length: 65536,
        };
        // The two-part decoding of a PDU received outside the input buffer, split at a
        // few points (the usual one is where the data segment starts: 48 or 52).
        for at in [0, BHS_LEN, BHS_LEN + 4, bytes.len() / 2, bytes.len()] {
            let at = at.min(bytes.len());
            let _ = decode_split(&bytes[..at], Bytes::copy_from_slice(&bytes[at..]), &cfg);
        }
        let mut buf = BytesMut::from(bytes);
        for _ in 0..64 {
            match next_pdu(&mut buf, &cfg) {
                Ok(Some(p)) => {
                    let _ = p.to_bytes(hd, dd);
                }
                Ok(None) => break,
                Err(e) => {
                    if e.disposition() == Disposition::Fatal {
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdu::{NopOut, Pdu};

    fn nop(data: &'static [u8]) -> Pdu {
        Pdu::NopOut(NopOut {
            immediate: true,
            lun: 0,
            itt: 7,
            ttt: 0xffff_ffff,
            cmd_sn: 1,
            exp_stat_sn: 2,
            data: Bytes::from_static(data),
        })
    }

    #[test]
    fn incomplete_then_complete() {
        let cfg = FrameConfig::default();
        let wire = nop(b"hello").to_bytes(false, false);
        assert_eq!(wire.len(), 48 + 8);
        for cut in 0..wire.len() {
            assert_eq!(frame_len(&wire[..cut], &cfg), Ok(None));
        }
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(next_pdu(&mut buf, &cfg), Ok(Some(nop(b"hello"))));
        assert!(buf.is_empty());
    }

    #[test]
    fn digests_roundtrip_and_detect() {
        let cfg = FrameConfig {
            header_digest: true,
            data_digest: true,
            ..FrameConfig::default()
        };
        let wire = nop(b"abc").to_bytes(true, true);
        assert_eq!(wire.len(), 48 + 4 + 4 + 4);
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(next_pdu(&mut buf, &cfg), Ok(Some(nop(b"abc"))));

        let mut bad = BytesMut::from(&wire[..]);
        bad[20] ^= 1;
        assert!(matches!(
            next_pdu(&mut bad, &cfg),
            Err(FrameError::HeaderDigest { .. })
        ));
        let mut bad = BytesMut::from(&wire[..]);
        bad[53] ^= 1;
        let e = next_pdu(&mut bad, &cfg).unwrap_err();
        assert!(matches!(
            e.disposition(),
            Disposition::Reject { reason: 2, .. }
        ));
        assert!(bad.is_empty(), "recoverable error consumes the frame");
    }

    #[test]
    fn oversize_is_fatal_before_data_arrives() {
        let cfg = FrameConfig::default();
        let mut h = Bhs::new(0, true);
        h.set_data_segment_len(8193);
        let e = frame_len(&h.0, &cfg).unwrap_err();
        assert_eq!(e.disposition(), Disposition::Fatal);
    }

    #[test]
    fn unknown_opcode_rejected() {
        let cfg = FrameConfig::default();
        let h = Bhs::new(0x1c, false);
        let mut buf = BytesMut::from(&h.0[..]);
        let e = next_pdu(&mut buf, &cfg).unwrap_err();
        assert!(matches!(
            e.disposition(),
            Disposition::Reject { reason: 5, .. }
        ));
    }

    #[test]
    fn ahs_on_wrong_opcode_rejected() {
        let cfg = FrameConfig::default();
        let mut h = Bhs::new(0, true);
        h.set_total_ahs_words(1);
        let mut v = h.0.to_vec();
        v.extend_from_slice(&[0, 0, 0, 0]);
        let mut buf = BytesMut::from(&v[..]);
        let e = next_pdu(&mut buf, &cfg).unwrap_err();
        assert!(matches!(
            e.disposition(),
            Disposition::Reject { reason: 9, .. }
        ));
    }
}
