//! Connection tests: drive the state machine with initiator PDUs and check what it sends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::config::{LoginInfo, LoginRejection, TargetConfig};
use crate::pdu::*;

pub(crate) const TARGET: &str = "iqn.2024-01.org.example:disk1";

struct Allow;
impl LoginPolicy for Allow {
    fn check(&self, _req: &LoginInfo) -> Result<u16, LoginRejection> {
        Ok(9)
    }
}

fn config(limits: Limits) -> Arc<ServerConfig> {
    Arc::new(ServerConfig {
        targets: vec![
            TargetConfig {
                name: TARGET.into(),
                alias: None,
                tpgt: 1,
                portals: vec!["192.0.2.1:3260".into()],
            },
            TargetConfig {
                name: "iqn.2024-01.org.example:disk2".into(),
                alias: None,
                tpgt: 2,
                portals: vec!["192.0.2.2:3260".into()],
            },
        ],
        limits,
    })
}

struct H {
    c: Connection,
    now: Instant,
    cmd_sn: u32,
    itt: u32,
    digests: (bool, bool),
    rx: BytesMut,
}

fn kv(keys: &[&str]) -> Bytes {
    let mut v = Vec::new();
    for k in keys {
        v.extend_from_slice(k.as_bytes());
        v.push(0);
    }
    Bytes::from(v)
}

impl H {
    fn new(limits: Limits) -> H {
        let now = Instant::now();
        H {
            c: Connection::new(config(limits), now),
            now,
            cmd_sn: 100,
            itt: 1,
            digests: (false, false),
            rx: BytesMut::new(),
        }
    }

    fn feed(&mut self, pdu: Pdu) -> Result<(), ConnectionError> {
        let wire = pdu.to_bytes(self.digests.0, self.digests.1);
        let mut buf = BytesMut::from(&wire[..]);
        let r = self.c.handle_input(&mut buf, &Allow, self.now);
        if r.is_ok() && !self.c.is_closed() {
            assert!(buf.is_empty());
        }
        r
    }

    fn out(&mut self) -> Vec<Pdu> {
        let mut parts = Vec::new();
        while self.c.poll_transmit(&mut parts) {}
        for p in parts {
            self.rx.extend_from_slice(&p);
        }
        let cfg = FrameConfig {
            header_digest: self.digests.0,
            data_digest: self.digests.1,
            max_recv_data_segment_length: 1 << 24,
        };
        let mut v = Vec::new();
        while let Some(p) = next_pdu(&mut self.rx, &cfg).expect("valid output") {
            v.push(p);
        }
        v
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.c.poll_event()).collect()
    }

    fn login(&mut self, op_keys: &[&str]) -> LoginResponse {
        let mut keys = vec![
            "InitiatorName=iqn.1993-08.org.debian:01:abc",
            "TargetName=iqn.2024-01.org.example:disk1",
            "SessionType=Normal",
        ];
        keys.extend_from_slice(op_keys);
        self.feed(Pdu::LoginRequest(LoginRequest {
            transit: true,
            cont: false,
            csg: 1,
            nsg: 3,
            version_max: 0,
            version_min: 0,
            isid: [0x40, 0, 0, 1, 0, 0],
            tsih: 0,
            itt: 0x77,
            cid: 0,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: 5,
            data: kv(&keys),
        }))
        .unwrap();
        let out = self.out();
        let Some(Pdu::LoginResponse(r)) = out.into_iter().next() else {
            panic!()
        };
        assert_eq!(r.status_class, 0);
        let s = self.c.session().expect("session").params.clone();
        self.digests = (s.header_digest, s.data_digest);
        let ev = self.events();
        assert!(matches!(ev.as_slice(), [Event::SessionEstablished(_)]));
        r
    }

    fn std_login(&mut self) -> LoginResponse {
        self.login(&[
            "InitialR2T=No",
            "ImmediateData=Yes",
            "MaxRecvDataSegmentLength=8192",
            "MaxBurstLength=262144",
            "FirstBurstLength=65536",
            "MaxOutstandingR2T=2",
        ])
    }

    fn cmd(
        &mut self,
        read: bool,
        write: bool,
        edtl: u32,
        data: Bytes,
        final_: bool,
    ) -> ScsiCommandPdu {
        let itt = self.itt;
        self.itt += 1;
        let sn = self.cmd_sn;
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        let mut cdb = [0u8; 16];
        cdb[0] = if write { 0x2a } else { 0x28 };
        ScsiCommandPdu {
            immediate: false,
            final_,
            read,
            write,
            attr: 1,
            lun: 0,
            itt,
            edtl,
            cmd_sn: sn,
            exp_stat_sn: 0,
            cdb,
            ext_cdb: None,
            bidi_read_len: None,
            data,
        }
    }

    fn data_out(itt: u32, ttt: u32, sn: u32, off: u32, data: Bytes, f: bool) -> Pdu {
        Pdu::DataOut(ScsiDataOut {
            final_: f,
            lun: 0,
            itt,
            ttt,
            exp_stat_sn: 0,
            data_sn: sn,
            buffer_offset: off,
            data,
        })
    }

    fn only_command(&mut self) -> ScsiCommand {
        let ev = self.events();
        match ev.as_slice() {
            [Event::ScsiCommand(c)] => c.clone(),
            other => panic!("expected one command, got {other:?}"),
        }
    }
}

#[test]
fn login_response_sequence_numbers() {
    let mut h = H::new(Limits::default());
    let r = h.std_login();
    assert_eq!(
        r.sn.stat_sn, 5,
        "StatSN starts at the initiator's ExpStatSN"
    );
    assert_eq!(r.sn.exp_cmd_sn, 100);
    assert_eq!(r.sn.max_cmd_sn, 100 + 127);
    assert_eq!(r.tsih, 9);
    assert_eq!(r.itt, 0x77);
    assert!(r.transit && r.nsg == 3);
}

