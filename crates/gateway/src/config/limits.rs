//! `[limits]`: resource caps that protect the gateway from too many or misbehaving
//! initiators (connection floods, session storms, peers that stop reading). Each cap has
//! a production default, so a config without the section is already protected.
//!
//! Worst-case memory for responses is `max_connections * max_outgoing_backlog` (4 GiB with
//! the defaults); command data held in memory (write payloads, read buffers) by all
//! connections together is bounded by `max_command_data`; idle pooled buffers kept for
//! reuse by each connection thread by `buffer_cache_per_thread`.

use serde::Serialize;

use super::raw::RawLimits;
use super::ConfigError;

/// The resolved `[limits]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// TCP connections served at once (all portals together), 1..=65536, default 128.
    /// Further connections are closed right after accept, with a log line.
    pub max_connections: u32,
    /// Normal sessions one initiator name may have at once (all targets together),
    /// 1..=4096, default 64. A further login gets status 0x0302 "out of resources".
    pub max_sessions_per_initiator: u32,
    /// Bytes of read data (Data-In) one connection may have produced but not yet handed to
    /// the socket, 1 MiB..=1 GiB, default 32 MiB. Commands beyond it wait until the peer
    /// takes its responses.
    pub max_outgoing_backlog: u64,
    /// Bytes of command data (write payloads being received or written, read buffers) all
    /// connections together may hold, 1 MiB..=16 GiB, default 48 MiB. Beyond it, connections
    /// that have commands running stop reading new ones (one with none running always reads,
    /// so every session makes progress).
    pub max_command_data: u64,
    /// Seconds a peer may take to accept queued responses before it is dropped, 1..=3600,
    /// default 30.
    pub write_timeout_secs: u32,
    /// Idle bytes each connection thread keeps in its buffer pool's free lists for reuse
    /// (`net/buffers.rs`), 0..=1 GiB; 0 keeps none (a buffer is unmapped when dropped).
    /// Unset (the default): half of `max_command_data` split over the connection threads,
    /// within 1-16 MiB per thread. The `GATEWAY_BUF_CACHE_KIB` environment variable, an A/B
    /// knob for benchmarks, overrides both.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffer_cache_per_thread: Option<u64>,
    /// Bytes of buffer memory each connection thread keeps registered with io_uring
    /// (`block/registered.rs`), rounded up to whole 2 MiB huge pages, 0..=1 GiB, default
    /// 8 MiB; 0 turns registered buffers off. The memory is pinned once the thread serves a
    /// connection and is never returned. The `GATEWAY_REGISTERED_KIB` environment variable,
    /// an A/B knob for benchmarks, overrides it.
    pub registered_buffers_per_thread: u64,
}

/// Largest `buffer_cache_per_thread`: idle memory per thread beyond it serves no purpose
/// (the command data of all connections is bounded by `max_command_data` anyway).
pub const MAX_BUFFER_CACHE_PER_THREAD: u64 = 1 << 30;

/// Largest `registered_buffers_per_thread`.
pub const MAX_REGISTERED_BUFFERS_PER_THREAD: u64 = 1 << 30;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 128,
            max_sessions_per_initiator: 64,
            max_outgoing_backlog: 32 << 20,
            max_command_data: 48 << 20,
            write_timeout_secs: 30,
            buffer_cache_per_thread: None,
            registered_buffers_per_thread: 8 << 20,
        }
    }
}

fn range<T: PartialOrd + std::fmt::Display + Copy>(
    key: &str,
    v: T,
    lo: T,
    hi: T,
) -> Result<T, ConfigError> {
    if v >= lo && v <= hi {
        Ok(v)
    } else {
        Err(ConfigError::invalid(
            format!("limits.{key}"),
            format!("{v} is outside {lo}..={hi}"),
        ))
    }
}

