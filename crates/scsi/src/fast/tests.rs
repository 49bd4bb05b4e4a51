//! The fast path answers exactly as the locked start, and only while nothing it cannot
//! see (a unit attention, a reservation conflict) is in play.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::tests::harness::{arb_cdb as harness_arb_cdb, *};
use crate::{Command, LunConfig, Nexus, Response};

fn cmd(cdb: &[u8]) -> Command<'_> {
    Command::with_data(cdb, Bytes::new())
}

/// Runs TEST UNIT READY until the nexus has no attention left, then admits it.
fn admit(rig: &mut Rig, n: &Nexus, adm: &Admission) {
    rig.clear_ua(n);
    rig.lun.admit(n, adm);
}

/// A rig with one nexus, admitted.
fn one_admitted() -> (Rig, Nexus, Admission) {
    let mut rig = Rig::new();
    let n = nexus(1);
    let adm = Admission::default();
    admit(&mut rig, &n, &adm);
    (rig, n, adm)
}

fn fast_run(rig: &mut Rig, adm: &Admission, cdb: &[u8], data: &[u8]) -> Option<Response> {
    let fast = rig.lun.fast_path();
    let c = Command::with_data(cdb, Bytes::copy_from_slice(data));
    let mut t = fast.try_start(adm, &c)?;
    Some(drive(&mut t, &mut rig.disk))
}

/// A rig with two nexuses that have reported their power-on attentions, and an admission
/// for each, not yet admitted.
fn two_nexuses() -> (Rig, Nexus, Nexus, Admission, Admission) {
    let mut rig = Rig::new();
    let (a, b) = (nexus(1), nexus(2));
    rig.clear_ua(&a);
    rig.clear_ua(&b);
    (rig, a, b, Admission::default(), Admission::default())
}

#[test]
fn a_nexus_is_admitted_once_a_locked_start_left_it_nothing_to_report() {
    let mut rig = Rig::new();
    let n = nexus(1);
    let adm = Admission::default();
    let fast = rig.lun.fast_path();
    assert!(fast.try_start(&adm, &cmd(&read10(0, 1))).is_none());
    // The first command reports POWER ON; afterwards nothing is pending.
    let r = rig.run(&n, &[0; 6], &[]);
    assert_eq!(sense(&r), (6, 0x29, 0));
    rig.lun.admit(&n, &adm);
    assert_good(&fast_run(&mut rig, &adm, &read10(0, 1), &[]).expect("fast start"));
    assert!(
        fast.try_start(&adm, &cmd(&[0; 6])).is_none(),
        "TEST UNIT READY does not go the fast way"
    );
}

#[test]
fn a_capacity_change_is_reported_through_the_lock_then_applies_to_fast_starts() {
    let (mut rig, n, adm) = one_admitted();
    rig.lun.set_capacity(BLOCKS / 2);
    assert!(fast_run(&mut rig, &adm, &read10(0, 1), &[]).is_none());
    let r = rig.run(&n, &read10(0, 1), &[]);
    assert_eq!(sense(&r), (6, 0x2A, 0x09), "CAPACITY DATA HAS CHANGED");
    rig.lun.admit(&n, &adm);
    let past = read10((BLOCKS / 2) as u32, 1);
    let r = fast_run(&mut rig, &adm, &past, &[]).expect("fast start");
    assert_eq!(
        sense(&r),
        (5, 0x21, 0),
        "LBA OUT OF RANGE at the new capacity"
    );
}

#[test]
fn an_attention_for_anyone_sends_every_nexus_through_the_lock_once() {
    // B's first command queues its POWER ON, which moves the sequence on: admit after.
    let (mut rig, a, b, adm_a, adm_b) = two_nexuses();
    rig.lun.admit(&a, &adm_a);
    rig.lun.admit(&b, &adm_b);
    assert!(fast_run(&mut rig, &adm_a, &read10(0, 1), &[]).is_some());
    // A third nexus logs in: POWER ON is queued for it alone, but A and B cannot tell.
    rig.run(&nexus(3), &read10(0, 1), &[]);
    assert!(fast_run(&mut rig, &adm_a, &read10(0, 1), &[]).is_none());
    assert!(fast_run(&mut rig, &adm_b, &read10(0, 1), &[]).is_none());
    assert_good(&rig.run(&a, &read10(0, 1), &[]));
    rig.lun.admit(&a, &adm_a);
    assert!(fast_run(&mut rig, &adm_a, &read10(0, 1), &[]).is_some());
    assert!(fast_run(&mut rig, &adm_b, &read10(0, 1), &[]).is_none());
}

