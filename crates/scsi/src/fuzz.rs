//! Entry point for fuzzers: run one CDB with data-out against a fresh, small LUN (under
//! one of several reservation states) and drive it to completion with synthetic
//! completions (zero-filled reads, everything else succeeding). It must never panic or
//! hang. When the lock-free fast path (`fast.rs`) takes the command too, the two must
//! agree: same block requests, same response.

use bytes::Bytes;

use crate::fast::Admission;
use crate::io::{BlockRequest, Extent, IoCompletion, Step};
use crate::lun::LogicalUnit;
use crate::response::Response;
use crate::task::Task;
use crate::types::{Command, LunConfig, Nexus, TargetPort};

/// Most I/O steps a fuzzed command may take (bounds WRITE SAME expansion).
const MAX_STEPS: usize = 4096;

/// A LUN suitable for fuzzing and tests: 64 MiB of 512-byte blocks.
pub(crate) fn fuzz_lun() -> LogicalUnit {
    LogicalUnit::new(
        LunConfig {
            num_blocks: 131_072,
            serial: "fuzz0001".into(),
            ..LunConfig::default()
        },
        TargetPort {
            target_name: "iqn.2024-01.test:fuzz".into(),
            relative_port_id: 1,
            port_group: 1,
        },
    )
}

/// Synthetic completion for a request.
pub(crate) fn synthetic(req: &BlockRequest) -> IoCompletion {
    match req {
        BlockRequest::Read { len, .. } => IoCompletion::Data(Bytes::from(vec![0u8; *len as usize])),
        BlockRequest::MappingStatus { offset, len } => IoCompletion::Mapping(vec![Extent {
            offset: *offset,
            len: *len,
            mapped: true,
        }]),
        _ => IoCompletion::Done,
    }
}

/// How many reservation states [`fuzz_cdb`] sets up (see [`reserve`]).
pub const RESERVATION_STATES: u8 = 8;

fn fuzz_nexus(id: u64) -> Nexus {
    Nexus {
        id,
        initiator_port: format!("iqn.2024-01.test:init{id},i,0x00000000000{id}"),
        initiator_name: format!("iqn.2024-01.test:init{id}"),
        relative_port_id: 1,
    }
}

/// Runs `cdb` with parameter data `data` for `nexus` to completion.
fn run(lun: &mut LogicalUnit, nexus: &Nexus, cdb: &[u8], data: &[u8]) -> Option<Response> {
    let cmd = Command::with_data(cdb, Bytes::copy_from_slice(data));
    drive(lun.start(nexus, &cmd)).1
}

