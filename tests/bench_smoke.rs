//! Smoke test of `nvecd-bench` against the real `nvecd` binary: tiny scale, no
//! timing assertions. Starts the server with a temporary config (port 0, the
//! address is read from the `listening on ADDR` log line) and kills it on drop.
//! Every workload runs, so a change that breaks one of them fails here.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes ANSI colour sequences (the log may be coloured).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn start_server(dir: &Path) -> Server {
    let cfg = dir.join("nvecd.yaml");
    let snap = dir.join("snapshots");
    std::fs::write(
        &cfg,
        format!(
            "api:\n  tcp:\n    bind: \"127.0.0.1\"\n    port: 0\nsnapshot:\n  dir: \"{}\"\n",
            snap.display()
        ),
    )
    .expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_nvecd"))
        .arg("-c")
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nvecd");
    let stderr = child.stderr.take().expect("stderr");
    let server = Server {
        child,
        addr: String::new(),
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        // Keeps draining stderr after the address is found, so the pipe never fills.
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let line = strip_ansi(&line);
            if let Some(rest) = line.split("listening on ").nth(1) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("server did not log 'listening on ADDR'");
    assert!(addr.starts_with("127.0.0.1:"), "unexpected address {addr}");
    let mut server = server;
    server.addr = addr;
    server
}

#[test]
fn bench_tiny_runs_clean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_server(dir.path());

    let workloads = "ingest,query,snapshot,stall";

    let json_path = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_nvecd-bench"))
        .args([
            "--addr",
            &server.addr,
            "--scale",
            "tiny",
            "--workloads",
            workloads,
        ])
        .args([
            "--connections",
            "2",
            "--queries",
            "200",
            "--stall-secs",
            "0.3",
            "--timeout-secs",
            "30",
        ])
        .arg("--json")
        .arg(&json_path)
        .output()
        .expect("run nvecd-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "nvecd-bench failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stdout.contains("== ingest"), "no ingest table:\n{stdout}");
    assert!(stdout.contains("== query"), "no query table:\n{stdout}");

    let text = std::fs::read_to_string(&json_path).expect("JSON summary written");
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON summary parses");
    for key in [
        "tool",
        "version",
        "addr",
        "scale",
        "connections",
        "workloads",
        "results",
        "unexpected_errors",
        "ok",
    ] {
        assert!(v.get(key).is_some(), "missing top-level key {key} in {text}");
    }
    assert_eq!(v["ok"], serde_json::Value::Bool(true));
    assert_eq!(v["unexpected_errors"], 0);
    for w in workloads.split(',') {
        assert!(v["results"].get(w).is_some(), "no results for {w}");
    }
    let ingest = &v["results"]["ingest"]["single"];
    assert_eq!(ingest["events"]["ok"], 200 * 10);
    assert_eq!(ingest["vectors"]["ok"], 500);
    let runs = v["results"]["query"]["runs"].as_array().expect("query runs");
    assert_eq!(runs.len(), 8, "4 modes x (1 and 2 connections)");
}
