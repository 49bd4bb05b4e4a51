//! How a connection reads its socket: in large chunks, or PDU by PDU through a stream of
//! large data PDUs.
//!
//! Ordinarily a read takes whatever the socket has, up to [`READ_CHUNK`], into the input
//! buffer: one syscall for many small PDUs. A SCSI Command or Data-Out with a large data
//! segment that is still arriving is finished in a pooled aligned buffer of its own
//! (`large_pdu.rs`), so O_DIRECT writes its data as received. But whatever a chunked read
//! already took of that data segment has to be copied over, and with a stream of 128 KiB
//! writes a 256 KiB read takes most of the next PDU: the copy was 14 % of the machine's
//! samples in a 128 KiB seqwrite profile (benches/README.md, "128 KiB writes read PDU by
//! PDU").
//!
//! So once a data segment of at least [`LOCKSTEP_MIN`] is being received, reads go in
//! lockstep: the rest of that segment and, in the same `readv`, at most the next PDU's
//! header. If that header announces another large data PDU, its data is read straight
//! into its own buffer in turn, and so on, one read per PDU and no copy. The first header
//! that is anything else ends the lockstep and chunked reads resume.
//!
//! While the rest of a large PDU is awaited, the socket's low-water mark is raised to it
//! (`wake_threshold.rs`), so the connection wakes once for it rather than per TCP segment.

use std::io::{self, IoSliceMut};

use bytes::BytesMut;
use iscsi::pdu::BHS_LEN;
use iscsi::SessionInfo;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::net::large_pdu::{plain_header_len, starts_lockstep_pdu, LargePdu, LOCKSTEP_MIN};
use crate::net::wake_threshold::WakeThreshold;

/// Most bytes one chunked read takes.
pub(crate) const READ_CHUNK: usize = 256 * 1024;

/// Whether the connection is reading PDU by PDU (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Lockstep(bool);

/// How a connection reads: lockstep or not, and the socket's low-water mark.
#[derive(Debug, Default)]
pub(crate) struct ReadState {
    pub(crate) lockstep: Lockstep,
    pub(crate) wake: WakeThreshold,
}

/// Reads what the socket has, shaped as the module docs say: the rest of a large PDU into
/// its own buffer (starting it from `buf` first if one is arriving), a header alone in
/// lockstep, or a chunk into `buf`. `Ok(0)` means the peer closed. Cancel safe.
pub(crate) async fn read_some(
    sock: &mut TcpStream,
    buf: &mut BytesMut,
    large: &mut Option<LargePdu>,
    state: &mut ReadState,
    session: Option<&SessionInfo>,
) -> io::Result<usize> {
    let n = read_shaped(sock, buf, large, state, session).await?;
    state.wake.read_returned();
    Ok(n)
}

async fn read_shaped(
    sock: &mut TcpStream,
    buf: &mut BytesMut,
    large: &mut Option<LargePdu>,
    state: &mut ReadState,
    session: Option<&SessionInfo>,
) -> io::Result<usize> {
    let ReadState { lockstep, wake } = state;
    let Some(s) = session else {
        wake.before_other(sock);
        return read_chunk(sock, buf).await;
    };
    if large.is_none() {
        *large = LargePdu::start(buf, s);
    }
    let header = plain_header_len(s);
    if let Some(pdu) = large {
        lockstep.0 = pdu.tail_len() >= LOCKSTEP_MIN;
        let after = if lockstep.0 { header } else { 0 };
        wake.before_rest(sock, pdu.rest_len());
        return pdu.read(sock, buf, after).await;
    }
    wake.before_other(sock);
    if lockstep.0 && buf.len() < header {
        let n = read_at_most(sock, buf, header - buf.len()).await?;
        if buf.len() >= BHS_LEN && !starts_lockstep_pdu(buf, s) {
            lockstep.0 = false;
        }
        return Ok(n);
    }
    lockstep.0 = false;
    read_chunk(sock, buf).await
}

async fn read_chunk(sock: &mut TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    buf.reserve(READ_CHUNK);
    sock.read_buf(buf).await
}

/// Reads at most `max` bytes, appended to `buf`.
async fn read_at_most(sock: &TcpStream, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
    let (_, n) = read_appending(sock, &mut [], buf, max).await?;
    Ok(n)
}

/// One read (`readv`) into `first` and, once that is full, at most `max` more bytes
/// appended to `buf`; returns how many went to each. Cancel safe: `buf` only changes
/// between awaits, so a cancelled read leaves it as it was. `(0, 0)` means the peer closed.
pub(crate) async fn read_appending(
    sock: &TcpStream,
    first: &mut [u8],
    buf: &mut BytesMut,
    max: usize,
) -> io::Result<(usize, usize)> {
    loop {
        sock.readable().await?;
        let old = buf.len();
        buf.resize(old + max, 0);
        let read = match buf.get_mut(old..) {
            Some(spare) => {
                sock.try_read_vectored(&mut [IoSliceMut::new(first), IoSliceMut::new(spare)])
            }
            None => Ok(0),
        };
        match read {
            Ok(n) => {
                let into_first = n.min(first.len());
                buf.truncate(old + (n - into_first));
                return Ok((into_first, n - into_first));
            }
            Err(e) => {
                buf.truncate(old);
                if e.kind() != io::ErrorKind::WouldBlock {
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
