//! Gateway configuration: one validated [`Config`], built from a TOML file
//! ([`Config::load`]), from the quick command-line flags ([`Config::from_flags`]) or the
//! embedded default ([`Config::embedded_default`]). All three go through the same
//! validation (`resolve.rs`), whose errors name the key and the problem, e.g.
//! `target[0].lun[1].path: file /x does not exist and no size given to create it`.
//!
//! The resolved types carry everything later stages need as plain fields, including the
//! LUN identity (serial, NAA) derived by [`crate::identity`].

mod auth;
mod cidr;
mod cli;
mod limits;
mod names;
mod raw;
mod resolve;
mod size;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::block::{DeviceProps, DirectMode, OpenOptions};

pub use auth::{read_secret_file, AuthSpec, MAX_SECRET_LEN, MIN_SECRET_LEN};
pub use cidr::IpNetwork;
pub use cli::{parse_lun_flag, LunFlag, QuickFlags};
pub use limits::Limits;
pub use names::normalize_iscsi_name;
pub use size::parse_size;

/// IQN of the embedded default target.
pub const DEFAULT_TARGET_IQN: &str = "iqn.2026-11.org.iscsi-gateway:default";
/// Portal of the embedded default and of `serve` without `--listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3260";
/// iSCSI well-known port, used when a listen/advertise address has no port.
pub const DEFAULT_PORT: u16 = 3260;
/// Port of a `metrics_listen` address given as a bare IP.
pub const DEFAULT_METRICS_PORT: u16 = 9470;
/// Data directory of `serve` without `--config` / `--data-dir` (relative to the cwd).
pub const DEFAULT_CLI_DATA_DIR: &str = "./iscsi-gateway-data";
/// Data directory of a config file without `server.data_dir`.
pub const DEFAULT_FILE_DATA_DIR: &str = "/var/lib/iscsi-gateway";
/// Size of the embedded default LUN file (`<data_dir>/lun0.img`, created sparse).
pub const DEFAULT_LUN_SIZE: u64 = 1 << 30;
/// Default INQUIRY vendor (T10 vendor id, at most 8 characters).
pub const DEFAULT_VENDOR: &str = "DRBDGW";
/// Default INQUIRY product (at most 16 characters).
pub const DEFAULT_PRODUCT: &str = "iSCSI LUN";
/// Default INQUIRY revision (at most 4 characters). Fixed, not the crate version, so a
/// failover between two gateway versions still presents an identical LUN.
pub const DEFAULT_REVISION: &str = "0001";

/// Why a configuration is unusable. `Display` is one line naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value is invalid; `key` is its path, e.g. `target[0].lun[1].path`.
    #[error("{key}: {msg}")]
    Invalid { key: String, msg: String },
    /// The file is not valid TOML or does not have the expected shape.
    #[error("{file}:{line}:{column}: {msg}")]
    Parse {
        file: String,
        line: usize,
        column: usize,
        msg: String,
    },
    /// The file cannot be read.
    #[error("{file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, msg: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            msg: msg.into(),
        }
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub server: ServerSettings,
    pub iscsi: IscsiTuning,
    pub limits: Limits,
    pub drbd: DrbdSettings,
    pub discovery: DiscoverySettings,
    #[serde(rename = "target")]
    pub targets: Vec<TargetSpec>,
}

/// `[drbd]`: how LUNs with `drbd_resource` follow their DRBD resource (see `crate::drbd`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DrbdSettings {
    /// The `drbdsetup` program (default `drbdsetup`, looked up on PATH).
    pub drbdsetup: PathBuf,
    /// DRBD 9 auto-promote is on and the gateway relies on it: a LUN is served as soon as
    /// DRBD says the node may promote, and opening the device read-write promotes it.
    /// `false`: wait until a cluster manager (e.g. drbd-reactor) made the node Primary.
    /// Default true (DRBD 9's own default).
    pub auto_promote: bool,
}

impl Default for DrbdSettings {
    fn default() -> Self {
        DrbdSettings {
            drbdsetup: PathBuf::from("drbdsetup"),
            auto_promote: true,
        }
    }
}

/// `[discovery]`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiscoverySettings {
    /// CHAP required of SendTargets sessions; `None` = discovery is open (each initiator
    /// still sees only the targets it may log in to).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
}

