//! Whether a LUN is served, and the one-writer rules around opening its backing store.
//!
//! * [`LunSlot`]: the LUN's open device, or none while it is not served. Commands on a LUN
//!   without a device get CHECK CONDITION, NOT READY / LOGICAL UNIT NOT ACCESSIBLE,
//!   ASYMMETRIC ACCESS STATE TRANSITION (02/04/0A) from [`refuse`], except INQUIRY,
//!   REPORT LUNS and REQUEST SENSE, so initiators keep seeing the LUN and its identity.
//! * [`follow_drbd`]: a task per DRBD-backed LUN that applies the resource's
//!   [`Verdict`]: open (which promotes, with auto-promote) and serve, or stop accepting
//!   I/O, drain what is in flight and close the fd so DRBD can demote.
//! * [`open_waiting`]: opening at start, waiting a bounded time while another process
//!   (a gateway still shutting down) holds the exclusive lock, and naming the holder.
//!
//! Why 02/04/0A: Linux's SCSI midlayer completes it as BLK_STS_AGAIN, which dm-multipath
//! treats as a path error (retry on another path, or queue until one returns), and the
//! multipath `tur` checker marks the path down; it is the code storage arrays return
//! while a LUN moves between controllers, which is what a DRBD failover is. 02/04/03
//! (manual intervention required) would tell the initiator to give up on the LUN.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use std::time::{Duration, Instant};

use anyhow::Context;
use scsi::{Asc, ResetKind, Response, Sense, SenseKey};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::block::{BlockDevice, BlockError, OpenOptions};
use crate::config::LunSpec;
use crate::drbd::state::{StopReason, Verdict};
use crate::net::exec::{LunBackend, TargetRuntime};

/// LOGICAL UNIT NOT ACCESSIBLE, ASYMMETRIC ACCESS STATE TRANSITION.
pub const NOT_ACCESSIBLE_TRANSITION: Asc = Asc(0x04, 0x0A);
/// How long a stop waits for in-flight I/O before closing the device anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between attempts to open a device that could not be opened.
const RETRY_OPEN: Duration = Duration::from_secs(1);
/// Pause between attempts to take a busy lock at start.
const LOCK_POLL: Duration = Duration::from_millis(100);

/// An open backing store and how writes must be issued to it.
#[derive(Clone)]
pub struct OpenDevice {
    pub device: BlockDevice,
    /// Every write-type request must reach stable storage before completing: the LUN
    /// reports no volatile write cache, but the backing store has one.
    pub force_fua: bool,
}

/// A LUN's open device, or none while the LUN is not served. Every command reads it;
/// only a DRBD start or stop replaces it, so it is an `ArcSwapOption`: reading takes no
/// lock (a `RwLock` here was a lock every connection of the LUN shared, twice per command).
pub struct LunSlot {
    device: ArcSwapOption<OpenDevice>,
}

impl LunSlot {
    pub fn open(dev: OpenDevice) -> Self {
        LunSlot {
            device: ArcSwapOption::from_pointee(dev),
        }
    }

    pub fn closed() -> Self {
        LunSlot {
            device: ArcSwapOption::empty(),
        }
    }

    /// The open device, when the LUN is served.
    pub fn current(&self) -> Option<Arc<OpenDevice>> {
        self.device.load_full()
    }

    pub fn is_serving(&self) -> bool {
        self.device.load().is_some()
    }

    fn install(&self, dev: OpenDevice) {
        self.device.store(Some(Arc::new(dev)));
    }

    /// Stops serving; returns the device that was open (the caller decides when to drop it;
    /// commands still running hold their own reference until they finish).
    fn close(&self) -> Option<Arc<OpenDevice>> {
        self.device.swap(None)
    }
}

/// CHECK CONDITION, NOT READY / 04/0A (fixed format).
pub fn not_ready() -> Response {
    Response::check(
        &Sense::new(SenseKey::NotReady, NOT_ACCESSIBLE_TRANSITION),
        false,
    )
}

