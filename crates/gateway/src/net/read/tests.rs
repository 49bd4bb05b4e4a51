//! `read_some`: a stream of large data PDUs is read PDU by PDU, each data segment straight
//! into its own buffer (nothing of it passes through the input buffer), and anything else
//! ends the lockstep.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::net::large_pdu::tests::session as session_with;
use bytes::Bytes;
use iscsi::pdu::{Pdu, ScsiDataOut};
use tokio::io::AsyncWriteExt;

fn data_out(len: usize, seq: u8) -> Bytes {
    Pdu::DataOut(ScsiDataOut {
        final_: true,
        lun: 0,
        itt: u32::from(seq),
        ttt: 7,
        exp_stat_sn: 0,
        data_sn: 0,
        buffer_offset: 0,
        data: Bytes::from(vec![seq; len]),
    })
    .to_bytes(false, false)
}

async fn pair() -> (TcpStream, TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tx = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (rx, _) = listener.accept().await.unwrap();
    (tx, rx)
}

/// Does with what was read what the connection loop does: a finished large PDU first,
/// then every whole PDU in the input buffer; keeps the bytes in order and counts the data
/// bytes that came through the input buffer (the copying path).
struct Receiver {
    buf: BytesMut,
    large: Option<LargePdu>,
    state: ReadState,
    got: Vec<u8>,
    through_buf: usize,
    reads: usize,
}

impl Receiver {
    fn new() -> Self {
        Receiver {
            buf: BytesMut::new(),
            large: None,
            state: ReadState::default(),
            got: Vec::new(),
            through_buf: 0,
            reads: 0,
        }
    }

    async fn receive(&mut self, rx: &mut TcpStream, s: &SessionInfo, total: usize) {
        while self.got.len() < total {
            assert!(self.reads < 10_000, "bounded");
            let n = read_some(rx, &mut self.buf, &mut self.large, &mut self.state, Some(s))
                .await
                .unwrap();
            assert!(n > 0, "peer closed early");
            self.reads += 1;
            if let Some(pdu) = self.large.take_if(|p| p.is_complete()) {
                let (head, tail) = pdu.into_parts();
                self.got.extend_from_slice(&head);
                self.got.extend_from_slice(&tail);
            }
            while let Some(h) = iscsi::pdu::Bhs::read(&self.buf) {
                let len = BHS_LEN + h.data_segment_len() as usize;
                if self.buf.len() < len {
                    break;
                }
                let frame = self.buf.split_to(len);
                self.through_buf += len - BHS_LEN;
                self.got.extend_from_slice(&frame);
            }
        }
    }
}

/// Sends `wire` (all of it written as soon as the socket takes it, from another task) and
/// receives it as the connection would; returns the receiver's state and the bytes sent.
async fn send_and_receive(wire: Vec<u8>) -> (Receiver, Vec<u8>) {
    let (mut tx, mut rx) = pair().await;
    let total = wire.len();
    let writer = tokio::spawn(async move {
        tx.write_all(&wire).await.unwrap();
        (tx, wire)
    });
    let mut r = Receiver::new();
    r.receive(&mut rx, &session_with(false), total).await;
    let (_tx, wire) = writer.await.unwrap();
    (r, wire)
}

#[tokio::test]
async fn a_stream_of_large_writes_is_read_pdu_by_pdu_without_copies() {
    // Sent as fast as the socket takes it, so chunked reads would take several PDUs at once.
    let wire: Vec<u8> = (1..=8u8).flat_map(|i| data_out(128 << 10, i)).collect();
    let (r, wire) = send_and_receive(wire).await;
    assert_eq!(r.got, wire, "every byte, in order");
    // Only the first read is a chunked one (a header is needed before a size is known):
    // at most the first PDU went through the input buffer whole.
    assert!(
        r.through_buf <= 128 << 10,
        "{} data bytes went through the input buffer",
        r.through_buf
    );
    assert!(
        r.state.lockstep.0,
        "still in lockstep after large PDUs only"
    );
}

