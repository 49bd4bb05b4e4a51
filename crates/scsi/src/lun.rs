//! The logical unit: per-LUN state (capacity, mode parameters, unit attentions per
//! nexus, RESERVE(6) and persistent reservations) and the entry point that turns a CDB
//! into a [`Task`]: UA reporting, decoding against the command table, reservation
//! checks, then dispatch to the command handlers in `commands/`.

use std::sync::Arc;

use bytes::Bytes;

use crate::cdb::Fields;
use crate::commands::pr::pr_conflicts;
use crate::commands::sbc::Medium;
use crate::fast::{Admission, FastPath, Snapshot};
use crate::mode::ModeState;
use crate::opcodes::{build_table, lookup, op, Cmd, CmdDesc, Lookup, PrClass};
use crate::pr_state::PrState;
use crate::response::Response;
use crate::sense::{Asc, Sense};
use crate::task::Task;
use crate::types::{Command, LunConfig, Nexus, ResetKind, TargetPort, TaskAttr};
use crate::ua::Nexuses;

/// Why a command did not run.
#[derive(Debug)]
pub(crate) enum Fail {
    Check(Sense),
    Conflict,
}

impl From<Sense> for Fail {
    fn from(s: Sense) -> Self {
        Fail::Check(s)
    }
}

pub(crate) type Exec = Result<Task, Fail>;

/// One logical unit (a block device) and all of its SCSI state.
#[derive(Debug)]
pub struct LogicalUnit {
    pub(crate) cfg: LunConfig,
    pub(crate) port: TargetPort,
    pub(crate) num_blocks: u64,
    pub(crate) nexuses: Nexuses,
    pub(crate) reserve6: Option<u64>,
    pub(crate) pr: PrState,
    pub(crate) mode: ModeState,
    /// The data-path commands without the owner's lock (`fast.rs`), and what it was last told.
    fast: Arc<FastPath>,
    published: Option<Snapshot>,
    /// The reservations (RESERVE(6) holder, persistent state) as of the last publish.
    reservations_seen: (Option<u64>, PrState),
}

impl LogicalUnit {
    /// Create a logical unit. Every nexus gets a POWER ON, RESET unit attention on its
    /// first command.
    pub fn new(cfg: LunConfig, port: TargetPort) -> Self {
        let mut cfg = cfg;
        if cfg.block_size == 0 {
            cfg.block_size = 512;
        }
        let fast = Arc::new(FastPath::new(build_table(&cfg), Medium::configured(&cfg)));
        let mut unit = LogicalUnit {
            num_blocks: cfg.num_blocks,
            mode: ModeState::defaults(&cfg),
            cfg,
            port,
            nexuses: Nexuses::default(),
            reserve6: None,
            pr: PrState::default(),
            fast,
            published: None,
            reservations_seen: (None, PrState::default()),
        };
        unit.publish();
        unit
    }

    /// The command table, kept once, in the fast path.
    pub(crate) fn fast_table(&self) -> &[CmdDesc] {
        self.fast.table()
    }

    /// The unit's lock-free start of the data-path commands, for callers to keep beside the lock.
    pub fn fast_path(&self) -> Arc<FastPath> {
        self.fast.clone()
    }

    /// Admits `nexus` to the fast path at the current state if it has no unit attention
    /// pending here, with what the reservations let it do; else revokes its admission.
    /// Call under the same lock as the [`start`](Self::start) before it.
    pub fn admit(&self, nexus: &Nexus, admission: &Admission) {
        if self.nexuses.is_clear(nexus.id) {
            let may = |class| !self.data_conflicts(nexus, class);
            admission.set(self.fast.seq(), may(PrClass::Read), may(PrClass::Write));
        } else {
            admission.revoke();
        }
    }

    /// Tells the fast path about the state its commands depend on, if it changed. Every
    /// public `&mut self` method ends with this. A change to the reservations publishes
    /// too: the snapshot does not hold them, but the new sequence number sends every
    /// nexus through the lock, where its rights are worked out again (`admit`).
    pub(crate) fn publish(&mut self) {
        let reservations_changed =
            self.reservations_seen.0 != self.reserve6 || self.reservations_seen.1 != self.pr;
        if reservations_changed {
            self.reservations_seen = (self.reserve6, self.pr.clone());
        }
        let now = Snapshot {
            num_blocks: self.num_blocks,
            descriptor_sense: self.mode.d_sense,
            swp: self.mode.swp,
            cache_off: self.cfg.write_cache && !self.mode.wce,
            attentions: self.nexuses.queued(),
        };
        if self.published != Some(now) || reservations_changed {
            self.fast.publish(now);
            self.published = Some(now);
        }
    }

