//! Operational key negotiation (RFC 7143 §13): one rule per standard key, applied to the
//! initiator's offer and our limits, producing the answer to send and the value in force.

use crate::config::{Limits, SessionParams, SessionType};
use crate::text::{bool_str, parse_bool, parse_list, parse_number, MAX_STD_VALUE_LEN};

/// Result of looking at one key offered by the initiator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOutcome {
    /// Send this answer value.
    Answer(String),
    /// Declarative key with nothing to answer.
    Silent,
}

const SEG_MIN: u64 = 512;
const SEG_MAX: u64 = (1 << 24) - 1;

fn reject() -> KeyOutcome {
    KeyOutcome::Answer("Reject".into())
}

fn irrelevant() -> KeyOutcome {
    KeyOutcome::Answer("Irrelevant".into())
}

fn num_in(v: &str, lo: u64, hi: u64) -> Option<u64> {
    parse_number(v).filter(|n| (lo..=hi).contains(n))
}

/// Keys that only mean something in a Normal session.
fn normal_only(key: &str) -> bool {
    matches!(
        key,
        "MaxConnections"
            | "InitialR2T"
            | "ImmediateData"
            | "MaxBurstLength"
            | "FirstBurstLength"
            | "MaxOutstandingR2T"
            | "DataPDUInOrder"
            | "DataSequenceInOrder"
    )
}

/// Whether `key` is one of the operational keys negotiated by [`negotiate`].
pub fn is_operational(key: &str) -> bool {
    normal_only(key)
        || matches!(
            key,
            "HeaderDigest"
                | "DataDigest"
                | "MaxRecvDataSegmentLength"
                | "DefaultTime2Wait"
                | "DefaultTime2Retain"
                | "ErrorRecoveryLevel"
                | "IFMarker"
                | "OFMarker"
                | "IFMarkInt"
                | "OFMarkInt"
                | "RDMAExtensions"
                | "TaskReporting"
                | "iSCSIProtocolLevel"
        )
}

fn digest(v: &str) -> Option<bool> {
    parse_list(v).find_map(|x| match x {
        "None" => Some(false),
        "CRC32C" => Some(true),
        _ => None,
    })
}

