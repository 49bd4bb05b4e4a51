//! The per-connection state machine (one connection = one session, MaxConnections=1,
//! ErrorRecoveryLevel=0): login, then full feature phase with CmdSN ordering and windowing,
//! write data assembly, Data-In splitting, task management, NOP pings, text, logout.
//!
//! Sans-IO: bytes in through [`Connection::handle_input`] (or one whole PDU received
//! elsewhere, e.g. into an aligned buffer, through [`Connection::handle_split_frame`]), events
//! out through [`Connection::poll_event`], bytes out through [`Connection::poll_transmit`],
//! time through [`Connection::poll_timeout`] / [`Connection::handle_timeout`].
//!
//! Intake gate ([`Connection::set_intake_open`], `intake.rs`): the gateway closes it while
//! its command data budget is used up. Input is still read and answered (NOP, task
//! management, text, logout, Data-Out for solicited data); only new SCSI commands wait, in
//! CmdSN order, no new R2T is sent and MaxCmdSN stops advancing, so a well-behaved initiator
//! stops sending. Reopening delivers the held commands and announces the window.

mod api;
mod control;
mod intake;
mod scsi;
mod write;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tracing::{debug, info, trace, warn};

pub use api::*;

use crate::config::{Limits, LoginPolicy, ServerConfig, SessionInfo, SessionParams, SessionType};
use crate::login::auth::Authenticator;
use crate::login::{Login, LoginStep};
use crate::pdu::{
    decode_split, frame_layout, frame_len, next_pdu, reject_reason, AsyncMessage, Bhs, Disposition,
    FrameConfig, FrameError, LoginRequest, LoginResponse, LogoutRequest, NopOut, Pdu, Reject,
    SnFields, TaskMgmtRequest, TextRequest,
};
use write::WriteState;

/// Reserved tag value.
pub(crate) const RESERVED_TAG: u32 = 0xffff_ffff;
/// Most PDUs queued in direct reaction to input before the peer is considered stuck.
const MAX_REACTIVE_QUEUED: usize = 8192;
/// Most PDUs handed out per `poll_transmit` call.
const TRANSMIT_BATCH: usize = 64;
/// Most task management requests waiting for the gateway at once.
const MAX_PENDING_TMFS: usize = 32;

/// `a < b` in serial number arithmetic (RFC 1982).
pub(crate) fn sn_lt(a: u32, b: u32) -> bool {
    a != b && (a.wrapping_sub(b) as i32) < 0
}

/// `a <= b` in serial number arithmetic.
pub(crate) fn sn_le(a: u32, b: u32) -> bool {
    a == b || sn_lt(a, b)
}

enum Phase {
    Login(Box<Login>),
    FullFeature,
    Closed,
}

/// A PDU waiting for its CmdSN turn.
#[derive(Debug)]
enum Ordered {
    Task(u32),
    Nop(NopOut),
    Text(TextRequest),
    Tmf(TaskMgmtRequest),
    Logout(LogoutRequest),
    /// CmdSN consumed without a command (rejected or aborted before arrival).
    Skip,
}

/// One SCSI task known to the connection.
#[derive(Debug)]
pub(crate) struct Task {
    itt: u32,
    /// The 8-byte LUN field as received (only compared and echoed, never interpreted).
    lun: u64,
    cmd_sn: u32,
    immediate: bool,
    attr: TaskAttr,
    cdb: Bytes,
    read: bool,
    write: bool,
    edtl: u32,
    bidi_read_len: Option<u32>,
    gate_passed: bool,
    delivered: bool,
    holds_slot: bool,
    /// Write data assembly. Changed only through [`Connection::insert_task`],
    /// [`Connection::update_task`] and [`Connection::remove_task`], which keep
    /// `Connection::buffered` in step.
    write_state: Option<WriteState>,
    /// EDTL over the limit: unsolicited data is discarded until the F bit.
    too_large: bool,
    too_large_unsol_open: bool,
    r2t_count: u32,
}

impl Task {
    /// What this task counts in [`Connection::buffered_write_bytes`]: its EDTL while its
    /// write state holds data (`WriteState::holds_data`), else nothing.
    fn buffered_bytes(&self) -> usize {
        if self.write_state.as_ref().is_some_and(|w| w.holds_data()) {
            self.edtl as usize
        } else {
            0
        }
    }
}

