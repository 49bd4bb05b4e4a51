//! Fuzzes the iSCSI PDU framing and decoder (BHS, AHS, data segment, padding, digests)
//! with arbitrary bytes from the wire. A panic anywhere is a bug.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    iscsi::pdu::decode_pdu_for_fuzz(data);
});
