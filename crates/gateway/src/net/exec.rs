//! Runs one SCSI command: starts a `scsi::Task` under the target's lock, performs the block
//! I/O it asks for on the LUN's `BlockDevice`, and returns the final `scsi::Response`.
//!
//! Every command doing I/O holds its LUN's `DrainGate` shared (a DRBD stop drains it) and
//! enters its `RmwGate` with the span it touches: COMPARE AND WRITE and ORWRITE need no
//! other I/O on their blocks between their read and their write, and the `RmwGate` keeps
//! out only what overlaps them (`rmw_gate.rs`).
//!
//! Every command on a LUN with a backend is counted in the LUN's metrics (`crate::metrics`,
//! per-thread shards): its kind, status, bytes, latency, and the device errors it met.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use scsi::{
    Admission, Asc, BlockRequest, FastPath, IoCompletion, IoErrorKind, MediumOp, Nexus, Response,
    ScsiTarget, Sense, SenseKey, Step,
};
use tracing::{error, warn};

use crate::block::{BlockDevice, IoFailure};
use crate::metrics::{CommandClass, LunMetrics, Outcome};
use crate::net::drain_gate::DrainGate;
use crate::net::lun_gate::{self, LunSlot, OpenDevice};
use crate::net::rmw_gate::RmwGate;
use crate::state::PrStore;

/// One LUN's backing store and its gates.
pub struct LunBackend {
    /// The open device, or none while the LUN is not served (DRBD: `net::lun_gate`).
    pub slot: LunSlot,
    /// Where this LUN's persistent-reservation state is saved.
    pub(crate) pr_store: PrStore,
    /// Serialises saves, so the last save always writes the newest state.
    pr_save: tokio::sync::Mutex<()>,
    /// Held shared by every command doing I/O; `lun_gate` takes it exclusively to drain
    /// in-flight I/O before closing the device (`drain_gate.rs`: no lock for shared use).
    pub(crate) gate: DrainGate,
    /// Keeps I/O off the blocks of a COMPARE AND WRITE or ORWRITE while it runs.
    pub(crate) rmw: RmwGate,
    /// Command counters and latencies (summed over threads at scrape time).
    pub metrics: LunMetrics,
}

impl LunBackend {
    /// `force_fua`: every write-type request must reach stable storage before completing
    /// (the LUN reports no volatile write cache, but the backing store has one).
    pub fn new(device: BlockDevice, force_fua: bool, pr_store: PrStore) -> Self {
        Self::with_slot(LunSlot::open(OpenDevice { device, force_fua }), pr_store)
    }

    /// A LUN whose device is not open yet (not served until `lun_gate` opens it).
    pub fn closed(pr_store: PrStore) -> Self {
        Self::with_slot(LunSlot::closed(), pr_store)
    }

    fn with_slot(slot: LunSlot, pr_store: PrStore) -> Self {
        LunBackend {
            slot,
            pr_store,
            pr_save: tokio::sync::Mutex::new(()),
            gate: DrainGate::default(),
            rmw: RmwGate::default(),
            metrics: LunMetrics::default(),
        }
    }
}

/// The SCSI side of one iSCSI target: the device model plus the backends of its LUNs.
pub struct TargetRuntime {
    pub name: String,
    pub scsi: Mutex<ScsiTarget>,
    pub backends: HashMap<u64, Arc<LunBackend>>,
    /// Each LUN's lock-free start of the commands that access the medium
    /// (`scsi::FastPath`), so the data path does not take `scsi`, a lock every connection of
    /// the target shares.
    fast_paths: Vec<(u64, Arc<FastPath>)>,
}

/// One session's way to its target's fast paths: per LUN, the path and this nexus's
/// admission to it (`scsi::Admission`). A short list: one lookup per command finds both.
pub struct Admissions(Vec<(u64, Arc<FastPath>, Admission)>);

impl Admissions {
    fn get(&self, lun: u64) -> Option<(&FastPath, &Admission)> {
        self.0
            .iter()
            .find(|(n, _, _)| *n == lun)
            .map(|(_, fast, admission)| (fast.as_ref(), admission))
    }
}

/// Owned form of a command as it leaves the transport.
pub struct CommandInput {
    pub lun: u64,
    pub cdb: Bytes,
    pub data_out: Bytes,
    pub data_out_too_large: bool,
    pub expected_data_in_len: u32,
    pub attr: scsi::TaskAttr,
}

