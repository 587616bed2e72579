//! The real binary: `--check-config`, bad configuration, signals.

use std::process::Command;

use crate::support::TestBinary;

fn nvecd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nvecd"))
}

#[test]
fn check_config_accepts_the_shipped_config() {
    let out = nvecd()
        .args(["--check-config", "-c"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config"))
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn unknown_key_stops_the_start_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("bad.yaml");
    std::fs::write(&cfg, "snapshot:\n  retian: 3\n").expect("write");
    let out = nvecd()
        .arg("-c")
        .arg(&cfg)
        .arg("--check-config")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("retian"), "{err}");
    let out = nvecd()
        .arg("-c")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config"))
        .arg("--check-config")
        .env("NVECD__API__TCP__PORTT", "1")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("portt"));
}

/// `nvecd --check-config` on a config whose only setting is `snapshot.dir`.
fn check_snapshot_dir(dir: &std::path::Path, snap: &std::path::Path) -> std::process::Output {
    let cfg = dir.join("c.yaml");
    std::fs::write(&cfg, format!("snapshot:\n  dir: \"{}\"\n", snap.display())).expect("write");
    nvecd()
        .arg("-c")
        .arg(&cfg)
        .arg("--check-config")
        .output()
        .expect("run")
}

#[test]
fn check_config_refuses_a_snapshot_dir_that_cannot_be_a_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("afile");
    std::fs::write(&file, "x").expect("write");
    for snap in [file.clone(), file.join("sub")] {
        let out = check_snapshot_dir(dir.path(), &snap);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("cannot prepare snapshot.dir {}", snap.display()))
                && err.contains(&format!("{} is not a directory", file.display())),
            "{err}"
        );
    }
    // A directory still to be made is fine, and the check makes nothing.
    let out = check_snapshot_dir(dir.path(), &dir.path().join("a/b/c"));
    assert!(out.status.success(), "{out:?}");
    assert!(!dir.path().join("a").exists());
}

pub fn write_config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let cfg = dir.join("nvecd.yaml");
    let snap = dir.join("snapshots");
    std::fs::write(
        &cfg,
        format!(
            "api:\n  tcp:\n    port: 0\nsnapshot:\n  dir: \"{}\"\n{extra}",
            snap.display()
        ),
    )
    .expect("write config");
    cfg
}

#[test]
fn sigterm_stops_the_server_with_exit_code_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), "");
    let mut server = TestBinary::start(&cfg, &[("NVECD__EVENTS__CTX_BUFFER_SIZE", "5")]);
    let mut c = server.client();
    assert_eq!(c.cmd("PING"), "OK PONG");
    assert_eq!(
        c.cmd("CONFIG SHOW events").lines().nth(1),
        Some("events.ctx_buffer_size: 5")
    );
    let status = server.signal_and_wait(libc::SIGTERM);
    assert!(status.success(), "{status:?}\n{}", server.logs());
}