/// Validates `[limits]`, filling in defaults.
pub(super) fn resolve_limits(raw: RawLimits) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    let backlog = match raw.max_outgoing_backlog {
        None => d.max_outgoing_backlog,
        Some(s) => s
            .bytes()
            .map_err(|m| ConfigError::invalid("limits.max_outgoing_backlog", m))?,
    };
    let command_data = match raw.max_command_data {
        None => d.max_command_data,
        Some(s) => s
            .bytes()
            .map_err(|m| ConfigError::invalid("limits.max_command_data", m))?,
    };
    let buffer_cache = match raw.buffer_cache_per_thread {
        None => None,
        Some(s) => Some(range(
            "buffer_cache_per_thread",
            s.bytes()
                .map_err(|m| ConfigError::invalid("limits.buffer_cache_per_thread", m))?,
            0,
            MAX_BUFFER_CACHE_PER_THREAD,
        )?),
    };
    let registered = match raw.registered_buffers_per_thread {
        None => d.registered_buffers_per_thread,
        Some(s) => range(
            "registered_buffers_per_thread",
            s.bytes()
                .map_err(|m| ConfigError::invalid("limits.registered_buffers_per_thread", m))?,
            0,
            MAX_REGISTERED_BUFFERS_PER_THREAD,
        )?,
    };
    Ok(Limits {
        max_connections: range(
            "max_connections",
            raw.max_connections.unwrap_or(d.max_connections),
            1,
            65536,
        )?,
        max_sessions_per_initiator: range(
            "max_sessions_per_initiator",
            raw.max_sessions_per_initiator
                .unwrap_or(d.max_sessions_per_initiator),
            1,
            4096,
        )?,
        max_outgoing_backlog: range("max_outgoing_backlog", backlog, 1 << 20, 1 << 30)?,
        max_command_data: range("max_command_data", command_data, 1 << 20, 16 << 30)?,
        write_timeout_secs: range(
            "write_timeout_secs",
            raw.write_timeout_secs.unwrap_or(d.write_timeout_secs),
            1,
            3600,
        )?,
        buffer_cache_per_thread: buffer_cache,
        registered_buffers_per_thread: registered,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::size::RawSize;
    use super::*;

    #[test]
    fn defaults_fill_an_empty_section() {
        assert_eq!(
            resolve_limits(RawLimits::default()).unwrap(),
            Limits::default()
        );
    }

    #[test]
    fn values_are_taken_and_checked() {
        let l = resolve_limits(RawLimits {
            max_connections: Some(3),
            max_sessions_per_initiator: Some(2),
            max_outgoing_backlog: Some(RawSize::Text("4M".into())),
            max_command_data: Some(RawSize::Text("2G".into())),
            write_timeout_secs: Some(5),
            buffer_cache_per_thread: Some(RawSize::Text("2M".into())),
            registered_buffers_per_thread: Some(RawSize::Text("0".into())),
        })
        .unwrap();
        assert_eq!(l.buffer_cache_per_thread, Some(2 << 20));
        assert_eq!(l.registered_buffers_per_thread, 0);
        assert_eq!(
            (
                l.max_connections,
                l.max_sessions_per_initiator,
                l.max_outgoing_backlog,
                l.max_command_data,
                l.write_timeout_secs
            ),
            (3, 2, 4 << 20, 2 << 30, 5)
        );
        let bad = |r: RawLimits| resolve_limits(r).unwrap_err().to_string();
        assert_eq!(
            bad(RawLimits {
                max_connections: Some(0),
                ..RawLimits::default()
            }),
            "limits.max_connections: 0 is outside 1..=65536"
        );
        assert!(bad(RawLimits {
            max_outgoing_backlog: Some(RawSize::Text("4K".into())),
            ..RawLimits::default()
        })
        .starts_with("limits.max_outgoing_backlog: 4096 is outside"));
        assert!(bad(RawLimits {
            max_outgoing_backlog: Some(RawSize::Text("lots".into())),
            ..RawLimits::default()
        })
        .starts_with("limits.max_outgoing_backlog: `lots`"));
        assert!(bad(RawLimits {
            max_command_data: Some(RawSize::Text("17G".into())),
            ..RawLimits::default()
        })
        .starts_with("limits.max_command_data: 18253611008 is outside"));
        assert_eq!(
            bad(RawLimits {
                write_timeout_secs: Some(0),
                ..RawLimits::default()
            }),
            "limits.write_timeout_secs: 0 is outside 1..=3600"
        );
        assert_eq!(
            bad(RawLimits {
                buffer_cache_per_thread: Some(RawSize::Text("2G".into())),
                ..RawLimits::default()
            }),
            "limits.buffer_cache_per_thread: 2147483648 is outside 0..=1073741824"
        );
        assert!(bad(RawLimits {
            buffer_cache_per_thread: Some(RawSize::Text("-1".into())),
            ..RawLimits::default()
        })
        .starts_with("limits.buffer_cache_per_thread: `-1`"));
        assert_eq!(
            bad(RawLimits {
                registered_buffers_per_thread: Some(RawSize::Text("2G".into())),
                ..RawLimits::default()
            }),
            "limits.registered_buffers_per_thread: 2147483648 is outside 0..=1073741824"
        );
    }

    #[test]
    fn buffer_cache_per_thread_is_optional_and_zero_allowed() {
        let with = |v: Option<RawSize>| {
            resolve_limits(RawLimits {
                buffer_cache_per_thread: v,
                ..RawLimits::default()
            })
            .unwrap()
            .buffer_cache_per_thread
        };
        assert_eq!(with(None), None, "unset: derived at start");
        assert_eq!(with(Some(RawSize::Bytes(0))), Some(0), "0 = cache nothing");
        assert_eq!(with(Some(RawSize::Text("1G".into()))), Some(1 << 30));
        assert_eq!(with(Some(RawSize::Text("512K".into()))), Some(512 << 10));
    }
}