#[tokio::test]
async fn anything_but_a_large_data_pdu_ends_the_lockstep() {
    let big = data_out(128 << 10, 1);
    // PDUs without data: each header alone is a whole PDU, the case where reading header
    // by header would go on.
    let small: Vec<u8> = (0..200u8).flat_map(|i| data_out(0, i)).collect();
    let wire: Vec<u8> = [&big[..], &big[..], &small[..]].concat();
    let (r, wire) = send_and_receive(wire).await;
    assert_eq!(r.got, wire);
    assert!(!r.state.lockstep.0, "small PDUs end it");
    assert!(
        r.reads < 60,
        "the 200 small PDUs were read in chunks, not header by header: {} reads",
        r.reads
    );
}

#[tokio::test]
async fn before_login_reads_are_chunked() {
    let (mut tx, mut rx) = pair().await;
    tx.write_all(&[7u8; 1000]).await.unwrap();
    let mut buf = BytesMut::new();
    let mut large = None;
    let mut state = ReadState::default();
    let mut n = 0;
    while n < 1000 {
        n += read_some(&mut rx, &mut buf, &mut large, &mut state, None)
            .await
            .unwrap();
    }
    assert_eq!(&buf[..], &[7u8; 1000][..]);
    assert!(large.is_none());
}

/// A small deterministic generator (xorshift), so a failing case can be replayed by seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Mixed streams (no data, small, just below and above the lockstep size, the largest
/// segment) sent in pieces of random size: whatever the cuts, every byte arrives once and
/// in order, into the right PDU.
#[tokio::test]
async fn mixed_streams_cut_anywhere_arrive_intact() {
    const SIZES: [usize; 7] = [
        0,
        512,
        4096,
        LOCKSTEP_MIN - 4,
        LOCKSTEP_MIN,
        128 << 10,
        256 << 10,
    ];
    let s = session_with(false);
    for seed in 1..=24u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let wire: Vec<u8> = (0..12)
            .flat_map(|i| data_out(SIZES[rng.below(SIZES.len())], i as u8 + 1))
            .collect();
        let total = wire.len();
        let cuts: Vec<usize> = (0..64).map(|_| 1 + rng.below(300 << 10)).collect();
        let (mut tx, mut rx) = pair().await;
        let writer = tokio::spawn(async move {
            let mut at = 0;
            for cut in cuts.iter().cycle() {
                if at >= wire.len() {
                    break;
                }
                let end = (at + cut).min(wire.len());
                tx.write_all(&wire[at..end]).await.unwrap();
                tokio::task::yield_now().await;
                at = end;
            }
            (tx, wire)
        });
        let mut r = Receiver::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(60),
            r.receive(&mut rx, &s, total),
        )
        .await
        .unwrap_or_else(|_| panic!("seed {seed}: the reader stopped waking"));
        let (_tx, wire) = writer.await.unwrap();
        assert!(r.got == wire, "seed {seed}: bytes differ");
        assert!(
            r.buf.is_empty() && r.large.is_none(),
            "seed {seed}: leftovers"
        );
    }
}

/// Gives `sock` a fixed receive buffer of about `bytes` (so the low-water mark is not
/// capped by a buffer autotuning has not grown yet).
fn set_receive_buffer(sock: &TcpStream, bytes: usize) {
    crate::net::wake_threshold::set_socket_int(sock, libc::SO_RCVBUF, bytes).unwrap();
}

