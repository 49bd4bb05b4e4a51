//! Non-SCSI traffic of the full feature phase: NOP ping/echo and idle pings with timeout,
//! Text (SendTargets) with continuation, Logout, task management, and the timers.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tracing::{debug, info, warn};

use super::{
    sn_le, sn_lt, Connection, Event, Ordered, PendingTmf, Phase, TaskId, TextState, TmfFunction,
    TmfId, TmfRequest, TmfResponseCode, MAX_PENDING_TMFS, RESERVED_TAG,
};
use crate::config::TargetConfig;
use crate::discovery::send_targets;
use crate::login::negotiate::is_operational;
use crate::pdu::{
    reject_reason, Bhs, LogoutRequest, LogoutResponse, NopIn, NopOut, Pdu, TaskMgmtRequest,
    TaskMgmtResponse, TextRequest, TextResponse,
};
use crate::text::{self, MAX_TEXT_LEN};

impl Connection {
    // ----- NOP -----

    pub(super) fn handle_nop_out(&mut self, n: NopOut, header: Bhs) {
        if n.itt == RESERVED_TAG {
            // Answer to our NOP-In (or a bare ping that wants no reply).
            if !n.immediate {
                warn!("NOP-Out with reserved ITT must be immediate");
                self.reject(reject_reason::PROTOCOL_ERROR, header);
                return;
            }
            if n.ttt != RESERVED_TAG {
                match self.ping {
                    Some((ttt, _)) if ttt == n.ttt => {
                        debug!(ttt, "ping answered");
                        self.ping = None;
                    }
                    _ => debug!(ttt = n.ttt, "NOP-Out answers no outstanding ping"),
                }
            }
            return;
        }
        if n.ttt != RESERVED_TAG {
            if self.ping.map(|p| p.0) == Some(n.ttt) {
                self.ping = None;
            } else {
                warn!(ttt = n.ttt, "NOP-Out with unknown TTT");
                self.reject(reject_reason::INVALID_PDU_FIELD, header);
                return;
            }
        }
        let (imm, sn) = (n.immediate, n.cmd_sn);
        self.gate(imm, sn, Ordered::Nop(n));
    }

    pub(super) fn answer_nop(&mut self, n: NopOut) {
        let max = self.params.initiator_max_recv_data_segment_length as usize;
        let data = n.data.slice(..n.data.len().min(max));
        let sn = self.sn(true);
        self.send(
            Pdu::NopIn(NopIn {
                lun: n.lun,
                itt: n.itt,
                ttt: RESERVED_TAG,
                sn,
                data,
            }),
            true,
        );
    }

    // ----- Text -----

