//! Block command tests against the in-memory disk: data really lands where it should,
//! ranges and lengths are validated with the right sense, and I/O errors map to the
//! right sense codes.

use super::harness::*;
use crate::{BlockRequest, IoErrorKind, LunConfig, MediumOp};

fn rig() -> (Rig, crate::Nexus) {
    let mut rig = Rig::new();
    let n = nexus(1);
    rig.clear_ua(&n);
    rig.disk.log.clear();
    (rig, n)
}

#[test]
fn write_then_read_all_sizes() {
    let (mut rig, n) = rig();
    let data = pattern(4 * 512, 3);
    assert_good(&rig.run(&n, &write10(10, 4), &data));
    assert_eq!(&rig.disk.data[10 * 512..14 * 512], &data[..]);
    let r = rig.run(&n, &read10(10, 4), &[]);
    assert_eq!(&r.data_in[..], &data[..]);
    let r = rig.run(&n, &rw16(0x88, 10, 4), &[]);
    assert_eq!(&r.data_in[..], &data[..]);
    let mut c12 = vec![0xA8, 0, 0, 0, 0, 10, 0, 0, 0, 4, 0, 0];
    assert_eq!(&rig.run(&n, &c12, &[]).data_in[..], &data[..]);
    c12[0] = 0xAA;
    assert_good(&rig.run(&n, &c12, &pattern(2048, 9)));
    // READ(6)/WRITE(6): length 0 means 256 blocks.
    let big = pattern(256 * 512, 5);
    assert_good(&rig.run(&n, &[0x0A, 0, 0, 0, 0, 0], &big));
    let r = rig.run(&n, &[0x08, 0, 0, 0, 0, 0], &[]);
    assert_eq!(r.data_in.len(), 256 * 512);
    assert_eq!(&r.data_in[..], &big[..]);
    // Zero-length READ(10)/WRITE(10): no I/O.
    rig.disk.log.clear();
    assert_good(&rig.run(&n, &read10(0, 0), &[]));
    assert_good(&rig.run(&n, &write10(0, 0), &[]));
    assert!(rig.disk.log.is_empty());
}

#[test]
fn fua_and_dpo_bits() {
    let (mut rig, n) = rig();
    let mut c = write10(0, 1);
    c[1] = 0x08;
    assert_good(&rig.run(&n, &c, &[1; 512]));
    assert!(matches!(
        rig.disk.log.last(),
        Some(BlockRequest::Write { fua: true, .. })
    ));
    c[1] = 0x12; // DPO + FUA_NV
    assert_good(&rig.run(&n, &c, &[1; 512]));
    assert!(matches!(
        rig.disk.log.last(),
        Some(BlockRequest::Write { fua: false, .. })
    ));
    let mut r = read10(0, 1);
    r[1] = 0x18;
    assert_good(&rig.run(&n, &r, &[]));
}

#[test]
fn out_of_range_and_protect_fields() {
    let (mut rig, n) = rig();
    let b = BLOCKS as u32;
    for cdb in [
        read10(b, 1),
        read10(b - 1, 2),
        read10(b + 1, 0),
        read10(u32::MAX, 1),
        read10(b, 0),
    ] {
        assert_eq!(sense(&rig.run(&n, &cdb, &[])), (5, 0x21, 0), "{cdb:?}");
    }
    assert_eq!(
        sense(&rig.run(&n, &rw16(0x88, u64::MAX, 1), &[])),
        (5, 0x21, 0)
    );
    assert_eq!(
        sense(&rig.run(&n, &rw16(0x88, 1 << 63, 0), &[])),
        (5, 0x21, 0)
    );
    assert_eq!(
        sense(&rig.run(&n, &write10(b - 1, 2), &[0; 1024])),
        (5, 0x21, 0)
    );
    assert_good(&rig.run(&n, &read10(b - 1, 1), &[]));
    for p in 1..8u8 {
        let mut c = read10(0, 1);
        c[1] = p << 5;
        let r = rig.run(&n, &c, &[]);
        assert_eq!(sense(&r), (5, 0x24, 0));
        assert_eq!(field_pointer(&r).map(|f| (f.0, f.1)), Some((true, 1)));
        c[0] = 0x2A;
        assert_eq!(sense(&rig.run(&n, &c, &[0; 512])), (5, 0x24, 0));
    }
    // Beyond the maximum transfer length.
    let r = rig.run(&n, &read10(0, 1025), &[]);
    assert_eq!(field_pointer(&r), Some((true, 7, None)));
}

