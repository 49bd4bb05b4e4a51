//! One wake-up per large PDU: the socket's receive low-water mark (`SO_RCVLOWAT`) while the
//! rest of a large data segment is on its way.
//!
//! Without it the kernel reports the socket readable as soon as any byte is queued, so a
//! 128 KiB Data-Out arriving as several TCP segments woke the connection and was read in
//! about four `readv`s (`perf stat` of a 128 KiB seqwrite at QD32: 4.2 `readv` and 1.9
//! `epoll_wait` per PDU). With the low-water mark set to what the PDU still needs, one
//! wake-up finds the whole rest queued and one `readv` takes it (1.1 per PDU); on a tmpfs
//! LUN, where the disk's own spread does not hide it, the median MB/s rose by a fifth
//! (benches/README.md, "One wake-up per large PDU").
//!
//! Never more than the PDU still needs: an initiator that sent one write and now waits for
//! its status sends nothing more, so a higher mark would wait for ever. Any other read goes
//! back to the default of one byte first. A closed or failed socket is reported readable
//! whatever the mark.
//!
//! The mark is also capped at a quarter of the socket's receive buffer: asked for more than
//! the buffer holds, the kernel grows the buffer and clamps the advertised window to the
//! mark, which would throttle a long fat link until autotuning catches up.
//!
//! tokio learns readiness from edge-triggered epoll, so the readiness it already saw (a
//! partial PDU) is cleared when the mark is raised; setting the mark makes the kernel check
//! the queue against it at once and post a new edge if enough is already there, so the
//! clear cannot lose a wake-up. The mark is set before the clear and the clear is skipped
//! if setting failed, so a socket that refuses the option is read as before.
//!
//! None of this is needed when the whole rest is queued already, as it is when the
//! initiator runs ahead of the gateway: then the mark is left alone and the read takes the
//! rest at once (one `FIONREAD` instead of a `setsockopt` and a trip through `epoll_wait`).

use std::io;
use std::os::fd::AsRawFd;

use tokio::net::TcpStream;

/// Rests smaller than this are read as they come: a second wake-up costs little there.
pub(crate) const WAKE_MIN: usize = 16 * 1024;

/// How often (in raised marks) the receive buffer size is looked up again while it caps
/// the mark: autotuning grows it as the stream goes on.
const RCVBUF_REFRESH: u32 = 32;

/// The mark a rest of `rest` bytes gets with a receive buffer of `rcvbuf` bytes (see the
/// module docs), or 1 (the default) if the rest is not worth waiting for whole.
pub(crate) fn mark_for(rest: usize, rcvbuf: usize) -> usize {
    let mark = rest.min(rcvbuf / 4);
    if mark >= WAKE_MIN {
        mark
    } else {
        1
    }
}

/// A connection's low-water mark, as last set.
#[derive(Debug)]
pub(crate) struct WakeThreshold {
    /// The mark in the kernel now (1 is the default).
    current: usize,
    /// The rest the mark was raised for, while no read has returned since: waiting again
    /// for the same rest (the read was cancelled by another event) needs no new mark.
    armed_for: Option<usize>,
    /// The socket's receive buffer, as last looked up (0: not yet).
    rcvbuf: usize,
    /// Raised marks until the receive buffer is looked up again.
    refresh_in: u32,
}

impl Default for WakeThreshold {
    fn default() -> Self {
        WakeThreshold {
            current: 1,
            armed_for: None,
            rcvbuf: 0,
            refresh_in: 0,
        }
    }
}

