//! `ConnectionActor`: one per TCP client. Reads framed request lines (every
//! complete line buffered so far arrives as one batch), answers each in request
//! order, and writes the replies. While a batch is being answered the actor
//! `wait`s, so it reads nothing more: a client that does not read its replies
//! stops being read from.
//!
//! Output is bounded: replies are rendered into one buffer, written with one
//! socket write at the end of the batch (the fast path for small batches), or
//! flushed as soon as it holds more than [`OUTPUT_FLUSH_BYTES`]; a flush that
//! makes no progress for the stall timeout drops the client. Query replies come
//! from the store in groups of about [`GROUP_RESULT_ROWS`] rows. So a
//! connection holds at most `OUTPUT_FLUSH_BYTES` + one reply of rendered output
//! and one group of unrendered replies, however large the batch.
//!
//! Idle clients: with `api.idle_timeout_sec` > 0, a timer checks every
//! [`IDLE_CHECK_EVERY`] and closes, without a reply, a connection that has
//! delivered no complete request line for that long since its last request or
//! reply (a partial line does not count), like Redis's `timeout`.

use actix::prelude::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

use super::listener::{CommandsProcessed, ConnectionClosed, GetServerStats, ListenerActor};
use super::scheduler::GetSchedulerStats;
use super::snapshot::{DumpRequest, GetSnapshotStats};
use super::store::{ExecuteBatch, GetStats, StoreOp};
use super::{Peers, Shutdown};
use crate::protocol::codec::{Line, LineCodec, MIN_READ_BYTES};
use crate::protocol::command::{Command, DumpCommand};
use crate::protocol::parse::echoed;
use crate::protocol::response::BlockHead;
use crate::protocol::{expected_shape, parse_line, ParseError, Response};

/// Rendered output beyond this is written out before the batch goes on.
pub const OUTPUT_FLUSH_BYTES: usize = 64 * 1024;

/// A store message carries queries whose `top_k` add up to at most this many
/// result rows (one bigger query travels alone), so unrendered replies stay
/// bounded too. Writes do not count: they reply with one short line.
pub const GROUP_RESULT_ROWS: usize = 1024;

/// Write stall timeout when `api.idle_timeout_sec` is 0: a write that makes no
/// progress for this long drops the client.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the idle timer looks at a connection.
pub const IDLE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// One step of a batch, decided synchronously from the parsed line.
enum Step {
    Reply(Response),
    Store(StoreOp),
    Dump(DumpCommand),
    Info,
    /// Reply, then close the connection.
    Close(Response),
}

pub struct ConnectionActor {
    id: u64,
    peer: SocketAddr,
    writer: Option<OwnedWriteHalf>,
    authenticated: bool,
    peers: Peers,
    listener: Addr<ListenerActor>,
    /// When the last complete request line arrived or the last batch's
    /// replies were written.
    last_activity: Instant,
}

impl ConnectionActor {
    /// Starts the actor for an accepted socket.
    pub fn start(
        id: u64,
        stream: TcpStream,
        peer: SocketAddr,
        peers: Peers,
        listener: Addr<ListenerActor>,
    ) -> Addr<Self> {
        ConnectionActor::create(move |ctx| {
            let _ = stream.set_nodelay(true);
            let (read, write) = stream.into_split();
            ctx.add_stream(FramedRead::with_capacity(
                read,
                LineCodec::new(peers.config.api.max_request_bytes),
                MIN_READ_BYTES,
            ));
            ConnectionActor {
                id,
                peer,
                writer: Some(write),
                authenticated: false,
                peers,
                listener,
                last_activity: Instant::now(),
            }
        })
    }

