//! The golden files of `snapshots-testdata/`: each gives exactly the block its
//! MANIFEST entry names, through DUMP VERIFY and DUMP LOAD on a real server
//! and through the offline `nvecd snapshot verify`.

use std::path::Path;
use std::process::Command;

use crate::support::TestServer;

struct Entry {
    file: String,
    block: Vec<String>,
}

fn manifest() -> Vec<Entry> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots-testdata");
    let text = std::fs::read_to_string(dir.join("MANIFEST")).expect("MANIFEST");
    let mut entries: Vec<Entry> = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('\t') {
            entries.last_mut().expect("entry").block.push(rest.to_string());
        } else {
            let (file, head) = line.split_once('\t').expect("file<TAB>head");
            entries.push(Entry {
                file: file.to_string(),
                block: vec![head.to_string()],
            });
        }
    }
    assert!(entries.len() >= 10, "MANIFEST has {} entries", entries.len());
    entries
}

#[test]
fn golden_files_give_their_manifest_block_through_server_and_offline_tool() {
    let server = TestServer::spawn();
    let mut c = server.client();
    c.cmd("EVENT keep ADD me 7");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots-testdata");
    for e in manifest() {
        let path = src.join(&e.file);
        std::fs::copy(&path, server.snapshot_dir().join(&e.file)).expect("copy");
        let mut expected = e.block.clone();
        expected.push("END".into());
        let valid = expected[0].starts_with("OK ");

        let verify: Vec<String> = c
            .cmd(&format!("DUMP VERIFY {}", e.file))
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(verify, expected, "DUMP VERIFY {}", e.file);

        let out = Command::new(env!("CARGO_BIN_EXE_nvecd"))
            .args(["snapshot", "verify"])
            .arg(&path)
            .output()
            .expect("offline verify");
        let printed: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(printed, expected, "nvecd snapshot verify {}", e.file);
        assert_eq!(
            out.status.success(),
            valid,
            "exit status of nvecd snapshot verify {}",
            e.file
        );

        let figures = |c: &mut crate::support::Client| -> Vec<String> {
            c.cmd("INFO")
                .lines()
                .filter(|l| {
                    ["contexts:", "events:", "vectors:", "co_occurrence_pairs:"]
                        .iter()
                        .any(|k| l.starts_with(k))
                })
                .map(String::from)
                .collect()
        };
        let before = figures(&mut c);
        let load = c.cmd(&format!("DUMP LOAD {}", e.file));
        if valid {
            assert!(load.starts_with("OK Snapshot loaded: "), "{}: {load}", e.file);
        } else {
            assert_eq!(
                load.lines().next(),
                Some(expected[0].as_str()),
                "DUMP LOAD {}",
                e.file
            );
            assert_eq!(
                figures(&mut c),
                before,
                "live data changed by a refused load of {}",
                e.file
            );
        }
        if e.file == "valid.nvec" {
            let info = c.cmd("DUMP INFO valid.nvec");
            let out = Command::new(env!("CARGO_BIN_EXE_nvecd"))
                .args(["snapshot", "info"])
                .arg(&path)
                .output()
                .expect("offline info");
            assert!(out.status.success());
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), info);
            assert!(info.contains("version: 1"), "{info}");
        }
        if e.file == "unknown_flags.nvec" {
            // INFO reads the header only, but refuses its unknown flag bits.
            let info = c.cmd("DUMP INFO unknown_flags.nvec");
            assert_eq!(info, format!("{}\nEND", expected[0]));
            let out = Command::new(env!("CARGO_BIN_EXE_nvecd"))
                .args(["snapshot", "info"])
                .arg(&path)
                .output()
                .expect("offline info");
            assert!(!out.status.success());
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), info);
        }
    }
}

#[test]
fn offline_tool_reports_a_missing_file_and_exits_non_zero() {
    let out = Command::new(env!("CARGO_BIN_EXE_nvecd"))
        .args(["snapshot", "verify", "/nonexistent/x.nvec"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("(error) File not found: /nonexistent/x.nvec"));
}
