//! Protocol on the real wire: insta transcripts (`transcripts/*.txt`),
//! pipelining, limits, and malformed input that must not hurt the server.

use std::io::Write;

use crate::support::{Client, TestServer};
use nvecd::protocol::{expected_shape, Shape};

/// Runs a transcript script against a fresh server: `# comment`, `@conn N`
/// switches connection, `@config key=value` lines at the top change the config,
/// any other line is a request. Records `> request` and the full response.
pub fn run_transcript(script: &str) -> (String, TestServer) {
    let mut edits: Vec<(String, String)> = Vec::new();
    for line in script.lines() {
        if let Some(kv) = line.strip_prefix("@config ") {
            let (k, v) = kv.split_once('=').expect("@config key=value");
            edits.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let server = TestServer::spawn_with(|c| {
        for (k, v) in &edits {
            match k.as_str() {
                "security.requirepass" => c.security.requirepass = v.clone(),
                "vectors.default_dimension" => c.vectors.default_dimension = v.parse().expect("number"),
                "vectors.distance_metric" => c.vectors.distance_metric = v.clone(),
                "similarity.max_top_k" => c.similarity.max_top_k = v.parse().expect("number"),
                "events.ctx_buffer_size" => c.events.ctx_buffer_size = v.parse().expect("number"),
                "events.dedup_window_sec" => c.events.dedup_window_sec = v.parse().expect("number"),
                "api.max_request_bytes" => c.api.max_request_bytes = v.parse().expect("number"),
                other => panic!("@config {other} not supported by the harness"),
            }
        }
    });
    let mut conns: Vec<Client> = vec![server.client()];
    let mut current = 0;
    let mut out = String::new();
    for line in script.lines() {
        if line.starts_with('#') || line.starts_with("@config ") || line.trim().is_empty() {
            continue;
        }
        if let Some(n) = line.strip_prefix("@conn ") {
            current = n.trim().parse().expect("@conn N");
            while conns.len() <= current {
                conns.push(server.client());
            }
            out.push_str(&format!("@conn {current}\n"));
            continue;
        }
        let c = &mut conns[current];
        c.send_raw(format!("{line}\r\n").as_bytes());
        out.push_str(&format!("> {line}\n"));
        for l in c.read_response(expected_shape(line)) {
            out.push_str(&l);
            out.push('\n');
        }
    }
    drop(conns);
    (out, server)
}

#[test]
fn transcripts() {
    insta::glob!("transcripts/*.txt", |path| {
        let script = std::fs::read_to_string(path).expect("read transcript");
        let (out, server) = run_transcript(&script);
        let dir = server.snapshot_dir().display().to_string();
        insta::with_settings!({
            filters => vec![
                (dir.as_str(), "[SNAPSHOT_DIR]"),
                (r"uptime_seconds: \d+", "uptime_seconds: [N]"),
                (r"used_memory_bytes: \d+", "used_memory_bytes: [N]"),
                (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", "[TIME]"),
                (r"dump_\d{8}_\d{6}", "dump_[STAMP]"),
                // The file CRC covers created_at.
                (r"CRC32: 0x[0-9A-F]{8}", "CRC32: 0x[CRC]"),
            ],
            omit_expression => true,
        }, {
            insta::assert_snapshot!(out);
        });
    });
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = TestServer::spawn();
    let mut c = server.client();
    let mut batch = String::new();
    for i in 0..500 {
        batch.push_str(&format!(
            "EVENT u{} ADD item{} {}\r\n",
            i % 7,
            i % 13,
            1 + i % 100
        ));
        batch.push_str("PING\r\n");
        batch.push_str(&format!("SIM item{} 3 using=events\r\n", i % 13));
    }
    c.send_raw(batch.as_bytes());
    for _ in 0..500 {
        assert_eq!(c.read_response(Shape::Line), vec!["OK"]);
        assert_eq!(c.read_response(Shape::Line), vec!["OK PONG"]);
        let r = c.read_response(Shape::Results);
        assert!(
            r[0].starts_with("OK RESULTS ") || r[0].starts_with("(error) Item not found"),
            "{r:?}"
        );
    }
    assert_eq!(c.cmd("PING"), "OK PONG");
}

#[test]
fn quit_answers_ok_and_closes() {
    let server = TestServer::spawn();
    let mut c = server.client();
    c.send_raw(b"QUIT\r\nPING\r\n");
    assert_eq!(c.read_line().as_deref(), Some("OK"));
    assert!(c.is_closed());
}

#[test]
fn overlong_line_gets_an_error_and_the_connection_is_closed() {
    let server = TestServer::spawn_with(|c| c.api.max_request_bytes = 1024);
    let mut c = server.client();
    c.send_raw(format!("VECSET a {}\r\n", "1 ".repeat(2000)).as_bytes());
    assert_eq!(
        c.read_line().as_deref(),
        Some("(error) Request too large: limit is 1024 bytes")
    );
    assert!(c.is_closed());
    // A line without a newline that keeps growing is cut off the same way.
    let mut c = server.client();
    c.send_raw(&vec![b'x'; 5000]);
    assert_eq!(
        c.read_line().as_deref(),
        Some("(error) Request too large: limit is 1024 bytes")
    );
    assert!(c.is_closed());
    assert_eq!(server.client().cmd("PING"), "OK PONG");
}

#[test]
fn connections_over_the_limit_get_an_error() {
    let server = TestServer::spawn_with(|c| c.api.max_connections = 2);
    let mut a = server.client();
    let mut b = server.client();
    assert_eq!(a.cmd("PING"), "OK PONG");
    assert_eq!(b.cmd("PING"), "OK PONG");
    let mut c = server.client();
    assert_eq!(
        c.read_line().as_deref(),
        Some("(error) Too many connections: limit is 2")
    );
    assert!(c.is_closed());
    // Refused clients never count, however many there are, and the admitted
    // ones keep working.
    for _ in 0..20 {
        let mut r = server.client();
        assert_eq!(
            r.read_line().as_deref(),
            Some("(error) Too many connections: limit is 2")
        );
        assert!(r.is_closed());
    }
    let info = a.cmd("INFO");
    assert!(info.contains("\nconnected_clients: 2\n"), "{info}");
    assert_eq!(b.cmd("PING"), "OK PONG");
    drop(a);
    assert!(crate::support::wait_until(
        std::time::Duration::from_secs(10),
        || {
            let mut d = server.client();
            d.cmd("PING") == "OK PONG"
        }
    ));
}

#[test]
fn malformed_input_never_hurts_the_server() {
    let server = TestServer::spawn_with(|c| c.api.max_request_bytes = 1 << 20);
    let mut c = server.client();
    let nan_vector = format!("VECSET nan {}", ["NaN"; 4].join(" "));
    let big_vector = format!(
        "VECSET big {}",
        (0..10_000)
            .map(|i| format!("{}.5", i % 10))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let cases: Vec<String> = vec![
        "EVENT".into(),
        "EVENT u1".into(),
        "EVENT u1 ADD".into(),
        "EVENT u1 ADD item".into(),
        "EVENT u1 ADD item 101".into(),
        "EVENT u1 ADD item -1".into(),
        "EVENT u1 ADD item 99999999999999999999999".into(),
        "EVENT u1 JUMP item 1".into(),
        "SIM".into(),
        "SIM x".into(),
        "SIM x 0".into(),
        "SIM x 18446744073709551616".into(),
        "SIM x 999999999999999999999999999999".into(),
        "SIM x 5 using=nothing".into(),
        "SIM x 5 min_score=NaN".into(),
        "SIMV 5".into(),
        "SIMV 5 NaN NaN".into(),
        "SIMV 5 inf 1".into(),
        "VECSET".into(),
        "VECSET x".into(),
        "VECSET x 1e39".into(),
        nan_vector,
        big_vector,
        "SIMV 3 1 2 3".into(),
        "VECDEL".into(),
        "DUMP".into(),
        "CONFIG".into(),
        "AUTH".into(),
        "\u{0}\u{0}\u{0}".into(),
        "\t \t".into(),
        "💥 💥 💥".into(),
    ];
    for case in &cases {
        let shape = expected_shape(case);
        c.send_raw(format!("{case}\r\n").as_bytes());
        if case.trim().is_empty() {
            continue;
        }
        let r = c.read_response(shape);
        assert!(!r.is_empty(), "{case}");
    }
    // Binary garbage and invalid UTF-8 keep the connection open.
    c.send_raw(&[0xff, 0xfe, 0x00, 0x80, b'\r', b'\n']);
    assert_eq!(c.read_line().as_deref(), Some("(error) Invalid UTF-8 in request"));
    // A block command's error is a block (SPEC 2), so the client stays in step.
    for line in [&b"DUMP VERIFY \xff.nvec"[..], b"config show \xff", b"INFO \xfe"] {
        c.send_raw(line);
        c.send_raw(b"\r\n");
        assert_eq!(c.read_line().as_deref(), Some("(error) Invalid UTF-8 in request"));
        assert_eq!(c.read_line().as_deref(), Some("END"));
    }
    assert_eq!(c.cmd("PING"), "OK PONG");
    let mut garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    garbage.retain(|b| *b != b'\n');
    garbage.extend_from_slice(b"\n");
    c.send_raw(&garbage);
    let first = c.read_line().expect("a reply to garbage");
    assert!(first.starts_with("(error)"), "{first}");
    assert_eq!(c.cmd("PING"), "OK PONG");
    let mut other = server.client();
    assert_eq!(other.cmd("PING"), "OK PONG");
    // A client that disconnects mid-line does not disturb anyone.
    {
        let mut s = std::net::TcpStream::connect(server.addr).expect("connect");
        s.write_all(b"EVENT u1 ADD it").expect("write");
    }
    assert_eq!(other.cmd("PING"), "OK PONG");
}

/// `total_commands_processed` counts commands as they are answered: an INFO
/// pipelined in a batch counts those before it and itself, not those after.
#[test]
fn info_in_a_pipeline_counts_the_commands_answered_before_it() {
    let server = TestServer::spawn();
    let mut c = server.client();
    c.send_raw(b"PING\r\nINFO\r\nPING\r\nPING\r\nINFO\r\nPING\r\n");
    let mut counts = Vec::new();
    for shape in [
        Shape::Line,
        Shape::Block,
        Shape::Line,
        Shape::Line,
        Shape::Block,
        Shape::Line,
    ] {
        let reply = c.read_response(shape);
        if shape == Shape::Block {
            let n = reply
                .iter()
                .find_map(|l| l.strip_prefix("total_commands_processed: "))
                .expect("total_commands_processed")
                .parse::<u64>()
                .expect("a number");
            counts.push(n);
        }
    }
    assert_eq!(counts[1] - counts[0], 3, "{counts:?}");
    let later = c.cmd("INFO");
    assert!(
        later.contains(&format!("total_commands_processed: {}", counts[1] + 2)),
        "{later}"
    );
}

/// Runs of pipelined EVENTs are stored together (their co-occurrence writes
/// on two threads when the machine has two cores): the answers, SIMs in the
/// middle of a run included, are those of the same requests sent one at a
/// time to another server.
#[test]
fn pipelined_event_runs_answer_as_requests_one_at_a_time() {
    let mut script: Vec<(String, Shape)> = Vec::new();
    let mut n = 7u64;
    let mut next = |m: u64| {
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (n >> 33) % m
    };
    for round in 0..6 {
        for _ in 0..(50 + next(400)) {
            let kind = ["ADD", "ADD", "SET", "DEL"][next(4) as usize];
            let score = if kind == "DEL" { 0 } else { next(101) };
            let spread = next(300) + 1;
            script.push((
                format!("EVENT u{} {kind} item{} {score}", next(40), next(spread)),
                Shape::Line,
            ));
            if next(150) == 0 {
                script.push((format!("SIM item{} 5 using=events", next(20)), Shape::Results));
            }
        }
        script.push((format!("VECSET item{round} 1 0 0.5"), Shape::Line));
    }
    for i in 0..30 {
        script.push((format!("SIM item{i} 10 using=events"), Shape::Results));
    }

    let piped = TestServer::spawn();
    let mut c = piped.client();
    let all: String = script.iter().map(|(line, _)| format!("{line}\r\n")).collect();
    c.send_raw(all.as_bytes());
    let got: Vec<Vec<String>> = script.iter().map(|(_, shape)| c.read_response(*shape)).collect();

    let single = TestServer::spawn();
    let mut c = single.client();
    for ((line, shape), got) in script.iter().zip(&got) {
        c.send_raw(format!("{line}\r\n").as_bytes());
        assert_eq!(&c.read_response(*shape), got, "{line}");
    }
    let results = got
        .iter()
        .filter(|r| r[0].starts_with("OK RESULTS") && r.len() > 3)
        .count();
    assert!(results > 20, "most SIMs find neighbours: {results}");
}