/// Pending task management request.
#[derive(Debug)]
struct PendingTmf {
    function: TmfFunction,
    holds_slot: bool,
    /// Delivered tasks the function covers; dropped (no response) when it completes.
    affected: Vec<u32>,
}

/// Text exchange in progress (continuations with a target transfer tag).
#[derive(Debug)]
enum TextState {
    /// The initiator is sending a long request (C bit).
    Receiving { itt: u32, ttt: u32, buf: BytesMut },
    /// We are sending a long response.
    Sending { itt: u32, ttt: u32, rest: Bytes },
}

struct Outgoing {
    parts: Vec<Bytes>,
    reactive: bool,
}

/// One iSCSI connection (and its single-connection session).
pub struct Connection {
    config: Arc<ServerConfig>,
    limits: Limits,
    phase: Phase,
    authenticator: Option<Box<dyn Authenticator>>,
    /// Targets SendTargets must not list to this initiator (`LoginPolicy::may_discover`).
    hidden_targets: Vec<String>,
    frame: FrameConfig,
    session: Option<SessionInfo>,
    params: SessionParams,
    login_isid: [u8; 6],
    login_started: bool,
    stat_sn: u32,
    exp_cmd_sn: u32,
    max_cmd_sn: u32,
    in_use: u32,
    tasks: HashMap<u32, Task>,
    /// Sum of `Task::buffered_bytes` over `tasks` ([`Connection::buffered_write_bytes`]),
    /// kept by `insert_task`, `update_task` and `remove_task`; checked against the sum in
    /// debug builds (`check_buffered`).
    buffered: usize,
    ordered: HashMap<u32, Ordered>,
    tmfs: HashMap<u32, PendingTmf>,
    events: VecDeque<Event>,
    tx: VecDeque<Outgoing>,
    reactive_queued: usize,
    next_ttt: u32,
    last_rx: Instant,
    ping: Option<(u32, Instant)>,
    login_deadline: Instant,
    text: Option<TextState>,
    logout_itt: Option<u32>,
    closing: bool,
    /// Intake gate (`intake.rs`): while false, ready commands wait in `held`, no R2T is
    /// sent and MaxCmdSN does not advance.
    intake_open: bool,
    /// Commands ready for delivery while the intake was closed, in the order they became
    /// ready (CmdSN order for ordered commands). Bounded by the CmdSN window plus the
    /// immediate command limit, like every undelivered task.
    held: VecDeque<u32>,
    /// MaxCmdSN would have advanced while the intake was closed and no PDU has carried the
    /// new value yet: reopening announces it.
    window_held: bool,
}

impl Connection {
    /// A new connection in the login phase.
    pub fn new(config: Arc<ServerConfig>, now: Instant) -> Self {
        let limits = config.limits.sanitized();
        let params = SessionParams::defaults(&limits);
        let frame = FrameConfig {
            header_digest: false,
            data_digest: false,
            max_recv_data_segment_length: limits.max_recv_data_segment_length.max(8192),
        };
        Connection {
            phase: Phase::Login(Box::new(Login::new(config.clone()))),
            config,
            login_deadline: now + limits.login_timeout,
            limits,
            authenticator: None,
            hidden_targets: Vec::new(),
            frame,
            session: None,
            params,
            login_isid: [0; 6],
            login_started: false,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            in_use: 0,
            tasks: HashMap::new(),
            buffered: 0,
            ordered: HashMap::new(),
            tmfs: HashMap::new(),
            events: VecDeque::new(),
            tx: VecDeque::new(),
            reactive_queued: 0,
            next_ttt: 1,
            last_rx: now,
            ping: None,
            text: None,
            logout_itt: None,
            closing: false,
            intake_open: true,
            held: VecDeque::new(),
            window_held: false,
        }
    }

    /// Requires authentication with this method (e.g. CHAP) during login. Call before input.
    pub fn set_authenticator(&mut self, auth: Box<dyn Authenticator>) {
        self.authenticator = Some(auth);
    }

    /// The session, once login completed.
    pub fn session(&self) -> Option<&SessionInfo> {
        self.session.as_ref()
    }

    /// Bytes of write data buffers held for commands not yet delivered (data being received
    /// or waiting at a closed intake), so the gateway can count them against its memory
    /// budget. A write whose data has not been solicited and is not arriving counts nothing;
    /// a closed connection holds none (closing drops the commands it never delivered).
    ///
    /// Constant time: a counter kept up to date wherever a task's write state starts or
    /// stops holding data (command intake, R2T, Data-Out, delivery, completion, abort,
    /// logout, close).
    pub fn buffered_write_bytes(&self) -> usize {
        self.check_buffered();
        self.buffered
    }

