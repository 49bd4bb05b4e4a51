//! Validation and defaulting: turns the raw TOML shape into a [`Config`], checking every
//! value and naming the offending key in the error. Also derives LUN identities.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::auth;
use super::names::normalize_iscsi_name;
use super::raw::{RawConfig, RawDrbd, RawIscsi, RawLun, RawServer, RawTarget};
use super::{
    Config, ConfigError, DiscoverySettings, DrbdSettings, IscsiTuning, LunSpec, ServerSettings,
    TargetSpec, DEFAULT_LISTEN, DEFAULT_METRICS_PORT, DEFAULT_PORT, DEFAULT_PRODUCT,
    DEFAULT_REVISION, DEFAULT_VENDOR,
};
use crate::identity;

/// Highest LUN number (flat space addressing, SAM-5).
const MAX_LUN: u16 = 16383;
/// Longest accepted serial number.
const MAX_SERIAL_LEN: usize = 64;

type R<T> = Result<T, ConfigError>;

pub(super) fn resolve(raw: RawConfig, default_data_dir: &str) -> R<Config> {
    let server = resolve_server(raw.server, default_data_dir)?;
    let iscsi = resolve_iscsi(raw.iscsi)?;
    let limits = super::limits::resolve_limits(raw.limits)?;
    let discovery = DiscoverySettings {
        auth: raw
            .discovery
            .auth
            .map(|a| auth::resolve_auth(a, "discovery.auth", &server.data_dir))
            .transpose()?,
    };
    if raw.target.is_empty() {
        return Err(ConfigError::invalid(
            "target",
            "no [[target]] defined (at least one is required)",
        ));
    }
    let mut targets = Vec::with_capacity(raw.target.len());
    let mut iqns = HashSet::new();
    let mut paths = HashSet::new();
    for (i, t) in raw.target.into_iter().enumerate() {
        let key = format!("target[{i}]");
        let spec = resolve_target(t, &key, &server, &mut paths)?;
        if !iqns.insert(spec.iqn.clone()) {
            return Err(ConfigError::invalid(
                format!("{key}.iqn"),
                format!("duplicate target name {}", spec.iqn),
            ));
        }
        targets.push(spec);
    }
    Ok(Config {
        server,
        iscsi,
        limits,
        drbd: resolve_drbd(raw.drbd)?,
        discovery,
        targets,
    })
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    parse_addr_with_port(s, DEFAULT_PORT)
}

/// `IP:PORT`, `[IPv6]:PORT`, or a bare IP with `default_port`.
fn parse_addr_with_port(s: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let bare = s.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => Ok(SocketAddr::new(ip, default_port)),
        Err(_) => Err(format!(
            "`{s}` is not an address (expected IP:PORT, [IPv6]:PORT or a bare IP)"
        )),
    }
}

fn parse_addrs(list: &[String], key: &str) -> R<Vec<SocketAddr>> {
    let mut out: Vec<SocketAddr> = Vec::with_capacity(list.len());
    for (i, s) in list.iter().enumerate() {
        let a = parse_addr(s).map_err(|m| ConfigError::invalid(format!("{key}[{i}]"), m))?;
        if out.contains(&a) {
            return Err(ConfigError::invalid(
                format!("{key}[{i}]"),
                format!("duplicate address {a}"),
            ));
        }
        out.push(a);
    }
    Ok(out)
}