/// PERSISTENT RESERVE OUT RESERVE of type `pr_type` by `n`, holding `key`.
fn reserve(rig: &mut Rig, n: &Nexus, pr_type: u8, key: u64) {
    assert_good(&prout(rig, n, 1, pr_type, key, 0, 0));
}

#[test]
fn reserve6_lets_only_its_holder_go_fast() {
    let (mut rig, a, b, adm_a, adm_b) = two_nexuses();
    assert_good(&rig.run(&b, &[0x16, 0, 0, 0, 0, 0], &[])); // RESERVE(6)
    rig.lun.admit(&a, &adm_a);
    rig.lun.admit(&b, &adm_b);
    for cdb in [read10(0, 1), write10(0, 1)] {
        let data = if cdb[0] == 0x2A {
            &[0u8; 512][..]
        } else {
            &[][..]
        };
        assert!(fast_run(&mut rig, &adm_a, &cdb, data).is_none());
        assert_eq!(rig.run(&a, &cdb, data).status, 0x18, "RESERVATION CONFLICT");
        assert_good(&fast_run(&mut rig, &adm_b, &cdb, data).expect("the holder goes fast"));
    }
    assert_good(&rig.run(&b, &[0x17, 0, 0, 0, 0, 0], &[])); // RELEASE(6)
    rig.lun.admit(&a, &adm_a);
    assert_good(&fast_run(&mut rig, &adm_a, &write10(0, 1), &[0; 512]).expect("fast start"));
}

#[test]
fn a_persistent_reservation_lets_each_nexus_go_fast_as_far_as_it_may() {
    let (mut rig, a, b, adm_a, adm_b) = two_nexuses();
    // B holds Write Exclusive; A is not registered: A may read but not write.
    register(&mut rig, &b, 0xB);
    reserve(&mut rig, &b, 1, 0xB);
    rig.lun.admit(&a, &adm_a);
    rig.lun.admit(&b, &adm_b);
    assert_good(&fast_run(&mut rig, &adm_a, &read10(0, 1), &[]).expect("A reads fast"));
    assert!(fast_run(&mut rig, &adm_a, &write10(0, 1), &[0; 512]).is_none());
    assert_eq!(rig.run(&a, &write10(0, 1), &[0; 512]).status, 0x18);
    rig.lun.admit(&a, &adm_a);
    assert_good(&fast_run(&mut rig, &adm_b, &write10(0, 1), &[0; 512]).expect("B writes fast"));
    // Exclusive Access - Registrants Only, with A registered: both go fast.
    register(&mut rig, &a, 0xA);
    assert_good(&prout(&mut rig, &b, 2, 1, 0xB, 0, 0)); // RELEASE
    reserve(&mut rig, &b, 6, 0xB);
    rig.clear_ua(&a);
    rig.lun.admit(&a, &adm_a);
    assert_good(&fast_run(&mut rig, &adm_a, &write10(0, 1), &[0; 512]).expect("A writes fast"));
    assert_good(&fast_run(&mut rig, &adm_a, &read10(0, 1), &[]).expect("A reads fast"));
}

#[test]
fn a_reservation_taken_after_admission_stops_fast_starts() {
    let mut rig = Rig::new();
    let (a, b) = (nexus(1), nexus(2));
    let adm = Admission::default();
    rig.clear_ua(&b);
    admit(&mut rig, &a, &adm);
    assert!(fast_run(&mut rig, &adm, &write10(0, 1), &[0; 512]).is_some());
    // Registering queues no attention for A, yet it changes what A may do once B
    // reserves; each step must move the sequence on.
    register(&mut rig, &b, 0xB);
    assert!(fast_run(&mut rig, &adm, &write10(0, 1), &[0; 512]).is_none());
    rig.lun.admit(&a, &adm);
    reserve(&mut rig, &b, 1, 0xB);
    assert!(fast_run(&mut rig, &adm, &write10(0, 1), &[0; 512]).is_none());
    assert_eq!(rig.run(&a, &write10(0, 1), &[0; 512]).status, 0x18);
}

