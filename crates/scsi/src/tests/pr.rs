//! Persistent reservation scenarios across two or three nexuses: registration,
//! every reservation type's access rules, ownership on unregister, CLEAR, PREEMPT
//! (AND ABORT), REGISTER AND MOVE, PR IN formats, errors and persistence.

use super::harness::*;
use crate::{Nexus, PrState, PrType, Response};

fn prin(rig: &mut Rig, n: &Nexus, sa: u8) -> Response {
    rig.run(n, &[0x5E, sa, 0, 0, 0, 0, 0, 0x40, 0, 0], &[])
}

fn keys(rig: &mut Rig, n: &Nexus) -> (u32, Vec<u64>) {
    let d = prin(rig, n, 0).data_in;
    let gen = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
    let len = u32::from_be_bytes([d[4], d[5], d[6], d[7]]) as usize;
    (
        gen,
        d[8..8 + len]
            .chunks(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
            .collect(),
    )
}

fn reservation(rig: &mut Rig, n: &Nexus) -> Option<(u64, u8)> {
    let d = prin(rig, n, 1).data_in;
    if d[7] == 0 {
        return None;
    }
    Some((
        u64::from_be_bytes(d[8..16].try_into().unwrap()),
        d[21] & 0x0F,
    ))
}

fn two() -> (Rig, Nexus, Nexus) {
    let mut rig = Rig::new();
    let (a, b) = (nexus(1), nexus(2));
    rig.clear_ua(&a);
    rig.clear_ua(&b);
    (rig, a, b)
}

#[test]
fn register_read_keys_and_reregister() {
    let (mut rig, a, _) = two();
    assert_eq!(keys(&mut rig, &a), (0, vec![]));
    register(&mut rig, &a, 0x1111);
    assert_eq!(keys(&mut rig, &a), (1, vec![0x1111]));
    // REGISTER with a wrong reservation key conflicts.
    assert_eq!(prout(&mut rig, &a, 0, 0, 0, 0x2222, 0).status, 0x18);
    // REGISTER with the right key changes it.
    assert_good(&prout(&mut rig, &a, 0, 0, 0x1111, 0x2222, 0));
    assert_eq!(keys(&mut rig, &a), (2, vec![0x2222]));
    // Unregister.
    assert_good(&prout(&mut rig, &a, 0, 0, 0x2222, 0, 0));
    assert_eq!(keys(&mut rig, &a), (3, vec![]));
    // Unregistered, SARK 0: no-op without generation bump.
    let r = prout(&mut rig, &a, 0, 0, 0, 0, 0);
    assert_good(&r);
    assert!(!r.pr_state_changed);
    assert_eq!(keys(&mut rig, &a).0, 3);
    // Truncated READ KEYS keeps ADDITIONAL LENGTH.
    register(&mut rig, &a, 5);
    let r = rig.run(&a, &[0x5E, 0, 0, 0, 0, 0, 0, 0, 8, 0], &[]);
    assert_eq!(&r.data_in[4..8], &[0, 0, 0, 8]);
    assert_eq!(r.data_in.len(), 8);
}

#[test]
fn reserve_release_every_type() {
    let (mut rig, a, _) = two();
    register(&mut rig, &a, 0xAA);
    for t in [1u8, 3, 5, 6, 7, 8] {
        let r = prout(&mut rig, &a, 1, t, 0xAA, 0, 0);
        assert_good(&r);
        let key = if t >= 7 { 0 } else { 0xAA };
        assert_eq!(reservation(&mut rig, &a), Some((key, t)));
        // Same reservation again is a no-op.
        assert_good(&prout(&mut rig, &a, 1, t, 0xAA, 0, 0));
        // Release with the wrong type.
        let other = if t == 1 { 3 } else { 1 };
        assert_eq!(
            sense(&prout(&mut rig, &a, 2, other, 0xAA, 0, 0)),
            (5, 0x26, 0x04)
        );
        assert_good(&prout(&mut rig, &a, 2, t, 0xAA, 0, 0));
        assert_eq!(reservation(&mut rig, &a), None);
    }
    assert_eq!(
        keys(&mut rig, &a).0,
        1,
        "RESERVE/RELEASE do not bump the generation"
    );
    // Invalid type and scope.
    assert_eq!(sense(&prout(&mut rig, &a, 1, 2, 0xAA, 0, 0)), (5, 0x24, 0));
    assert_eq!(
        sense(&prout(&mut rig, &a, 1, 0x11, 0xAA, 0, 0)),
        (5, 0x24, 0)
    );
    // Unregistered nexus cannot reserve.
    let c = nexus(3);
    rig.clear_ua(&c);
    assert_eq!(prout(&mut rig, &c, 1, 1, 0, 0, 0).status, 0x18);
}

/// (registered can read, registered can write, unregistered can read, unregistered can write)
fn access(t: u8) -> (bool, bool, bool, bool) {
    match t {
        3 => (false, false, false, false),
        1 => (true, false, true, false),
        6 | 8 => (true, true, false, false),
        5 | 7 => (true, true, true, false),
        _ => unreachable!(),
    }
}

#[test]
fn access_rules_per_type() {
    for t in [1u8, 3, 5, 6, 7, 8] {
        let (mut rig, a, b) = two();
        register(&mut rig, &a, 1);
        register(&mut rig, &b, 2);
        assert_good(&prout(&mut rig, &a, 1, t, 1, 0, 0));
        let block = vec![0u8; 512];
        let can = |rig: &mut Rig, n: &Nexus, write: bool| {
            let r = if write {
                rig.run(n, &write10(1, 1), &block)
            } else {
                rig.run(n, &read10(1, 1), &[])
            };
            match r.status {
                0 => true,
                0x18 => false,
                s => panic!("status {s:#x}"),
            }
        };
        assert!(
            can(&mut rig, &a, false) && can(&mut rig, &a, true),
            "holder, type {t}"
        );
        let (rr, rw, ur, uw) = access(t);
        assert_eq!(can(&mut rig, &b, false), rr, "registered read, type {t}");
        assert_eq!(can(&mut rig, &b, true), rw, "registered write, type {t}");
        assert_good(&prout(&mut rig, &b, 0, 0, 2, 0, 0));
        assert_eq!(can(&mut rig, &b, false), ur, "unregistered read, type {t}");
        assert_eq!(can(&mut rig, &b, true), uw, "unregistered write, type {t}");
        // Always allowed.
        assert_good(&rig.run(&b, &[0x12, 0, 0, 0, 36, 0], &[]));
        assert_good(&rig.run(&b, &[0; 6], &[]));
        assert_good(&rig.run(&b, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]));
        let ms = rig.run(&b, &[0x1A, 0, 0x3F, 0, 255, 0], &[]);
        assert_eq!(
            ms.status == 0,
            !matches!(t, 3 | 6 | 8),
            "mode sense, type {t}"
        );
        // RESERVE(6) conflicts with a persistent reservation.
        assert_eq!(rig.run(&a, &[0x16, 0, 0, 0, 0, 0], &[]).status, 0x18);
    }
}

