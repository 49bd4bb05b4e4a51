//! Library half of the `iscsi-gateway` binary: the block engine, configuration and
//! identity derivation, shared by `main.rs`, the network server and integration tests.

pub mod access;
pub mod block;
pub mod config;
pub mod drbd;
pub mod identity;
pub mod metrics;
pub mod net;
pub mod server;
pub mod state;