#[test]
fn write_data_out_length_rules() {
    let (mut rig, n) = rig();
    rig.disk.data[..1024].fill(b'a');
    // Less than one block: nothing written, GOOD (the transport reports the residual).
    assert_good(&rig.run(&n, &write10(0, 2), &[b'b'; 200]));
    assert!(rig.disk.data[..1024].iter().all(|&x| x == b'a'));
    // One whole block of the two asked for: only that block is written.
    assert_good(&rig.run(&n, &write10(0, 2), &[b'b'; 700]));
    assert!(rig.disk.data[..512].iter().all(|&x| x == b'b'));
    assert!(rig.disk.data[512..1024].iter().all(|&x| x == b'a'));
    rig.disk.data[..512].fill(b'a');
    // Too much data: only what the CDB asks for is written.
    assert_good(&rig.run(&n, &write10(0, 1), &[b'b'; 1024]));
    assert!(rig.disk.data[..512].iter().all(|&x| x == b'b'));
    assert!(rig.disk.data[512..1024].iter().all(|&x| x == b'a'));
}

#[test]
fn verify_modes() {
    let (mut rig, n) = rig();
    let data = pattern(8 * 512, 1);
    assert_good(&rig.run(&n, &write10(100, 8), &data));
    let mut v = vec![0x2F, 0x02, 0, 0, 0, 100, 0, 0, 8, 0];
    assert_good(&rig.run(&n, &v, &data));
    let mut bad = data.clone();
    bad[1234] ^= 0x55;
    let r = rig.run(&n, &v, &bad);
    assert_eq!(sense(&r), (0x0E, 0x1D, 0));
    assert_eq!(info(&r), Some(1234));
    v[1] = 0x00; // BYTCHK 0: medium verification, data ignored
    assert_good(&rig.run(&n, &v, &[]));
    v[1] = 0x04; // BYTCHK 2: reserved
    assert_eq!(sense(&rig.run(&n, &v, &[])), (5, 0x24, 0));
    // BYTCHK 3: one block compared with each block.
    assert_good(&rig.run(&n, &rw16(0x93, 200, 4), &[7; 512]));
    let mut v16 = rw16(0x8F, 200, 4);
    v16[1] = 0x06;
    assert_good(&rig.run(&n, &v16, &[7; 512]));
    let r = rig.run(&n, &v16, &[8; 512]);
    assert_eq!(sense(&r).0, 0x0E);
    v16[1] = 0xE2;
    assert_eq!(sense(&rig.run(&n, &v16, &[7; 512])), (5, 0x24, 0));
    assert_eq!(
        sense(&rig.run(&n, &rw16(0x8F, BLOCKS, 0), &[])),
        (5, 0x21, 0)
    );
}

#[test]
fn write_and_verify_writes_through() {
    let (mut rig, n) = rig();
    let c = [0x2E, 0x02, 0, 0, 0, 5, 0, 0, 1, 0];
    assert_good(&rig.run(&n, &c, &[9; 512]));
    assert_eq!(rig.disk.block(5), &[9; 512][..]);
    assert!(matches!(
        rig.disk.log.last(),
        Some(BlockRequest::Write { fua: true, .. })
    ));
}

