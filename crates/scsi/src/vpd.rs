//! INQUIRY data: the standard page and the vital product data pages 0x00, 0x80,
//! 0x83, 0x86, 0xB0, 0xB1 and 0xB2, plus the answer for a LUN that does not exist.

use crate::cdb::{put_ascii, put_be};
use crate::types::{LunConfig, TargetPort};

/// Supported VPD pages, ascending.
pub const SUPPORTED_PAGES: [u8; 7] = [0x00, 0x80, 0x83, 0x86, 0xB0, 0xB1, 0xB2];

/// Version descriptors claimed: SAM-5, SPC-4, SBC-3.
const VERSION_DESCRIPTORS: [u16; 3] = [0x00A0, 0x0460, 0x04C0];

/// MAXIMUM TRANSFER LENGTH actually enforced, in blocks.
pub(crate) fn max_transfer_blocks(cfg: &LunConfig) -> u32 {
    let hard = u32::MAX / cfg.block_size.max(1);
    match cfg.max_transfer_blocks {
        0 => hard,
        n => n.min(hard),
    }
}

/// MAXIMUM COMPARE AND WRITE LENGTH, in blocks.
pub(crate) fn max_compare_and_write_blocks(cfg: &LunConfig) -> u8 {
    u8::try_from(max_transfer_blocks(cfg).clamp(1, 255)).unwrap_or(255)
}

/// Standard INQUIRY data (96 bytes).
pub(crate) fn standard(cfg: &LunConfig) -> Vec<u8> {
    let mut d = vec![0u8; 96];
    d[0] = 0x00; // connected, direct access block device
    d[2] = 0x06; // SPC-4
    d[3] = 0x12; // HISUP, response data format 2
    d[4] = (d.len() - 5) as u8;
    d[5] = 0x10; // TPGS = 01b: implicit ALUA
    d[7] = 0x02; // CMDQUE
    put_ascii(&mut d, 8, 8, &cfg.vendor);
    put_ascii(&mut d, 16, 16, &cfg.product);
    put_ascii(&mut d, 32, 4, &cfg.revision);
    for (i, v) in VERSION_DESCRIPTORS.iter().enumerate() {
        put_be(&mut d, 58 + 2 * i, &v.to_be_bytes());
    }
    d
}

/// INQUIRY data for a LUN that is not connected (peripheral qualifier 011b, type 1Fh).
pub(crate) fn not_connected(evpd: bool, page: u8) -> Vec<u8> {
    if evpd {
        vec![0x7F, page, 0, 0]
    } else {
        let mut d = vec![0u8; 36];
        d[0] = 0x7F;
        d[2] = 0x06;
        d[3] = 0x12;
        d[4] = 31;
        d
    }
}

fn with_header(page: u8, body: Vec<u8>) -> Vec<u8> {
    let mut d = vec![0u8, page];
    d.extend_from_slice(&u16::try_from(body.len()).unwrap_or(u16::MAX).to_be_bytes());
    d.extend(body);
    d
}

/// One designation descriptor.
fn designator(assoc_type: u8, code_set: u8, piv_proto: u8, value: &[u8]) -> Vec<u8> {
    let mut d = vec![
        piv_proto | code_set,
        assoc_type,
        0,
        value.len().min(255) as u8,
    ];
    d.extend_from_slice(value.get(..value.len().min(255)).unwrap_or(&[]));
    d
}

/// A SCSI name string: UTF-8, NUL terminated, padded to a multiple of 4.
fn name_string(s: &str) -> Vec<u8> {
    let mut v: Vec<u8> = s.bytes().take(251).collect();
    v.push(0);
    while v.len() & 3 != 0 {
        v.push(0);
    }
    v
}

/// The target port name: `<target name>,t,0x<relative port id>`.
pub(crate) fn target_port_name(port: &TargetPort) -> String {
    format!("{},t,0x{:04x}", port.target_name, port.relative_port_id)
}

fn device_identification(cfg: &LunConfig, port: &TargetPort) -> Vec<u8> {
    // association: 0x00 logical unit, 0x10 target port, 0x20 target device
    let mut body = designator(0x03, 0x01, 0, &cfg.naa);
    let mut t10 = vec![b' '; 8];
    put_ascii(&mut t10, 0, 8, &cfg.vendor);
    t10.extend(
        cfg.serial
            .bytes()
            .filter(|c| (0x20..=0x7e).contains(c))
            .take(200),
    );
    body.extend(designator(0x01, 0x02, 0, &t10));
    let mut rel = vec![0u8, 0];
    rel.extend_from_slice(&port.relative_port_id.to_be_bytes());
    body.extend(designator(0x10 | 0x04, 0x01, 0, &rel));
    let mut tpg = vec![0u8, 0];
    tpg.extend_from_slice(&port.port_group.to_be_bytes());
    body.extend(designator(0x10 | 0x05, 0x01, 0, &tpg));
    body.extend(designator(
        0x10 | 0x08,
        0x03,
        0,
        &name_string(&target_port_name(port)),
    ));
    body.extend(designator(
        0x20 | 0x08,
        0x03,
        0,
        &name_string(&port.target_name),
    ));
    with_header(0x83, body)
}