    /// The configuration (with the current capacity in `num_blocks`).
    pub fn config(&self) -> LunConfig {
        LunConfig {
            num_blocks: self.num_blocks,
            ..self.cfg.clone()
        }
    }

    /// Current capacity in blocks.
    pub fn num_blocks(&self) -> u64 {
        self.num_blocks
    }

    /// Current WCE (the initiator may clear it through MODE SELECT).
    pub fn write_cache_enabled(&self) -> bool {
        self.mode.wce
    }

    /// Decode, validate and start a command. Non-I/O commands complete immediately;
    /// the returned task is independent of `self`.
    pub fn start(&mut self, nexus: &Nexus, cmd: &Command) -> Task {
        let task = self.start_locked(nexus, cmd);
        self.publish();
        task
    }

    fn start_locked(&mut self, nexus: &Nexus, cmd: &Command) -> Task {
        self.nexuses.touch(nexus);
        let desc_sense = self.mode.d_sense;
        let check = |s: Sense| Task::done(Response::check(&s, desc_sense));
        let opcode = cmd.cdb.first().copied().unwrap_or(0xFF);
        if cmd.attr == TaskAttr::Aca {
            // NACA is never accepted, so no ACA condition can exist.
            return check(Sense::illegal(Asc::INVALID_FIELD_IN_CDB));
        }
        if opcode == op::REQUEST_SENSE {
            // Handled below without consuming the UA through CHECK CONDITION.
        } else if opcode != op::INQUIRY && opcode != op::REPORT_LUNS {
            if let Some(asc) = self.nexuses.pop(nexus.id) {
                return check(Sense::unit_attention(asc));
            }
        }
        let (which, class, reserve6_allowed, cdb) = match lookup(self.fast_table(), cmd.cdb) {
            Lookup::Found(d) => {
                let Some(cdb) = cmd.cdb.get(..d.cdb_len()) else {
                    return check(Sense::illegal(Asc::INVALID_FIELD_IN_CMD_IU));
                };
                if let Err(s) = d.check_reserved(cdb) {
                    return check(s);
                }
                (d.cmd, d.pr_class, d.reserve6_allowed, Fields(cdb))
            }
            Lookup::UnknownOpcode => return check(Sense::invalid_opcode()),
            Lookup::UnknownServiceAction => return check(Sense::invalid_cdb(1, Some(4))),
        };
        let data_out_len = crate::commands::sbc::data_out_len(which, cdb, self.cfg.block_size);
        let result = if self.conflicts(nexus, which, class, reserve6_allowed, cdb) {
            Err(Fail::Conflict)
        } else {
            self.execute(nexus, cmd, which, cdb)
        };
        let mut task = match result {
            Ok(t) => t,
            Err(Fail::Check(s)) => check(s),
            Err(Fail::Conflict) => Task::done(Response::conflict()),
        };
        task.set_meta(self.mode.d_sense, data_out_len);
        task
    }

    /// Whether a command of `class` that RESERVE(6) does not exempt conflicts with the
    /// reservations for `nexus`: what [`conflicts`](Self::conflicts) answers for the
    /// fast path's commands.
    fn data_conflicts(&self, nexus: &Nexus, class: PrClass) -> bool {
        self.reserved_by_another(nexus) || pr_conflicts(&self.pr, nexus, class)
    }

    /// Whether another nexus holds a RESERVE(6)/(10) reservation.
    fn reserved_by_another(&self, nexus: &Nexus) -> bool {
        self.reserve6.is_some_and(|holder| holder != nexus.id)
    }

    fn conflicts(
        &self,
        nexus: &Nexus,
        which: Cmd,
        class: PrClass,
        reserve6_allowed: bool,
        cdb: Fields<'_>,
    ) -> bool {
        if self.reserved_by_another(nexus) && !reserve6_allowed {
            return true;
        }
        let class = match which {
            Cmd::StartStopUnit => {
                if cdb.u8(4) & 0x01 != 0 && cdb.u8(4) >> 4 == 0 {
                    PrClass::Allowed
                } else {
                    PrClass::Write
                }
            }
            Cmd::Reserve6 | Cmd::Release6 | Cmd::Reserve10 | Cmd::Release10 => {
                return self.pr.reservation.is_some();
            }
            _ => class,
        };
        pr_conflicts(&self.pr, nexus, class)
    }

