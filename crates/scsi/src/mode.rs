//! Mode parameters: the caching (0x08), control (0x0A) and informational exceptions
//! control (0x1C) pages in their current, changeable and default forms, MODE SENSE(6/10)
//! data building and MODE SELECT(6/10) parameter list validation against the
//! changeable masks.

use bytes::Bytes;

use crate::cdb::{put_be, truncate, Fields};
use crate::sense::{Asc, Sense, SenseKey};
use crate::types::LunConfig;

/// Current values of the changeable mode parameters (shared by all nexuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ModeState {
    /// WCE: writes may be cached (only with a volatile cache configured).
    pub wce: bool,
    /// D_SENSE: report sense data in descriptor format.
    pub d_sense: bool,
    /// SWP: software write protect.
    pub swp: bool,
}

impl ModeState {
    pub fn defaults(cfg: &LunConfig) -> Self {
        ModeState {
            wce: cfg.write_cache,
            d_sense: false,
            swp: false,
        }
    }
}

/// Page control of MODE SENSE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pc {
    Current,
    Changeable,
    Default,
}

const CACHING: u8 = 0x08;
const CONTROL: u8 = 0x0A;
const INFO_EXCEPTIONS: u8 = 0x1C;
const ALL_PAGES: u8 = 0x3F;
/// Pages in ascending order.
const PAGES: [u8; 3] = [CACHING, CONTROL, INFO_EXCEPTIONS];

fn page(code: u8, pc: Pc, st: &ModeState, cfg: &LunConfig) -> Option<Vec<u8>> {
    let shown = match pc {
        Pc::Current => *st,
        Pc::Default => ModeState::defaults(cfg),
        Pc::Changeable => ModeState {
            wce: cfg.write_cache,
            d_sense: true,
            swp: true,
        },
    };
    let changeable = pc == Pc::Changeable;
    match code {
        CACHING => {
            let mut p = vec![0u8; 20];
            p[0] = CACHING;
            p[1] = 18;
            if shown.wce {
                p[2] |= 0x04;
            }
            Some(p)
        }
        CONTROL => {
            let mut p = vec![0u8; 12];
            p[0] = CONTROL;
            p[1] = 10;
            if shown.d_sense {
                p[2] |= 0x04;
            }
            if !changeable {
                p[3] = 0x10; // QUEUE ALGORITHM MODIFIER 1: unrestricted reordering
            }
            if shown.swp {
                p[4] |= 0x08;
            }
            if !changeable {
                put_be(&mut p, 8, &0xFFFFu16.to_be_bytes()); // BUSY TIMEOUT PERIOD: unlimited
            }
            Some(p)
        }
        INFO_EXCEPTIONS => {
            let mut p = vec![0u8; 12];
            p[0] = INFO_EXCEPTIONS;
            p[1] = 10;
            if !changeable {
                p[2] = 0x08; // DEXCPT: no informational exception reporting
            }
            Some(p)
        }
        _ => None,
    }
}

fn block_descriptor(long: bool, pc: Pc, cfg: &LunConfig, num_blocks: u64) -> Vec<u8> {
    let mut d = vec![0u8; if long { 16 } else { 8 }];
    if pc == Pc::Changeable {
        return d;
    }
    if long {
        put_be(&mut d, 0, &num_blocks.to_be_bytes());
        put_be(&mut d, 12, &cfg.block_size.to_be_bytes());
    } else {
        let n = u32::try_from(num_blocks).unwrap_or(u32::MAX);
        put_be(&mut d, 0, &n.to_be_bytes());
        put_be(&mut d, 5, &cfg.block_size.to_be_bytes()[1..]);
    }
    d
}

/// Device-specific parameter of the mode parameter header: WP and DPOFUA.
fn device_specific(st: &ModeState, cfg: &LunConfig) -> u8 {
    let wp = if cfg.read_only || st.swp { 0x80 } else { 0 };
    wp | 0x10
}

