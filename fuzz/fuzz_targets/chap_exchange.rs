//! Fuzzes the CHAP exchange with untrusted key values: the input is split at 0xFF bytes into
//! the texts of successive Login Requests. Each text goes (1) straight to a ChapAuthenticator
//! (one-way or mutual, chosen by the first byte) and (2) through a whole Connection whose
//! policy requires CHAP, as Login Request PDUs in the security stage. A panic is a bug, and
//! so is a login that reaches full feature phase without a correct response.
#![no_main]
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use iscsi::pdu::{LoginRequest, Pdu};
use iscsi::{
    AuthStep, Authenticator, ChapAlgorithm, ChapAuthenticator, ChapConfig, ChapCredentials,
    ChapSecret, Connection, Event, LoginInfo, LoginPolicy, LoginRejection, ServerConfig,
    SessionType, TargetConfig, CHAP_RANDOM_LEN,
};
use libfuzzer_sys::fuzz_target;

const TARGET: &str = "iqn.2026-11.org.example:fuzz";

fn chap(mutual: bool) -> Arc<ChapConfig> {
    Arc::new(ChapConfig {
        initiator: ChapCredentials {
            name: "user".into(),
            secret: ChapSecret::new("fuzz-secret-0001"),
        },
        target: mutual.then(|| ChapCredentials {
            name: TARGET.into(),
            secret: ChapSecret::new("fuzz-target-secret"),
        }),
        algorithms: vec![ChapAlgorithm::Sha256, ChapAlgorithm::Md5],
    })
}

struct RequireChap(Arc<ChapConfig>);
impl LoginPolicy for RequireChap {
    fn check(&self, _req: &LoginInfo) -> Result<u16, LoginRejection> {
        Ok(1)
    }
    fn authenticator(&self, _req: &LoginInfo) -> Option<Box<dyn Authenticator>> {
        Some(Box::new(ChapAuthenticator::new(self.0.clone(), [7; CHAP_RANDOM_LEN])))
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let cfg = chap(first & 1 == 1);
    let info = LoginInfo {
        initiator_name: "iqn.2026-11.org.example:i".into(),
        initiator_alias: None,
        isid: [0x80, 0, 0, 0, 0, 1],
        tsih: 0,
        cid: 0,
        target_name: Some(TARGET.into()),
        session_type: SessionType::Normal,
    };
    let mut auth = ChapAuthenticator::new(cfg.clone(), [first; CHAP_RANDOM_LEN]);
    for text in rest.split(|b| *b == 0xff).take(8) {
        if let Ok(pairs) = iscsi::text::parse(text) {
            if let Ok(AuthStep::Done(_)) = auth.step(&info, &pairs) {
                assert!(auth.succeeded());
            }
        }
    }

    let config = ServerConfig {
        targets: vec![TargetConfig {
            name: TARGET.into(),
            alias: None,
            tpgt: 1,
            portals: vec!["127.0.0.1:3260".into()],
        }],
        ..ServerConfig::default()
    };
    let now = Instant::now();
    let mut conn = Connection::new(Arc::new(config), now);
    let policy = RequireChap(cfg);
    let mut buf = BytesMut::new();
    let mut head = format!("InitiatorName={}\0TargetName={TARGET}\0", info.initiator_name).into_bytes();
    for (i, text) in rest.split(|b| *b == 0xff).take(8).enumerate() {
        let mut body = if i == 0 { std::mem::take(&mut head) } else { Vec::new() };
        body.extend_from_slice(text);
        let login = Pdu::LoginRequest(LoginRequest {
            transit: first & 2 == 2 || i > 0,
            cont: false,
            csg: 0,
            nsg: if first & 4 == 4 { 3 } else { 1 },
            version_max: 0,
            version_min: 0,
            isid: info.isid,
            tsih: 0,
            itt: i as u32,
            cid: 0,
            cmd_sn: 0,
            exp_stat_sn: i as u32,
            data: Bytes::from(body),
        });
        buf.extend_from_slice(&login.to_bytes(false, false));
    }
    let _ = conn.handle_input(&mut buf, &policy, now);
    let mut out = Vec::new();
    while conn.poll_transmit(&mut out) {}
    // The right response is a digest of a secret the input does not know (compared in
    // constant time, so coverage feedback cannot lead there): no session may come up.
    while let Some(ev) = conn.poll_event() {
        assert!(
            !matches!(ev, Event::SessionEstablished(_)),
            "login completed without a valid CHAP response"
        );
    }
});