#[test]
fn compare_and_write() {
    let (mut rig, n) = rig();
    assert_good(&rig.run(&n, &write10(3, 2), &[b'A'; 1024]));
    let mut c = rw16(0x89, 3, 0);
    c[13] = 2;
    let mut data = vec![b'A'; 1024];
    data.extend([b'B'; 1024]);
    let mut t = rig
        .lun
        .start(&n, &crate::Command::with_data(&c, data.clone().into()));
    assert!(t.needs_atomicity());
    assert_good(&drive(&mut t, &mut rig.disk));
    assert!(rig.disk.data[3 * 512..5 * 512].iter().all(|&x| x == b'B'));
    // Miscompare: INFORMATION = offset of the first differing byte; nothing written.
    let mut cmp = vec![b'B'; 1024];
    cmp[700] = b'Z';
    cmp.extend([b'C'; 1024]);
    let r = rig.run(&n, &c, &cmp);
    assert_eq!(sense(&r), (0x0E, 0x1D, 0));
    assert_eq!(info(&r), Some(700));
    assert!(rig.disk.data[3 * 512..5 * 512].iter().all(|&x| x == b'B'));
    // Wrong data-out size.
    assert_eq!(sense(&rig.run(&n, &c, &cmp[..1536])).0, 5);
    assert_eq!(sense(&rig.run(&n, &c, &[0; 4096])).0, 5);
    // Too many blocks, zero blocks, out of range.
    c[13] = 0;
    rig.disk.log.clear();
    assert_good(&rig.run(&n, &c, &[]));
    assert!(rig.disk.log.is_empty());
    // Zero blocks with data (a 256-block request wrapped into the 8-bit field).
    let r = rig.run(&n, &c, &[b'A'; 2 * 256 * 512]);
    assert_eq!(field_pointer(&r), Some((true, 13, None)));
    assert!(rig.disk.log.is_empty());
    let mut small = Rig::with(LunConfig {
        max_transfer_blocks: 8,
        ..cfg()
    });
    small.clear_ua(&n);
    c[13] = 9;
    let r = small.run(&n, &c, &[0; 9 * 1024]);
    assert_eq!(field_pointer(&r), Some((true, 13, None)));
    let mut oob = rw16(0x89, BLOCKS, 0);
    oob[13] = 1;
    assert_eq!(sense(&rig.run(&n, &oob, &[0; 1024])), (5, 0x21, 0));
}

#[test]
fn orwrite() {
    let (mut rig, n) = rig();
    assert_good(&rig.run(&n, &write10(0, 2), &[0x0F; 1024]));
    let mut t = rig.lun.start(
        &n,
        &crate::Command::with_data(&rw16(0x8B, 0, 2), vec![0xA0u8; 1024].into()),
    );
    assert!(t.needs_atomicity());
    assert_good(&drive(&mut t, &mut rig.disk));
    assert!(rig.disk.data[..1024].iter().all(|&x| x == 0xAF));
    assert_good(&rig.run(&n, &rw16(0x8B, 0, 0), &[]));
    assert_eq!(
        sense(&rig.run(&n, &rw16(0x8B, BLOCKS, 1), &[0; 512])),
        (5, 0x21, 0)
    );
}

