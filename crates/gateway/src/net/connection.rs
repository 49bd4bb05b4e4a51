//! One TCP connection: owns the socket and its sans-IO `iscsi::Connection`, runs the
//! session's SCSI commands concurrently inside this one task (a `FuturesUnordered`, so a
//! command costs no task spawn, channel or cross-thread wake-up), feeds completions, task
//! management and timer ticks back, and writes what the protocol queues with vectored writes
//! (headers and payload slices, no copies of the data). The data segment of a large data PDU
//! is received into a pooled aligned buffer of its own (`large_pdu.rs`) and handed to the
//! protocol with its header; `read.rs` shapes the reads so that a stream of such PDUs is
//! read PDU by PDU, without copies.
//!
//! Each time round, the loop takes the first ready of, in this order: control messages,
//! shutdown, the protocol's timer, the data budget, completions on the ring, the socket,
//! and the running commands. The cheap ones that must not starve come first. The socket
//! comes before the commands so that input already queued is read first and the I/O of
//! several commands goes to the kernel in one submit, for at most [`READS_PER_SUBMIT`]
//! reads in a row.
//!
//! Limits enforced here: the per-initiator session cap at login (status 0x0302), the
//! outgoing backlog budget (`backlog.rs`), the gateway-wide command data budget
//! (`budget.rs`, `limits.max_command_data`) and the write timeout (`[limits]`).
//!
//! The data budget gates the protocol's intake of new commands
//! (`iscsi::Connection::set_intake_open`), re-evaluated after every event, and the socket is
//! still read: NOP-Outs, task management, logouts and solicited Data-Out keep flowing while
//! the budget is used up. One exception bounds memory: an initiator may still push the
//! immediate and unsolicited data of commands its window already allowed, which the protocol
//! has to buffer while they wait; once that reaches [`HELD_DATA_READ_CAP`] the connection
//! stops reading until the gate reopens (those bytes then wait in the kernel's socket
//! buffer, and so does anything sent after them). A connection whose intake waits is woken
//! when another connection frees budget.

use std::collections::HashMap;
use std::future::Future;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::future::{AbortHandle, Abortable};
use futures_util::stream::{FuturesUnordered, StreamExt};
use iscsi::{
    CloseReason, CommandResponse, Connection, DataOut, Event, LoginInfo, LoginPolicy,
    LoginRejection, ScsiCommand, SessionInfo, SessionType, TaskId, TmfFunction, TmfRequest,
    TmfResponseCode,
};
use scsi::{Nexus, ResetKind};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::block::{ring_scope, LocalRing};
use crate::metrics::login::CountedAuth;
use crate::metrics::LoginResult;
use crate::net::backlog::{Backlog, Reservation};
use crate::net::budget::{DataBudget, DataReservation};
use crate::net::deadline::Deadline;
use crate::net::exec::{Admissions, CommandInput, TargetRuntime};
use crate::net::idle_poll;
use crate::net::large_pdu::LargePdu;
use crate::net::read::{read_some, ReadState, READ_CHUNK};
use crate::net::registry::{Control, Registration};
use crate::net::targets::RELATIVE_PORT_ID;
use crate::net::ServerContext;

/// Write data the protocol may buffer for commands held at the closed intake gate before
/// the connection stops reading (see the module docs), counting a large PDU being received:
/// with 32 sessions pushing 128 KiB writes into their windows it is what keeps the gateway's
/// memory near the data budget.
const HELD_DATA_READ_CAP: usize = 256 * 1024;
/// SQ size of a connection's own io_uring (more operations wait in its queue).
const RING_ENTRIES: u32 = 128;
/// Socket reads the connection may do in a row, while more input is queued, before it
/// polls its running commands (which queue their I/O) and submits. The socket is read
/// before the commands are polled, so a stream of large writes that is already queued in
/// the socket (the initiator runs ahead) goes to the kernel a few at a time: one
/// `io_uring_enter`, and contiguous writes that the block layer merges (benches/README.md,
/// "Reading ahead of the submit"). The bound keeps completions from waiting behind a long
/// stream of input. A read that finds nothing queued lets the commands be polled at once.
const READS_PER_SUBMIT: u32 = 8;