/// Writes `wire` in `piece`-byte writes with a pause after each, as a slow link delivers.
fn trickle(
    mut tx: TcpStream,
    wire: Vec<u8>,
    piece: usize,
) -> tokio::task::JoinHandle<(TcpStream, Vec<u8>)> {
    tokio::spawn(async move {
        for part in wire.chunks(piece) {
            tx.write_all(part).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        (tx, wire)
    })
}

#[tokio::test]
async fn a_large_pdu_arriving_in_pieces_wakes_the_reader_once() {
    let (tx, mut rx) = pair().await;
    set_receive_buffer(&rx, 2 << 20);
    let wire: Vec<u8> = (1..=4u8).flat_map(|i| data_out(128 << 10, i)).collect();
    let total = wire.len();
    // 8 pieces per PDU: read as they come, that is at least 8 reads per PDU.
    let writer = trickle(tx, wire, 16 << 10);
    let mut r = Receiver::new();
    r.receive(&mut rx, &session_with(false), total).await;
    let (_tx, wire) = writer.await.unwrap();
    assert!(r.got == wire, "every byte, in order");
    assert!(
        r.reads <= 12,
        "the rest of each PDU was read in one wake-up: {} reads for 4 PDUs",
        r.reads
    );
    assert!(
        r.state.wake.current() > 1,
        "the mark is up between large PDUs"
    );
}

#[tokio::test]
async fn a_large_pdu_then_silence_is_still_received() {
    // An initiator with one write outstanding sends its PDU and waits for the status: the
    // mark must never ask for more than the PDU still needs.
    for piece in [usize::MAX, 40 << 10, 1000] {
        let (tx, mut rx) = pair().await;
        set_receive_buffer(&rx, 2 << 20);
        let wire = data_out(256 << 10, 9).to_vec();
        let total = wire.len();
        let writer = trickle(tx, wire, piece.min(total));
        let mut r = Receiver::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            r.receive(&mut rx, &session_with(false), total),
        )
        .await
        .unwrap_or_else(|_| {
            panic!("pieces of {piece}: the PDU's last bytes never woke the reader")
        });
        let (tx, wire) = writer.await.unwrap();
        assert!(r.got == wire);
        drop(tx);
    }
}

#[tokio::test]
async fn other_reads_put_the_default_mark_back() {
    let (tx, mut rx) = pair().await;
    set_receive_buffer(&rx, 2 << 20);
    let big: Vec<u8> = (1..=2u8).flat_map(|i| data_out(128 << 10, i)).collect();
    let small: Vec<u8> = (0..3u8).flat_map(|i| data_out(0, i)).collect();
    let (big_len, small_len) = (big.len(), small.len());
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        let (mut tx, _) = trickle(tx, big, 16 << 10).await.unwrap();
        // Header-only PDUs one at a time, as NOP-Outs come: each alone must wake the
        // reader, whatever mark the large PDUs left.
        go_rx.await.unwrap();
        for pdu in small.chunks(BHS_LEN) {
            tx.write_all(pdu).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        tx
    });
    let s = session_with(false);
    let mut r = Receiver::new();
    r.receive(&mut rx, &s, big_len).await;
    assert!(r.state.wake.current() > 1, "the large PDUs raised the mark");
    go_tx.send(()).unwrap();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        r.receive(&mut rx, &s, big_len + small_len),
    )
    .await
    .expect("header-only PDUs after large ones wake the reader");
    let _tx = writer.await.unwrap();
    assert_eq!(r.state.wake.current(), 1, "back to the default");
}

/// The initiator ran ahead: the PDUs are all queued before the first read. Each rest is
/// then read at once, without raising the mark (which would send the read through
/// `epoll_wait` for bytes already there).
#[tokio::test]
async fn large_pdus_already_queued_are_read_without_raising_the_mark() {
    let (mut tx, mut rx) = pair().await;
    set_receive_buffer(&rx, 4 << 20);
    let wire: Vec<u8> = (1..=4u8).flat_map(|i| data_out(128 << 10, i)).collect();
    tx.write_all(&wire).await.unwrap();
    for _ in 0..2000 {
        if crate::net::wake_threshold::queued_bytes(&rx).unwrap() >= wire.len() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let mut r = Receiver::new();
    r.receive(&mut rx, &session_with(false), wire.len()).await;
    assert!(r.got == wire, "every byte, in order");
    assert_eq!(r.state.wake.current(), 1, "the mark was raised");
    assert!(r.reads <= 5, "{} reads for 4 PDUs", r.reads);
}
