//! The io_uring engine: one ring owned by one dedicated thread, fed through a channel.
//!
//! Submitters push a [`Request`] on an mpsc channel and poke an eventfd (only when the
//! thread may be asleep). The ring always has a read pending on that eventfd, so the
//! thread can sleep in `submit_and_wait(1)` and still wake for new work as well as for
//! completions. Each loop drains every queued request into the SQ before one submit.
//!
//! The engine owns every buffer and file descriptor while its operation is in flight:
//! a caller whose future is dropped only loses the reply, the kernel never writes into
//! freed memory or a recycled fd. Short transfers are resubmitted for the rest, EAGAIN and
//! EINTR are retried a bounded number of times, and the number of operations in flight is
//! capped at the ring size so the completion queue cannot overflow.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::Instant;

use bufpool::ArenaRegion;
use bytes::Bytes;
use io_uring::{opcode, types, IoUring};
use tokio::sync::oneshot;

use super::depth::DepthLimiter;
use super::AlignedBuf;

/// user_data of the eventfd read; request slots use their index.
const WAKE_TOKEN: u64 = u64::MAX;
/// How often one operation is retried on EAGAIN/EINTR before failing.
const MAX_RETRIES: u32 = 32;
/// How many consecutive unexpected `io_uring_enter` failures stop the engine.
const MAX_ENTER_ERRORS: u32 = 100;

/// Engine tuning.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// SQ size; also the cap on operations in flight.
    pub ring_entries: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { ring_entries: 256 }
    }
}

/// Data of a write: either the caller's bytes (already suitably aligned) or an aligned copy.
pub(crate) enum WriteData {
    Shared(Bytes),
    Aligned(AlignedBuf),
}

impl WriteData {
    fn as_slice(&self) -> &[u8] {
        match self {
            WriteData::Shared(b) => b,
            WriteData::Aligned(b) => b.as_slice(),
        }
    }
}

/// What to do.
pub(crate) enum Op {
    Read {
        buf: AlignedBuf,
        done: usize,
    },
    Write {
        data: WriteData,
        done: usize,
        rw_flags: i32,
    },
    FdataSync,
    Fallocate {
        len: u64,
        mode: i32,
    },
}

/// Result of a finished operation: reads give their buffer back.
pub(crate) type Reply = io::Result<Option<AlignedBuf>>;

/// One operation on one file descriptor.
pub(crate) struct Request {
    pub fd: Arc<OwnedFd>,
    pub offset: u64,
    pub op: Op,
    pub reply: oneshot::Sender<Reply>,
    pub retries: u32,
}

impl Request {
    /// Builds the SQE for the part of the operation still to do. A transfer whose memory
    /// lies inside `registered` (the ring's registered buffer 0) uses the fixed opcode.
    fn sqe(&mut self, token: u64, registered: Option<ArenaRegion>) -> io_uring::squeue::Entry {
        let fd = types::Fd(self.fd.as_raw_fd());
        let inside = |ptr: *const u8, len: usize| registered.is_some_and(|r| r.contains(ptr, len));
        match &mut self.op {
            Op::Read { buf, done } => {
                let rest = buf.len().saturating_sub(*done);
                // SAFETY (pointer arithmetic): done <= len <= allocation size.
                let ptr = unsafe { buf.as_mut_ptr().add(*done) };
                let offset = self.offset.saturating_add(*done as u64);
                let fixed = inside(ptr, rest);
                super::registered::count(fixed);
                if fixed {
                    opcode::ReadFixed::new(fd, ptr, clamp_u32(rest), 0)
                        .offset(offset)
                        .build()
                } else {
                    opcode::Read::new(fd, ptr, clamp_u32(rest))
                        .offset(offset)
                        .build()
                }
            }
            Op::Write {
                data,
                done,
                rw_flags,
            } => {
                let rest = data.as_slice().get(*done..).unwrap_or(&[]);
                let offset = self.offset.saturating_add(*done as u64);
                let fixed = inside(rest.as_ptr(), rest.len());
                super::registered::count(fixed);
                if fixed {
                    opcode::WriteFixed::new(fd, rest.as_ptr(), clamp_u32(rest.len()), 0)
                        .offset(offset)
                        .rw_flags(*rw_flags)
                        .build()
                } else {
                    opcode::Write::new(fd, rest.as_ptr(), clamp_u32(rest.len()))
                        .offset(offset)
                        .rw_flags(*rw_flags)
                        .build()
                }
            }
            Op::FdataSync => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            Op::Fallocate { len, mode } => opcode::Fallocate::new(fd, *len)
                .offset(self.offset)
                .mode(*mode)
                .build(),
        }
        .user_data(token)
    }
}

