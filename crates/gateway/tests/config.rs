//! Config parsing and validation: a good file, the embedded default, quick flags, and
//! the exact message of each bad case.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use gateway::block::DirectMode;
use gateway::config::{parse_lun_flag, Config, LunFlag, QuickFlags, DEFAULT_TARGET_IQN};
use gateway::identity;

fn err(text: &str) -> String {
    Config::from_toml_str(text, "t.toml")
        .unwrap_err()
        .to_string()
}

fn with_lun(dir: &Path, lun_extra: &str) -> String {
    format!(
        "[server]\ndata_dir = \"{}\"\n[[target]]\niqn = \"iqn.2024-01.org.example:storage\"\n[[target.lun]]\npath = \"a.img\"\nsize = \"1M\"\n{lun_extra}\n",
        dir.display()
    )
}

#[test]
fn good_file() {
    let d = tempfile::tempdir().unwrap();
    let dev = d.path().join("existing.img");
    std::fs::write(&dev, vec![0u8; 4096]).unwrap();
    let text = format!(
        r#"
[server]
listen = ["127.0.0.1:3260", "[::1]:3261", "10.0.0.1"]
advertise = ["192.0.2.10:3260"]
data_dir = "{dir}"
naa_company_id = 0x001405

[iscsi]
max_burst_length = 262144
first_burst_length = 65536
immediate_data = false

[limits]
buffer_cache_per_thread = "4M"

[[target]]
iqn = "IQN.2024-01.Org.Example:Storage"
alias = "shared storage"
tpgt = 2

[[target.lun]]
path = "{dev}"
serial = "MYSERIAL1"
vendor = "ACME"
write_cache = false
direct = "off"

[[target.lun]]
path = "data.img"
size = "1G"
block_size = 4096
lun = 5
naa = "6001405AAAAAAAAAAAAAAAAAAAAAAAAA"

[[target]]
iqn = "iqn.2024-01.org.example:second"
[[target.lun]]
path = "second.img"
size = 1048576
read_only = false
"#,
        dir = d.path().display(),
        dev = dev.display()
    );
    let c = Config::from_toml_str(&text, "good.toml").unwrap();
    assert_eq!(c.server.listen.len(), 3);
    assert_eq!(c.server.listen[2].to_string(), "10.0.0.1:3260");
    assert_eq!(c.server.advertise[0].to_string(), "192.0.2.10:3260");
    assert_eq!(c.server.naa_company_id, 0x001405);
    assert_eq!(c.iscsi.max_burst_length, 262144);
    assert!(!c.iscsi.immediate_data);
    assert_eq!(c.iscsi.cmdsn_window, 128);
    assert_eq!(c.limits.buffer_cache_per_thread, Some(4 << 20));
    let t = &c.targets[0];
    assert_eq!(t.iqn, "iqn.2024-01.org.example:storage");
    assert_eq!(t.tpgt, 2);
    assert_eq!(t.alias.as_deref(), Some("shared storage"));
    let l0 = &t.luns[0];
    assert_eq!(l0.lun, 0);
    assert_eq!(l0.serial, "MYSERIAL1");
    assert_eq!(l0.naa, identity::derive_naa(0x001405, "MYSERIAL1"));
    assert_eq!(l0.vendor, "ACME");
    assert_eq!(l0.product, "iSCSI LUN");
    assert_eq!(l0.write_cache, Some(false));
    assert_eq!(l0.direct, DirectMode::Off);
    let l5 = &t.luns[1];
    assert_eq!(l5.lun, 5);
    assert_eq!(l5.path, d.path().join("data.img"));
    assert_eq!(l5.size, Some(1 << 30));
    assert_eq!(l5.block_size, Some(4096));
    assert_eq!(l5.naa_hex(), "6001405aaaaaaaaaaaaaaaaaaaaaaaaa");
    assert_eq!(
        l5.serial,
        identity::derive_serial("iqn.2024-01.org.example:storage", 5)
    );
    assert_eq!(l5.open_options().create_size, Some(1 << 30));
    assert_eq!(c.targets[1].luns[0].size, Some(1 << 20));
    // Rendering for check-config works and contains the derived identity.
    let out = c.to_toml();
    assert!(out.contains(&l5.serial), "{out}");
    assert!(out.contains("6001405aaaaaaaaaaaaaaaaaaaaaaaaa"), "{out}");
    assert!(out.contains("buffer_cache_per_thread = 4194304"), "{out}");
}