#[test]
fn every_medium_command_goes_fast_and_answers_alike() {
    let (mut rig, n, adm) = one_admitted();
    let block = [0x5Au8; 512];
    let two_blocks = [0x5Au8; 1024];
    let mut wv10 = write10(8, 1);
    wv10[0] = 0x2E;
    let mut verify10 = read10(8, 1);
    verify10[0] = 0x2F;
    verify10[1] = 0x02; // BYTCHK 1: compare with the data sent
    let mut write_same10 = write10(16, 4);
    write_same10[0] = 0x41;
    let mut caw = rw16(0x89, 8, 0);
    caw[13] = 1; // one block: compare 0x5A, write 0x5A
    let mut unmap_list = vec![0u8; 24];
    unmap_list[1] = 22;
    unmap_list[3] = 16;
    unmap_list[8..16].copy_from_slice(&32u64.to_be_bytes());
    unmap_list[16..20].copy_from_slice(&8u32.to_be_bytes());
    let cases: [(&str, Vec<u8>, &[u8]); 10] = [
        ("WRITE(10)", write10(8, 1), &block),
        ("WRITE AND VERIFY(10)", wv10.clone(), &block),
        (
            "SYNCHRONIZE CACHE(10)",
            vec![0x35, 0, 0, 0, 0, 8, 0, 0, 1, 0],
            &[],
        ),
        ("VERIFY(10)", verify10, &block),
        ("PRE-FETCH(10)", vec![0x34, 0, 0, 0, 0, 8, 0, 0, 1, 0], &[]),
        ("WRITE SAME(10)", write_same10, &block),
        ("UNMAP", vec![0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], &unmap_list),
        ("COMPARE AND WRITE", caw, &two_blocks),
        ("ORWRITE(16)", rw16(0x8B, 8, 1), &block),
        ("READ(16)", rw16(0x88, 8, 1), &[]),
    ];
    for (name, cdb, data) in cases {
        let fast =
            fast_run(&mut rig, &adm, &cdb, data).unwrap_or_else(|| panic!("{name} went locked"));
        let log: Vec<_> = rig.disk.log.drain(..).collect();
        let after_fast = rig.disk.data.clone();
        let locked = rig.run(&n, &cdb, data);
        assert_eq!(fast, locked, "{name}");
        assert_eq!(log, rig.disk.log.drain(..).collect::<Vec<_>>(), "{name}");
        assert!(
            after_fast == rig.disk.data,
            "{name}: the locked start changed the disk again"
        );
        assert_good(&fast);
        // PRE-FETCH only checks its range; everything else reaches the disk.
        assert!(
            !log.is_empty() || name.starts_with("PRE-FETCH"),
            "{name} did no I/O"
        );
    }
    // WRITE AND VERIFY reaches the medium before it is acknowledged: FUA.
    let r = fast_run(&mut rig, &adm, &wv10, &block).expect("fast start");
    assert_good(&r);
    assert!(
        matches!(
            rig.disk.log.last(),
            Some(crate::BlockRequest::Write { fua: true, .. })
        ),
        "{:?}",
        rig.disk.log.last()
    );
}

#[test]
fn a_torn_snapshot_is_never_read() {
    let fast = Arc::new(FastPath::new(Vec::new(), Medium::configured(&cfg())));
    let stop = Arc::new(AtomicBool::new(false));
    let small = Snapshot {
        num_blocks: 100,
        descriptor_sense: false,
        swp: false,
        cache_off: false,
        attentions: 0,
    };
    let large = Snapshot {
        num_blocks: 200,
        descriptor_sense: true,
        swp: true,
        cache_off: true,
        attentions: 1,
    };
    // Readers start on a published state, not the unit's all-zero initial one.
    fast.publish(small);
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (fast, stop) = (fast.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    if let Some((seq, num_blocks, flags)) = fast.load() {
                        assert_eq!(seq & 1, 0);
                        let expect = if num_blocks == 100 { small } else { large };
                        assert_eq!(flags, expect.flags(), "flags of another snapshot");
                        seen += 1;
                    }
                }
                seen
            })
        })
        .collect();
    for i in 0..200_000u32 {
        fast.publish(if i % 2 == 0 { small } else { large });
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("reader panicked");
    }
}