    /// Turns the lines of one batch into steps, handling what needs no other actor.
    fn plan(&mut self, lines: Vec<Line>) -> Vec<Step> {
        let need_auth = !self.peers.config.security.requirepass.is_empty();
        let max_top_k = self.peers.config.similarity.max_top_k;
        let mut steps = Vec::with_capacity(lines.len());
        for line in lines {
            let text = match line {
                Line::Text(t) => t,
                Line::InvalidUtf8 { shape } => {
                    steps.push(Step::Reply(Response::error_in(shape, "Invalid UTF-8 in request")));
                    continue;
                }
                Line::TooLarge { limit } => {
                    steps.push(Step::Close(Response::Error(format!(
                        "Request too large: limit is {limit} bytes"
                    ))));
                    break;
                }
            };
            let parsed = parse_line(&text);
            // NUL bytes are refused, except in DUMP paths, which SPEC 4.2
            // answers with `Invalid path`.
            if text.contains('\0') && !matches!(parsed, Some(Ok(Command::Dump(_)))) {
                let err = Response::error_in(expected_shape(&text), "NUL byte in request");
                steps.push(Step::Reply(err));
                continue;
            }
            let cmd = match parsed {
                None => continue,
                Some(Err(e)) => {
                    let e = match e {
                        ParseError::InvalidTopK { .. } => e.with_max_top_k(max_top_k),
                        e => e,
                    };
                    steps.push(Step::Reply(Response::parse_error(&text, &e)));
                    continue;
                }
                Some(Ok(c)) => c,
            };
            if cmd.needs_auth() && need_auth && !self.authenticated {
                let err = Response::error_in(expected_shape(&text), "NOAUTH Authentication required");
                steps.push(Step::Reply(err));
                continue;
            }
            steps.push(match cmd {
                Command::Ping => Step::Reply(Response::OkText("PONG".into())),
                Command::Quit => {
                    steps.push(Step::Close(Response::Ok));
                    break;
                }
                Command::Auth { password } => Step::Reply(self.auth(&password)),
                Command::ConfigShow { section } => {
                    Step::Reply(match self.peers.config.entries(section.as_deref()) {
                        Some(fields) => Response::Block {
                            head: BlockHead::Ok("CONFIG".into()),
                            fields,
                        },
                        None => Response::Block {
                            head: BlockHead::Error(format!(
                                "Unknown config section: {}",
                                echoed(&section.unwrap_or_default())
                            )),
                            fields: Vec::new(),
                        },
                    })
                }
                Command::Info => Step::Info,
                Command::Event(e) => Step::Store(StoreOp::AddEvent(e)),
                Command::VecSet { id, values } => Step::Store(StoreOp::SetVector { id, values }),
                Command::VecDel { id } => Step::Store(StoreOp::DeleteVector { id }),
                Command::Sim(a) => Step::Store(StoreOp::QuerySimilar(a)),
                Command::SimV(a) => Step::Store(StoreOp::QueryVector(a)),
                Command::Dump(d) => Step::Dump(d),
            });
        }
        steps
    }

    fn auth(&mut self, password: &str) -> Response {
        let required = &self.peers.config.security.requirepass;
        if required.is_empty() {
            // Redis answers this case with an error too: there is nothing to log in to.
            return Response::Error("AUTH called without a password configured".into());
        }
        if constant_time_eq(password.as_bytes(), required.as_bytes()) {
            self.authenticated = true;
            Response::Ok
        } else {
            Response::Error("Invalid password".into())
        }
    }
}

fn block_error(r: Response) -> Response {
    match r {
        Response::Error(m) => Response::Block {
            head: BlockHead::Error(m),
            fields: Vec::new(),
        },
        r => r,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "actor unavailable");
    Response::Error(format!("Internal error: {e}"))
}

/// `api.idle_timeout_sec` as a duration; None when 0 (off).
fn idle_timeout(peers: &Peers) -> Option<Duration> {
    match peers.config.api.idle_timeout_sec {
        0 => None,
        s => Some(Duration::from_secs(s)),
    }
}

/// How long a reply write may make no progress: the idle timeout, or
/// [`DEFAULT_STALL_TIMEOUT`] when that is off.
fn stall_timeout(peers: &Peers) -> Duration {
    idle_timeout(peers).unwrap_or(DEFAULT_STALL_TIMEOUT)
}