/// The iSCSI initiator port name of a session (RFC 7143 §10.1.2: name + ",i,0x" + ISID).
pub fn initiator_port_name(initiator: &str, isid: &[u8; 6]) -> String {
    let hex: String = isid.iter().map(|b| format!("{b:02x}")).collect();
    format!("{initiator},i,0x{hex}")
}

/// Login decisions that need gateway-wide state.
struct Policy<'a> {
    ctx: &'a ServerContext,
    peer: SocketAddr,
}

impl LoginPolicy for Policy<'_> {
    fn check(&self, req: &LoginInfo) -> Result<u16, LoginRejection> {
        let r = self.decide(req);
        if r.is_err() {
            self.ctx.metrics.login(LoginResult::Refused);
        }
        r
    }

    fn authenticator(&self, req: &LoginInfo) -> Option<Box<dyn iscsi::Authenticator>> {
        let auth = self.ctx.access.authenticator(req, self.peer)?;
        Some(CountedAuth::wrap(auth, self.ctx.metrics.clone()))
    }

    fn may_discover(&self, initiator: &str, target: &str) -> bool {
        self.ctx
            .access
            .allows(target, initiator, self.peer.ip())
            .is_ok()
    }
}

impl Policy<'_> {
    fn decide(&self, req: &LoginInfo) -> Result<u16, LoginRejection> {
        let registry = &self.ctx.registry;
        if req.session_type == SessionType::Discovery {
            return Ok(registry.allocate_tsih());
        }
        let Some(target) = req.target_name.as_deref() else {
            return Err(LoginRejection::TargetNotFound);
        };
        if self.ctx.targets.get(target).is_none() {
            return Err(LoginRejection::TargetNotFound);
        }
        self.ctx.access.check_login(req, self.peer)?;
        let port = initiator_port_name(&req.initiator_name, &req.isid);
        let max = self.ctx.limits.max_sessions_per_initiator;
        if !registry.admits(&req.initiator_name, &port, target, max) {
            warn!(initiator = %req.initiator_name, max, "login refused: too many sessions for this initiator (limits.max_sessions_per_initiator)");
            return Err(LoginRejection::OutOfResources);
        }
        if req.tsih == 0 {
            return Ok(registry.allocate_tsih());
        }
        // A non-zero TSIH names an existing session (connection reinstatement).
        match registry.live_tsih(&port, target) {
            Some(t) if t == req.tsih => Ok(t),
            _ => Err(LoginRejection::SessionDoesNotExist),
        }
    }
}

/// A normal session in full feature phase.
struct Session {
    registration: Registration,
    nexus: Arc<Nexus>,
    target: Arc<TargetRuntime>,
    /// This nexus's admissions to the LUNs' lock-free start of data-path commands.
    admissions: Arc<Admissions>,
}

struct InFlight {
    lun: u64,
    handle: AbortHandle,
    /// Data buffer bytes this command holds against the data budget (`budget.rs`),
    /// returned on drop.
    _data: DataReservation,
}

/// A finished command, with its backlog reservation (released once the response is written).
type Done = (TaskId, CommandResponse, Reservation);
/// A running SCSI command: its task and final response.
type CommandFuture = Pin<Box<dyn Future<Output = Done> + Send>>;
/// The commands of this connection, each abortable by task management.
type Running = FuturesUnordered<Abortable<CommandFuture>>;
/// What a running command ends with: its response, or aborted by task management.
type FinishedCommand = Result<Done, futures_util::future::Aborted>;