/// `[server]`.
#[derive(Debug, Clone, Serialize)]
pub struct ServerSettings {
    /// Portals to bind (non-empty, no duplicates).
    pub listen: Vec<SocketAddr>,
    /// Addresses announced in SendTargets; defaults to `listen`. May contain unspecified
    /// addresses (0.0.0.0 / ::) when listen does: then announce the connection's local
    /// address instead.
    pub advertise: Vec<SocketAddr>,
    /// Where relative LUN paths and default LUN files live.
    pub data_dir: PathBuf,
    /// Where persistent-reservation state is kept (default `<data_dir>/state`). Put it on
    /// replicated storage so reservations survive a failover.
    pub state_dir: PathBuf,
    /// 24-bit IEEE company id of derived NAA designators.
    pub naa_company_id: u32,
    /// At start, how long to wait for a backing store another process holds exclusively
    /// (a gateway that is still shutting down) before giving up. Default 10, 0 = no wait.
    pub lock_wait_secs: u32,
    /// Threads serving connections, each with its own event loop and rings (thread per
    /// core). 0 (the default) = one per CPU this process may run on.
    pub io_threads: u32,
    /// Whether each connection measures how many of its operations to give the device at
    /// once (`block/depth.rs`); false: all of them, up to its ring size. Default true.
    pub adaptive_depth: bool,
    /// The most a connection thread polls its connections before sleeping, in µs
    /// (`net/idle_poll.rs`); 0 (the default) = never: CPU time traded for QD1 latency.
    pub idle_poll_us: u32,
    /// Where `GET /metrics` (Prometheus text format) is served; `None` (the default): no
    /// metrics endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
}

/// `[iscsi]`: operational parameters the target offers / enforces (RFC 7143 §13).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IscsiTuning {
    /// Our MaxRecvDataSegmentLength (512..=16777215), default 262144.
    pub max_recv_data_segment_length: u32,
    /// MaxBurstLength (512..=16777215), default 1048576.
    pub max_burst_length: u32,
    /// FirstBurstLength (512..=max_burst_length), default 262144: writes up to 256 KiB
    /// need no R2T round trip (benches/README.md, "FirstBurstLength 256 KiB").
    pub first_burst_length: u32,
    /// MaxOutstandingR2T (1..=65535), default 1.
    pub max_outstanding_r2t: u32,
    /// ImmediateData, default true.
    pub immediate_data: bool,
    /// InitialR2T, default false.
    pub initial_r2t: bool,
    /// Commands the initiator may have outstanding (MaxCmdSN - ExpCmdSN + 1), 1..=4096,
    /// default 128.
    pub cmdsn_window: u32,
    /// Seconds of idle before the target sends a NOP-In ping; 0 disables. Default 5.
    pub nop_interval_secs: u32,
    /// Seconds without any answer to a ping before the connection is dropped (>= 1),
    /// default 30.
    pub nop_timeout_secs: u32,
    /// Seconds a login may take (>= 1), default 15.
    pub login_timeout_secs: u32,
}

impl Default for IscsiTuning {
    fn default() -> Self {
        IscsiTuning {
            max_recv_data_segment_length: 262_144,
            max_burst_length: 1_048_576,
            first_burst_length: 262_144,
            max_outstanding_r2t: 1,
            immediate_data: true,
            initial_r2t: false,
            cmdsn_window: 128,
            nop_interval_secs: 5,
            nop_timeout_secs: 30,
            login_timeout_secs: 15,
        }
    }
}

/// One `[[target]]`.
#[derive(Debug, Clone, Serialize)]
pub struct TargetSpec {
    /// Normalised iSCSI name (iqn lowercase).
    pub iqn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Target portal group tag (1..=65535), default 1.
    pub tpgt: u16,
    /// Initiator names allowed to log in (normalised); empty = any.
    pub allowed_initiators: Vec<String>,
    /// Source networks allowed to log in; empty = any.
    pub allowed_networks: Vec<IpNetwork>,
    /// LUNs, sorted by LUN number, at least one.
    #[serde(rename = "lun")]
    pub luns: Vec<LunSpec>,
    /// CHAP required to log in; `None` = no authentication.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
}