/// Build MODE SENSE(6) (`ten == false`) or MODE SENSE(10) data.
pub(crate) fn mode_sense(
    st: &ModeState,
    cfg: &LunConfig,
    num_blocks: u64,
    ten: bool,
    cdb: Fields<'_>,
) -> Result<Bytes, Sense> {
    let dbd = cdb.u8(1) & 0x08 != 0;
    let llbaa = ten && cdb.u8(1) & 0x10 != 0;
    let pc = match cdb.u8(2) >> 6 {
        0 => Pc::Current,
        1 => Pc::Changeable,
        2 => Pc::Default,
        _ => {
            return Err(Sense::new(
                SenseKey::IllegalRequest,
                Asc::SAVING_PARAMS_NOT_SUPPORTED,
            ))
        }
    };
    let code = cdb.u8(2) & 0x3F;
    let subpage = cdb.u8(3);
    if subpage != 0 && subpage != 0xFF {
        return Err(Sense::invalid_cdb(3, None));
    }
    let codes: Vec<u8> = if code == ALL_PAGES {
        PAGES.to_vec()
    } else if PAGES.contains(&code) {
        vec![code]
    } else {
        return Err(Sense::invalid_cdb(2, Some(5)));
    };
    let alloc = if ten {
        usize::from(cdb.be16(7))
    } else {
        usize::from(cdb.u8(4))
    };
    let hdr = if ten { 8 } else { 4 };
    let mut out = vec![0u8; hdr];
    if !dbd {
        out.extend(block_descriptor(llbaa, pc, cfg, num_blocks));
    }
    for c in codes {
        out.extend(page(c, pc, st, cfg).unwrap_or_default());
    }
    let bd_len = if dbd {
        0
    } else if llbaa {
        16
    } else {
        8
    };
    let dsp = device_specific(st, cfg);
    if ten {
        let len = u16::try_from(out.len() - 2).unwrap_or(u16::MAX);
        put_be(&mut out, 0, &len.to_be_bytes());
        out[3] = dsp;
        out[4] = u8::from(llbaa && !dbd);
        put_be(&mut out, 6, &(bd_len as u16).to_be_bytes());
    } else {
        out[0] = u8::try_from(out.len() - 1).unwrap_or(u8::MAX);
        out[2] = dsp;
        out[3] = bd_len as u8;
    }
    Ok(truncate(out, alloc))
}

fn param_len_error() -> Sense {
    Sense::illegal(Asc::PARAMETER_LIST_LENGTH_ERROR)
}