#[test]
fn read_with_data_in_splitting_and_residual() {
    let mut h = H::new(Limits::default());
    h.std_login();
    let c = h.cmd(true, false, 20000, Bytes::new(), true);
    h.feed(Pdu::ScsiCommand(c)).unwrap();
    let cmd = h.only_command();
    assert_eq!(cmd.expected_data_in_len, 20000);
    let data = Bytes::from(vec![0xab; 30000]);
    h.c.complete_command(
        cmd.task,
        CommandResponse {
            status: 0,
            sense: None,
            data_in: data.clone(),
            data_out_len: None,
        },
        h.now,
    );
    let out = h.out();
    assert_eq!(out.len(), 3, "8192 + 8192 + 3616");
    let mut off = 0;
    for (i, p) in out.iter().enumerate() {
        let Pdu::DataIn(d) = p else { panic!() };
        assert_eq!(d.data_sn, i as u32);
        assert_eq!(d.buffer_offset, off);
        off += d.data.len() as u32;
        let last = i == 2;
        assert_eq!(d.has_status, last);
        assert_eq!(d.final_, last);
        if last {
            assert_eq!(d.residual, Residual::Overflow(10000));
            assert_eq!(d.sn.stat_sn, 6);
            assert_eq!(d.sn.max_cmd_sn, 101 + 127, "slot released");
        }
    }
    assert_eq!(off, 20000);

    // underflow, with sense -> separate SCSI Response
    let c = h.cmd(true, false, 512, Bytes::new(), true);
    h.feed(Pdu::ScsiCommand(c)).unwrap();
    let cmd = h.only_command();
    h.c.complete_command(
        cmd.task,
        CommandResponse {
            status: 2,
            sense: Some(Bytes::from_static(&[0x70, 0, 5, 0, 0, 0, 0, 10])),
            data_in: Bytes::new(),
            data_out_len: None,
        },
        h.now,
    );
    let out = h.out();
    let [Pdu::ScsiResponse(r)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(r.status, 2);
    assert_eq!(r.residual, Residual::Underflow(512));
    assert_eq!(&r.data[..2], &[0, 8]);
    assert_eq!(r.data.len(), 10);
    assert_eq!(r.exp_data_sn, 0);
}

#[test]
fn data_in_respects_max_burst() {
    let mut h = H::new(Limits::default());
    h.login(&["MaxRecvDataSegmentLength=262144", "MaxBurstLength=16384"]);
    let c = h.cmd(true, false, 65536, Bytes::new(), true);
    h.feed(Pdu::ScsiCommand(c)).unwrap();
    let cmd = h.only_command();
    let data = Bytes::from(vec![1u8; 65536]);
    h.c.complete_command(
        cmd.task,
        CommandResponse {
            data_in: data,
            ..Default::default()
        },
        h.now,
    );
    let out = h.out();
    assert_eq!(out.len(), 4);
    for p in &out {
        let Pdu::DataIn(d) = p else { panic!() };
        assert_eq!(d.data.len(), 16384);
        assert!(d.final_, "every burst ends with F");
    }
}

#[test]
fn write_immediate_unsolicited_and_r2t() {
    let mut h = H::new(Limits::default());
    h.std_login();
    // 200000 bytes: 8192 immediate, unsolicited up to 65536, then R2Ts of <= 262144.
    let total = 200_000u32;
    let payload: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
    let payload = Bytes::from(payload);
    let c = h.cmd(false, true, total, payload.slice(..8192), false);
    let itt = c.itt;
    h.feed(Pdu::ScsiCommand(c)).unwrap();
    assert!(h.out().is_empty(), "no R2T during the unsolicited phase");
    let mut off = 8192u32;
    let mut sn = 0;
    while off < 65536 {
        let len = 8192.min(65536 - off);
        let f = off + len == 65536;
        h.feed(H::data_out(
            itt,
            RESERVED_TAG,
            sn,
            off,
            payload.slice(off as usize..(off + len) as usize),
            f,
        ))
        .unwrap();
        off += len;
        sn += 1;
    }
    let out = h.out();
    let [Pdu::R2t(r)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(
        (r.buffer_offset, r.desired_length, r.r2t_sn),
        (65536, 200_000 - 65536, 0)
    );
    assert!(h.events().is_empty());
    let mut off = r.buffer_offset;
    let mut sn = 0;
    while off < total {
        let len = 8192.min(total - off);
        let f = off + len == total;
        h.feed(H::data_out(
            itt,
            r.ttt,
            sn,
            off,
            payload.slice(off as usize..(off + len) as usize),
            f,
        ))
        .unwrap();
        off += len;
        sn += 1;
    }
    let cmd = h.only_command();
    assert_eq!(cmd.data_out, DataOut::Complete(payload));
    h.c.complete_command(
        cmd.task,
        CommandResponse {
            data_out_len: Some(total),
            ..Default::default()
        },
        h.now,
    );
    let out = h.out();
    let [Pdu::ScsiResponse(r)] = out.as_slice() else {
        panic!()
    };
    assert_eq!(r.residual, Residual::None);
    assert_eq!(r.exp_data_sn, 1, "one R2T");
}

#[test]
fn write_initial_r2t_multiple_outstanding() {
    let mut h = H::new(Limits {
        max_burst_length: 4096,
        ..Limits::default()
    });
    h.login(&[
        "InitialR2T=Yes",
        "ImmediateData=No",
        "MaxOutstandingR2T=2",
        "MaxBurstLength=65536",
    ]);
    let c = h.cmd(false, true, 10000, Bytes::new(), true);
    let itt = c.itt;
    h.feed(Pdu::ScsiCommand(c)).unwrap();
    let out = h.out();
    assert_eq!(out.len(), 2, "MaxOutstandingR2T=2");
    let r2ts: Vec<R2t> = out
        .into_iter()
        .map(|p| match p {
            Pdu::R2t(r) => r,
            _ => panic!(),
        })
        .collect();
    assert_eq!((r2ts[0].buffer_offset, r2ts[0].desired_length), (0, 4096));
    assert_eq!((r2ts[1].buffer_offset, r2ts[1].r2t_sn), (4096, 1));
    h.feed(H::data_out(
        itt,
        r2ts[0].ttt,
        0,
        0,
        Bytes::from(vec![1; 4096]),
        true,
    ))
    .unwrap();
    let out = h.out();
    let [Pdu::R2t(r3)] = out.as_slice() else {
        panic!()
    };
    assert_eq!(
        (r3.buffer_offset, r3.desired_length, r3.r2t_sn),
        (8192, 10000 - 8192, 2)
    );
    h.feed(H::data_out(
        itt,
        r2ts[1].ttt,
        0,
        4096,
        Bytes::from(vec![2; 4096]),
        true,
    ))
    .unwrap();
    h.feed(H::data_out(
        itt,
        r3.ttt,
        0,
        8192,
        Bytes::from(vec![3; 1808]),
        true,
    ))
    .unwrap();
    let cmd = h.only_command();
    let DataOut::Complete(d) = cmd.data_out else {
        panic!()
    };
    assert_eq!(d.len(), 10000);
    assert_eq!((d[0], d[5000], d[9999]), (1, 2, 3));
}

#[test]
fn write_residuals_and_too_large() {
    let mut h = H::new(Limits {
        max_transfer_bytes: 4096,
        ..Limits::default()
    });
    h.std_login();
    let c = h.cmd(false, true, 1024, Bytes::from(vec![0; 1024]), true);
    h.feed(Pdu::ScsiCommand(c)).unwrap();
    let cmd = h.only_command();
    h.c.complete_command(
        cmd.task,
        CommandResponse {
            data_out_len: Some(512),
            ..Default::default()
        },
        h.now,
    );
    let out = h.out();
    let [Pdu::ScsiResponse(r)] = out.as_slice() else {
        panic!()
    };
    assert_eq!(r.residual, Residual::Underflow(512));

    let c = h.cmd(false, true, 1 << 20, Bytes::from(vec![0; 4096]), false);
    let itt = c.itt;
    h.feed(Pdu::ScsiCommand(c)).unwrap();
    assert!(
        h.events().is_empty(),
        "waits for the unsolicited data to be discarded"
    );
    h.feed(H::data_out(
        itt,
        RESERVED_TAG,
        0,
        4096,
        Bytes::from(vec![0; 4096]),
        true,
    ))
    .unwrap();
    let cmd = h.only_command();
    assert_eq!(cmd.data_out, DataOut::TooLarge);
    assert!(h.out().is_empty(), "no R2T for a too-large write");

    // EDTL 0 but CDB wants data: overflow
    let c = h.cmd(false, false, 0, Bytes::new(), true);
    h.feed(Pdu::ScsiCommand(c)).unwrap();
    let cmd = h.only_command();
    h.c.complete_command(
        cmd.task,
        CommandResponse {
            status: 2,
            data_out_len: Some(512),
            sense: Some(Bytes::from_static(&[0x70])),
            ..Default::default()
        },
        h.now,
    );
    let out = h.out();
    let [Pdu::ScsiResponse(r)] = out.as_slice() else {
        panic!()
    };
    assert_eq!(r.residual, Residual::Overflow(512));
}

#[test]
fn data_out_errors() {
    let mut h = H::new(Limits::default());
    h.std_login();
    // unknown ITT -> Reject 0x09, connection stays
    h.feed(H::data_out(
        999,
        RESERVED_TAG,
        0,
        0,
        Bytes::from_static(&[0; 4]),
        true,
    ))
    .unwrap();
    let out = h.out();
    let [Pdu::Reject(r)] = out.as_slice() else {
        panic!()
    };
    assert_eq!(r.reason, 9);
    assert_eq!(r.data.len(), 48);
    assert_eq!(r.data[0] & 0x3f, 0x05);
    // wrong DataSN -> the PDU is rejected and only this command fails (ABORTED COMMAND /
    // DATA PHASE ERROR); the session goes on.
    let c = h.cmd(false, true, 8192, Bytes::new(), false);
    let itt = c.itt;
    h.feed(Pdu::ScsiCommand(c)).unwrap();
    h.feed(H::data_out(
        itt,
        RESERVED_TAG,
        0,
        0,
        Bytes::from(vec![0; 4096]),
        false,
    ))
    .unwrap();
    let e = h.feed(H::data_out(
        itt,
        RESERVED_TAG,
        0,
        4096,
        Bytes::from(vec![0; 4096]),
        true,
    ));
    assert!(e.is_ok());
    assert!(!h.c.is_closed());
    let out = h.out();
    assert!(matches!(
        out.first(),
        Some(Pdu::Reject(Reject { reason: 4, .. }))
    ));
    let Some(Pdu::ScsiResponse(resp)) = out.last() else {
        panic!("expected a SCSI Response, got {out:?}")
    };
    assert_eq!(resp.itt, itt);
    assert_eq!(resp.status, 0x02);
    // SenseLength (2 bytes) + fixed sense: key ABORTED COMMAND, ASC/ASCQ 4B/00.
    assert_eq!(resp.data.get(2 + 2).map(|k| k & 0x0f), Some(0x0B));
    assert_eq!(resp.data.get(2 + 12..2 + 14), Some(&[0x4B, 0x00][..]));
    assert!(
        h.events().is_empty(),
        "the gateway never sees the failed command"
    );
    // A later Data-Out for the finished command is an unknown task: Reject, not a drop.
    h.feed(H::data_out(
        itt,
        RESERVED_TAG,
        2,
        8192,
        Bytes::from(vec![0; 512]),
        true,
    ))
    .unwrap();
    assert!(!h.c.is_closed());
}

#[test]
fn cmdsn_window_ordering_and_drops() {
    let mut h = H::new(Limits {
        cmdsn_window: 4,
        ..Limits::default()
    });
    let r = h.std_login();
    assert_eq!(r.sn.max_cmd_sn, 103);
    let a = h.cmd(true, false, 0, Bytes::new(), true); // 100
    let b = h.cmd(true, false, 0, Bytes::new(), true); // 101
    let c = h.cmd(true, false, 0, Bytes::new(), true); // 102
    h.feed(Pdu::ScsiCommand(c.clone())).unwrap();
    h.feed(Pdu::ScsiCommand(b.clone())).unwrap();
    assert!(h.events().is_empty(), "waits for CmdSN 100");
    h.feed(Pdu::ScsiCommand(a.clone())).unwrap();
    let ev = h.events();
    let itts: Vec<u32> = ev
        .iter()
        .map(|e| match e {
            Event::ScsiCommand(c) => c.task.0,
            _ => 0,
        })
        .collect();
    assert_eq!(itts, vec![a.itt, b.itt, c.itt]);
    // too high (max is 103) and too low are dropped silently
    let mut hi = h.cmd(true, false, 0, Bytes::new(), true);
    hi.cmd_sn = 104;
    h.feed(Pdu::ScsiCommand(hi)).unwrap();
    let mut lo = h.cmd(true, false, 0, Bytes::new(), true);
    lo.cmd_sn = 99;
    h.feed(Pdu::ScsiCommand(lo)).unwrap();
    assert!(h.events().is_empty());
    assert!(h.out().is_empty());
    // three slots in use: completing one opens the window by one
    h.c.complete_command(TaskId(a.itt), CommandResponse::default(), h.now);
    let out = h.out();
    let [Pdu::ScsiResponse(r)] = out.as_slice() else {
        panic!()
    };
    assert_eq!(r.sn.exp_cmd_sn, 103);
    assert_eq!(r.sn.max_cmd_sn, 104, "MaxCmdSN = ExpCmdSN + free - 1");
    // immediate commands pass at once
    let mut imm = h.cmd(false, false, 0, Bytes::new(), true);
    imm.immediate = true;
    imm.cmd_sn = 103;
    h.feed(Pdu::ScsiCommand(imm)).unwrap();
    assert_eq!(h.events().len(), 1);
}

#[test]
fn nop_echo_and_ping_timeout() {
    let mut h = H::new(Limits::default());
    h.std_login();
    h.feed(Pdu::NopOut(NopOut {
        immediate: true,
        lun: 0,
        itt: 55,
        ttt: RESERVED_TAG,
        cmd_sn: h.cmd_sn,
        exp_stat_sn: 0,
        data: Bytes::from_static(b"nopping\0"),
    }))
    .unwrap();
    let out = h.out();
    let [Pdu::NopIn(n)] = out.as_slice() else {
        panic!()
    };
    assert_eq!((n.itt, n.ttt), (55, RESERVED_TAG));
    assert_eq!(&n.data[..], b"nopping\0");

    let t = h.c.poll_timeout().unwrap();
    assert_eq!(t, h.now + Duration::from_secs(5));
    h.now = t;
    h.c.handle_timeout(h.now);
    let out = h.out();
    let [Pdu::NopIn(p)] = out.as_slice() else {
        panic!()
    };
    assert_eq!(p.itt, RESERVED_TAG);
    assert_ne!(p.ttt, RESERVED_TAG);
    // answer it
    h.feed(Pdu::NopOut(NopOut {
        immediate: true,
        lun: 0,
        itt: RESERVED_TAG,
        ttt: p.ttt,
        cmd_sn: h.cmd_sn,
        exp_stat_sn: 0,
        data: Bytes::new(),
    }))
    .unwrap();
    assert!(h.out().is_empty());
    assert_eq!(h.c.poll_timeout(), Some(h.now + Duration::from_secs(5)));
    // ignore the next one
    h.now += Duration::from_secs(5);
    h.c.handle_timeout(h.now);
    assert_eq!(h.out().len(), 1);
    h.now += Duration::from_secs(15);
    h.c.handle_timeout(h.now);
    assert!(h.c.is_closed());
}

#[test]
fn login_timeout() {
    let mut h = H::new(Limits::default());
    let t = h.c.poll_timeout().unwrap();
    h.c.handle_timeout(t);
    assert!(h.c.is_closed());
}

#[test]
fn login_timeout_after_half_a_login() {
    // The first login PDU arrives (security stage, no transit), then nothing: the
    // deadline counts from the connection's start, not from the last PDU.
    let mut h = H::new(Limits {
        login_timeout: Duration::from_secs(3),
        ..Limits::default()
    });
    let start = h.now;
    h.now += Duration::from_secs(2);
    h.feed(Pdu::LoginRequest(LoginRequest {
        transit: false,
        cont: false,
        csg: 0,
        nsg: 0,
        version_max: 0,
        version_min: 0,
        isid: [0x40, 0, 0, 1, 0, 0],
        tsih: 0,
        itt: 0x77,
        cid: 0,
        cmd_sn: 1,
        exp_stat_sn: 0,
        data: kv(&[
            "InitiatorName=iqn.1993-08.org.debian:01:abc",
            "TargetName=iqn.2024-01.org.example:disk1",
            "AuthMethod=None",
        ]),
    }))
    .unwrap();
    assert!(!h.c.is_closed());
    assert_eq!(h.c.poll_timeout(), Some(start + Duration::from_secs(3)));
    h.now = start + Duration::from_secs(3);
    h.c.handle_timeout(h.now);
    assert!(h.c.is_closed());
}

#[test]
fn commands_delivered_at_once_are_bounded_by_window_and_immediate_limit() {
    // An initiator that ignores MaxCmdSN and floods commands (ordered and immediate) gets
    // at most cmdsn_window + max_immediate_commands of them executed at once.
    let mut h = H::new(Limits {
        cmdsn_window: 4,
        max_immediate_commands: 2,
        ..Limits::default()
    });
    h.std_login();
    for i in 0..40 {
        let mut c = h.cmd(true, false, 512, Bytes::new(), true);
        if i % 2 == 1 {
            // Immediate commands carry the next CmdSN without taking it.
            c.immediate = true;
            h.cmd_sn = h.cmd_sn.wrapping_sub(1);
            c.cmd_sn = h.cmd_sn;
        }
        h.feed(Pdu::ScsiCommand(c)).unwrap();
    }
    let delivered: Vec<TaskId> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::ScsiCommand(c) => Some(c.task),
            _ => None,
        })
        .collect();
    assert_eq!(delivered.len(), 6, "4 in the window + 2 immediate");
    // Completing one frees exactly one place; the initiator must resend (ERL 0 drops the rest).
    h.c.complete_command(delivered[0], CommandResponse::default(), h.now);
    let _ = h.out();
    let c = h.cmd(true, false, 512, Bytes::new(), true);
    h.feed(Pdu::ScsiCommand(c)).unwrap();
    assert_eq!(
        h.events().len(),
        0,
        "CmdSN far beyond MaxCmdSN stays dropped"
    );
}

