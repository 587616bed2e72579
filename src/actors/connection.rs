//! `ConnectionActor`: one per TCP client. Reads framed request lines (every
//! complete line buffered so far arrives as one batch), answers each in request
//! order, and writes the replies of a batch with one socket write. While a batch
//! is being answered the actor `wait`s, so it reads nothing more: a client that
//! does not read its replies stops being read from (no unbounded buffering).

use actix::prelude::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

use super::listener::{CommandsProcessed, ConnectionClosed, GetServerStats, ListenerActor};
use super::scheduler::GetSchedulerStats;
use super::snapshot::{DumpRequest, GetSnapshotStats};
use super::store::{ExecuteBatch, GetStats, StoreOp};
use super::{Peers, Shutdown};
use crate::protocol::codec::{Line, LineCodec};
use crate::protocol::command::{Command, DumpCommand};
use crate::protocol::response::BlockHead;
use crate::protocol::{parse_line, ParseError, Response};

/// How long one batch's replies may take to be written before the client is
/// considered stuck and dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Initial read buffer per connection: one socket read can then bring in a
/// whole pipelined chunk (about 64 VECSET lines of 128 floats, or a full batch
/// of short lines), so a batch travels to the store as one message instead of
/// many small ones. It grows only for a longer line (up to `max_request_bytes`).
const READ_BUFFER_BYTES: usize = 64 * 1024;

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
                READ_BUFFER_BYTES,
            ));
            ConnectionActor {
                id,
                peer,
                writer: Some(write),
                authenticated: false,
                peers,
                listener,
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
                Line::InvalidUtf8 => {
                    steps.push(Step::Reply(Response::Error("Invalid UTF-8 in request".into())));
                    continue;
                }
                Line::TooLarge { limit } => {
                    steps.push(Step::Close(Response::Error(format!(
                        "Request too large: limit is {limit} bytes"
                    ))));
                    break;
                }
            };
            let cmd = match parse_line(&text) {
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
                let err = Response::Error("NOAUTH Authentication required".into());
                steps.push(Step::Reply(match cmd {
                    Command::Dump(_) => block_error(err),
                    _ => err,
                }));
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
                                section.unwrap_or_default()
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

/// Runs the steps in order; consecutive store operations go as one message.
async fn run_steps(peers: Peers, listener: Addr<ListenerActor>, steps: Vec<Step>) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(64 * steps.len());
    let mut close = false;
    let mut steps = steps.into_iter().peekable();
    while let Some(step) = steps.next() {
        match step {
            Step::Reply(r) => r.render(&mut out),
            Step::Close(r) => {
                r.render(&mut out);
                close = true;
            }
            Step::Store(op) => {
                let mut ops = vec![op];
                while let Some(Step::Store(_)) = steps.peek() {
                    if let Some(Step::Store(op)) = steps.next() {
                        ops.push(op);
                    }
                }
                let n = ops.len();
                match peers.store.send(ExecuteBatch(ops)).await {
                    Ok(replies) => replies.iter().for_each(|r| r.render(&mut out)),
                    Err(e) => {
                        let r = internal(e);
                        (0..n).for_each(|_| r.render(&mut out));
                    }
                }
            }
            Step::Dump(cmd) => match peers.snapshot.send(DumpRequest(cmd)).await {
                Ok(r) => r.render(&mut out),
                Err(e) => block_error(internal(e)).render(&mut out),
            },
            Step::Info => info(&peers, &listener).await.render(&mut out),
        }
    }
    (out, close)
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

    fn started(&mut self, _: &mut Self::Context) {
        tracing::debug!(conn_id = self.id, peer = %self.peer, "connection opened");
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
        let steps = self.plan(lines);
        if steps.is_empty() {
            return;
        }
        self.listener.do_send(CommandsProcessed {
            count: steps.len() as u64,
        });
        let Some(mut writer) = self.writer.take() else {
            ctx.stop();
            return;
        };
        let (peers, listener, id) = (self.peers.clone(), self.listener.clone(), self.id);
        let fut = async move {
            let (bytes, close) = run_steps(peers, listener, steps).await;
            let written = tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&bytes)).await;
            let ok = matches!(written, Ok(Ok(())));
            if !ok {
                tracing::debug!(conn_id = id, "write failed or timed out; dropping client");
            }
            if close {
                let _ = writer.shutdown().await;
            }
            (writer, ok && !close)
        };
        ctx.wait(fut.into_actor(self).map(|(writer, keep), act, ctx| {
            act.writer = Some(writer);
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