/// Negotiates one operational key. Updates `p` with the value in force.
/// Keys that are not operational return `None` so the caller can handle them.
pub fn negotiate(
    key: &str,
    value: &str,
    session: SessionType,
    limits: &Limits,
    p: &mut SessionParams,
) -> Option<KeyOutcome> {
    if !is_operational(key) {
        return None;
    }
    if value.len() > MAX_STD_VALUE_LEN {
        return Some(reject());
    }
    if matches!(value, "NotUnderstood" | "Irrelevant" | "Reject") {
        // Answers to offers we never make: nothing to say back.
        return Some(KeyOutcome::Silent);
    }
    if session == SessionType::Discovery && normal_only(key) {
        return Some(irrelevant());
    }
    let out = match key {
        "HeaderDigest" => match digest(value) {
            Some(on) => {
                p.header_digest = on;
                KeyOutcome::Answer(if on { "CRC32C" } else { "None" }.into())
            }
            None => reject(),
        },
        "DataDigest" => match digest(value) {
            Some(on) => {
                p.data_digest = on;
                KeyOutcome::Answer(if on { "CRC32C" } else { "None" }.into())
            }
            None => reject(),
        },
        "MaxConnections" => match num_in(value, 1, 65535) {
            Some(_) => {
                p.max_connections = 1;
                KeyOutcome::Answer("1".into())
            }
            None => reject(),
        },
        "InitialR2T" => match parse_bool(value) {
            Some(b) => {
                p.initial_r2t = b || limits.initial_r2t;
                KeyOutcome::Answer(bool_str(p.initial_r2t).into())
            }
            None => reject(),
        },
        "ImmediateData" => match parse_bool(value) {
            Some(b) => {
                p.immediate_data = b && limits.immediate_data;
                KeyOutcome::Answer(bool_str(p.immediate_data).into())
            }
            None => reject(),
        },
        "MaxRecvDataSegmentLength" => match num_in(value, SEG_MIN, SEG_MAX) {
            Some(n) => {
                p.initiator_max_recv_data_segment_length = n as u32;
                KeyOutcome::Answer(p.target_max_recv_data_segment_length.to_string())
            }
            None => reject(),
        },
        "MaxBurstLength" => match num_in(value, SEG_MIN, SEG_MAX) {
            Some(n) => {
                p.max_burst_length = (n as u32).min(limits.max_burst_length);
                p.first_burst_length = p.first_burst_length.min(p.max_burst_length);
                KeyOutcome::Answer(p.max_burst_length.to_string())
            }
            None => reject(),
        },
        "FirstBurstLength" => match num_in(value, SEG_MIN, SEG_MAX) {
            Some(n) => {
                p.first_burst_length = (n as u32).min(limits.first_burst_length);
                KeyOutcome::Answer(p.first_burst_length.to_string())
            }
            None => reject(),
        },
        "DefaultTime2Wait" => match num_in(value, 0, 3600) {
            Some(n) => {
                p.default_time2wait = (n as u16).max(limits.default_time2wait);
                KeyOutcome::Answer(p.default_time2wait.to_string())
            }
            None => reject(),
        },
        "DefaultTime2Retain" => match num_in(value, 0, 3600) {
            Some(n) => {
                p.default_time2retain = (n as u16).min(limits.default_time2retain);
                KeyOutcome::Answer(p.default_time2retain.to_string())
            }
            None => reject(),
        },
        "MaxOutstandingR2T" => match num_in(value, 1, 65535) {
            Some(n) => {
                p.max_outstanding_r2t = (n as u32).min(limits.max_outstanding_r2t);
                KeyOutcome::Answer(p.max_outstanding_r2t.to_string())
            }
            None => reject(),
        },
        "DataPDUInOrder" => match parse_bool(value) {
            Some(_) => {
                p.data_pdu_in_order = true;
                KeyOutcome::Answer("Yes".into())
            }
            None => reject(),
        },
        "DataSequenceInOrder" => match parse_bool(value) {
            Some(_) => {
                p.data_sequence_in_order = true;
                KeyOutcome::Answer("Yes".into())
            }
            None => reject(),
        },
        "ErrorRecoveryLevel" => match num_in(value, 0, 2) {
            Some(_) => {
                p.error_recovery_level = 0;
                KeyOutcome::Answer("0".into())
            }
            None => reject(),
        },
        // Markers (RFC 3720, removed in RFC 7143): we never use them.
        "IFMarker" | "OFMarker" => match parse_bool(value) {
            Some(_) => KeyOutcome::Answer("No".into()),
            None => reject(),
        },
        "IFMarkInt" | "OFMarkInt" => irrelevant(),
        "RDMAExtensions" => match parse_bool(value) {
            Some(_) => KeyOutcome::Answer("No".into()),
            None => reject(),
        },
        "TaskReporting" => KeyOutcome::Answer("RFC3720".into()),
        "iSCSIProtocolLevel" => match num_in(value, 0, 31) {
            Some(n) => KeyOutcome::Answer(n.min(1).to_string()),
            None => reject(),
        },
        _ => return None,
    };
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(key: &str, value: &str, limits: &Limits) -> (Option<KeyOutcome>, SessionParams) {
        let mut p = SessionParams::defaults(limits);
        let o = negotiate(key, value, SessionType::Normal, limits, &mut p);
        (o, p)
    }

    fn ans(s: &str) -> Option<KeyOutcome> {
        Some(KeyOutcome::Answer(s.into()))
    }

    #[test]
    fn rule_table() {
        let l = Limits::default();
        let cases: &[(&str, &str, &str)] = &[
            ("HeaderDigest", "None", "None"),
            ("HeaderDigest", "CRC32C,None", "CRC32C"),
            ("HeaderDigest", "None,CRC32C", "None"),
            ("HeaderDigest", "MD5", "Reject"),
            ("DataDigest", "foo,CRC32C", "CRC32C"),
            ("MaxConnections", "8", "1"),
            ("MaxConnections", "0", "Reject"),
            ("InitialR2T", "No", "No"),
            ("InitialR2T", "Yes", "Yes"),
            ("InitialR2T", "maybe", "Reject"),
            ("ImmediateData", "Yes", "Yes"),
            ("ImmediateData", "No", "No"),
            ("MaxRecvDataSegmentLength", "8192", "262144"),
            ("MaxRecvDataSegmentLength", "100", "Reject"),
            ("MaxBurstLength", "16776192", "1048576"),
            ("MaxBurstLength", "0x1000", "4096"),
            ("FirstBurstLength", "16777215", "262144"),
            ("FirstBurstLength", "65536", "65536"),
            ("FirstBurstLength", "4096", "4096"),
            ("DefaultTime2Wait", "0", "2"),
            ("DefaultTime2Wait", "10", "10"),
            ("DefaultTime2Retain", "0", "0"),
            ("DefaultTime2Retain", "60", "20"),
            ("DefaultTime2Retain", "3601", "Reject"),
            ("MaxOutstandingR2T", "1", "1"),
            ("MaxOutstandingR2T", "64", "8"),
            ("DataPDUInOrder", "No", "Yes"),
            ("DataSequenceInOrder", "No", "Yes"),
            ("ErrorRecoveryLevel", "2", "0"),
            ("ErrorRecoveryLevel", "3", "Reject"),
            ("IFMarker", "No", "No"),
            ("OFMarkInt", "2048~8192", "Irrelevant"),
        ];
        for (k, v, want) in cases {
            let (o, _) = run(k, v, &l);
            assert_eq!(o, ans(want), "{k}={v}");
        }
    }

    #[test]
    fn values_in_force() {
        let l = Limits::default();
        let (_, p) = run("InitialR2T", "No", &l);
        assert!(!p.initial_r2t);
        let strict = Limits {
            initial_r2t: true,
            immediate_data: false,
            ..Limits::default()
        };
        let (o, p) = run("InitialR2T", "No", &strict);
        assert_eq!(o, ans("Yes"));
        assert!(p.initial_r2t);
        let (o, p) = run("ImmediateData", "Yes", &strict);
        assert_eq!(o, ans("No"));
        assert!(!p.immediate_data);
        let (_, p) = run("MaxRecvDataSegmentLength", "65536", &l);
        assert_eq!(p.initiator_max_recv_data_segment_length, 65536);
        let (_, p) = run("HeaderDigest", "CRC32C", &l);
        assert!(p.header_digest);
    }

    #[test]
    fn discovery_and_unknown() {
        let l = Limits::default();
        let mut p = SessionParams::defaults(&l);
        let o = negotiate("InitialR2T", "No", SessionType::Discovery, &l, &mut p);
        assert_eq!(o, ans("Irrelevant"));
        let o = negotiate("HeaderDigest", "None", SessionType::Discovery, &l, &mut p);
        assert_eq!(o, ans("None"));
        assert_eq!(
            negotiate("X-com.foo", "1", SessionType::Normal, &l, &mut p),
            None
        );
        let long = "1".repeat(300);
        assert_eq!(
            negotiate("MaxBurstLength", &long, SessionType::Normal, &l, &mut p),
            ans("Reject")
        );
    }
}