#[test]
fn write_same_patterns_zeroes_and_unmap() {
    let (mut rig, n) = rig();
    // A non-zero pattern over 3000 blocks (1.5 MB): written in chunks of at most 1 MiB.
    let pat: Vec<u8> = pattern(512, 42);
    assert_good(&rig.run(&n, &rw16(0x93, 10, 3000), &pat));
    let writes: Vec<usize> = rig
        .disk
        .log
        .iter()
        .filter_map(|r| match r {
            BlockRequest::Write { data, .. } => Some(data.len()),
            _ => None,
        })
        .collect();
    assert_eq!(writes.len(), 2);
    assert!(writes.iter().all(|&l| l as u64 <= crate::CHUNK_BYTES));
    assert_eq!(writes.iter().sum::<usize>(), 3000 * 512);
    for lba in [10usize, 11, 2000, 3009] {
        assert_eq!(rig.disk.block(lba), &pat[..]);
    }
    assert_ne!(rig.disk.block(3010), &pat[..]);
    // All-zero block: one WriteZeroes; with UNMAP it may deallocate.
    rig.disk.log.clear();
    assert_good(&rig.run(&n, &[0x41, 0, 0, 0, 0, 10, 0, 0, 100, 0], &[0; 512]));
    assert_eq!(
        rig.disk.log,
        vec![BlockRequest::WriteZeroes {
            offset: 5120,
            len: 51200,
            unmap: false
        }]
    );
    rig.disk.log.clear();
    assert_good(&rig.run(&n, &[0x41, 0x08, 0, 0, 0, 10, 0, 0, 100, 0], &[0; 512]));
    assert_eq!(
        rig.disk.log,
        vec![BlockRequest::WriteZeroes {
            offset: 5120,
            len: 51200,
            unmap: true
        }]
    );
    assert!(!rig.disk.mapped[10]);
    // NDOB (no data-out) on WRITE SAME(16).
    rig.disk.log.clear();
    let mut c = rw16(0x93, 20, 4);
    c[1] = 0x09;
    assert_good(&rig.run(&n, &c, &[]));
    assert!(matches!(
        rig.disk.log[..],
        [BlockRequest::WriteZeroes { unmap: true, .. }]
    ));
    // Fallback to plain writes when the backend cannot write zeroes.
    rig.disk.unsupported = vec!["zeroes"];
    rig.disk.data[30 * 512..34 * 512].fill(1);
    assert_good(&rig.run(&n, &rw16(0x93, 30, 4), &[0; 512]));
    assert!(rig.disk.data[30 * 512..34 * 512].iter().all(|&x| x == 0));
}

#[test]
fn write_same_validation() {
    let (mut rig, n) = rig();
    // Data-out must be exactly one block.
    assert_eq!(sense(&rig.run(&n, &rw16(0x93, 0, 1), &[1; 256])).0, 5);
    assert_eq!(sense(&rig.run(&n, &rw16(0x93, 0, 1), &[1; 1024])).0, 5);
    // ANCHOR is not supported.
    let mut c = rw16(0x93, 0, 1);
    c[1] = 0x18;
    assert_eq!(
        field_pointer(&rig.run(&n, &c, &[0; 512])),
        Some((true, 1, Some(4)))
    );
    // 0 blocks = to the end of the medium, subject to MAXIMUM WRITE SAME LENGTH (8192 > 4096 blocks).
    rig.disk.log.clear();
    assert_good(&rig.run(&n, &rw16(0x93, 4000, 0), &[0; 512]));
    assert_eq!(
        rig.disk.log,
        vec![BlockRequest::WriteZeroes {
            offset: 4000 * 512,
            len: 96 * 512,
            unmap: false
        }]
    );
    let mut limited = Rig::with(LunConfig {
        max_write_same_blocks: 100,
        ..cfg()
    });
    limited.clear_ua(&n);
    let r = limited.run(&n, &rw16(0x93, 0, 0), &[0; 512]);
    assert_eq!(field_pointer(&r), Some((true, 10, None)));
    assert_good(&limited.run(&n, &rw16(0x93, BLOCKS - 100, 0), &[0; 512]));
    assert_eq!(
        sense(&limited.run(&n, &rw16(0x93, 0, 101), &[0; 512])),
        (5, 0x24, 0)
    );
    assert_eq!(
        sense(&rig.run(&n, &rw16(0x93, BLOCKS + 1, 0), &[0; 512])),
        (5, 0x21, 0)
    );
    assert_eq!(
        sense(&rig.run(&n, &rw16(0x93, BLOCKS - 1, 2), &[0; 512])),
        (5, 0x21, 0)
    );
}

fn unmap_list(descs: &[(u64, u32)]) -> Vec<u8> {
    let mut p = vec![0u8; 8];
    let len = 8 + 16 * descs.len();
    p[0..2].copy_from_slice(&((len - 2) as u16).to_be_bytes());
    p[2..4].copy_from_slice(&((len - 8) as u16).to_be_bytes());
    for (lba, n) in descs {
        p.extend(lba.to_be_bytes());
        p.extend(n.to_be_bytes());
        p.extend([0u8; 4]);
    }
    p
}

