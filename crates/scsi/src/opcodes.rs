//! The table of supported commands: operation code, service action, CDB length and the
//! CDB usage data (which bits the device server looks at).
//!
//! One table drives two things so they cannot disagree: REPORT SUPPORTED OPERATION
//! CODES reports the usage data, and every incoming CDB is checked against it (a set
//! bit outside the usage data is INVALID FIELD IN CDB with a field pointer).

use crate::sense::Sense;
use crate::types::LunConfig;

/// Operation codes.
#[allow(missing_docs)]
pub mod op {
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const READ_6: u8 = 0x08;
    pub const WRITE_6: u8 = 0x0A;
    pub const INQUIRY: u8 = 0x12;
    pub const MODE_SELECT_6: u8 = 0x15;
    pub const RESERVE_6: u8 = 0x16;
    pub const RELEASE_6: u8 = 0x17;
    pub const MODE_SENSE_6: u8 = 0x1A;
    pub const START_STOP_UNIT: u8 = 0x1B;
    pub const READ_CAPACITY_10: u8 = 0x25;
    pub const READ_10: u8 = 0x28;
    pub const WRITE_10: u8 = 0x2A;
    pub const WRITE_VERIFY_10: u8 = 0x2E;
    pub const VERIFY_10: u8 = 0x2F;
    pub const PRE_FETCH_10: u8 = 0x34;
    pub const READ_DEFECT_DATA_10: u8 = 0x37;
    pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
    pub const WRITE_SAME_10: u8 = 0x41;
    pub const UNMAP: u8 = 0x42;
    pub const MODE_SELECT_10: u8 = 0x55;
    pub const RESERVE_10: u8 = 0x56;
    pub const RELEASE_10: u8 = 0x57;
    pub const MODE_SENSE_10: u8 = 0x5A;
    pub const PERSISTENT_RESERVE_IN: u8 = 0x5E;
    pub const PERSISTENT_RESERVE_OUT: u8 = 0x5F;
    pub const READ_16: u8 = 0x88;
    pub const COMPARE_AND_WRITE: u8 = 0x89;
    pub const WRITE_16: u8 = 0x8A;
    pub const ORWRITE_16: u8 = 0x8B;
    pub const WRITE_VERIFY_16: u8 = 0x8E;
    pub const VERIFY_16: u8 = 0x8F;
    pub const PRE_FETCH_16: u8 = 0x90;
    pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
    pub const WRITE_SAME_16: u8 = 0x93;
    pub const SERVICE_ACTION_IN_16: u8 = 0x9E;
    pub const REPORT_LUNS: u8 = 0xA0;
    pub const MAINTENANCE_IN: u8 = 0xA3;
    pub const READ_12: u8 = 0xA8;
    pub const WRITE_12: u8 = 0xAA;
    pub const WRITE_VERIFY_12: u8 = 0xAE;
    pub const VERIFY_12: u8 = 0xAF;
    pub const READ_DEFECT_DATA_12: u8 = 0xB7;

    /// SERVICE ACTION IN(16): READ CAPACITY(16).
    pub const SA_READ_CAPACITY_16: u8 = 0x10;
    /// SERVICE ACTION IN(16): GET LBA STATUS.
    pub const SA_GET_LBA_STATUS: u8 = 0x12;
    /// MAINTENANCE IN: REPORT TARGET PORT GROUPS.
    pub const SA_REPORT_TARGET_PORT_GROUPS: u8 = 0x0A;
    /// MAINTENANCE IN: REPORT SUPPORTED OPERATION CODES.
    pub const SA_REPORT_SUPPORTED_OPCODES: u8 = 0x0C;
    /// MAINTENANCE IN: REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS.
    pub const SA_REPORT_SUPPORTED_TMFS: u8 = 0x0D;
}