#[test]
fn buffer_cache_per_thread() {
    let d = tempfile::tempdir().unwrap();
    let with_limits = |limits: &str| format!("[limits]\n{limits}\n{}", with_lun(d.path(), ""));
    let c = Config::from_toml_str(&with_limits(""), "t.toml").unwrap();
    assert_eq!(
        c.limits.buffer_cache_per_thread, None,
        "unset: derived at start"
    );
    assert!(!c.to_toml().contains("buffer_cache_per_thread"));
    let c = Config::from_toml_str(&with_limits("buffer_cache_per_thread = 0"), "t.toml").unwrap();
    assert_eq!(
        c.limits.buffer_cache_per_thread,
        Some(0),
        "0 = keep no idle buffers"
    );
    let c =
        Config::from_toml_str(&with_limits("buffer_cache_per_thread = \"1G\""), "t.toml").unwrap();
    assert_eq!(c.limits.buffer_cache_per_thread, Some(1 << 30));
    for (value, want) in [
        (
            "\"2G\"",
            "limits.buffer_cache_per_thread: 2147483648 is outside 0..=1073741824",
        ),
        (
            "\"12X\"",
            "limits.buffer_cache_per_thread: `12X`: unknown unit",
        ),
        // Not a size at all: serde names the line (as for every size key).
        ("-1", "t.toml:2:"),
    ] {
        let msg = err(&with_limits(&format!("buffer_cache_per_thread = {value}")));
        assert!(msg.contains(want), "want `{want}` in `{msg}`");
        assert!(!msg.contains('\n'), "multi-line message: {msg}");
    }
}

#[test]
fn same_config_same_identity() {
    let d = tempfile::tempdir().unwrap();
    let text = with_lun(d.path(), "");
    let a = Config::from_toml_str(&text, "a").unwrap();
    let b = Config::from_toml_str(&text, "b").unwrap();
    assert_eq!(a.targets[0].luns[0].serial, b.targets[0].luns[0].serial);
    assert_eq!(a.targets[0].luns[0].naa, b.targets[0].luns[0].naa);
    assert_eq!(a.server.listen[0].to_string(), "127.0.0.1:3260");
    assert_eq!(a.server.advertise, a.server.listen);
}