fn block_limits(cfg: &LunConfig) -> Vec<u8> {
    let mut b = vec![0u8; 0x3C];
    // b[0]: WSNZ = 0, a WRITE SAME of 0 blocks covers the rest of the medium.
    b[1] = max_compare_and_write_blocks(cfg);
    let granularity = 1u16 << cfg.lbppb_exponent();
    put_be(&mut b, 2, &granularity.to_be_bytes()); // OPTIMAL TRANSFER LENGTH GRANULARITY
    let mtb = max_transfer_blocks(cfg);
    put_be(&mut b, 4, &mtb.to_be_bytes());
    put_be(
        &mut b,
        8,
        &cfg.optimal_transfer_blocks.min(mtb).to_be_bytes(),
    );
    put_be(&mut b, 12, &mtb.to_be_bytes()); // MAXIMUM PREFETCH LENGTH
    if cfg.unmap {
        put_be(&mut b, 16, &cfg.max_unmap_blocks.max(1).to_be_bytes());
        put_be(&mut b, 20, &cfg.max_unmap_descriptors.max(1).to_be_bytes());
        let gran = (cfg.physical_block_size.max(4096) / cfg.block_size.max(1)).max(1);
        put_be(&mut b, 24, &gran.to_be_bytes()); // OPTIMAL UNMAP GRANULARITY
        b[28] = 0x80; // UGAVALID, alignment 0
    }
    put_be(&mut b, 32, &cfg.max_write_same_blocks.to_be_bytes());
    with_header(0xB0, b)
}

fn block_characteristics(cfg: &LunConfig) -> Vec<u8> {
    let mut b = vec![0u8; 0x3C];
    let rate: u16 = if cfg.rotational { 0 } else { 1 };
    put_be(&mut b, 0, &rate.to_be_bytes());
    with_header(0xB1, b)
}

fn provisioning(cfg: &LunConfig) -> Vec<u8> {
    let mut b = vec![0u8; 4];
    if cfg.unmap {
        b[1] = 0x80 | 0x40 | 0x20 | 0x04; // LBPU, LBPWS, LBPWS10, LBPRZ
        b[2] = 0x02; // PROVISIONING TYPE: thin
    }
    with_header(0xB2, b)
}

fn extended_inquiry() -> Vec<u8> {
    let mut b = vec![0u8; 0x3C];
    b[1] = 0x01; // SIMPSUP
    b[4] = 0x10; // LUICLR: unit attentions are cleared per I_T nexus
    with_header(0x86, b)
}

/// VPD page `code`, or None if unsupported.
pub(crate) fn page(code: u8, cfg: &LunConfig, port: &TargetPort) -> Option<Vec<u8>> {
    Some(match code {
        0x00 => with_header(0x00, SUPPORTED_PAGES.to_vec()),
        0x80 => with_header(
            0x80,
            cfg.serial
                .bytes()
                .filter(|c| (0x20..=0x7e).contains(c))
                .take(250)
                .collect(),
        ),
        0x83 => device_identification(cfg, port),
        0x86 => extended_inquiry(),
        0xB0 => block_limits(cfg),
        0xB1 => block_characteristics(cfg),
        0xB2 => provisioning(cfg),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port() -> TargetPort {
        TargetPort {
            target_name: "iqn.2024-01.org.example:t1".into(),
            relative_port_id: 1,
            port_group: 1,
        }
    }

    #[test]
    fn standard_inquiry_fields() {
        let d = standard(&LunConfig::default());
        assert_eq!(d.len(), 96);
        assert_eq!(usize::from(d[4]) + 5, d.len());
        assert_eq!(d[2], 6);
        assert_eq!(d[5] & 0x30, 0x10);
        assert_eq!(&d[8..13], b"LINUX");
        assert_eq!(&d[60..62], &[0x04, 0x60]);
        assert_eq!(&d[62..64], &[0x04, 0xC0]);
    }

    #[test]
    fn every_supported_page_exists_and_has_consistent_length() {
        let cfg = LunConfig::default();
        for p in SUPPORTED_PAGES {
            let d = page(p, &cfg, &port()).unwrap();
            assert_eq!(d[1], p);
            assert_eq!(usize::from(u16::from_be_bytes([d[2], d[3]])) + 4, d.len());
        }
        assert!(page(0x89, &cfg, &port()).is_none());
        assert_eq!(page(0xB0, &cfg, &port()).unwrap()[3], 0x3C);
    }

    #[test]
    fn device_identification_contains_names() {
        let d = page(0x83, &LunConfig::default(), &port()).unwrap();
        let s = String::from_utf8_lossy(&d);
        assert!(s.contains("iqn.2024-01.org.example:t1,t,0x0001"));
        assert_eq!(d[4] & 0x0F, 1); // binary NAA
        assert_eq!(d[5], 0x03);
        assert_eq!(d[7], 16);
    }
}
