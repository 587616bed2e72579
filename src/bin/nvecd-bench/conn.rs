//! Blocking TCP client for the Nvecd line protocol, and the shared error log.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How many unexpected errors are kept verbatim.
const KEEP_ERRORS: usize = 10;

/// Unexpected `(error)` replies and protocol desyncs, shared by all threads.
#[derive(Clone, Default)]
pub struct Errors(Arc<Mutex<ErrorLog>>);

#[derive(Default)]
struct ErrorLog {
    count: u64,
    first: Vec<String>,
}

impl Errors {
    pub fn record(&self, what: &str, msg: impl AsRef<str>) {
        let mut log = self.0.lock().unwrap_or_else(|e| e.into_inner());
        log.count += 1;
        if log.first.len() < KEEP_ERRORS {
            log.first.push(format!("{what}: {}", msg.as_ref()));
        }
    }

    pub fn count(&self) -> u64 {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).count
    }

    pub fn first(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).first.clone()
    }
}

/// Connection settings shared by every workload.
#[derive(Clone)]
pub struct Target {
    pub addr: String,
    pub password: Option<String>,
    pub timeout: Duration,
}

/// A parsed `results` reply (SIM, SIMV).
pub enum Results {
    Ok(Vec<(String, f64)>),
    Error(String),
}

/// A parsed `block` reply (INFO, CONFIG SHOW, DUMP ...).
pub struct Block {
    pub head: String,
    pub fields: Vec<(String, String)>,
}

impl Block {
    pub fn is_ok(&self) -> bool {
        self.head == "OK" || self.head.starts_with("OK ")
    }

    pub fn describe(&self) -> String {
        let mut s = self.head.clone();
        for (k, v) in &self.fields {
            s.push_str(&format!(" | {k}: {v}"));
        }
        s
    }
}

pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    line: Vec<u8>,
}

impl Conn {
    /// Connects, sets timeouts and NODELAY, and authenticates if a password is given.
    pub fn open(t: &Target) -> Result<Conn, String> {
        let stream = TcpStream::connect(&t.addr).map_err(|e| format!("connect {}: {e}", t.addr))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(t.timeout))
            .map_err(|e| e.to_string())?;
        stream
            .set_write_timeout(Some(t.timeout))
            .map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut c = Conn {
            reader: BufReader::with_capacity(1 << 16, stream),
            writer,
            line: Vec::with_capacity(256),
        };
        if let Some(pw) = &t.password {
            c.send(&format!("AUTH {pw}\n"))?;
            let r = c.read_line()?;
            if !is_ok_line(&r) {
                return Err(format!("AUTH failed: {r}"));
            }
        }
        Ok(c)
    }

    /// A second handle on the socket, for a writer running next to a reader.
    pub fn writer_clone(&self) -> Result<TcpStream, String> {
        self.writer.try_clone().map_err(|e| e.to_string())
    }

    pub fn shutdown(&self) {
        let _ = self.writer.shutdown(Shutdown::Both);
    }

    /// Sends raw bytes (one or more complete request lines).
    pub fn send(&mut self, data: &str) -> Result<(), String> {
        self.writer
            .write_all(data.as_bytes())
            .map_err(|e| format!("write: {e}"))
    }

    /// Reads one response line; it must end in `\r\n`, which is stripped.
    pub fn read_line(&mut self) -> Result<String, String> {
        self.line.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.line)
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed by server".into());
        }
        if !self.line.ends_with(b"\r\n") {
            return Err(format!(
                "protocol desync: line not terminated by \\r\\n: {:?}",
                String::from_utf8_lossy(&self.line)
            ));
        }
        let body = &self.line[..self.line.len() - 2];
        String::from_utf8(body.to_vec()).map_err(|_| "protocol desync: reply is not UTF-8".to_string())
    }

    /// Reads a `results` reply.
    pub fn read_results(&mut self) -> Result<Results, String> {
        let head = self.read_line()?;
        if let Some(msg) = head.strip_prefix("(error) ") {
            return Ok(Results::Error(msg.to_string()));
        }
        let n: usize = head
            .strip_prefix("OK RESULTS ")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("protocol desync: expected 'OK RESULTS <n>', got {head:?}"))?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            let l = self.read_line()?;
            let mut it = l.split(' ');
            let (id, score) = match (it.next(), it.next(), it.next()) {
                (Some(id), Some(score), None) => (id, score),
                _ => return Err(format!("protocol desync: bad result line {l:?}")),
            };
            let score: f64 = score
                .parse()
                .map_err(|_| format!("protocol desync: bad score in {l:?}"))?;
            items.push((id.to_string(), score));
        }
        Ok(Results::Ok(items))
    }

    /// Reads a `block` reply (first line, `key: value` lines, `END`).
    pub fn read_block(&mut self) -> Result<Block, String> {
        let head = self.read_line()?;
        if !(is_ok_line(&head) || head.starts_with("(error)")) {
            return Err(format!("protocol desync: bad block head {head:?}"));
        }
        let mut fields = Vec::new();
        // A block has a bounded number of lines; guard against a runaway reply.
        for _ in 0..10_000 {
            let l = self.read_line()?;
            if l == "END" {
                return Ok(Block { head, fields });
            }
            match l.split_once(": ") {
                Some((k, v)) => fields.push((k.to_string(), v.to_string())),
                None => match l.strip_suffix(':') {
                    Some(k) => fields.push((k.to_string(), String::new())),
                    None => return Err(format!("protocol desync: bad block line {l:?}")),
                },
            }
        }
        Err("protocol desync: block without END".into())
    }

    /// Sends one command and reads a block reply.
    pub fn block(&mut self, cmd: &str) -> Result<Block, String> {
        self.send(&format!("{cmd}\n"))?;
        self.read_block()
    }
}

pub fn is_ok_line(l: &str) -> bool {
    l == "OK" || l.starts_with("OK ")
}
