//! Login phase state machine (RFC 7143 §6): stages (security → operational → full feature),
//! T/C bits, text reassembly across continued PDUs, key negotiation, the login policy hook
//! and the authentication seam. It produces reply descriptions; the connection stamps
//! sequence numbers and queues them.

pub mod auth;
pub mod chap;
pub mod negotiate;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tracing::{debug, warn};

use crate::config::{
    LoginInfo, LoginPolicy, LoginRejection, ServerConfig, SessionInfo, SessionParams, SessionType,
};
use crate::pdu::LoginRequest;
use crate::text::{self, Pair, MAX_TEXT_LEN};
use auth::{AuthStep, Authenticator};
use negotiate::{negotiate, KeyOutcome};

/// Login stage codes (CSG/NSG).
pub const STAGE_SECURITY: u8 = 0;
pub const STAGE_OPERATIONAL: u8 = 1;
pub const STAGE_FULL_FEATURE: u8 = 3;

/// A Login Response to send, before sequence numbers are filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginReply {
    pub transit: bool,
    pub csg: u8,
    pub nsg: u8,
    pub tsih: u16,
    pub status_class: u8,
    pub status_detail: u8,
    pub data: Bytes,
}

/// What the connection does after one Login Request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginStep {
    /// Send the reply and stay in the login phase.
    Reply(LoginReply),
    /// Send the final reply; the session enters full feature phase.
    Complete(LoginReply, SessionInfo),
    /// Send the failure reply and close the connection.
    Fail(LoginReply),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthState {
    /// AuthMethod not negotiated yet.
    Pending,
    /// The plugged-in authenticator was chosen and is exchanging keys.
    InProgress,
    /// Authenticated (or AuthMethod=None accepted).
    Done,
}

/// Per-connection login state.
pub struct Login {
    config: Arc<ServerConfig>,
    stage: Option<u8>,
    first: Option<(u8, [u8; 6], u16, u16)>,
    pending: BytesMut,
    info: Option<LoginInfo>,
    tsih: u16,
    params: SessionParams,
    auth: AuthState,
    declared_mrdsl: bool,
    declared_tpgt: bool,
    /// Chosen by the policy for this login; takes precedence over the connection's.
    authenticator: Option<Box<dyn Authenticator>>,
}

fn fail(req: &LoginRequest, class: u8, detail: u8) -> LoginStep {
    LoginStep::Fail(LoginReply {
        transit: false,
        csg: req.csg,
        nsg: 0,
        tsih: req.tsih,
        status_class: class,
        status_detail: detail,
        data: Bytes::new(),
    })
}

fn rejection(req: &LoginRequest, r: LoginRejection) -> LoginStep {
    let (c, d) = r.status();
    fail(req, c, d)
}

impl Login {
    /// Fresh login state for a new connection.
    pub fn new(config: Arc<ServerConfig>) -> Self {
        let params = SessionParams::defaults(&config.limits);
        Login {
            config,
            stage: None,
            first: None,
            pending: BytesMut::new(),
            info: None,
            tsih: 0,
            params,
            auth: AuthState::Pending,
            declared_mrdsl: false,
            declared_tpgt: false,
            authenticator: None,
        }
    }