/// Serves one accepted connection until it closes. Its commands' block I/O goes through a
/// ring of its own (see `block::local`), or the engine thread when no ring can be made.
pub async fn serve_connection(
    sock: TcpStream,
    peer: SocketAddr,
    ctx: Arc<ServerContext>,
    shutdown: watch::Receiver<bool>,
) {
    let ring = if engine_thread_only() {
        Err(std::io::Error::other("GATEWAY_IO=engine"))
    } else {
        LocalRing::new(RING_ENTRIES, ctx.adaptive_depth)
    };
    let ring = match ring {
        Ok(r) => Some(r),
        Err(e) => {
            debug!(%peer, error = %e, "no io_uring of its own; using the engine thread");
            None
        }
    };
    // Idle polling (if on) watches the socket and the ring while this connection lives.
    let _watch_socket = idle_poll::watch(sock.as_raw_fd());
    let _watch_ring = ring.as_ref().map(|r| idle_poll::watch(r.raw_fd()));
    let _no_poll = ring.is_none().then(idle_poll::unwatchable);
    ring_scope(
        ring.clone(),
        serve(sock, peer, ctx, shutdown, ring.as_deref()),
    )
    .await;
}

/// `GATEWAY_IO=engine` in the environment sends all block I/O through the engine thread
/// instead of per-connection rings: the alternative ARCHITECTURE.md measured, kept for
/// benchmarking it (benches/README.md).
fn engine_thread_only() -> bool {
    static ONLY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ONLY.get_or_init(|| std::env::var("GATEWAY_IO").is_ok_and(|v| v == "engine"))
}

