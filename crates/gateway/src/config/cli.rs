//! The quick command-line flags of `serve` (`--listen`, `--iqn`, `--lun PATH[,size=..]`,
//! `--advertise`, `--data-dir`, `--metrics-listen`, `--idle-poll-us`) turned into a [`Config`] through the same validation as a
//! file. `--lun` values are
//! `PATH[,size=SIZE][,serial=SERIAL][,read_cache=on|off][,direct=auto|on|off]`; LUN
//! numbers are 0, 1, ... in flag order. Without `--lun` the embedded default LUN `<data_dir>/lun0.img` (1 GiB)
//! is used; without `--iqn` the default target name.

use std::path::PathBuf;

use crate::block::DirectMode;

use super::raw::{RawConfig, RawLun, RawServer, RawTarget};
use super::size::{parse_size, RawSize};
use super::{
    resolve, Config, ConfigError, DEFAULT_CLI_DATA_DIR, DEFAULT_LUN_SIZE, DEFAULT_TARGET_IQN,
};

/// The quick flags, as strings straight from the command line.
#[derive(Debug, Clone, Default)]
pub struct QuickFlags {
    pub listen: Vec<String>,
    pub advertise: Vec<String>,
    pub iqn: Option<String>,
    pub luns: Vec<String>,
    pub data_dir: Option<PathBuf>,
    /// `--metrics-listen ADDR`: serve `GET /metrics` there.
    pub metrics_listen: Option<String>,
    /// `--idle-poll-us US`: `[server] idle_poll_us`.
    pub idle_poll_us: Option<u32>,
}

/// A parsed `--lun` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunFlag {
    pub path: PathBuf,
    pub size: Option<u64>,
    pub serial: Option<String>,
    pub read_cache: Option<bool>,
    pub direct: Option<DirectMode>,
}

fn parse_on_off(whole: &str, key: &str, v: &str) -> Result<bool, String> {
    match v {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("`{whole}`: {key} is on or off, not `{v}`")),
    }
}

/// Parses `PATH[,size=SIZE][,serial=SERIAL][,read_cache=on|off][,direct=auto|on|off]`.
pub fn parse_lun_flag(s: &str) -> Result<LunFlag, String> {
    let mut parts = s.split(',');
    let path = parts.next().unwrap_or("");
    if path.is_empty() {
        return Err(format!("`{s}`: missing path"));
    }
    let mut flag = LunFlag {
        path: PathBuf::from(path),
        size: None,
        serial: None,
        read_cache: None,
        direct: None,
    };
    for p in parts {
        match p.split_once('=') {
            Some(("size", v)) => {
                flag.size = Some(parse_size(v).map_err(|m| format!("`{s}`: size {m}"))?)
            }
            Some(("serial", v)) => flag.serial = Some(v.to_string()),
            Some(("read_cache", v)) => flag.read_cache = Some(parse_on_off(s, "read_cache", v)?),
            Some(("direct", v)) => {
                flag.direct = Some(match v {
                    "auto" => DirectMode::Auto,
                    "on" | "true" => DirectMode::On,
                    "off" | "false" => DirectMode::Off,
                    _ => return Err(format!("`{s}`: direct is auto, on or off, not `{v}`")),
                })
            }
            _ => {
                return Err(format!(
                    "`{s}`: unknown option `{p}` (expected size=SIZE, serial=SERIAL, read_cache=on|off or direct=auto|on|off)"
                ))
            }
        }
    }
    Ok(flag)
}

impl Config {
    /// Builds and validates a configuration from the quick flags.
    pub fn from_flags(flags: &QuickFlags) -> Result<Config, ConfigError> {
        let data_dir = flags
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CLI_DATA_DIR));
        let mut luns = Vec::new();
        for (i, s) in flags.luns.iter().enumerate() {
            let f =
                parse_lun_flag(s).map_err(|m| ConfigError::invalid(format!("--lun[{i}]"), m))?;
            // On the command line a relative path means relative to the current directory
            // (config files resolve relative paths against `data_dir` instead).
            let path = if f.path.is_relative() {
                std::env::current_dir()
                    .map(|cwd| cwd.join(&f.path))
                    .unwrap_or(f.path)
            } else {
                f.path
            };
            luns.push(RawLun {
                path,
                size: f.size.map(RawSize::Bytes),
                serial: f.serial,
                read_cache: f.read_cache,
                direct: f.direct,
                ..RawLun::default()
            });
        }
        if luns.is_empty() {
            luns.push(RawLun {
                // Resolved against data_dir like any relative LUN path.
                path: PathBuf::from("lun0.img"),
                size: Some(RawSize::Bytes(DEFAULT_LUN_SIZE)),
                ..RawLun::default()
            });
        }
        let raw = RawConfig {
            server: RawServer {
                listen: (!flags.listen.is_empty()).then(|| flags.listen.clone()),
                advertise: (!flags.advertise.is_empty()).then(|| flags.advertise.clone()),
                data_dir: Some(data_dir),
                state_dir: None,
                naa_company_id: None,
                lock_wait_secs: None,
                io_threads: None,
                adaptive_depth: None,
                idle_poll_us: flags.idle_poll_us,
                metrics_listen: flags.metrics_listen.clone(),
            },
            iscsi: Default::default(),
            limits: Default::default(),
            target: vec![RawTarget {
                iqn: flags
                    .iqn
                    .clone()
                    .unwrap_or_else(|| DEFAULT_TARGET_IQN.to_string()),
                alias: None,
                tpgt: None,
                lun: luns,
                ..RawTarget::default()
            }],
            drbd: Default::default(),
            ..RawConfig::default()
        };
        resolve::resolve(raw, DEFAULT_CLI_DATA_DIR)
    }
}
