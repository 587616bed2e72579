//! Races between DUMP commands on two connections, 100 rounds each of
//! LOAD+LOAD, LOAD+SAVE, SAVE+LOAD and SAVE+SAVE, all on one path
//! (`race.nvec`), released together by a barrier. The rules (actors.md): the
//! request that reaches the SnapshotActor first wins; a LOAD during a LOAD
//! gets `Snapshot load already in progress`, a SAVE during a LOAD gets
//! `Cannot save snapshot: read-only mode`, a SAVE during a SAVE to the same
//! path gets `Snapshot save already in progress: <path>`; a LOAD during a
//! SAVE is allowed (the save writes the image frozen before the load).
//!
//! Every pair of replies must be one of the allowed combinations. Two
//! successes of LOAD+LOAD or SAVE+SAVE are only allowed when the two requests
//! did not overlap: the test accepts them only for rounds whose two sends
//! were further apart than half the shortest single operation measured
//! beforehand (a classification of rounds, not an assertion on durations).
//! After each round `race.nvec` verifies and every count seen (the file's,
//! the live state's) is the state before the round or the file's before it.
//! `cargo test --test it rel_races -- --nocapture`.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::rel_util::{field, first_line, offline_verdict};
use crate::support::{Client, TestServer};

const ROUNDS: usize = 100;

fn events_in_file(path: &std::path::Path) -> u32 {
    let b = std::fs::read(path).expect("read");
    u32::from_le_bytes(b[12..16].try_into().expect("4 bytes"))
}

fn live_events(c: &mut Client) -> u32 {
    field(&c.cmd("INFO"), "events").parse().expect("events")
}

/// Sends `a` on one connection and `b` on the other at once; returns both
/// first lines and the gap between the two sends.
fn pair(c1: &mut Client, c2: &mut Client, a: &str, b: &str) -> (String, String, Duration) {
    let barrier = Arc::new(Barrier::new(2));
    let (a, b) = (a.to_string(), b.to_string());
    std::thread::scope(|s| {
        let bar = barrier.clone();
        let h1 = s.spawn(move || {
            bar.wait();
            c1.send_raw(format!("{a}\r\n").as_bytes());
            let t = Instant::now();
            (
                first_line(&c1.read_response(nvecd::protocol::Shape::Block).join("\n")),
                t,
            )
        });
        let h2 = s.spawn(move || {
            barrier.wait();
            c2.send_raw(format!("{b}\r\n").as_bytes());
            let t = Instant::now();
            (
                first_line(&c2.read_response(nvecd::protocol::Shape::Block).join("\n")),
                t,
            )
        });
        let (r1, t1) = h1.join().expect("conn 1");
        let (r2, t2) = h2.join().expect("conn 2");
        let gap = if t1 > t2 { t1 - t2 } else { t2 - t1 };
        (r1, r2, gap)
    })
}