#[test]
fn bad_cases_name_the_key() {
    let d = tempfile::tempdir().unwrap();
    let dd = d.path().display().to_string();
    let cases: Vec<(String, &str)> = vec![
        (format!("[server]\ndata_dir = \"{dd}\"\n[[target]]\niqn = \"iqn.2024-01.org.example:s\"\n[[target.lun]]\npath = \"/nonexistent/x.img\"\n"),
         "target[0].lun[0].path: file /nonexistent/x.img does not exist and no size given to create it"),
        (with_lun(d.path(), "pathh = \"x\""), "unknown field `pathh`"),
        (format!("[server]\nlisten = [\"nope\"]\n[[target]]\niqn = \"iqn.2024-01.org.e:s\"\n[[target.lun]]\npath = \"{dd}/a\"\nsize = \"1M\"\n"),
         "server.listen[0]: `nope` is not an address"),
        (format!("[server]\nlisten = []\n[[target]]\niqn = \"iqn.2024-01.org.e:s\"\n[[target.lun]]\npath = \"{dd}/a\"\nsize = \"1M\"\n"),
         "server.listen: empty list"),
        ("[server]\nlisten = [\"127.0.0.1:3260\"]\n".to_string(), "target: no [[target]] defined"),
        (format!("[[target]]\niqn = \"iqn.2024-13.org.e:s\"\n[[target.lun]]\npath = \"{dd}/a\"\nsize = \"1M\"\n"),
         "target[0].iqn: `iqn.2024-13.org.e:s` is not a valid iqn name: month"),
        ("[[target]]\niqn = \"iqn.2024-01.org.e:s\"\n".to_string(), "target[0].lun: no [[target.lun]] defined"),
        (with_lun(d.path(), "block_size = 1024"), "target[0].lun[0].block_size: 1024 is not supported"),
        (with_lun(d.path(), "serial = \"has space\""), "target[0].lun[0].serial:"),
        (with_lun(d.path(), "naa = \"1234\""), "target[0].lun[0].naa:"),
        (with_lun(d.path(), "vendor = \"WAYTOOLONGVENDOR\""), "target[0].lun[0].vendor:"),
        (with_lun(d.path(), "lun = 20000"), "target[0].lun[0].lun: 20000 is above"),
        (with_lun(d.path(), "direct = \"maybe\""), "unknown variant `maybe`"),
        (format!("[server]\ndata_dir = \"{dd}\"\n[[target]]\niqn = \"iqn.2024-01.org.e:s\"\n[[target.lun]]\npath = \"a\"\nsize = \"1Q\"\n"),
         "target[0].lun[0].size: `1Q`: unknown unit"),
        (format!("[server]\ndata_dir = \"{dd}\"\n[[target]]\niqn = \"iqn.2024-01.org.e:s\"\n[[target.lun]]\npath = \"a\"\nsize = 1000\n"),
         "target[0].lun[0].size: 1000 bytes is not a positive multiple of 4096"),
        (format!("[server]\ndata_dir = \"{dd}\"\n[[target]]\niqn = \"iqn.2024-01.org.e:s\"\n[[target.lun]]\npath = \"a\"\nsize = \"1M\"\n[[target.lun]]\npath = \"b\"\nsize = \"1M\"\nlun = 0\n"),
         "target[0].lun[1].lun: LUN number 0 is used twice"),
        (format!("[server]\ndata_dir = \"{dd}\"\n[[target]]\niqn = \"iqn.2024-01.org.e:s\"\n[[target.lun]]\npath = \"a\"\nsize = \"1M\"\n[[target.lun]]\npath = \"a\"\nsize = \"1M\"\n"),
         "target[0].lun[1].path:"),
        (format!("[server]\ndata_dir = \"{dd}\"\n[[target]]\niqn = \"iqn.2024-01.org.e:s\"\n[[target.lun]]\npath = \"a\"\nsize = \"1M\"\n[[target]]\niqn = \"IQN.2024-01.org.e:s\"\n[[target.lun]]\npath = \"b\"\nsize = \"1M\"\n"),
         "target[1].iqn: duplicate target name iqn.2024-01.org.e:s"),
        (format!("[iscsi]\nfirst_burst_length = 2000000\n[server]\ndata_dir = \"{dd}\"\n[[target]]\niqn = \"iqn.2024-01.org.e:s\"\n[[target.lun]]\npath = \"a\"\nsize = \"1M\"\n"),
         "iscsi.first_burst_length: 2000000 is larger than max_burst_length"),
        (format!("[iscsi]\ncmdsn_window = 0\n[server]\ndata_dir = \"{dd}\"\n[[target]]\niqn = \"iqn.2024-01.org.e:s\"\n[[target.lun]]\npath = \"a\"\nsize = \"1M\"\n"),
         "iscsi.cmdsn_window: 0 is outside"),
        (format!("[server]\nnaa_company_id = 0x1000000\ndata_dir = \"{dd}\"\n[[target]]\niqn = \"iqn.2024-01.org.e:s\"\n[[target.lun]]\npath = \"a\"\nsize = \"1M\"\n"),
         "server.naa_company_id:"),
        (format!("[server]\nidle_poll_us = 5000\ndata_dir = \"{dd}\"\n[[target]]\niqn = \"iqn.2024-01.org.e:s\"\n[[target.lun]]\npath = \"a\"\nsize = \"1M\"\n"),
         "server.idle_poll_us: 5000 is outside 0..=1000"),
        (format!("[[target]]\niqn = \"iqn.2024-01.org.e:s\"\ntpgt = 0\n[[target.lun]]\npath = \"{dd}/a\"\nsize = \"1M\"\n"),
         "target[0].tpgt: must be"),
        (format!("[[target]]\niqn = \"iqn.2024-01.org.e:s\"\n[[target.lun]]\npath = \"{dd}\"\n"),
         "is neither a regular file nor a block device"),
        ("this is = not toml [".to_string(), "t.toml:1:"),
    ];
    for (text, want) in cases {
        let msg = err(&text);
        assert!(
            msg.contains(want),
            "want `{want}` in `{msg}`\n--- config:\n{text}"
        );
        assert!(!msg.contains('\n'), "multi-line message: {msg}");
    }
}

#[test]
fn unknown_field_reports_line() {
    let msg = err("[server]\nlisten = [\"127.0.0.1:3260\"]\nlistne = 1\n");
    assert!(msg.starts_with("t.toml:3:"), "{msg}");
}

