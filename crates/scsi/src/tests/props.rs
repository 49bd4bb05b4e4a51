//! Property tests: arbitrary CDBs and data never panic, always finish within a bounded
//! number of I/O steps, and always yield a well-formed response; I/O stays inside
//! the medium.

use bytes::Bytes;
use proptest::prelude::*;

use super::harness::{arb_cdb as harness_arb_cdb, *};
use crate::{BlockRequest, Command, Step};

/// Operation codes worth hitting often (supported ones plus a few unsupported).
const OPCODES: &[u8] = &[
    0x00, 0x03, 0x08, 0x0A, 0x12, 0x15, 0x16, 0x17, 0x1A, 0x1B, 0x25, 0x28, 0x2A, 0x2E, 0x2F, 0x34,
    0x35, 0x41, 0x42, 0x55, 0x56, 0x57, 0x5A, 0x5E, 0x5F, 0x88, 0x89, 0x8A, 0x8B, 0x8E, 0x8F, 0x90,
    0x91, 0x93, 0x9E, 0xA0, 0xA3, 0xA8, 0xAA, 0xAE, 0xAF, 0x48, 0x83,
];

fn arb_cdb() -> impl Strategy<Value = Vec<u8>> {
    harness_arb_cdb(OPCODES, 0..16, 2)
}

fn check_response(r: &crate::Response) {
    match r.status {
        0x00 => assert!(r.sense.is_none()),
        0x02 => {
            let s = r.sense.as_ref().expect("sense for CHECK CONDITION");
            assert!(
                matches!(s[0], 0x70 | 0xF0 | 0x72),
                "response code {:#x}",
                s[0]
            );
            assert!(s.len() >= 8);
        }
        0x18 => assert!(r.sense.is_none()),
        s => panic!("unexpected status {s:#x}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_cdbs_always_complete_validly(
        cdb in arb_cdb(),
        data in proptest::collection::vec(any::<u8>(), 0..2048),
        second in any::<bool>(),
    ) {
        let mut rig = Rig::new();
        let n = nexus(if second { 2 } else { 1 });
        rig.clear_ua(&n);
        let cmd = Command::with_data(&cdb, Bytes::from(data));
        let mut t = rig.lun.start(&n, &cmd);
        let mut step = t.poll(None);
        let mut steps = 0;
        let limit = rig.disk.data.len() as u64;
        let r = loop {
            match step {
                Step::Done(r) => break r,
                Step::Io(req) => {
                    steps += 1;
                    prop_assert!(steps < 10_000);
                    match &req {
                        BlockRequest::Read { offset, len } => prop_assert!(offset + u64::from(*len) <= limit),
                        BlockRequest::Write { offset, data, .. } => {
                            prop_assert!(offset + data.len() as u64 <= limit);
                            prop_assert!(data.len() as u64 <= crate::CHUNK_BYTES.max(1024 * 512));
                        }
                        BlockRequest::Discard { offset, len }
                        | BlockRequest::WriteZeroes { offset, len, .. }
                        | BlockRequest::MappingStatus { offset, len } => prop_assert!(offset + len <= limit),
                        BlockRequest::Flush => {}
                    }
                    let c = rig.disk.complete(&req);
                    step = t.poll(Some(c));
                }
            }
        };
        check_response(&r);
        // The task keeps answering the same response.
        prop_assert_eq!(t.poll(None), Step::Done(r));
    }

    #[test]
    fn fuzz_entry_point_never_panics(reservations in 0..crate::fuzz::RESERVATION_STATES,
                                     cdb in proptest::collection::vec(any::<u8>(), 0..20),
                                     data in proptest::collection::vec(any::<u8>(), 0..600)) {
        crate::fuzz_cdb(reservations, &cdb, &data);
    }
}
