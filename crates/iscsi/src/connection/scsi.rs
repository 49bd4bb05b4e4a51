//! SCSI command flow: command intake and validation, write data (immediate, unsolicited,
//! R2T-solicited), delivery to the gateway in CmdSN order, and completion into Data-In /
//! SCSI Response PDUs with residuals and phase collapse.

use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use tracing::{debug, warn};

use super::write::{DataOutError, WriteState};
use super::{
    CommandResponse, Connection, ConnectionError, DataOut, Event, Ordered, ScsiCommand, Task,
    TaskAttr, TaskId, RESERVED_TAG,
};
use crate::pdu::{
    reject_reason, Bhs, Pdu, R2t, Residual, ScsiCommandPdu, ScsiDataIn, ScsiDataOut, ScsiResponse,
    SnFields,
};

/// Residual of a transfer: what the command wanted (`wanted`) against what the initiator
/// expected (`expected`).
fn residual(wanted: u32, expected: u32) -> Residual {
    match wanted.cmp(&expected) {
        std::cmp::Ordering::Greater => Residual::Overflow(wanted - expected),
        std::cmp::Ordering::Less => Residual::Underflow(expected - wanted),
        std::cmp::Ordering::Equal => Residual::None,
    }
}

impl Task {
    /// Marks the task delivered and makes its command event, taking its write data.
    fn deliver(&mut self) -> ScsiCommand {
        let data_out = if self.too_large {
            DataOut::TooLarge
        } else if let Some(mut w) = self.write_state.take() {
            DataOut::Complete(w.take())
        } else {
            DataOut::None
        };
        self.delivered = true;
        debug!(itt = self.itt, cmd_sn = self.cmd_sn, "deliver SCSI command");
        ScsiCommand {
            task: TaskId(self.itt),
            lun: self.lun,
            cdb: self.cdb.clone(),
            attr: self.attr,
            expected_data_in_len: if self.read {
                if self.write {
                    self.bidi_read_len.unwrap_or(0)
                } else {
                    self.edtl
                }
            } else {
                0
            },
            expected_data_out_len: if self.write { self.edtl } else { 0 },
            data_out,
        }
    }
}

impl Connection {
    /// Rejects a command and, if it was ordered, still consumes its CmdSN.
    fn reject_command(&mut self, c: &ScsiCommandPdu, reason: u8, header: Bhs, why: &str) {
        warn!(itt = c.itt, why, "rejecting SCSI command");
        self.reject(reason, header);
        if !c.immediate && self.in_window(c.cmd_sn) && !self.ordered.contains_key(&c.cmd_sn) {
            self.ordered.insert(c.cmd_sn, Ordered::Skip);
            self.drain_ordered();
        }
    }

    pub(super) fn handle_scsi_command(&mut self, c: ScsiCommandPdu, header: Bhs) {
        if !c.immediate && !self.in_window(c.cmd_sn) {
            warn!(
                cmd_sn = c.cmd_sn,
                exp = self.exp_cmd_sn,
                max = self.max_cmd_sn,
                "SCSI command CmdSN outside the window, dropping"
            );
            return;
        }
        if !c.immediate && self.ordered.contains_key(&c.cmd_sn) {
            warn!(cmd_sn = c.cmd_sn, "duplicate CmdSN, dropping");
            return;
        }
        let p = &self.params;
        let imm_len = c.data.len() as u32;
        let bad = if c.itt == RESERVED_TAG {
            Some((reject_reason::INVALID_PDU_FIELD, "reserved ITT"))
        } else if self.tasks.contains_key(&c.itt) {
            Some((reject_reason::TASK_IN_PROGRESS, "ITT already in use"))
        } else if imm_len > 0 && !c.write {
            Some((reject_reason::PROTOCOL_ERROR, "data without W bit"))
        } else if imm_len > 0 && !p.immediate_data {
            Some((
                reject_reason::PROTOCOL_ERROR,
                "immediate data not negotiated",
            ))
        } else if imm_len > c.edtl || imm_len > p.first_burst_length {
            Some((reject_reason::PROTOCOL_ERROR, "immediate data too long"))
        } else if c.write && !c.final_ && p.initial_r2t {
            Some((
                reject_reason::PROTOCOL_ERROR,
                "unsolicited data with InitialR2T=Yes",
            ))
        } else if !c.write && !c.final_ {
            Some((reject_reason::PROTOCOL_ERROR, "F bit clear without W bit"))
        } else {
            None
        };
        if let Some((reason, why)) = bad {
            self.reject_command(&c, reason, header, why);
            return;
        }
        if c.immediate {
            let n = self.tasks.values().filter(|t| t.immediate).count() as u32;
            if n >= self.limits.max_immediate_commands {
                warn!("too many immediate commands");
                self.reject(reject_reason::IMMEDIATE_COMMAND_REJECT, header);
                return;
            }
        }
        let mut cdb = BytesMut::with_capacity(16 + c.ext_cdb.as_ref().map_or(0, |e| e.len()));
        cdb.put_slice(&c.cdb);
        if let Some(e) = &c.ext_cdb {
            cdb.put_slice(e);
        }
        let mut task = Task {
            itt: c.itt,
            lun: c.lun,
            cmd_sn: c.cmd_sn,
            immediate: c.immediate,
            attr: TaskAttr::from_bits(c.attr),
            cdb: cdb.freeze(),
            read: c.read,
            write: c.write,
            edtl: c.edtl,
            bidi_read_len: c.bidi_read_len,
            gate_passed: false,
            delivered: false,
            holds_slot: false,
            write_state: None,
            too_large: false,
            too_large_unsol_open: false,
            r2t_count: 0,
        };
        if c.write && c.edtl > 0 {
            if c.edtl > self.limits.max_transfer_bytes {
                debug!(
                    itt = c.itt,
                    edtl = c.edtl,
                    "write larger than max_transfer_bytes"
                );
                task.too_large = true;
                task.too_large_unsol_open = !c.final_;
            } else {
                task.write_state = Some(WriteState::new(
                    c.edtl,
                    c.data.clone(),
                    !c.final_,
                    self.params.first_burst_length,
                ));
            }
        }
        let itt = c.itt;
        self.insert_task(task);
        self.issue_r2ts(itt);
        if c.immediate {
            self.process_ordered(Ordered::Task(itt), false);
        } else {
            self.ordered.insert(c.cmd_sn, Ordered::Task(itt));
            self.drain_ordered();
        }
    }