#[test]
fn embedded_default() {
    let d = tempfile::tempdir().unwrap();
    let c = Config::embedded_default(d.path()).unwrap();
    assert_eq!(c.server.listen[0].to_string(), "127.0.0.1:3260");
    assert_eq!(c.targets.len(), 1);
    assert_eq!(c.targets[0].iqn, DEFAULT_TARGET_IQN);
    let l = &c.targets[0].luns[0];
    assert_eq!(l.lun, 0);
    assert_eq!(l.path, d.path().join("lun0.img"));
    assert_eq!(l.size, Some(1 << 30));
    assert_eq!(l.serial, "1437f9ed4b8f659c");
    assert_eq!(l.naa_hex(), "6525c51e77ba1b1e407c49ecb73b487d");
}

#[test]
fn lun_flag_parsing() {
    assert_eq!(
        parse_lun_flag("/x,size=1G").unwrap(),
        LunFlag {
            path: "/x".into(),
            size: Some(1 << 30),
            serial: None,
            read_cache: None,
            direct: None,
        }
    );
    assert_eq!(
        parse_lun_flag("/dev/drbd0,serial=ABC").unwrap(),
        LunFlag {
            path: "/dev/drbd0".into(),
            size: None,
            serial: Some("ABC".into()),
            read_cache: None,
            direct: None,
        }
    );
    assert_eq!(
        parse_lun_flag("/x,read_cache=on").unwrap().read_cache,
        Some(true)
    );
    assert_eq!(
        parse_lun_flag("/x,read_cache=off").unwrap().read_cache,
        Some(false)
    );
    assert_eq!(
        parse_lun_flag("/x,direct=off").unwrap().direct,
        Some(DirectMode::Off)
    );
    assert_eq!(
        parse_lun_flag("/x,direct=on,read_cache=on").unwrap().direct,
        Some(DirectMode::On)
    );
    assert!(parse_lun_flag("/x,direct=sometimes")
        .unwrap_err()
        .contains("auto, on or off"));
    assert!(parse_lun_flag("/x,read_cache=maybe")
        .unwrap_err()
        .contains("on or off"));
    assert!(parse_lun_flag("/x,size=huge").is_err());
    assert!(parse_lun_flag("/x,colour=red")
        .unwrap_err()
        .contains("unknown option"));
    assert!(parse_lun_flag(",size=1G").is_err());
}

#[test]
fn quick_flags() {
    let d = tempfile::tempdir().unwrap();
    let flags = QuickFlags {
        listen: vec!["0.0.0.0:3260".into(), "[::]:3260".into()],
        advertise: vec!["192.0.2.10".into()],
        iqn: Some("iqn.2024-01.org.example:Quick".into()),
        luns: vec![
            format!("{}/a.img,size=64M", d.path().display()),
            format!("{}/b.img,size=1G,serial=SER2", d.path().display()),
        ],
        data_dir: Some(d.path().to_path_buf()),
        metrics_listen: None,
        idle_poll_us: Some(50),
    };
    let c = Config::from_flags(&flags).unwrap();
    assert_eq!(c.server.idle_poll_us, 50);
    assert_eq!(c.server.listen.len(), 2);
    assert_eq!(c.server.advertise[0].to_string(), "192.0.2.10:3260");
    let t = &c.targets[0];
    assert_eq!(t.iqn, "iqn.2024-01.org.example:quick");
    assert_eq!(t.luns[0].lun, 0);
    assert_eq!(t.luns[0].size, Some(64 << 20));
    assert_eq!(t.luns[1].lun, 1);
    assert_eq!(t.luns[1].serial, "SER2");
    let bad = QuickFlags {
        luns: vec!["/nonexistent/q.img".into()],
        ..flags.clone()
    };
    let msg = Config::from_flags(&bad).unwrap_err().to_string();
    assert!(msg.contains("does not exist and no size given"), "{msg}");
    let bad = QuickFlags {
        luns: vec!["/x,bogus".into()],
        ..flags
    };
    let msg = Config::from_flags(&bad).unwrap_err().to_string();
    assert!(msg.starts_with("--lun[0]:"), "{msg}");
}

#[test]
fn example_file_is_valid() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.example.toml");
    let c = Config::load(&p).unwrap();
    assert_eq!(c.targets[0].luns.len(), 1);
    assert_eq!(
        c.targets[0].luns[0].path,
        Path::new("/var/lib/iscsi-gateway/lun0.img")
    );
}

