//! Sans-IO iSCSI (RFC 7143) target protocol: PDU codec, login negotiation, discovery,
//! and the per-connection session state machine. No sockets, no files, no async runtime.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod config;
pub mod connection;
pub mod digest;
pub mod discovery;
pub mod login;
pub mod pdu;
pub mod text;

pub use config::{
    Limits, LoginInfo, LoginPolicy, LoginRejection, ServerConfig, SessionInfo, SessionParams,
    SessionType, TargetConfig,
};
pub use connection::{
    CloseReason, CommandResponse, Connection, ConnectionError, DataOut, Event, ScsiCommand,
    TaskAttr, TaskId, TmfFunction, TmfId, TmfRequest, TmfResponseCode,
};
pub use login::auth::{AuthStep, Authenticator};
pub use login::chap::{
    ChapAlgorithm, ChapAuthenticator, ChapConfig, ChapCredentials, ChapFailure, ChapSecret,
    CHAP_RANDOM_LEN,
};
pub use pdu::decode_pdu_for_fuzz;
