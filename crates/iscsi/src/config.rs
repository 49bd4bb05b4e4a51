//! Configuration and policy types the gateway hands to the protocol: targets, limits, the
//! login policy hook, and the session description returned once a login succeeds.

use std::time::Duration;

/// One exported iSCSI target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetConfig {
    /// iSCSI name (iqn./eui./naa.).
    pub name: String,
    pub alias: Option<String>,
    /// Target portal group tag.
    pub tpgt: u16,
    /// "host:port" strings advertised in SendTargets (IPv6 hosts in brackets).
    pub portals: Vec<String>,
}

/// Protocol limits and timers. Values are our side of each negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Our MaxRecvDataSegmentLength (declared to the initiator).
    pub max_recv_data_segment_length: u32,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub max_outstanding_r2t: u32,
    pub immediate_data: bool,
    pub initial_r2t: bool,
    /// Command window: how many non-immediate commands may be outstanding.
    pub cmdsn_window: u32,
    /// Largest write (EDTL) we buffer; larger writes get `DataOut::TooLarge`.
    pub max_transfer_bytes: u32,
    /// Ping an idle initiator after this long without a PDU from it.
    pub nop_in_interval: Option<Duration>,
    /// Close if a ping is not answered within this.
    pub nop_in_timeout: Duration,
    /// The login phase must complete within this.
    pub login_timeout: Duration,
    pub default_time2wait: u16,
    pub default_time2retain: u16,
    /// Most immediate (I bit) commands in flight at once.
    pub max_immediate_commands: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_recv_data_segment_length: 262_144,
            max_burst_length: 1 << 20,
            first_burst_length: 262_144,
            max_outstanding_r2t: 8,
            immediate_data: true,
            initial_r2t: false,
            cmdsn_window: 128,
            max_transfer_bytes: 8 << 20,
            nop_in_interval: Some(Duration::from_secs(5)),
            nop_in_timeout: Duration::from_secs(15),
            login_timeout: Duration::from_secs(15),
            default_time2wait: 2,
            default_time2retain: 20,
            max_immediate_commands: 16,
        }
    }
}

impl Limits {
    /// The limits with every value forced into the range RFC 7143 allows.
    pub fn sanitized(&self) -> Limits {
        let seg = |v: u32| v.clamp(512, (1 << 24) - 1);
        let max_burst_length = seg(self.max_burst_length);
        Limits {
            max_recv_data_segment_length: seg(self.max_recv_data_segment_length),
            max_burst_length,
            first_burst_length: seg(self.first_burst_length).min(max_burst_length),
            max_outstanding_r2t: self.max_outstanding_r2t.clamp(1, 65535),
            cmdsn_window: self.cmdsn_window.clamp(1, 1 << 16),
            default_time2wait: self.default_time2wait.min(3600),
            default_time2retain: self.default_time2retain.min(3600),
            max_immediate_commands: self.max_immediate_commands.max(1),
            ..self.clone()
        }
    }
}

/// Everything a [`crate::Connection`] needs to know about the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerConfig {
    pub targets: Vec<TargetConfig>,
    pub limits: Limits,
}

impl ServerConfig {
    /// The target with this exact name.
    pub fn target(&self, name: &str) -> Option<&TargetConfig> {
        self.targets.iter().find(|t| t.name == name)
    }
}

/// Normal or discovery session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionType {
    Normal,
    Discovery,
}

/// What the initiator asked for, passed to [`LoginPolicy::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginInfo {
    pub initiator_name: String,
    pub initiator_alias: Option<String>,
    pub isid: [u8; 6],
    /// TSIH as requested (0 = new session).
    pub tsih: u16,
    pub cid: u16,
    /// Target name (None for discovery sessions).
    pub target_name: Option<String>,
    pub session_type: SessionType,
}