#[test]
fn tmf_abort_flow() {
    let mut h = H::new(Limits::default());
    h.std_login();
    let c = h.cmd(true, false, 512, Bytes::new(), true);
    h.feed(Pdu::ScsiCommand(c.clone())).unwrap();
    h.only_command();
    h.feed(tmf_pdu(500, 1, c.itt, h.cmd_sn, c.cmd_sn)).unwrap();
    let ev = h.events();
    let [Event::TaskManagement(t)] = ev.as_slice() else {
        panic!("{ev:?}")
    };
    assert_eq!(t.function, TmfFunction::AbortTask);
    assert_eq!(t.referenced_task, Some(TaskId(c.itt)));
    assert!(
        h.out().is_empty(),
        "no TMF response before the gateway answers"
    );
    h.c.complete_task_management(t.id, TmfResponseCode::FunctionComplete, h.now);
    // a late completion of the aborted task is ignored
    h.c.complete_command(TaskId(c.itt), CommandResponse::default(), h.now);
    let out = h.out();
    let [Pdu::TaskMgmtResponse(r)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!((r.itt, r.response), (500, 0));

    // abort of a task that has not arrived yet (RefCmdSN inside the window)
    let late = h.cmd(true, false, 0, Bytes::new(), true);
    h.feed(tmf_pdu(501, 1, late.itt, h.cmd_sn, late.cmd_sn))
        .unwrap();
    let out = h.out();
    let [Pdu::TaskMgmtResponse(r)] = out.as_slice() else {
        panic!()
    };
    assert_eq!(r.response, 0);
    assert_eq!(
        r.sn.exp_cmd_sn,
        late.cmd_sn.wrapping_add(1),
        "its CmdSN counts as received"
    );
    h.feed(Pdu::ScsiCommand(late)).unwrap();
    assert!(h.events().is_empty(), "aborted command is not executed");

    // abort of an old, finished task
    h.feed(tmf_pdu(502, 1, 12345, h.cmd_sn, 1)).unwrap();
    let out = h.out();
    let [Pdu::TaskMgmtResponse(r)] = out.as_slice() else {
        panic!()
    };
    assert_eq!(r.response, 1);

    // LUN reset goes to the gateway; task reassign is refused locally
    h.feed(tmf_pdu(503, 5, RESERVED_TAG, h.cmd_sn, 0)).unwrap();
    let ev = h.events();
    assert!(matches!(
        ev.as_slice(),
        [Event::TaskManagement(TmfRequest {
            function: TmfFunction::LogicalUnitReset,
            ..
        })]
    ));
    h.c.complete_task_management(TmfId(503), TmfResponseCode::LunDoesNotExist, h.now);
    h.feed(tmf_pdu(504, 8, 1, h.cmd_sn, 0)).unwrap();
    let out = h.out();
    let codes: Vec<u8> = out
        .iter()
        .map(|p| match p {
            Pdu::TaskMgmtResponse(r) => r.response,
            _ => 99,
        })
        .collect();
    assert_eq!(codes, vec![2, 4]);
}

#[test]
fn digests_on() {
    let mut h = H::new(Limits::default());
    h.login(&["HeaderDigest=CRC32C,None", "DataDigest=CRC32C,None"]);
    assert_eq!(h.digests, (true, true));
    let c = h.cmd(true, false, 100, Bytes::new(), true);
    h.feed(Pdu::ScsiCommand(c)).unwrap();
    let cmd = h.only_command();
    h.c.complete_command(
        cmd.task,
        CommandResponse {
            data_in: Bytes::from(vec![5; 100]),
            ..Default::default()
        },
        h.now,
    );
    let out = h.out();
    assert!(matches!(out.as_slice(), [Pdu::DataIn(d)] if d.data.len() == 100));
    // a corrupted data digest is rejected
    let nop = Pdu::NopOut(NopOut {
        immediate: true,
        lun: 0,
        itt: 3,
        ttt: RESERVED_TAG,
        cmd_sn: h.cmd_sn,
        exp_stat_sn: 0,
        data: Bytes::from_static(b"abcd"),
    });
    let mut wire = BytesMut::from(&nop.to_bytes(true, true)[..]);
    let n = wire.len();
    wire[n - 1] ^= 0xff;
    h.c.handle_input(&mut wire, &Allow, h.now).unwrap();
    let out = h.out();
    assert!(matches!(
        out.as_slice(),
        [Pdu::Reject(Reject { reason: 2, .. })]
    ));
    // a corrupted header digest is fatal
    let mut wire = BytesMut::from(&nop.to_bytes(true, true)[..]);
    wire[10] ^= 1;
    assert!(h.c.handle_input(&mut wire, &Allow, h.now).is_err());
    assert!(h.c.is_closed());
}

#[test]
fn rejects() {
    let mut h = H::new(Limits::default());
    h.std_login();
    h.feed(Pdu::Snack(Snack {
        kind: 0,
        lun: 0,
        itt: 1,
        ttt: 0,
        exp_stat_sn: 0,
        beg_run: 0,
        run_length: 0,
    }))
    .unwrap();
    let mut unknown = Bhs::new(0x1d, false);
    unknown.set_itt(5);
    let mut buf = BytesMut::from(&unknown.0[..]);
    h.c.handle_input(&mut buf, &Allow, h.now).unwrap();
    let c = h.cmd(false, false, 0, Bytes::from_static(b"data"), true);
    h.feed(Pdu::ScsiCommand(c)).unwrap();
    let out = h.out();
    let reasons: Vec<u8> = out
        .iter()
        .map(|p| match p {
            Pdu::Reject(r) => r.reason,
            _ => 0,
        })
        .collect();
    assert_eq!(reasons, vec![4, 5, 4]);
    let Some(Pdu::Reject(last)) = out.last() else {
        panic!()
    };
    let reject_stat_sn = last.sn.stat_sn;
    // the rejected command's CmdSN was consumed
    let c = h.cmd(false, false, 0, Bytes::new(), true);
    h.feed(Pdu::ScsiCommand(c)).unwrap();
    let cmd = h.only_command();
    h.c.complete_command(cmd.task, CommandResponse::default(), h.now);
    let out = h.out();
    let [Pdu::ScsiResponse(r)] = out.as_slice() else {
        panic!()
    };
    assert_eq!(
        r.sn.stat_sn, reject_stat_sn,
        "Reject does not advance StatSN"
    );
}

#[test]
fn sendtargets_in_ffp_and_invalid() {
    let mut h = H::new(Limits::default());
    h.std_login();
    let text = |h: &mut H, body: &'static [u8]| {
        h.feed(Pdu::TextRequest(TextRequest {
            immediate: true,
            final_: true,
            cont: false,
            lun: 0,
            itt: 40,
            ttt: RESERVED_TAG,
            cmd_sn: h.cmd_sn,
            exp_stat_sn: 0,
            data: Bytes::from_static(body),
        }))
        .unwrap();
        let out = h.out();
        let [Pdu::TextResponse(r)] = out.as_slice() else {
            panic!("{out:?}")
        };
        r.clone()
    };
    let r = text(&mut h, b"SendTargets=All\0");
    assert!(r.final_ && !r.cont);
    assert_eq!(
        &r.data[..],
        b"TargetName=iqn.2024-01.org.example:disk1\0TargetAddress=192.0.2.1:3260,1\0"
    );
    for bad in [
        &b"SendTargetsPlease=All\0"[..],
        b"SendTargets=Alle\0",
        b"SendTargets=A\0",
        b"sENDtARGETS=aLL\0",
    ] {
        let r = text(&mut h, bad);
        let s = std::str::from_utf8(&r.data).unwrap();
        assert!(s.contains("=NotUnderstood") || s.contains("=Reject"), "{s}");
    }
}

