//! REPORT TARGET PORT GROUPS for implicit ALUA: one target port group containing the
//! LUN's target port, always active/optimized (the gateway refuses service on a node
//! that cannot write, so there is no standby path to report).

use crate::cdb::{put_be, truncate, Fields};
use crate::lun::{Exec, LogicalUnit};
use crate::sense::Sense;
use crate::task::Task;

impl LogicalUnit {
    pub(crate) fn report_target_port_groups(&self, cdb: Fields<'_>) -> Exec {
        let format = cdb.u8(1) >> 5;
        let alloc = cdb.be32(6) as usize;
        let extended = match format {
            0 => false,
            1 => true,
            _ => return Err(Sense::invalid_cdb(1, Some(7)).into()),
        };
        let hdr = if extended { 8 } else { 4 };
        let mut d = vec![0u8; hdr];
        if extended {
            d[4] = 0x10; // format type 1: extended header
        }
        let mut group = vec![0u8; 8];
        group[0] = 0x00; // asymmetric access state: active/optimized
        group[1] = 0x01; // AO_SUP
        put_be(&mut group, 2, &self.port.port_group.to_be_bytes());
        group[7] = 1; // target port count
        d.extend(group);
        d.extend_from_slice(&[0, 0]);
        d.extend_from_slice(&self.port.relative_port_id.to_be_bytes());
        let len = (d.len() - 4) as u32;
        put_be(&mut d, 0, &len.to_be_bytes());
        Ok(Task::good(truncate(d, alloc)))
    }
}
