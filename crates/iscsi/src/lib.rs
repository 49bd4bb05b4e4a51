//! Sans-IO iSCSI (RFC 7143) target protocol: PDU codec, login negotiation, discovery,
//! and the per-connection session state machine. No sockets, no files, no async runtime.

pub mod config;
pub mod digest;
pub mod login;
pub mod pdu;
pub mod text;