#[test]
fn device_dependent_defaults() {
    use gateway::block::BlockDevice;
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let text = format!(
        "[server]\ndata_dir = \"{}\"\n[[target]]\niqn = \"iqn.2024-01.org.e:s\"\n[[target.lun]]\npath = \"a.img\"\nsize = \"1M\"\ndirect = \"off\"\n[[target.lun]]\npath = \"b.img\"\nsize = \"1M\"\nwrite_cache = false\nunmap = false\nblock_size = 4096\ndirect = \"off\"\n",
        d.path().display()
    );
    let c = Config::from_toml_str(&text, "t").unwrap();
    let (a, b) = (&c.targets[0].luns[0], &c.targets[0].luns[1]);
    let da = BlockDevice::open(&a.path, &a.open_options()).unwrap();
    let db = BlockDevice::open(&b.path, &b.open_options()).unwrap();
    // Buffered files have a volatile cache (the page cache): WCE on by default.
    assert!(a.write_cache_for(&da));
    assert!(!a.force_fua(&da));
    assert!(a.unmap_for(&da));
    assert_eq!(a.block_size_for(&da), Ok(512));
    // Configured write-through on a caching backing: every write must be FUA.
    assert!(!b.write_cache_for(&db));
    assert!(b.force_fua(&db));
    assert!(!b.unmap_for(&db));
    assert_eq!(b.block_size_for(&db), Ok(4096));
}

#[test]
fn embedded_default_with_a_relative_data_dir_is_not_nested() {
    // `serve` with no arguments uses ./iscsi-gateway-data: the LUN file must land directly in
    // it, not in iscsi-gateway-data/iscsi-gateway-data.
    let c = Config::embedded_default(Path::new("iscsi-gateway-data")).unwrap();
    let l = &c.targets[0].luns[0];
    assert_eq!(l.path, Path::new("iscsi-gateway-data").join("lun0.img"));
}

