//! The server: opens the LUNs, binds the portals, accepts connections on the control
//! runtime and hands each to a connection thread (`net::workers`, thread per core), until
//! shutdown is signalled. It also sizes the buffer pool's per-thread free lists from the
//! command data budget and the number of connection threads (`net/buffers.rs`).
//!
//! The connection cap (`[limits] max_connections`, all portals together) is enforced here,
//! right after accept: a connection over the cap is closed at once, before any byte of it
//! is read. That costs nothing (no login parsing, no slot held for login_timeout by a
//! flood), and an initiator sees the same as a target that is down and retries after its
//! own delay; a Login reject (0x0301/0x0302) would need a slot for the login exchange.
//!
//! With `[server] metrics_listen` it also serves `GET /metrics` (`crate::metrics::http`)
//! on this runtime, until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::{info, warn};

use crate::access::AccessControl;
use crate::config::Config;
use crate::metrics;
use crate::net::budget::DataBudget;
use crate::net::connection::serve_connection;
use crate::net::registry::SessionRegistry;
use crate::net::targets::{TargetSet, MAX_TRANSFER_BYTES};
use crate::net::workers::Workers;
use crate::net::ServerContext;
use crate::net::{buffers, registered_size};

/// Runs the gateway until `shutdown` turns true.
pub async fn run(config: Config, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let targets = TargetSet::open(&config)?;
    let ctx = Arc::new(ServerContext {
        iscsi: Arc::new(iscsi_config(&config)),
        targets,
        registry: SessionRegistry::default(),
        limits: config.limits.clone(),
        access: AccessControl::from_config(&config),
        data_budget: DataBudget::new(config.limits.max_command_data),
        metrics: Default::default(),
        adaptive_depth: config.server.adaptive_depth,
    });
    let slots = Arc::new(Semaphore::new(config.limits.max_connections as usize));
    let threads = Workers::count_for(config.server.io_threads);
    let registered = registered_size::per_thread(&config.limits, threads);
    let workers = Arc::new(
        Workers::start(
            threads,
            std::time::Duration::from_micros(config.server.idle_poll_us.into()),
            registered,
        )
        .context("cannot start the connection threads")?,
    );
    let buffer_cache = buffers::configure(&config.limits, threads);
    info!(
        threads,
        buffer_cache_per_thread = buffer_cache,
        registered_buffers_per_thread = registered,
        idle_poll_us = config.server.idle_poll_us,
        "connection threads started"
    );
    let metrics_task = match config.server.metrics_listen {
        Some(addr) => Some(start_metrics(addr, ctx.clone(), shutdown.clone()).await?),
        None => None,
    };
    let mut accept_tasks = Vec::new();
    for addr in &config.server.listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        info!(%addr, "listening");
        accept_tasks.push(tokio::spawn(accept_loop(
            listener,
            ctx.clone(),
            slots.clone(),
            workers.clone(),
            shutdown.clone(),
        )));
    }
    let _ = shutdown.wait_for(|stop| *stop).await;
    info!("shutting down: closing sessions");
    for t in &accept_tasks {
        t.abort();
    }
    ctx.registry.close_all("gateway shutting down");
    // Connections see the shutdown signal too. Each holds a connection slot until it has
    // ended, so all slots free again means every connection said goodbye; wait for that, but
    // no longer than SHUTDOWN_GRACE (a takeover node is waiting for the device).
    let all = config.limits.max_connections;
    if tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all))
        .await
        .is_err()
    {
        warn!("connections still open after {SHUTDOWN_GRACE:?}; exiting anyway");
    }
    // The accept tasks held the other references; they are aborted, but let them go first.
    for t in accept_tasks {
        let _ = t.await;
    }
    // Nothing acknowledged stays in a volatile cache of this node (`direct = off` LUNs
    // acknowledge writes from the page cache) when a takeover node opens the device.
    let failed = ctx.targets.flush_all(SHUTDOWN_FLUSH).await;
    if failed == 0 {
        info!("devices flushed");
    }
    // Ends the connection threads (cancelling what still runs there).
    drop(workers);
    if let Some(t) = metrics_task {
        // It saw the shutdown too; a scrape in progress is not worth waiting for.
        t.abort();
        let _ = t.await;
    }
    Ok(())
}

/// Binds the metrics endpoint and serves it on this (the control) runtime until shutdown.
async fn start_metrics(
    addr: SocketAddr,
    ctx: Arc<ServerContext>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (server.metrics_listen)"))?;
    info!(%addr, "metrics at http://{addr}/metrics");
    Ok(tokio::spawn(metrics::http::serve(
        listener,
        move || metrics::scrape::render(&ctx),
        metrics::http::HttpLimits::default(),
        shutdown,
    )))
}

/// Longest wait at shutdown for connections to finish their goodbyes.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Longest wait at shutdown for each device's flush.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(10);