/// One `[[target.lun]]`, resolved: everything the SCSI layer and the block engine need.
#[derive(Debug, Clone, Serialize)]
pub struct LunSpec {
    /// LUN number (0..=16383).
    pub lun: u16,
    /// Backing file or block device (relative config paths are joined to `data_dir`).
    pub path: PathBuf,
    /// Files only: create (sparse) or grow to this many bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Unit serial number (VPD 0x80): configured or derived.
    pub serial: String,
    /// NAA type 6 designator (VPD 0x83): configured or derived.
    #[serde(serialize_with = "ser_hex")]
    pub naa: [u8; 16],
    pub vendor: String,
    pub product: String,
    pub revision: String,
    /// 512 or 4096; `None` = the device's logical block size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u32>,
    pub read_only: bool,
    /// `None` = truthful default from the device: `BlockDevice::has_volatile_cache()`.
    /// `Some(false)` on a device with a volatile cache means every write must be FUA.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_cache: Option<bool>,
    /// `None` = enabled when `BlockDevice::supports_discard()`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unmap: Option<bool>,
    pub direct: DirectMode,
    /// Reads through the page cache (writes stay O_DIRECT); see `BlockDevice` and
    /// ARCHITECTURE.md "Read cache".
    pub read_cache: bool,
    /// DRBD resource of the device: served only while this node may write it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drbd_resource: Option<String>,
}

fn ser_hex<S: serde::Serializer>(v: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::identity::hex(v))
}

impl LunSpec {
    /// Options to open the backing store with.
    pub fn open_options(&self) -> OpenOptions {
        OpenOptions {
            create_size: self.size,
            direct: self.direct,
            read_only: self.read_only,
            read_cache: self.read_cache,
        }
    }

    /// The WCE bit to report: the configured value, else the device's truth
    /// ([`crate::block::BlockDevice::has_volatile_cache`]).
    pub fn write_cache_for(&self, dev: &impl DeviceProps) -> bool {
        self.write_cache.unwrap_or_else(|| dev.has_volatile_cache())
    }

    /// True when every write must be issued with FUA: WCE is reported off (configured
    /// `write_cache = false`) but the backing store does have a volatile cache.
    pub fn force_fua(&self, dev: &impl DeviceProps) -> bool {
        !self.write_cache_for(dev) && dev.has_volatile_cache()
    }

    /// Whether to advertise UNMAP / WRITE SAME unmap: configured (default on) and supported.
    pub fn unmap_for(&self, dev: &impl DeviceProps) -> bool {
        self.unmap.unwrap_or(true) && dev.supports_discard()
    }

    /// The logical block size to expose: configured or the device's. Errors when the
    /// configured size is smaller than the device's (O_DIRECT could not honour it) or
    /// the device capacity is not a whole number of blocks.
    pub fn block_size_for(&self, dev: &impl DeviceProps) -> Result<u32, String> {
        let dev_lbs = dev.logical_block_size();
        let bs = self.block_size.unwrap_or(dev_lbs);
        if bs < dev_lbs || !bs.is_multiple_of(dev_lbs) {
            return Err(format!(
                "block_size {bs} is smaller than or not a multiple of {}'s logical block size {dev_lbs}",
                self.path.display()
            ));
        }
        if dev.size_bytes() < u64::from(bs) {
            return Err(format!("{} is smaller than one block", self.path.display()));
        }
        Ok(bs)
    }

    /// The NAA designator as 32 lowercase hex digits.
    pub fn naa_hex(&self) -> String {
        crate::identity::hex(&self.naa)
    }
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Self::from_toml_str(&text, &file)
    }

    /// Parses and validates TOML text; `file` names it in error messages.
    pub fn from_toml_str(text: &str, file: &str) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            ConfigError::Parse {
                file: file.to_string(),
                line,
                column,
                msg: e.message().replace('\n', " "),
            }
        })?;
        resolve::resolve(raw, DEFAULT_FILE_DATA_DIR)
    }

    /// The configuration of `serve` with no arguments: target [`DEFAULT_TARGET_IQN`], one
    /// LUN backed by `<data_dir>/lun0.img` (created sparse at 1 GiB), listen 127.0.0.1:3260.
    pub fn embedded_default(data_dir: &Path) -> Result<Config, ConfigError> {
        Self::from_flags(&QuickFlags {
            data_dir: Some(data_dir.to_path_buf()),
            ..QuickFlags::default()
        })
    }

    /// Renders the resolved configuration as TOML (derived serial/NAA included).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n{self:#?}"))
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}