#[test]
fn concurrent_dump_commands_give_only_the_documented_outcomes() {
    let server = TestServer::spawn();
    let dir = server.snapshot_dir();
    let path = dir.join("race.nvec");
    let mut c1 = server.client();
    let mut c2 = server.client();
    let mut bulk = String::new();
    for k in 0..8_000 {
        bulk.push_str(&format!("VECSET v{k} {} 0.5 0.25 1 2 3 4 5\r\n", k % 10));
    }
    c1.send_raw(bulk.as_bytes());
    for _ in 0..8_000 {
        assert_eq!(c1.read_line().as_deref(), Some("OK"));
    }
    // calibration: the shortest of a few single saves and loads
    let mut shortest = Duration::MAX;
    for _ in 0..3 {
        for cmd in ["DUMP SAVE race.nvec", "DUMP LOAD race.nvec"] {
            let t = Instant::now();
            assert!(c1.cmd(cmd).starts_with("OK"), "{cmd}");
            shortest = shortest.min(t.elapsed());
        }
    }
    let simultaneous = shortest / 2;
    let shown = path.display().to_string();
    let ok_save = format!("OK Snapshot saved: {shown}");
    let in_progress = format!("(error) Snapshot save already in progress: {shown}");
    let read_only = "(error) Cannot save snapshot: read-only mode".to_string();
    let load_busy = "(error) Snapshot load already in progress".to_string();
    let is_load_ok = |s: &str| s.starts_with("OK Snapshot loaded: ");

    let combos = [
        ("LOAD+LOAD", "DUMP LOAD race.nvec", "DUMP LOAD race.nvec"),
        ("LOAD+SAVE", "DUMP LOAD race.nvec", "DUMP SAVE race.nvec"),
        ("SAVE+LOAD", "DUMP SAVE race.nvec", "DUMP LOAD race.nvec"),
        ("SAVE+SAVE", "DUMP SAVE race.nvec", "DUMP SAVE race.nvec"),
    ];
    let mut round = 0;
    for (name, a, b) in combos {
        let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
        let mut apart = 0;
        for _ in 0..ROUNDS {
            round += 1;
            // a new context each round: the live state differs from the file's
            // (a load of the old file beside a save of the new one can leave
            // them equal after one event: then add another)
            let before_file = events_in_file(&path);
            let mut extra = 0;
            let before_live = loop {
                assert_eq!(c1.cmd(&format!("EVENT r{round}_{extra} ADD x 5")), "OK");
                extra += 1;
                let n = live_events(&mut c1);
                if n != before_file {
                    break n;
                }
            };
            let (r1, r2, gap) = pair(&mut c1, &mut c2, a, b);
            let overlapped = gap < simultaneous;
            if !overlapped {
                apart += 1;
            }
            let short = |r: &str| -> String {
                if is_load_ok(r) {
                    "LOAD ok".into()
                } else if r.starts_with(&ok_save) {
                    "SAVE ok".into()
                } else if r == load_busy {
                    "load already in progress".into()
                } else if r == read_only {
                    "read-only".into()
                } else if r == in_progress {
                    "save already in progress".into()
                } else {
                    panic!("{name} round {round}: unexpected reply {r:?}")
                }
            };
            let (s1, s2) = (short(&r1), short(&r2));
            let mut both = [s1.clone(), s2.clone()];
            both.sort();
            let allowed = match name {
                "LOAD+LOAD" => {
                    both == ["LOAD ok", "load already in progress"]
                        || (both == ["LOAD ok", "LOAD ok"] && !overlapped)
                }
                "LOAD+SAVE" | "SAVE+LOAD" => {
                    both == ["LOAD ok", "SAVE ok"] || both == ["LOAD ok", "read-only"]
                }
                "SAVE+SAVE" => {
                    both == ["SAVE ok", "save already in progress"]
                        || (both == ["SAVE ok", "SAVE ok"] && !overlapped)
                }
                _ => unreachable!(),
            };
            assert!(allowed, "{name} round {round}: {s1} / {s2} (sends {gap:?} apart)");
            *outcomes.entry(format!("{s1} / {s2}")).or_default() += 1;
            // the file is always valid, and holds one of the two states
            let (block, ok) = offline_verdict(&path);
            assert!(ok, "{name} round {round}: race.nvec invalid: {block}");
            let file_now = events_in_file(&path);
            assert!(
                [before_live, before_file].contains(&file_now),
                "{name} round {round}: file has {file_now} events, expected {before_live} or {before_file}"
            );
            let live_now = live_events(&mut c1);
            assert!(
                [before_live, before_file].contains(&live_now),
                "{name} round {round}: live has {live_now} events"
            );
            assert_eq!(c2.cmd("PING"), "OK PONG");
        }
        println!(
            "{name}: {ROUNDS} of {ROUNDS} rounds gave allowed outcomes {outcomes:?}; \
             rounds whose sends were >= {simultaneous:?} apart: {apart}"
        );
    }
}
