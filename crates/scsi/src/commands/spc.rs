//! SPC-4 primary commands: INQUIRY, REQUEST SENSE, MODE SENSE/SELECT, START STOP
//! UNIT, REPORT SUPPORTED OPERATION CODES, REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS
//! and RESERVE/RELEASE (6/10).

use bytes::Bytes;

use crate::cdb::{put_be, truncate, Fields};
use crate::lun::{Exec, Fail, LogicalUnit};
use crate::mode::{mode_select, mode_sense};
use crate::opcodes::{has_service_action, CmdDesc};
use crate::sense::{Asc, Sense, SenseKey};
use crate::task::Task;
use crate::types::{Command, Nexus};
use crate::vpd;

/// REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS byte 0: ABORT TASK, ABORT TASK SET,
/// CLEAR TASK SET, LOGICAL UNIT RESET, TARGET RESET.
pub const SUPPORTED_TMFS: u8 = 0x80 | 0x40 | 0x10 | 0x08 | 0x02;

/// Recommended command timeout reported with RCTD, in seconds.
const RECOMMENDED_TIMEOUT_SECS: u32 = 60;

fn timeouts_descriptor() -> [u8; 12] {
    let mut t = [0u8; 12];
    t[1] = 0x0A;
    put_be(&mut t, 8, &RECOMMENDED_TIMEOUT_SECS.to_be_bytes());
    t
}

impl LogicalUnit {
    pub(crate) fn inquiry(&self, cdb: Fields<'_>) -> Exec {
        let evpd = cdb.u8(1) & 0x01 != 0;
        let page = cdb.u8(2);
        let alloc = usize::from(cdb.be16(3));
        let data = if evpd {
            vpd::page(page, &self.cfg, &self.port).ok_or(Sense::invalid_cdb(2, None))?
        } else if page != 0 {
            return Err(Sense::invalid_cdb(2, None).into());
        } else {
            vpd::standard(&self.cfg)
        };
        Ok(Task::good(truncate(data, alloc)))
    }

    /// REQUEST SENSE reports (and clears) a pending unit attention as parameter data;
    /// otherwise NO SENSE.
    pub(crate) fn request_sense(&mut self, nexus: &Nexus, cdb: Fields<'_>) -> Task {
        let desc = cdb.u8(1) & 0x01 != 0;
        let alloc = usize::from(cdb.u8(4));
        let sense = match self.nexuses.pop(nexus.id) {
            Some(asc) => Sense::unit_attention(asc),
            None => Sense::new(SenseKey::NoSense, Asc::NO_ADDITIONAL_SENSE),
        };
        Task::good(truncate(sense.encode(desc).to_vec(), alloc))
    }

    pub(crate) fn mode_sense(&self, cdb: Fields<'_>, ten: bool) -> Exec {
        let d = mode_sense(&self.mode, &self.cfg, self.num_blocks, ten, cdb)?;
        Ok(Task::good(d))
    }

    pub(crate) fn mode_select(
        &mut self,
        nexus: &Nexus,
        cdb: Fields<'_>,
        cmd: &Command,
        ten: bool,
    ) -> Exec {
        let plen = if ten {
            usize::from(cdb.be16(7))
        } else {
            usize::from(cdb.u8(4))
        };
        if plen == 0 {
            return Ok(Task::good(Bytes::new()));
        }
        if cdb.u8(1) & 0x10 == 0 {
            return Err(Sense::invalid_cdb(1, Some(4)).into());
        }
        let data = cmd
            .data_out
            .get(..plen)
            .ok_or(Sense::illegal(Asc::PARAMETER_LIST_LENGTH_ERROR))?;
        let changed = mode_select(&mut self.mode, &self.cfg, self.num_blocks, ten, data)?;
        if changed {
            self.ua_others(Some(nexus.id), Asc::MODE_PARAMETERS_CHANGED);
        }
        Ok(Task::good(Bytes::new()))
    }

    /// START STOP UNIT: the medium is not removable and always spinning; a stop with
    /// NO_FLUSH clear flushes the cache.
    pub(crate) fn start_stop(&self, cdb: Fields<'_>) -> Task {
        let start = cdb.u8(4) & 0x01 != 0;
        let no_flush = cdb.u8(4) & 0x04 != 0;
        let power_condition = cdb.u8(4) >> 4;
        if !start && !no_flush && power_condition == 0 {
            Task::flush()
        } else {
            Task::good(Bytes::new())
        }
    }