fn clamp_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

struct Shared {
    tx: Option<mpsc::Sender<Request>>,
    wake_fd: Arc<OwnedFd>,
    wake_pending: Arc<AtomicBool>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Disconnect the channel first, then wake the thread so it notices and exits once
        // its in-flight operations completed.
        self.tx = None;
        poke(self.wake_fd.as_raw_fd());
    }
}

/// Handle to a running engine. Cheap to clone; the thread exits after the last handle is
/// dropped and its in-flight operations have completed.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

fn poke(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid u64 to an eventfd we own. A failure (EAGAIN when
    // the counter is saturated) means a wake-up is already pending, which is fine.
    let _ = unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

impl Engine {
    /// Starts a new engine thread with its own ring.
    pub fn start(config: &EngineConfig) -> io::Result<Engine> {
        let entries = config.ring_entries.clamp(8, 4096);
        let ring = IoUring::new(entries)?;
        // SAFETY: plain eventfd creation; the result is checked before use.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh fd we exclusively own.
        let wake_fd = Arc::new(unsafe { OwnedFd::from_raw_fd(raw) });
        let wake_pending = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let worker = Worker {
            core: RingCore::with_ring(ring, entries as usize),
            rx,
            wake_fd: wake_fd.clone(),
            wake_pending: wake_pending.clone(),
            wake_buf: Box::new([0u8; 8]),
            wake_armed: false,
        };
        std::thread::Builder::new()
            .name("io-uring".into())
            .spawn(move || worker.run())?;
        Ok(Engine {
            shared: Arc::new(Shared {
                tx: Some(tx),
                wake_fd,
                wake_pending,
            }),
        })
    }

    /// The process-wide default engine, started on first use.
    pub fn global() -> io::Result<Engine> {
        static GLOBAL: OnceLock<Engine> = OnceLock::new();
        if let Some(e) = GLOBAL.get() {
            return Ok(e.clone());
        }
        let e = Engine::start(&EngineConfig::default())?;
        // A racing thread may have won; either engine works, the loser's thread exits.
        Ok(GLOBAL.get_or_init(|| e).clone())
    }

    /// Queues a request and returns the receiver of its reply.
    pub(crate) fn submit(&self, req: Request) {
        if let Some(tx) = &self.shared.tx {
            // On a stopped engine the request (and its reply sender) is dropped, which the
            // caller observes as a closed channel.
            if tx.send(req).is_ok() && !self.shared.wake_pending.swap(true, Ordering::SeqCst) {
                poke(self.shared.wake_fd.as_raw_fd());
            }
        }
    }

    /// Runs one operation and waits for its result. Dropping the returned future is
    /// safe: the engine keeps buffers and fd alive until the kernel is done.
    ///
    /// Inside [`super::local::scope`] (a connection task) the operation goes to that task's
    /// own ring instead, which the task submits and reaps itself: no thread hop.
    pub(crate) async fn run(&self, fd: Arc<OwnedFd>, offset: u64, op: Op) -> Reply {
        let (reply, rx) = oneshot::channel();
        let req = Request {
            fd,
            offset,
            op,
            reply,
            retries: 0,
        };
        if let Err(req) = super::local::try_push(req) {
            self.submit(req);
        }
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(io::Error::other("io_uring engine stopped")),
        }
    }
}

/// A ring and the requests it carries: which slot each in-flight request occupies, what
/// waits for SQ space, and how a completion finishes a request. Used by the engine thread
/// and by the per-connection rings of [`super::local`].
pub(crate) struct RingCore {
    pub(crate) ring: IoUring,
    slots: Vec<Option<Request>>,
    free: Vec<usize>,
    pub(crate) in_flight: usize,
    cap: usize,
    /// Requests received but not yet in the SQ (ring full, or resubmissions).
    pub(crate) pending: VecDeque<Request>,
    /// Adaptive cap below `cap` (connection rings; see [`super::depth`]).
    depth: Option<DepthLimiter>,
    /// The buffer arena registered with this ring as buffer 0 (`super::registered`).
    registered: Option<ArenaRegion>,
}

struct Worker {
    core: RingCore,
    rx: mpsc::Receiver<Request>,
    wake_fd: Arc<OwnedFd>,
    wake_pending: Arc<AtomicBool>,
    /// Target of the pending eventfd read; boxed so its address is stable.
    wake_buf: Box<[u8; 8]>,
    wake_armed: bool,
}

impl Worker {
    fn run(mut self) {
        let mut disconnected = false;
        let mut enter_errors = 0u32;
        loop {
            // Clear before draining: a submitter that queues after this point pokes again.
            self.wake_pending.store(false, Ordering::SeqCst);
            loop {
                match self.rx.try_recv() {
                    Ok(r) => self.core.pending.push_back(r),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        disconnected = true;
                        break;
                    }
                }
            }
            if disconnected && self.core.in_flight == 0 && self.core.pending.is_empty() {
                if !self.wake_armed {
                    return;
                }
                // Let the pending eventfd read complete so its buffer is free to drop.
                poke(self.wake_fd.as_raw_fd());
            }
            self.fill_sq(!disconnected);
            match self.core.ring.submit_and_wait(1) {
                Ok(_) => enter_errors = 0,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EAGAIN)) => {
                    // Completion backlog: reap below, then try again.
                }
                Err(e) => {
                    enter_errors += 1;
                    tracing::error!(error = %e, "io_uring_enter failed");
                    if enter_errors >= MAX_ENTER_ERRORS {
                        self.abandon(e);
                        return;
                    }
                }
            }
            if self.core.reap() {
                self.wake_armed = false;
            }
        }
    }

    /// Arms the eventfd read if needed, then moves pending requests into the SQ.
    fn fill_sq(&mut self, arm_wake: bool) {
        if arm_wake && !self.wake_armed {
            let e = opcode::Read::new(
                types::Fd(self.wake_fd.as_raw_fd()),
                self.wake_buf.as_mut_ptr(),
                8,
            )
            .build()
            .user_data(WAKE_TOKEN);
            // SAFETY: wake_buf is boxed, owned by self and not dropped before the CQE of
            // this read arrives (run() waits for it before returning).
            if unsafe { self.core.ring.submission().push(&e) }.is_ok() {
                self.wake_armed = true;
            }
        }
        self.core.fill_sq();
    }

    /// The ring is unusable: fail everything queued, and leak what the kernel may still
    /// touch (never free memory a pending SQE points at).
    fn abandon(mut self, err: io::Error) {
        tracing::error!(error = %err, "io_uring engine stopping after repeated failures");
        self.core.fail_pending(&err);
        std::mem::forget(self);
    }
}