    /// Adds a task, counting its write data.
    fn insert_task(&mut self, task: Task) {
        self.buffered += task.buffered_bytes();
        if let Some(old) = self.tasks.insert(task.itt, task) {
            // Callers check the ITT is free; keep the count right regardless.
            debug_assert!(false, "task {} inserted twice", old.itt);
            self.buffered = self.buffered.saturating_sub(old.buffered_bytes());
        }
    }

    /// Removes a task, no longer counting its write data.
    fn remove_task(&mut self, itt: u32) -> Option<Task> {
        let t = self.tasks.remove(&itt)?;
        self.buffered = self.buffered.saturating_sub(t.buffered_bytes());
        Some(t)
    }

    /// Runs `f` on a task (None if there is none), counting any change of its write data.
    fn update_task<R>(&mut self, itt: u32, f: impl FnOnce(&mut Task) -> R) -> Option<R> {
        let t = self.tasks.get_mut(&itt)?;
        let before = t.buffered_bytes();
        let r = f(t);
        self.buffered = self.buffered.saturating_sub(before) + t.buffered_bytes();
        Some(r)
    }

    /// Debug builds: the counter equals the walk over the tasks. Called from the public
    /// entry points, so unit tests catch a change of write state that bypassed it. (The
    /// updates saturate, so a release build with such a bug could undercount, never wrap to
    /// a huge value that would close every connection's intake.)
    fn check_buffered(&self) {
        #[cfg(debug_assertions)]
        {
            let walk: usize = self.tasks.values().map(Task::buffered_bytes).sum();
            debug_assert_eq!(self.buffered, walk, "buffered_write_bytes counter drifted");
        }
    }

    /// True once the connection accepts no more input: flush `poll_transmit`, then close.
    pub fn is_closed(&self) -> bool {
        self.closing || matches!(self.phase, Phase::Closed)
    }

    /// Stops at once (fatal error, timeout): nothing more is taken or sent but what is queued.
    fn set_closed(&mut self) {
        self.phase = Phase::Closed;
        self.drop_undelivered();
    }

    /// Stops taking input; what is queued is still sent (logout, failed login, close).
    fn set_closing(&mut self) {
        self.closing = true;
        self.drop_undelivered();
    }

