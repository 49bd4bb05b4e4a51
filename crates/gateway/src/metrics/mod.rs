//! Operational metrics in the Prometheus text format (0.0.4), served over HTTP at
//! `GET /metrics` when `[server] metrics_listen` (or `serve --metrics-listen`) is set.
//!
//! - `lun.rs`: per-LUN command counters and latency histograms, updated per command on the
//!   connection threads through per-thread shards (`shard.rs`), so the data path shares no
//!   cache line between connection threads;
//! - [`GatewayMetrics`]: gateway-wide counters and gauges touched per connection or login,
//!   not per command (plain atomics);
//! - `scrape.rs`: reads all of it, plus what other parts already keep (sessions in the
//!   registry, the data budget, whether a LUN is served), into one text (`text.rs`);
//! - `http.rs`: the tiny HTTP/1.x server on the control runtime.

pub mod http;
pub mod login;
pub mod lun;
pub mod scrape;
pub mod shard;
pub mod text;

use std::sync::atomic::{AtomicU64, Ordering};

pub use lun::{CommandClass, LunMetrics, Outcome};

/// Gateway-wide numbers that change per connection or login (not per command).
#[derive(Default)]
pub struct GatewayMetrics {
    connections: AtomicU64,
    logins_ok: AtomicU64,
    logins_refused: AtomicU64,
    logins_auth_failed: AtomicU64,
    protocol_errors: AtomicU64,
}

/// How a login ended, for `iscsi_gateway_logins_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginResult {
    /// Reached full feature phase (normal or discovery session).
    Ok,
    /// Refused by the gateway's policy: unknown target, ACL, session limit.
    Refused,
    /// CHAP failed or was not attempted where required.
    AuthFailed,
}

impl GatewayMetrics {
    /// Counts an accepted connection until the returned guard is dropped.
    pub fn connection(&self) -> ConnectionGuard<'_> {
        self.connections.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self)
    }

    pub fn login(&self, r: LoginResult) {
        let c = match r {
            LoginResult::Ok => &self.logins_ok,
            LoginResult::Refused => &self.logins_refused,
            LoginResult::AuthFailed => &self.logins_auth_failed,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection was dropped because the peer broke the protocol.
    pub fn protocol_error(&self) {
        self.protocol_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn logins(&self, r: LoginResult) -> u64 {
        match r {
            LoginResult::Ok => &self.logins_ok,
            LoginResult::Refused => &self.logins_refused,
            LoginResult::AuthFailed => &self.logins_auth_failed,
        }
        .load(Ordering::Relaxed)
    }

    pub fn protocol_errors(&self) -> u64 {
        self.protocol_errors.load(Ordering::Relaxed)
    }
}

/// Keeps a connection counted in [`GatewayMetrics`].
pub struct ConnectionGuard<'a>(&'a GatewayMetrics);

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}