/// The response for a command on a LUN that is not served, or `None` to run it.
pub fn refuse(backend: Option<&LunBackend>, cdb: &[u8]) -> Option<Response> {
    let backend = backend?;
    // INQUIRY, REPORT LUNS, REQUEST SENSE: answered from the model (identity stays visible).
    if matches!(cdb.first(), Some(0x12) | Some(0xA0) | Some(0x03)) {
        return None;
    }
    (!backend.slot.is_serving()).then(not_ready)
}

/// Opens a backing store at start. While another process holds it exclusively, retries
/// for up to `wait` (logging the holder once), then fails naming the holder.
pub fn open_waiting(
    path: &Path,
    opts: &OpenOptions,
    wait: Duration,
) -> anyhow::Result<BlockDevice> {
    let start = Instant::now();
    let mut logged = false;
    loop {
        match BlockDevice::open(path, opts) {
            Err(BlockError::Busy { .. }) => {
                let holder = lock_holder(path);
                if start.elapsed() >= wait {
                    anyhow::bail!(
                        "{}: locked by {holder}; another gateway is serving it (waited {} s, see server.lock_wait_secs)",
                        path.display(),
                        wait.as_secs()
                    );
                }
                if !logged {
                    warn!(path = %path.display(), %holder, wait_secs = wait.as_secs(), "backing store is locked; waiting for it to be released");
                    logged = true;
                }
                std::thread::sleep(LOCK_POLL);
            }
            r => {
                if logged {
                    info!(path = %path.display(), waited_ms = start.elapsed().as_millis() as u64, "lock released");
                }
                return r.with_context(|| format!("cannot open {}", path.display()));
            }
        }
    }
}

/// Who holds `path`: "process PID (COMMAND)" from /proc/locks for files, else a hint.
fn lock_holder(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let found = std::fs::metadata(path).ok().and_then(|m| {
        let text = std::fs::read_to_string("/proc/locks").ok()?;
        flock_holder(&text, libc::major(m.dev()), libc::minor(m.dev()), m.ino())
    });
    match found {
        Some(pid) => {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            format!("process {pid} ({})", comm.trim())
        }
        None => "another process (exclusive open; `fuser -v` names it)".to_string(),
    }
}

/// The pid of the FLOCK write lock on (major, minor, inode) in /proc/locks text. Lines look
/// like `1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF` (device numbers in hex).
fn flock_holder(text: &str, major: u32, minor: u32, ino: u64) -> Option<u32> {
    text.lines().find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        let (kind, mode, pid, id) = (w.get(1)?, w.get(3)?, w.get(4)?, w.get(5)?);
        if *kind != "FLOCK" || *mode != "WRITE" {
            return None;
        }
        let mut parts = id.split(':');
        let maj = u32::from_str_radix(parts.next()?, 16).ok()?;
        let min = u32::from_str_radix(parts.next()?, 16).ok()?;
        let i: u64 = parts.next()?.parse().ok()?;
        (maj == major && min == minor && i == ino)
            .then(|| pid.parse().ok())
            .flatten()
    })
}

/// Applies the DRBD verdicts of one LUN until the verdict channel closes.
pub async fn follow_drbd(
    target: Arc<TargetRuntime>,
    lun: u64,
    spec: LunSpec,
    mut verdicts: watch::Receiver<Verdict>,
) {
    let Some(backend) = target.backends.get(&lun).cloned() else {
        return;
    };
    let resource = spec.drbd_resource.clone().unwrap_or_default();
    let mut last_logged: Option<String> = None;
    loop {
        let verdict = verdicts.borrow_and_update().clone();
        let mut retry = false;
        match &verdict {
            Verdict::Serve | Verdict::Promote => {
                if !backend.slot.is_serving() {
                    match reopen(&target, &backend, lun, &spec).await {
                        Ok(()) => {
                            info!(target = %target.name, lun, resource, ?verdict, "DRBD allows writing: LUN served");
                            last_logged = None;
                        }
                        Err(e) => {
                            let msg = format!("{e:#}");
                            if last_logged.as_deref() != Some(msg.as_str()) {
                                error!(target = %target.name, lun, resource, error = %msg, "cannot open the device; LUN stays not ready (retrying)");
                                last_logged = Some(msg);
                            }
                            retry = true;
                        }
                    }
                }
            }
            Verdict::Stop(reason) => {
                let why = reason.to_string();
                if let Some(drained) = stop_serving(&backend, DRAIN_TIMEOUT).await {
                    warn!(target = %target.name, lun, resource, reason = %why, drained, "LUN no longer served; device closed");
                    last_logged = Some(why);
                } else if *reason != StopReason::Unknown
                    && last_logged.as_deref() != Some(why.as_str())
                {
                    info!(target = %target.name, lun, resource, reason = %why, "LUN not served");
                    last_logged = Some(why);
                }
            }
        }
        if retry {
            tokio::select! {
                r = verdicts.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(RETRY_OPEN) => {}
            }
        } else if verdicts.changed().await.is_err() {
            return;
        }
    }
}