    /// Sends as many R2Ts as the task may have outstanding. None while the intake is
    /// closed: write data is not solicited for commands that would be held anyway
    /// (`intake.rs` sends them on reopening).
    pub(super) fn issue_r2ts(&mut self, itt: u32) {
        if !self.intake_open {
            return;
        }
        let max_burst = self.params.max_burst_length;
        let max_out = self.params.max_outstanding_r2t;
        loop {
            let ttt = self.next_ttt;
            let next = self.update_task(itt, |task| {
                let w = task.write_state.as_mut()?;
                let r = w.next_r2t(max_burst, max_out, ttt)?;
                task.r2t_count = w.r2t_count();
                Some((task.lun, r))
            });
            let Some((lun, r)) = next.flatten() else {
                return;
            };
            self.alloc_ttt();
            let sn = self.sn(false);
            self.send(
                Pdu::R2t(R2t {
                    lun,
                    itt,
                    ttt: r.ttt,
                    sn,
                    r2t_sn: r.r2t_sn,
                    buffer_offset: r.offset,
                    desired_length: r.len,
                }),
                true,
            );
        }
    }

    pub(super) fn handle_data_out(
        &mut self,
        d: ScsiDataOut,
        header: Bhs,
    ) -> Result<(), ConnectionError> {
        let Some(task) = self.tasks.get_mut(&d.itt) else {
            warn!(itt = d.itt, "Data-Out for unknown task");
            self.reject(reject_reason::INVALID_PDU_FIELD, header);
            return Ok(());
        };
        if task.too_large {
            if d.ttt == RESERVED_TAG && task.too_large_unsol_open {
                if d.final_ {
                    task.too_large_unsol_open = false;
                    let itt = d.itt;
                    self.try_deliver(itt);
                }
                return Ok(());
            }
            self.reject(reject_reason::INVALID_PDU_FIELD, header);
            return Ok(());
        }
        let result = self
            .update_task(d.itt, |task| match task.write_state.as_mut() {
                Some(w) => w.accept(&d),
                None => Err(DataOutError::UnknownTtt),
            })
            .unwrap_or(Err(DataOutError::UnknownTtt));
        match result {
            Ok(()) => {
                let itt = d.itt;
                self.issue_r2ts(itt);
                self.try_deliver(itt);
                Ok(())
            }
            Err(DataOutError::UnknownTtt) => {
                warn!(itt = d.itt, ttt = d.ttt, "Data-Out with unknown TTT");
                self.reject(reject_reason::INVALID_PDU_FIELD, header);
                Ok(())
            }
            Err(e) => {
                // ERL 0 cannot recover the data sequence, but the session can go on: the
                // PDU is rejected and only this command fails, with ABORTED COMMAND / DATA
                // PHASE ERROR, so the initiator learns at once instead of by timeout.
                warn!(
                    itt = d.itt,
                    error = e.describe(),
                    "Data-Out sequence error: command failed"
                );
                self.reject(reject_reason::PROTOCOL_ERROR, header);
                self.fail_undelivered(d.itt, data_phase_error_sense(e.data_phase_ascq()));
                Ok(())
            }
        }
    }

    /// Ends a command the gateway has not seen yet with CHECK CONDITION and `sense`. A task
    /// still waiting for its CmdSN turn is dropped silently (its turn is skipped); the
    /// initiator then recovers it with task management.
    fn fail_undelivered(&mut self, itt: u32, sense: Bytes) {
        let Some(task) = self.tasks.get_mut(&itt) else {
            return;
        };
        if task.delivered {
            return;
        }
        if !task.gate_passed && !task.immediate {
            self.drop_task(itt);
            return;
        }
        task.delivered = true;
        self.held.retain(|&h| h != itt);
        let response = CommandResponse {
            status: 0x02,
            sense: Some(sense),
            ..CommandResponse::default()
        };
        self.complete_command(TaskId(itt), response, self.last_rx);
    }