    pub(super) fn handle_text(&mut self, t: TextRequest) {
        let header = super::bhs_of(&Pdu::TextRequest(t.clone()));
        let mut request = BytesMut::new();
        if t.ttt != RESERVED_TAG {
            match self.text.take() {
                Some(TextState::Sending { itt, ttt, rest }) if itt == t.itt && ttt == t.ttt => {
                    self.send_text_chunk(t.itt, t.lun, rest);
                    return;
                }
                Some(TextState::Receiving { itt, ttt, buf }) if itt == t.itt && ttt == t.ttt => {
                    request = buf;
                }
                _ => {
                    warn!(ttt = t.ttt, "Text Request with unknown TTT");
                    self.reject(reject_reason::INVALID_PDU_FIELD, header);
                    return;
                }
            }
        } else {
            self.text = None;
        }
        if request.len() + t.data.len() > MAX_TEXT_LEN {
            warn!("Text Request too long");
            self.reject(reject_reason::PROTOCOL_ERROR, header);
            return;
        }
        request.extend_from_slice(&t.data);
        if t.cont {
            let ttt = self.alloc_ttt();
            self.text = Some(TextState::Receiving {
                itt: t.itt,
                ttt,
                buf: request,
            });
            let sn = self.sn(true);
            self.send(
                Pdu::TextResponse(TextResponse {
                    final_: false,
                    cont: false,
                    lun: t.lun,
                    itt: t.itt,
                    ttt,
                    sn,
                    data: Bytes::new(),
                }),
                true,
            );
            return;
        }
        let pairs = match text::parse(&request) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "bad Text Request");
                self.reject(reject_reason::PROTOCOL_ERROR, header);
                return;
            }
        };
        let mut answers: Vec<(String, String)> = Vec::new();
        for p in pairs {
            match p.key.as_str() {
                "SendTargets" => {
                    let (st, target) = match &self.session {
                        Some(s) => (s.session_type, s.target_name.clone()),
                        None => return,
                    };
                    let visible = |t: &TargetConfig| !self.hidden_targets.contains(&t.name);
                    match send_targets(&self.config, st, target.as_deref(), &p.value, &visible) {
                        Some(list) => answers.extend(list),
                        None => {
                            warn!(value = %p.value, "invalid SendTargets value");
                            answers.push((p.key, "Reject".into()));
                        }
                    }
                }
                k if is_operational(k) => answers.push((p.key, "Reject".into())),
                _ => answers.push((p.key, "NotUnderstood".into())),
            }
        }
        let body = text::encode(&answers);
        self.send_text_chunk(t.itt, t.lun, body);
    }

    fn send_text_chunk(&mut self, itt: u32, lun: u64, body: Bytes) {
        let max = self.params.initiator_max_recv_data_segment_length as usize;
        let (chunk, rest) = if body.len() > max {
            (body.slice(..max), Some(body.slice(max..)))
        } else {
            (body, None)
        };
        let ttt = match rest {
            Some(rest) => {
                let ttt = self.alloc_ttt();
                self.text = Some(TextState::Sending { itt, ttt, rest });
                ttt
            }
            None => RESERVED_TAG,
        };
        let more = ttt != RESERVED_TAG;
        let sn = self.sn(true);
        self.send(
            Pdu::TextResponse(TextResponse {
                final_: !more,
                cont: more,
                lun,
                itt,
                ttt,
                sn,
                data: chunk,
            }),
            true,
        );
    }

    // ----- Logout -----

    pub(super) fn handle_logout(&mut self, l: LogoutRequest) {
        let cid = self.session.as_ref().map(|s| s.cid).unwrap_or(0);
        let response = match l.reason {
            0 => None,
            1 if l.cid == cid => None,
            1 => Some(1),
            2 => Some(2),
            _ => {
                let h = super::bhs_of(&Pdu::LogoutRequest(l.clone()));
                self.reject(reject_reason::INVALID_PDU_FIELD, h);
                return;
            }
        };
        if let Some(code) = response {
            let sn = self.sn(true);
            self.send(
                Pdu::LogoutResponse(LogoutResponse {
                    response: code,
                    itt: l.itt,
                    sn,
                    time2wait: 0,
                    time2retain: 0,
                }),
                true,
            );
            return;
        }
        info!(reason = l.reason, "logout requested");
        self.events.push_back(Event::Logout { reason: l.reason });
        // Tasks the gateway never saw cannot complete any more.
        self.drop_undelivered();
        self.logout_itt = Some(l.itt);
        self.maybe_finish_logout();
    }

    /// Answers a pending logout once no delivered task or TMF is outstanding.
    pub(super) fn maybe_finish_logout(&mut self) {
        let Some(itt) = self.logout_itt else { return };
        if self.closing || !self.tasks.is_empty() || !self.tmfs.is_empty() {
            return;
        }
        let sn = self.sn(true);
        self.send(
            Pdu::LogoutResponse(LogoutResponse {
                response: 0,
                itt,
                sn,
                time2wait: self.params.default_time2wait,
                time2retain: self.params.default_time2retain,
            }),
            false,
        );
        info!("logged out");
        self.set_closing();
    }

    /// Forgets every task the gateway has not been given (logout, close): their write data
    /// is released and held commands are never delivered.
    pub(super) fn drop_undelivered(&mut self) {
        let undelivered: Vec<u32> = self
            .tasks
            .values()
            .filter(|t| !t.delivered)
            .map(|t| t.itt)
            .collect();
        for itt in undelivered {
            self.drop_task(itt);
        }
    }

    /// Forgets a task without answering it, keeping CmdSN accounting right.
    pub(super) fn drop_task(&mut self, itt: u32) {
        let Some(t) = self.remove_task(itt) else {
            return;
        };
        self.held.retain(|&h| h != itt);
        if !t.gate_passed && !t.immediate {
            if let Some(o) = self.ordered.get_mut(&t.cmd_sn) {
                *o = Ordered::Skip;
            }
        }
        self.release_slot(t.holds_slot);
    }

    // ----- Task management -----

    fn tmf_respond(&mut self, itt: u32, code: TmfResponseCode, holds_slot: bool) {
        self.release_slot(holds_slot);
        let sn = self.sn(true);
        self.send(
            Pdu::TaskMgmtResponse(TaskMgmtResponse {
                response: code.code(),
                itt,
                sn,
            }),
            false,
        );
    }

    pub(super) fn handle_tmf(&mut self, t: TaskMgmtRequest, in_order: bool) {
        if in_order {
            self.in_use += 1;
        }
        let holds = in_order;
        let lun = t.lun;
        let Some(function) = TmfFunction::from_code(t.function) else {
            warn!(function = t.function, "unknown task management function");
            self.tmf_respond(t.itt, TmfResponseCode::NotSupported, holds);
            return;
        };
        if self.tmfs.len() >= MAX_PENDING_TMFS {
            warn!("too many task management requests in flight");
            self.tmf_respond(t.itt, TmfResponseCode::Rejected, holds);
            return;
        }
        if self.tmfs.contains_key(&t.itt) {
            warn!(itt = t.itt, "task management ITT already in use");
            self.tmf_respond(t.itt, TmfResponseCode::Rejected, holds);
            return;
        }
        info!(?function, lun, rtt = t.rtt, "task management request");
        let mut referenced = None;
        let affected: Vec<u32> = match function {
            TmfFunction::TaskReassign => {
                self.tmf_respond(t.itt, TmfResponseCode::ReassignmentNotSupported, holds);
                return;
            }
            TmfFunction::AbortTask => {
                match self.tasks.get(&t.rtt) {
                    Some(task) if task.delivered => {
                        referenced = Some(TaskId(t.rtt));
                        vec![t.rtt]
                    }
                    Some(_) => {
                        // The gateway never saw it: abort here.
                        self.drop_task(t.rtt);
                        self.drain_ordered();
                        self.tmf_respond(t.itt, TmfResponseCode::FunctionComplete, holds);
                        return;
                    }
                    None => {
                        // RFC 7143 §11.5.1: a not-yet-received command inside the window is
                        // considered received and aborted; otherwise the task does not exist.
                        let r = t.ref_cmd_sn;
                        let inside = sn_le(self.exp_cmd_sn, r)
                            && sn_le(r, self.max_cmd_sn)
                            && sn_lt(r, t.cmd_sn);
                        if inside && !self.ordered.contains_key(&r) {
                            self.ordered.insert(r, Ordered::Skip);
                            self.drain_ordered();
                            self.tmf_respond(t.itt, TmfResponseCode::FunctionComplete, holds);
                        } else {
                            self.tmf_respond(t.itt, TmfResponseCode::TaskDoesNotExist, holds);
                        }
                        return;
                    }
                }
            }
            TmfFunction::ClearAca => Vec::new(),
            f => {
                let whole_target = matches!(
                    f,
                    TmfFunction::TargetWarmReset | TmfFunction::TargetColdReset
                );
                let in_scope: Vec<(u32, bool)> = self
                    .tasks
                    .values()
                    .filter(|x| whole_target || x.lun == lun)
                    .filter(|x| x.gate_passed || x.immediate || sn_lt(x.cmd_sn, t.cmd_sn))
                    .map(|x| (x.itt, x.delivered))
                    .collect();
                let mut delivered = Vec::new();
                for (itt, d) in in_scope {
                    if d {
                        delivered.push(itt);
                    } else {
                        self.drop_task(itt);
                    }
                }
                self.drain_ordered();
                delivered
            }
        };
        self.tmfs.insert(
            t.itt,
            PendingTmf {
                function,
                holds_slot: holds,
                affected,
            },
        );
        self.events.push_back(Event::TaskManagement(TmfRequest {
            id: TmfId(t.itt),
            function,
            lun,
            referenced_task: referenced,
            ref_cmd_sn: t.ref_cmd_sn,
        }));
    }

    /// Answers a task management request. On `FunctionComplete` the affected tasks are
    /// considered gone: later `complete_command` calls for them are ignored.
    pub fn complete_task_management(&mut self, id: TmfId, response: TmfResponseCode, now: Instant) {
        self.check_buffered();
        let _ = now;
        let Some(p) = self.tmfs.remove(&id.0) else {
            debug!(itt = id.0, "completion for unknown TMF ignored");
            return;
        };
        if self.is_closed() {
            return;
        }
        if response == TmfResponseCode::FunctionComplete {
            for itt in &p.affected {
                if self.tasks.get(itt).is_some_and(|t| t.delivered) {
                    self.drop_task(*itt);
                }
            }
        }
        self.tmf_respond(id.0, response, p.holds_slot);
        if p.function == TmfFunction::TargetColdReset
            && response == TmfResponseCode::FunctionComplete
        {
            info!("target cold reset: closing connection");
            self.set_closing();
        }
        self.maybe_finish_logout();
    }

    // ----- timers -----

    /// When `handle_timeout` should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_closed() {
            return None;
        }
        match self.phase {
            Phase::Login(_) => Some(self.login_deadline),
            Phase::FullFeature => match self.ping {
                Some((_, deadline)) => Some(deadline),
                None => self.limits.nop_in_interval.map(|i| self.last_rx + i),
            },
            Phase::Closed => None,
        }
    }

    /// Runs timers: login timeout, idle pings and ping timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.check_buffered();
        if self.is_closed() {
            return;
        }
        match self.phase {
            Phase::Login(_) => {
                if now >= self.login_deadline {
                    warn!("login timed out");
                    self.set_closed();
                }
            }
            Phase::FullFeature => {
                if let Some((_, deadline)) = self.ping {
                    if now >= deadline {
                        warn!("initiator did not answer NOP-In ping, closing");
                        self.set_closed();
                    }
                    return;
                }
                let Some(interval) = self.limits.nop_in_interval else {
                    return;
                };
                if now >= self.last_rx + interval {
                    let ttt = self.alloc_ttt();
                    self.ping = Some((ttt, now + self.limits.nop_in_timeout));
                    let sn = self.sn(false);
                    self.send(
                        Pdu::NopIn(NopIn {
                            lun: 0,
                            itt: RESERVED_TAG,
                            ttt,
                            sn,
                            data: Bytes::new(),
                        }),
                        false,
                    );
                }
            }
            Phase::Closed => {}
        }
    }
}