async fn serve(
    mut sock: TcpStream,
    peer: SocketAddr,
    ctx: Arc<ServerContext>,
    mut shutdown: watch::Receiver<bool>,
    ring: Option<&LocalRing>,
) {
    let config = match sock.local_addr() {
        Ok(local) => ctx.iscsi_config_for(local),
        Err(_) => ctx.iscsi.clone(),
    };
    let mut conn = Connection::new(config, std::time::Instant::now());
    let _counted = ctx.metrics.connection();
    let mut running: Running = FuturesUnordered::new();
    let budget = ctx.data_budget.clone();
    // Write data the protocol is still assembling or holding, and a large PDU being
    // received, counted against the budget (`assembling_bytes`).
    let mut assembling = budget.reserve(0);
    let backlog = Backlog::new(ctx.limits.max_outgoing_backlog);
    let write_timeout = Duration::from_secs(u64::from(ctx.limits.write_timeout_secs));
    // Reservations of responses queued for the socket: released once they are written.
    let mut written: Vec<Reservation> = Vec::new();
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel::<Control>();
    let mut inbuf = BytesMut::with_capacity(READ_CHUNK);
    // A large data PDU being received outside `inbuf` (`large_pdu.rs`).
    let mut large: Option<LargePdu> = None;
    let mut reading = ReadState::default();
    let mut out: Vec<Bytes> = Vec::new();
    let mut session: Option<Session> = None;
    let mut in_flight: HashMap<TaskId, InFlight> = HashMap::new();
    // Wakes this task when budget is released on any thread; renewed each time the intake
    // gate is found closed (below), so no release after that evaluation is missed.
    let mut freed = std::pin::pin!(budget.freed());
    // Socket reads since the running commands were last polled (`READS_PER_SUBMIT`).
    let mut unpolled_reads = 0;
    // The protocol's next deadline (login timeout, idle ping).
    let mut timer = Deadline::new();
    debug!(%peer, "connection accepted");

    let end = loop {
        // Everything the protocol queued goes out before we wait again.
        while conn.poll_transmit(&mut out) {}
        if !out.is_empty() {
            match tokio::time::timeout(write_timeout, write_all(&mut sock, &mut out)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => break format!("write failed: {e}"),
                Err(_) => {
                    break format!("peer did not take its responses within {write_timeout:?}")
                }
            }
        }
        written.clear();
        if conn.is_closed() {
            break "closed by protocol".to_owned();
        }
        let intake_waiting = conn.intake_waiting();
        let read_paused =
            intake_waiting && assembling_bytes(&conn, large.as_ref()) >= HELD_DATA_READ_CAP;
        timer.follow(conn.poll_timeout().map(Instant::from_std));
        let now = std::time::Instant::now;
        // Biased: the cheap branches that must not starve come first, then completions
        // reaped, then the socket, then the commands (see `READS_PER_SUBMIT`).
        tokio::select! {
            biased;
            Some(ctl) = ctl_rx.recv() => match ctl {
                Control::Close(why) => {
                    info!(%peer, why, "closing session");
                    conn.close(CloseReason::Reinstated);
                }
                Control::AbortAll => {
                    // PREEMPT AND ABORT from another nexus: the tasks end without status
                    // (TAS=0); the initiator recovers them with task management.
                    for (_, t) in in_flight.drain() {
                        t.handle.abort();
                    }
                }
            },
            _ = shutdown.changed() => {
                conn.close(CloseReason::Shutdown);
            }
            _ = timer.fired() => conn.handle_timeout(now()),
            // Budget came back: the gate below reopens the intake.
            _ = freed.as_mut(), if intake_waiting => {}
            _ = ring_ready(ring) => {
                if let Some(r) = ring {
                    r.reap();
                }
            }
            r = read_some(&mut sock, &mut inbuf, &mut large, &mut reading, conn.session()), if !read_paused => match r {
                Ok(0) => break "peer closed the connection".to_owned(),
                Ok(_) => {
                    let policy = Policy { ctx: &ctx, peer };
                    // A finished large PDU is the next in the stream (the input buffer was
                    // empty when it started), so it goes first.
                    let result = match large.take_if(|p| p.is_complete()) {
                        Some(pdu) => {
                            let (head, tail) = pdu.into_parts();
                            conn.handle_split_frame(&head, tail, &policy, now())
                        }
                        None => Ok(()),
                    }
                    .and_then(|()| conn.handle_input(&mut inbuf, &policy, now()));
                    if let Err(e) = result {
                        warn!(%peer, error = %e, "dropping connection");
                        ctx.metrics.protocol_error();
                        while conn.poll_transmit(&mut out) {}
                        let _ = tokio::time::timeout(Duration::from_secs(2), write_all(&mut sock, &mut out)).await;
                        break format!("protocol error: {e}");
                    }
                    unpolled_reads += 1;
                    if unpolled_reads >= READS_PER_SUBMIT {
                        // Let the commands of the last reads queue their I/O (one submit),
                        // and complete what finished meanwhile.
                        complete_finished(&mut running, ring, &mut unpolled_reads, |done| {
                            finish(done, &mut conn, &mut in_flight, &mut written);
                        });
                    }
                }
                Err(e) => break format!("read failed: {e}"),
            },
            Some(done) = next_done(&mut running, ring, &mut unpolled_reads), if !running.is_empty() => {
                finish(done, &mut conn, &mut in_flight, &mut written);
                // More may have finished in the same wake-up: complete them all before the
                // responses go out in one write.
                complete_finished(&mut running, ring, &mut unpolled_reads, |done| {
                    finish(done, &mut conn, &mut in_flight, &mut written);
                });
            }
        }
        // The intake gate follows the budget, re-evaluated after each event, since each
        // delivered command takes its share (and hands its write data over from the
        // protocol's buffers to its own reservation).
        loop {
            assembling.set(assembling_bytes(&conn, large.as_ref()));
            let mut open = budget.admits(in_flight.len());
            if !open {
                // Arm the wake-up first, then look again: a release between the two checks
                // then still wakes this task. Only a closing gate pays for it.
                freed.set(budget.freed());
                open = budget.admits(in_flight.len());
            }
            conn.set_intake_open(open);
            let Some(ev) = conn.poll_event() else { break };
            handle_event(
                ev,
                &ctx,
                &mut conn,
                &mut session,
                &mut in_flight,
                &running,
                &ctl_tx,
                (&backlog, &budget),
                peer,
            );
        }
    };

    for (_, t) in in_flight.drain() {
        t.handle.abort();
    }
    if let Some(s) = session {
        ctx.registry.unregister(&s.registration);
        lock(&s.target).nexus_gone(s.nexus.id);
        info!(%peer, initiator = %s.nexus.initiator_port, reason = %end, "session ended");
    } else {
        debug!(%peer, reason = %end, "connection ended");
    }
}