fn unmap_cdb(len: usize) -> Vec<u8> {
    let mut c = vec![0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    c[7..9].copy_from_slice(&(len as u16).to_be_bytes());
    c
}

#[test]
fn unmap_descriptors_and_lba_status() {
    let (mut rig, n) = rig();
    assert_good(&rig.run(&n, &write10(0, 64), &[0xEE; 64 * 512]));
    let p = unmap_list(&[(0, 8), (16, 0), (32, 8), (BLOCKS, 0)]);
    assert_good(&rig.run(&n, &unmap_cdb(p.len()), &p));
    let discards: Vec<&BlockRequest> = rig
        .disk
        .log
        .iter()
        .filter(|r| matches!(r, BlockRequest::Discard { .. }))
        .collect();
    assert_eq!(discards.len(), 2);
    assert!(rig.disk.data[..8 * 512].iter().all(|&x| x == 0));
    assert!(rig.disk.data[8 * 512..9 * 512].iter().all(|&x| x == 0xEE));
    let mut g = rw16(0x9E, 0, 64);
    g[1] = 0x12;
    let r = rig.run(&n, &g, &[]);
    assert_good(&r);
    let d = &r.data_in;
    let desc = |i: usize| {
        let at = 8 + 16 * i;
        (
            u64::from_be_bytes(d[at..at + 8].try_into().unwrap()),
            u32::from_be_bytes(d[at + 8..at + 12].try_into().unwrap()),
            d[at + 12],
        )
    };
    assert_eq!(desc(0), (0, 8, 1));
    assert_eq!(desc(1), (8, 24, 0));
    assert_eq!(desc(2), (32, 8, 1));
    // Truncation keeps PARAMETER DATA LENGTH.
    g[10..14].copy_from_slice(&24u32.to_be_bytes());
    let r = rig.run(&n, &g, &[]);
    assert_eq!(r.data_in.len(), 24);
    assert!(u32::from_be_bytes(r.data_in[..4].try_into().unwrap()) > 20);
    // Fallback when the backend cannot discard.
    rig.disk.unsupported = vec!["discard"];
    let p = unmap_list(&[(40, 2)]);
    assert_good(&rig.run(&n, &unmap_cdb(p.len()), &p));
    assert!(rig.disk.data[40 * 512..42 * 512].iter().all(|&x| x == 0));
    // Out of range.
    let mut g = rw16(0x9E, BLOCKS, 24);
    g[1] = 0x12;
    assert_eq!(sense(&rig.run(&n, &g, &[])), (5, 0x21, 0));
}

#[test]
fn unmap_validation() {
    let (mut rig, n) = rig();
    assert_good(&rig.run(&n, &unmap_cdb(0), &[]));
    assert_eq!(sense(&rig.run(&n, &unmap_cdb(6), &[0; 6])), (5, 0x1A, 0));
    assert_eq!(sense(&rig.run(&n, &unmap_cdb(24), &[0; 8])), (5, 0x1A, 0));
    let p = unmap_list(&[(BLOCKS - 1, 2)]);
    assert_eq!(sense(&rig.run(&n, &unmap_cdb(p.len()), &p)), (5, 0x21, 0));
    let many: Vec<(u64, u32)> = (0..257).map(|i| (i, 1)).collect();
    let p = unmap_list(&many);
    assert_eq!(sense(&rig.run(&n, &unmap_cdb(p.len()), &p)), (5, 0x26, 0));
    let mut c = unmap_cdb(24);
    c[1] = 1; // ANCHOR
    assert_eq!(
        sense(&rig.run(&n, &c, &unmap_list(&[(0, 1)]))),
        (5, 0x24, 0)
    );
    let mut limited = Rig::with(LunConfig {
        max_unmap_blocks: 10,
        ..cfg()
    });
    limited.clear_ua(&n);
    let p = unmap_list(&[(0, 6), (100, 6)]);
    let r = limited.run(&n, &unmap_cdb(p.len()), &p);
    assert_eq!(sense(&r), (5, 0x26, 0));
    assert_eq!(field_pointer(&r), Some((false, 8 + 16 + 8, None)));
}

#[test]
fn sync_cache_prefetch_and_read_only() {
    let (mut rig, n) = rig();
    assert_good(&rig.run(&n, &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]));
    assert_eq!(rig.disk.log, vec![BlockRequest::Flush]);
    assert_eq!(
        sense(&rig.run(&n, &rw16(0x91, BLOCKS, 1), &[])),
        (5, 0x21, 0)
    );
    rig.disk.log.clear();
    assert_good(&rig.run(&n, &[0x34, 0x02, 0, 0, 0, 0, 3, 0, 1, 0], &[]));
    assert_good(&rig.run(&n, &rw16(0x90, 0, 0), &[]));
    assert_eq!(
        sense(&rig.run(&n, &rw16(0x90, BLOCKS + 1, 0), &[])),
        (5, 0x21, 0)
    );
    assert!(rig.disk.log.is_empty());

    let mut ro = Rig::with(LunConfig {
        read_only: true,
        ..cfg()
    });
    ro.clear_ua(&n);
    assert_eq!(
        ro.run(&n, &[0x1A, 0, 0x3F, 0, 255, 0], &[]).data_in[2] & 0x80,
        0x80
    );
    assert_good(&ro.run(&n, &read10(0, 1), &[]));
    ro.disk.log.clear();
    let mut caw = rw16(0x89, 0, 0);
    caw[13] = 1;
    for (cdb, data) in [
        (write10(0, 1), vec![0u8; 512]),
        (rw16(0x8A, 0, 1), vec![0u8; 512]),
        (rw16(0x93, 0, 1), vec![]),
        (rw16(0x8B, 0, 1), vec![0u8; 512]),
        (caw, vec![0u8; 1024]),
        (unmap_cdb(24), unmap_list(&[(0, 1)])),
        (vec![0x2E, 0, 0, 0, 0, 0, 0, 0, 1, 0], vec![0u8; 512]),
    ] {
        assert_eq!(sense(&ro.run(&n, &cdb, &data)), (7, 0x27, 0), "{cdb:?}");
    }
    assert!(ro.disk.log.is_empty());
}