#[test]
fn discovery_session_and_long_answer() {
    let mut targets = Vec::new();
    for i in 0..100 {
        targets.push(TargetConfig {
            name: format!("iqn.2024-01.org.example:target-with-a-long-name-{i:03}"),
            alias: None,
            tpgt: 1,
            portals: vec!["192.0.2.1:3260".into(), "[2001:db8::1]:3260".into()],
        });
    }
    let now = Instant::now();
    let mut h = H {
        c: Connection::new(
            Arc::new(ServerConfig {
                targets,
                limits: Limits::default(),
            }),
            now,
        ),
        now,
        cmd_sn: 1,
        itt: 1,
        digests: (false, false),
        rx: BytesMut::new(),
    };
    h.feed(Pdu::LoginRequest(LoginRequest {
        transit: true,
        cont: false,
        csg: 1,
        nsg: 3,
        version_max: 0,
        version_min: 0,
        isid: [0; 6],
        tsih: 0,
        itt: 1,
        cid: 0,
        cmd_sn: 1,
        exp_stat_sn: 0,
        data: kv(&[
            "InitiatorName=iqn.x",
            "SessionType=Discovery",
            "MaxRecvDataSegmentLength=4096",
        ]),
    }))
    .unwrap();
    assert!(matches!(h.out().as_slice(), [Pdu::LoginResponse(r)] if r.transit));
    let mut req = TextRequest {
        immediate: false,
        final_: true,
        cont: false,
        lun: 0,
        itt: 2,
        ttt: RESERVED_TAG,
        cmd_sn: 1,
        exp_stat_sn: 0,
        data: kv(&["SendTargets=All"]),
    };
    let mut all = Vec::new();
    for _ in 0..100 {
        h.feed(Pdu::TextRequest(req.clone())).unwrap();
        let out = h.out();
        let [Pdu::TextResponse(r)] = out.as_slice() else {
            panic!()
        };
        assert!(r.data.len() <= 4096);
        all.extend_from_slice(&r.data);
        if r.final_ {
            assert_eq!(r.ttt, RESERVED_TAG);
            break;
        }
        assert!(r.cont);
        req.ttt = r.ttt;
        req.data = Bytes::new();
        req.cmd_sn += 1;
    }
    let pairs = crate::text::parse_multi(&all).unwrap();
    assert_eq!(pairs.len(), 300);
    // SCSI commands are not allowed in discovery sessions
    let c = h.cmd(true, false, 0, Bytes::new(), true);
    h.feed(Pdu::ScsiCommand(c)).unwrap();
    assert!(matches!(h.out().as_slice(), [Pdu::Reject(_)]));
}

