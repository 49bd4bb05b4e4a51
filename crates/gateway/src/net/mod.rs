//! The network side of the gateway: the per-connection task, the session registry, the
//! targets' runtime state and the command executor.

pub mod connection;
pub mod exec;
pub mod registry;
pub mod targets;

use std::sync::Arc;

/// What every connection task shares.
pub struct ServerContext {
    pub iscsi: Arc<iscsi::ServerConfig>,
    pub targets: targets::TargetSet,
    pub registry: registry::SessionRegistry,
}