/// Write data this connection buffers outside its running commands, for its `assembling`
/// share of the data budget: what the protocol is assembling or holding
/// (`buffered_write_bytes`) and the buffer of a large PDU being received. A finished large
/// PDU is taken out of `large` in the same step that hands it to the protocol, so its bytes
/// count in one place or the other, never both. While a Data-Out for a write is received,
/// the write's own count (its EDTL, data on its way) and the PDU's buffer both count: at
/// most one PDU per connection too much, and the memory really is both buffers for a moment
/// when the data is copied into an assembly buffer.
pub(crate) fn assembling_bytes(conn: &Connection, large: Option<&LargePdu>) -> usize {
    conn.buffered_write_bytes() + large.map_or(0, LargePdu::buffered_bytes)
}

#[allow(clippy::too_many_arguments)]
fn handle_event(
    ev: Event,
    ctx: &Arc<ServerContext>,
    conn: &mut Connection,
    session: &mut Option<Session>,
    in_flight: &mut HashMap<TaskId, InFlight>,
    running: &Running,
    ctl_tx: &mpsc::UnboundedSender<Control>,
    (backlog, budget): (&Backlog, &Arc<DataBudget>),
    peer: SocketAddr,
) {
    match ev {
        Event::SessionEstablished(info) => {
            ctx.metrics.login(LoginResult::Ok);
            if let Some(s) = establish(ctx, &info, ctl_tx) {
                info!(%peer, initiator = %s.nexus.initiator_port, target = %s.target.name, tsih = info.tsih, "session established");
                *session = Some(s);
            } else {
                info!(%peer, initiator = %info.initiator_name, "discovery session established");
            }
        }
        Event::ScsiCommand(cmd) => {
            let Some(s) = session.as_ref() else {
                // The protocol only delivers commands in normal sessions.
                warn!(%peer, "SCSI command outside a normal session ignored");
                return;
            };
            let task = cmd.task;
            let lun = lun_number(cmd.lun);
            let data_len = match &cmd.data_out {
                DataOut::Complete(b) => b.len(),
                DataOut::None | DataOut::TooLarge => 0,
            };
            let data = budget.reserve(data_len.max(cmd.expected_data_in_len as usize));
            let (handle, reg) = AbortHandle::new_pair();
            running.push(Abortable::new(
                command_future(ctx, s, cmd, lun, backlog.clone()),
                reg,
            ));
            in_flight.insert(
                task,
                InFlight {
                    lun,
                    handle,
                    _data: data,
                },
            );
        }
        Event::TaskManagement(req) => {
            let code = task_management(&req, session.as_ref(), in_flight);
            conn.complete_task_management(req.id, code, std::time::Instant::now());
        }
        Event::Logout { reason } => debug!(%peer, reason, "logout requested"),
    }
}

fn establish(
    ctx: &ServerContext,
    info: &SessionInfo,
    ctl_tx: &mpsc::UnboundedSender<Control>,
) -> Option<Session> {
    if info.session_type != SessionType::Normal {
        return None;
    }
    let target_name = info.target_name.as_deref()?;
    let target = ctx.targets.get(target_name)?.clone();
    let port = initiator_port_name(&info.initiator_name, &info.isid);
    let registration = ctx
        .registry
        .register(&port, target_name, info.tsih, ctl_tx.clone());
    let nexus = Arc::new(Nexus {
        id: registration.nexus_id,
        initiator_port: port,
        initiator_name: info.initiator_name.clone(),
        relative_port_id: RELATIVE_PORT_ID,
    });
    Some(Session {
        registration,
        nexus,
        admissions: Arc::new(target.admissions()),
        target,
    })
}

