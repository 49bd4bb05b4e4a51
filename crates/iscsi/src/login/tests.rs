//! Login state machine tests with the key lists real initiators send.

use super::*;
use crate::config::{Limits, TargetConfig};

const TARGET: &str = "iqn.2024-01.org.example:disk1";

struct Allow;
impl LoginPolicy for Allow {
    fn check(&self, _req: &LoginInfo) -> Result<u16, LoginRejection> {
        Ok(7)
    }
}

struct Deny;
impl LoginPolicy for Deny {
    fn check(&self, _req: &LoginInfo) -> Result<u16, LoginRejection> {
        Err(LoginRejection::AuthorizationFailure)
    }
}

fn config() -> Arc<ServerConfig> {
    Arc::new(ServerConfig {
        targets: vec![TargetConfig {
            name: TARGET.into(),
            alias: Some("disk1".into()),
            tpgt: 1,
            portals: vec!["192.0.2.1:3260".into()],
        }],
        limits: Limits::default(),
    })
}

fn req(csg: u8, nsg: u8, transit: bool, cont: bool, keys: &[&str]) -> LoginRequest {
    let mut data = Vec::new();
    for k in keys {
        data.extend_from_slice(k.as_bytes());
        data.push(0);
    }
    LoginRequest {
        transit,
        cont,
        csg,
        nsg,
        version_max: 0,
        version_min: 0,
        isid: [0x80, 0, 0x23, 0x45, 0, 1],
        tsih: 0,
        itt: 1,
        cid: 0,
        cmd_sn: 10,
        exp_stat_sn: 0,
        data: Bytes::from(data),
    }
}

fn keys(r: &LoginReply) -> Vec<(String, String)> {
    text::parse(&r.data)
        .unwrap()
        .into_iter()
        .map(|p| (p.key, p.value))
        .collect()
}

fn get<'a>(k: &'a [(String, String)], key: &str) -> Option<&'a str> {
    k.iter().find(|(a, _)| a == key).map(|(_, v)| v.as_str())
}

pub(crate) const OPEN_ISCSI_SECURITY: &[&str] = &[
    "InitiatorName=iqn.1993-08.org.debian:01:abcdef",
    "InitiatorAlias=pve1",
    "TargetName=iqn.2024-01.org.example:disk1",
    "SessionType=Normal",
    "AuthMethod=None",
];

pub(crate) const OPEN_ISCSI_OPERATIONAL: &[&str] = &[
    "HeaderDigest=None",
    "DataDigest=None",
    "DefaultTime2Wait=2",
    "DefaultTime2Retain=0",
    "IFMarker=No",
    "OFMarker=No",
    "ErrorRecoveryLevel=0",
    "InitialR2T=No",
    "ImmediateData=Yes",
    "MaxBurstLength=16776192",
    "FirstBurstLength=262144",
    "MaxOutstandingR2T=1",
    "MaxConnections=1",
    "DataPDUInOrder=Yes",
    "DataSequenceInOrder=Yes",
    "MaxRecvDataSegmentLength=262144",
];

#[test]
fn open_iscsi_normal_login() {
    let mut l = Login::new(config());
    let r = l.handle(&req(0, 1, true, false, OPEN_ISCSI_SECURITY), &Allow, None);
    let LoginStep::Reply(r) = r else {
        panic!("{r:?}")
    };
    assert!(r.transit);
    assert_eq!((r.csg, r.nsg, r.status_class), (0, 1, 0));
    let k = keys(&r);
    assert_eq!(get(&k, "AuthMethod"), Some("None"));
    assert_eq!(get(&k, "TargetPortalGroupTag"), Some("1"));
    assert_eq!(r.tsih, 0, "TSIH only in the final response");

    let r = l.handle(
        &req(1, 3, true, false, OPEN_ISCSI_OPERATIONAL),
        &Allow,
        None,
    );
    let LoginStep::Complete(r, s) = r else {
        panic!("{r:?}")
    };
    assert_eq!((r.csg, r.nsg, r.tsih), (1, 3, 7));
    let k = keys(&r);
    assert_eq!(get(&k, "HeaderDigest"), Some("None"));
    assert_eq!(get(&k, "InitialR2T"), Some("No"));
    assert_eq!(get(&k, "MaxBurstLength"), Some("1048576"));
    assert_eq!(get(&k, "FirstBurstLength"), Some("262144"));
    assert_eq!(get(&k, "MaxOutstandingR2T"), Some("1"));
    assert_eq!(get(&k, "MaxRecvDataSegmentLength"), Some("262144"));
    assert_eq!(get(&k, "IFMarker"), Some("No"));
    assert_eq!(s.session_type, SessionType::Normal);
    assert_eq!(s.target_name.as_deref(), Some(TARGET));
    assert_eq!(s.initiator_alias.as_deref(), Some("pve1"));
    assert_eq!(s.params.initiator_max_recv_data_segment_length, 262144);
    assert!(!s.params.initial_r2t);
}

