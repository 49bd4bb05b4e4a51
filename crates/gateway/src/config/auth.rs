//! `[target.auth]` / `[discovery.auth]` (CHAP credentials) and `allowed_initiators` /
//! `allowed_networks`: validation and secret loading. Secrets are read from files only, and
//! only from files no one but the owner can read or write (mode & 0o077 == 0); they are kept
//! as [`iscsi::ChapSecret`], whose `Debug` is redacted, and never serialized.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use iscsi::{ChapAlgorithm, ChapConfig, ChapCredentials, ChapSecret};
use serde::Serialize;

use super::cidr::IpNetwork;
use super::names::normalize_iscsi_name;
use super::raw::RawAuth;
use super::ConfigError;

/// Shortest accepted secret (RFC 7143 §12.1.3 asks for at least 96 bits).
pub const MIN_SECRET_LEN: usize = 12;
/// Longest accepted secret (open-iscsi and libiscsi keep at most 255 bytes).
pub const MAX_SECRET_LEN: usize = 255;

type R<T> = Result<T, ConfigError>;

/// Resolved CHAP settings of a target or of discovery.
#[derive(Debug, Clone, Serialize)]
pub struct AuthSpec {
    /// The name the initiator must send (CHAP_N).
    pub chap_user: String,
    pub chap_secret_file: PathBuf,
    #[serde(skip)]
    pub chap_secret: ChapSecret,
    /// The target's own name for mutual CHAP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mutual_user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mutual_secret_file: Option<PathBuf>,
    #[serde(skip)]
    pub mutual_secret: Option<ChapSecret>,
    /// Allowed algorithms ("SHA-256", "MD5"); the strongest the initiator offers is used.
    #[serde(serialize_with = "ser_algs")]
    pub chap_algorithms: Vec<ChapAlgorithm>,
}

fn ser_algs<S: serde::Serializer>(v: &[ChapAlgorithm], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|a| a.name()))
}

impl AuthSpec {
    /// The protocol's view: what the CHAP exchange checks.
    pub fn chap_config(&self) -> Arc<ChapConfig> {
        Arc::new(ChapConfig {
            initiator: ChapCredentials {
                name: self.chap_user.clone(),
                secret: self.chap_secret.clone(),
            },
            target: match (&self.mutual_user, &self.mutual_secret) {
                (Some(name), Some(secret)) => Some(ChapCredentials {
                    name: name.clone(),
                    secret: secret.clone(),
                }),
                _ => None,
            },
            algorithms: self.chap_algorithms.clone(),
        })
    }
}

fn invalid(key: &str, field: &str, msg: impl Into<String>) -> ConfigError {
    ConfigError::invalid(format!("{key}.{field}"), msg)
}

fn check_user(key: &str, field: &str, v: &str) -> R<()> {
    if v.is_empty() || v.len() > 255 || !v.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Err(invalid(
            key,
            field,
            format!("`{v}` must be 1..=255 printable ASCII characters without spaces"),
        ));
    }
    Ok(())
}

/// Reads a secret file: owner-only permissions, one trailing newline stripped, 12..=255 bytes.
pub fn read_secret_file(path: &Path) -> Result<ChapSecret, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{shown} is readable or writable by group/others (mode {mode:03o}); run `chmod 600 {shown}`"
        ));
    }
    let mut bytes = std::fs::read(path).map_err(|e| format!("{shown}: {e}"))?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&bytes.len()) {
        return Err(format!(
            "the secret in {shown} is {} bytes; CHAP secrets must be {MIN_SECRET_LEN}..={MAX_SECRET_LEN} bytes",
            bytes.len()
        ));
    }
    Ok(ChapSecret::new(bytes))
}

/// Validates an auth section; `key` is e.g. `target[0].auth`. Relative secret file paths are
/// relative to `data_dir`.
pub fn resolve_auth(raw: RawAuth, key: &str, data_dir: &Path) -> R<AuthSpec> {
    let secret = |field: &str, p: &Path| -> R<(PathBuf, ChapSecret)> {
        let path = if p.is_absolute() {
            p.to_path_buf()
        } else {
            data_dir.join(p)
        };
        let s = read_secret_file(&path).map_err(|m| invalid(key, field, m))?;
        Ok((path, s))
    };
    let (Some(chap_user), Some(file)) = (raw.chap_user, raw.chap_secret_file) else {
        return Err(ConfigError::invalid(
            key,
            "chap_user and chap_secret_file are both required",
        ));
    };
    check_user(key, "chap_user", &chap_user)?;
    let (chap_secret_file, chap_secret) = secret("chap_secret_file", &file)?;
    let (mutual_user, mutual_secret_file, mutual_secret) =
        match (raw.mutual_user, raw.mutual_secret_file) {
            (None, None) => (None, None, None),
            (Some(u), Some(f)) => {
                check_user(key, "mutual_user", &u)?;
                let (path, s) = secret("mutual_secret_file", &f)?;
                if s.same_as(&chap_secret) {
                    return Err(invalid(
                        key,
                        "mutual_secret_file",
                        "the mutual (target) secret must differ from the initiator's chap secret",
                    ));
                }
                (Some(u), Some(path), Some(s))
            }
            _ => {
                return Err(ConfigError::invalid(
                    key,
                    "mutual_user and mutual_secret_file go together",
                ))
            }
        };
    let names = raw
        .chap_algorithms
        .unwrap_or_else(|| vec!["SHA-256".into(), "MD5".into()]);
    if names.is_empty() {
        return Err(invalid(
            key,
            "chap_algorithms",
            "empty list (allow \"SHA-256\", \"MD5\" or both)",
        ));
    }
    let mut chap_algorithms = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let a = ChapAlgorithm::from_name(n).ok_or_else(|| {
            invalid(
                key,
                &format!("chap_algorithms[{i}]"),
                format!("`{n}` is not supported (use \"SHA-256\" or \"MD5\")"),
            )
        })?;
        if chap_algorithms.contains(&a) {
            return Err(invalid(
                key,
                &format!("chap_algorithms[{i}]"),
                format!("{} is listed twice", a.name()),
            ));
        }
        chap_algorithms.push(a);
    }
    Ok(AuthSpec {
        chap_user,
        chap_secret_file,
        chap_secret,
        mutual_user,
        mutual_secret_file,
        mutual_secret,
        chap_algorithms,
    })
}

/// `allowed_initiators`: normalised iSCSI names, no duplicates.
pub fn resolve_initiators(list: Option<Vec<String>>, key: &str) -> R<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for (i, n) in list.unwrap_or_default().iter().enumerate() {
        let k = format!("{key}.allowed_initiators[{i}]");
        let name = normalize_iscsi_name(n).map_err(|m| ConfigError::invalid(&k, m))?;
        if out.contains(&name) {
            return Err(ConfigError::invalid(k, format!("{name} is listed twice")));
        }
        out.push(name);
    }
    Ok(out)
}

/// `allowed_networks`: CIDR prefixes or single addresses.
pub fn resolve_networks(list: Option<Vec<String>>, key: &str) -> R<Vec<IpNetwork>> {
    list.unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            IpNetwork::parse(s)
                .map_err(|m| ConfigError::invalid(format!("{key}.allowed_networks[{i}]"), m))
        })
        .collect()
}