#[test]
fn logout_waits_for_outstanding_commands() {
    let mut h = H::new(Limits::default());
    h.std_login();
    let c = h.cmd(true, false, 0, Bytes::new(), true);
    h.feed(Pdu::ScsiCommand(c.clone())).unwrap();
    h.only_command();
    h.feed(Pdu::LogoutRequest(LogoutRequest {
        immediate: true,
        reason: 0,
        itt: 70,
        cid: 0,
        cmd_sn: h.cmd_sn,
        exp_stat_sn: 0,
    }))
    .unwrap();
    assert_eq!(h.events(), vec![Event::Logout { reason: 0 }]);
    assert!(h.out().is_empty());
    assert!(!h.c.is_closed());
    h.c.complete_command(TaskId(c.itt), CommandResponse::default(), h.now);
    let out = h.out();
    assert!(matches!(
        out.as_slice(),
        [
            Pdu::ScsiResponse(_),
            Pdu::LogoutResponse(LogoutResponse {
                response: 0,
                itt: 70,
                time2wait: 2,
                ..
            })
        ]
    ));
    assert!(h.c.is_closed());
}

#[test]
fn logout_recovery_not_supported_and_shutdown() {
    let mut h = H::new(Limits::default());
    h.std_login();
    h.feed(Pdu::LogoutRequest(LogoutRequest {
        immediate: true,
        reason: 2,
        itt: 70,
        cid: 0,
        cmd_sn: h.cmd_sn,
        exp_stat_sn: 0,
    }))
    .unwrap();
    assert!(matches!(
        h.out().as_slice(),
        [Pdu::LogoutResponse(LogoutResponse { response: 2, .. })]
    ));
    h.c.close(CloseReason::Shutdown);
    assert!(h.c.is_closed());
    assert!(matches!(
        h.out().as_slice(),
        [Pdu::AsyncMessage(AsyncMessage { event: 3, .. })]
    ));
}

#[test]
fn login_failure_closes() {
    let mut h = H::new(Limits::default());
    h.feed(Pdu::LoginRequest(LoginRequest {
        transit: true,
        cont: false,
        csg: 1,
        nsg: 3,
        version_max: 0,
        version_min: 0,
        isid: [0; 6],
        tsih: 0,
        itt: 1,
        cid: 0,
        cmd_sn: 1,
        exp_stat_sn: 0,
        data: kv(&["InitiatorName=iqn.x", "TargetName=iqn.nope"]),
    }))
    .unwrap();
    assert!(h.c.is_closed());
    assert!(
        matches!(h.out().as_slice(), [Pdu::LoginResponse(r)] if r.status_class == 2 && r.status_detail == 3)
    );
    // non-login PDU during login is fatal
    let mut h = H::new(Limits::default());
    let e = h.feed(Pdu::NopOut(NopOut {
        immediate: true,
        lun: 0,
        itt: 1,
        ttt: RESERVED_TAG,
        cmd_sn: 0,
        exp_stat_sn: 0,
        data: Bytes::new(),
    }));
    assert!(e.is_err());
}