#[test]
fn libiscsi_login_starts_in_operational_stage() {
    let mut keys_v: Vec<&str> = vec![
        "InitiatorName=iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test",
        "TargetName=iqn.2024-01.org.example:disk1",
        "SessionType=Normal",
        "HeaderDigest=None,CRC32C",
        "DataDigest=None,CRC32C",
    ];
    keys_v.extend_from_slice(&OPEN_ISCSI_OPERATIONAL[2..]);
    let mut l = Login::new(config());
    let r = l.handle(&req(1, 3, true, false, &keys_v), &Allow, None);
    let LoginStep::Complete(r, s) = r else {
        panic!("{r:?}")
    };
    let k = keys(&r);
    assert_eq!(get(&k, "TargetPortalGroupTag"), Some("1"));
    assert_eq!(get(&k, "HeaderDigest"), Some("None"));
    assert!(!s.params.header_digest);
}

#[test]
fn discovery_login() {
    let mut l = Login::new(config());
    let sec = [
        "InitiatorName=iqn.1993-08.org.debian:01:abcdef",
        "SessionType=Discovery",
        "AuthMethod=None",
    ];
    let LoginStep::Reply(r) = l.handle(&req(0, 1, true, false, &sec), &Allow, None) else {
        panic!()
    };
    assert!(get(&keys(&r), "TargetPortalGroupTag").is_none());
    let op = [
        "HeaderDigest=None",
        "DataDigest=None",
        "DefaultTime2Wait=2",
        "DefaultTime2Retain=0",
        "IFMarker=No",
        "OFMarker=No",
        "ErrorRecoveryLevel=0",
        "MaxRecvDataSegmentLength=32768",
        "InitialR2T=No",
    ];
    let LoginStep::Complete(r, s) = l.handle(&req(1, 3, true, false, &op), &Allow, None) else {
        panic!()
    };
    let k = keys(&r);
    assert_eq!(get(&k, "InitialR2T"), Some("Irrelevant"));
    assert_eq!(s.session_type, SessionType::Discovery);
    assert_eq!(s.target_name, None);
}

#[test]
fn continued_text() {
    let mut l = Login::new(config());
    let mut a = req(1, 3, false, true, &["InitiatorName=iqn.x"]);
    // split a key in the middle across PDUs
    a.data = Bytes::from_static(b"InitiatorName=iqn.x\0TargetName=iqn.2024-01.org.exa");
    let LoginStep::Reply(r) = l.handle(&a, &Allow, None) else {
        panic!()
    };
    assert!(!r.transit && r.data.is_empty());
    let mut b = req(1, 3, true, false, &[]);
    b.data = Bytes::from_static(b"mple:disk1\0SessionType=Normal\0");
    let step = l.handle(&b, &Allow, None);
    assert!(matches!(step, LoginStep::Complete(..)), "{step:?}");
}

