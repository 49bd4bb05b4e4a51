//! Authentication seam for the login security stage. `AuthMethod=None` is built in; a CHAP
//! implementation plugs in through [`Authenticator`] without touching the login state machine:
//! either one per connection (`Connection::set_authenticator`) or one per login chosen by the
//! gateway once it knows the initiator and target (`LoginPolicy::authenticator`). CHAP is in
//! `login::chap`.

use crate::config::{LoginInfo, LoginRejection};
use crate::text::Pair;

/// One step of an authentication exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStep {
    /// Send these keys and wait for the initiator's next Login Request.
    Continue(Vec<(String, String)>),
    /// Authentication succeeded; send these keys (may be empty) and allow the stage change.
    Done(Vec<(String, String)>),
}

/// A security-stage authentication method (e.g. CHAP).
pub trait Authenticator: Send {
    /// The AuthMethod value this authenticator implements (e.g. "CHAP").
    fn method(&self) -> &str;
    /// Called with the security keys of each Login Request once this method was chosen
    /// (the first call happens in the same PDU that selected it, with the remaining keys).
    fn step(&mut self, info: &LoginInfo, keys: &[Pair]) -> Result<AuthStep, LoginRejection>;
    /// Called when the login fails authentication without this method having refused it
    /// (the initiator offered no acceptable AuthMethod, or left the security stage before
    /// the exchange completed). `why` names the cause for logs.
    fn refused(&mut self, _info: &LoginInfo, _why: &str) {}
}
