//! Receiving a large data PDU straight into a pooled aligned buffer.
//!
//! A SCSI Command or Data-Out whose data segment is large (at least [`MIN_SEGMENT`]) and
//! has not fully arrived is taken out of the connection's input buffer in two parts: its
//! header (BHS, AHS, header digest: a few dozen bytes, copied) and its tail (data segment,
//! padding, data digest), which goes into an [`AlignedBuf`] from the pool sized for the
//! tail alone, so the data segment starts the buffer, 4096-aligned. The rest of the tail is
//! read from the socket directly there. The two parts go to
//! `iscsi::Connection::handle_split_frame`; the data is then what O_DIRECT writes, without a
//! copy when it is a whole write, and the buffer returns to the pool when the last
//! reference to the data is dropped.
//!
//! Why two parts: the pool's blocks are powers of two. A 128 KiB data segment with its
//! header in front of it (and the header's alignment slack) needed a 256 KiB block, twice
//! the data; alone it fits a 128 KiB block. Why a buffer at all: the PDU used to get a
//! fresh `BytesMut` (malloc) each time, and the input buffer was reallocated after it; with
//! 128 KiB writes that churn of large blocks is what made glibc's arenas retain tens of MiB
//! (see `bufpool`).
//!
//! The buffer is taken with `AlignedBuf::for_overwrite`, so it may hold an earlier
//! command's bytes: [`LargePdu::into_parts`] is called only once every byte of the tail was
//! received (`filled` covers the whole tail buffer).
//!
//! The header must be whole in the input buffer for this path to start; when it is not, the
//! connection reads on into the input buffer and the PDU takes the ordinary path (or this
//! one, with more of its tail copied over, once the header is complete).
//!
//! Data budget: while a PDU is being received its parts ([`LargePdu::buffered_bytes`])
//! count in the connection's `assembling` reservation (`connection.rs`); once handed to the
//! protocol they are no longer counted here but as the protocol's buffered write data or a
//! delivered command's reservation.

use std::io;

use bufpool::AlignedBuf;
use bytes::{Bytes, BytesMut};
use iscsi::pdu::{frame_layout, Bhs, FrameConfig, BHS_LEN};
use iscsi::SessionInfo;
use tokio::net::TcpStream;

use crate::net::read::read_appending;

/// Smaller data segments are not worth a buffer of their own.
const MIN_SEGMENT: usize = 4096;

/// Data segments at least this large are worth a read of their own: a stream of them is
/// read in lockstep (`net/read.rs`), each read ending at the next PDU's header, so no data
/// segment lands in the input buffer and has to be copied out of it. Smaller ones are
/// cheaper to copy than to read one by one.
pub(crate) const LOCKSTEP_MIN: usize = 64 * 1024;

/// Length of a header without AHS in this session: BHS and header digest.
pub(crate) fn plain_header_len(s: &SessionInfo) -> usize {
    BHS_LEN + if s.params.header_digest { 4 } else { 0 }
}

/// Whether `buf` starts with the whole BHS of a SCSI Command or Data-Out whose data
/// segment is at least [`LOCKSTEP_MIN`] (and within the negotiated limit).
pub(crate) fn starts_lockstep_pdu(buf: &[u8], s: &SessionInfo) -> bool {
    Bhs::read(buf).is_some_and(|h| aligned_segment_at_least(&h, s, LOCKSTEP_MIN))
}

/// Whether `h` is a SCSI Command or Data-Out (the PDUs that carry write data) whose data
/// segment is at least `min` and within our MaxRecvDataSegmentLength.
fn aligned_segment_at_least(h: &Bhs, s: &SessionInfo, min: usize) -> bool {
    let opcode = h.opcode();
    let dsl = h.data_segment_len() as usize;
    (opcode == iscsi::pdu::opcode::SCSI_COMMAND || opcode == iscsi::pdu::opcode::DATA_OUT)
        && (min..=s.params.target_max_recv_data_segment_length as usize).contains(&dsl)
}

/// One large PDU being received.
pub(crate) struct LargePdu {
    /// BHS, AHS and header digest, whole.
    head: Vec<u8>,
    /// Data segment, padding and data digest: exactly the tail's length.
    tail: AlignedBuf,
    /// Bytes of the tail received so far.
    filled: usize,
}

impl LargePdu {
    /// Starts receiving the PDU at the front of `buf` on the aligned path, if it is a SCSI
    /// Command or Data-Out with a large data segment within the negotiated limit, its
    /// header is whole and its tail is not. Takes the PDU's bytes out of `buf` (which holds
    /// nothing after them: the connection reads only this PDU's rest until it is complete).
    pub(crate) fn start(buf: &mut BytesMut, s: &SessionInfo) -> Option<LargePdu> {
        let h = Bhs::read(buf)?;
        if !aligned_segment_at_least(&h, s, MIN_SEGMENT) {
            return None;
        }
        let (data_at, total) = frame_layout(&h, &FrameConfig::for_session(s));
        let have = buf.len();
        // Header not whole yet (read on), or nothing left to receive.
        if have < data_at || have >= total {
            return None;
        }
        // Not zeroed: only received bytes are ever exposed (see the module docs).
        let mut tail = AlignedBuf::for_overwrite(total - data_at);
        let got = buf.get(data_at..)?;
        tail.as_mut_slice()
            .get_mut(..got.len())?
            .copy_from_slice(got);
        let pdu = LargePdu {
            head: buf.get(..data_at)?.to_vec(),
            tail,
            filled: got.len(),
        };
        buf.clear();
        Some(pdu)
    }

    /// Reads more of the tail from `sock` (never past its end) and, in the same read once
    /// the tail is whole, up to `after` bytes that follow it, appended to `buf` (in lockstep
    /// the next PDU's header, so that its data can be read straight into a buffer of its own
    /// too; 0: nothing past the tail). Cancel safe: `buf` is only changed between awaits,
    /// and bytes are counted once the read returned them. `Ok(0)` means the peer closed.
    pub(crate) async fn read(
        &mut self,
        sock: &TcpStream,
        buf: &mut BytesMut,
        after: usize,
    ) -> io::Result<usize> {
        let Some(rest) = self.tail.as_mut_slice().get_mut(self.filled..) else {
            return Ok(0);
        };
        let (into_rest, into_buf) = read_appending(sock, rest, buf, after).await?;
        self.filled += into_rest;
        Ok(into_rest + into_buf)
    }

    /// Bytes of the tail still to be received.
    pub(crate) fn rest_len(&self) -> usize {
        self.tail.len().saturating_sub(self.filled)
    }

    /// Length of the tail (data segment, padding, data digest).
    pub(crate) fn tail_len(&self) -> usize {
        self.tail.len()
    }

    /// Memory this PDU holds while it is received: its header and its tail buffer.
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    /// True once the whole tail is in its buffer.
    pub(crate) fn is_complete(&self) -> bool {
        self.filled >= self.tail.len()
    }

    /// The received PDU: its header and its tail, for `Connection::handle_split_frame`.
    /// Only call once [`LargePdu::is_complete`].
    pub(crate) fn into_parts(self) -> (Vec<u8>, Bytes) {
        let filled = self.filled.min(self.tail.len());
        (self.head, Bytes::from_owner(self.tail).slice(..filled))
    }
}

#[cfg(test)]
pub(crate) mod tests;