impl RingCore {
    /// A ring of `entries` SQEs; at most that many operations are in flight at once.
    /// Cooperative task running: a completion does not interrupt the submitting thread
    /// with an IPI, it is posted when that thread next enters the kernel (a connection's
    /// thread does so on every wake-up); kernels before 5.19 get a plain ring.
    pub(crate) fn new(entries: u32) -> io::Result<Self> {
        let entries = entries.clamp(8, 4096);
        let ring = match IoUring::builder().setup_coop_taskrun().build(entries) {
            Ok(r) => r,
            Err(_) => IoUring::new(entries)?,
        };
        Ok(Self::with_ring(ring, entries as usize))
    }

    fn with_ring(ring: IoUring, cap: usize) -> Self {
        RingCore {
            ring,
            slots: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            cap,
            pending: VecDeque::new(),
            depth: None,
            registered: None,
        }
    }

    /// Registers the calling thread's buffer arena with the ring, if it has one and the
    /// kernel agrees; transfers from inside it then use registered buffers. Returns whether
    /// it did.
    pub(crate) fn register_thread_arena(&mut self) -> bool {
        self.registered = super::registered::register_thread_arena(&self.ring);
        self.registered.is_some()
    }

    /// Lets a [`DepthLimiter`] choose how many operations go into the ring at once.
    pub(crate) fn adapt_depth(&mut self, now: Instant) {
        self.depth = Some(DepthLimiter::new(self.cap, now));
    }

    /// Ends the adaptive cap's epoch when it is over; returns the new settled cap when it
    /// changed.
    pub(crate) fn tick_depth(&mut self, now: Instant) -> Option<usize> {
        self.depth.as_mut().and_then(|d| d.tick(now))
    }