/// Stops serving: new commands are refused at once, in-flight I/O (holding the gate
/// shared) may finish for up to `drain`, then the device is dropped (its fd closes when the
/// last in-flight user lets go). `None` when the LUN was not served; else whether every
/// in-flight command finished within `drain`.
async fn stop_serving(backend: &LunBackend, drain: Duration) -> Option<bool> {
    let dev = backend.slot.close()?;
    let drained = tokio::time::timeout(drain, backend.gate.exclusive())
        .await
        .is_ok();
    if drained {
        flush_before_close(&dev.device, drain).await;
    }
    drop(dev);
    Some(drained)
}

/// Makes every acknowledged write durable (fdatasync) before the device is let go, waiting
/// at most `limit` (a device that lost its disk or quorum may never answer). With
/// `direct = off` acknowledged writes may sit in this node's page cache, which a failover
/// to another node loses; with O_DIRECT it empties the device's volatile cache. Initiators
/// flush what they need to be durable anyway (the LUN reports its write cache); this makes
/// a clean stop leave nothing behind even when they did not. Returns whether it succeeded,
/// and logs when it did not.
pub async fn flush_before_close(dev: &BlockDevice, limit: Duration) -> bool {
    if dev.is_read_only() {
        return true;
    }
    match tokio::time::timeout(limit, dev.flush()).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            error!(path = %dev.path().display(), error = %e, "flush before closing the device failed; writes not flushed by the initiator may be lost");
            false
        }
        Err(_) => {
            error!(path = %dev.path().display(), limit_secs = limit.as_secs(), "flush before closing the device did not finish in time; writes not flushed by the initiator may be lost");
            false
        }
    }
}