impl WakeThreshold {
    /// Before a read for the rest of a large PDU (`rest` bytes still to come): raises the
    /// mark so that the next wake-up comes once they are queued.
    pub(crate) fn before_rest(&mut self, sock: &TcpStream, rest: usize) {
        if self.armed_for == Some(rest) {
            return;
        }
        if already_queued(sock, rest) {
            return;
        }
        let capped = self.rcvbuf / 4 < rest;
        if self.rcvbuf == 0 || (capped && self.refresh_in == 0) {
            self.rcvbuf = receive_buffer(sock).unwrap_or(0);
            self.refresh_in = RCVBUF_REFRESH;
        } else if capped {
            self.refresh_in -= 1;
        }
        let mark = mark_for(rest, self.rcvbuf);
        if mark == 1 {
            self.before_other(sock);
            return;
        }
        if set_mark(sock, mark).is_err() {
            self.current = 0; // unknown: set again before any other read
            return;
        }
        self.current = mark;
        // The readiness seen so far was for fewer bytes; the next comes from the mark.
        let _ = sock.try_io(tokio::io::Interest::READABLE, || {
            Err::<(), _>(io::ErrorKind::WouldBlock.into())
        });
        self.armed_for = Some(rest);
    }

    /// Before any other read: back to the default mark.
    pub(crate) fn before_other(&mut self, sock: &TcpStream) {
        self.armed_for = None;
        if self.current != 1 && set_mark(sock, 1).is_ok() {
            self.current = 1;
        }
    }

    /// After a read returned: the next one sets its own mark.
    pub(crate) fn read_returned(&mut self) {
        self.armed_for = None;
    }

    /// The mark in the kernel now, as far as this knows (1 is the default).
    #[cfg(test)]
    pub(crate) fn current(&self) -> usize {
        self.current
    }
}

/// Whether the whole rest is queued in the socket and tokio already knows the socket
/// readable, so that the read takes it at once. Then the mark is left as it is: raising it
/// clears the readiness, and the read would wait for the edge that setting the mark posts,
/// a trip through `epoll_wait` for bytes that are already here. With a stream of large
/// writes that is the usual case: the initiator runs ahead, and the socket holds the next
/// PDUs while one is handled. Both conditions are needed: readiness alone may be left from
/// fewer bytes, and queued bytes below a mark raised earlier post no edge, so a read that
/// waited for one would wait for ever.
fn already_queued(sock: &TcpStream, rest: usize) -> bool {
    let readable = sock
        .try_io(tokio::io::Interest::READABLE, || Ok(()))
        .is_ok();
    readable && queued_bytes(sock).is_ok_and(|q| q >= rest)
}

/// Bytes in the socket's receive queue (`FIONREAD`, `SIOCINQ` for TCP).
pub(crate) fn queued_bytes(sock: &TcpStream) -> io::Result<usize> {
    let mut value: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which points at `value`.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::FIONREAD, &mut value) };
    if rc == 0 {
        Ok(usize::try_from(value).unwrap_or(0))
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_mark(sock: &TcpStream, mark: usize) -> io::Result<()> {
    set_socket_int(sock, libc::SO_RCVLOWAT, mark)
}

/// Sets the `SOL_SOCKET` option `name` to `value` (clamped to a C int).
pub(crate) fn set_socket_int(sock: &TcpStream, name: libc::c_int, value: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(value).unwrap_or(libc::c_int::MAX);
    // SAFETY: `value` is a live c_int and the length passed is its size; the fd is the
    // socket's, open while `sock` is borrowed.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn receive_buffer(sock: &TcpStream) -> io::Result<usize> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live and `len` is `value`'s size; the fd is the
    // socket's, open while `sock` is borrowed.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(usize::try_from(value).unwrap_or(0))
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_is_the_rest_within_a_quarter_of_the_buffer() {
        assert_eq!(mark_for(128 << 10, 4 << 20), 128 << 10);
        assert_eq!(mark_for(128 << 10, 256 << 10), 64 << 10);
        assert_eq!(mark_for(1 << 20, 1 << 20), 256 << 10);
    }

    #[test]
    fn small_rests_and_small_buffers_keep_the_default() {
        assert_eq!(mark_for(WAKE_MIN - 1, 4 << 20), 1);
        assert_eq!(mark_for(WAKE_MIN, 4 << 20), WAKE_MIN);
        assert_eq!(mark_for(128 << 10, 4 * WAKE_MIN - 4), 1);
        assert_eq!(mark_for(128 << 10, 0), 1);
    }
}