/// Operation codes whose service action sits in CDB byte 1 bits 4..0.
pub fn has_service_action(opcode: u8) -> bool {
    matches!(
        opcode,
        op::SERVICE_ACTION_IN_16
            | op::MAINTENANCE_IN
            | op::PERSISTENT_RESERVE_IN
            | op::PERSISTENT_RESERVE_OUT
    )
}

/// Identity of a supported command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Cmd {
    TestUnitReady,
    RequestSense,
    Inquiry,
    ReportLuns,
    ReadCapacity10,
    ReadCapacity16,
    GetLbaStatus,
    Read(RwSize),
    Write(RwSize),
    WriteVerify(RwSize),
    Verify(RwSize),
    PreFetch(RwSize),
    SyncCache(RwSize),
    WriteSame(RwSize),
    Unmap,
    CompareAndWrite,
    OrWrite,
    ModeSense6,
    ModeSense10,
    ModeSelect6,
    ModeSelect10,
    StartStopUnit,
    ReportTargetPortGroups,
    ReportSupportedOpcodes,
    ReportSupportedTmfs,
    Reserve6,
    Release6,
    Reserve10,
    Release10,
    PrIn(u8),
    PrOut(u8),
    /// READ DEFECT DATA(10) (false) or (12) (true).
    ReadDefectData(bool),
}

impl Cmd {
    /// Whether the command reads or writes the medium (or flushes it), and nothing else: its
    /// outcome depends only on the medium's geometry, limits and protection
    /// (`commands::sbc::Medium`), so the fast path (`fast.rs`) may start it.
    pub fn accesses_medium(self) -> bool {
        matches!(
            self,
            Cmd::Read(_)
                | Cmd::Write(_)
                | Cmd::WriteVerify(_)
                | Cmd::Verify(_)
                | Cmd::PreFetch(_)
                | Cmd::SyncCache(_)
                | Cmd::WriteSame(_)
                | Cmd::Unmap
                | Cmd::CompareAndWrite
                | Cmd::OrWrite
        )
    }
}

/// CDB flavour of a read/write-class command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RwSize {
    /// 6-byte CDB.
    B6,
    /// 10-byte CDB.
    B10,
    /// 12-byte CDB.
    B12,
    /// 16-byte CDB.
    B16,
}

/// How a command interacts with reservations (SPC-4 / SBC-3 conflict tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrClass {
    /// Allowed whatever the reservation.
    Allowed,
    /// Reads medium or mode data: conflicts under exclusive-access types.
    Read,
    /// Modifies medium or state: conflicts under all types for non-holders.
    Write,
    /// Decided by the handler (START STOP UNIT, RESERVE/RELEASE).
    Special,
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct CmdDesc {
    /// Which command.
    pub cmd: Cmd,
    /// Operation code.
    pub opcode: u8,
    /// Service action, for commands that have one.
    pub sa: Option<u8>,
    /// CDB usage data (byte 0 = opcode; the service action field carries the value).
    pub usage: Vec<u8>,
    /// Persistent reservation class.
    pub pr_class: PrClass,
    /// Allowed while another nexus holds a RESERVE(6)/(10) reservation.
    pub reserve6_allowed: bool,
}

impl CmdDesc {
    /// CDB length.
    pub fn cdb_len(&self) -> usize {
        self.usage.len()
    }

    /// Check `cdb` against the usage data: every set bit must be a used bit.
    pub fn check_reserved(&self, cdb: &[u8]) -> Result<(), Sense> {
        for (i, (&b, &u)) in cdb.iter().zip(self.usage.iter()).enumerate().skip(1) {
            let mask = if i == 1 && self.sa.is_some() {
                u | 0x1F
            } else {
                u
            };
            let bad = b & !mask;
            if bad != 0 {
                let bit = 7 - bad.leading_zeros() as u8;
                return Err(Sense::invalid_cdb(i as u16, Some(bit)));
            }
        }
        Ok(())
    }
}

