//! The built binary: `check-config`, exit codes, `--version`, and `serve` start/stop.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_iscsi-gateway"));
    c.env_remove("RUST_LOG");
    c
}

#[test]
fn check_config_prints_resolved() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("gw.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\ndata_dir = \"{}\"\n[[target]]\niqn = \"iqn.2026-11.org.iscsi-gateway:default\"\n[[target.lun]]\npath = \"lun0.img\"\nsize = \"1G\"\n",
            d.path().display()
        ),
    )
    .unwrap();
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("1437f9ed4b8f659c"), "{text}");
    assert!(text.contains("6525c51e77ba1b1e407c49ecb73b487d"), "{text}");
    assert!(text.contains("127.0.0.1:3260"), "{text}");
    // The printed resolved config is itself a valid config resolving to the same thing.
    let again = d.path().join("again.toml");
    std::fs::write(&again, &text).unwrap();
    let out2 = bin()
        .args(["check-config", "--config"])
        .arg(&again)
        .output()
        .unwrap();
    assert!(
        out2.status.success(),
        "{}",
        String::from_utf8_lossy(&out2.stderr)
    );
    assert_eq!(String::from_utf8(out2.stdout).unwrap(), text);
}

#[test]
fn check_config_bad_exit_2_one_line() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("bad.toml");
    std::fs::write(&cfg, "[[target]]\niqn = \"iqn.2024-01.org.e:s\"\n[[target.lun]]\npath = \"/nonexistent/x.img\"\n").unwrap();
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("target[0].lun[0].path: file /nonexistent/x.img does not exist"),
        "{err}"
    );
    let out = bin()
        .args(["check-config", "--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn serve_bad_config_exit_2() {
    let out = bin()
        .args(["serve", "--lun", "/nonexistent/x.img"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    // --config excludes the quick flags.
    let out = bin()
        .args(["serve", "--config", "x.toml", "--listen", "1.2.3.4:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn version() {
    let out = bin().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn serve_quick_flags_runs() {
    // With the placeholder server this returns at once; with the real one it runs until a
    // signal. Either way a valid config must not exit 2.
    let d = tempfile::tempdir().unwrap();
    let mut child = bin()
        .current_dir(d.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--log-level", "warn"])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            // SAFETY: plain kill(2) of the child we spawned.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            break child.wait().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn serve_with_metrics_listen_answers_get_metrics_and_stops() {
    use std::io::{Read, Write};
    let d = tempfile::tempdir().unwrap();
    // A port free a moment ago; the gateway binds it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = bin()
        .current_dir(d.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--log-level", "warn"])
        .args(["--metrics-listen", &addr])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut sock = loop {
        if let Ok(s) = std::net::TcpStream::connect(&addr) {
            break s;
        }
        assert!(child.try_wait().unwrap().is_none(), "gateway exited");
        assert!(
            std::time::Instant::now() < deadline,
            "metrics never listened"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    sock.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    sock.read_to_string(&mut text).unwrap();
    // SAFETY: plain kill(2) of the child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Content-Type: text/plain; version=0.0.4\r\n"));
    let lun0 = "{target=\"iqn.2026-11.org.iscsi-gateway:default\",lun=\"0\"}";
    assert!(
        text.contains(&format!("\niscsi_gateway_lun_served{lun0} 1\n")),
        "{text}"
    );
    assert!(text.contains(&format!("\niscsi_gateway_lun_read_bytes_total{lun0} 0\n")));
    assert!(text.contains("\niscsi_gateway_sessions 0\n"));
    assert!(text.contains("\niscsi_gateway_data_budget_limit_bytes 50331648\n"));
    for gauge in [
        "iscsi_gateway_buffer_pool_held_bytes",
        "iscsi_gateway_buffers_live",
    ] {
        assert!(
            text.contains(&format!("\n# TYPE {gauge} gauge\n{gauge} ")),
            "{gauge} missing: {text}"
        );
    }
    assert!(
        text.contains("\n# TYPE iscsi_gateway_buffered_write_pauses_total counter\niscsi_gateway_buffered_write_pauses_total 0\n"),
        "pause counter missing: {text}"
    );
    assert_eq!(status.code(), Some(0));
}
