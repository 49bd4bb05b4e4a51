//! Sequences mirrored from libiscsi's iscsi-test-cu (WriteSame10.ZeroBlocks,
//! Unmap.ZeroBlocks, GetLBAStatus.UnmapSingle, PrinServiceactionRange,
//! Inquiry.AllocLength), checking the exact statuses those tests expect.

use super::harness::*;
use crate::LunConfig;

fn ws10(lba: u32, n: u16, unmap: bool) -> Vec<u8> {
    let mut c = vec![0x41, if unmap { 0x08 } else { 0 }, 0, 0, 0, 0, 0, 0, 0, 0];
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&n.to_be_bytes());
    c
}

#[test]
fn writesame10_zero_blocks() {
    let max = 1000u64;
    let mut rig = Rig::with(LunConfig {
        max_write_same_blocks: max,
        ..cfg()
    });
    let n = nexus(1);
    rig.clear_ua(&n);
    let z = [0u8; 512];
    assert_eq!(sense(&rig.run(&n, &ws10(0, 0, false), &z)), (5, 0x24, 0));
    let b = BLOCKS as u32;
    let m = max as u32;
    assert_eq!(
        sense(&rig.run(&n, &ws10(b - (m + 1), 0, false), &z)),
        (5, 0x24, 0)
    );
    assert_good(&rig.run(&n, &ws10(b - m, 0, false), &z));
    assert_good(&rig.run(&n, &ws10(b - (m - 1), 0, false), &z));
    for lba in [b + 1, 0x8000_0000, u32::MAX] {
        assert_eq!(sense(&rig.run(&n, &ws10(lba, 0, false), &z)), (5, 0x21, 0));
    }
    // UnmapUntilEnd: 0 blocks with UNMAP reads back as zeros.
    for i in 1..=16u32 {
        assert_good(&rig.run(&n, &write10(b - i, i as u16), &vec![0xFF; 512 * i as usize]));
        assert_good(&rig.run(&n, &ws10(b - i, 0, true), &[0xFF; 512]));
        let r = rig.run(&n, &read10(b - i, i as u16), &[]);
        assert!(r.data_in.iter().all(|&x| x == 0));
    }
}

fn unmap(rig: &mut Rig, n: &crate::Nexus, descs: &[(u64, u32)]) -> crate::Response {
    let len = 8 + 16 * descs.len();
    let mut p = vec![0u8; 8];
    p[0..2].copy_from_slice(&((len - 2) as u16).to_be_bytes());
    p[2..4].copy_from_slice(&((len - 8) as u16).to_be_bytes());
    for (lba, num) in descs {
        p.extend(lba.to_be_bytes());
        p.extend(num.to_be_bytes());
        p.extend([0u8; 4]);
    }
    let mut c = vec![0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    c[7..9].copy_from_slice(&(len as u16).to_be_bytes());
    rig.run(n, &c, &p)
}

#[test]
fn unmap_zero_blocks() {
    let mut rig = Rig::new();
    let n = nexus(1);
    rig.clear_ua(&n);
    for i in 0..256 {
        assert_good(&unmap(&mut rig, &n, &[(i, 0)]));
    }
    assert_good(&unmap(&mut rig, &n, &[(BLOCKS, 0)]));
    assert_good(&unmap(&mut rig, &n, &[]));
    let list: Vec<(u64, u32)> = (0..256).map(|i| (i / 2, 0)).collect();
    assert_good(&unmap(&mut rig, &n, &list));
}

#[test]
fn get_lba_status_unmap_single() {
    let mut rig = Rig::new();
    let n = nexus(1);
    rig.clear_ua(&n);
    assert_good(&rig.run(&n, &write10(0, 257), &[b'A'; 257 * 512]));
    let gls = |rig: &mut Rig, lba: u64| {
        let mut c = rw16(0x9E, lba, 24);
        c[1] = 0x12;
        let r = rig.run(&n, &c, &[]);
        assert_good(&r);
        (
            u64::from_be_bytes(r.data_in[8..16].try_into().unwrap()),
            r.data_in[20] & 0x0F,
        )
    };
    for i in 0..256u64 {
        assert_good(&unmap(&mut rig, &n, &[(i, 1)]));
        assert_eq!(gls(&mut rig, i), (i, 1));
        assert_eq!(gls(&mut rig, i + 1), (i + 1, 0));
        assert_good(&rig.run(&n, &write10(i as u32, 1), &[b'A'; 512]));
    }
}

#[test]
fn prin_service_action_range_and_alloc_lengths() {
    let mut rig = Rig::new();
    let n = nexus(1);
    rig.clear_ua(&n);
    for sa in 0..0x20u8 {
        let r = rig.run(&n, &[0x5E, sa, 0, 0, 0, 0, 0, 0x40, 0, 0], &[]);
        assert_eq!(r.status == 0, sa < 4, "PRIN SA {sa:#x}");
    }
    for alloc in 5..=255u8 {
        let r = rig.run(&n, &[0x12, 0, 0, 0, alloc, 0], &[]);
        assert_good(&r);
        assert_eq!(r.data_in.len(), usize::from(alloc).min(96));
    }
}
