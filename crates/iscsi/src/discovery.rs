//! SendTargets (RFC 7143 Appendix C): builds the TargetName/TargetAddress answer for a
//! discovery session (all targets) or a normal session (only its own target). Targets the
//! `visible` predicate refuses (access control, decided by the gateway) are never listed.

use crate::config::{ServerConfig, SessionType, TargetConfig};

/// Largest SendTargets answer we build; longer lists are truncated at a target boundary.
pub const MAX_SENDTARGETS_LEN: usize = 64 * 1024;

fn looks_like_name(v: &str) -> bool {
    v.starts_with("iqn.") || v.starts_with("eui.") || v.starts_with("naa.")
}

/// The answer text to `SendTargets=<value>`, as key/value pairs. `None` when the value is
/// invalid (answer `SendTargets=Reject`). Only targets for which `visible` is true appear.
pub fn send_targets(
    config: &ServerConfig,
    session_type: SessionType,
    session_target: Option<&str>,
    value: &str,
    visible: &dyn Fn(&TargetConfig) -> bool,
) -> Option<Vec<(String, String)>> {
    let selected: Vec<_> = match (value, session_type) {
        ("All", SessionType::Discovery) => config.targets.iter().collect(),
        ("All", SessionType::Normal) | ("", SessionType::Normal) => config
            .targets
            .iter()
            .filter(|t| Some(t.name.as_str()) == session_target)
            .collect(),
        ("", SessionType::Discovery) => Vec::new(),
        (name, _) if looks_like_name(name) => {
            config.targets.iter().filter(|t| t.name == name).collect()
        }
        _ => return None,
    };
    let mut out = Vec::new();
    let mut len = 0usize;
    for t in selected.into_iter().filter(|t| visible(t)) {
        let mut entry = vec![("TargetName".to_string(), t.name.clone())];
        for p in &t.portals {
            entry.push(("TargetAddress".into(), format!("{},{}", p, t.tpgt)));
        }
        let elen: usize = entry.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
        if len + elen > MAX_SENDTARGETS_LEN {
            break;
        }
        len += elen;
        out.extend(entry);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Limits, TargetConfig};

    fn all(_: &TargetConfig) -> bool {
        true
    }

    fn cfg() -> ServerConfig {
        ServerConfig {
            targets: vec![
                TargetConfig {
                    name: "iqn.a:1".into(),
                    alias: None,
                    tpgt: 1,
                    portals: vec!["10.0.0.1:3260".into(), "[fe80::1]:3260".into()],
                },
                TargetConfig {
                    name: "iqn.a:2".into(),
                    alias: None,
                    tpgt: 2,
                    portals: vec!["10.0.0.2:3260".into()],
                },
            ],
            limits: Limits::default(),
        }
    }

    #[test]
    fn discovery_all() {
        let a = send_targets(&cfg(), SessionType::Discovery, None, "All", &all).unwrap();
        assert_eq!(a.len(), 5);
        assert_eq!(a[0], ("TargetName".into(), "iqn.a:1".into()));
        assert_eq!(a[2], ("TargetAddress".into(), "[fe80::1]:3260,1".into()));
        assert_eq!(a[4], ("TargetAddress".into(), "10.0.0.2:3260,2".into()));
    }

    #[test]
    fn normal_session_only_own_target() {
        let a = send_targets(&cfg(), SessionType::Normal, Some("iqn.a:2"), "All", &all).unwrap();
        assert_eq!(a.len(), 2);
        let a = send_targets(&cfg(), SessionType::Normal, Some("iqn.a:2"), "", &all).unwrap();
        assert_eq!(a.len(), 2);
        let a = send_targets(
            &cfg(),
            SessionType::Normal,
            Some("iqn.a:2"),
            "iqn.a:1",
            &all,
        )
        .unwrap();
        assert_eq!(a[0].1, "iqn.a:1");
        let a = send_targets(&cfg(), SessionType::Normal, None, "iqn.none", &all).unwrap();
        assert!(a.is_empty());
    }

    #[test]
    fn invalid_values() {
        for v in ["Alle", "A", "aLL"] {
            assert_eq!(
                send_targets(&cfg(), SessionType::Discovery, None, v, &all),
                None,
                "{v}"
            );
        }
    }

    #[test]
    fn hidden_targets_are_not_listed() {
        let only_2 = |t: &TargetConfig| t.name == "iqn.a:2";
        let a = send_targets(&cfg(), SessionType::Discovery, None, "All", &only_2).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0], ("TargetName".into(), "iqn.a:2".into()));
        let a = send_targets(&cfg(), SessionType::Discovery, None, "iqn.a:1", &only_2).unwrap();
        assert!(a.is_empty());
    }
}