    fn one_command(desc: Option<&CmdDesc>, rctd: bool) -> Vec<u8> {
        match desc {
            None => vec![0, 0x01, 0, 0], // SUPPORT 001b: not supported
            Some(d) => {
                let mut v = vec![0, 0x03 | if rctd { 0x80 } else { 0 }];
                v.extend_from_slice(&(d.cdb_len() as u16).to_be_bytes());
                v.extend_from_slice(&d.usage);
                if rctd {
                    v.extend_from_slice(&timeouts_descriptor());
                }
                v
            }
        }
    }

    pub(crate) fn report_supported_opcodes(&self, cdb: Fields<'_>) -> Exec {
        let rctd = cdb.u8(2) & 0x80 != 0;
        let options = cdb.u8(2) & 0x07;
        let opcode = cdb.u8(3);
        let sa = cdb.be16(4);
        let alloc = cdb.be32(6) as usize;
        let known: Vec<&CmdDesc> = self
            .fast_table()
            .iter()
            .filter(|d| d.opcode == opcode)
            .collect();
        let with_sa = has_service_action(opcode);
        let bad_options = || Fail::Check(Sense::invalid_cdb(2, Some(2)));
        let data = match options {
            0 => {
                let mut v = vec![0u8; 4];
                for d in self.fast_table() {
                    v.push(d.opcode);
                    v.push(0);
                    v.extend_from_slice(&u16::from(d.sa.unwrap_or(0)).to_be_bytes());
                    v.push(0);
                    v.push(if rctd { 0x02 } else { 0 } | u8::from(d.sa.is_some()));
                    v.extend_from_slice(&(d.cdb_len() as u16).to_be_bytes());
                    if rctd {
                        v.extend_from_slice(&timeouts_descriptor());
                    }
                }
                let len = (v.len() - 4) as u32;
                put_be(&mut v, 0, &len.to_be_bytes());
                v
            }
            1 => {
                if with_sa {
                    return Err(bad_options());
                }
                Self::one_command(known.first().copied(), rctd)
            }
            2 => {
                if !with_sa {
                    return Err(bad_options());
                }
                let d = known
                    .iter()
                    .find(|d| d.sa.map(u16::from) == Some(sa))
                    .copied();
                Self::one_command(d, rctd)
            }
            3 => {
                let d = if with_sa {
                    known
                        .iter()
                        .find(|d| d.sa.map(u16::from) == Some(sa))
                        .copied()
                } else {
                    known.first().copied()
                };
                Self::one_command(d, rctd)
            }
            _ => return Err(bad_options()),
        };
        Ok(Task::good(truncate(data, alloc)))
    }

    pub(crate) fn report_supported_tmfs(&self, cdb: Fields<'_>) -> Task {
        let repd = cdb.u8(2) & 0x80 != 0;
        let alloc = cdb.be32(6) as usize;
        let mut d = vec![0u8; if repd { 16 } else { 4 }];
        d[0] = SUPPORTED_TMFS;
        if repd {
            d[3] = 0x0C;
        }
        Task::good(truncate(d, alloc))
    }

    /// READ DEFECT DATA (10)/(12): the LUN has no known defects, so the lists asked for are
    /// reported valid and empty, in the address format asked for.
    pub(crate) fn read_defect_data(&self, twelve: bool, cdb: Fields<'_>) -> Task {
        let (flags, alloc, header_len) = if twelve {
            (cdb.u8(1), cdb.be32(6) as usize, 8)
        } else {
            (cdb.u8(2), usize::from(cdb.be16(7)), 4)
        };
        let mut d = vec![0u8; header_len];
        // PLISTV/GLISTV mirror REQ_PLIST/REQ_GLIST; the defect list length stays 0.
        d[1] = flags & 0x1F;
        Task::good(truncate(d, alloc))
    }

    pub(crate) fn reserve(&mut self, nexus: &Nexus) -> Exec {
        match self.reserve6 {
            Some(h) if h != nexus.id => Err(Fail::Conflict),
            _ => {
                self.reserve6 = Some(nexus.id);
                Ok(Task::good(Bytes::new()))
            }
        }
    }

    pub(crate) fn release(&mut self, nexus: &Nexus) -> Task {
        if self.reserve6 == Some(nexus.id) {
            self.reserve6 = None;
        }
        Task::good(Bytes::new())
    }
}