fn command_future(
    ctx: &Arc<ServerContext>,
    s: &Session,
    cmd: ScsiCommand,
    lun: u64,
    backlog: Backlog,
) -> CommandFuture {
    let target = s.target.clone();
    let nexus = s.nexus.clone();
    let admissions = s.admissions.clone();
    let ctx = ctx.clone();
    let task = cmd.task;
    let (data_out, too_large) = match cmd.data_out {
        DataOut::None => (Bytes::new(), false),
        DataOut::Complete(b) => (b, false),
        DataOut::TooLarge => (Bytes::new(), true),
    };
    let input = CommandInput {
        lun,
        cdb: cmd.cdb,
        data_out,
        data_out_too_large: too_large,
        expected_data_in_len: cmd.expected_data_in_len,
        attr: match cmd.attr {
            iscsi::TaskAttr::Ordered => scsi::TaskAttr::Ordered,
            iscsi::TaskAttr::HeadOfQueue => scsi::TaskAttr::HeadOfQueue,
            iscsi::TaskAttr::Aca => scsi::TaskAttr::Aca,
            iscsi::TaskAttr::Untagged | iscsi::TaskAttr::Simple => scsi::TaskAttr::Simple,
        },
    };
    let data_in_len = input.expected_data_in_len;
    Box::pin(async move {
        let reservation = backlog.reserve(data_in_len).await;
        let resp = target.execute(&nexus, &admissions, input).await;
        if resp.pr_state_changed {
            debug!(target = %target.name, "persistent reservation state changed");
        }
        if !resp.abort_nexuses.is_empty() {
            let others: Vec<u64> = resp
                .abort_nexuses
                .iter()
                .copied()
                .filter(|id| *id != nexus.id)
                .collect();
            ctx.registry.send_to_nexuses(&others, Control::AbortAll);
        }
        (
            task,
            CommandResponse {
                status: resp.status,
                sense: resp.sense,
                data_in: resp.data_in,
                data_out_len: resp.data_out_len,
            },
            reservation,
        )
    })
}

/// Carries out a task management function for this session and says how it went. Aborted
/// tasks end here; the protocol then drops them and sends no status for them.
fn task_management(
    req: &TmfRequest,
    session: Option<&Session>,
    in_flight: &mut HashMap<TaskId, InFlight>,
) -> TmfResponseCode {
    let Some(s) = session else {
        return TmfResponseCode::Rejected;
    };
    let lun = lun_number(req.lun);
    let lun_exists = lock(&s.target).lun(lun).is_some();
    let mut abort_where = |pred: &dyn Fn(&InFlight) -> bool| {
        in_flight.retain(|_, t| {
            if pred(t) {
                t.handle.abort();
                false
            } else {
                true
            }
        });
    };
    match req.function {
        TmfFunction::AbortTask => {
            if let Some(t) = req.referenced_task.and_then(|id| in_flight.remove(&id)) {
                t.handle.abort();
            }
            TmfResponseCode::FunctionComplete
        }
        TmfFunction::AbortTaskSet | TmfFunction::ClearTaskSet => {
            if !lun_exists {
                return TmfResponseCode::LunDoesNotExist;
            }
            abort_where(&|t| t.lun == lun);
            TmfResponseCode::FunctionComplete
        }
        TmfFunction::LogicalUnitReset => {
            if !lun_exists {
                return TmfResponseCode::LunDoesNotExist;
            }
            abort_where(&|t| t.lun == lun);
            if let Some(lu) = lock(&s.target).lun_mut(lun) {
                lu.reset(ResetKind::LunReset);
            }
            info!(lun, initiator = %s.nexus.initiator_port, "logical unit reset");
            TmfResponseCode::FunctionComplete
        }
        TmfFunction::TargetWarmReset | TmfFunction::TargetColdReset => {
            abort_where(&|_| true);
            lock(&s.target).reset(ResetKind::TargetReset);
            info!(initiator = %s.nexus.initiator_port, function = ?req.function, "target reset");
            TmfResponseCode::FunctionComplete
        }
        TmfFunction::ClearAca => TmfResponseCode::NotSupported,
        TmfFunction::TaskReassign => TmfResponseCode::ReassignmentNotSupported,
    }
}