fn resolve_server(raw: RawServer, default_data_dir: &str) -> R<ServerSettings> {
    let listen = match raw.listen {
        Some(l) if l.is_empty() => {
            return Err(ConfigError::invalid(
                "server.listen",
                "empty list: give at least one address",
            ))
        }
        Some(l) => parse_addrs(&l, "server.listen")?,
        None => parse_addrs(&[DEFAULT_LISTEN.to_string()], "server.listen")?,
    };
    let advertise = match raw.advertise {
        Some(a) if !a.is_empty() => parse_addrs(&a, "server.advertise")?,
        _ => listen.clone(),
    };
    let naa_company_id = raw
        .naa_company_id
        .unwrap_or(identity::DEFAULT_NAA_COMPANY_ID);
    if naa_company_id > 0x00FF_FFFF {
        return Err(ConfigError::invalid(
            "server.naa_company_id",
            format!("{naa_company_id:#x} does not fit in 24 bits"),
        ));
    }
    let data_dir = raw
        .data_dir
        .unwrap_or_else(|| PathBuf::from(default_data_dir));
    if data_dir.as_os_str().is_empty() {
        return Err(ConfigError::invalid("server.data_dir", "empty path"));
    }
    // Persistent-reservation state: relative paths are relative to data_dir. On a cluster
    // this must be on the replicated storage so a takeover finds the same reservations.
    let state_dir = match raw.state_dir {
        Some(p) if p.as_os_str().is_empty() => {
            return Err(ConfigError::invalid("server.state_dir", "empty path"))
        }
        Some(p) if p.is_relative() => data_dir.join(p),
        Some(p) => p,
        None => data_dir.join("state"),
    };
    let lock_wait_secs = raw.lock_wait_secs.unwrap_or(10);
    if lock_wait_secs > 3600 {
        return Err(ConfigError::invalid(
            "server.lock_wait_secs",
            format!("{lock_wait_secs} is outside 0..=3600"),
        ));
    }
    let io_threads = raw.io_threads.unwrap_or(0);
    if io_threads > MAX_IO_THREADS {
        return Err(ConfigError::invalid(
            "server.io_threads",
            format!("{io_threads} is outside 0..={MAX_IO_THREADS} (0 = one per CPU)"),
        ));
    }
    let idle_poll_us = raw.idle_poll_us.unwrap_or(0);
    if idle_poll_us > MAX_IDLE_POLL_US {
        return Err(ConfigError::invalid(
            "server.idle_poll_us",
            format!("{idle_poll_us} is outside 0..={MAX_IDLE_POLL_US} (0 = off)"),
        ));
    }
    let metrics_listen = raw
        .metrics_listen
        .as_deref()
        .map(|s| resolve_metrics_listen(s, &listen))
        .transpose()?;
    Ok(ServerSettings {
        listen,
        advertise,
        data_dir,
        state_dir,
        naa_company_id,
        lock_wait_secs,
        io_threads,
        adaptive_depth: raw.adaptive_depth.unwrap_or(true),
        idle_poll_us,
        metrics_listen,
    })
}

/// `server.metrics_listen`: an address like the portals (a bare IP gets port 9470), not one
/// of the portals, nor port 0 (the endpoint must be found by a scraper).
fn resolve_metrics_listen(s: &str, listen: &[SocketAddr]) -> R<SocketAddr> {
    const KEY: &str = "server.metrics_listen";
    let a =
        parse_addr_with_port(s, DEFAULT_METRICS_PORT).map_err(|m| ConfigError::invalid(KEY, m))?;
    if a.port() == 0 {
        return Err(ConfigError::invalid(
            KEY,
            format!("`{s}`: port 0 is not allowed"),
        ));
    }
    if let Some(p) = listen.iter().find(|p| {
        p.port() == a.port()
            && (p.ip() == a.ip() || p.ip().is_unspecified() || a.ip().is_unspecified())
    }) {
        return Err(ConfigError::invalid(
            KEY,
            format!("{a} is also an iSCSI portal (server.listen {p})"),
        ));
    }
    Ok(a)
}

/// More connection threads than this is a typo, not a machine.
const MAX_IO_THREADS: u32 = 1024;
/// `server.idle_poll_us` above a millisecond would be spinning, not polling for a reply.
const MAX_IDLE_POLL_US: u32 = 1000;

fn resolve_drbd(raw: RawDrbd) -> R<DrbdSettings> {
    let d = DrbdSettings::default();
    let drbdsetup = raw.drbdsetup.unwrap_or(d.drbdsetup);
    if drbdsetup.as_os_str().is_empty() {
        return Err(ConfigError::invalid("drbd.drbdsetup", "empty path"));
    }
    Ok(DrbdSettings {
        drbdsetup,
        auto_promote: raw.auto_promote.unwrap_or(d.auto_promote),
    })
}

/// A DRBD resource name as it appears after `name:` in `drbdsetup events2`: 1..=64
/// printable ASCII characters, no space or colon.
fn check_drbd_resource(key: &str, v: &str) -> R<()> {
    if v.is_empty() || v.len() > 64 || !v.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b':') {
        return Err(ConfigError::invalid(
            key,
            format!("`{v}` is not a DRBD resource name (1..=64 printable characters, no space or colon)"),
        ));
    }
    Ok(())
}

fn in_range(key: &str, v: u32, lo: u32, hi: u32) -> R<u32> {
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(ConfigError::invalid(
            format!("iscsi.{key}"),
            format!("{v} is outside {lo}..={hi}"),
        ))
    }
}

