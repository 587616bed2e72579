//! Test support: an in-process server (`TestServer`), the real binary
//! (`TestBinary`), a line-protocol `Client` that reads whole responses by the
//! shape rule of `protocol::response`, and `wait_until`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nvecd::config::Config;
use nvecd::protocol::{expected_shape, Shape};

/// A safety net only: responses end by their shape, never by this timeout.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Logs to stderr when `TEST_LOG` is set, else nowhere.
pub fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_test_writer()
            .try_init();
    }
}

/// A config for tests: port 0, snapshot dir inside `dir`, no timers.
pub fn test_config(dir: &Path) -> Config {
    let mut c = Config::default();
    c.api.tcp.port = 0;
    c.snapshot.dir = dir.join("snapshots");
    c.events.decay_interval_sec = 0;
    // A test process runs many servers; memory faulted in for the next SAVE
    // would stay with the process after each. The reserve has tests of its
    // own (actors.rs).
    c.snapshot.cow_reserve_percent = 0;
    c
}

/// The real `server::start` on its own thread and actix System.
pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn spawn() -> TestServer {
        Self::spawn_with(|_| {})
    }

    /// Starts with `test_config`, changed by `edit`.
    pub fn spawn_with(edit: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(dir.path());
        edit(&mut config);
        Self::spawn_config(config, dir)
    }

    pub fn spawn_config(config: Config, dir: tempfile::TempDir) -> TestServer {
        Self::spawn_options(config, dir, nvecd::server::StartOptions::default())
    }

    /// `spawn_config` through `server::start_with` (e.g. a failing `FileOps`).
    pub fn spawn_options(
        config: Config,
        dir: tempfile::TempDir,
        options: nvecd::server::StartOptions,
    ) -> TestServer {
        init_logs();
        let (addr_tx, addr_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let system = actix_rt::System::new();
            system.block_on(async move {
                let handle = nvecd::server::start_with(config, options)
                    .await
                    .expect("server starts");
                addr_tx.send(handle.local_addr()).expect("send addr");
                let _ = stop_rx.await;
                handle.shutdown().await;
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server started");
        TestServer {
            addr,
            dir,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    pub fn snapshot_dir(&self) -> PathBuf {
        self.dir
            .path()
            .join("snapshots")
            .canonicalize()
            .expect("snapshot dir")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A blocking protocol client.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(READ_TIMEOUT)).expect("timeout");
        let writer = stream.try_clone().expect("clone");
        Client {
            reader: BufReader::new(stream),
            writer,
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write");
    }

    /// Reads one line without its CRLF; None at EOF.
    pub fn read_line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => None,
            Ok(_) => {
                let s = String::from_utf8_lossy(&buf).to_string();
                assert!(s.ends_with("\r\n"), "line without CRLF: {s:?}");
                Some(s.trim_end_matches("\r\n").to_string())
            }
            Err(e) => panic!("read failed: {e}"),
        }
    }

    /// Reads one whole response of `shape`: its lines.
    pub fn read_response(&mut self, shape: Shape) -> Vec<String> {
        let first = self.read_line().expect("response, got EOF");
        let mut lines = vec![first.clone()];
        match shape {
            Shape::Line => {}
            Shape::Results => {
                if let Some(n) = first.strip_prefix("OK RESULTS ") {
                    let n: usize = n.parse().expect("result count");
                    for _ in 0..n {
                        lines.push(self.read_line().expect("result line"));
                    }
                }
            }
            Shape::Block => loop {
                let l = self.read_line().expect("block line");
                let end = l == "END";
                lines.push(l);
                if end {
                    break;
                }
            },
        }
        lines
    }

    /// Sends one request and returns its whole response, lines joined by `\n`.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send_raw(format!("{line}\r\n").as_bytes());
        self.read_response(expected_shape(line)).join("\n")
    }

    /// True when the server closed the connection (EOF) with nothing more to read.
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0) | Err(_))
    }
}

/// Polls `cond` every 20 ms until it holds or `deadline` passes.
pub fn wait_until(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The real `nvecd` binary, started with a config file and port 0.
pub struct TestBinary {
    pub child: Child,
    pub addr: SocketAddr,
    pub stderr_lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl TestBinary {
    /// Starts `nvecd -c <config>` (which must set port 0) and waits for "listening on".
    pub fn start(config: &Path, extra_env: &[(&str, &str)]) -> TestBinary {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nvecd"));
        cmd.arg("-c")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env("RUST_LOG", "info");
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn nvecd");
        let stderr = child.stderr.take().expect("stderr");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("TEST_LOG").is_some() {
                    eprintln!("[nvecd] {line}");
                }
                if let Some(pos) = line.find("listening on ") {
                    let addr = line[pos + "listening on ".len()..].trim().to_string();
                    let _ = tx.send(addr);
                }
                sink.lock().expect("lock").push(line);
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("nvecd did not start: {:?}", lines.lock().expect("lock"))
        });
        let addr = strip_ansi(&addr).parse().expect("listen address");
        TestBinary {
            child,
            addr,
            stderr_lines: lines,
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    pub fn logs(&self) -> String {
        self.stderr_lines.lock().expect("lock").join("\n")
    }

    /// Sends a signal and waits for the exit status.
    pub fn signal_and_wait(&mut self, signal: i32) -> std::process::ExitStatus {
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
        self.child.wait().expect("wait")
    }
}

impl Drop for TestBinary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