/// Why a login is refused; mapped to a Login Response status class/detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRejection {
    /// 0x0201
    AuthenticationFailure,
    /// 0x0202
    AuthorizationFailure,
    /// 0x0203
    TargetNotFound,
    /// 0x0204
    TargetRemoved,
    /// 0x0206
    TooManyConnections,
    /// 0x0208
    CannotIncludeInSession,
    /// 0x020a
    SessionDoesNotExist,
    /// 0x0301
    ServiceUnavailable,
    /// 0x0302
    OutOfResources,
    /// Any other class/detail pair.
    Other { class: u8, detail: u8 },
}

impl LoginRejection {
    /// Status class and detail for the Login Response.
    pub fn status(&self) -> (u8, u8) {
        match self {
            LoginRejection::AuthenticationFailure => (2, 1),
            LoginRejection::AuthorizationFailure => (2, 2),
            LoginRejection::TargetNotFound => (2, 3),
            LoginRejection::TargetRemoved => (2, 4),
            LoginRejection::TooManyConnections => (2, 6),
            LoginRejection::CannotIncludeInSession => (2, 8),
            LoginRejection::SessionDoesNotExist => (2, 0x0a),
            LoginRejection::ServiceUnavailable => (3, 1),
            LoginRejection::OutOfResources => (3, 2),
            LoginRejection::Other { class, detail } => (*class, *detail),
        }
    }
}

/// Synchronous policy hook implemented by the gateway: decides whether a login may proceed
/// (ACLs, session reinstatement, TSIH allocation). Called once per login, as soon as the
/// initiator name, target and session type are known.
pub trait LoginPolicy {
    /// Returns the TSIH to use for the session (non-zero), or why the login is refused.
    fn check(&self, req: &LoginInfo) -> Result<u16, LoginRejection>;

    /// The authentication this login must pass (e.g. CHAP with the target's credentials),
    /// asked right after a successful [`LoginPolicy::check`]. `None`: the connection's own
    /// authenticator if one was set, else `AuthMethod=None`.
    fn authenticator(&self, _req: &LoginInfo) -> Option<Box<dyn crate::Authenticator>> {
        None
    }

    /// Whether SendTargets answers to this initiator may list `target` (access control:
    /// an initiator never learns of a target it may not log in to). Asked once per target
    /// when the session reaches full feature phase.
    fn may_discover(&self, _initiator_name: &str, _target: &str) -> bool {
        true
    }
}

/// Operational parameters in force for a session (RFC 7143 §13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionParams {
    pub header_digest: bool,
    pub data_digest: bool,
    pub max_connections: u16,
    pub initial_r2t: bool,
    pub immediate_data: bool,
    /// The initiator's MaxRecvDataSegmentLength: largest data segment we may send.
    pub initiator_max_recv_data_segment_length: u32,
    /// Ours: largest data segment we accept.
    pub target_max_recv_data_segment_length: u32,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub default_time2wait: u16,
    pub default_time2retain: u16,
    pub max_outstanding_r2t: u32,
    pub data_pdu_in_order: bool,
    pub data_sequence_in_order: bool,
    pub error_recovery_level: u8,
}

impl SessionParams {
    /// RFC 7143 defaults, with our receive limit.
    pub fn defaults(limits: &Limits) -> Self {
        SessionParams {
            header_digest: false,
            data_digest: false,
            max_connections: 1,
            initial_r2t: true,
            immediate_data: limits.immediate_data,
            initiator_max_recv_data_segment_length: 8192,
            target_max_recv_data_segment_length: limits.max_recv_data_segment_length,
            max_burst_length: 262_144u32.min(limits.max_burst_length),
            first_burst_length: 65_536u32.min(limits.first_burst_length),
            default_time2wait: 2u16.max(limits.default_time2wait),
            default_time2retain: 20u16.min(limits.default_time2retain),
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
        }
    }
}

/// A logged-in session (one connection per session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub initiator_name: String,
    pub initiator_alias: Option<String>,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub cid: u16,
    pub target_name: Option<String>,
    pub session_type: SessionType,
    pub params: SessionParams,
}