/// Result rows a store operation's reply may hold (writes: none).
fn result_rows(op: &StoreOp) -> usize {
    match op {
        StoreOp::QuerySimilar(a) => a.top_k,
        StoreOp::QueryVector(a) => a.top_k,
        _ => 0,
    }
}

/// Writes all of `bytes`; fails when one write call makes no progress within
/// `stall` (the client is not reading) or the socket errs.
async fn write_stalling(
    writer: &mut OwnedWriteHalf,
    mut bytes: &[u8],
    stall: Duration,
) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match tokio::time::timeout(stall, writer.write(bytes)).await {
            Ok(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => bytes = bytes.get(n..).unwrap_or_default(),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
        }
    }
    Ok(())
}

/// Rendered replies on their way to the socket: flushed whenever they pass
/// [`OUTPUT_FLUSH_BYTES`], and once at the end.
struct Output<'a> {
    buf: Vec<u8>,
    writer: &'a mut OwnedWriteHalf,
    stall: Duration,
}

impl Output<'_> {
    async fn push(&mut self, r: &Response) -> std::io::Result<()> {
        r.render(&mut self.buf);
        if self.buf.len() > OUTPUT_FLUSH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            write_stalling(self.writer, &self.buf, self.stall).await?;
            self.buf.clear();
        }
        Ok(())
    }
}

/// Runs the steps in order, writing the replies to `writer`; consecutive store
/// operations go as one message (split so their queries stay under
/// [`GROUP_RESULT_ROWS`] rows). Returns whether the connection is to close
/// (QUIT, overlong line); a write error or stall stops the batch there.
async fn run_steps(
    peers: Peers,
    listener: Addr<ListenerActor>,
    steps: Vec<Step>,
    writer: &mut OwnedWriteHalf,
) -> std::io::Result<bool> {
    let stall = stall_timeout(&peers);
    let mut out = Output {
        buf: Vec::with_capacity((64 * steps.len()).min(OUTPUT_FLUSH_BYTES)),
        writer,
        stall,
    };
    let mut close = false;
    // Commands are counted as they are answered (an INFO counts itself and
    // those before it in the batch, not the ones after it).
    let mut uncounted = 0u64;
    let answered = async {
        let mut steps = steps.into_iter().peekable();
        while let Some(step) = steps.next() {
            uncounted += 1;
            match step {
                Step::Reply(r) => out.push(&r).await?,
                Step::Close(r) => {
                    out.push(&r).await?;
                    close = true;
                }
                Step::Store(op) => {
                    let mut rows = result_rows(&op);
                    let mut ops = vec![op];
                    while let Some(Step::Store(next)) = steps.peek() {
                        let more = result_rows(next);
                        if more > 0 && rows + more > GROUP_RESULT_ROWS {
                            break;
                        }
                        rows += more;
                        if let Some(Step::Store(op)) = steps.next() {
                            ops.push(op);
                            uncounted += 1;
                        }
                    }
                    let n = ops.len();
                    match peers.store.send(ExecuteBatch(ops)).await {
                        Ok(replies) => {
                            for r in &replies {
                                out.push(r).await?;
                            }
                        }
                        Err(e) => {
                            let r = internal(e);
                            for _ in 0..n {
                                out.push(&r).await?;
                            }
                        }
                    }
                }
                Step::Dump(cmd) => match peers.snapshot.send(DumpRequest(cmd)).await {
                    Ok(r) => out.push(&r).await?,
                    Err(e) => out.push(&block_error(internal(e))).await?,
                },
                Step::Info => {
                    listener.do_send(CommandsProcessed {
                        count: std::mem::take(&mut uncounted),
                    });
                    out.push(&info(&peers, &listener).await).await?;
                }
            }
        }
        std::io::Result::Ok(())
    }
    .await;
    // Also when the client is gone: its commands were carried out.
    if uncounted > 0 {
        listener.do_send(CommandsProcessed { count: uncounted });
    }
    answered?;
    out.flush().await?;
    Ok(close)
}