    /// Next event for the gateway.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.check_buffered();
        self.events.pop_front()
    }

    /// Appends the buffers of the next queued PDUs (header, data slices, padding/digest) for
    /// one vectored write. Returns false when nothing is queued.
    pub fn poll_transmit(&mut self, out: &mut Vec<Bytes>) -> bool {
        self.check_buffered();
        let mut any = false;
        for _ in 0..TRANSMIT_BATCH {
            let Some(o) = self.tx.pop_front() else { break };
            if o.reactive {
                self.reactive_queued = self.reactive_queued.saturating_sub(1);
            }
            out.extend(o.parts);
            any = true;
        }
        any
    }

    /// Consumes every complete PDU in `buf`. An error is fatal: flush pending transmits, then
    /// close the connection.
    pub fn handle_input(
        &mut self,
        buf: &mut BytesMut,
        policy: &dyn LoginPolicy,
        now: Instant,
    ) -> Result<(), ConnectionError> {
        self.check_buffered();
        loop {
            if let Some(stop) = self.input_stop() {
                return stop;
            }
            let pdu = match next_pdu(buf, &self.frame) {
                Ok(Some(p)) => Ok(p),
                Ok(None) => return Ok(()),
                Err(e) => Err(e),
            };
            self.accept(pdu, policy, now)?;
        }
    }

    /// Consumes one complete PDU that was received outside `handle_input`'s buffer, in two
    /// parts: `head`, everything in front of the data segment (BHS, AHS, header digest), and
    /// `tail`, the rest (data segment, padding, data digest). The gateway reads a large data
    /// segment straight into an aligned buffer sized for it alone. Must be the next PDU of
    /// the stream (nothing left unconsumed in the `handle_input` buffer). Errors as for
    /// [`Connection::handle_input`]; parts that are not one whole PDU split where its data
    /// segment starts close the connection.
    pub fn handle_split_frame(
        &mut self,
        head: &[u8],
        tail: Bytes,
        policy: &dyn LoginPolicy,
        now: Instant,
    ) -> Result<(), ConnectionError> {
        self.check_buffered();
        if let Some(stop) = self.input_stop() {
            return stop;
        }
        let pdu = match frame_len(head, &self.frame) {
            Ok(_) => {
                let whole = Bhs::read(head).map(|h| frame_layout(&h, &self.frame));
                if whole != Some((head.len(), head.len() + tail.len())) {
                    self.set_closed();
                    return Err(ConnectionError::Protocol("frame is not one whole PDU"));
                }
                decode_split(head, tail, &self.frame)
            }
            Err(e) => Err(e),
        };
        self.accept(pdu, policy, now)
    }

    /// Why no more input is taken, if so: closed (Ok), or the initiator does not read its
    /// responses (fatal).
    fn input_stop(&mut self) -> Option<Result<(), ConnectionError>> {
        if self.is_closed() {
            return Some(Ok(()));
        }
        if self.reactive_queued > MAX_REACTIVE_QUEUED {
            warn!("closing: initiator does not read responses");
            self.set_closed();
            return Some(Err(ConnectionError::TransmitBacklog));
        }
        None
    }

    /// Handles one framed PDU, or its framing error: Reject in full feature phase when the
    /// error allows it, else fatal.
    fn accept(
        &mut self,
        pdu: Result<Pdu, FrameError>,
        policy: &dyn LoginPolicy,
        now: Instant,
    ) -> Result<(), ConnectionError> {
        let pdu = match pdu {
            Ok(p) => p,
            Err(e) => match e.disposition() {
                Disposition::Reject { reason, header }
                    if matches!(self.phase, Phase::FullFeature) =>
                {
                    warn!(error = %e, "rejecting PDU");
                    self.last_rx = now;
                    self.reject(reason, header);
                    return Ok(());
                }
                _ => {
                    warn!(error = %e, "fatal framing error, closing connection");
                    self.set_closed();
                    return Err(e.into());
                }
            },
        };
        self.last_rx = now;
        trace!(pdu = %crate::pdu::PduSummary(&pdu), "rx");
        if let Err(e) = self.dispatch(pdu, policy, now) {
            warn!(error = %e, "closing connection");
            self.set_closed();
            return Err(e);
        }
        Ok(())
    }

    fn dispatch(
        &mut self,
        pdu: Pdu,
        policy: &dyn LoginPolicy,
        now: Instant,
    ) -> Result<(), ConnectionError> {
        match self.phase {
            Phase::Login(_) => match pdu {
                Pdu::LoginRequest(req) => {
                    self.handle_login(req, policy, now);
                    Ok(())
                }
                _ => Err(ConnectionError::Protocol("non-login PDU during login")),
            },
            Phase::FullFeature => self.dispatch_ffp(pdu, now),
            Phase::Closed => Err(ConnectionError::Closed),
        }
    }

    fn discovery(&self) -> bool {
        self.session.as_ref().map(|s| s.session_type) == Some(SessionType::Discovery)
    }

    fn dispatch_ffp(&mut self, pdu: Pdu, now: Instant) -> Result<(), ConnectionError> {
        let header = bhs_of(&pdu);
        if self.logout_itt.is_some() {
            debug!("ignoring PDU after logout");
            return Ok(());
        }
        match pdu {
            Pdu::NopOut(n) => self.handle_nop_out(n, header),
            Pdu::TextRequest(t) => {
                let (imm, sn) = (t.immediate, t.cmd_sn);
                self.gate(imm, sn, Ordered::Text(t));
            }
            Pdu::LogoutRequest(l) => {
                let (imm, sn) = (l.immediate, l.cmd_sn);
                self.gate(imm, sn, Ordered::Logout(l));
            }
            _ if self.discovery() => {
                warn!(
                    opcode = header.opcode(),
                    "PDU not allowed in a discovery session"
                );
                self.reject(reject_reason::PROTOCOL_ERROR, header);
            }
            Pdu::ScsiCommand(c) => self.handle_scsi_command(c, header),
            Pdu::DataOut(d) => self.handle_data_out(d, header)?,
            Pdu::TaskMgmtRequest(t) => {
                let (imm, sn) = (t.immediate, t.cmd_sn);
                self.gate(imm, sn, Ordered::Tmf(t));
            }
            Pdu::Snack(_) => {
                warn!("SNACK not supported at ErrorRecoveryLevel 0");
                self.reject(reject_reason::PROTOCOL_ERROR, header);
            }
            Pdu::LoginRequest(_) => {
                warn!("Login Request in full feature phase");
                self.reject(reject_reason::PROTOCOL_ERROR, header);
            }
            _ => {
                warn!(
                    opcode = header.opcode(),
                    "target opcode received from initiator"
                );
                self.reject(reject_reason::COMMAND_NOT_SUPPORTED, header);
            }
        }
        let _ = now;
        Ok(())
    }

    // ----- login -----

    fn handle_login(&mut self, req: LoginRequest, policy: &dyn LoginPolicy, now: Instant) {
        let Phase::Login(login) = &mut self.phase else {
            return;
        };
        if !self.login_started {
            self.login_started = true;
            self.stat_sn = req.exp_stat_sn;
            self.exp_cmd_sn = req.cmd_sn;
            self.max_cmd_sn = req.cmd_sn.wrapping_add(self.limits.cmdsn_window - 1);
            self.login_isid = req.isid;
        }
        let step = login.handle(&req, policy, self.authenticator.as_deref_mut());
        let (reply, done) = match step {
            LoginStep::Reply(r) => (r, None),
            LoginStep::Complete(r, s) => (r, Some(s)),
            LoginStep::Fail(r) => {
                // Authentication/authorization refusals are logged by the gateway, rate-limited.
                if r.status_class == 2 && matches!(r.status_detail, 1 | 2) {
                    debug!(
                        class = r.status_class,
                        detail = r.status_detail,
                        "login refused"
                    );
                } else {
                    warn!(
                        class = r.status_class,
                        detail = r.status_detail,
                        "login failed"
                    );
                }
                self.set_closing();
                (r, None)
            }
        };
        let sn = self.sn(true);
        let resp = LoginResponse {
            transit: reply.transit,
            cont: false,
            csg: reply.csg,
            nsg: reply.nsg,
            version_max: 0,
            version_active: 0,
            isid: self.login_isid,
            tsih: reply.tsih,
            itt: req.itt,
            sn,
            status_class: reply.status_class,
            status_detail: reply.status_detail,
            data: reply.data,
        };
        self.send(Pdu::LoginResponse(resp), false);
        if let Some(s) = done {
            info!(
                initiator = %s.initiator_name,
                target = ?s.target_name,
                tsih = s.tsih,
                kind = ?s.session_type,
                "session established"
            );
            self.hidden_targets = self
                .config
                .targets
                .iter()
                .filter(|t| !policy.may_discover(&s.initiator_name, &t.name))
                .map(|t| t.name.clone())
                .collect();
            self.params = s.params.clone();
            self.frame = FrameConfig::for_session(&s);
            self.phase = Phase::FullFeature;
            self.session = Some(s.clone());
            self.last_rx = now;
            self.events.push_back(Event::SessionEstablished(s));
        }
    }

    // ----- sequence numbers and ordering -----

    /// Current StatSN/ExpCmdSN/MaxCmdSN; advances StatSN when the PDU carries status.
    fn sn(&mut self, advance_stat: bool) -> SnFields {
        let stat_sn = self.stat_sn;
        if advance_stat {
            self.stat_sn = self.stat_sn.wrapping_add(1);
        }
        let free = self.limits.cmdsn_window.saturating_sub(self.in_use);
        let computed = self.exp_cmd_sn.wrapping_add(free).wrapping_sub(1);
        if !self.intake_open {
            // The window stays where it is while new commands are held.
            self.window_held |= sn_lt(self.max_cmd_sn, computed);
        } else {
            self.window_held = false;
            if sn_lt(self.max_cmd_sn, computed) {
                self.max_cmd_sn = computed;
            }
        }
        SnFields {
            stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn,
        }
    }

    fn in_window(&self, cmd_sn: u32) -> bool {
        sn_le(self.exp_cmd_sn, cmd_sn) && sn_le(cmd_sn, self.max_cmd_sn)
    }

    /// Passes an ordered PDU through the CmdSN gate (immediate ones go straight through).
    fn gate(&mut self, immediate: bool, cmd_sn: u32, item: Ordered) {
        if immediate {
            self.process_ordered(item, false);
            return;
        }
        if !self.in_window(cmd_sn) {
            warn!(
                cmd_sn,
                exp = self.exp_cmd_sn,
                max = self.max_cmd_sn,
                "CmdSN outside the window, dropping"
            );
            if let Ordered::Task(itt) = item {
                self.remove_task(itt);
            }
            return;
        }
        if self.ordered.contains_key(&cmd_sn) {
            warn!(cmd_sn, "duplicate CmdSN, dropping");
            if let Ordered::Task(itt) = item {
                self.remove_task(itt);
            }
            return;
        }
        self.ordered.insert(cmd_sn, item);
        self.drain_ordered();
    }

    fn drain_ordered(&mut self) {
        while let Some(item) = self.ordered.remove(&self.exp_cmd_sn) {
            self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
            self.process_ordered(item, true);
            if self.is_closed() {
                break;
            }
        }
    }

    fn process_ordered(&mut self, item: Ordered, in_order: bool) {
        match item {
            Ordered::Task(itt) => {
                if let Some(t) = self.tasks.get_mut(&itt) {
                    t.gate_passed = true;
                    if in_order {
                        t.holds_slot = true;
                        self.in_use += 1;
                    }
                }
                self.try_deliver(itt);
            }
            Ordered::Nop(n) => self.answer_nop(n),
            Ordered::Text(t) => self.handle_text(t),
            Ordered::Tmf(t) => self.handle_tmf(t, in_order),
            Ordered::Logout(l) => self.handle_logout(l),
            Ordered::Skip => {}
        }
    }

    fn release_slot(&mut self, holds: bool) {
        if holds {
            self.in_use = self.in_use.saturating_sub(1);
        }
    }

    // ----- output -----

    fn send(&mut self, pdu: Pdu, reactive: bool) {
        trace!(pdu = %crate::pdu::PduSummary(&pdu), "tx");
        let mut parts = Vec::with_capacity(3);
        pdu.write_to(self.frame.header_digest, self.frame.data_digest, &mut parts);
        if reactive {
            self.reactive_queued += 1;
        }
        self.tx.push_back(Outgoing { parts, reactive });
    }

    /// Rejects a PDU. Reject carries ITT 0xffffffff and, like other PDUs with the reserved
    /// ITT, does not advance StatSN (what libiscsi and open-iscsi assume).
    fn reject(&mut self, reason: u8, header: Bhs) {
        let sn = self.sn(false);
        self.send(
            Pdu::Reject(Reject {
                reason,
                sn,
                data_sn: 0,
                data: Bytes::copy_from_slice(&header.0),
            }),
            true,
        );
    }

    fn alloc_ttt(&mut self) -> u32 {
        let t = self.next_ttt;
        self.next_ttt = self.next_ttt.wrapping_add(1);
        if self.next_ttt == RESERVED_TAG {
            self.next_ttt = 1;
        }
        t
    }

    /// Ends the connection: for `Shutdown` in full feature phase an Async Message tells the
    /// initiator the session is being dropped. Flush `poll_transmit`, then close the socket.
    pub fn close(&mut self, reason: CloseReason) {
        self.check_buffered();
        if self.is_closed() {
            return;
        }
        info!(?reason, "closing connection");
        if reason == CloseReason::Shutdown && matches!(self.phase, Phase::FullFeature) {
            let sn = self.sn(false);
            let msg = AsyncMessage {
                lun: 0,
                sn,
                event: 3,
                vcode: 0,
                param1: 0,
                param2: self.params.default_time2wait,
                param3: self.params.default_time2retain,
                data: Bytes::new(),
            };
            self.send(Pdu::AsyncMessage(msg), false);
        }
        self.set_closing();
    }

    /// Asks the initiator to log out within `seconds` (Async Message event 1).
    pub fn request_logout(&mut self, seconds: u16) {
        if !matches!(self.phase, Phase::FullFeature) || self.is_closed() {
            return;
        }
        let sn = self.sn(false);
        let msg = AsyncMessage {
            lun: 0,
            sn,
            event: 1,
            vcode: 0,
            param1: 0,
            param2: 0,
            param3: seconds,
            data: Bytes::new(),
        };
        self.send(Pdu::AsyncMessage(msg), false);
    }
}

/// Header of a decoded PDU, for Reject payloads.
fn bhs_of(pdu: &Pdu) -> Bhs {
    let (mut h, ahs, data) = pdu.to_parts();
    h.set_total_ahs_words((ahs.len() / 4).min(255) as u8);
    h.set_data_segment_len(data.len() as u32);
    h
}