#[test]
fn failures() {
    let cases: Vec<(Vec<&str>, (u8, u8))> = vec![
        (vec!["TargetName=iqn.2024-01.org.example:disk1"], (2, 7)),
        (vec!["InitiatorName=iqn.x"], (2, 7)),
        (vec!["InitiatorName=iqn.x", "TargetName=iqn.nope"], (2, 3)),
        (vec!["InitiatorName=iqn.x", "SessionType=Weird"], (2, 9)),
        (
            vec![
                "InitiatorName=iqn.x",
                "SessionType=Discovery",
                "AuthMethod=CHAP",
            ],
            (2, 1),
        ),
        (vec!["garbage"], (2, 0)),
    ];
    for (k, want) in cases {
        let mut l = Login::new(config());
        let step = l.handle(&req(0, 1, true, false, &k), &Allow, None);
        let LoginStep::Fail(r) = step else {
            panic!("{k:?}: {step:?}")
        };
        assert_eq!((r.status_class, r.status_detail), want, "{k:?}");
    }
    let mut l = Login::new(config());
    let LoginStep::Fail(r) = l.handle(&req(0, 1, true, false, OPEN_ISCSI_SECURITY), &Deny, None)
    else {
        panic!()
    };
    assert_eq!((r.status_class, r.status_detail), (2, 2));
    // unsupported version
    let mut l = Login::new(config());
    let mut q = req(0, 1, true, false, OPEN_ISCSI_SECURITY);
    q.version_min = 2;
    q.version_max = 2;
    let LoginStep::Fail(r) = l.handle(&q, &Allow, None) else {
        panic!()
    };
    assert_eq!((r.status_class, r.status_detail), (2, 5));
    // wrong stage after security
    let mut l = Login::new(config());
    let _ = l.handle(&req(0, 0, false, false, OPEN_ISCSI_SECURITY), &Allow, None);
    let LoginStep::Fail(r) = l.handle(&req(1, 3, true, false, &[]), &Allow, None) else {
        panic!()
    };
    assert_eq!((r.status_class, r.status_detail), (2, 0x0b));
}

#[test]
fn unknown_keys_not_understood() {
    let mut l = Login::new(config());
    let mut k = OPEN_ISCSI_SECURITY.to_vec();
    k.push("X-com.example.Foo=1");
    k.push("Bogus=2");
    let LoginStep::Reply(r) = l.handle(&req(0, 1, true, false, &k), &Allow, None) else {
        panic!()
    };
    let k = keys(&r);
    assert_eq!(get(&k, "X-com.example.Foo"), Some("NotUnderstood"));
    assert_eq!(get(&k, "Bogus"), Some("NotUnderstood"));
}

struct FakeChap(u8);
impl Authenticator for FakeChap {
    fn method(&self) -> &str {
        "CHAP"
    }
    fn step(&mut self, _info: &LoginInfo, keys: &[Pair]) -> Result<AuthStep, LoginRejection> {
        self.0 += 1;
        match self.0 {
            1 => Ok(AuthStep::Continue(vec![("CHAP_A".into(), "5".into())])),
            _ if keys.iter().any(|p| p.key == "CHAP_R" && p.value == "0x01") => {
                Ok(AuthStep::Done(vec![]))
            }
            _ => Err(LoginRejection::AuthenticationFailure),
        }
    }
}

#[test]
fn authenticator_seam() {
    let mut l = Login::new(config());
    let mut chap = FakeChap(0);
    let mut k = OPEN_ISCSI_SECURITY.to_vec();
    k[4] = "AuthMethod=CHAP,None";
    let LoginStep::Reply(r) = l.handle(&req(0, 1, false, false, &k), &Allow, Some(&mut chap))
    else {
        panic!()
    };
    assert_eq!(get(&keys(&r), "AuthMethod"), Some("CHAP"));
    assert_eq!(get(&keys(&r), "CHAP_A"), Some("5"));
    let step = l.handle(
        &req(0, 1, true, false, &["CHAP_N=u", "CHAP_R=0x01"]),
        &Allow,
        Some(&mut chap),
    );
    let LoginStep::Reply(r) = step else {
        panic!("{step:?}")
    };
    assert!(r.transit);
    // skipping authentication is refused when an authenticator is configured
    let mut l = Login::new(config());
    let mut chap = FakeChap(0);
    let step = l.handle(&req(1, 3, true, false, &k[..4]), &Allow, Some(&mut chap));
    assert!(matches!(
        step,
        LoginStep::Fail(LoginReply {
            status_detail: 1,
            ..
        })
    ));
}
