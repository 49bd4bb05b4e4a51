//! The network side of the gateway: the per-connection task, the session registry, the
//! targets' runtime state and the command executor.

pub mod backlog;
pub mod budget;
pub mod buffers;
pub mod connection;
mod deadline;
pub mod drain_gate;
pub mod exec;
pub mod idle_poll;
mod large_pdu;
pub mod lun_gate;
mod read;
pub mod registered_size;
pub mod registry;
pub mod rmw_gate;
pub mod targets;
mod wake_threshold;
pub mod workers;

use std::net::SocketAddr;
use std::sync::Arc;

/// What every connection task shares.
pub struct ServerContext {
    pub iscsi: Arc<iscsi::ServerConfig>,
    pub targets: targets::TargetSet,
    pub registry: registry::SessionRegistry,
    /// `[limits]`: connection, session and backlog caps.
    pub limits: crate::config::Limits,
    /// ACLs and CHAP (crate::access).
    pub access: crate::access::AccessControl,
    /// `limits.max_command_data`, shared by all connections (`budget.rs`).
    pub data_budget: Arc<budget::DataBudget>,
    /// Gateway-wide connection and login numbers (`crate::metrics`).
    pub metrics: Arc<crate::metrics::GatewayMetrics>,
    /// `[server] adaptive_depth`: connection rings adapt their depth (`block/depth.rs`).
    pub adaptive_depth: bool,
}

impl ServerContext {
    /// The protocol configuration for a connection accepted on `local`: a wildcard portal
    /// (0.0.0.0 or ::) in SendTargets answers is replaced by the address the initiator
    /// actually reached, which is the only one of ours it is known to be able to use.
    pub fn iscsi_config_for(&self, local: SocketAddr) -> Arc<iscsi::ServerConfig> {
        let wildcard = |p: &String| {
            p.parse::<SocketAddr>()
                .is_ok_and(|a| a.ip().is_unspecified())
        };
        if !self
            .iscsi
            .targets
            .iter()
            .any(|t| t.portals.iter().any(wildcard))
        {
            return self.iscsi.clone();
        }
        let mut cfg = (*self.iscsi).clone();
        for t in &mut cfg.targets {
            for p in &mut t.portals {
                if let Ok(a) = p.parse::<SocketAddr>() {
                    if a.ip().is_unspecified() {
                        *p = crate::server::portal_string(&SocketAddr::new(local.ip(), a.port()));
                    }
                }
            }
        }
        Arc::new(cfg)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ctx(portal: &str) -> ServerContext {
        ServerContext {
            iscsi: Arc::new(iscsi::ServerConfig {
                targets: vec![iscsi::TargetConfig {
                    name: "iqn.2026-11.test:t".into(),
                    alias: None,
                    tpgt: 1,
                    portals: vec![portal.into()],
                }],
                limits: iscsi::Limits::default(),
            }),
            targets: targets::TargetSet::empty(),
            registry: registry::SessionRegistry::default(),
            limits: crate::config::Limits::default(),
            access: crate::access::AccessControl::open(),
            data_budget: budget::DataBudget::new(1 << 20),
            metrics: Default::default(),
            adaptive_depth: true,
        }
    }

    #[test]
    fn wildcard_portal_becomes_the_local_address() {
        let local: SocketAddr = "192.0.2.7:3260".parse().unwrap();
        let c = ctx("0.0.0.0:3260").iscsi_config_for(local);
        assert_eq!(c.targets[0].portals, vec!["192.0.2.7:3260".to_string()]);
        let c = ctx("[::]:3261").iscsi_config_for("[2001:db8::1]:3261".parse().unwrap());
        assert_eq!(c.targets[0].portals, vec!["[2001:db8::1]:3261".to_string()]);
        let c = ctx("198.51.100.1:3260").iscsi_config_for(local);
        assert_eq!(c.targets[0].portals, vec!["198.51.100.1:3260".to_string()]);
    }
}
