//! The set of logical units behind one SCSI target: routes commands by LUN, answers
//! REPORT LUNS, and answers for LUNs that do not exist (INQUIRY with peripheral
//! qualifier 011b, REQUEST SENSE with LOGICAL UNIT NOT SUPPORTED as data, anything
//! else CHECK CONDITION 05/25/00).

use std::collections::BTreeMap;

use crate::cdb::{truncate, Fields};
use crate::fast::Admission;
use crate::lun::{Exec, LogicalUnit};
use crate::opcodes::op;
use crate::response::Response;
use crate::sense::{Asc, Sense};
use crate::task::Task;
use crate::types::{Command, Nexus, ResetKind};
use crate::vpd;

/// Encode a LUN number as the 8-byte SAM LUN field (peripheral addressing below 256,
/// flat space addressing up to 16383, extended flat for larger values).
pub fn encode_lun(lun: u64) -> [u8; 8] {
    let mut b = [0u8; 8];
    if lun < 256 {
        b[1] = lun as u8;
    } else if lun < 0x4000 {
        b[0] = 0x40 | ((lun >> 8) as u8 & 0x3F);
        b[1] = lun as u8;
    } else {
        // Extended flat space addressing (length 3 bytes).
        b[0] = 0xD2;
        b[1] = (lun >> 16) as u8;
        b[2] = (lun >> 8) as u8;
        b[3] = lun as u8;
    }
    b
}

/// Decode the 8-byte SAM LUN field into a LUN number (inverse of [`encode_lun`]);
/// unsupported addressing methods yield `None`.
pub fn decode_lun(b: [u8; 8]) -> Option<u64> {
    match b[0] >> 6 {
        0 if b[0] == 0 => Some(u64::from(b[1])),
        1 => Some((u64::from(b[0] & 0x3F) << 8) | u64::from(b[1])),
        3 if b[0] == 0xD2 => {
            Some((u64::from(b[1]) << 16) | (u64::from(b[2]) << 8) | u64::from(b[3]))
        }
        _ => None,
    }
}

/// REPORT LUNS data for these LUN numbers.
pub(crate) fn report_luns(luns: &[u64], cdb: Fields<'_>) -> Exec {
    let select = cdb.u8(2);
    let alloc = cdb.be32(6) as usize;
    let list: &[u64] = match select {
        0x00 | 0x02 => luns,
        0x01 | 0x10 => &[], // no well-known / administrative LUNs
        0x11 | 0x12 => luns,
        _ => return Err(Sense::invalid_cdb(2, None).into()),
    };
    let mut d = vec![0u8; 8];
    let len = (list.len() * 8) as u32;
    d[..4].copy_from_slice(&len.to_be_bytes());
    for l in list {
        d.extend_from_slice(&encode_lun(*l));
    }
    Ok(Task::good(truncate(d, alloc)))
}

/// All logical units of one target.
#[derive(Debug, Default)]
pub struct ScsiTarget {
    luns: BTreeMap<u64, LogicalUnit>,
}

impl ScsiTarget {
    /// A target with these LUNs (later duplicates replace earlier ones).
    pub fn new(luns: Vec<(u64, LogicalUnit)>) -> Self {
        ScsiTarget {
            luns: luns.into_iter().collect(),
        }
    }

    /// Start a command addressed to `lun`.
    pub fn start(&mut self, nexus: &Nexus, lun: u64, cmd: &Command) -> Task {
        let opcode = cmd.cdb.first().copied().unwrap_or(0xFF);
        if opcode == op::REPORT_LUNS {
            // REPORT LUNS is allowed whatever the reservations and reports no unit
            // attentions, so it is answered here for every LUN number.
            return self.report_luns_task(cmd);
        }
        match self.luns.get_mut(&lun) {
            Some(lu) => lu.start(nexus, cmd),
            None => missing_lun(cmd),
        }
    }

    /// Admits `nexus` to `lun`'s fast path (`LogicalUnit::admit`); call under the same
    /// lock as the `start` before it.
    pub fn admit(&self, nexus: &Nexus, lun: u64, admission: &Admission) {
        if let Some(lu) = self.luns.get(&lun) {
            lu.admit(nexus, admission);
        }
    }

    fn report_luns_task(&self, cmd: &Command) -> Task {
        let numbers: Vec<u64> = self.luns.keys().copied().collect();
        let cdb = Fields(cmd.cdb);
        if cmd.cdb.len() < 12 {
            return Task::done(Response::check(
                &Sense::illegal(Asc::INVALID_FIELD_IN_CMD_IU),
                false,
            ));
        }
        let t10 = [0xA0u8, 0, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0];
        for (i, (&b, &m)) in cmd.cdb.iter().zip(t10.iter()).enumerate().skip(1) {
            if b & !m != 0 {
                let bit = 7 - (b & !m).leading_zeros() as u8;
                return Task::done(Response::check(
                    &Sense::invalid_cdb(i as u16, Some(bit)),
                    false,
                ));
            }
        }
        match report_luns(&numbers, cdb) {
            Ok(t) => t,
            Err(crate::lun::Fail::Check(s)) => Task::done(Response::check(&s, false)),
            Err(crate::lun::Fail::Conflict) => Task::done(Response::conflict()),
        }
    }

    /// The logical unit `lun`, for resets, capacity changes and PR restore.
    pub fn lun_mut(&mut self, lun: u64) -> Option<&mut LogicalUnit> {
        self.luns.get_mut(&lun)
    }

    /// The logical unit `lun`.
    pub fn lun(&self, lun: u64) -> Option<&LogicalUnit> {
        self.luns.get(&lun)
    }

    /// All LUNs in ascending order.
    pub fn luns(&self) -> impl Iterator<Item = (u64, &LogicalUnit)> {
        self.luns.iter().map(|(n, l)| (*n, l))
    }

    /// Reset every LUN (TARGET RESET / power on).
    pub fn reset(&mut self, kind: ResetKind) {
        for l in self.luns.values_mut() {
            l.reset(kind);
        }
    }

    /// An I_T nexus ended: tell every LUN.
    pub fn nexus_gone(&mut self, nexus_id: u64) {
        for l in self.luns.values_mut() {
            l.nexus_gone(nexus_id);
        }
    }
}

/// Answer for a LUN that does not exist.
fn missing_lun(cmd: &Command) -> Task {
    let cdb = Fields(cmd.cdb);
    match cdb.u8(0) {
        op::INQUIRY => {
            let evpd = cdb.u8(1) & 0x01 != 0;
            let alloc = usize::from(cdb.be16(3));
            Task::good(truncate(vpd::not_connected(evpd, cdb.u8(2)), alloc))
        }
        op::REQUEST_SENSE => {
            let desc = cdb.u8(1) & 0x01 != 0;
            let alloc = usize::from(cdb.u8(4));
            let s = Sense::illegal(Asc::LU_NOT_SUPPORTED).encode(desc);
            Task::good(truncate(s.to_vec(), alloc))
        }
        _ => Task::done(Response::check(
            &Sense::illegal(Asc::LU_NOT_SUPPORTED),
            false,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lun_encoding_round_trips() {
        for l in [0u64, 1, 255, 256, 0x3FFF, 0x4000, 0xFF_FFFF] {
            assert_eq!(decode_lun(encode_lun(l)), Some(l), "{l}");
        }
        assert_eq!(encode_lun(5), [0, 5, 0, 0, 0, 0, 0, 0]);
        assert_eq!(encode_lun(300), [0x41, 0x2C, 0, 0, 0, 0, 0, 0]);
        assert_eq!(decode_lun([0x80, 0, 0, 0, 0, 0, 0, 0]), None);
    }
}