fn resolve_iscsi(raw: RawIscsi) -> R<IscsiTuning> {
    let d = IscsiTuning::default();
    const MAX24: u32 = 16_777_215;
    let t = IscsiTuning {
        max_recv_data_segment_length: in_range(
            "max_recv_data_segment_length",
            raw.max_recv_data_segment_length
                .unwrap_or(d.max_recv_data_segment_length),
            512,
            MAX24,
        )?,
        max_burst_length: in_range(
            "max_burst_length",
            raw.max_burst_length.unwrap_or(d.max_burst_length),
            512,
            MAX24,
        )?,
        first_burst_length: in_range(
            "first_burst_length",
            raw.first_burst_length.unwrap_or(d.first_burst_length),
            512,
            MAX24,
        )?,
        max_outstanding_r2t: in_range(
            "max_outstanding_r2t",
            raw.max_outstanding_r2t.unwrap_or(d.max_outstanding_r2t),
            1,
            65535,
        )?,
        immediate_data: raw.immediate_data.unwrap_or(d.immediate_data),
        initial_r2t: raw.initial_r2t.unwrap_or(d.initial_r2t),
        cmdsn_window: in_range(
            "cmdsn_window",
            raw.cmdsn_window.unwrap_or(d.cmdsn_window),
            1,
            4096,
        )?,
        nop_interval_secs: in_range(
            "nop_interval_secs",
            raw.nop_interval_secs.unwrap_or(d.nop_interval_secs),
            0,
            3600,
        )?,
        nop_timeout_secs: in_range(
            "nop_timeout_secs",
            raw.nop_timeout_secs.unwrap_or(d.nop_timeout_secs),
            1,
            3600,
        )?,
        login_timeout_secs: in_range(
            "login_timeout_secs",
            raw.login_timeout_secs.unwrap_or(d.login_timeout_secs),
            1,
            3600,
        )?,
    };
    if t.first_burst_length > t.max_burst_length {
        return Err(ConfigError::invalid(
            "iscsi.first_burst_length",
            format!(
                "{} is larger than max_burst_length ({})",
                t.first_burst_length, t.max_burst_length
            ),
        ));
    }
    Ok(t)
}

fn resolve_target(
    raw: RawTarget,
    key: &str,
    server: &ServerSettings,
    paths: &mut HashSet<PathBuf>,
) -> R<TargetSpec> {
    let iqn = normalize_iscsi_name(&raw.iqn)
        .map_err(|m| ConfigError::invalid(format!("{key}.iqn"), m))?;
    if let Some(a) = &raw.alias {
        check_text(&format!("{key}.alias"), a, 255)?;
    }
    let tpgt = raw.tpgt.unwrap_or(1);
    if tpgt == 0 {
        return Err(ConfigError::invalid(
            format!("{key}.tpgt"),
            "must be 1..=65535",
        ));
    }
    if raw.lun.is_empty() {
        return Err(ConfigError::invalid(
            format!("{key}.lun"),
            "no [[target.lun]] defined (at least one is required)",
        ));
    }
    let mut luns: Vec<LunSpec> = Vec::with_capacity(raw.lun.len());
    for (j, l) in raw.lun.into_iter().enumerate() {
        let lkey = format!("{key}.lun[{j}]");
        let default_number = u16::try_from(j).unwrap_or(u16::MAX);
        let spec = resolve_lun(l, &lkey, default_number, &iqn, server)?;
        if let Some(other) = luns.iter().find(|o| o.lun == spec.lun) {
            return Err(ConfigError::invalid(
                format!("{lkey}.lun"),
                format!(
                    "LUN number {} is used twice (also by {})",
                    spec.lun,
                    other.path.display()
                ),
            ));
        }
        let canon = std::fs::canonicalize(&spec.path).unwrap_or_else(|_| spec.path.clone());
        if !paths.insert(canon) {
            return Err(ConfigError::invalid(
                format!("{lkey}.path"),
                format!("{} is already used by another LUN", spec.path.display()),
            ));
        }
        luns.push(spec);
    }
    luns.sort_by_key(|l| l.lun);
    Ok(TargetSpec {
        iqn,
        alias: raw.alias,
        tpgt,
        allowed_initiators: auth::resolve_initiators(raw.allowed_initiators, key)?,
        allowed_networks: auth::resolve_networks(raw.allowed_networks, key)?,
        luns,
        auth: raw
            .auth
            .map(|a| auth::resolve_auth(a, &format!("{key}.auth"), &server.data_dir))
            .transpose()?,
    })
}

/// Printable ASCII (space allowed), 1..=max bytes.
fn check_text(key: &str, v: &str, max: usize) -> R<()> {
    if v.is_empty() || v.len() > max {
        return Err(ConfigError::invalid(
            key,
            format!("`{v}` must be 1..={max} characters"),
        ));
    }
    if !v.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(ConfigError::invalid(
            key,
            format!("`{v}` must be printable ASCII"),
        ));
    }
    Ok(())
}