    /// Fails every request not yet handed to the kernel.
    pub(crate) fn fail_pending(&mut self, err: &io::Error) {
        for req in self.pending.drain(..) {
            let _ = req
                .reply
                .send(Err(io::Error::new(err.kind(), err.to_string())));
        }
    }

    /// Moves pending requests into the SQ, bounded by the in-flight cap and SQ space.
    pub(crate) fn fill_sq(&mut self) {
        let cap = match &self.depth {
            Some(d) => d.cap().min(self.cap),
            None => self.cap,
        };
        let demand = self.in_flight + self.pending.len();
        while self.in_flight < cap {
            let Some(mut req) = self.pending.pop_front() else {
                break;
            };
            let idx = match self.free.pop() {
                Some(i) => i,
                None => {
                    self.slots.push(None);
                    self.slots.len() - 1
                }
            };
            let sqe = req.sqe(idx as u64, self.registered);
            // SAFETY: all memory the SQE points at (the request's buffer) is owned by
            // the request, which we store in slots[idx] until its CQE is reaped.
            let pushed = unsafe { self.ring.submission().push(&sqe) };
            if pushed.is_err() {
                // SQ full: send what we have, retry this one next round.
                self.free.push(idx);
                self.pending.push_front(req);
                break;
            }
            if let Some(slot) = self.slots.get_mut(idx) {
                *slot = Some(req);
                self.in_flight += 1;
            }
        }
        if let Some(d) = &mut self.depth {
            d.note_demand(demand, !self.pending.is_empty() && self.in_flight >= cap);
        }
    }

    /// Finishes every request whose completion is in the CQ (resubmitting short or
    /// interrupted transfers). Returns true when the engine's eventfd read completed.
    pub(crate) fn reap(&mut self) -> bool {
        let mut woke = false;
        let mut completed = 0u64;
        loop {
            let Some(c) = self.ring.completion().next() else {
                break;
            };
            let (token, res) = (c.user_data(), c.result());
            if token == WAKE_TOKEN {
                woke = true;
                continue;
            }
            let Ok(idx) = usize::try_from(token) else {
                continue;
            };
            let Some(req) = self.slots.get_mut(idx).and_then(Option::take) else {
                continue;
            };
            self.free.push(idx);
            self.in_flight -= 1;
            completed += 1;
            self.complete(req, res);
        }
        if let Some(d) = &mut self.depth {
            d.note_completed(completed);
        }
        woke
    }

    fn complete(&mut self, mut req: Request, res: i32) {
        if res < 0 {
            let errno = -res;
            if (errno == libc::EAGAIN || errno == libc::EINTR) && req.retries < MAX_RETRIES {
                req.retries += 1;
                self.pending.push_back(req);
            } else {
                finish(req, Err(io::Error::from_raw_os_error(errno)));
            }
            return;
        }
        let n = res as usize;
        match &mut req.op {
            Op::Read { buf, done } => {
                // Read buffers are recycled without zeroing (`BlockDevice::read`): a read
                // replies with its buffer only once `done` covers all of it; every other
                // outcome drops the buffer unread.
                if n == 0 && *done < buf.len() {
                    // End of file inside the device range: the backing shrank.
                    finish(req, Err(io::Error::from_raw_os_error(libc::EIO)));
                    return;
                }
                *done += n;
                if *done < buf.len() {
                    self.pending.push_back(req);
                    return;
                }
            }
            Op::Write { data, done, .. } => {
                if n == 0 && *done < data.as_slice().len() {
                    finish(req, Err(io::Error::from_raw_os_error(libc::EIO)));
                    return;
                }
                *done += n;
                if *done < data.as_slice().len() {
                    self.pending.push_back(req);
                    return;
                }
            }
            Op::FdataSync | Op::Fallocate { .. } => {}
        }
        finish(req, Ok(()));
    }
}

/// Replies to a finished request. Its fd reference is dropped first, so a caller that closes
/// the device after the reply finds no reference left in the engine (e.g. holding the flock).
fn finish(req: Request, result: io::Result<()>) {
    let Request { fd, op, reply, .. } = req;
    drop(fd);
    let out = result.map(|()| match op {
        Op::Read { buf, .. } => Some(buf),
        _ => None,
    });
    let _ = reply.send(out);
}
