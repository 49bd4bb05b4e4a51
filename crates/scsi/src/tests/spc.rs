//! SPC command tests: INQUIRY/VPD, unit attentions, REQUEST SENSE, mode pages,
//! REPORT SUPPORTED OPERATION CODES/TMFs, RTPG, REPORT LUNS and missing LUNs,
//! RESERVE/RELEASE, resets and capacity changes.

use bytes::Bytes;

use super::harness::*;
use crate::{Command, LogicalUnit, LunConfig, ResetKind, ScsiTarget, Step, TaskAttr};

#[test]
fn first_command_reports_power_on_ua_then_good() {
    let mut rig = Rig::new();
    let n = nexus(1);
    let r = rig.run(&n, &[0; 6], &[]);
    assert_eq!(sense(&r), (6, 0x29, 0x00));
    assert_good(&rig.run(&n, &[0; 6], &[]));
}

#[test]
fn inquiry_does_not_consume_ua_and_invalid_opcode_reports_ua_first() {
    let mut rig = Rig::new();
    let n = nexus(1);
    assert_good(&rig.run(&n, &[0x12, 0, 0, 0, 96, 0], &[]));
    assert_eq!(
        sense(&rig.run(&n, &[0x48, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[])).0,
        6
    );
    assert_eq!(
        sense(&rig.run(&n, &[0x48, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[])),
        (5, 0x20, 0)
    );
}

#[test]
fn request_sense_returns_and_clears_ua() {
    let mut rig = Rig::new();
    let n = nexus(1);
    let r = rig.run(&n, &[0x03, 0, 0, 0, 18, 0], &[]);
    assert_good(&r);
    assert_eq!((r.data_in[0], r.data_in[2], r.data_in[12]), (0x70, 6, 0x29));
    let r = rig.run(&n, &[0x03, 1, 0, 0, 252, 0], &[]);
    assert_eq!((r.data_in[0], r.data_in[1], r.data_in[2]), (0x72, 0, 0));
    assert_good(&rig.run(&n, &[0; 6], &[]));
}

#[test]
fn unsupported_commands_are_invalid_opcode() {
    let mut rig = Rig::new();
    let n = nexus(1);
    rig.clear_ua(&n);
    // SANITIZE, PREVENT ALLOW, EXTENDED COPY, RECEIVE COPY RESULTS, MAINTENANCE OUT, 0x7F
    for op in [0x48u8, 0x1E, 0x83, 0x84, 0xA4, 0x7F] {
        let mut cdb = vec![0u8; 16];
        cdb[0] = op;
        let r = rig.run(&n, &cdb, &[]);
        assert_eq!(sense(&r), (5, 0x20, 0), "opcode {op:#x}");
    }
    // Unknown service action of SERVICE ACTION IN(16).
    let r = rig.run(&n, &rw16(0x9E, 0, 0), &[]);
    assert_eq!(sense(&r), (5, 0x24, 0));
    assert_eq!(field_pointer(&r), Some((true, 1, Some(4))));
}

#[test]
fn reserved_bits_and_naca_rejected_with_field_pointer() {
    let mut rig = Rig::new();
    let n = nexus(1);
    rig.clear_ua(&n);
    let r = rig.run(&n, &[0x12, 0x02, 0, 0, 96, 0], &[]); // CmdDt
    assert_eq!(sense(&r), (5, 0x24, 0));
    assert_eq!(field_pointer(&r), Some((true, 1, Some(1))));
    let r = rig.run(&n, &[0x00, 0, 0, 0, 0, 0x04], &[]); // NACA
    assert_eq!(field_pointer(&r), Some((true, 5, Some(2))));
    let cmd = Command {
        attr: TaskAttr::Aca,
        ..Command::new(&[0u8; 6])
    };
    let mut t = rig.lun.start(&n, &cmd);
    let Step::Done(r) = t.poll(None) else {
        panic!()
    };
    assert_eq!(sense(&r), (5, 0x24, 0));
}

#[test]
fn inquiry_standard_alloc_and_evpd_rules() {
    let mut rig = Rig::new();
    let n = nexus(1);
    for alloc in [5u8, 36, 255] {
        let r = rig.run(&n, &[0x12, 0, 0, 0, alloc, 0], &[]);
        assert_good(&r);
        assert_eq!(r.data_in.len(), usize::from(alloc).min(96));
    }
    let a = rig.run(&n, &[0x12, 0, 0, 0x01, 0xFF, 0], &[]);
    let b = rig.run(&n, &[0x12, 0, 0, 0x02, 0x00, 0], &[]);
    assert_eq!(a.data_in, b.data_in);
    assert_eq!(a.data_in[0], 0);
    assert_eq!(a.data_in[5] & 0x30, 0x10, "TPGS implicit");
    let r = rig.run(&n, &[0x12, 0, 1, 1, 0, 0], &[]);
    assert_eq!(sense(&r), (5, 0x24, 0));
    assert_eq!(field_pointer(&r), Some((true, 2, None)));
    let r = rig.run(&n, &[0x12, 1, 0x89, 1, 0, 0], &[]);
    assert_eq!(field_pointer(&r), Some((true, 2, None)));
}

#[test]
fn vpd_pages_are_all_readable_and_sorted() {
    let mut rig = Rig::new();
    let n = nexus(1);
    let r = rig.run(&n, &[0x12, 1, 0, 0, 255, 0], &[]);
    let pages = r.data_in[4..].to_vec();
    assert!(pages.windows(2).all(|w| w[0] < w[1]));
    assert!(pages.contains(&0xB0) && pages.contains(&0xB2));
    for p in pages {
        let r = rig.run(&n, &[0x12, 1, p, 1, 0, 0], &[]);
        assert_good(&r);
        assert_eq!(r.data_in[1], p);
    }
    let bl = rig.run(&n, &[0x12, 1, 0xB0, 0, 255, 0], &[]).data_in;
    assert_eq!(bl.len(), bl[3] as usize + 4);
    assert_eq!(bl[3], 0x3C);
    assert_eq!(u32::from_be_bytes([bl[8], bl[9], bl[10], bl[11]]), 1024);
    assert!(u32::from_be_bytes([bl[20], bl[21], bl[22], bl[23]]) > 0);
    assert_eq!(u64::from_be_bytes(bl[36..44].try_into().unwrap()), 8192);
    let lbp = rig.run(&n, &[0x12, 1, 0xB2, 0, 255, 0], &[]).data_in;
    assert_eq!(lbp[5] & 0xE4, 0xE4);
    let bdc = rig.run(&n, &[0x12, 1, 0xB1, 0, 255, 0], &[]).data_in;
    assert_eq!(&bdc[4..6], &[0, 1]);
    let sn = rig.run(&n, &[0x12, 1, 0x80, 0, 255, 0], &[]).data_in;
    assert_eq!(&sn[4..], b"SN0001");
}

#[test]
fn thick_lun_reports_no_provisioning() {
    let mut rig = Rig::with(LunConfig {
        unmap: false,
        ..cfg()
    });
    let n = nexus(1);
    rig.clear_ua(&n);
    let bl = rig.run(&n, &[0x12, 1, 0xB0, 0, 255, 0], &[]).data_in;
    assert_eq!(&bl[20..28], &[0; 8]);
    let rc = rig.run(
        &n,
        &rw16(0x9E, 0, 32)
            .iter()
            .enumerate()
            .map(|(i, b)| if i == 1 { 0x10 } else { *b })
            .collect::<Vec<_>>(),
        &[],
    );
    assert_eq!(rc.data_in[14] & 0xC0, 0);
    // UNMAP and WRITE SAME with UNMAP are rejected.
    assert_eq!(
        sense(&rig.run(&n, &[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], &[])),
        (5, 0x20, 0)
    );
    let mut ws = vec![0x41, 0x08, 0, 0, 0, 0, 0, 0, 1, 0];
    assert_eq!(sense(&rig.run(&n, &ws, &[0; 512])), (5, 0x24, 0));
    ws[1] = 0;
    assert_good(&rig.run(&n, &ws, &[0; 512]));
}

#[test]
fn read_capacity() {
    let mut rig = Rig::new();
    let n = nexus(1);
    rig.clear_ua(&n);
    let r = rig.run(&n, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
    assert_eq!(&r.data_in[..], &[0, 0, 0x0F, 0xFF, 0, 0, 2, 0]);
    let r = rig.run(&n, &[0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0], &[]);
    assert_eq!(field_pointer(&r), Some((true, 2, None)));
    let mut c = rw16(0x9E, 0, 32);
    c[1] = 0x10;
    let r = rig.run(&n, &c, &[]);
    assert_eq!(
        u64::from_be_bytes(r.data_in[0..8].try_into().unwrap()),
        BLOCKS - 1
    );
    assert_eq!(r.data_in[14] & 0xC0, 0xC0, "LBPME and LBPRZ");
    for alloc in 0..16u32 {
        c[10..14].copy_from_slice(&alloc.to_be_bytes());
        let r = rig.run(&n, &c, &[]);
        assert_good(&r);
        assert_eq!(r.data_in.len(), alloc as usize);
    }
}

#[test]
fn mode_sense_pages_and_errors() {
    let mut rig = Rig::new();
    let n = nexus(1);
    rig.clear_ua(&n);
    let r = rig.run(&n, &[0x1A, 0, 0x3F, 0, 255, 0], &[]);
    assert_good(&r);
    assert_eq!(r.data_in[2] & 0x90, 0x10, "DPOFUA, not WP");
    let r = rig.run(&n, &[0x1A, 0, 0x3F, 0, 4, 0], &[]);
    assert_eq!(r.data_in.len(), 4);
    let r = rig.run(&n, &[0x1A, 0x08, 0x0A, 0, 255, 0], &[]);
    assert_eq!(r.data_in[3], 0);
    assert_eq!(&r.data_in[4..6], &[0x0A, 0x0A]);
    let r = rig.run(&n, &[0x1A, 0x08, 0x4A, 0, 255, 0], &[]); // changeable
    assert_eq!(r.data_in[4 + 2], 0x04);
    assert_eq!(r.data_in[4 + 4], 0x08);
    assert_eq!(
        sense(&rig.run(&n, &[0x1A, 0, 0xCA, 0, 255, 0], &[])),
        (5, 0x39, 0)
    );
    let r = rig.run(&n, &[0x5A, 0x00, 0x08, 0, 0, 0, 0, 1, 0, 0], &[]);
    assert_eq!(
        u16::from_be_bytes([r.data_in[0], r.data_in[1]]) as usize,
        r.data_in.len() - 2
    );
}

fn control_page_select(d_sense: bool, swp: bool) -> Vec<u8> {
    let mut p = vec![
        0u8, 0, 0, 0, 0x0A, 0x0A, 0, 0x10, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0,
    ];
    if d_sense {
        p[6] |= 0x04;
    }
    if swp {
        p[8] |= 0x08;
    }
    p
}

#[test]
fn mode_select_d_sense_switches_sense_format_and_raises_ua_for_others() {
    let mut rig = Rig::new();
    let (a, b) = (nexus(1), nexus(2));
    rig.clear_ua(&a);
    rig.clear_ua(&b);
    let pl = control_page_select(true, false);
    assert_good(&rig.run(&a, &[0x15, 0x10, 0, 0, pl.len() as u8, 0], &pl));
    let r = rig.run(&a, &rw16(0x88, u64::MAX, 1), &[]);
    assert_eq!(r.sense.as_ref().unwrap()[0], 0x72);
    assert_eq!(sense(&r), (5, 0x21, 0));
    assert_eq!(sense(&rig.run(&b, &[0; 6], &[])), (6, 0x2A, 0x01));
    let pl = control_page_select(false, false);
    assert_good(&rig.run(&a, &[0x15, 0x10, 0, 0, pl.len() as u8, 0], &pl));
    assert_eq!(
        rig.run(&a, &rw16(0x88, u64::MAX, 1), &[]).sense.unwrap()[0],
        0x70
    );
}

#[test]
fn mode_select_swp_write_protects() {
    let mut rig = Rig::new();
    let n = nexus(1);
    rig.clear_ua(&n);
    let pl = control_page_select(false, true);
    assert_good(&rig.run(&n, &[0x15, 0x10, 0, 0, pl.len() as u8, 0], &pl));
    let ms = rig.run(&n, &[0x1A, 0, 0x3F, 0, 255, 0], &[]);
    assert_eq!(ms.data_in[2] & 0x80, 0x80);
    assert_good(&rig.run(&n, &read10(0, 1), &[]));
    assert_eq!(
        sense(&rig.run(&n, &write10(0, 1), &[0; 512])),
        (7, 0x27, 0x02)
    );
}

#[test]
fn mode_select_errors() {
    let mut rig = Rig::new();
    let n = nexus(1);
    rig.clear_ua(&n);
    let pl = control_page_select(false, false);
    // SP set.
    let r = rig.run(&n, &[0x15, 0x11, 0, 0, pl.len() as u8, 0], &pl);
    assert_eq!(field_pointer(&r), Some((true, 1, Some(0))));
    // PF clear.
    let r = rig.run(&n, &[0x15, 0x00, 0, 0, pl.len() as u8, 0], &pl);
    assert_eq!(field_pointer(&r), Some((true, 1, Some(4))));
    // Changing the non-changeable QAM.
    let mut bad = pl.clone();
    bad[7] = 0x00;
    let r = rig.run(&n, &[0x15, 0x10, 0, 0, bad.len() as u8, 0], &bad);
    assert_eq!(sense(&r), (5, 0x26, 0));
    assert_eq!(field_pointer(&r), Some((false, 7, Some(4))));
    // Parameter list shorter than announced.
    let r = rig.run(&n, &[0x15, 0x10, 0, 0, 40, 0], &pl);
    assert_eq!(sense(&r), (5, 0x1A, 0));
}

#[test]
fn mode_select_clearing_wce_forces_fua() {
    let mut rig = Rig::new();
    let n = nexus(1);
    rig.clear_ua(&n);
    let mut pl = vec![0u8, 0, 0, 0, 0x08, 0x12];
    pl.extend([0u8; 18]);
    assert_good(&rig.run(&n, &[0x15, 0x10, 0, 0, pl.len() as u8, 0], &pl));
    assert!(!rig.lun.write_cache_enabled());
    assert_good(&rig.run(&n, &write10(0, 1), &[1; 512]));
    assert!(matches!(
        rig.disk.log.last(),
        Some(crate::BlockRequest::Write { fua: true, .. })
    ));
}

#[test]
fn report_supported_opcodes() {
    let mut rig = Rig::new();
    let n = nexus(1);
    rig.clear_ua(&n);
    let all = rig.run(&n, &[0xA3, 0x0C, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0], &[]);
    assert_good(&all);
    let d = &all.data_in;
    let len = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize;
    assert_eq!(len + 4, d.len());
    let descs: Vec<&[u8]> = d[4..].chunks(8).collect();
    for desc in &descs {
        let (opc, sa, servactv) = (
            desc[0],
            u16::from_be_bytes([desc[2], desc[3]]),
            desc[5] & 1 != 0,
        );
        assert!(servactv || sa == 0);
        let mut one = vec![0xA3, 0x0C, 1, opc, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0];
        one[4..6].copy_from_slice(&sa.to_be_bytes());
        let r1 = rig.run(&n, &one, &[]);
        one[2] = 2;
        let r2 = rig.run(&n, &one, &[]);
        let (good, bad) = if servactv { (r2, r1) } else { (r1, r2) };
        assert_good(&good);
        assert_eq!(good.data_in[1] & 7, 3);
        assert_eq!(good.data_in[4], opc);
        let cdb_len = u16::from_be_bytes([good.data_in[2], good.data_in[3]]);
        assert_eq!(good.data_in.len(), 4 + cdb_len as usize);
        assert_eq!(sense(&bad), (5, 0x24, 0));
        assert_ne!(field_pointer(&bad).map(|f| f.1), Some(1));
    }
    // READ(10) usage data reports DPO/FUA.
    let r = rig.run(
        &n,
        &[0xA3, 0x0C, 1, 0x28, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0],
        &[],
    );
    assert_eq!(r.data_in[5] & 0x18, 0x18);
    assert_eq!(r.data_in[5] & 0xE0, 0, "RDPROTECT not supported");
    // RCTD adds 12-byte timeout descriptors.
    let r = rig.run(
        &n,
        &[0xA3, 0x0C, 0x80, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0],
        &[],
    );
    for desc in r.data_in[4..].chunks(20) {
        assert_eq!(desc[5] & 0x02, 0x02);
        assert_eq!(&desc[8..10], &[0, 0x0A]);
    }
    // Unsupported opcode: SUPPORT = 001b, not an error.
    let r = rig.run(
        &n,
        &[0xA3, 0x0C, 1, 0x48, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0],
        &[],
    );
    assert_eq!(r.data_in[1] & 7, 1);
}

#[test]
fn report_tmfs_and_target_port_groups() {
    let mut rig = Rig::new();
    let n = nexus(1);
    rig.clear_ua(&n);
    let r = rig.run(&n, &[0xA3, 0x0D, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0], &[]);
    assert_eq!(r.data_in.len(), 4);
    assert_eq!(r.data_in[0] & 0x08, 0x08);
    let r = rig.run(&n, &[0xA3, 0x0A, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], &[]);
    assert_eq!(
        &r.data_in[..],
        &[0, 0, 0, 12, 0, 1, 0, 7, 0, 0, 0, 1, 0, 0, 0, 1]
    );
    let r = rig.run(&n, &[0xA3, 0x2A, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], &[]);
    assert_eq!(r.data_in[4], 0x10);
    assert_eq!(r.data_in.len(), 20);
    let r = rig.run(&n, &[0xA3, 0x0A, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0], &[]);
    assert_eq!(r.data_in.len(), 4);
}

#[test]
fn target_routes_and_answers_missing_luns() {
    let mut t = ScsiTarget::new(vec![
        (0, LogicalUnit::new(cfg(), port())),
        (3, LogicalUnit::new(cfg(), port())),
    ]);
    let n = nexus(1);
    let run = |t: &mut ScsiTarget, lun: u64, cdb: &[u8]| {
        let mut task = t.start(&n, lun, &Command::new(cdb));
        match task.poll(None) {
            Step::Done(r) => r,
            Step::Io(_) => panic!("no I/O expected"),
        }
    };
    let r = run(&mut t, 9, &[0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
    assert_eq!(
        &r.data_in[..],
        &[0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0]
    );
    let r = run(&mut t, 0, &[0xA0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
    assert_eq!(&r.data_in[..4], &[0, 0, 0, 0]);
    let r = run(&mut t, 0, &[0xA0, 0, 7, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
    assert_eq!(sense(&r), (5, 0x24, 0));
    let r = run(&mut t, 9, &[0x12, 0, 0, 0, 96, 0]);
    assert_eq!(r.data_in[0], 0x7F);
    let r = run(&mut t, 9, &[0x00, 0, 0, 0, 0, 0]);
    assert_eq!(sense(&r), (5, 0x25, 0));
    let r = run(&mut t, 9, &[0x03, 0, 0, 0, 18, 0]);
    assert_eq!((r.status, r.data_in[12]), (0, 0x25));
    assert_eq!(sense(&run(&mut t, 3, &[0; 6])), (6, 0x29, 0));
    assert_good(&run(&mut t, 3, &[0; 6]));
    assert_eq!(t.luns().map(|(l, _)| l).collect::<Vec<_>>(), vec![0, 3]);
}

#[test]
fn reserve6_conflicts_and_release_paths() {
    let mut rig = Rig::new();
    let (a, b) = (nexus(1), nexus(2));
    rig.clear_ua(&a);
    rig.clear_ua(&b);
    assert_good(&rig.run(&a, &[0x16, 0, 0, 0, 0, 0], &[]));
    assert_good(&rig.run(&a, &[0x16, 0, 0, 0, 0, 0], &[]));
    assert_eq!(rig.run(&b, &[0x16, 0, 0, 0, 0, 0], &[]).status, 0x18);
    assert_good(&rig.run(&b, &[0x17, 0, 0, 0, 0, 0], &[])); // no-op
    assert_good(&rig.run(&a, &[0x1A, 0, 0x3F, 0, 255, 0], &[]));
    assert_eq!(rig.run(&b, &[0x1A, 0, 0x3F, 0, 255, 0], &[]).status, 0x18);
    assert_eq!(rig.run(&b, &[0; 6], &[]).status, 0x18);
    assert_good(&rig.run(&b, &[0x12, 0, 0, 0, 36, 0], &[]));
    assert_good(&rig.run(&a, &[0x17, 0, 0, 0, 0, 0], &[]));
    assert_good(&rig.run(&b, &[0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]));
    rig.lun.nexus_gone(b.id);
    assert_good(&rig.run(&a, &[0x16, 0, 0, 0, 0, 0], &[]));
    rig.lun.reset(ResetKind::LunReset);
    assert_eq!(sense(&rig.run(&b, &[0; 6], &[])), (6, 0x29, 0)); // b is a new nexus again
    assert_good(&rig.run(&b, &[0x16, 0, 0, 0, 0, 0], &[]));
    assert_eq!(sense(&rig.run(&a, &[0; 6], &[])), (6, 0x29, 0x03));
}

#[test]
fn reset_and_capacity_unit_attentions() {
    let mut rig = Rig::new();
    let (a, b) = (nexus(1), nexus(2));
    rig.clear_ua(&a);
    rig.clear_ua(&b);
    rig.lun.set_capacity(BLOCKS / 2);
    assert_eq!(sense(&rig.run(&a, &[0; 6], &[])), (6, 0x2A, 0x09));
    let r = rig.run(&b, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
    assert_eq!(sense(&r), (6, 0x2A, 0x09));
    let r = rig.run(&b, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
    assert_eq!(&r.data_in[..4], &((BLOCKS / 2 - 1) as u32).to_be_bytes());
    rig.lun.reset(ResetKind::PowerOn);
    assert_eq!(sense(&rig.run(&a, &[0; 6], &[])), (6, 0x29, 0x01));
    assert_eq!(rig.clear_ua(&b), 1);
}

#[test]
fn start_stop_unit() {
    let mut rig = Rig::new();
    let n = nexus(1);
    rig.clear_ua(&n);
    assert_good(&rig.run(&n, &[0x1B, 0, 0, 0, 1, 0], &[]));
    assert!(rig.disk.log.is_empty());
    assert_good(&rig.run(&n, &[0x1B, 1, 0, 0, 0, 0], &[]));
    assert_eq!(rig.disk.log, vec![crate::BlockRequest::Flush]);
    assert_good(&rig.run(&n, &[0x1B, 0, 0, 0, 4, 0], &[]));
    assert_eq!(rig.disk.log.len(), 1);
}

#[test]
fn data_out_len_reported_for_residuals() {
    let mut rig = Rig::new();
    let n = nexus(1);
    rig.clear_ua(&n);
    let cdb = write10(0, 2);
    let cmd = Command {
        data_out: Bytes::new(),
        ..Command::new(&cdb)
    };
    let mut t = rig.lun.start(&n, &cmd);
    let r = drive(&mut t, &mut rig.disk);
    assert_eq!(r.status, crate::status::GOOD);
    assert_eq!(r.data_out_len, Some(1024));
    assert_eq!(rig.run(&n, &read10(0, 1), &[]).data_out_len, None);
}

#[test]
fn read_defect_data_reports_empty_valid_lists() {
    let mut rig = Rig::new();
    let n = nexus(1);
    rig.clear_ua(&n);
    // (10): PLIST + GLIST, long block format, 32 bytes allowed.
    let r = rig.run(&n, &[0x37, 0, 0x1B, 0, 0, 0, 0, 0, 32, 0], &[]);
    assert_good(&r);
    assert_eq!(&r.data_in[..], &[0, 0x1B, 0, 0]);
    // (12): header of 8 bytes, truncated by the allocation length.
    let r = rig.run(&n, &[0xB7, 0x10, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0], &[]);
    assert_good(&r);
    assert_eq!(&r.data_in[..], &[0, 0x10, 0, 0, 0, 0]);
    // Reserved bits are checked like every other CDB.
    let r = rig.run(&n, &[0x37, 0x01, 0, 0, 0, 0, 0, 0, 32, 0], &[]);
    assert_eq!(sense(&r), (5, 0x24, 0));
}
