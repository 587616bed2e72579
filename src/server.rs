//! Starts the actors in order and returns a handle: store (own thread), snapshot
//! (supervised), scheduler (supervised), then binds, restores on start if asked,
//! and only then starts the listener. `ServerHandle::shutdown` stops them in
//! mini-redis's order: stop accepting, let saves finish, close connections.

use actix::prelude::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

use crate::actors::listener::ListenerActor;
use crate::actors::scheduler::SchedulerActor;
use crate::actors::snapshot::{
    prune_auto_snapshots, GetSnapshotStats, LoadSnapshot, SaveSnapshot, SaveTarget, SnapshotActor,
};
use crate::actors::store::StoreActor;
use crate::actors::{Peers, Shutdown};
use crate::config::Config;
use crate::error::ServerError;
use crate::snapshot::files::{FileOps, SnapshotDir};

/// A running server.
pub struct ServerHandle {
    local_addr: SocketAddr,
    config: Arc<Config>,
    listener: Addr<ListenerActor>,
    snapshot: Addr<SnapshotActor>,
    store_arbiter: Arbiter,
}

impl ServerHandle {
    /// The address the server accepts on (the real port when configured with 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Graceful stop: stop accepting, let in-flight saves finish, write the
    /// shutdown snapshot if configured, close connections, stop the store.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        let _ = self.listener.send(Shutdown).await;
        wait_for_saves(&self.snapshot).await;
        if self.config.snapshot.save_on_shutdown {
            match self.snapshot.send(SaveSnapshot(SaveTarget::Auto)).await {
                Ok(Ok(r)) => {
                    tracing::info!(path = %r.path.display(), bytes = r.bytes, "shutdown snapshot saved");
                    // Like every auto snapshot, followed by retention.
                    prune_auto_snapshots(&self.snapshot, self.config.snapshot.retain).await;
                }
                Ok(Err(e)) => tracing::error!(error = %e, "shutdown snapshot failed"),
                Err(e) => tracing::error!(error = %e, "shutdown snapshot failed"),
            }
        }
        self.store_arbiter.stop();
        let _ = self.store_arbiter.join();
        tracing::info!("stopped");
    }
}

async fn wait_for_saves(snapshot: &Addr<SnapshotActor>) {
    let mut waited = 0u64;
    loop {
        match snapshot.send(GetSnapshotStats).await {
            Ok(s) if s.busy() => {}
            _ => return,
        }
        if waited % 5000 == 0 {
            tracing::info!("waiting for a snapshot save or load to finish");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 50;
    }
}

/// What `start_with` can change besides the configuration; the default is
/// what `start` uses. Meant for tests (fault injection), not configuration.
#[derive(Default, Clone)]
pub struct StartOptions {
    /// The filesystem steps of snapshot writes and deletions; `None` is the
    /// real filesystem.
    pub file_ops: Option<Arc<dyn FileOps>>,
}

/// Starts everything inside the current actix `System`.
pub async fn start(config: Config) -> Result<ServerHandle, ServerError> {
    start_with(config, StartOptions::default()).await
}

/// `start` with `StartOptions` (a failing `FileOps` in fault-injection tests).
pub async fn start_with(config: Config, options: StartOptions) -> Result<ServerHandle, ServerError> {
    let config = Arc::new(config);
    let dir = match options.file_ops {
        Some(ops) => SnapshotDir::with_ops(&config.snapshot.dir, ops),
        None => SnapshotDir::open(&config.snapshot.dir),
    };
    let dir = dir.map_err(|source| ServerError::SnapshotDir {
        path: config.snapshot.dir.display().to_string(),
        source,
    })?;
    match dir.remove_stray_temp_files() {
        Ok(0) => {}
        Ok(n) => tracing::warn!(count = n, "removed temporary files left by an interrupted save"),
        Err(e) => tracing::warn!(error = %e, "could not clean temporary files"),
    }
    let dir = Arc::new(dir);

    let store_arbiter = Arbiter::new();
    let store_config = config.store_config();
    let reserve_percent = config.snapshot.cow_reserve_percent;
    let store = StoreActor::start_in_arbiter(&store_arbiter.handle(), move |_| {
        StoreActor::new(store_config).cow_reserve_percent(reserve_percent)
    });
    let (s, d, dim) = (store.clone(), dir.clone(), config.vectors.default_dimension);
    let save_threads = config.snapshot.save_threads;
    let snapshot = Supervisor::start(move |_| SnapshotActor::new(s, d, dim).save_threads(save_threads));
    let (s, sn, c) = (store.clone(), snapshot.clone(), config.clone());
    let scheduler = Supervisor::start(move |_| SchedulerActor::new(s, sn, c));

    let addr = format!("{}:{}", config.api.tcp.bind, config.api.tcp.port);
    let tcp = TcpListener::bind(&addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let local_addr = tcp
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;

    if config.snapshot.restore_on_start {
        restore_newest(&dir, &snapshot).await;
    }

    let peers = Peers {
        store,
        snapshot: snapshot.clone(),
        scheduler,
        config: config.clone(),
    };
    let listener = ListenerActor::new(tcp, peers).start();
    tracing::info!("listening on {local_addr}");
    Ok(ServerHandle {
        local_addr,
        config,
        listener,
        snapshot,
        store_arbiter,
    })
}

/// Loads the newest auto snapshot that verifies; older ones are tried when a
/// newer one is refused.
async fn restore_newest(dir: &SnapshotDir, snapshot: &Addr<SnapshotActor>) {
    let candidates = match dir.list_auto() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot list auto snapshots; starting empty");
            return;
        }
    };
    for (path, _) in candidates {
        let shown = path.display().to_string();
        match snapshot.send(LoadSnapshot { path: shown.clone() }).await {
            Ok(Ok(s)) => {
                tracing::info!(path = %shown, events = s.events, vectors = s.vectors, pairs = s.co_occurrence_pairs, "restored on start");
                return;
            }
            Ok(Err(e)) => {
                tracing::error!(path = %shown, error = %e, "auto snapshot refused; trying an older one")
            }
            Err(e) => tracing::error!(path = %shown, error = %e, "restore failed"),
        }
    }
    tracing::info!("no auto snapshot to restore; starting empty");
}
