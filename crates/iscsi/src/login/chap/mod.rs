//! CHAP authentication (RFC 7143 §12.1.3) as an [`Authenticator`]: one-way (the initiator
//! proves it knows the secret) and mutual (the target then proves it knows its own secret).
//!
//! Exchange, after `AuthMethod=CHAP` was agreed:
//! 1. initiator `CHAP_A=<list>` → target `CHAP_A=<a>`, `CHAP_I=<id>`, `CHAP_C=0x<challenge>`
//!    (the strongest algorithm offered that the configuration allows);
//! 2. initiator `CHAP_N`, `CHAP_R` [+ `CHAP_I`, `CHAP_C` for mutual] → the target checks name and
//!    response (constant-time) and, for mutual, answers `CHAP_N`, `CHAP_R` with its own secret.
//!
//! Sans-IO: the identifier and challenge come from random bytes the caller supplies at
//! construction ([`CHAP_RANDOM_LEN`]). A failure is remembered ([`ChapAuthenticator::failure`])
//! so the caller can log the cause; the protocol only sees "authentication failure".

mod algo;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use tracing::debug;

pub use algo::{
    decode_binary, decode_identifier, encode_hex, responses_match, ChapAlgorithm, ChapSecret,
    MAX_BINARY_LEN,
};

use super::auth::{AuthStep, Authenticator};
use crate::config::{LoginInfo, LoginRejection};
use crate::text::{self, Pair};

/// Random bytes a [`ChapAuthenticator`] needs: one for CHAP_I, the rest for CHAP_C.
pub const CHAP_RANDOM_LEN: usize = 33;

/// A name and its secret.
#[derive(Debug, Clone)]
pub struct ChapCredentials {
    pub name: String,
    pub secret: ChapSecret,
}

/// What a target (or discovery) requires.
#[derive(Debug, Clone)]
pub struct ChapConfig {
    /// The name and secret the initiator must prove (its CHAP_N and secret).
    pub initiator: ChapCredentials,
    /// The target's own name and secret, used when the initiator asks for mutual CHAP.
    /// Without it a mutual request is refused.
    pub target: Option<ChapCredentials>,
    /// Algorithms allowed; the strongest one the initiator offers is chosen.
    pub algorithms: Vec<ChapAlgorithm>,
}

/// Why a CHAP exchange failed. Never contains a secret or a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChapFailure {
    #[error("no CHAP algorithm in common (initiator offered CHAP_A={0})")]
    NoCommonAlgorithm(String),
    #[error("CHAP key {0} out of sequence")]
    OutOfSequence(&'static str),
    #[error("CHAP_N or CHAP_R missing")]
    MissingResponse,
    #[error("unknown CHAP user name")]
    WrongName,
    #[error("malformed CHAP_R")]
    MalformedResponse,
    #[error("wrong CHAP response (wrong secret)")]
    WrongResponse,
    #[error("mutual CHAP requested but no target credentials configured")]
    MutualNotConfigured,
    #[error("malformed mutual CHAP_I/CHAP_C")]
    MalformedMutualChallenge,
    #[error("mutual CHAP challenge reflects the target's own challenge")]
    ReflectedChallenge,
    #[error("mutual CHAP refused: target secret equals initiator secret")]
    SameSecrets,
    #[error("initiator did not complete CHAP: {0}")]
    NotCompleted(String),
}

#[derive(Debug)]
enum State {
    /// Waiting for CHAP_A.
    Algorithm,
    /// Challenge sent, waiting for CHAP_N/CHAP_R.
    Response {
        alg: ChapAlgorithm,
        id: u8,
        challenge: Vec<u8>,
    },
    Done,
    Failed,
}

/// One login's CHAP exchange.
pub struct ChapAuthenticator {
    config: Arc<ChapConfig>,
    random: [u8; CHAP_RANDOM_LEN],
    state: State,
    chosen: Option<ChapAlgorithm>,
    failure: Option<ChapFailure>,
    /// Login Requests seen so far (the first may carry only AuthMethod).
    steps: u32,
}

impl std::fmt::Debug for ChapAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChapAuthenticator")
            .field("state", &self.state)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

fn value<'a>(keys: &'a [Pair], k: &str) -> Option<&'a str> {
    keys.iter().find(|p| p.key == k).map(|p| p.value.as_str())
}

impl ChapAuthenticator {
    /// A fresh exchange; `random` must come from a cryptographic source (it makes the
    /// identifier and the challenge).
    pub fn new(config: Arc<ChapConfig>, random: [u8; CHAP_RANDOM_LEN]) -> Self {
        ChapAuthenticator {
            config,
            random,
            state: State::Algorithm,
            chosen: None,
            failure: None,
            steps: 0,
        }
    }

    /// Why the exchange failed, once it has.
    pub fn failure(&self) -> Option<&ChapFailure> {
        self.failure.as_ref()
    }

    /// The algorithm agreed on, once CHAP_A was answered.
    pub fn algorithm(&self) -> Option<ChapAlgorithm> {
        self.chosen
    }