fn arb_pdu(itt_max: u32) -> impl Strategy<Value = Pdu> {
    let small = || 0..itt_max;
    prop_oneof![
        (
            any::<bool>(),
            small(),
            small(),
            95u32..110,
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(i, itt, ttt, sn, d)| Pdu::NopOut(NopOut {
                immediate: i,
                lun: 0,
                itt: if itt == 0 { RESERVED_TAG } else { itt },
                ttt: if ttt < 3 { RESERVED_TAG } else { ttt },
                cmd_sn: sn,
                exp_stat_sn: 0,
                data: Bytes::from(d)
            })),
        (
            any::<(bool, bool, bool, bool, u8)>(),
            small(),
            0u32..70000,
            95u32..110,
            any::<[u8; 16]>(),
            proptest::collection::vec(any::<u8>(), 0..600)
        )
            .prop_map(|((i, f, r, w, a), itt, edtl, sn, cdb, d)| Pdu::ScsiCommand(
                ScsiCommandPdu {
                    immediate: i,
                    final_: f,
                    read: r,
                    write: w,
                    attr: a & 7,
                    lun: 0,
                    itt,
                    edtl,
                    cmd_sn: sn,
                    exp_stat_sn: 0,
                    cdb,
                    ext_cdb: None,
                    bidi_read_len: None,
                    data: Bytes::from(d)
                }
            )),
        (
            any::<bool>(),
            small(),
            small(),
            0u32..70000,
            0u32..4,
            proptest::collection::vec(any::<u8>(), 0..600)
        )
            .prop_map(|(f, itt, ttt, off, sn, d)| Pdu::DataOut(ScsiDataOut {
                final_: f,
                lun: 0,
                itt,
                ttt: if ttt < 3 { RESERVED_TAG } else { ttt },
                exp_stat_sn: 0,
                data_sn: sn,
                buffer_offset: off,
                data: Bytes::from(d)
            })),
        (
            any::<bool>(),
            0u8..10,
            small(),
            small(),
            95u32..110,
            95u32..110
        )
            .prop_map(
                |(i, f, itt, rtt, sn, r)| Pdu::TaskMgmtRequest(TaskMgmtRequest {
                    immediate: i,
                    function: f,
                    lun: 0,
                    itt,
                    rtt,
                    cmd_sn: sn,
                    exp_stat_sn: 0,
                    ref_cmd_sn: r,
                    exp_data_sn: 0
                })
            ),
        (
            any::<(bool, bool, bool)>(),
            small(),
            small(),
            95u32..110,
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(
                |((i, f, c), itt, ttt, sn, d)| Pdu::TextRequest(TextRequest {
                    immediate: i,
                    final_: f,
                    cont: c,
                    lun: 0,
                    itt,
                    ttt: if ttt < 3 { RESERVED_TAG } else { ttt },
                    cmd_sn: sn,
                    exp_stat_sn: 0,
                    data: Bytes::from(d)
                })
            ),
        (any::<bool>(), 0u8..4, small(), 95u32..110).prop_map(
            |(i, r, itt, sn)| Pdu::LogoutRequest(LogoutRequest {
                immediate: i,
                reason: r,
                itt,
                cid: 0,
                cmd_sn: sn,
                exp_stat_sn: 0
            })
        ),
        Just(Pdu::Snack(Snack {
            kind: 0,
            lun: 0,
            itt: 1,
            ttt: 0,
            exp_stat_sn: 0,
            beg_run: 0,
            run_length: 0
        })),
        Just(Pdu::TextRequest(TextRequest {
            immediate: true,
            final_: true,
            cont: false,
            lun: 0,
            itt: 9,
            ttt: RESERVED_TAG,
            cmd_sn: 100,
            exp_stat_sn: 0,
            data: kv(&["SendTargets=All"])
        })),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    Pdu(Pdu),
    Garbage(Vec<u8>),
    Complete(u32, u32, bool),
    Tmf(u32, u8),
    Tick(u64),
    /// Opens or closes the intake gate.
    Gate(bool),
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => arb_pdu(8).prop_map(Step::Pdu),
        1 => proptest::collection::vec(any::<u8>(), 0..100).prop_map(Step::Garbage),
        2 => (0u32..8, 0u32..5000, any::<bool>()).prop_map(|(a, b, c)| Step::Complete(a, b, c)),
        1 => (0u32..8, 0u8..8).prop_map(|(a, b)| Step::Tmf(a, b)),
        1 => (0u64..20).prop_map(Step::Tick),
        1 => any::<bool>().prop_map(Step::Gate),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn random_sequences_never_panic(digest: bool, steps in proptest::collection::vec(arb_step(), 0..40)) {
        let mut h = H::new(Limits { max_transfer_bytes: 50000, cmdsn_window: 8, max_burst_length: 4096, ..Limits::default() });
        if digest {
            h.login(&["HeaderDigest=CRC32C", "DataDigest=CRC32C", "InitialR2T=No", "MaxRecvDataSegmentLength=512"]);
        } else {
            h.std_login();
        }
        for s in steps {
            let closed_before = !h.c.intake_open;
            let max_before = h.c.max_cmd_sn;
            match s {
                Step::Pdu(p) => { let _ = h.feed(p); }
                Step::Garbage(g) => {
                    let mut b = BytesMut::from(&g[..]);
                    let _ = h.c.handle_input(&mut b, &Allow, h.now);
                }
                Step::Complete(itt, len, sense) => h.c.complete_command(TaskId(itt), CommandResponse {
                    status: if sense { 2 } else { 0 },
                    sense: sense.then(|| Bytes::from_static(&[0x70, 0, 5])),
                    data_in: Bytes::from(vec![0u8; len as usize]),
                    data_out_len: Some(len),
                }, h.now),
                Step::Tmf(itt, code) => {
                    let c = [TmfResponseCode::FunctionComplete, TmfResponseCode::TaskDoesNotExist, TmfResponseCode::Rejected, TmfResponseCode::NotSupported];
                    h.c.complete_task_management(TmfId(itt), c[(code % 4) as usize], h.now)
                }
                Step::Tick(s) => { h.now += Duration::from_secs(s); h.c.handle_timeout(h.now); }
                Step::Gate(open) => h.c.set_intake_open(open),
            }
            let events = h.events();
            let out = h.out();
            prop_assert!(h.c.in_use <= 8);
            prop_assert!(h.c.ordered.len() <= 8);
            prop_assert!(h.c.held.iter().all(|itt| h.c.tasks.get(itt).is_some_and(|t| !t.delivered)));
            prop_assert_eq!(h.c.buffered_write_bytes(), walk_buffered(&h.c));
            if h.c.is_closed() {
                prop_assert_eq!(h.c.buffered_write_bytes(), 0);
            }
            if h.c.intake_open {
                prop_assert!(h.c.held.is_empty());
            } else if closed_before {
                prop_assert!(!events.iter().any(|e| matches!(e, Event::ScsiCommand(_))), "delivered while closed");
                prop_assert!(!out.iter().any(|p| matches!(p, Pdu::R2t(_))), "R2T while closed");
                prop_assert_eq!(h.c.max_cmd_sn, max_before, "MaxCmdSN advanced while closed");
            }
        }
    }
}

#[test]
fn text_request_continued_by_initiator() {
    let mut h = H::new(Limits::default());
    h.std_login();
    let mut req = TextRequest {
        immediate: true,
        final_: false,
        cont: true,
        lun: 0,
        itt: 41,
        ttt: RESERVED_TAG,
        cmd_sn: h.cmd_sn,
        exp_stat_sn: 0,
        data: Bytes::from_static(b"SendTar"),
    };
    h.feed(Pdu::TextRequest(req.clone())).unwrap();
    let out = h.out();
    let [Pdu::TextResponse(ack)] = out.as_slice() else {
        panic!()
    };
    assert!(!ack.final_ && ack.data.is_empty() && ack.ttt != RESERVED_TAG);
    req.cont = false;
    req.final_ = true;
    req.ttt = ack.ttt;
    req.data = Bytes::from_static(b"gets=All\0");
    h.feed(Pdu::TextRequest(req.clone())).unwrap();
    let out = h.out();
    let [Pdu::TextResponse(r)] = out.as_slice() else {
        panic!()
    };
    assert!(r.final_);
    assert!(r
        .data
        .starts_with(b"TargetName=iqn.2024-01.org.example:disk1\0"));
    // a stale TTT is rejected
    h.feed(Pdu::TextRequest(req)).unwrap();
    assert!(matches!(
        h.out().as_slice(),
        [Pdu::Reject(Reject { reason: 9, .. })]
    ));
}

#[test]
fn immediate_data_rules() {
    let mut h = H::new(Limits::default());
    h.login(&["ImmediateData=No", "InitialR2T=Yes"]);
    let c = h.cmd(false, true, 512, Bytes::from(vec![0; 512]), true);
    h.feed(Pdu::ScsiCommand(c)).unwrap();
    assert!(matches!(
        h.out().as_slice(),
        [Pdu::Reject(Reject { reason: 4, .. })]
    ));
    let c = h.cmd(false, true, 512, Bytes::new(), false);
    h.feed(Pdu::ScsiCommand(c)).unwrap();
    assert!(
        matches!(h.out().as_slice(), [Pdu::Reject(Reject { reason: 4, .. })]),
        "unsolicited with InitialR2T=Yes"
    );
    assert!(h.events().is_empty());
}

#[test]
fn connection_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Connection>();
}

/// Hides disk2 from one initiator.
struct HideDisk2;
impl LoginPolicy for HideDisk2 {
    fn check(&self, _req: &LoginInfo) -> Result<u16, LoginRejection> {
        Ok(5)
    }
    fn may_discover(&self, initiator: &str, target: &str) -> bool {
        !(initiator == "iqn.2024-01.test:hidden" && target.ends_with(":disk2"))
    }
}

#[test]
fn sendtargets_lists_only_what_the_policy_allows() {
    for (initiator, want) in [
        ("iqn.2024-01.test:hidden", 2usize),
        ("iqn.2024-01.test:sees-all", 4),
    ] {
        let now = Instant::now();
        let mut c = Connection::new(config(Limits::default()), now);
        let login = Pdu::LoginRequest(LoginRequest {
            transit: true,
            cont: false,
            csg: 1,
            nsg: 3,
            version_max: 0,
            version_min: 0,
            isid: [0; 6],
            tsih: 0,
            itt: 1,
            cid: 0,
            cmd_sn: 1,
            exp_stat_sn: 0,
            data: kv(&[
                &format!("InitiatorName={initiator}"),
                "SessionType=Discovery",
            ]),
        });
        let text = Pdu::TextRequest(TextRequest {
            immediate: true,
            final_: true,
            cont: false,
            lun: 0,
            itt: 2,
            ttt: RESERVED_TAG,
            cmd_sn: 1,
            exp_stat_sn: 1,
            data: kv(&["SendTargets=All"]),
        });
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&login.to_bytes(false, false));
        buf.extend_from_slice(&text.to_bytes(false, false));
        c.handle_input(&mut buf, &HideDisk2, now).unwrap();
        let mut parts = Vec::new();
        while c.poll_transmit(&mut parts) {}
        let mut rx = BytesMut::new();
        for p in parts {
            rx.extend_from_slice(&p);
        }
        let cfg = FrameConfig {
            header_digest: false,
            data_digest: false,
            max_recv_data_segment_length: 1 << 24,
        };
        let mut answer = None;
        while let Some(p) = next_pdu(&mut rx, &cfg).unwrap() {
            if let Pdu::TextResponse(r) = p {
                answer = Some(r.data);
            }
        }
        let pairs = crate::text::parse_multi(&answer.unwrap()).unwrap();
        assert_eq!(pairs.len(), want, "{initiator}: {pairs:?}");
        assert!(pairs.iter().all(|p| !p.value.contains(":disk2")) || want == 4);
    }
}

fn tmf_pdu(itt: u32, function: u8, rtt: u32, cmd_sn: u32, ref_cmd_sn: u32) -> Pdu {
    Pdu::TaskMgmtRequest(TaskMgmtRequest {
        immediate: true,
        function,
        lun: 0,
        itt,
        rtt,
        cmd_sn,
        exp_stat_sn: 0,
        ref_cmd_sn,
        exp_data_sn: 0,
    })
}