fn d(cmd: Cmd, usage: &[u8], pr_class: PrClass, reserve6_allowed: bool) -> CmdDesc {
    let opcode = usage.first().copied().unwrap_or(0);
    let sa = if has_service_action(opcode) {
        usage.get(1).map(|b| b & 0x1F)
    } else {
        None
    };
    CmdDesc {
        cmd,
        opcode,
        sa,
        usage: usage.to_vec(),
        pr_class,
        reserve6_allowed,
    }
}

const F: u8 = 0xFF;

/// Build the command table for a LUN with this configuration.
pub fn build_table(cfg: &LunConfig) -> Vec<CmdDesc> {
    use op::*;
    use PrClass::*;
    use RwSize::*;
    let ws_unmap = if cfg.unmap { 0x08 } else { 0x00 };
    let mut t = vec![
        d(
            Cmd::TestUnitReady,
            &[TEST_UNIT_READY, 0, 0, 0, 0, 0],
            Allowed,
            false,
        ),
        d(
            Cmd::RequestSense,
            &[REQUEST_SENSE, 0x01, 0, 0, F, 0],
            Allowed,
            true,
        ),
        d(Cmd::Read(B6), &[READ_6, 0x1F, F, F, F, 0], Read, false),
        d(Cmd::Write(B6), &[WRITE_6, 0x1F, F, F, F, 0], Write, false),
        d(Cmd::Inquiry, &[INQUIRY, 0x01, F, F, F, 0], Allowed, true),
        d(
            Cmd::ModeSelect6,
            &[MODE_SELECT_6, 0x10, 0, 0, F, 0],
            Write,
            false,
        ),
        d(Cmd::Reserve6, &[RESERVE_6, 0, 0, 0, 0, 0], Special, false),
        d(Cmd::Release6, &[RELEASE_6, 0, 0, 0, 0, 0], Special, true),
        d(
            Cmd::ModeSense6,
            &[MODE_SENSE_6, 0x08, F, F, F, 0],
            Read,
            false,
        ),
        d(
            Cmd::StartStopUnit,
            &[START_STOP_UNIT, 0x01, 0, 0x0F, 0xF7, 0],
            Special,
            false,
        ),
        d(
            Cmd::ReadCapacity10,
            &[READ_CAPACITY_10, 0, F, F, F, F, 0, 0, 0x01, 0],
            Allowed,
            false,
        ),
        d(
            Cmd::Read(B10),
            &[READ_10, 0x1A, F, F, F, F, 0x1F, F, F, 0],
            Read,
            false,
        ),
        d(
            Cmd::Write(B10),
            &[WRITE_10, 0x1A, F, F, F, F, 0x1F, F, F, 0],
            Write,
            false,
        ),
        d(
            Cmd::WriteVerify(B10),
            &[WRITE_VERIFY_10, 0x12, F, F, F, F, 0x1F, F, F, 0],
            Write,
            false,
        ),
        d(
            Cmd::Verify(B10),
            &[VERIFY_10, 0x16, F, F, F, F, 0x1F, F, F, 0],
            Read,
            false,
        ),
        d(
            Cmd::PreFetch(B10),
            &[PRE_FETCH_10, 0x02, F, F, F, F, 0x1F, F, F, 0],
            Read,
            false,
        ),
        d(
            Cmd::SyncCache(B10),
            &[SYNCHRONIZE_CACHE_10, 0x06, F, F, F, F, 0x1F, F, F, 0],
            Write,
            false,
        ),
        d(
            Cmd::WriteSame(B10),
            &[WRITE_SAME_10, ws_unmap, F, F, F, F, 0x1F, F, F, 0],
            Write,
            false,
        ),
        d(
            Cmd::ReadDefectData(false),
            &[READ_DEFECT_DATA_10, 0, 0x1F, 0, 0, 0, 0, F, F, 0],
            Read,
            false,
        ),
        d(
            Cmd::ReadDefectData(true),
            &[READ_DEFECT_DATA_12, 0x1F, F, F, F, F, F, F, F, F, 0, 0],
            Read,
            false,
        ),
        d(
            Cmd::ModeSelect10,
            &[MODE_SELECT_10, 0x10, 0, 0, 0, 0, 0, F, F, 0],
            Write,
            false,
        ),
        d(
            Cmd::Reserve10,
            &[RESERVE_10, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            Special,
            false,
        ),
        d(
            Cmd::Release10,
            &[RELEASE_10, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            Special,
            true,
        ),
        d(
            Cmd::ModeSense10,
            &[MODE_SENSE_10, 0x18, F, F, 0, 0, 0, F, F, 0],
            Read,
            false,
        ),
    ];
    for sa in 0..4u8 {
        t.push(d(
            Cmd::PrIn(sa),
            &[PERSISTENT_RESERVE_IN, sa, 0, 0, 0, 0, 0, F, F, 0],
            Allowed,
            true,
        ));
    }
    for sa in 0..8u8 {
        t.push(d(
            Cmd::PrOut(sa),
            &[PERSISTENT_RESERVE_OUT, sa, F, 0, 0, F, F, F, F, 0],
            Allowed,
            false,
        ));
    }
    let rw16 = |opc: u8, b1: u8| [opc, b1, F, F, F, F, F, F, F, F, F, F, F, F, 0x1F, 0];
    let rw12 = |opc: u8, b1: u8| [opc, b1, F, F, F, F, F, F, F, F, 0x1F, 0];
    t.extend([
        d(Cmd::Read(B16), &rw16(READ_16, 0x1A), Read, false),
        d(
            Cmd::CompareAndWrite,
            &[
                COMPARE_AND_WRITE,
                0x1A,
                F,
                F,
                F,
                F,
                F,
                F,
                F,
                F,
                0,
                0,
                0,
                F,
                0x1F,
                0,
            ],
            Write,
            false,
        ),
        d(Cmd::Write(B16), &rw16(WRITE_16, 0x1A), Write, false),
        d(Cmd::OrWrite, &rw16(ORWRITE_16, 0x1A), Write, false),
        d(
            Cmd::WriteVerify(B16),
            &rw16(WRITE_VERIFY_16, 0x12),
            Write,
            false,
        ),
        d(Cmd::Verify(B16), &rw16(VERIFY_16, 0x16), Read, false),
        d(Cmd::PreFetch(B16), &rw16(PRE_FETCH_16, 0x02), Read, false),
        d(
            Cmd::SyncCache(B16),
            &rw16(SYNCHRONIZE_CACHE_16, 0x06),
            Write,
            false,
        ),
        d(
            Cmd::WriteSame(B16),
            &rw16(WRITE_SAME_16, ws_unmap | 0x01),
            Write,
            false,
        ),
        d(
            Cmd::ReadCapacity16,
            &[
                SERVICE_ACTION_IN_16,
                SA_READ_CAPACITY_16,
                F,
                F,
                F,
                F,
                F,
                F,
                F,
                F,
                F,
                F,
                F,
                F,
                0x01,
                0,
            ],
            Allowed,
            false,
        ),
        d(
            Cmd::GetLbaStatus,
            &[
                SERVICE_ACTION_IN_16,
                SA_GET_LBA_STATUS,
                F,
                F,
                F,
                F,
                F,
                F,
                F,
                F,
                F,
                F,
                F,
                F,
                0,
                0,
            ],
            Read,
            false,
        ),
        d(
            Cmd::ReportLuns,
            &[REPORT_LUNS, 0, F, 0, 0, 0, F, F, F, F, 0, 0],
            Allowed,
            true,
        ),
        d(
            Cmd::ReportTargetPortGroups,
            &[
                MAINTENANCE_IN,
                0xE0 | SA_REPORT_TARGET_PORT_GROUPS,
                0,
                0,
                0,
                0,
                F,
                F,
                F,
                F,
                0,
                0,
            ],
            Allowed,
            true,
        ),
        d(
            Cmd::ReportSupportedOpcodes,
            &[
                MAINTENANCE_IN,
                SA_REPORT_SUPPORTED_OPCODES,
                0x87,
                F,
                F,
                F,
                F,
                F,
                F,
                F,
                0,
                0,
            ],
            Allowed,
            true,
        ),
        d(
            Cmd::ReportSupportedTmfs,
            &[
                MAINTENANCE_IN,
                SA_REPORT_SUPPORTED_TMFS,
                0x80,
                0,
                0,
                0,
                F,
                F,
                F,
                F,
                0,
                0,
            ],
            Allowed,
            true,
        ),
        d(Cmd::Read(B12), &rw12(READ_12, 0x1A), Read, false),
        d(Cmd::Write(B12), &rw12(WRITE_12, 0x1A), Write, false),
        d(
            Cmd::WriteVerify(B12),
            &rw12(WRITE_VERIFY_12, 0x12),
            Write,
            false,
        ),
        d(Cmd::Verify(B12), &rw12(VERIFY_12, 0x16), Read, false),
    ]);
    if cfg.unmap {
        t.push(d(
            Cmd::Unmap,
            &[UNMAP, 0, 0, 0, 0, 0, 0x1F, F, F, 0],
            Write,
            false,
        ));
    }
    t.sort_by_key(|c| (c.opcode, c.sa));
    t
}

/// Result of looking up a CDB in the table.
pub enum Lookup<'t> {
    /// Found.
    Found(&'t CmdDesc),
    /// Unknown operation code.
    UnknownOpcode,
    /// Known operation code, unknown service action.
    UnknownServiceAction,
}

/// Find the table row for this CDB.
pub fn lookup<'t>(table: &'t [CmdDesc], cdb: &[u8]) -> Lookup<'t> {
    let Some(&opcode) = cdb.first() else {
        return Lookup::UnknownOpcode;
    };
    if has_service_action(opcode) {
        let sa = cdb.get(1).map(|b| b & 0x1F).unwrap_or(0);
        if !table.iter().any(|c| c.opcode == opcode) {
            return Lookup::UnknownOpcode;
        }
        match table
            .iter()
            .find(|c| c.opcode == opcode && c.sa == Some(sa))
        {
            Some(c) => Lookup::Found(c),
            None => Lookup::UnknownServiceAction,
        }
    } else {
        match table.iter().find(|c| c.opcode == opcode) {
            Some(c) => Lookup::Found(c),
            None => Lookup::UnknownOpcode,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_match_group_codes() {
        for c in build_table(&LunConfig::default()) {
            assert_eq!(
                Some(c.cdb_len()),
                crate::cdb::cdb_len_for_opcode(c.opcode),
                "{:?}",
                c.cmd
            );
            assert_eq!(c.usage.last(), Some(&0), "control byte of {:?}", c.cmd);
        }
    }

    #[test]
    fn reserved_bits_rejected_with_pointer() {
        let t = build_table(&LunConfig::default());
        let Lookup::Found(c) = lookup(&t, &[0x28, 0x20, 0, 0, 0, 0, 0, 0, 1, 0]) else {
            panic!("READ(10) missing");
        };
        let e = c
            .check_reserved(&[0x28, 0x20, 0, 0, 0, 0, 0, 0, 1, 0])
            .unwrap_err();
        assert_eq!(e, Sense::invalid_cdb(1, Some(5)));
        assert!(c
            .check_reserved(&[0x28, 0x18, 0, 0, 0, 0, 0, 0, 1, 0])
            .is_ok());
    }

    #[test]
    fn unmap_bits_follow_config() {
        let cfg = LunConfig {
            unmap: false,
            ..LunConfig::default()
        };
        let t = build_table(&cfg);
        assert!(matches!(lookup(&t, &[0x42]), Lookup::UnknownOpcode));
        let Lookup::Found(ws) = lookup(&t, &[0x41]) else {
            panic!()
        };
        assert_eq!(ws.usage[1], 0);
    }
}
