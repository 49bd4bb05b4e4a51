//! Who may log in where: per-target `allowed_initiators` / `allowed_networks`, CHAP
//! authenticators for targets and discovery (fresh randomness per login from the OS), and a
//! rate-limited log line for every refused login naming the initiator, its address and the
//! cause (never a secret). The protocol crate asks through `iscsi::LoginPolicy`; the
//! connection's policy forwards to [`AccessControl`].

mod audited;
mod limiter;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iscsi::{
    Authenticator, ChapAuthenticator, ChapConfig, LoginInfo, LoginRejection, SessionType,
    CHAP_RANDOM_LEN,
};
use tracing::{error, warn};

use crate::config::{normalize_iscsi_name, Config, IpNetwork};
use audited::{Audited, Unavailable};
pub use limiter::RateLimiter;

/// One log line per (initiator, address, cause) per this long...
const LOG_INTERVAL: Duration = Duration::from_secs(30);
/// ...and at most this many refusal lines per interval in total.
const LOG_MAX_PER_INTERVAL: u32 = 20;

struct TargetAccess {
    initiators: Vec<String>,
    networks: Vec<IpNetwork>,
    chap: Option<Arc<ChapConfig>>,
}

/// Access decisions for every target, built once from the configuration.
pub struct AccessControl {
    targets: HashMap<String, TargetAccess>,
    discovery_chap: Option<Arc<ChapConfig>>,
    log: Arc<RateLimiter>,
}

impl AccessControl {
    pub fn from_config(config: &Config) -> Self {
        let targets = config
            .targets
            .iter()
            .map(|t| {
                let access = TargetAccess {
                    initiators: t.allowed_initiators.clone(),
                    networks: t.allowed_networks.clone(),
                    chap: t.auth.as_ref().map(|a| a.chap_config()),
                };
                (t.iqn.clone(), access)
            })
            .collect();
        AccessControl {
            targets,
            discovery_chap: config.discovery.auth.as_ref().map(|a| a.chap_config()),
            log: Arc::new(RateLimiter::new(LOG_INTERVAL, LOG_MAX_PER_INTERVAL)),
        }
    }

    /// No restrictions at all (tests of the surrounding plumbing).
    pub fn open() -> Self {
        AccessControl {
            targets: HashMap::new(),
            discovery_chap: None,
            log: Arc::new(RateLimiter::new(LOG_INTERVAL, LOG_MAX_PER_INTERVAL)),
        }
    }

    /// Whether `initiator` connecting from `peer` may use `target`; the cause when not.
    pub fn allows(&self, target: &str, initiator: &str, peer: IpAddr) -> Result<(), &'static str> {
        let Some(t) = self.targets.get(target) else {
            return Ok(());
        };
        if !t.initiators.is_empty() {
            let name = normalize_iscsi_name(initiator).ok();
            if !name.is_some_and(|n| t.initiators.contains(&n)) {
                return Err("initiator not in allowed_initiators");
            }
        }
        if !t.networks.is_empty() && !t.networks.iter().any(|n| n.contains(peer)) {
            return Err("source address not in allowed_networks");
        }
        Ok(())
    }

    /// The login-time access check: authorization failure (and a log line) when refused.
    pub fn check_login(&self, req: &LoginInfo, peer: SocketAddr) -> Result<(), LoginRejection> {
        let Some(target) = req.target_name.as_deref() else {
            return Ok(());
        };
        self.allows(target, &req.initiator_name, peer.ip())
            .map_err(|cause| {
                refused(&self.log, &req.initiator_name, target, peer, cause);
                LoginRejection::AuthorizationFailure
            })
    }

    /// The CHAP exchange this login must pass, if its target (or discovery) requires one.
    pub fn authenticator(
        &self,
        req: &LoginInfo,
        peer: SocketAddr,
    ) -> Option<Box<dyn Authenticator>> {
        let chap = match req.session_type {
            SessionType::Discovery => self.discovery_chap.clone(),
            SessionType::Normal => req
                .target_name
                .as_deref()
                .and_then(|t| self.targets.get(t))
                .and_then(|t| t.chap.clone()),
        }?;
        let mut random = [0u8; CHAP_RANDOM_LEN];
        if let Err(e) = getrandom::fill(&mut random) {
            // Fail closed: without randomness there is no safe challenge.
            error!(error = %e, "no randomness for a CHAP challenge; refusing the login");
            return Some(Box::new(Unavailable));
        }
        Some(Box::new(Audited::new(
            ChapAuthenticator::new(chap, random),
            peer,
            self.log.clone(),
        )))
    }
}

/// Logs a refused login, at most once per (initiator, address, cause) per interval.
fn refused(log: &RateLimiter, initiator: &str, target: &str, peer: SocketAddr, cause: &str) {
    // Bound what an initiator controls before it reaches the log.
    let initiator: String = initiator.chars().take(224).collect();
    let key = format!("{initiator}\u{0}{}\u{0}{cause}", peer.ip());
    if let Some(suppressed) = log.check(&key, Instant::now()) {
        warn!(%initiator, %peer, target, cause, suppressed, "login refused");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
