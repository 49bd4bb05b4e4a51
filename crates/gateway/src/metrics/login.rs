//! Counts failed CHAP exchanges: wraps the authenticator the access control chose for a
//! login and records `result="auth_failed"` when it refuses the initiator.

use std::sync::Arc;

use iscsi::text::Pair;
use iscsi::{AuthStep, Authenticator, LoginInfo, LoginRejection};

use super::{GatewayMetrics, LoginResult};

pub struct CountedAuth {
    inner: Box<dyn Authenticator>,
    metrics: Arc<GatewayMetrics>,
}

impl CountedAuth {
    pub fn wrap(inner: Box<dyn Authenticator>, metrics: Arc<GatewayMetrics>) -> Box<Self> {
        Box::new(CountedAuth { inner, metrics })
    }
}

impl Authenticator for CountedAuth {
    fn method(&self) -> &str {
        self.inner.method()
    }

    fn step(&mut self, info: &LoginInfo, keys: &[Pair]) -> Result<AuthStep, LoginRejection> {
        let r = self.inner.step(info, keys);
        if r.is_err() {
            self.metrics.login(LoginResult::AuthFailed);
        }
        r
    }

    fn refused(&mut self, info: &LoginInfo, why: &str) {
        // Called only when `step` did not refuse (the initiator never finished CHAP).
        self.metrics.login(LoginResult::AuthFailed);
        self.inner.refused(info, why);
    }
}
