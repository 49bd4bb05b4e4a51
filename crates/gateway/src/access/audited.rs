//! Wraps the CHAP exchange of one login so the gateway logs its outcome: the algorithm on
//! success (info), the cause on failure (rate-limited warning with initiator and address).

use std::net::SocketAddr;
use std::sync::Arc;

use iscsi::text::Pair;
use iscsi::{AuthStep, Authenticator, ChapAuthenticator, LoginInfo, LoginRejection};
use tracing::info;

use super::limiter::RateLimiter;

pub(super) struct Audited {
    inner: ChapAuthenticator,
    peer: SocketAddr,
    log: Arc<RateLimiter>,
}

impl Audited {
    pub(super) fn new(inner: ChapAuthenticator, peer: SocketAddr, log: Arc<RateLimiter>) -> Self {
        Audited { inner, peer, log }
    }

    fn log_refusal(&self, info: &LoginInfo, cause: &str) {
        let target = info.target_name.as_deref().unwrap_or("(discovery)");
        super::refused(&self.log, &info.initiator_name, target, self.peer, cause);
    }
}

impl Authenticator for Audited {
    fn method(&self) -> &str {
        self.inner.method()
    }

    fn step(&mut self, info: &LoginInfo, keys: &[Pair]) -> Result<AuthStep, LoginRejection> {
        let r = self.inner.step(info, keys);
        match &r {
            Ok(AuthStep::Done(k)) => info!(
                initiator = %info.initiator_name,
                peer = %self.peer,
                target = info.target_name.as_deref().unwrap_or("(discovery)"),
                algorithm = self.inner.algorithm().map_or("?", |a| a.name()),
                mutual = !k.is_empty(),
                "CHAP authentication succeeded"
            ),
            Ok(AuthStep::Continue(_)) => {}
            Err(_) => {
                let cause = self.inner.failure().map_or_else(
                    || "CHAP failed".to_string(),
                    |f| format!("authentication failure: {f}"),
                );
                self.log_refusal(info, &cause);
            }
        }
        r
    }

    fn refused(&mut self, info: &LoginInfo, why: &str) {
        self.inner.refused(info, why);
        self.log_refusal(info, &format!("authentication failure: {why}"));
    }
}

/// Used when no random challenge can be made: every login is refused.
pub(super) struct Unavailable;

impl Authenticator for Unavailable {
    fn method(&self) -> &str {
        "CHAP"
    }

    fn step(&mut self, _info: &LoginInfo, _keys: &[Pair]) -> Result<AuthStep, LoginRejection> {
        Err(LoginRejection::ServiceUnavailable)
    }
}