/// Opens the device of a DRBD LUN and starts serving it: checks the geometry against the
/// model, reloads persistent reservations (the peer may have changed them), and queues
/// POWER ON OCCURRED (29/01) for every nexus, since to initiators this is a new power-on
/// of the logical unit (and CAPACITY DATA HAS CHANGED when the size differs).
async fn reopen(
    target: &TargetRuntime,
    backend: &LunBackend,
    lun: u64,
    spec: &LunSpec,
) -> anyhow::Result<()> {
    let path = spec.path.clone();
    let opts = spec.open_options();
    let device = tokio::task::spawn_blocking(move || BlockDevice::open(&path, &opts))
        .await
        .context("open task failed")?
        .map_err(|e| match e {
            BlockError::Busy { ref path } => anyhow::anyhow!("{e} (held by {})", lock_holder(path)),
            e => anyhow::Error::from(e),
        })?;
    let store = backend.pr_store.clone();
    let pr = tokio::task::spawn_blocking(move || store.load())
        .await
        .context("state task failed")?
        .context("cannot load persistent-reservation state")?;
    {
        let mut t = target.scsi.lock().unwrap_or_else(|p| p.into_inner());
        let Some(unit) = t.lun_mut(lun) else {
            anyhow::bail!("LUN {lun} missing from the model");
        };
        let cfg = unit.config();
        let bs = spec.block_size_for(&device).map_err(anyhow::Error::msg)?;
        if bs != cfg.block_size {
            anyhow::bail!(
                "device block size {bs} differs from the {} the LUN was built with",
                cfg.block_size
            );
        }
        unit.reset(ResetKind::PowerOn);
        unit.set_capacity(device.size_bytes() / u64::from(bs));
        if let Some(state) = pr {
            unit.restore_pr_state(state);
        }
    }
    let force_fua = spec.force_fua(&device);
    backend.slot.install(OpenDevice { device, force_fua });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd_open(path: &Path) -> bool {
        std::fs::read_dir("/proc/self/fd")
            .expect("proc")
            .filter_map(|e| e.ok())
            .any(|e| std::fs::read_link(e.path()).ok().as_deref() == Some(path))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stop_drains_in_flight_io_then_closes_the_fd() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("lun.img");
        let opts = OpenOptions {
            create_size: Some(1 << 20),
            ..OpenOptions::default()
        };
        let device = BlockDevice::open(&p, &opts).expect("open");
        let store = crate::state::PrStore::new(dir.path(), "iqn.2026-11.test:t", 0);
        let backend = Arc::new(LunBackend::new(device, false, store));
        assert!(fd_open(&p));
        let tur = [0u8; 6];
        let inquiry = [0x12u8, 0, 0, 0, 36, 0];
        assert!(refuse(Some(&backend), &tur).is_none());
        // A command in flight: holds the gate shared for 300 ms.
        let b = backend.clone();
        let (held_tx, held_rx) = tokio::sync::oneshot::channel();
        let in_flight = tokio::spawn(async move {
            let _io = b.gate.shared().await;
            let _ = held_tx.send(());
            tokio::time::sleep(Duration::from_millis(300)).await;
        });
        held_rx.await.expect("in flight");
        let t = Instant::now();
        let drained = stop_serving(&backend, Duration::from_secs(5)).await;
        assert_eq!(drained, Some(true));
        assert!(
            t.elapsed() >= Duration::from_millis(250),
            "did not wait for in-flight I/O"
        );
        in_flight.await.expect("task");
        assert!(!fd_open(&p), "fd still open after stop");
        let r = refuse(Some(&backend), &tur).expect("refused while stopped");
        assert_eq!(
            r.sense.unwrap_or_default().get(12..14),
            Some(&[0x04, 0x0A][..])
        );
        assert!(refuse(Some(&backend), &inquiry).is_none());
        assert_eq!(stop_serving(&backend, Duration::from_secs(1)).await, None);
        // A stuck command does not block the stop beyond the drain bound.
        let dev = BlockDevice::open(&p, &opts).expect("reopen");
        backend.slot.install(OpenDevice {
            device: dev,
            force_fua: false,
        });
        let _stuck = backend.gate.shared().await;
        assert_eq!(
            stop_serving(&backend, Duration::from_millis(100)).await,
            Some(false)
        );
    }

    #[test]
    fn flock_holder_matches_device_and_inode() {
        let text = "1: POSIX  ADVISORY  WRITE 99 08:01:42 0 EOF\n\
                    2: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF\n\
                    3: FLOCK  ADVISORY  READ 77 fd:01:9 0 EOF\n";
        assert_eq!(flock_holder(text, 0xfd, 1, 5678), Some(1234));
        assert_eq!(flock_holder(text, 0xfd, 1, 9), None);
        assert_eq!(flock_holder(text, 8, 1, 42), None);
        assert_eq!(flock_holder("garbage\n\n1:", 1, 1, 1), None);
    }

    #[test]
    fn not_ready_is_02_04_0a() {
        let r = not_ready();
        assert_eq!(r.status, scsi::status::CHECK_CONDITION);
        let s = r.sense.unwrap_or_default();
        assert_eq!(s.get(2).map(|k| k & 0x0f), Some(0x02));
        assert_eq!(s.get(12..14), Some(&[0x04, 0x0A][..]));
    }

    #[test]
    fn open_waiting_names_the_holder_and_gives_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f.img");
        let opts = OpenOptions {
            create_size: Some(1 << 20),
            ..OpenOptions::default()
        };
        let first = BlockDevice::open(&p, &opts).expect("first open");
        let t = Instant::now();
        let err =
            open_waiting(&p, &opts, Duration::from_millis(300)).expect_err("second open must fail");
        assert!(t.elapsed() >= Duration::from_millis(300));
        let msg = format!("{err:#}");
        assert!(msg.contains("locked by process"), "{msg}");
        assert!(msg.contains(&std::process::id().to_string()), "{msg}");
        drop(first);
        open_waiting(&p, &opts, Duration::from_millis(300)).expect("free again");
    }
}
