//! Snapshot workload: DUMP SAVE, DUMP VERIFY and DUMP LOAD wall times. The
//! file is loaded twice: the first LOAD builds the new store in memory the
//! process has not used yet, the second replaces a loaded state and reuses
//! the memory the first one's predecessor freed; both are what users see
//! (a first restore, a later one) and they differ on some machines. It is
//! verified twice too: right after the SAVE (a server that writes around the
//! page cache leaves the file to be read from the disk) and after the LOADs
//! (from the page cache).

use crate::conn::{Conn, Errors, Target};
use crate::stats::{r1, r3};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

pub const FILE: &str = "bench.nvec";

pub struct Step {
    pub command: String,
    /// The command as shown: the second LOAD and VERIFY are marked "(again)".
    pub label: String,
    pub elapsed: Duration,
    pub ok: bool,
    pub head: String,
    pub fields: Vec<(String, String)>,
}

pub struct SnapshotReport {
    pub steps: Vec<Step>,
    pub size_bytes: Option<u64>,
}

/// Parses `size: <n> bytes` from a DUMP SAVE block.
pub fn size_of(fields: &[(String, String)]) -> Option<u64> {
    fields
        .iter()
        .find(|(k, _)| k == "size")
        .and_then(|(_, v)| v.strip_suffix(" bytes").unwrap_or(v).trim().parse().ok())
}

pub fn run(t: &Target, errors: &Errors) -> SnapshotReport {
    let mut rep = SnapshotReport {
        steps: Vec::new(),
        size_bytes: None,
    };
    let mut conn = match Conn::open(t) {
        Ok(c) => c,
        Err(e) => {
            errors.record("snapshot", e);
            return rep;
        }
    };
    for (cmd, label) in [
        (format!("DUMP SAVE {FILE}"), ""),
        (format!("DUMP VERIFY {FILE}"), ""),
        (format!("DUMP LOAD {FILE}"), ""),
        (format!("DUMP LOAD {FILE}"), " (again)"),
        (format!("DUMP VERIFY {FILE}"), " (again)"),
    ] {
        let label = format!("{cmd}{label}");
        let t0 = Instant::now();
        let r = conn.block(&cmd);
        let elapsed = t0.elapsed();
        match r {
            Ok(b) => {
                let ok = b.is_ok();
                if !ok {
                    errors.record("snapshot", format!("{cmd}: {}", b.describe()));
                }
                if cmd.starts_with("DUMP SAVE") && ok {
                    rep.size_bytes = size_of(&b.fields);
                    if rep.size_bytes.is_none() {
                        errors.record(
                            "snapshot",
                            format!("{cmd}: no 'size: <n> bytes' line: {}", b.describe()),
                        );
                    }
                }
                rep.steps.push(Step {
                    command: cmd,
                    label,
                    elapsed,
                    ok,
                    head: b.head,
                    fields: b.fields,
                });
                if !ok {
                    break;
                }
            }
            Err(e) => {
                errors.record("snapshot", format!("{cmd}: {e}"));
                rep.steps.push(Step {
                    command: cmd,
                    label,
                    elapsed,
                    ok: false,
                    head: e,
                    fields: Vec::new(),
                });
                break;
            }
        }
    }
    rep
}

impl SnapshotReport {
    fn mb_per_sec(&self, s: &Step) -> Option<f64> {
        let secs = s.elapsed.as_secs_f64();
        match self.size_bytes {
            Some(b) if s.ok && secs > 0.0 => Some(b as f64 / 1e6 / secs),
            _ => None,
        }
    }

    pub fn to_json(&self) -> Value {
        let steps: Vec<Value> = self
            .steps
            .iter()
            .map(|s| {
                let fields: serde_json::Map<String, Value> = s
                    .fields
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                    .collect();
                json!({
                    "command": s.command,
                    "label": s.label,
                    "ok": s.ok,
                    "seconds": r3(s.elapsed.as_secs_f64()),
                    "mb_per_sec": self.mb_per_sec(s).map(r1),
                    "reply": s.head,
                    "fields": fields,
                })
            })
            .collect();
        json!({ "file": FILE, "size_bytes": self.size_bytes, "steps": steps })
    }

    pub fn render(&self, o: &mut String) {
        let _ = writeln!(o, "== snapshot (MB = 10^6 bytes) ==");
        match self.size_bytes {
            Some(b) => {
                let _ = writeln!(o, "  file size: {b} bytes ({:.1} MB)", b as f64 / 1e6);
            }
            None => {
                let _ = writeln!(o, "  file size: unknown");
            }
        }
        let _ = writeln!(
            o,
            "{:<34} {:>4} {:>10} {:>9}  reply",
            "command", "ok", "seconds", "MB/s"
        );
        for s in &self.steps {
            let mbs = self
                .mb_per_sec(s)
                .map(|x| format!("{x:.1}"))
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                o,
                "{:<34} {:>4} {:>10.3} {:>9}  {}",
                s.label,
                if s.ok { "yes" } else { "NO" },
                s.elapsed.as_secs_f64(),
                mbs,
                s.head
            );
        }
        let _ = writeln!(o);
    }
}