/// The INFO block, gathered from every actor.
async fn info(peers: &Peers, listener: &Addr<ListenerActor>) -> Response {
    let (store, server, snap, sched) = match (
        peers.store.send(GetStats).await,
        listener.send(GetServerStats).await,
        peers.snapshot.send(GetSnapshotStats).await,
        peers.scheduler.send(GetSchedulerStats).await,
    ) {
        (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
        _ => return block_error(internal("INFO: an actor did not answer")),
    };
    let s = store.stats;
    let mut fields: Vec<(String, String)> = vec![
        ("version".into(), env!("CARGO_PKG_VERSION").into()),
        ("uptime_seconds".into(), server.uptime_seconds.to_string()),
        ("connected_clients".into(), server.connected_clients.to_string()),
        (
            "total_commands_processed".into(),
            server.total_commands_processed.to_string(),
        ),
        ("contexts".into(), s.contexts.to_string()),
        ("events".into(), s.events.to_string()),
        ("vectors".into(), s.vectors.to_string()),
        ("vector_dimension".into(), s.dimension.to_string()),
        ("co_occurrence_pairs".into(), s.co_occurrence_pairs.to_string()),
        ("read_only".into(), store.loading.to_string()),
        ("loading".into(), store.loading.to_string()),
    ];
    fields.extend(snap.fields());
    fields.extend(sched.fields());
    fields.push(("used_memory_bytes".into(), s.used_memory_bytes.to_string()));
    Response::Block {
        head: BlockHead::Ok("INFO".into()),
        fields,
    }
}

impl Actor for ConnectionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::debug!(conn_id = self.id, peer = %self.peer, "connection opened");
        if let Some(timeout) = idle_timeout(&self.peers) {
            // Not run while a batch is answered (`ctx.wait`); `last_activity`
            // is renewed when it ends.
            ctx.run_interval(IDLE_CHECK_EVERY.min(timeout), move |act, ctx| {
                if act.last_activity.elapsed() >= timeout {
                    tracing::info!(
                        conn_id = act.id,
                        peer = %act.peer,
                        idle_timeout_sec = timeout.as_secs(),
                        "closing idle client"
                    );
                    ctx.stop();
                }
            });
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        tracing::debug!(conn_id = self.id, "connection closed");
        self.listener.do_send(ConnectionClosed { id: self.id });
    }
}

impl StreamHandler<Result<Vec<Line>, std::io::Error>> for ConnectionActor {
    fn handle(&mut self, item: Result<Vec<Line>, std::io::Error>, ctx: &mut Self::Context) {
        let lines = match item {
            Ok(lines) => lines,
            Err(e) => {
                tracing::debug!(conn_id = self.id, error = %e, "read failed");
                ctx.stop();
                return;
            }
        };
        self.last_activity = Instant::now();
        let steps = self.plan(lines);
        if steps.is_empty() {
            return;
        }
        let Some(mut writer) = self.writer.take() else {
            ctx.stop();
            return;
        };
        let (peers, listener, id) = (self.peers.clone(), self.listener.clone(), self.id);
        let fut = async move {
            let keep = match run_steps(peers, listener, steps, &mut writer).await {
                Ok(close) => {
                    if close {
                        let _ = writer.shutdown().await;
                    }
                    !close
                }
                Err(e) => {
                    tracing::info!(conn_id = id, error = %e, "reply write failed or stalled; dropping client");
                    false
                }
            };
            (writer, keep)
        };
        ctx.wait(fut.into_actor(self).map(|(writer, keep), act, ctx| {
            act.writer = Some(writer);
            act.last_activity = Instant::now();
            if !keep {
                ctx.stop();
            }
        }));
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<Shutdown> for ConnectionActor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
