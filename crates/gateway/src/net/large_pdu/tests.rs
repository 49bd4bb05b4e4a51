//! `LargePdu`: which PDUs take the aligned path, and that the parts handed on are exactly
//! the bytes sent, with the data segment at the aligned start of a buffer sized for the
//! tail alone, even when that buffer is a recycled dirty one.
#![allow(clippy::unwrap_used)]

use super::*;
use iscsi::pdu::{Pdu, ScsiDataOut};
use iscsi::{Limits, SessionParams, SessionType};
use tokio::io::AsyncWriteExt;

const DATA_ALIGN: usize = bufpool::BUF_ALIGN;

/// A logged-in session's parameters, with or without digests (also used by `read.rs`'s
/// tests).
pub(crate) fn session(digests: bool) -> SessionInfo {
    let mut params = SessionParams::defaults(&Limits::default());
    params.header_digest = digests;
    params.data_digest = digests;
    SessionInfo {
        initiator_name: "iqn.2024-01.org.example:i".into(),
        initiator_alias: None,
        isid: [0; 6],
        tsih: 1,
        cid: 0,
        target_name: None,
        session_type: SessionType::Normal,
        params,
    }
}

fn data_out(len: usize, digests: bool) -> Bytes {
    Pdu::DataOut(ScsiDataOut {
        final_: true,
        lun: 0,
        itt: 1,
        ttt: 7,
        exp_stat_sn: 0,
        data_sn: 0,
        buffer_offset: 0,
        data: Bytes::from((0..len).map(|i| (i % 241) as u8 + 1).collect::<Vec<_>>()),
    })
    .to_bytes(digests, digests)
}

#[test]
fn only_incomplete_large_data_pdus_take_the_aligned_path() {
    let s = session(false);
    let small = data_out(MIN_SEGMENT - 4, false);
    let mut buf = BytesMut::from(&small[..100]);
    assert!(LargePdu::start(&mut buf, &s).is_none());
    let whole = data_out(MIN_SEGMENT, false);
    let mut buf = BytesMut::from(&whole[..]);
    assert!(LargePdu::start(&mut buf, &s).is_none(), "already complete");
    let mut buf = BytesMut::from(&whole[..20]);
    assert!(LargePdu::start(&mut buf, &s).is_none(), "header incomplete");
    let mut buf = BytesMut::from(&whole[..60]);
    assert!(LargePdu::start(&mut buf, &s).is_some());
    assert!(buf.is_empty(), "the bytes moved to the PDU's buffer");
    // With a header digest the header is 52 bytes: 50 are not enough to start.
    let s = session(true);
    let whole = data_out(MIN_SEGMENT, true);
    let mut buf = BytesMut::from(&whole[..50]);
    assert!(
        LargePdu::start(&mut buf, &s).is_none(),
        "header digest missing"
    );
    assert_eq!(buf.len(), 50, "left in place");
    let mut buf = BytesMut::from(&whole[..52]);
    assert!(LargePdu::start(&mut buf, &s).is_some());
}

#[tokio::test]
async fn received_frame_is_exact_and_aligned_in_a_recycled_buffer() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut tx = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (rx, _) = listener.accept().await.unwrap();
    for digests in [false, true] {
        let s = session(digests);
        let wire = data_out(128 << 10, digests);
        let data_at = iscsi::pdu::BHS_LEN + if digests { 4 } else { 0 };
        // A dirty buffer of the class the tail needs waits in this thread's free list.
        let mut dirty = AlignedBuf::for_overwrite(wire.len() - data_at);
        dirty.as_mut_slice().fill(0xee);
        drop(dirty);
        let mut buf = BytesMut::from(&wire[..100]);
        let mut pdu = LargePdu::start(&mut buf, &s).unwrap();
        assert!(buf.is_empty());
        assert_eq!(pdu.tail.as_slice().as_ptr() as usize % DATA_ALIGN, 0);
        assert_eq!(
            pdu.tail.len(),
            wire.len() - data_at,
            "the tail buffer holds the data segment and its digest only"
        );
        tx.write_all(&wire[100..]).await.unwrap();
        while !pdu.is_complete() {
            assert!(pdu.read(&rx, &mut BytesMut::new(), 0).await.unwrap() > 0);
        }
        let (head, tail) = pdu.into_parts();
        assert_eq!(head, &wire[..data_at], "the header, exactly");
        assert_eq!(
            tail,
            wire.slice(data_at..),
            "the tail, exactly, nothing stale"
        );
        assert_eq!(
            tail.as_ptr() as usize % DATA_ALIGN,
            0,
            "data segment aligned"
        );
    }
}

/// A large PDU being received counts its whole buffer in the connection's `assembling`
/// share of the data budget; once taken out to be handed to the protocol it counts there
/// only (here: a connection that holds no write data).
#[tokio::test]
async fn a_pdu_being_received_counts_in_the_data_budget_until_handed_over() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut tx = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (rx, _) = listener.accept().await.unwrap();
    let conn = iscsi::Connection::new(
        std::sync::Arc::new(iscsi::ServerConfig {
            targets: Vec::new(),
            limits: Limits::default(),
        }),
        std::time::Instant::now(),
    );
    let assembling = crate::net::connection::assembling_bytes;
    let s = session(false);
    let wire = data_out(64 << 10, false);
    let mut large = None;
    assert_eq!(assembling(&conn, large.as_ref()), 0);
    let mut buf = BytesMut::from(&wire[..100]);
    large = LargePdu::start(&mut buf, &s);
    let n = large.as_ref().unwrap().buffered_bytes();
    assert_eq!(n, wire.len(), "the header and the tail buffer");
    assert_eq!(assembling(&conn, large.as_ref()), n);
    tx.write_all(&wire[100..]).await.unwrap();
    while !large.as_ref().unwrap().is_complete() {
        assert!(
            large
                .as_mut()
                .unwrap()
                .read(&rx, &mut BytesMut::new(), 0)
                .await
                .unwrap()
                > 0
        );
        assert_eq!(
            assembling(&conn, large.as_ref()),
            n,
            "counted while arriving"
        );
    }
    // What the connection loop does: take it out and hand the frame on.
    let (head, tail) = large.take_if(|p| p.is_complete()).unwrap().into_parts();
    assert_eq!(assembling(&conn, large.as_ref()), 0);
    assert_eq!([&head[..], &tail[..]].concat(), &wire[..]);
}