fn resolve_lun(
    raw: RawLun,
    key: &str,
    default_number: u16,
    iqn: &str,
    server: &ServerSettings,
) -> R<LunSpec> {
    let lun = raw.lun.unwrap_or(default_number);
    if lun > MAX_LUN {
        return Err(ConfigError::invalid(
            format!("{key}.lun"),
            format!("{lun} is above the maximum LUN number {MAX_LUN}"),
        ));
    }
    let block_size = raw.block_size;
    if let Some(bs) = block_size {
        if bs != 512 && bs != 4096 {
            return Err(ConfigError::invalid(
                format!("{key}.block_size"),
                format!("{bs} is not supported (use 512 or 4096)"),
            ));
        }
    }
    let size = match &raw.size {
        None => None,
        Some(s) => {
            let b = s
                .bytes()
                .map_err(|m| ConfigError::invalid(format!("{key}.size"), m))?;
            let unit = u64::from(block_size.unwrap_or(4096).max(512));
            if b == 0 || !b.is_multiple_of(unit) {
                return Err(ConfigError::invalid(
                    format!("{key}.size"),
                    format!("{b} bytes is not a positive multiple of {unit}"),
                ));
            }
            Some(b)
        }
    };
    if let Some(r) = &raw.drbd_resource {
        check_drbd_resource(&format!("{key}.drbd_resource"), r)?;
    }
    let drbd_resource = raw.drbd_resource;
    let path = resolve_path(&raw.path, &server.data_dir);
    check_backing(&path, key, size, raw.read_only.unwrap_or(false))?;
    let serial = match raw.serial {
        Some(s) => {
            if s.is_empty()
                || s.len() > MAX_SERIAL_LEN
                || !s.bytes().all(|b| (0x21..0x7f).contains(&b))
            {
                return Err(ConfigError::invalid(
                    format!("{key}.serial"),
                    format!("`{s}` must be 1..={MAX_SERIAL_LEN} printable ASCII characters without spaces"),
                ));
            }
            s
        }
        None => identity::derive_serial(iqn, lun),
    };
    let naa = match raw.naa {
        Some(h) => {
            let h = h.strip_prefix("naa.").unwrap_or(&h).to_ascii_lowercase();
            match identity::parse_naa_hex(&h) {
                Some(n) if h.starts_with('6') => n,
                _ => {
                    return Err(ConfigError::invalid(
                        format!("{key}.naa"),
                        format!("`{h}` must be 32 hex digits starting with 6 (NAA IEEE Registered Extended)"),
                    ))
                }
            }
        }
        None => identity::derive_naa(server.naa_company_id, &serial),
    };
    let text = |name: &str, v: Option<String>, default: &str, max: usize| -> R<String> {
        let v = v.unwrap_or_else(|| default.to_string());
        check_text(&format!("{key}.{name}"), &v, max)?;
        Ok(v)
    };
    Ok(LunSpec {
        lun,
        path,
        size,
        serial,
        naa,
        vendor: text("vendor", raw.vendor, DEFAULT_VENDOR, 8)?,
        product: text("product", raw.product, DEFAULT_PRODUCT, 16)?,
        revision: text("revision", raw.revision, DEFAULT_REVISION, 4)?,
        block_size,
        read_only: raw.read_only.unwrap_or(false),
        write_cache: raw.write_cache,
        unmap: raw.unmap,
        direct: raw.direct.unwrap_or_default(),
        read_cache: raw.read_cache.unwrap_or(false),
        drbd_resource,
    })
}

fn resolve_path(p: &Path, data_dir: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        data_dir.join(p)
    }
}

fn check_backing(path: &Path, key: &str, size: Option<u64>, read_only: bool) -> R<()> {
    let pkey = format!("{key}.path");
    if path.as_os_str().is_empty() {
        return Err(ConfigError::invalid(pkey, "empty path"));
    }
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_block_device() => {
            if size.is_some() {
                return Err(ConfigError::invalid(
                    format!("{key}.size"),
                    format!(
                        "{} is a block device; size only applies to files",
                        path.display()
                    ),
                ));
            }
            Ok(())
        }
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(ConfigError::invalid(
            pkey,
            format!(
                "{} is neither a regular file nor a block device",
                path.display()
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match size {
            None => Err(ConfigError::invalid(
                pkey,
                format!(
                    "file {} does not exist and no size given to create it",
                    path.display()
                ),
            )),
            Some(_) if read_only => Err(ConfigError::invalid(
                pkey,
                format!(
                    "file {} does not exist and read_only LUNs are never created",
                    path.display()
                ),
            )),
            Some(_) => Ok(()),
        },
        Err(e) => Err(ConfigError::invalid(
            pkey,
            format!("{}: {e}", path.display()),
        )),
    }
}
