//! Receiving a large data PDU straight into a pooled aligned buffer.
//!
//! A SCSI Command or Data-Out whose data segment is large (at least [`MIN_SEGMENT`]) and
//! has not fully arrived is moved out of the connection's input buffer into an
//! [`AlignedBuf`] from the pool, placed so that its data segment starts 4096-aligned, and
//! the rest of it is read from the socket directly there. The finished frame goes to
//! `iscsi::Connection::handle_frame`; its data is then what O_DIRECT writes, without a
//! copy when it is a whole write, and the buffer returns to the pool when the last
//! reference to the data is dropped.
//!
//! Why: the PDU used to get a fresh `BytesMut` (malloc) each time, and the input buffer
//! was reallocated after it; with 128 KiB writes that churn of large blocks is what made
//! glibc's arenas retain tens of MiB (see `bufpool`).
//!
//! The buffer is taken with `AlignedBuf::for_overwrite`, so it may hold an earlier
//! command's bytes: [`LargePdu::into_frame`] exposes only the PDU's own `total` bytes, and
//! is called only once all of them were received (`filled == total`); the alignment slack
//! in front is never part of the frame.
//!
//! Data budget: while a PDU is being received its buffer ([`LargePdu::buffered_bytes`])
//! counts in the connection's `assembling` reservation (`connection.rs`); once it is handed
//! to the protocol it is no longer counted here but as the protocol's buffered write data
//! or a delivered command's reservation.

use bufpool::AlignedBuf;
use bytes::{Bytes, BytesMut};
use iscsi::pdu::{frame_layout, Bhs, FrameConfig, BHS_LEN};
use iscsi::SessionInfo;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Alignment of received data segments (what O_DIRECT needs for any block size).
const DATA_ALIGN: usize = bufpool::BUF_ALIGN;
/// Smaller data segments are not worth a buffer of their own.
const MIN_SEGMENT: usize = 4096;

/// One large PDU being received.
pub(crate) struct LargePdu {
    buf: AlignedBuf,
    /// Where the PDU starts in `buf` (so that its data segment is aligned).
    skip: usize,
    /// PDU length: header, AHS, digests, padded data segment.
    total: usize,
    /// Bytes of the PDU received so far.
    filled: usize,
}

impl LargePdu {
    /// When `buf` (which starts at a PDU boundary) holds the start of a SCSI Command or
    /// Data-Out with a data segment of at least [`MIN_SEGMENT`] that has not fully
    /// arrived, moves those bytes into a pooled buffer (leaving `buf` empty) and returns
    /// the PDU to finish.
    pub(crate) fn start(buf: &mut BytesMut, s: &SessionInfo) -> Option<LargePdu> {
        let mut h = Bhs::default();
        h.0.copy_from_slice(buf.get(..BHS_LEN)?);
        let opcode = h.opcode();
        if opcode != iscsi::pdu::opcode::SCSI_COMMAND && opcode != iscsi::pdu::opcode::DATA_OUT {
            return None;
        }
        let cfg = FrameConfig::for_session(s);
        let dsl = h.data_segment_len() as usize;
        // Over the limit: left to the framing code, which refuses it.
        if dsl < MIN_SEGMENT || dsl > cfg.max_recv_data_segment_length as usize {
            return None;
        }
        let (data_at, total) = frame_layout(&h, &cfg);
        let have = buf.len();
        if have >= total {
            return None;
        }
        let skip = data_at.wrapping_neg() % DATA_ALIGN;
        let mut pdu = LargePdu {
            // Not zeroed: only the received bytes are ever exposed (see the module docs).
            buf: AlignedBuf::for_overwrite(skip + total),
            skip,
            total,
            filled: have,
        };
        pdu.buf
            .as_mut_slice()
            .get_mut(skip..skip + have)?
            .copy_from_slice(buf);
        buf.clear();
        Some(pdu)
    }

    /// Reads more of the PDU from `sock` (never past its end). Cancel safe: bytes are
    /// counted only once the read returned them. `Ok(0)` means the peer closed.
    pub(crate) async fn read(&mut self, sock: &mut TcpStream) -> std::io::Result<usize> {
        let (from, to) = (self.skip + self.filled, self.skip + self.total);
        let Some(rest) = self.buf.as_mut_slice().get_mut(from..to) else {
            return Ok(0);
        };
        let n = sock.read(rest).await?;
        self.filled += n;
        Ok(n)
    }

    /// Bytes of the buffer this PDU holds (alignment slack included), for the data budget.
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.skip + self.total
    }

    /// True once the whole PDU is in the buffer.
    pub(crate) fn is_complete(&self) -> bool {
        self.filled >= self.total
    }

    /// The received PDU; only meaningful once [`LargePdu::is_complete`].
    pub(crate) fn into_frame(self) -> Bytes {
        let (skip, filled) = (self.skip, self.filled.min(self.total));
        Bytes::from_owner(self.buf).slice(skip..skip + filled)
    }

    /// Address of the data segment (for tests: it must be aligned).
    #[cfg(test)]
    fn data_ptr(&self, data_at: usize) -> usize {
        self.buf.as_slice().as_ptr() as usize + self.skip + data_at
    }
}

#[cfg(test)]
mod tests;