async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<ServerContext>,
    slots: Arc<Semaphore>,
    workers: Arc<Workers>,
    shutdown: watch::Receiver<bool>,
) {
    let mut refused = RefusalLog::default();
    loop {
        match listener.accept().await {
            Ok((sock, peer)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    refused.note(peer, ctx.limits.max_connections);
                    drop(sock);
                    continue;
                };
                if let Err(e) = sock.set_nodelay(true) {
                    warn!(%peer, error = %e, "cannot set TCP_NODELAY");
                }
                // Re-registered with the reactor of the thread that will serve it.
                let sock = match sock.into_std() {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(%peer, error = %e, "cannot hand the connection to a thread");
                        continue;
                    }
                };
                let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
                let taken = workers.spawn(move || async move {
                    match TcpStream::from_std(sock) {
                        Ok(sock) => serve_connection(sock, peer, ctx, shutdown).await,
                        Err(e) => warn!(%peer, error = %e, "cannot register the connection"),
                    }
                    drop(slot);
                });
                if !taken {
                    warn!(%peer, "connection threads have stopped; connection closed");
                }
            }
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Logs refused connections: the first of each second by name, the rest as a count, so a
/// connection flood cannot flood the log too.
#[derive(Default)]
struct RefusalLog {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl RefusalLog {
    fn note(&mut self, peer: SocketAddr, max: u32) {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        warn!(%peer, max, also_refused = self.suppressed, "connection refused: limits.max_connections reached, closed at once");
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// The protocol's view of the configuration: targets with the portals SendTargets
/// announces, and the negotiation limits.
pub fn iscsi_config(config: &Config) -> iscsi::ServerConfig {
    let portals: Vec<String> = config.server.advertise.iter().map(portal_string).collect();
    let t = &config.iscsi;
    let secs = |s: u32| Duration::from_secs(u64::from(s));
    iscsi::ServerConfig {
        targets: config
            .targets
            .iter()
            .map(|spec| iscsi::TargetConfig {
                name: spec.iqn.clone(),
                alias: spec.alias.clone(),
                tpgt: spec.tpgt,
                portals: portals.clone(),
            })
            .collect(),
        limits: iscsi::Limits {
            max_recv_data_segment_length: t.max_recv_data_segment_length,
            max_burst_length: t.max_burst_length,
            first_burst_length: t.first_burst_length,
            max_outstanding_r2t: t.max_outstanding_r2t,
            immediate_data: t.immediate_data,
            initial_r2t: t.initial_r2t,
            cmdsn_window: t.cmdsn_window,
            max_transfer_bytes: MAX_TRANSFER_BYTES,
            nop_in_interval: (t.nop_interval_secs > 0).then(|| secs(t.nop_interval_secs)),
            nop_in_timeout: secs(t.nop_timeout_secs),
            login_timeout: secs(t.login_timeout_secs),
            ..iscsi::Limits::default()
        }
        .sanitized(),
    }
}

/// "ip:port" as SendTargets announces it (IPv6 in brackets).
pub fn portal_string(addr: &SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::net::targets::TargetSet;
    use tokio::io::AsyncReadExt;

    /// Reads until EOF or `limit`; true when the peer closed the connection.
    async fn closed_within(sock: &mut TcpStream, limit: Duration) -> bool {
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(limit, sock.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed_at_once_and_slots_come_back() {
        let ctx = Arc::new(ServerContext {
            iscsi: Arc::new(iscsi::ServerConfig {
                targets: Vec::new(),
                limits: iscsi::Limits::default(),
            }),
            targets: TargetSet::empty(),
            registry: SessionRegistry::default(),
            limits: crate::config::Limits::default(),
            access: AccessControl::open(),
            data_budget: DataBudget::new(1 << 20),
            metrics: Default::default(),
            adaptive_depth: true,
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_stop_tx, stop_rx) = watch::channel(false);
        let slots = Arc::new(Semaphore::new(2));
        let workers = Arc::new(Workers::start(1, std::time::Duration::ZERO, 0).unwrap());
        let task = tokio::spawn(accept_loop(listener, ctx, slots, workers, stop_rx));
        let mut a = TcpStream::connect(addr).await.unwrap();
        let mut b = TcpStream::connect(addr).await.unwrap();
        let mut c = TcpStream::connect(addr).await.unwrap();
        // The third is over the cap: closed without a byte. The first two stay open (they
        // are in login, with the default 15 s login timeout).
        assert!(closed_within(&mut c, Duration::from_secs(2)).await);
        assert!(!closed_within(&mut a, Duration::from_millis(200)).await);
        assert!(!closed_within(&mut b, Duration::from_millis(200)).await);
        // One leaves: its slot is given back and a new connection is served.
        drop(a);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut d = TcpStream::connect(addr).await.unwrap();
        assert!(!closed_within(&mut d, Duration::from_millis(300)).await);
        task.abort();
    }
}