/// Validate and apply a MODE SELECT parameter list. Returns whether any value changed.
/// Nothing is applied unless the whole list is valid.
pub(crate) fn mode_select(
    st: &mut ModeState,
    cfg: &LunConfig,
    num_blocks: u64,
    ten: bool,
    data: &[u8],
) -> Result<bool, Sense> {
    if data.is_empty() {
        return Ok(false);
    }
    let p = Fields(data);
    let hdr = if ten { 8 } else { 4 };
    if data.len() < hdr {
        return Err(param_len_error());
    }
    let medium_at = if ten { 2 } else { 1 };
    if p.u8(medium_at) != 0 {
        return Err(Sense::invalid_param(medium_at as u16, None));
    }
    let long = ten && p.u8(4) & 0x01 != 0;
    let (bd_len, bd_at) = if ten {
        (usize::from(p.be16(6)), 6u16)
    } else {
        (usize::from(p.u8(3)), 3u16)
    };
    if bd_len != 0 && bd_len != if long { 16 } else { 8 } {
        return Err(Sense::invalid_param(bd_at, None));
    }
    if data.len() < hdr + bd_len {
        return Err(param_len_error());
    }
    if bd_len > 0 {
        let (blocks, blen, blen_at) = if long {
            (p.be64(hdr), p.be32(hdr + 12), hdr + 12)
        } else {
            let n = u64::from(p.be32(hdr));
            let n = if n == u64::from(u32::MAX) && num_blocks > n {
                num_blocks
            } else {
                n
            };
            (n, p.be24(hdr + 5), hdr + 5)
        };
        if blen != cfg.block_size {
            return Err(Sense::invalid_param(blen_at as u16, None));
        }
        if blocks != 0 && blocks != num_blocks {
            return Err(Sense::invalid_param(hdr as u16, None));
        }
    }
    let mut new = *st;
    let mut pos = hdr + bd_len;
    while pos < data.len() {
        let b0 = p.u8(pos);
        if b0 & 0x80 != 0 {
            return Err(Sense::invalid_param(pos as u16, Some(7)));
        }
        if b0 & 0x40 != 0 {
            return Err(Sense::invalid_param(pos as u16, Some(6)));
        }
        let code = b0 & 0x3F;
        let (Some(cur), Some(chg)) = (
            page(code, Pc::Current, &new, cfg),
            page(code, Pc::Changeable, &new, cfg),
        ) else {
            return Err(Sense::invalid_param(pos as u16, Some(5)));
        };
        if pos + 1 >= data.len() {
            return Err(param_len_error());
        }
        let total = usize::from(p.u8(pos + 1)) + 2;
        if total != cur.len() {
            return Err(Sense::invalid_param(pos as u16 + 1, None));
        }
        if pos + total > data.len() {
            return Err(param_len_error());
        }
        let given = p.slice(pos, total);
        for i in 2..total {
            let g = given.get(i).copied().unwrap_or(0);
            let c = cur.get(i).copied().unwrap_or(0);
            let m = chg.get(i).copied().unwrap_or(0);
            let bad = (g ^ c) & !m;
            if bad != 0 {
                let bit = 7 - bad.leading_zeros() as u8;
                return Err(Sense::invalid_param((pos + i) as u16, Some(bit)));
            }
        }
        let g = |i: usize| given.get(i).copied().unwrap_or(0);
        match code {
            CACHING => new.wce = g(2) & 0x04 != 0,
            CONTROL => {
                new.d_sense = g(2) & 0x04 != 0;
                new.swp = g(4) & 0x08 != 0;
            }
            _ => {}
        }
        pos += total;
    }
    let changed = new != *st;
    *st = new;
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LunConfig {
        LunConfig {
            num_blocks: 1000,
            ..LunConfig::default()
        }
    }

    #[test]
    fn sense6_all_pages_with_block_descriptor() {
        let c = cfg();
        let st = ModeState::defaults(&c);
        let d = mode_sense(&st, &c, 1000, false, Fields(&[0x1A, 0, 0x3F, 0, 255, 0])).unwrap();
        assert_eq!(d.len(), 4 + 8 + 20 + 12 + 12);
        assert_eq!(d[0] as usize, d.len() - 1);
        assert_eq!(d[2], 0x10); // DPOFUA, not write protected
        assert_eq!(d[3], 8);
        assert_eq!(&d[4..8], &1000u32.to_be_bytes());
        assert_eq!(&d[9..12], &[0, 2, 0]);
        assert_eq!(d[12], CACHING);
        assert_eq!(d[14] & 0x04, 0x04); // WCE
    }

    #[test]
    fn sense_truncates_and_rejects() {
        let c = cfg();
        let st = ModeState::defaults(&c);
        let d = mode_sense(&st, &c, 1000, false, Fields(&[0x1A, 0, 0x3F, 0, 4, 0])).unwrap();
        assert_eq!(d.len(), 4);
        let e = mode_sense(&st, &c, 1000, false, Fields(&[0x1A, 0, 0xC8, 0, 255, 0])).unwrap_err();
        assert_eq!(e.asc, Asc::SAVING_PARAMS_NOT_SUPPORTED);
        let e = mode_sense(&st, &c, 1000, false, Fields(&[0x1A, 0, 0x01, 0, 255, 0])).unwrap_err();
        assert_eq!(e, Sense::invalid_cdb(2, Some(5)));
        let e =
            mode_sense(&st, &c, 1000, false, Fields(&[0x1A, 0, 0x08, 0x01, 255, 0])).unwrap_err();
        assert_eq!(e, Sense::invalid_cdb(3, None));
    }

    #[test]
    fn sense10_long_lba() {
        let c = cfg();
        let st = ModeState::defaults(&c);
        let d = mode_sense(
            &st,
            &c,
            1000,
            true,
            Fields(&[0x5A, 0x10, 0x0A, 0, 0, 0, 0, 1, 0, 0]),
        )
        .unwrap();
        assert_eq!(d.len(), 8 + 16 + 12);
        assert_eq!(d[4], 1);
        assert_eq!(&d[6..8], &[0, 16]);
        assert_eq!(&d[8..16], &1000u64.to_be_bytes());
    }

    #[test]
    fn select_control_page_changes_dsense_and_swp() {
        let c = cfg();
        let mut st = ModeState::defaults(&c);
        let mut pl = vec![0u8, 0, 0, 0];
        let mut ctl = page(CONTROL, Pc::Current, &st, &c).unwrap();
        ctl[2] |= 0x04;
        ctl[4] |= 0x08;
        pl.extend(ctl);
        assert!(mode_select(&mut st, &c, 1000, false, &pl).unwrap());
        assert!(st.d_sense && st.swp);
        assert!(!mode_select(&mut st, &c, 1000, false, &pl).unwrap());
    }

    #[test]
    fn select_rejects_unchangeable_bits_atomically() {
        let c = cfg();
        let mut st = ModeState::defaults(&c);
        let mut pl = vec![0u8, 0, 0, 0];
        let mut ctl = page(CONTROL, Pc::Current, &st, &c).unwrap();
        ctl[2] |= 0x04; // D_SENSE ok
        pl.extend(ctl);
        let mut ie = page(INFO_EXCEPTIONS, Pc::Current, &st, &c).unwrap();
        ie[3] = 0x06; // MRIE not changeable
        pl.extend(ie);
        let e = mode_select(&mut st, &c, 1000, false, &pl).unwrap_err();
        assert_eq!(e, Sense::invalid_param(4 + 12 + 3, Some(2)));
        assert!(!st.d_sense);
    }

    #[test]
    fn select_validates_lengths_and_descriptor() {
        let c = cfg();
        let mut st = ModeState::defaults(&c);
        assert_eq!(
            mode_select(&mut st, &c, 1000, false, &[0, 0])
                .unwrap_err()
                .asc,
            Asc::PARAMETER_LIST_LENGTH_ERROR
        );
        let mut pl = vec![0u8, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0x10, 0];
        let e = mode_select(&mut st, &c, 1000, false, &pl).unwrap_err();
        assert_eq!(e, Sense::invalid_param(9, None));
        pl[10] = 0x02;
        assert!(!mode_select(&mut st, &c, 1000, false, &pl).unwrap());
        let e = mode_select(
            &mut st,
            &c,
            1000,
            false,
            &[0, 0, 0, 0, 0x08, 5, 0, 0, 0, 0, 0],
        )
        .unwrap_err();
        assert_eq!(e, Sense::invalid_param(5, None));
    }
}