fn command_itts(ev: &[Event]) -> Vec<u32> {
    ev.iter()
        .map(|e| match e {
            Event::ScsiCommand(c) => c.task.0,
            other => panic!("expected only commands, got {other:?}"),
        })
        .collect()
}

#[test]
fn closed_intake_holds_commands_but_answers_nop_and_task_management() {
    let mut h = H::new(Limits {
        cmdsn_window: 5,
        ..Limits::default()
    });
    assert_eq!(h.std_login().sn.max_cmd_sn, 104);
    let a = h.cmd(true, false, 512, Bytes::new(), true); // 100, runs before the gate closes
    h.feed(Pdu::ScsiCommand(a.clone())).unwrap();
    assert_eq!(h.only_command().task, TaskId(a.itt));

    h.c.set_intake_open(false);
    let b = h.cmd(true, false, 512, Bytes::new(), true); // 101
    let c = h.cmd(true, false, 512, Bytes::new(), true); // 102
    let d = h.cmd(true, false, 512, Bytes::new(), true); // 103
    for x in [&c, &b, &d] {
        h.feed(Pdu::ScsiCommand(x.clone())).unwrap();
    }
    assert!(h.events().is_empty(), "new commands are held");
    assert!(h.out().is_empty());
    assert!(h.c.intake_waiting());

    // A NOP-Out ordered after the held commands is still answered.
    let nop_sn = h.cmd_sn;
    h.cmd_sn += 1;
    h.feed(Pdu::NopOut(NopOut {
        immediate: false,
        lun: 0,
        itt: 77,
        ttt: RESERVED_TAG,
        cmd_sn: nop_sn,
        exp_stat_sn: 0,
        data: Bytes::new(),
    }))
    .unwrap();
    let out = h.out();
    let [Pdu::NopIn(n)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(n.itt, 77);
    assert_eq!(n.sn.exp_cmd_sn, 105);
    assert_eq!(
        n.sn.max_cmd_sn, 104,
        "MaxCmdSN does not advance while closed"
    );

    // ABORT TASK for the running command goes to the gateway and is answered.
    h.feed(tmf_pdu(500, 1, a.itt, h.cmd_sn, a.cmd_sn)).unwrap();
    let ev = h.events();
    let [Event::TaskManagement(t)] = ev.as_slice() else {
        panic!("{ev:?}")
    };
    assert_eq!(t.referenced_task, Some(TaskId(a.itt)));
    h.c.complete_task_management(t.id, TmfResponseCode::FunctionComplete, h.now);
    // ABORT TASK for a held command is done here: it is never delivered.
    h.feed(tmf_pdu(501, 1, c.itt, h.cmd_sn, c.cmd_sn)).unwrap();
    assert!(h.events().is_empty());
    let out = h.out();
    let codes: Vec<(u32, u8, u32)> = out
        .iter()
        .map(|p| match p {
            Pdu::TaskMgmtResponse(r) => (r.itt, r.response, r.sn.max_cmd_sn),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(codes, vec![(500, 0, 104), (501, 0, 104)]);

    // Reopening delivers the rest in CmdSN order and announces the window.
    h.c.set_intake_open(true);
    assert!(!h.c.intake_waiting());
    assert_eq!(command_itts(&h.events()), vec![b.itt, d.itt]);
    let out = h.out();
    let [Pdu::NopIn(n)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!((n.itt, n.ttt), (RESERVED_TAG, RESERVED_TAG));
    assert_eq!(n.sn.exp_cmd_sn, 105);
    assert_eq!(n.sn.max_cmd_sn, 107, "ExpCmdSN + 5 - 2 in use - 1");
    // Announced once; the StatSN of the next response was not consumed by it.
    h.c.set_intake_open(false);
    h.c.set_intake_open(true);
    assert!(h.out().is_empty());
    h.c.complete_command(TaskId(b.itt), CommandResponse::default(), h.now);
    let out = h.out();
    let [Pdu::ScsiResponse(r)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(r.sn.stat_sn, n.sn.stat_sn);
}

#[test]
fn closed_intake_bounds_held_commands_by_the_window() {
    let mut h = H::new(Limits {
        cmdsn_window: 4,
        ..Limits::default()
    });
    h.std_login();
    h.c.set_intake_open(false);
    let cmds: Vec<ScsiCommandPdu> = (0..6)
        .map(|_| h.cmd(true, false, 512, Bytes::new(), true))
        .collect();
    for c in &cmds {
        h.feed(Pdu::ScsiCommand(c.clone())).unwrap();
    }
    assert!(h.events().is_empty());
    h.c.set_intake_open(true);
    let itts: Vec<u32> = cmds.iter().take(4).map(|c| c.itt).collect();
    assert_eq!(
        command_itts(&h.events()),
        itts,
        "beyond MaxCmdSN commands are dropped, not queued"
    );
}

#[test]
fn closed_intake_holds_r2ts_but_takes_solicited_data() {
    let mut h = H::new(Limits::default());
    h.login(&[
        "InitialR2T=Yes",
        "ImmediateData=No",
        "MaxRecvDataSegmentLength=8192",
        "MaxBurstLength=262144",
        "FirstBurstLength=65536",
        "MaxOutstandingR2T=2",
    ]);
    h.c.set_intake_open(false);
    let w = h.cmd(false, true, 8192, Bytes::new(), true);
    h.feed(Pdu::ScsiCommand(w.clone())).unwrap();
    assert!(h.out().is_empty(), "no R2T while closed");
    assert_eq!(
        h.c.buffered_write_bytes(),
        0,
        "nothing solicited, no buffer"
    );
    assert!(h.c.intake_waiting());
    h.c.set_intake_open(true);
    let out = h.out();
    let [Pdu::R2t(r)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!((r.itt, r.buffer_offset, r.desired_length), (w.itt, 0, 8192));
    assert_eq!(h.c.buffered_write_bytes(), 8192);

    // The gate closes again before the data arrives: it is still taken, the command held.
    h.c.set_intake_open(false);
    let data = Bytes::from(vec![3u8; 8192]);
    h.feed(H::data_out(w.itt, r.ttt, 0, 0, data.clone(), true))
        .unwrap();
    assert!(h.events().is_empty());
    assert!(h.out().is_empty());
    assert_eq!(h.c.buffered_write_bytes(), 8192);
    h.c.set_intake_open(true);
    let cmd = h.only_command();
    assert_eq!(cmd.data_out, DataOut::Complete(data));
    assert_eq!(h.c.buffered_write_bytes(), 0);
}

#[test]
fn a_held_command_that_fails_leaves_the_queue() {
    let mut h = H::new(Limits::default());
    h.std_login();
    h.c.set_intake_open(false);
    let data = Bytes::from(vec![1u8; 512]);
    let w = h.cmd(false, true, 512, data.clone(), true);
    h.feed(Pdu::ScsiCommand(w.clone())).unwrap();
    assert!(h.c.intake_waiting(), "complete write held");
    // Unsolicited data after the F bit: the held command fails at once.
    h.feed(H::data_out(w.itt, RESERVED_TAG, 0, 0, data, true))
        .unwrap();
    let out = h.out();
    assert!(matches!(out.as_slice(), [Pdu::Reject(_), Pdu::ScsiResponse(r)] if r.status == 2));
    assert!(h.c.held.is_empty());
    assert!(
        h.c.intake_waiting(),
        "the slot it freed is a window still to announce"
    );
    h.c.set_intake_open(true);
    assert!(h.events().is_empty());
    assert!(matches!(h.out().as_slice(), [Pdu::NopIn(n)] if n.itt == RESERVED_TAG));
}

/// A PDU received outside the input buffer as header and tail (`handle_split_frame`, the
/// gateway's aligned receive of large data segments) is taken exactly as `handle_input`
/// would take it. A corrupt data digest gets a Reject and the connection goes on; parts that
/// are not one whole PDU (cut short, or split anywhere but where the data segment starts) or
/// a corrupt header digest close the connection.
#[test]
fn frames_received_outside_the_input_buffer() {
    // BHS and header digest: where the data segment starts.
    const DATA_AT: usize = 48 + 4;
    fn feed(h: &mut H, wire: Bytes, at: usize) -> Result<(), ConnectionError> {
        let now = h.now;
        h.c.handle_split_frame(&wire[..at], wire.slice(at..), &Allow, now)
    }
    let payload = Bytes::from((0..8192u32).map(|i| (i % 253) as u8).collect::<Vec<_>>());
    let wire = |h: &mut H| {
        let c = h.cmd(false, true, 8192, payload.clone(), true);
        Pdu::ScsiCommand(c).to_bytes(true, true)
    };
    let digests = ["HeaderDigest=CRC32C,None", "DataDigest=CRC32C,None"];
    // Not whole: the tail cut short, or split one byte late.
    for not_whole in ["cut short", "split late"] {
        let mut h = H::new(Limits::default());
        h.login(&digests);
        let w = wire(&mut h);
        feed(&mut h, w, DATA_AT).unwrap();
        let cmd = h.only_command();
        assert_eq!(cmd.data_out, DataOut::Complete(payload.clone()));

        let mut bad = BytesMut::from(&wire(&mut h)[..]);
        let n = bad.len();
        bad[n - 1] ^= 0xff;
        feed(&mut h, bad.freeze(), DATA_AT).unwrap();
        let out = h.out();
        assert!(
            matches!(out.as_slice(), [Pdu::Reject(Reject { reason: 2, .. })]),
            "{out:?}"
        );
        assert!(!h.c.is_closed());

        let w = wire(&mut h);
        let r = match not_whole {
            "cut short" => feed(&mut h, w.slice(..w.len() - 4), DATA_AT),
            _ => feed(&mut h, w, DATA_AT + 1),
        };
        assert!(r.is_err(), "{not_whole}");
        assert!(h.c.is_closed());
    }

    let mut h = H::new(Limits::default());
    h.login(&digests);
    let mut bad = BytesMut::from(&wire(&mut h)[..]);
    bad[49] ^= 0xff;
    assert!(feed(&mut h, bad.freeze(), DATA_AT).is_err());
    assert!(h.c.is_closed());
}

/// `buffered_write_bytes` is a counter; in debug builds every public entry point checks it
/// against the sum over the tasks, so these tests also catch drift on the way.
fn walk_buffered(c: &Connection) -> usize {
    c.tasks.values().map(Task::buffered_bytes).sum()
}

#[test]
fn aborting_a_write_with_partial_data_releases_its_buffer() {
    let mut h = H::new(Limits::default());
    h.std_login();
    // Immediate data and one unsolicited Data-Out of 16 KiB arrived, the rest has not.
    let a = h.cmd(false, true, 16384, Bytes::from(vec![1u8; 4096]), false);
    h.feed(Pdu::ScsiCommand(a.clone())).unwrap();
    assert_eq!(h.c.buffered_write_bytes(), 16384);
    h.feed(H::data_out(
        a.itt,
        RESERVED_TAG,
        0,
        4096,
        Bytes::from(vec![2u8; 4096]),
        false,
    ))
    .unwrap();
    assert!(h.events().is_empty() && h.out().is_empty());
    // A second write whose data is solicited by R2T, none of it arrived yet.
    let b = h.cmd(false, true, 8192, Bytes::new(), true);
    h.feed(Pdu::ScsiCommand(b.clone())).unwrap();
    assert!(matches!(h.out().as_slice(), [Pdu::R2t(_)]));
    assert_eq!(h.c.buffered_write_bytes(), 16384 + 8192);

    h.feed(tmf_pdu(600, 1, a.itt, h.cmd_sn, a.cmd_sn)).unwrap();
    assert!(h.events().is_empty(), "never delivered: aborted here");
    assert!(matches!(h.out().as_slice(), [Pdu::TaskMgmtResponse(r)] if r.response == 0));
    assert_eq!(h.c.buffered_write_bytes(), 8192);
    // Late data for the aborted task is refused and counts nothing.
    h.feed(H::data_out(
        a.itt,
        RESERVED_TAG,
        1,
        8192,
        Bytes::from(vec![2u8; 4096]),
        false,
    ))
    .unwrap();
    assert!(matches!(h.out().as_slice(), [Pdu::Reject(_)]));
    assert_eq!(h.c.buffered_write_bytes(), 8192);

    // ABORT TASK SET drops the other one the same way.
    h.feed(tmf_pdu(601, 2, RESERVED_TAG, h.cmd_sn, 0)).unwrap();
    let ev = h.events();
    assert!(
        matches!(ev.as_slice(), [Event::TaskManagement(_)]),
        "{ev:?}"
    );
    assert_eq!(h.c.buffered_write_bytes(), 0);
    assert_eq!(walk_buffered(&h.c), 0);
}

#[test]
fn held_writes_count_until_the_intake_delivers_them() {
    let mut h = H::new(Limits::default());
    h.std_login();
    h.c.set_intake_open(false);
    // All data immediate: complete at once, held.
    let one = Bytes::from(vec![5u8; 4096]);
    let a = h.cmd(false, true, 4096, one.clone(), true);
    h.feed(Pdu::ScsiCommand(a.clone())).unwrap();
    // Immediate plus unsolicited data: complete with its final Data-Out, held.
    let b = h.cmd(false, true, 8192, Bytes::from(vec![6u8; 4096]), false);
    h.feed(Pdu::ScsiCommand(b.clone())).unwrap();
    assert_eq!(h.c.buffered_write_bytes(), 4096 + 8192);
    h.feed(H::data_out(
        b.itt,
        RESERVED_TAG,
        0,
        4096,
        Bytes::from(vec![7u8; 4096]),
        true,
    ))
    .unwrap();
    assert!(h.events().is_empty() && h.out().is_empty());
    assert_eq!(h.c.held.len(), 2);
    assert_eq!(h.c.buffered_write_bytes(), 4096 + 8192);

    h.c.set_intake_open(true);
    let ev = h.events();
    assert_eq!(command_itts(&ev), vec![a.itt, b.itt]);
    let Event::ScsiCommand(cb) = &ev[1] else {
        unreachable!()
    };
    let DataOut::Complete(data) = &cb.data_out else {
        panic!("{:?}", cb.data_out)
    };
    assert!(data[..4096].iter().all(|&x| x == 6) && data[4096..].iter().all(|&x| x == 7));
    assert_eq!(
        h.c.buffered_write_bytes(),
        0,
        "delivered data is the gateway's to count"
    );
    h.c.complete_command(TaskId(a.itt), CommandResponse::default(), h.now);
    h.c.complete_command(TaskId(b.itt), CommandResponse::default(), h.now);
    assert_eq!(h.c.buffered_write_bytes(), 0);
    assert_eq!(h.out().len(), 2);
}

#[test]
fn closing_releases_write_data_of_undelivered_commands() {
    for fatal in [false, true] {
        let mut h = H::new(Limits::default());
        h.std_login();
        // A delivered read, a write still receiving data, and a complete write held.
        let r = h.cmd(true, false, 512, Bytes::new(), true);
        h.feed(Pdu::ScsiCommand(r.clone())).unwrap();
        h.only_command();
        let partial = h.cmd(false, true, 16384, Bytes::from(vec![1u8; 4096]), false);
        h.feed(Pdu::ScsiCommand(partial)).unwrap();
        h.c.set_intake_open(false);
        let held = h.cmd(false, true, 4096, Bytes::from(vec![2u8; 4096]), true);
        h.feed(Pdu::ScsiCommand(held)).unwrap();
        assert_eq!(h.c.buffered_write_bytes(), 16384 + 4096);

        if fatal {
            // A header that is not an iSCSI PDU: fatal framing error.
            let mut garbage = BytesMut::from(&[0xffu8; 48][..]);
            assert!(h.c.handle_input(&mut garbage, &Allow, h.now).is_err());
        } else {
            h.c.close(CloseReason::Shutdown);
        }
        assert!(h.c.is_closed());
        assert_eq!(h.c.buffered_write_bytes(), 0);
        assert!(h.c.held.is_empty());
        // Reopening the gate after the close delivers nothing.
        h.c.set_intake_open(true);
        assert!(h.events().is_empty());
        // The delivered read still completes (ignored: the connection is closed).
        h.c.complete_command(TaskId(r.itt), CommandResponse::default(), h.now);
        assert!(h.c.tasks.is_empty());
        assert_eq!(h.c.buffered_write_bytes(), 0);
    }
}