/// Operation codes of the commands that access the medium: READ and WRITE (6/10/12/16),
/// WRITE AND VERIFY, VERIFY (10/12/16), PRE-FETCH, SYNCHRONIZE CACHE, WRITE SAME (10/16),
/// UNMAP, COMPARE AND WRITE and ORWRITE.
const MEDIUM_OPCODES: &[u8] = &[
    0x08, 0x0A, 0x28, 0x2A, 0xA8, 0xAA, 0x88, 0x8A, 0x2E, 0xAE, 0x8E, 0x2F, 0xAF, 0x8F, 0x34, 0x90,
    0x35, 0x91, 0x41, 0x93, 0x42, 0x89, 0x8B,
];

/// Those and some that must not go fast: TEST UNIT READY, INQUIRY, MODE SENSE(6),
/// READ CAPACITY(10), PERSISTENT RESERVE OUT.
const OPCODES: &[u8] = &[
    0x08, 0x0A, 0x28, 0x2A, 0xA8, 0xAA, 0x88, 0x8A, 0x2E, 0xAE, 0x8E, 0x2F, 0xAF, 0x8F, 0x34, 0x90,
    0x35, 0x91, 0x41, 0x93, 0x42, 0x89, 0x8B, 0x00, 0x12, 0x1A, 0x25, 0x5F,
];

fn arb_cdb() -> impl Strategy<Value = Vec<u8>> {
    harness_arb_cdb(OPCODES, 5..16, 0)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// Whatever the state a fast start can see, its response and I/O are the locked
    /// start's; and a command that accesses the medium, of whole CDB length, always goes
    /// fast unless a reservation conflicts with it.
    #[test]
    fn fast_starts_answer_as_locked_starts(
        cdb in arb_cdb(),
        reservations in 0..crate::fuzz::RESERVATION_STATES,
        blocks in 0usize..5,
        read_only in any::<bool>(),
        write_cache in any::<bool>(),
        (d_sense, swp, wce) in (any::<bool>(), any::<bool>(), any::<bool>()),
    ) {
        let c = LunConfig { read_only, write_cache, ..cfg() };
        let mut fast_rig = Rig::with(c.clone());
        let mut locked_rig = Rig::with(c);
        let (n, other) = (nexus(1), nexus(2));
        let adm = Admission::default();
        for rig in [&mut fast_rig, &mut locked_rig] {
            rig.lun.mode.d_sense = d_sense;
            rig.lun.mode.swp = swp;
            rig.lun.mode.wce = wce;
            rig.lun.publish();
            rig.clear_ua(&other);
            rig.clear_ua(&n);
            crate::fuzz::reserve(&mut rig.lun, &n, &other, reservations);
            rig.clear_ua(&n);
        }
        fast_rig.lun.admit(&n, &adm);
        let data = vec![0xA5u8; blocks * 512];
        let locked = locked_rig.run(&n, &cdb, &data);
        let rw = MEDIUM_OPCODES.contains(&cdb[0]);
        let full_length = match cdb[0] >> 5 { 0 => 6, 1 | 2 => 10, 4 => 16, 5 => 12, _ => 0 };
        match fast_run(&mut fast_rig, &adm, &cdb, &data) {
            Some(fast) => {
                prop_assert!(rw, "{:#x} went fast", cdb[0]);
                prop_assert_eq!(&fast, &locked);
                prop_assert_eq!(&fast_rig.disk.log, &locked_rig.disk.log);
                prop_assert!(fast_rig.disk.data == locked_rig.disk.data);
            }
            None => prop_assert!(
                !rw || cdb.len() < full_length || locked.status == 0x18,
                "{:02x?} did not go fast", cdb
            ),
        }
    }
}