/// A secret file with the given content and mode.
fn secret_file(dir: &Path, name: &str, content: &[u8], mode: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn with_auth(dir: &Path, target_extra: &str) -> String {
    format!(
        "[server]\ndata_dir = \"{}\"\n[[target]]\niqn = \"iqn.2024-01.org.example:storage\"\n{target_extra}\n[[target.lun]]\npath = \"a.img\"\nsize = \"1M\"\n",
        dir.display()
    )
}

#[test]
fn auth_and_access_lists() {
    let d = tempfile::tempdir().unwrap();
    secret_file(d.path(), "i.secret", b"initiator-secret-1\n", 0o600);
    secret_file(d.path(), "t.secret", b"target-secret-22", 0o400);
    secret_file(d.path(), "disc.secret", b"discovery-secret\r\n", 0o600);
    let text = format!(
        "{}[discovery.auth]\nchap_user = \"disc\"\nchap_secret_file = \"disc.secret\"\nchap_algorithms = [\"MD5\"]\n",
        with_auth(
            d.path(),
            "allowed_initiators = [\"IQN.1993-08.org.debian:01:PVE1\"]\nallowed_networks = [\"10.0.0.0/24\", \"::1\"]\n[target.auth]\nchap_user = \"pve\"\nchap_secret_file = \"i.secret\"\nmutual_user = \"tgt\"\nmutual_secret_file = \"t.secret\"\n"
        )
    );
    let c = Config::from_toml_str(&text, "auth.toml").unwrap();
    let t = &c.targets[0];
    assert_eq!(t.allowed_initiators, ["iqn.1993-08.org.debian:01:pve1"]);
    assert_eq!(t.allowed_networks.len(), 2);
    let a = t.auth.as_ref().unwrap();
    assert_eq!(a.chap_user, "pve");
    // One trailing newline stripped, nothing else.
    assert_eq!(a.chap_secret.expose(), b"initiator-secret-1");
    assert_eq!(
        a.mutual_secret.as_ref().unwrap().expose(),
        b"target-secret-22"
    );
    assert_eq!(
        a.chap_algorithms,
        [iscsi::ChapAlgorithm::Sha256, iscsi::ChapAlgorithm::Md5]
    );
    let disc = c.discovery.auth.as_ref().unwrap();
    assert_eq!(disc.chap_secret.expose(), b"discovery-secret");
    assert_eq!(disc.chap_algorithms, [iscsi::ChapAlgorithm::Md5]);
    // Secrets appear neither in Debug output nor in the rendered config.
    for shown in [format!("{c:?}"), c.to_toml()] {
        for s in ["initiator-secret-1", "target-secret-22", "discovery-secret"] {
            assert!(!shown.contains(s), "secret {s} shown");
        }
    }
    assert!(c.to_toml().contains("i.secret"));
    assert!(c.to_toml().contains("10.0.0.0/24"));
}

#[test]
fn bad_auth_cases_name_the_key() {
    let d = tempfile::tempdir().unwrap();
    let dd = d.path().display().to_string();
    secret_file(d.path(), "ok.secret", b"initiator-secret-1\n", 0o600);
    secret_file(d.path(), "ok2.secret", b"target-secret-22\n", 0o600);
    secret_file(d.path(), "open.secret", b"initiator-secret-1", 0o644);
    secret_file(d.path(), "group.secret", b"initiator-secret-1", 0o620);
    secret_file(d.path(), "short.secret", b"short-11by\n", 0o600);
    secret_file(d.path(), "long.secret", &[b'x'; 256], 0o600);
    secret_file(d.path(), "two-newlines.secret", b"1234567890\n\n", 0o600);
    let auth = |extra: &str| with_auth(d.path(), &format!("[target.auth]\n{extra}"));
    let cases: Vec<(String, String)> = vec![
        (auth("chap_user = \"u\"\nchap_secret_file = \"open.secret\""),
         format!("target[0].auth.chap_secret_file: {dd}/open.secret is readable or writable by group/others (mode 644); run `chmod 600 {dd}/open.secret`")),
        (auth("chap_user = \"u\"\nchap_secret_file = \"group.secret\""),
         "(mode 620); run `chmod 600".into()),
        (auth("chap_user = \"u\"\nchap_secret_file = \"short.secret\""),
         "target[0].auth.chap_secret_file: the secret in".into()),
        (auth("chap_user = \"u\"\nchap_secret_file = \"short.secret\""),
         "is 10 bytes; CHAP secrets must be 12..=255 bytes".into()),
        (auth("chap_user = \"u\"\nchap_secret_file = \"long.secret\""), "is 256 bytes".into()),
        (auth("chap_user = \"u\"\nchap_secret_file = \"two-newlines.secret\""), "is 11 bytes".into()),
        (auth("chap_user = \"u\"\nchap_secret_file = \"missing.secret\""),
         "target[0].auth.chap_secret_file: ".into()),
        (auth("chap_user = \"u\""), "target[0].auth: chap_user and chap_secret_file are both required".into()),
        (auth("chap_user = \"has space\"\nchap_secret_file = \"ok.secret\""), "target[0].auth.chap_user:".into()),
        (auth("chap_user = \"u\"\nchap_secret_file = \"ok.secret\"\nmutual_user = \"t\""),
         "target[0].auth: mutual_user and mutual_secret_file go together".into()),
        (auth("chap_user = \"u\"\nchap_secret_file = \"ok.secret\"\nmutual_user = \"t\"\nmutual_secret_file = \"ok.secret\""),
         "target[0].auth.mutual_secret_file: the mutual (target) secret must differ".into()),
        (auth("chap_user = \"u\"\nchap_secret_file = \"ok.secret\"\nchap_algorithms = []"),
         "target[0].auth.chap_algorithms: empty list".into()),
        (auth("chap_user = \"u\"\nchap_secret_file = \"ok.secret\"\nchap_algorithms = [\"SHA-1\"]"),
         "target[0].auth.chap_algorithms[0]: `SHA-1` is not supported".into()),
        (auth("chap_user = \"u\"\nchap_secret_file = \"ok.secret\"\nchap_algorithms = [\"md5\", \"MD5\"]"),
         "target[0].auth.chap_algorithms[1]: MD5 is listed twice".into()),
        (auth("chap_user = \"u\"\nchap_secret_file = \"ok.secret\"\nchap_password = \"x\""),
         "unknown field `chap_password`".into()),
        (with_auth(d.path(), "allowed_initiators = [\"pve1\"]"),
         "target[0].allowed_initiators[0]: `pve1` must start with".into()),
        (with_auth(d.path(), "allowed_initiators = [\"iqn.2024-01.org.e:a\", \"IQN.2024-01.org.e:A\"]"),
         "target[0].allowed_initiators[1]: iqn.2024-01.org.e:a is listed twice".into()),
        (with_auth(d.path(), "allowed_networks = [\"10.0.0.0/33\"]"),
         "target[0].allowed_networks[0]: `10.0.0.0/33`: prefix length".into()),
        (format!("{}[discovery.auth]\nchap_user = \"u\"\nchap_secret_file = \"open.secret\"\n", with_auth(d.path(), "")),
         "discovery.auth.chap_secret_file:".into()),
    ];
    for (text, want) in cases {
        let msg = err(&text);
        assert!(
            msg.contains(&want),
            "want `{want}` in `{msg}`\n--- config:\n{text}"
        );
        assert!(!msg.contains('\n'), "multi-line message: {msg}");
        assert!(
            !msg.contains("initiator-secret-1"),
            "secret in message: {msg}"
        );
    }
    // The valid pair passes, so the failures above are about what each case changes.
    let good = auth("chap_user = \"u\"\nchap_secret_file = \"ok.secret\"\nmutual_user = \"t\"\nmutual_secret_file = \"ok2.secret\"");
    Config::from_toml_str(&good, "t.toml").unwrap();
}

#[test]
fn metrics_listen_is_optional_validated_and_named_in_errors() {
    let d = tempfile::tempdir().unwrap();
    let file = |server_extra: &str| {
        format!(
            "[server]\ndata_dir = \"{}\"\n{server_extra}\n[[target]]\niqn = \"iqn.2024-01.org.example:storage\"\n[[target.lun]]\npath = \"a.img\"\nsize = \"1M\"\n",
            d.path().display()
        )
    };
    let c = Config::from_toml_str(&file(""), "t.toml").unwrap();
    assert_eq!(c.server.metrics_listen, None);
    assert!(!c.to_toml().contains("metrics_listen"));
    let c = Config::from_toml_str(&file("metrics_listen = \"127.0.0.1:9470\""), "t.toml").unwrap();
    assert_eq!(
        c.server.metrics_listen.unwrap().to_string(),
        "127.0.0.1:9470"
    );
    assert!(c.to_toml().contains("metrics_listen = \"127.0.0.1:9470\""));
    let c = Config::from_toml_str(&file("metrics_listen = \"::1\""), "t.toml").unwrap();
    assert_eq!(c.server.metrics_listen.unwrap().to_string(), "[::1]:9470");
    for (extra, want) in [
        (
            "metrics_listen = \"localhost:9470\"",
            "server.metrics_listen: `localhost:9470` is not an address",
        ),
        (
            "metrics_listen = \"127.0.0.1:0\"",
            "server.metrics_listen: `127.0.0.1:0`: port 0 is not allowed",
        ),
        (
            "listen = [\"0.0.0.0:3260\"]\nmetrics_listen = \"127.0.0.1:3260\"",
            "server.metrics_listen: 127.0.0.1:3260 is also an iSCSI portal",
        ),
        ("metrics_listen = 9470", "invalid type"),
    ] {
        let e = err(&file(extra));
        assert!(e.contains(want), "{extra}: {e}");
    }
    // The quick flag goes through the same validation.
    let flags = |m: &str| QuickFlags {
        data_dir: Some(d.path().to_path_buf()),
        metrics_listen: Some(m.into()),
        ..QuickFlags::default()
    };
    let c = Config::from_flags(&flags("127.0.0.1:19470")).unwrap();
    assert_eq!(
        c.server.metrics_listen.unwrap().to_string(),
        "127.0.0.1:19470"
    );
    let e = Config::from_flags(&flags("nope")).unwrap_err().to_string();
    assert!(e.starts_with("server.metrics_listen: `nope`"), "{e}");
}

#[test]
fn adaptive_depth_defaults_on_and_can_be_turned_off() {
    let d = tempfile::tempdir().unwrap();
    let on = Config::from_toml_str(&with_lun(d.path(), ""), "t.toml").unwrap();
    assert!(on.server.adaptive_depth);
    let text =
        with_lun(d.path(), "").replacen("[server]\n", "[server]\nadaptive_depth = false\n", 1);
    let off = Config::from_toml_str(&text, "t.toml").unwrap();
    assert!(!off.server.adaptive_depth);
    assert!(
        err(&text.replacen("adaptive_depth = false", "adaptive_depth = 3", 1))
            .contains("invalid type")
    );
}
