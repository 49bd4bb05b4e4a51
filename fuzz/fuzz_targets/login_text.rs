//! Fuzzes login text handling end to end: the key=value parser on its own, then a whole
//! login exchange where the first Login Request carries the fuzz input as its text and any
//! further input arrives as raw bytes on the same connection. A panic anywhere is a bug.
#![no_main]
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use iscsi::pdu::{LoginRequest, Pdu};
use iscsi::{Connection, LoginInfo, LoginPolicy, LoginRejection, ServerConfig, TargetConfig};
use libfuzzer_sys::fuzz_target;

struct AcceptAll;
impl LoginPolicy for AcceptAll {
    fn check(&self, _req: &LoginInfo) -> Result<u16, LoginRejection> {
        Ok(1)
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = iscsi::text::parse(data);
    let _ = iscsi::text::parse_multi(data);

    let (text, rest) = data.split_at(data.len().min(8192));
    let config = ServerConfig {
        targets: vec![TargetConfig {
            name: "iqn.2026-11.org.example:fuzz".into(),
            alias: None,
            tpgt: 1,
            portals: vec!["127.0.0.1:3260".into()],
        }],
        ..ServerConfig::default()
    };
    let now = Instant::now();
    let mut conn = Connection::new(Arc::new(config), now);
    let login = Pdu::LoginRequest(LoginRequest {
        transit: true,
        cont: false,
        csg: 1,
        nsg: 3,
        version_max: 0,
        version_min: 0,
        isid: [0x80, 0, 0, 0, 0, 1],
        tsih: 0,
        itt: 1,
        cid: 0,
        cmd_sn: 0,
        exp_stat_sn: 0,
        data: Bytes::copy_from_slice(text),
    });
    let mut buf = BytesMut::from(&login.to_bytes(false, false)[..]);
    buf.extend_from_slice(rest);
    let _ = conn.handle_input(&mut buf, &AcceptAll, now);
    let mut out = Vec::new();
    while conn.poll_transmit(&mut out) {}
    while conn.poll_event().is_some() {}
});
