//! The server: opens the LUNs, binds the portals, and runs one task per TCP connection
//! until shutdown is signalled.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::access::AccessControl;
use crate::config::Config;
use crate::net::connection::serve_connection;
use crate::net::registry::SessionRegistry;
use crate::net::targets::{TargetSet, MAX_TRANSFER_BYTES};
use crate::net::ServerContext;

/// Runs the gateway until `shutdown` turns true.
pub async fn run(config: Config, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let targets = TargetSet::open(&config)?;
    let ctx = Arc::new(ServerContext {
        iscsi: Arc::new(iscsi_config(&config)),
        targets,
        registry: SessionRegistry::default(),
        access: AccessControl::from_config(&config),
    });
    let mut accept_tasks = Vec::new();
    for addr in &config.server.listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        info!(%addr, "listening");
        accept_tasks.push(tokio::spawn(accept_loop(
            listener,
            ctx.clone(),
            shutdown.clone(),
        )));
    }
    let _ = shutdown.wait_for(|stop| *stop).await;
    info!("shutting down: closing sessions");
    for t in &accept_tasks {
        t.abort();
    }
    ctx.registry.close_all("gateway shutting down");
    // Connections see the shutdown signal too; give them a moment to say goodbye.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<ServerContext>,
    shutdown: watch::Receiver<bool>,
) {
    loop {
        match listener.accept().await {
            Ok((sock, peer)) => {
                if let Err(e) = sock.set_nodelay(true) {
                    warn!(%peer, error = %e, "cannot set TCP_NODELAY");
                }
                tokio::spawn(serve_connection(sock, peer, ctx.clone(), shutdown.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
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
