//! Property tests: every PDU type survives encode → frame → decode unchanged, with and
//! without digests, and arbitrary bytes never panic the framer.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

fn data() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
}

fn sn() -> impl Strategy<Value = SnFields> {
    any::<(u32, u32, u32)>().prop_map(|(a, b, c)| SnFields {
        stat_sn: a,
        exp_cmd_sn: b,
        max_cmd_sn: c,
    })
}

fn residual() -> impl Strategy<Value = Residual> {
    prop_oneof![
        Just(Residual::None),
        any::<u32>().prop_map(Residual::Overflow),
        any::<u32>().prop_map(Residual::Underflow),
    ]
}

fn initiator_pdu() -> impl Strategy<Value = Pdu> {
    prop_oneof![
        (any::<(bool, u64, u32, u32, u32, u32)>(), data()).prop_map(
            |((i, l, itt, ttt, c, e), d)| {
                Pdu::NopOut(NopOut {
                    immediate: i,
                    lun: l,
                    itt,
                    ttt,
                    cmd_sn: c,
                    exp_stat_sn: e,
                    data: d,
                })
            }
        ),
        (
            any::<(bool, bool, bool, bool, u8, u64, u32, u32, u32, u32)>(),
            any::<[u8; 16]>(),
            proptest::option::of(
                proptest::collection::vec(any::<u8>(), 1..40).prop_map(Bytes::from)
            ),
            proptest::option::of(any::<u32>()),
            data()
        )
            .prop_map(|((i, f, r, w, a, l, itt, edtl, c, e), cdb, ext, bidi, d)| {
                Pdu::ScsiCommand(ScsiCommandPdu {
                    immediate: i,
                    final_: f,
                    read: r,
                    write: w,
                    attr: a & 7,
                    lun: l,
                    itt,
                    edtl,
                    cmd_sn: c,
                    exp_stat_sn: e,
                    cdb,
                    ext_cdb: ext,
                    bidi_read_len: bidi,
                    data: d,
                })
            }),
        any::<(bool, u8, u64, u32, u32, u32, u32, u32, u32)>().prop_map(
            |(i, f, l, itt, rtt, c, e, r, x)| {
                Pdu::TaskMgmtRequest(TaskMgmtRequest {
                    immediate: i,
                    function: f & 0x7f,
                    lun: l,
                    itt,
                    rtt,
                    cmd_sn: c,
                    exp_stat_sn: e,
                    ref_cmd_sn: r,
                    exp_data_sn: x,
                })
            }
        ),
        (
            any::<(bool, bool, u8, u8, u8, u8)>(),
            any::<([u8; 6], u16, u32, u16, u32, u32)>(),
            data()
        )
            .prop_map(
                |((t, c, csg, nsg, vmax, vmin), (isid, tsih, itt, cid, cmd, e), d)| {
                    Pdu::LoginRequest(LoginRequest {
                        transit: t,
                        cont: c,
                        csg: csg & 3,
                        nsg: nsg & 3,
                        version_max: vmax,
                        version_min: vmin,
                        isid,
                        tsih,
                        itt,
                        cid,
                        cmd_sn: cmd,
                        exp_stat_sn: e,
                        data: d,
                    })
                }
            ),
        (any::<(bool, bool, bool, u64, u32, u32, u32, u32)>(), data()).prop_map(
            |((i, f, c, l, itt, ttt, cmd, e), d)| {
                Pdu::TextRequest(TextRequest {
                    immediate: i,
                    final_: f,
                    cont: c,
                    lun: l,
                    itt,
                    ttt,
                    cmd_sn: cmd,
                    exp_stat_sn: e,
                    data: d,
                })
            }
        ),
        (any::<(bool, u64, u32, u32, u32, u32, u32)>(), data()).prop_map(
            |((f, l, itt, ttt, e, dsn, off), d)| {
                Pdu::DataOut(ScsiDataOut {
                    final_: f,
                    lun: l,
                    itt,
                    ttt,
                    exp_stat_sn: e,
                    data_sn: dsn,
                    buffer_offset: off,
                    data: d,
                })
            }
        ),
        any::<(bool, u8, u32, u16, u32, u32)>().prop_map(|(i, r, itt, cid, c, e)| {
            Pdu::LogoutRequest(LogoutRequest {
                immediate: i,
                reason: r & 0x7f,
                itt,
                cid,
                cmd_sn: c,
                exp_stat_sn: e,
            })
        }),
        any::<(u8, u64, u32, u32, u32, u32, u32)>().prop_map(|(k, l, itt, ttt, e, b, r)| {
            Pdu::Snack(Snack {
                kind: k & 0xf,
                lun: l,
                itt,
                ttt,
                exp_stat_sn: e,
                beg_run: b,
                run_length: r,
            })
        }),
    ]
}