impl TargetRuntime {
    pub fn new(name: String, scsi: ScsiTarget, backends: HashMap<u64, Arc<LunBackend>>) -> Self {
        let fast_paths = scsi.luns().map(|(n, lu)| (n, lu.fast_path())).collect();
        TargetRuntime {
            name,
            scsi: Mutex::new(scsi),
            backends,
            fast_paths,
        }
    }

    /// Fresh admissions for a new session (none admitted yet).
    pub fn admissions(&self) -> Admissions {
        Admissions(
            self.fast_paths
                .iter()
                .map(|(n, fast)| (*n, fast.clone(), Admission::default()))
                .collect(),
        )
    }

    /// Runs `cmd` for `nexus` to completion. When it changed the persistent-reservation
    /// state, that state is on stable storage before the response is returned (a failed
    /// save turns the response into HARDWARE ERROR: the change could be lost).
    pub async fn execute(
        &self,
        nexus: &Nexus,
        admissions: &Admissions,
        cmd: CommandInput,
    ) -> Response {
        let started = std::time::Instant::now();
        let lun = cmd.lun;
        let class = CommandClass::of(&cmd.cdb);
        let data_out_len = cmd.data_out.len();
        // Looked up once: the gate check, the I/O and the metrics all use it.
        let backend = self.backends.get(&lun).map(Arc::as_ref);
        let mut resp = self.run(nexus, admissions, cmd, backend).await;
        if resp.pr_state_changed {
            if let Err(e) = self.save_pr_state(lun).await {
                error!(target = %self.name, lun, error = %e, "cannot save persistent-reservation state");
                resp = internal_target_failure().with_data_out_len(resp.data_out_len);
            }
        }
        if let Some(backend) = backend {
            backend
                .metrics
                .record(&outcome(class, &resp, data_out_len, started));
        }
        resp
    }

