//! Follows one DRBD resource: runs `drbdsetup events2 RESOURCE` (the current state as
//! `exists` lines, `exists -`, then every change), feeds each line to a
//! [`ResourceState`], and publishes its [`Verdict`] on a watch channel.
//!
//! When `drbdsetup` exits or cannot be started, the reason is logged and it is restarted
//! after a backoff of 200 ms doubling to 5 s (reset after a run of 30 s). Meanwhile, and
//! until the new run's dump is complete, the last verdict stays in force: the gateway
//! keeps the device open if it had it, and DRBD itself refuses a peer's promotion while it
//! is open, so an unknown state is not a reason to drop the LUN.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::events::{parse_line, MAX_LINE};
use super::state::{ResourceState, StopReason, Verdict};

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A run at least this long resets the backoff.
const STABLE_RUN: Duration = Duration::from_secs(30);
/// Bytes of drbdsetup's stderr kept for the log line when it exits.
const STDERR_TAIL: usize = 512;

/// Starts following `resource` with `drbdsetup`; the receiver sees every verdict change.
/// The task ends when every receiver is gone (killing drbdsetup).
pub fn spawn(resource: String, drbdsetup: PathBuf, auto_promote: bool) -> watch::Receiver<Verdict> {
    let (tx, rx) = watch::channel(Verdict::Stop(StopReason::Unknown));
    tokio::spawn(run(resource, drbdsetup, auto_promote, tx));
    rx
}

async fn run(resource: String, drbdsetup: PathBuf, auto_promote: bool, tx: watch::Sender<Verdict>) {
    let mut backoff = BACKOFF_MIN;
    let mut runs: u64 = 0;
    loop {
        let started = Instant::now();
        runs += 1;
        let why = tokio::select! {
            why = follow_once(&resource, &drbdsetup, auto_promote, &tx, runs) => why,
            _ = tx.closed() => return,
        };
        if started.elapsed() >= STABLE_RUN {
            backoff = BACKOFF_MIN;
        }
        warn!(
            resource,
            why,
            retry_in_ms = backoff.as_millis() as u64,
            "drbdsetup events2 stopped; restarting it"
        );
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = tx.closed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One run of drbdsetup; returns why it ended.
async fn follow_once(
    resource: &str,
    drbdsetup: &PathBuf,
    auto_promote: bool,
    tx: &watch::Sender<Verdict>,
    run: u64,
) -> String {
    let mut child = match Command::new(drbdsetup)
        .arg("events2")
        .arg(resource)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return format!("cannot run {}: {e}", drbdsetup.display()),
    };
    info!(
        resource,
        pid = child.id(),
        run,
        "following DRBD state with drbdsetup events2"
    );
    let (Some(mut stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return "drbdsetup has no stdout/stderr pipe".to_string();
    };
    let stderr_task = tokio::spawn(tail(stderr));
    let mut state = ResourceState::new(resource);
    let mut buf = BytesMut::with_capacity(4096);
    let mut skipping = false;
    let mut bad_lines: u64 = 0;
    let read_end = loop {
        match stdout.read_buf(&mut buf).await {
            Ok(0) => break "end of output".to_string(),
            Ok(_) => {}
            Err(e) => break format!("read failed: {e}"),
        }
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line = buf.split_to(nl + 1);
            if std::mem::take(&mut skipping) {
                continue;
            }
            match parse_line(&line) {
                Ok(ev) => {
                    if state.apply(&ev) {
                        publish(&state, auto_promote, tx);
                    }
                }
                Err(e) => {
                    bad_lines += 1;
                    if bad_lines <= 3 {
                        warn!(resource, error = %e, line = %String::from_utf8_lossy(&line).trim_end(), "unparsable drbdsetup line ignored");
                    }
                }
            }
        }
        if buf.len() > MAX_LINE {
            warn!(
                resource,
                bytes = buf.len(),
                "overlong drbdsetup line ignored"
            );
            buf.advance(buf.len());
            skipping = true;
        }
    };
    let status = match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
        Ok(Ok(s)) => s.to_string(),
        Ok(Err(e)) => format!("wait failed: {e}"),
        Err(_) => {
            let _ = child.kill().await;
            "killed (output ended but it did not exit)".to_string()
        }
    };
    let err = stderr_task.await.unwrap_or_default();
    let err = err.trim();
    if err.is_empty() {
        format!("{read_end}, {status}")
    } else {
        format!("{read_end}, {status}: {err}")
    }
}

/// Publishes the verdict once the state is complete; an incomplete state (a restart's
/// dump still arriving) keeps the previous verdict.
fn publish(state: &ResourceState, auto_promote: bool, tx: &watch::Sender<Verdict>) {
    let v = state.verdict(auto_promote);
    if v == Verdict::Stop(StopReason::Unknown) {
        return;
    }
    tx.send_if_modified(|cur| {
        if *cur == v {
            return false;
        }
        debug!(resource = state.name(), role = ?state.role(), verdict = ?v, "DRBD verdict changed");
        *cur = v;
        true
    });
}

/// The last [`STDERR_TAIL`] bytes of a stream, read until it ends.
async fn tail<R: AsyncRead + Unpin>(mut r: R) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(chunk.get(..n).unwrap_or_default());
                if kept.len() > STDERR_TAIL {
                    kept.drain(..kept.len() - STDERR_TAIL);
                }
            }
        }
    }
    String::from_utf8_lossy(&kept).replace('\n', " ")
}