    fn execute(&mut self, nexus: &Nexus, cmd: &Command, which: Cmd, cdb: Fields<'_>) -> Exec {
        match which {
            Cmd::TestUnitReady => Ok(Task::good(Bytes::new())),
            Cmd::RequestSense => Ok(self.request_sense(nexus, cdb)),
            Cmd::Inquiry => self.inquiry(cdb),
            Cmd::ReportLuns => crate::target::report_luns(&[0], cdb),
            Cmd::ReadCapacity10 => self.read_capacity10(cdb),
            Cmd::ReadCapacity16 => Ok(self.read_capacity16(cdb)),
            Cmd::GetLbaStatus => self.get_lba_status(cdb),
            Cmd::ModeSense6 => self.mode_sense(cdb, false),
            Cmd::ModeSense10 => self.mode_sense(cdb, true),
            Cmd::ModeSelect6 => self.mode_select(nexus, cdb, cmd, false),
            Cmd::ModeSelect10 => self.mode_select(nexus, cdb, cmd, true),
            Cmd::StartStopUnit => Ok(self.start_stop(cdb)),
            Cmd::ReportTargetPortGroups => self.report_target_port_groups(cdb),
            Cmd::ReportSupportedOpcodes => self.report_supported_opcodes(cdb),
            Cmd::ReportSupportedTmfs => Ok(self.report_supported_tmfs(cdb)),
            Cmd::Reserve6 | Cmd::Reserve10 => self.reserve(nexus),
            Cmd::Release6 | Cmd::Release10 => Ok(self.release(nexus)),
            Cmd::PrIn(sa) => self.pr_in(sa, cdb),
            Cmd::PrOut(sa) => self.pr_out(nexus, sa, cdb, cmd),
            Cmd::ReadDefectData(twelve) => Ok(self.read_defect_data(twelve, cdb)),
            // Every other command accesses the medium (`Cmd::accesses_medium`).
            _ => self
                .medium()
                .start(which, cdb, cmd)
                .unwrap_or_else(|| Err(Sense::invalid_opcode().into())),
        }
    }

    /// A reset: unit attention for every nexus; RESERVE(6) is released. Persistent
    /// reservations are kept.
    pub fn reset(&mut self, kind: ResetKind) {
        let asc = match kind {
            ResetKind::LunReset => Asc::BUS_DEVICE_RESET,
            ResetKind::TargetReset => Asc::POWER_ON_RESET,
            ResetKind::PowerOn => Asc::POWER_ON_OCCURRED,
        };
        self.nexuses.reset_all(asc);
        self.reserve6 = None;
        self.publish();
    }

    /// The I_T nexus is gone (session ended): its RESERVE(6) is released and its
    /// unit attentions are dropped. Persistent reservation registrations stay.
    pub fn nexus_gone(&mut self, nexus_id: u64) {
        if self.reserve6 == Some(nexus_id) {
            self.reserve6 = None;
        }
        self.nexuses.remove(nexus_id);
        self.publish();
    }

    /// Change the capacity (e.g. after the backing device grew): CAPACITY DATA HAS
    /// CHANGED unit attention for every nexus.
    pub fn set_capacity(&mut self, num_blocks: u64) {
        if num_blocks != self.num_blocks {
            self.num_blocks = num_blocks;
            self.nexuses
                .push_all_except(None, Asc::CAPACITY_DATA_CHANGED);
        }
        self.publish();
    }

    /// Persistent reservation state, to persist after a response with
    /// `pr_state_changed`.
    pub fn pr_state(&self) -> &PrState {
        &self.pr
    }

    /// Restore persisted persistent reservation state (e.g. after failover).
    pub fn restore_pr_state(&mut self, s: PrState) {
        self.pr = s;
        self.publish();
    }

    /// Queue a unit attention for every nexus except `except` (used by handlers).
    pub(crate) fn ua_others(&mut self, except: Option<u64>, asc: Asc) {
        self.nexuses.push_all_except(except, asc);
    }
}