    async fn save_pr_state(&self, lun: u64) -> Result<(), String> {
        let Some(backend) = self.backends.get(&lun) else {
            return Ok(());
        };
        let _serial = backend.pr_save.lock().await;
        let snapshot = {
            let t = self.scsi.lock().unwrap_or_else(|p| p.into_inner());
            t.lun(lun).map(|l| l.pr_state().clone())
        };
        let Some(state) = snapshot else {
            return Ok(());
        };
        let store = backend.pr_store.clone();
        tokio::task::spawn_blocking(move || store.save(&state))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    async fn run(
        &self,
        nexus: &Nexus,
        admissions: &Admissions,
        cmd: CommandInput,
        backend: Option<&LunBackend>,
    ) -> Response {
        if let Some(refused) = lun_gate::refuse(backend, &cmd.cdb) {
            return refused;
        }
        let mut task = {
            let scsi_cmd = scsi::Command {
                cdb: &cmd.cdb,
                data_out: cmd.data_out,
                data_out_too_large: cmd.data_out_too_large,
                expected_data_in_len: cmd.expected_data_in_len,
                attr: cmd.attr,
            };
            let fast = admissions.get(cmd.lun);
            match fast.and_then(|(f, a)| f.try_start(a, &scsi_cmd)) {
                Some(task) => task,
                None => {
                    if let Some(b) = backend {
                        b.metrics.locked_start();
                    }
                    let mut t = self.scsi.lock().unwrap_or_else(|p| p.into_inner());
                    let task = t.start(nexus, cmd.lun, &scsi_cmd);
                    if let Some((_, admission)) = fast {
                        t.admit(nexus, cmd.lun, admission);
                    }
                    task
                }
            }
        };
        // Fast path: commands that complete without I/O never touch the gate.
        let request = match task.poll(None) {
            Step::Done(resp) => return resp,
            Step::Io(req) => req,
        };
        let Some(backend) = backend else {
            // Every LUN of the model is opened with its backend (targets.rs), so this is a bug.
            warn!(lun = cmd.lun, "I/O requested for a LUN without a backend");
            return internal_target_failure();
        };
        let _shared = backend.gate.shared().await;
        let _span = backend.rmw.enter(task.span(), task.needs_atomicity()).await;
        // Closed while this command waited for the gate (DRBD demotion).
        let Some(open) = backend.slot.current() else {
            return lun_gate::not_ready();
        };
        let mut step = Step::Io(request);
        loop {
            match step {
                Step::Done(resp) => return resp,
                Step::Io(req) => {
                    let completion = perform(&open, req).await;
                    if matches!(completion, IoCompletion::Error(_)) {
                        backend.metrics.io_error();
                    }
                    step = task.poll(Some(completion));
                }
            }
        }
    }
}

/// What the metrics record of a finished command: bytes are the data returned for reads,
/// and for writes the data-out received, capped at what the CDB asked for.
fn outcome(
    class: CommandClass,
    resp: &Response,
    data_out_len: usize,
    started: std::time::Instant,
) -> Outcome {
    let bytes = match class {
        CommandClass::Read => resp.data_in.len(),
        CommandClass::Write => {
            let asked = resp.data_out_len.map_or(data_out_len, |n| n as usize);
            data_out_len.min(asked)
        }
        _ => 0,
    };
    Outcome {
        class,
        good: resp.status == scsi::status::GOOD,
        check_condition: resp.status == scsi::status::CHECK_CONDITION,
        bytes: bytes as u64,
        latency: started.elapsed(),
    }
}

/// Performs one block request and maps the outcome to what the SCSI model understands.
pub async fn perform(backend: &OpenDevice, req: BlockRequest) -> IoCompletion {
    let dev = &backend.device;
    // Discard and zeroing have no FUA flag: when the LUN must write through, flush after them.
    let write_through = backend.force_fua
        && matches!(
            req,
            BlockRequest::Discard { .. } | BlockRequest::WriteZeroes { .. }
        );
    let (op, mut result) = match req {
        BlockRequest::Read { offset, len } => {
            return match dev.read(offset, len).await {
                Ok(data) => IoCompletion::Data(data),
                Err(e) => failure(MediumOp::Read, e),
            }
        }
        BlockRequest::Write { offset, data, fua } => {
            let fua = fua || backend.force_fua;
            return match dev.write(offset, data, fua).await {
                Ok(()) => IoCompletion::Done,
                Err(e) => failure(MediumOp::Write, e),
            };
        }
        BlockRequest::Flush => (MediumOp::Write, dev.flush().await),
        BlockRequest::Discard { offset, len } => (MediumOp::Write, dev.discard(offset, len).await),
        BlockRequest::WriteZeroes { offset, len, unmap } => {
            (MediumOp::Write, dev.write_zeroes(offset, len, unmap).await)
        }
        BlockRequest::MappingStatus { offset, len } => {
            return match dev.mapping_status(offset, len).await {
                Ok(extents) => IoCompletion::Mapping(
                    extents
                        .into_iter()
                        .map(|e| scsi::Extent {
                            offset: e.offset,
                            len: e.len,
                            mapped: e.mapped,
                        })
                        .collect(),
                ),
                Err(e) => failure(MediumOp::Read, e),
            }
        }
    };
    if write_through && result.is_ok() {
        result = dev.flush().await;
    }
    match result {
        Ok(()) => IoCompletion::Done,
        Err(e) => failure(op, e),
    }
}

fn failure(op: MediumOp, e: IoFailure) -> IoCompletion {
    warn!(error = %e, "block I/O failed");
    IoCompletion::Error(match e {
        IoFailure::Medium => IoErrorKind::Medium(op),
        IoFailure::NoSpace => IoErrorKind::NoSpace,
        IoFailure::Unsupported => IoErrorKind::Unsupported,
        IoFailure::Gone | IoFailure::Hardware(_) | IoFailure::ReadOnly => IoErrorKind::Hardware,
        IoFailure::OutOfRange { .. } | IoFailure::Misaligned { .. } => IoErrorKind::Hardware,
    })
}

/// CHECK CONDITION, HARDWARE ERROR / INTERNAL TARGET FAILURE (04/44/00), fixed format.
fn internal_target_failure() -> Response {
    Response::check(
        &Sense::new(SenseKey::HardwareError, Asc::INTERNAL_TARGET_FAILURE),
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_target_failure_is_check_condition_04_44_00() {
        let r = internal_target_failure();
        assert_eq!(r.status, scsi::status::CHECK_CONDITION);
        let sense = r.sense.unwrap_or_default();
        assert_eq!(sense.get(2).map(|k| k & 0x0f), Some(0x04));
        assert_eq!(sense.get(12..14), Some(&[0x44, 0x00][..]));
    }
}