#[test]
fn unregistering_the_holder() {
    for (t, shared) in [
        (1u8, false),
        (3, false),
        (5, false),
        (6, false),
        (7, true),
        (8, true),
    ] {
        let (mut rig, a, b) = two();
        register(&mut rig, &a, 1);
        register(&mut rig, &b, 2);
        assert_good(&prout(&mut rig, &a, 1, t, 1, 0, 0));
        assert_good(&prout(&mut rig, &a, 0, 0, 1, 0, 0));
        if shared {
            assert_eq!(reservation(&mut rig, &a), Some((0, t)));
            assert_good(&prout(&mut rig, &b, 2, t, 2, 0, 0));
        } else {
            assert_eq!(reservation(&mut rig, &a), None);
            let ua = rig.run(&b, &[0; 6], &[]);
            if matches!(t, 5 | 6) {
                assert_eq!(sense(&ua), (6, 0x2A, 0x04), "type {t}");
            } else {
                assert_good(&ua);
            }
        }
    }
}

#[test]
fn clear_removes_everything_and_notifies() {
    let (mut rig, a, b) = two();
    register(&mut rig, &a, 1);
    register(&mut rig, &b, 2);
    assert_good(&prout(&mut rig, &a, 1, 3, 1, 0, 0));
    let gen = keys(&mut rig, &a).0;
    assert_good(&prout(&mut rig, &a, 3, 0, 1, 0, 0));
    assert_eq!(keys(&mut rig, &a), (gen + 1, vec![]));
    assert_eq!(reservation(&mut rig, &a), None);
    assert_eq!(sense(&rig.run(&b, &[0; 6], &[])), (6, 0x2A, 0x03));
    assert_good(&rig.run(&a, &[0; 6], &[]));
}