/// The LUN number in an 8-byte SAM LUN field. Addressing methods the device model does not
/// use map to a number no LUN has, so the command gets LOGICAL UNIT NOT SUPPORTED.
fn lun_number(field: u64) -> u64 {
    scsi::decode_lun(field.to_be_bytes()).unwrap_or(u64::MAX)
}

fn lock(target: &TargetRuntime) -> std::sync::MutexGuard<'_, scsi::ScsiTarget> {
    target.scsi.lock().unwrap_or_else(|p| p.into_inner())
}

/// The next finished (or aborted) command. Whatever the commands queued on the ring while
/// being polled is submitted before this returns, so the task never sleeps on unsubmitted
/// I/O, and everything queued in one wake-up goes to the kernel in one call. Polling the
/// commands zeroes `unpolled_reads`.
fn next_done<'a>(
    running: &'a mut Running,
    ring: Option<&'a LocalRing>,
    unpolled_reads: &'a mut u32,
) -> impl Future<Output = Option<FinishedCommand>> + 'a {
    std::future::poll_fn(move |cx| {
        let r = running.poll_next_unpin(cx);
        *unpolled_reads = 0;
        if let Some(ring) = ring {
            ring.submit();
        }
        r
    })
}

/// Polls the running commands once more (submitting what they queue) and hands every one
/// that has finished to `finish`, without waiting.
fn complete_finished(
    running: &mut Running,
    ring: Option<&LocalRing>,
    unpolled_reads: &mut u32,
    mut finish: impl FnMut(FinishedCommand),
) {
    while let Some(Some(done)) =
        futures_util::FutureExt::now_or_never(next_done(running, ring, unpolled_reads))
    {
        finish(done);
    }
}

/// Gives a finished command's response to the protocol, unless task management ended the
/// task first (then it is no longer in flight, or it was aborted).
fn finish(
    done: FinishedCommand,
    conn: &mut Connection,
    in_flight: &mut HashMap<TaskId, InFlight>,
    written: &mut Vec<Reservation>,
) {
    if let Ok((task, resp, reservation)) = done {
        if in_flight.remove(&task).is_some() {
            conn.complete_command(task, resp, std::time::Instant::now());
            written.push(reservation);
        }
    }
}

async fn ring_ready(ring: Option<&LocalRing>) {
    match ring {
        Some(r) => r.ready().await,
        None => std::future::pending().await,
    }
}

/// Writes every buffer in `out` (vectored), leaving it empty.
async fn write_all<W: AsyncWrite + Unpin>(w: &mut W, out: &mut Vec<Bytes>) -> std::io::Result<()> {
    let mut first = 0;
    while first < out.len() {
        let slices: Vec<IoSlice<'_>> = out[first..]
            .iter()
            .take(64)
            .map(|b| IoSlice::new(b))
            .collect();
        let mut n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let Some(b) = out.get_mut(first) else { break };
            if n >= b.len() {
                n -= b.len();
                first += 1;
            } else {
                b.advance(n);
                n = 0;
            }
        }
        while out.get(first).is_some_and(|b| b.is_empty()) {
            first += 1;
        }
    }
    out.clear();
    w.flush().await
}