fn target_pdu() -> impl Strategy<Value = Pdu> {
    prop_oneof![
        (any::<(u64, u32, u32)>(), sn(), data()).prop_map(|((l, itt, ttt), sn, d)| Pdu::NopIn(
            NopIn {
                lun: l,
                itt,
                ttt,
                sn,
                data: d
            }
        )),
        (
            any::<(u8, u8, u32, u32, u32)>(),
            sn(),
            residual(),
            residual(),
            data()
        )
            .prop_map(|((r, s, itt, tag, x), sn, br, res, d)| {
                Pdu::ScsiResponse(ScsiResponse {
                    response: r,
                    status: s,
                    itt,
                    snack_tag: tag,
                    sn,
                    exp_data_sn: x,
                    bidi_residual: br,
                    residual: res,
                    data: d,
                })
            }),
        (any::<(u8, u32)>(), sn()).prop_map(|((r, itt), sn)| Pdu::TaskMgmtResponse(
            TaskMgmtResponse {
                response: r,
                itt,
                sn
            }
        )),
        (
            any::<(bool, bool, u8, u8, u8, u8)>(),
            any::<([u8; 6], u16, u32, u8, u8)>(),
            sn(),
            data()
        )
            .prop_map(
                |((t, c, csg, nsg, vmax, vact), (isid, tsih, itt, sc, sd), sn, d)| {
                    Pdu::LoginResponse(LoginResponse {
                        transit: t,
                        cont: c,
                        csg: csg & 3,
                        nsg: nsg & 3,
                        version_max: vmax,
                        version_active: vact,
                        isid,
                        tsih,
                        itt,
                        sn,
                        status_class: sc,
                        status_detail: sd,
                        data: d,
                    })
                }
            ),
        (any::<(bool, bool, u64, u32, u32)>(), sn(), data()).prop_map(
            |((f, c, l, itt, ttt), sn, d)| {
                Pdu::TextResponse(TextResponse {
                    final_: f,
                    cont: c,
                    lun: l,
                    itt,
                    ttt,
                    sn,
                    data: d,
                })
            }
        ),
        (
            any::<(bool, bool, bool, u8, u64, u32, u32, u32, u32)>(),
            residual(),
            sn(),
            data()
        )
            .prop_map(|((f, a, s, st, l, itt, ttt, dsn, off), res, sn, d)| {
                Pdu::DataIn(ScsiDataIn {
                    final_: f,
                    ack: a,
                    has_status: s,
                    residual: res,
                    status: st,
                    lun: l,
                    itt,
                    ttt,
                    sn,
                    data_sn: dsn,
                    buffer_offset: off,
                    data: d,
                })
            }),
        (any::<(u8, u32, u16, u16)>(), sn()).prop_map(|((r, itt, w, t), sn)| {
            Pdu::LogoutResponse(LogoutResponse {
                response: r,
                itt,
                sn,
                time2wait: w,
                time2retain: t,
            })
        }),
        (any::<(u64, u32, u32, u32, u32, u32)>(), sn()).prop_map(
            |((l, itt, ttt, r, o, len), sn)| {
                Pdu::R2t(R2t {
                    lun: l,
                    itt,
                    ttt,
                    sn,
                    r2t_sn: r,
                    buffer_offset: o,
                    desired_length: len,
                })
            }
        ),
        (any::<(u64, u8, u8, u16, u16, u16)>(), sn(), data()).prop_map(
            |((l, e, v, p1, p2, p3), sn, d)| {
                Pdu::AsyncMessage(AsyncMessage {
                    lun: l,
                    sn,
                    event: e,
                    vcode: v,
                    param1: p1,
                    param2: p2,
                    param3: p3,
                    data: d,
                })
            }
        ),
        (any::<(u8, u32)>(), sn(), data()).prop_map(|((r, dsn), sn, d)| Pdu::Reject(Reject {
            reason: r,
            sn,
            data_sn: dsn,
            data: d
        })),
    ]
}

proptest! {
    #[test]
    fn roundtrip(pdu in prop_oneof![initiator_pdu(), target_pdu()], hd: bool, dd: bool) {
        let cfg = FrameConfig { header_digest: hd, data_digest: dd, max_recv_data_segment_length: 1 << 20 };
        let wire = pdu.to_bytes(hd, dd);
        prop_assert_eq!(wire.len() % 4, 0);
        let mut buf = BytesMut::from(&wire[..]);
        buf.extend_from_slice(b"trailing");
        let got = next_pdu(&mut buf, &cfg);
        prop_assert_eq!(got, Ok(Some(pdu.clone())));
        prop_assert_eq!(&buf[..], b"trailing");
        // The same PDU received in two parts, split where its data segment starts.
        let h = Bhs::read(&wire).unwrap();
        let (data_at, total) = frame_layout(&h, &cfg);
        prop_assert_eq!(total, wire.len());
        prop_assert_eq!(decode_split(&wire[..data_at], wire.slice(data_at..), &cfg), Ok(pdu));
    }

    #[test]
    fn arbitrary_split_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), at: usize, hd: bool, dd: bool) {
        let cfg = FrameConfig { header_digest: hd, data_digest: dd, max_recv_data_segment_length: 1 << 20 };
        let at = at % (bytes.len() + 1);
        let _ = decode_split(&bytes[..at], Bytes::copy_from_slice(&bytes[at..]), &cfg);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_pdu_for_fuzz(&bytes);
    }

    #[test]
    fn arbitrary_header_never_panics(mut h in any::<[u8; 48]>(), tail in proptest::collection::vec(any::<u8>(), 0..256)) {
        h[4] %= 8;
        h[5] = 0;
        h[6] = 0;
        let mut v = h.to_vec();
        v.extend_from_slice(&tail);
        decode_pdu_for_fuzz(&v);
    }
}