#[test]
fn preempt_registration_without_reservation() {
    let (mut rig, a, b) = two();
    register(&mut rig, &a, 0x10);
    register(&mut rig, &b, 0x20);
    let gen = keys(&mut rig, &a).0;
    let r = prout(&mut rig, &b, 4, 3, 0x20, 0x10, 0);
    assert_good(&r);
    assert!(r.abort_nexuses.is_empty());
    assert_eq!(sense(&rig.run(&a, &[0; 6], &[])), (6, 0x2A, 0x05));
    assert_eq!(keys(&mut rig, &a), (gen + 1, vec![0x20]));
    // No registration with that key: conflict. SARK 0 without reservation: invalid.
    assert_eq!(prout(&mut rig, &b, 4, 3, 0x20, 0x99, 0).status, 0x18);
    assert_eq!(sense(&prout(&mut rig, &b, 4, 3, 0x20, 0, 0)), (5, 0x26, 0));
}

#[test]
fn preempt_and_abort_the_holder() {
    let (mut rig, a, b) = two();
    register(&mut rig, &a, 0x10);
    register(&mut rig, &b, 0x20);
    assert_good(&prout(&mut rig, &a, 1, 1, 0x10, 0, 0));
    let r = prout(&mut rig, &b, 5, 3, 0x20, 0x10, 0);
    assert_good(&r);
    assert_eq!(r.abort_nexuses, vec![a.id]);
    assert_eq!(reservation(&mut rig, &b), Some((0x20, 3)));
    assert_eq!(sense(&rig.run(&a, &[0; 6], &[])), (6, 0x2A, 0x05));
    assert_eq!(rig.run(&a, &read10(0, 1), &[]).status, 0x18);
}

#[test]
fn preempt_all_registrants_with_zero_key() {
    let (mut rig, a, b) = two();
    register(&mut rig, &a, 0x10);
    register(&mut rig, &b, 0x20);
    assert_good(&prout(&mut rig, &a, 1, 8, 0x10, 0, 0));
    assert_good(&prout(&mut rig, &b, 4, 1, 0x20, 0, 0));
    assert_eq!(keys(&mut rig, &b).1, vec![0x20]);
    assert_eq!(reservation(&mut rig, &b), Some((0x20, 1)));
}

