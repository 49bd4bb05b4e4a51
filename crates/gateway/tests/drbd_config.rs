//! Config keys of DRBD awareness: `drbd_resource` per LUN, `[drbd]`, `server.lock_wait_secs`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use gateway::config::Config;

fn file(dir: &Path, server_extra: &str, top_extra: &str, lun_extra: &str) -> String {
    format!(
        "[server]\ndata_dir = \"{}\"\n{server_extra}\n{top_extra}\n[[target]]\niqn = \"iqn.2024-01.org.example:storage\"\n[[target.lun]]\npath = \"a.img\"\nsize = \"1M\"\n{lun_extra}\n",
        dir.display()
    )
}

fn load(text: &str) -> Result<Config, String> {
    Config::from_toml_str(text, "t.toml").map_err(|e| e.to_string())
}

#[test]
fn defaults() {
    let d = tempfile::tempdir().unwrap();
    let c = load(&file(d.path(), "", "", "")).unwrap();
    assert_eq!(c.server.lock_wait_secs, 10);
    assert_eq!(c.drbd.drbdsetup, PathBuf::from("drbdsetup"));
    assert!(c.drbd.auto_promote);
    assert_eq!(c.targets[0].luns[0].drbd_resource, None);
    assert!(!c.to_toml().contains("drbd_resource"));
}

#[test]
fn keys_are_read_and_rendered() {
    let d = tempfile::tempdir().unwrap();
    let c = load(&file(
        d.path(),
        "lock_wait_secs = 0",
        "[drbd]\ndrbdsetup = \"/opt/fake-drbdsetup\"\nauto_promote = false",
        "drbd_resource = \"r0\"",
    ))
    .unwrap();
    assert_eq!(c.server.lock_wait_secs, 0);
    assert_eq!(c.drbd.drbdsetup, PathBuf::from("/opt/fake-drbdsetup"));
    assert!(!c.drbd.auto_promote);
    assert_eq!(c.targets[0].luns[0].drbd_resource.as_deref(), Some("r0"));
    let again = load(&c.to_toml()).unwrap();
    assert_eq!(again.drbd, c.drbd);
    assert_eq!(
        again.targets[0].luns[0].drbd_resource.as_deref(),
        Some("r0")
    );
}

#[test]
fn bad_values_name_the_key() {
    let d = tempfile::tempdir().unwrap();
    let e = load(&file(d.path(), "", "", "drbd_resource = \"r 0\"")).unwrap_err();
    assert!(
        e.starts_with("target[0].lun[0].drbd_resource: `r 0` is not a DRBD resource name"),
        "{e}"
    );
    let e = load(&file(d.path(), "", "", "drbd_resource = \"\"")).unwrap_err();
    assert!(e.starts_with("target[0].lun[0].drbd_resource:"), "{e}");
    let e = load(&file(d.path(), "lock_wait_secs = 4000", "", "")).unwrap_err();
    assert_eq!(e, "server.lock_wait_secs: 4000 is outside 0..=3600");
    let e = load(&file(d.path(), "", "[drbd]\ndrbdsetup = \"\"", "")).unwrap_err();
    assert_eq!(e, "drbd.drbdsetup: empty path");
    let e = load(&file(d.path(), "", "[drbd]\nauto_promot = true", "")).unwrap_err();
    assert!(e.contains("unknown field `auto_promot`"), "{e}");
}
