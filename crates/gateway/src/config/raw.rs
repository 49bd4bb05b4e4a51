//! The TOML file shape, exactly as users write it (`deny_unknown_fields` everywhere so a
//! typo is an error, not a silently ignored key). Validation and defaults live in
//! `resolve.rs`; nothing else reads these types.

use std::path::PathBuf;

use serde::Deserialize;

use super::size::RawSize;
use crate::block::DirectMode;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub iscsi: RawIscsi,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub target: Vec<RawTarget>,
    #[serde(default)]
    pub drbd: RawDrbd,
    #[serde(default)]
    pub discovery: RawDiscovery,
}

/// `[discovery]`: settings of SendTargets (discovery) sessions.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    pub auth: Option<RawAuth>,
}

/// `[target.auth]` / `[discovery.auth]`: CHAP credentials (secrets in files only).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub chap_user: Option<String>,
    pub chap_secret_file: Option<PathBuf>,
    pub mutual_user: Option<String>,
    pub mutual_secret_file: Option<PathBuf>,
    pub chap_algorithms: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<Vec<String>>,
    pub advertise: Option<Vec<String>>,
    pub data_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub naa_company_id: Option<u32>,
    pub lock_wait_secs: Option<u32>,
    pub io_threads: Option<u32>,
    pub adaptive_depth: Option<bool>,
    pub idle_poll_us: Option<u32>,
    pub metrics_listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDrbd {
    pub drbdsetup: Option<PathBuf>,
    pub auto_promote: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIscsi {
    pub max_recv_data_segment_length: Option<u32>,
    pub max_burst_length: Option<u32>,
    pub first_burst_length: Option<u32>,
    pub max_outstanding_r2t: Option<u32>,
    pub immediate_data: Option<bool>,
    pub initial_r2t: Option<bool>,
    pub cmdsn_window: Option<u32>,
    pub nop_interval_secs: Option<u32>,
    pub nop_timeout_secs: Option<u32>,
    pub login_timeout_secs: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_connections: Option<u32>,
    pub max_sessions_per_initiator: Option<u32>,
    pub max_outgoing_backlog: Option<RawSize>,
    pub max_command_data: Option<RawSize>,
    pub write_timeout_secs: Option<u32>,
    pub buffer_cache_per_thread: Option<RawSize>,
    pub registered_buffers_per_thread: Option<RawSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub iqn: String,
    pub alias: Option<String>,
    pub tpgt: Option<u16>,
    #[serde(default)]
    pub lun: Vec<RawLun>,
    pub allowed_initiators: Option<Vec<String>>,
    pub allowed_networks: Option<Vec<String>>,
    pub auth: Option<RawAuth>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLun {
    pub path: PathBuf,
    pub size: Option<RawSize>,
    pub serial: Option<String>,
    pub naa: Option<String>,
    pub vendor: Option<String>,
    pub product: Option<String>,
    pub revision: Option<String>,
    pub block_size: Option<u32>,
    pub read_only: Option<bool>,
    pub write_cache: Option<bool>,
    pub unmap: Option<bool>,
    pub direct: Option<DirectMode>,
    pub read_cache: Option<bool>,
    pub lun: Option<u16>,
    pub drbd_resource: Option<String>,
}
