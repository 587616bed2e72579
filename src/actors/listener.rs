//! `ListenerActor`: owns the `TcpListener`; accepts clients as a stream, starts
//! one `ConnectionActor` per socket, enforces `api.max_connections`, and keeps
//! the server-wide counters INFO shows (clients, commands, uptime).

use actix::prelude::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::connection::ConnectionActor;
use super::{Peers, Shutdown};

/// Sent by a connection when it stops.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ConnectionClosed {
    pub id: u64,
}

/// Sent by a connection after each batch: how many requests it answered.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CommandsProcessed {
    pub count: u64,
}

/// Sent by a connection for INFO.
#[derive(Debug, Message)]
#[rtype(result = "ServerStats")]
pub struct GetServerStats;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerStats {
    pub uptime_seconds: u64,
    pub connected_clients: u64,
    pub total_commands_processed: u64,
}

struct Accepted(std::io::Result<(TcpStream, SocketAddr)>);

pub struct ListenerActor {
    listener: Option<TcpListener>,
    peers: Peers,
    connections: HashMap<u64, Addr<ConnectionActor>>,
    next_id: u64,
    started: Instant,
    total_commands: u64,
    accept_handle: Option<SpawnHandle>,
}

impl ListenerActor {
    pub fn new(listener: TcpListener, peers: Peers) -> Self {
        ListenerActor {
            listener: Some(listener),
            peers,
            connections: HashMap::new(),
            next_id: 1,
            started: Instant::now(),
            total_commands: 0,
            accept_handle: None,
        }
    }
}

impl Actor for ListenerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(listener) = self.listener.take() {
            let stream = futures_util::stream::unfold(listener, |l| async move {
                let r = l.accept().await;
                Some((Accepted(r), l))
            });
            self.accept_handle = Some(ctx.add_stream(stream));
        }
    }
}

impl StreamHandler<Accepted> for ListenerActor {
    fn handle(&mut self, item: Accepted, ctx: &mut Self::Context) {
        let (stream, peer) = match item.0 {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: log and keep accepting.
                tracing::warn!(error = %e, "accept failed");
                return;
            }
        };
        let limit = self.peers.config.api.max_connections;
        if self.connections.len() >= limit {
            tracing::warn!(peer = %peer, limit, "connection refused: max_connections reached");
            actix_rt::spawn(async move {
                let mut stream = stream;
                let msg = format!("(error) Too many connections: limit is {limit}\r\n");
                let _ = stream.write_all(msg.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let addr = ConnectionActor::start(id, stream, peer, self.peers.clone(), ctx.address());
        self.connections.insert(id, addr);
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}

impl Handler<ConnectionClosed> for ListenerActor {
    type Result = ();
    fn handle(&mut self, msg: ConnectionClosed, _: &mut Self::Context) {
        self.connections.remove(&msg.id);
    }
}

impl Handler<CommandsProcessed> for ListenerActor {
    type Result = ();
    fn handle(&mut self, msg: CommandsProcessed, _: &mut Self::Context) {
        self.total_commands += msg.count;
    }
}

impl Handler<GetServerStats> for ListenerActor {
    type Result = MessageResult<GetServerStats>;
    fn handle(&mut self, _: GetServerStats, _: &mut Self::Context) -> Self::Result {
        MessageResult(ServerStats {
            uptime_seconds: self.started.elapsed().as_secs(),
            connected_clients: self.connections.len() as u64,
            total_commands_processed: self.total_commands,
        })
    }
}

impl Handler<Shutdown> for ListenerActor {
    type Result = ();
    /// Stop accepting and tell every connection to close.
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        if let Some(h) = self.accept_handle.take() {
            ctx.cancel_future(h);
        }
        for conn in self.connections.values() {
            conn.do_send(Shutdown);
        }
    }
}