    /// Emits the command once it passed the CmdSN gate and all its data has arrived; while
    /// the intake is closed, a ready command is held instead (`intake.rs`).
    pub(super) fn try_deliver(&mut self, itt: u32) {
        let Some(task) = self.tasks.get_mut(&itt) else {
            return;
        };
        if !task.gate_passed || task.delivered {
            return;
        }
        let ready = if task.too_large {
            !task.too_large_unsol_open
        } else {
            match &task.write_state {
                Some(w) => w.complete(),
                None => true,
            }
        };
        if !ready {
            return;
        }
        if !self.intake_open {
            if !self.held.contains(&itt) {
                debug!(itt, cmd_sn = task.cmd_sn, "intake closed: command held");
                self.held.push_back(itt);
            }
            return;
        }
        if let Some(cmd) = self.update_task(itt, Task::deliver) {
            self.events.push_back(Event::ScsiCommand(cmd));
        }
    }

    /// Completes a command the gateway executed. Ignored for unknown or aborted tasks.
    pub fn complete_command(&mut self, task: TaskId, response: CommandResponse, now: Instant) {
        let _ = now;
        self.check_buffered();
        match self.tasks.get(&task.0) {
            Some(t) if t.delivered => {}
            _ => {
                debug!(
                    itt = task.0,
                    "completion for unknown or aborted task ignored"
                );
                return;
            }
        }
        let Some(t) = self.remove_task(task.0) else {
            return;
        };
        if self.is_closed() {
            return;
        }
        let exp_in = if t.read {
            if t.write {
                t.bidi_read_len.unwrap_or(0)
            } else {
                t.edtl
            }
        } else {
            0
        };
        let exp_out = if t.write { t.edtl } else { 0 };
        let produced = response.data_in.len().min(u32::MAX as usize) as u32;
        let data = response.data_in.slice(..(exp_in.min(produced) as usize));
        let read_res = if t.read || produced > 0 {
            residual(produced, exp_in)
        } else {
            Residual::None
        };
        let write_res = match response.data_out_len {
            Some(n) if t.write || n > 0 => residual(n, exp_out),
            _ => Residual::None,
        };
        let (main_res, bidi_res) = if t.read && t.write {
            (write_res, read_res)
        } else if t.write || (response.data_out_len.is_some() && !t.read) {
            (write_res, Residual::None)
        } else {
            (read_res, Residual::None)
        };
        let collapse = response.sense.is_none() && !data.is_empty() && !(t.read && t.write);
        let mrdsl = self.params.initiator_max_recv_data_segment_length.max(512) as usize;
        let max_burst = self.params.max_burst_length.max(512) as usize;
        let total = data.len();
        let mut off = 0usize;
        let mut burst_left = max_burst;
        let mut data_sn = 0u32;
        self.release_slot(t.holds_slot);
        while off < total {
            let len = mrdsl.min(total - off).min(burst_left);
            let last = off + len == total;
            burst_left -= len;
            let end_of_burst = last || burst_left == 0;
            if burst_left == 0 {
                burst_left = max_burst;
            }
            let with_status = last && collapse;
            let sn = if with_status {
                self.sn(true)
            } else {
                let s = self.sn(false);
                SnFields { stat_sn: 0, ..s }
            };
            let pdu = ScsiDataIn {
                final_: end_of_burst,
                ack: false,
                has_status: with_status,
                residual: if with_status {
                    main_res
                } else {
                    Residual::None
                },
                status: if with_status { response.status } else { 0 },
                lun: t.lun,
                itt: t.itt,
                ttt: RESERVED_TAG,
                sn,
                data_sn,
                buffer_offset: off as u32,
                data: data.slice(off..off + len),
            };
            self.send(Pdu::DataIn(pdu), false);
            data_sn += 1;
            off += len;
        }
        if !collapse {
            let sense = match &response.sense {
                Some(s) => {
                    let mut b = BytesMut::with_capacity(2 + s.len());
                    b.put_u16(s.len().min(u16::MAX as usize) as u16);
                    b.put_slice(&s[..s.len().min(u16::MAX as usize)]);
                    b.freeze()
                }
                None => Bytes::new(),
            };
            let sn = self.sn(true);
            let pdu = ScsiResponse {
                response: 0,
                status: response.status,
                itt: t.itt,
                snack_tag: 0,
                sn,
                exp_data_sn: data_sn + t.r2t_count,
                bidi_residual: bidi_res,
                residual: main_res,
                data: sense,
            };
            self.send(Pdu::ScsiResponse(pdu), false);
        }
        self.maybe_finish_logout();
    }
}

/// Fixed-format sense data: ABORTED COMMAND, ASC 0x4B (DATA PHASE ERROR family) with `ascq`.
fn data_phase_error_sense(ascq: u8) -> Bytes {
    let mut s = [0u8; 18];
    s[0] = 0x70;
    s[2] = 0x0B;
    s[7] = 10;
    s[12] = 0x4B;
    s[13] = ascq;
    Bytes::copy_from_slice(&s)
}