#[test]
fn io_errors_become_sense() {
    let (mut rig, n) = rig();
    rig.disk.fail_next = Some(IoErrorKind::Medium(MediumOp::Read));
    assert_eq!(sense(&rig.run(&n, &read10(0, 1), &[])), (3, 0x11, 0));
    rig.disk.fail_next = Some(IoErrorKind::Medium(MediumOp::Write));
    assert_eq!(sense(&rig.run(&n, &write10(0, 1), &[0; 512])), (3, 0x0C, 0));
    rig.disk.fail_next = Some(IoErrorKind::NoSpace);
    assert_eq!(
        sense(&rig.run(&n, &write10(0, 1), &[0; 512])),
        (7, 0x27, 0x07)
    );
    rig.disk.fail_next = Some(IoErrorKind::Hardware);
    assert_eq!(
        sense(&rig.run(&n, &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[])),
        (4, 0x44, 0)
    );
    rig.disk.unsupported = vec!["flush"];
    assert_good(&rig.run(&n, &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]));
}

#[test]
fn read_capacity16_reports_physical_block_exponent() {
    let mut rig = Rig::with(LunConfig {
        physical_block_size: 4096,
        ..cfg()
    });
    let n = nexus(1);
    rig.clear_ua(&n);
    let mut c = rw16(0x9E, 0, 0);
    c[1] = 0x10;
    c[13] = 32;
    let r = rig.run(&n, &c, &[]);
    assert_good(&r);
    assert_eq!(
        r.data_in[13] & 0x0F,
        3,
        "8 logical blocks per physical block"
    );
    let same = LunConfig {
        physical_block_size: 512,
        ..cfg()
    };
    assert_eq!(same.lbppb_exponent(), 0);
    let odd = LunConfig {
        physical_block_size: 1536,
        ..cfg()
    };
    assert_eq!(odd.lbppb_exponent(), 0);
}