#[test]
fn capabilities_full_status_and_errors() {
    let (mut rig, a, b) = two();
    let caps = prin(&mut rig, &a, 2).data_in;
    assert_eq!(&caps[..2], &[0, 8]);
    assert_eq!((caps[4], caps[5]), (0xEA, 0x01));
    assert_eq!(caps[2] & 0x01, 0x01, "PTPL_C");
    assert_good(&prout(&mut rig, &a, 6, 0, 0, 0x10, 0x01)); // APTPL
    assert!(rig.lun.pr_state().aptpl);
    assert_eq!(prin(&mut rig, &a, 2).data_in[3] & 0x01, 0x01);
    assert_good(&prout(&mut rig, &b, 6, 0, 0, 0x20, 0x04)); // ALL_TG_PT
    assert_good(&prout(&mut rig, &a, 1, 5, 0x10, 0, 0));
    let fs = prin(&mut rig, &a, 3).data_in;
    let add = u32::from_be_bytes([fs[4], fs[5], fs[6], fs[7]]) as usize;
    assert_eq!(add + 8, fs.len());
    let first = &fs[8..];
    assert_eq!(u64::from_be_bytes(first[..8].try_into().unwrap()), 0x10);
    assert_eq!(first[12], 0x01);
    assert_eq!(first[13], 5);
    assert_eq!(first[24], 0x45);
    let name = String::from_utf8_lossy(&first[28..]);
    assert!(name.starts_with(&a.initiator_port));
    // Invalid service actions and lengths.
    assert_eq!(sense(&prin(&mut rig, &a, 4)), (5, 0x24, 0));
    let r = rig.run(&a, &[0x5F, 6, 0, 0, 0, 0, 0, 0, 16, 0], &[0; 16]);
    assert_eq!(sense(&r), (5, 0x1A, 0));
    let r = prout(&mut rig, &nexus(3), 6, 0, 0, 1, 0x08); // SPEC_I_PT
    assert_eq!(sense(&r), (6, 0x29, 0));
    let r = prout(&mut rig, &nexus(3), 6, 0, 0, 1, 0x08);
    assert_eq!(sense(&r), (5, 0x26, 0));
}

#[test]
fn register_and_move() {
    let (mut rig, a, b) = two();
    register(&mut rig, &a, 0x10);
    assert_good(&prout(&mut rig, &a, 1, 1, 0x10, 0, 0));
    let mut p = vec![0u8; 24];
    p[0..8].copy_from_slice(&0x10u64.to_be_bytes());
    p[8..16].copy_from_slice(&0x77u64.to_be_bytes());
    p[17] = 0x02; // UNREG
    p[18..20].copy_from_slice(&1u16.to_be_bytes());
    let mut tid = vec![0x45, 0, 0, 0];
    let mut name = b.initiator_port.as_bytes().to_vec();
    name.push(0);
    while name.len() % 4 != 0 {
        name.push(0);
    }
    tid[2..4].copy_from_slice(&(name.len() as u16).to_be_bytes());
    tid.extend(name);
    p[20..24].copy_from_slice(&(tid.len() as u32).to_be_bytes());
    p.extend(tid);
    let r = rig.run(&a, &[0x5F, 7, 1, 0, 0, 0, 0, 0, p.len() as u8, 0], &p);
    assert_good(&r);
    assert_eq!(keys(&mut rig, &b).1, vec![0x77]);
    assert_eq!(reservation(&mut rig, &b), Some((0x77, 1)));
    assert_good(&rig.run(&b, &write10(0, 1), &[0; 512]));
    assert_eq!(rig.run(&a, &write10(0, 1), &[0; 512]).status, 0x18);
}

#[test]
fn state_persists_and_restores() {
    let (mut rig, a, b) = two();
    register(&mut rig, &a, 0x10);
    assert_good(&prout(&mut rig, &a, 1, 3, 0x10, 0, 0));
    let saved = rig.lun.pr_state().to_bytes();
    let mut other = Rig::new();
    other
        .lun
        .restore_pr_state(PrState::from_bytes(&saved).unwrap());
    other.clear_ua(&a);
    other.clear_ua(&b);
    assert_eq!(other.run(&b, &read10(0, 1), &[]).status, 0x18);
    assert_good(&other.run(&a, &read10(0, 1), &[]));
    assert_eq!(
        other.lun.pr_state().reservation.as_ref().map(|r| r.pr_type),
        Some(PrType::ExclusiveAccess)
    );
    // Registrations survive the nexus going away and LUN resets.
    other.lun.nexus_gone(a.id);
    other.lun.reset(crate::ResetKind::LunReset);
    assert_eq!(other.lun.pr_state().registrations.len(), 1);
}