    /// True once the initiator (and, if asked, the target) authenticated.
    pub fn succeeded(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn fail(&mut self, why: ChapFailure) -> Result<AuthStep, LoginRejection> {
        debug!(cause = %why, "CHAP failed");
        self.failure = Some(why);
        self.state = State::Failed;
        Err(LoginRejection::AuthenticationFailure)
    }

    fn choose(&mut self, offered: &str) -> Result<AuthStep, LoginRejection> {
        let best = text::parse_list(offered)
            .filter_map(|a| a.parse::<u32>().ok())
            .filter_map(ChapAlgorithm::from_code)
            .filter(|a| self.config.algorithms.contains(a))
            .max();
        let Some(alg) = best else {
            let shown: String = offered.chars().take(64).collect();
            return self.fail(ChapFailure::NoCommonAlgorithm(shown));
        };
        let id = self.random[0];
        let challenge = self.random[1..=alg.challenge_len()].to_vec();
        let keys = vec![
            ("CHAP_A".to_string(), alg.code().to_string()),
            ("CHAP_I".to_string(), id.to_string()),
            ("CHAP_C".to_string(), encode_hex(&challenge)),
        ];
        debug!(algorithm = alg.name(), "CHAP challenge sent");
        self.chosen = Some(alg);
        self.state = State::Response { alg, id, challenge };
        Ok(AuthStep::Continue(keys))
    }

    fn verify(
        &mut self,
        keys: &[Pair],
        alg: ChapAlgorithm,
        id: u8,
        challenge: &[u8],
    ) -> Result<AuthStep, LoginRejection> {
        let (Some(name), Some(resp)) = (value(keys, "CHAP_N"), value(keys, "CHAP_R")) else {
            return self.fail(ChapFailure::MissingResponse);
        };
        let cfg = self.config.clone();
        let Some(resp) = decode_binary(resp).filter(|r| r.len() == alg.digest_len()) else {
            return self.fail(ChapFailure::MalformedResponse);
        };
        let expected = alg.response(id, cfg.initiator.secret.expose(), challenge);
        // Both checks always run, so timing says nothing about which one failed.
        let name_ok = name == cfg.initiator.name;
        let resp_ok = responses_match(&resp, &expected);
        if !name_ok {
            return self.fail(ChapFailure::WrongName);
        }
        if !resp_ok {
            return self.fail(ChapFailure::WrongResponse);
        }
        let mut answer = Vec::new();
        match (value(keys, "CHAP_I"), value(keys, "CHAP_C")) {
            (None, None) => {}
            (Some(i), Some(c)) => {
                let Some(target) = &cfg.target else {
                    return self.fail(ChapFailure::MutualNotConfigured);
                };
                let (Some(i), Some(c)) = (decode_identifier(i), decode_binary(c)) else {
                    return self.fail(ChapFailure::MalformedMutualChallenge);
                };
                if c == challenge {
                    return self.fail(ChapFailure::ReflectedChallenge);
                }
                if target.secret.same_as(&cfg.initiator.secret) {
                    return self.fail(ChapFailure::SameSecrets);
                }
                let r = alg.response(i, target.secret.expose(), &c);
                answer.push(("CHAP_N".to_string(), target.name.clone()));
                answer.push(("CHAP_R".to_string(), encode_hex(&r)));
            }
            _ => return self.fail(ChapFailure::MalformedMutualChallenge),
        }
        debug!(
            algorithm = alg.name(),
            mutual = !answer.is_empty(),
            "CHAP succeeded"
        );
        self.state = State::Done;
        Ok(AuthStep::Done(answer))
    }
}

impl Authenticator for ChapAuthenticator {
    fn method(&self) -> &str {
        "CHAP"
    }

    fn step(&mut self, _info: &LoginInfo, keys: &[Pair]) -> Result<AuthStep, LoginRejection> {
        // Unknown CHAP_/SRP_ keys are answered, not fatal.
        let mut extra: Vec<(String, String)> = keys
            .iter()
            .filter(|p| {
                !matches!(
                    p.key.as_str(),
                    "CHAP_A" | "CHAP_I" | "CHAP_C" | "CHAP_N" | "CHAP_R"
                )
            })
            .map(|p| (p.key.clone(), "NotUnderstood".to_string()))
            .collect();
        let known = keys.len() - extra.len();
        self.steps = self.steps.saturating_add(1);
        let state = std::mem::replace(&mut self.state, State::Failed);
        let step = match state {
            State::Algorithm => match value(keys, "CHAP_A") {
                Some(a) if known == 1 => self.choose(a),
                // The PDU that chose CHAP may come without CHAP_A; a later one may not.
                None if known == 0 && self.steps == 1 => {
                    self.state = State::Algorithm;
                    Ok(AuthStep::Continue(Vec::new()))
                }
                None if known == 0 => self.fail(ChapFailure::NotCompleted("no CHAP_A sent".into())),
                _ => self.fail(ChapFailure::OutOfSequence("CHAP_N/CHAP_R/CHAP_I/CHAP_C")),
            },
            State::Response { alg, id, challenge } => {
                if value(keys, "CHAP_A").is_some() {
                    self.fail(ChapFailure::OutOfSequence("CHAP_A"))
                } else {
                    self.verify(keys, alg, id, &challenge)
                }
            }
            State::Done | State::Failed => {
                self.fail(ChapFailure::OutOfSequence("after the exchange"))
            }
        }?;
        Ok(match step {
            AuthStep::Continue(mut k) => {
                k.append(&mut extra);
                AuthStep::Continue(k)
            }
            AuthStep::Done(mut k) => {
                k.append(&mut extra);
                AuthStep::Done(k)
            }
        })
    }

    fn refused(&mut self, _info: &LoginInfo, why: &str) {
        if self.failure.is_none() {
            self.failure = Some(ChapFailure::NotCompleted(why.to_string()));
        }
    }
}