/// PERSISTENT RESERVE OUT with service action `sa`, type `ty`, reservation key `key` and
/// service action reservation key `sa_key`.
fn prout(lun: &mut LogicalUnit, nexus: &Nexus, sa: u8, ty: u8, key: u64, sa_key: u64) {
    let mut p = [0u8; 24];
    p[0..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    run(lun, nexus, &[0x5F, sa, ty, 0, 0, 0, 0, 0, 24, 0], &p);
}

/// Puts the reservation state numbered `state` (mod [`RESERVATION_STATES`]) in place, as
/// `me` meets it: none; RESERVE(6) held by `other` or by `me`; a persistent reservation
/// held by `other` of type Write Exclusive (`me` not registered), Exclusive Access (`me`
/// registered), Write Exclusive - Registrants Only (`me` registered) or Exclusive Access -
/// Registrants Only (`me` not registered); or Write Exclusive - All Registrants held by
/// `me`.
pub(crate) fn reserve(lun: &mut LogicalUnit, me: &Nexus, other: &Nexus, state: u8) {
    const RESERVE6: [u8; 6] = [0x16, 0, 0, 0, 0, 0];
    let (holder, pr_type, me_registered) = match state % RESERVATION_STATES {
        0 => return,
        1 => return drop(run(lun, other, &RESERVE6, &[])),
        2 => return drop(run(lun, me, &RESERVE6, &[])),
        3 => (other, 1, false),
        4 => (other, 3, true),
        5 => (other, 5, true),
        6 => (other, 6, false),
        _ => (me, 7, true),
    };
    prout(lun, other, 0, 0, 0, 2);
    if me_registered {
        prout(lun, me, 0, 0, 0, 1);
    }
    let key = if holder.id == me.id { 1 } else { 2 };
    prout(lun, holder, 1, pr_type, key, 0);
}

/// Runs TEST UNIT READY for `nexus` until it reports no unit attention (at most 8 times).
fn clear_attentions(lun: &mut LogicalUnit, nexus: &Nexus) {
    for _ in 0..8 {
        if run(lun, nexus, &[0u8; 6], &[]).is_some_and(|r| r.status == 0) {
            return;
        }
    }
}

/// Run `cdb` with data-out `data` against a fresh LUN in reservation state
/// `reservations` (see [`reserve`]), feeding synthetic completions.
pub fn fuzz_cdb(reservations: u8, cdb: &[u8], data: &[u8]) {
    let mut lun = fuzz_lun();
    let (nexus, other) = (fuzz_nexus(1), fuzz_nexus(2));
    // Consume the power-on unit attentions so the CDB itself is exercised.
    clear_attentions(&mut lun, &other);
    clear_attentions(&mut lun, &nexus);
    reserve(&mut lun, &nexus, &other, reservations);
    clear_attentions(&mut lun, &nexus);
    let admission = Admission::default();
    lun.admit(&nexus, &admission);
    let cmd = Command::with_data(cdb, Bytes::copy_from_slice(data));
    let fast = lun.fast_path().try_start(&admission, &cmd).map(drive);
    let locked = drive(lun.start(&nexus, &cmd));
    if let Some(fast) = fast {
        assert_eq!(fast, locked, "fast and locked starts differ for {cdb:02x?}");
    }
}

/// Drives `task` with synthetic completions: the requests it made and its response
/// (`None` if it did not finish within [`MAX_STEPS`]). Every request must lie within the
/// task's span, which the gateway relies on to keep other I/O away from a
/// read-modify-write.
fn drive(mut task: Task) -> (Vec<BlockRequest>, Option<Response>) {
    let mut requests = Vec::new();
    let span = task.span();
    let mut step = task.poll(None);
    for _ in 0..MAX_STEPS {
        match step {
            Step::Done(r) => return (requests, Some(r)),
            Step::Io(req) => {
                assert_within(&req, span.as_ref());
                step = task.poll(Some(synthetic(&req)));
                requests.push(req);
            }
        }
    }
    (requests, None)
}

/// Panics unless `req`'s data lies within `span`.
pub(crate) fn assert_within(req: &BlockRequest, span: Option<&std::ops::Range<u64>>) {
    if let Some(r) = req.data_range() {
        let inside = span.is_some_and(|s| s.start <= r.start && r.end <= s.end);
        assert!(inside, "{req:?} outside the task's span {span:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each reservation state the fuzzer picks is the one it names.
    #[test]
    fn every_reservation_state_is_set_up() {
        let (me, other) = (fuzz_nexus(1), fuzz_nexus(2));
        for state in 0..RESERVATION_STATES {
            let mut lun = fuzz_lun();
            clear_attentions(&mut lun, &other);
            clear_attentions(&mut lun, &me);
            reserve(&mut lun, &me, &other, state);
            let pr = lun.pr_state();
            let pr_type = pr.reservation.as_ref().map(|r| r.pr_type as u8);
            let registered = |n: &Nexus| pr.registration(&n.initiator_port, 1).is_some();
            let seen = (lun.reserve6, pr_type, registered(&me), registered(&other));
            let expected = match state {
                0 => (None, None, false, false),
                1 => (Some(2), None, false, false),
                2 => (Some(1), None, false, false),
                3 => (None, Some(1), false, true),
                4 => (None, Some(3), true, true),
                5 => (None, Some(5), true, true),
                6 => (None, Some(6), false, true),
                _ => (None, Some(7), true, true),
            };
            assert_eq!(seen, expected, "reservation state {state}");
        }
    }
}