    /// Handles one Login Request.
    pub fn handle(
        &mut self,
        req: &LoginRequest,
        policy: &dyn LoginPolicy,
        authenticator: Option<&mut (dyn Authenticator + 'static)>,
    ) -> LoginStep {
        // Version: we speak version 0x00 only.
        if req.version_min > 0 {
            warn!(version_min = req.version_min, "login: unsupported version");
            return fail(req, 2, 5);
        }
        match self.first {
            None => self.first = Some((req.csg, req.isid, req.tsih, req.cid)),
            Some((_, isid, tsih, cid)) => {
                if isid != req.isid || tsih != req.tsih || cid != req.cid {
                    warn!("login: ISID/TSIH/CID changed during login");
                    return fail(req, 2, 0);
                }
            }
        }
        let stage = *self.stage.get_or_insert(req.csg);
        if req.csg != stage || req.csg > STAGE_OPERATIONAL {
            warn!(
                csg = req.csg,
                expected = stage,
                "login: wrong current stage"
            );
            return fail(req, 2, 0x0b);
        }
        if req.transit && req.cont {
            warn!("login: T and C both set");
            return fail(req, 2, 0);
        }
        if self.pending.len() + req.data.len() > MAX_TEXT_LEN {
            warn!("login: text too long");
            return fail(req, 2, 0);
        }
        self.pending.extend_from_slice(&req.data);
        if req.cont {
            // Acknowledge and ask for the rest of the text.
            return LoginStep::Reply(LoginReply {
                transit: false,
                csg: stage,
                nsg: 0,
                tsih: req.tsih,
                status_class: 0,
                status_detail: 0,
                data: Bytes::new(),
            });
        }
        let raw = std::mem::take(&mut self.pending);
        let pairs = match text::parse(&raw) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "login: bad text");
                return fail(req, 2, 0);
            }
        };
        // CHAP challenges and responses are not logged: with them a weak secret could be
        // guessed offline.
        let shown: Vec<(&str, &str)> = pairs
            .iter()
            .map(|p| match p.key.as_str() {
                "CHAP_C" | "CHAP_R" => (p.key.as_str(), "<redacted>"),
                _ => (p.key.as_str(), p.value.as_str()),
            })
            .collect();
        debug!(
            pairs = ?shown,
            csg = req.csg,
            nsg = req.nsg,
            transit = req.transit,
            "login request"
        );

        if self.info.is_none() {
            if let Err(step) = self.identify(req, &pairs, policy) {
                return *step;
            }
        }
        let Some(info) = self.info.clone() else {
            return fail(req, 3, 0);
        };
        let mut own = self.authenticator.take();
        let have_auth = match own.as_deref_mut() {
            Some(a) => Some(a),
            None => authenticator,
        };
        let step = self.negotiate_keys(req, stage, &pairs, &info, have_auth);
        self.authenticator = own;
        step
    }

    /// Everything after identification: AuthMethod and the authentication exchange,
    /// operational keys, stage transitions.
    fn negotiate_keys(
        &mut self,
        req: &LoginRequest,
        stage: u8,
        pairs: &[Pair],
        info: &LoginInfo,
        mut have_auth: Option<&mut (dyn Authenticator + 'static)>,
    ) -> LoginStep {
        let mut answers: Vec<(String, String)> = Vec::new();
        if info.session_type == SessionType::Normal && !self.declared_tpgt {
            if let Some(t) = info
                .target_name
                .as_deref()
                .and_then(|n| self.config.target(n))
            {
                answers.push(("TargetPortalGroupTag".into(), t.tpgt.to_string()));
                if let Some(a) = &t.alias {
                    answers.push(("TargetAlias".into(), a.clone()));
                }
            }
            self.declared_tpgt = true;
        }

        let mut auth_keys: Vec<Pair> = Vec::new();
        for p in pairs {
            let key = p.key.as_str();
            match key {
                "InitiatorName" | "SessionType" | "TargetName" | "InitiatorAlias" => {
                    if self.stage_changed_identity(key, &p.value, info) {
                        warn!(key, "login: identity key changed");
                        return fail(req, 2, 0);
                    }
                }
                "AuthMethod" => {
                    if stage != STAGE_SECURITY || self.auth != AuthState::Pending {
                        answers.push((key.into(), "Irrelevant".into()));
                        continue;
                    }
                    let offered: Vec<&str> = text::parse_list(&p.value).collect();
                    let choice = match have_auth.as_deref() {
                        Some(a) => offered.iter().find(|m| **m == a.method()).copied(),
                        None => offered.iter().find(|m| **m == "None").copied(),
                    };
                    match choice {
                        Some("None") => {
                            self.auth = AuthState::Done;
                            answers.push((key.into(), "None".into()));
                        }
                        Some(m) => {
                            self.auth = AuthState::InProgress;
                            answers.push((key.into(), m.to_string()));
                        }
                        None => {
                            // Logged by the gateway (rate-limited) when it set an authenticator.
                            debug!(offered = %p.value, "login: no acceptable AuthMethod");
                            if let Some(a) = have_auth.as_deref_mut() {
                                a.refused(info, "no acceptable AuthMethod offered");
                            }
                            return fail(req, 2, 1);
                        }
                    }
                }
                _ if key.starts_with("CHAP_") || key.starts_with("SRP_") => {
                    auth_keys.push(p.clone());
                }
                "SendTargets" | "TargetAddress" | "TargetPortalGroupTag" | "TargetAlias" => {
                    answers.push((key.into(), "Irrelevant".into()));
                }
                _ => {
                    let st = info.session_type;
                    match negotiate(key, &p.value, st, &self.config.limits, &mut self.params) {
                        Some(KeyOutcome::Answer(v)) => {
                            if key == "MaxRecvDataSegmentLength" {
                                self.declared_mrdsl = true;
                            }
                            answers.push((key.into(), v));
                        }
                        Some(KeyOutcome::Silent) => {}
                        None => answers.push((key.into(), "NotUnderstood".into())),
                    }
                }
            }
        }

        // Authentication exchange with a plugged-in method.
        if self.auth == AuthState::InProgress {
            let Some(a) = have_auth.as_deref_mut() else {
                return fail(req, 3, 0);
            };
            match a.step(info, &auth_keys) {
                Ok(AuthStep::Continue(keys)) => {
                    answers.extend(keys);
                    return LoginStep::Reply(self.reply(req, false, stage, 0, answers));
                }
                Ok(AuthStep::Done(keys)) => {
                    self.auth = AuthState::Done;
                    answers.extend(keys);
                }
                Err(r) => return rejection(req, r),
            }
        } else if !auth_keys.is_empty() {
            for k in auth_keys {
                answers.push((k.key, "Irrelevant".into()));
            }
        }

        if stage == STAGE_OPERATIONAL && !self.declared_mrdsl {
            answers.push((
                "MaxRecvDataSegmentLength".into(),
                self.params.target_max_recv_data_segment_length.to_string(),
            ));
            self.declared_mrdsl = true;
        }

        if !req.transit {
            return LoginStep::Reply(self.reply(req, false, stage, 0, answers));
        }
        let valid_next = match stage {
            STAGE_SECURITY => req.nsg == STAGE_OPERATIONAL || req.nsg == STAGE_FULL_FEATURE,
            _ => req.nsg == STAGE_FULL_FEATURE,
        };
        if !valid_next {
            warn!(csg = stage, nsg = req.nsg, "login: invalid next stage");
            return fail(req, 2, 0);
        }
        // Leaving the security stage (or skipping it) requires authentication.
        if self.auth != AuthState::Done {
            if let Some(a) = have_auth {
                debug!("login: authentication required but not completed");
                a.refused(info, "left the security stage before authenticating");
                return fail(req, 2, 1);
            }
            self.auth = AuthState::Done;
        }
        self.stage = Some(req.nsg);
        if req.nsg == STAGE_FULL_FEATURE {
            self.params.first_burst_length = self
                .params
                .first_burst_length
                .min(self.params.max_burst_length);
            let reply = self.reply(req, true, stage, req.nsg, answers);
            let session = SessionInfo {
                initiator_name: info.initiator_name.clone(),
                initiator_alias: info.initiator_alias.clone(),
                isid: info.isid,
                tsih: self.tsih,
                cid: info.cid,
                target_name: info.target_name.clone(),
                session_type: info.session_type,
                params: self.params.clone(),
            };
            return LoginStep::Complete(reply, session);
        }
        LoginStep::Reply(self.reply(req, true, stage, req.nsg, answers))
    }

    fn reply(
        &self,
        req: &LoginRequest,
        transit: bool,
        csg: u8,
        nsg: u8,
        answers: Vec<(String, String)>,
    ) -> LoginReply {
        let tsih = if transit && nsg == STAGE_FULL_FEATURE {
            self.tsih
        } else {
            req.tsih
        };
        LoginReply {
            transit,
            csg,
            nsg: if transit { nsg } else { 0 },
            tsih,
            status_class: 0,
            status_detail: 0,
            data: text::encode(&answers),
        }
    }

    fn stage_changed_identity(&self, key: &str, value: &str, info: &LoginInfo) -> bool {
        match key {
            "InitiatorName" => value != info.initiator_name,
            "TargetName" => {
                info.session_type == SessionType::Normal
                    && info.target_name.as_deref() != Some(value)
            }
            "SessionType" => {
                let st = if value == "Discovery" {
                    SessionType::Discovery
                } else {
                    SessionType::Normal
                };
                st != info.session_type
            }
            _ => false,
        }
    }

    /// First complete text: learn who is logging in where, and ask the policy.
    fn identify(
        &mut self,
        req: &LoginRequest,
        pairs: &[Pair],
        policy: &dyn LoginPolicy,
    ) -> Result<(), Box<LoginStep>> {
        let get = |k: &str| pairs.iter().find(|p| p.key == k).map(|p| p.value.clone());
        let Some(initiator_name) = get("InitiatorName").filter(|n| !n.is_empty()) else {
            warn!("login: InitiatorName missing");
            return Err(Box::new(fail(req, 2, 7)));
        };
        let session_type = match get("SessionType").as_deref() {
            None | Some("Normal") => SessionType::Normal,
            Some("Discovery") => SessionType::Discovery,
            Some(other) => {
                warn!(session_type = other, "login: unsupported session type");
                return Err(Box::new(fail(req, 2, 9)));
            }
        };
        let target_name = match session_type {
            SessionType::Discovery => None,
            SessionType::Normal => {
                let Some(t) = get("TargetName") else {
                    warn!("login: TargetName missing");
                    return Err(Box::new(fail(req, 2, 7)));
                };
                if self.config.target(&t).is_none() {
                    warn!(target = %t, "login: unknown target");
                    return Err(Box::new(fail(req, 2, 3)));
                }
                Some(t)
            }
        };
        let info = LoginInfo {
            initiator_name,
            initiator_alias: get("InitiatorAlias"),
            isid: req.isid,
            tsih: req.tsih,
            cid: req.cid,
            target_name,
            session_type,
        };
        match policy.check(&info) {
            Ok(tsih) => {
                self.tsih = if tsih == 0 { 1 } else { tsih };
                self.authenticator = policy.authenticator(&info);
                self.info = Some(info);
                Ok(())
            }
            Err(r) => {
                // The gateway logs refusals itself (rate-limited, with the peer address).
                debug!(initiator = %info.initiator_name, ?r, "login refused by policy");
                Err(Box::new(rejection(req, r)))
            }
        }
    }
}

#[cfg(test)]
mod tests;
