//! `SnapshotActor`: runs DUMP SAVE / LOAD / VERIFY / INFO / STATUS and the
//! scheduler's auto saves. Path checks happen here; encoding, decoding, CRC and
//! fsync run on blocking threads (`spawn_blocking`), never on an actor thread.
//! States: Idle, Saving (one or more paths), Loading (with saves of images taken
//! before the load still finishing). Supervised by `server.rs`.

use actix::prelude::*;
use chrono::{DateTime, TimeZone, Utc};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::store::{AbortLoad, ApplyLoadBatch, BeginLoad, FinishLoad, FreezeStore, StoreActor};
use crate::protocol::command::DumpCommand;
use crate::protocol::response::BlockHead;
use crate::protocol::Response;
use crate::snapshot::files::{self, SnapshotDir};
use crate::snapshot::{self, LoadOptions, SnapshotError};
use crate::store::{LoadBatch, StoreStats};

/// Records per batch streamed to the store during a load.
const LOAD_BATCH_RECORDS: usize = 4096;

/// Batches a load keeps in flight to the store: the reader decodes the next
/// ones while the store applies the earlier ones (the two halves cost about
/// the same, so overlapping them halves a LOAD), and memory stays bounded.
const LOAD_BATCHES_IN_FLIGHT: usize = 4;

/// Feeds a load's batches to the `StoreActor` from the reader's blocking
/// thread, with up to `LOAD_BATCHES_IN_FLIGHT` sent and not yet applied.
///
/// Order: every batch goes out through a fresh clone of the address, and a
/// fresh sender is never parked, so `Addr::send` queues the message at once,
/// in call order (a reused, parked sender would hold a message back until
/// its request is polled and could let a later one overtake it).
struct LoadFeed {
    store: Addr<StoreActor>,
    pending: std::collections::VecDeque<actix::dev::Request<StoreActor, ApplyLoadBatch>>,
}

impl LoadFeed {
    fn new(store: Addr<StoreActor>) -> Self {
        Self {
            store,
            pending: std::collections::VecDeque::with_capacity(LOAD_BATCHES_IN_FLIGHT),
        }
    }

    /// Sends `batch`, first waiting for the oldest batch in flight when the
    /// window is full; an error of an earlier batch stops the load here.
    fn push(&mut self, rt: &tokio::runtime::Handle, batch: LoadBatch) -> Result<(), SnapshotError> {
        if self.pending.len() >= LOAD_BATCHES_IN_FLIGHT {
            self.wait_oldest(rt)?;
        }
        let sender = self.store.clone();
        self.pending.push_back(sender.send(ApplyLoadBatch(batch)));
        Ok(())
    }

    /// Waits until every batch sent has been applied.
    fn drain(&mut self, rt: &tokio::runtime::Handle) -> Result<(), SnapshotError> {
        while !self.pending.is_empty() {
            self.wait_oldest(rt)?;
        }
        Ok(())
    }

    fn wait_oldest(&mut self, rt: &tokio::runtime::Handle) -> Result<(), SnapshotError> {
        match self.pending.pop_front() {
            Some(request) => rt.block_on(request).map_err(mailbox)?,
            None => Ok(()),
        }
    }
}

/// Where a save goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaveTarget {
    /// `DUMP SAVE <path>`: replaced atomically if it exists.
    Path(String),
    /// `DUMP SAVE`: `dump_YYYYMMDD_HHMMSS.nvec`, never overwriting.
    DefaultName,
    /// Scheduler: `auto_YYYYMMDD_HHMMSS.snapshot`, never overwriting.
    Auto,
}

/// Sent by a connection for every DUMP command; the reply is the response block.
#[derive(Debug, Message)]
#[rtype(result = "Response")]
pub struct DumpRequest(pub DumpCommand);

/// Sent by the scheduler (auto snapshots) and through `DumpRequest`: save the
/// state as of now.
#[derive(Debug, Message)]
#[rtype(result = "Result<SaveReport, SnapshotError>")]
pub struct SaveSnapshot(pub SaveTarget);

/// Sent by a connection (INFO) and the scheduler (to skip ticks while busy).
#[derive(Debug, Message)]
#[rtype(result = "SnapshotStats")]
pub struct GetSnapshotStats;

/// Sent by the scheduler after a successful auto save.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<PathBuf>, SnapshotError>")]
pub struct PruneAutoSnapshots {
    pub retain: usize,
}

/// Sends `PruneAutoSnapshots` and logs what it deleted or why it failed
/// (after an auto snapshot, by the scheduler and at shutdown).
pub async fn prune_auto_snapshots(snapshot: &Addr<SnapshotActor>, retain: usize) {
    match snapshot.send(PruneAutoSnapshots { retain }).await {
        Ok(Ok(deleted)) => {
            for p in deleted {
                tracing::info!(path = %p.display(), "old auto snapshot deleted");
            }
        }
        Ok(Err(e)) => tracing::error!(error = %e, "pruning auto snapshots failed"),
        Err(e) => tracing::error!(error = %e, "pruning auto snapshots failed"),
    }
}

/// What a finished save wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveReport {
    pub path: PathBuf,
    pub stats: StoreStats,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobState {
    InProgress,
    Completed,
    Failed,
}

#[derive(Debug, Clone)]
struct Job {
    state: JobState,
    operation: &'static str,
    filepath: String,
    start: DateTime<Utc>,
    end: Option<DateTime<Utc>>,
    error: Option<String>,
}

#[derive(Debug, Clone)]
struct LastSave {
    path: String,
    time: DateTime<Utc>,
    ok: bool,
}

/// Figures for INFO.
#[derive(Debug, Clone)]
pub struct SnapshotStats {
    pub loading: bool,
    pub saves_running: usize,
    last_save: Option<LastSave>,
}

impl SnapshotStats {
    /// The `last_save_*` INFO lines.
    pub fn fields(&self) -> Vec<(String, String)> {
        let (path, time, status) = match &self.last_save {
            Some(s) => (
                s.path.clone(),
                fmt_time(s.time),
                if s.ok { "ok" } else { "failed" }.to_string(),
            ),
            None => (String::new(), String::new(), "none".to_string()),
        };
        vec![
            ("last_save_path".into(), path),
            ("last_save_time".into(), time),
            ("last_save_status".into(), status),
        ]
    }

    pub fn busy(&self) -> bool {
        self.loading || self.saves_running > 0
    }
}

/// `YYYY-MM-DDTHH:MM:SS` in UTC.
pub fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

pub struct SnapshotActor {
    store: Addr<StoreActor>,
    dir: Arc<SnapshotDir>,
    default_dimension: usize,
    loading: bool,
    saving: HashSet<PathBuf>,
    job: Option<Job>,
    last_save: Option<LastSave>,
    /// How a save encodes the co-occurrence records (`snapshot.save_threads`).
    encode: snapshot::Encode,
}

impl SnapshotActor {
    pub fn new(store: Addr<StoreActor>, dir: Arc<SnapshotDir>, default_dimension: usize) -> Self {
        SnapshotActor {
            store,
            dir,
            default_dimension,
            loading: false,
            saving: HashSet::new(),
            job: None,
            last_save: None,
            encode: snapshot::Encode::sequential(),
        }
    }

    /// `snapshot.save_threads` (default 1: encode on the saving thread).
    pub fn save_threads(mut self, threads: usize) -> Self {
        self.encode = snapshot::Encode::with_threads(threads);
        self
    }

    fn options(&self) -> LoadOptions {
        LoadOptions {
            default_dimension: self.default_dimension,
            batch_records: LOAD_BATCH_RECORDS,
        }
    }

    fn begin_job(&mut self, operation: &'static str, path: &Path) {
        self.job = Some(Job {
            state: JobState::InProgress,
            operation,
            filepath: path.display().to_string(),
            start: Utc::now(),
            end: None,
            error: None,
        });
    }

    fn end_job(&mut self, path: &Path, error: Option<String>) {
        if let Some(job) = self
            .job
            .as_mut()
            .filter(|j| j.filepath == path.display().to_string())
        {
            job.state = if error.is_some() {
                JobState::Failed
            } else {
                JobState::Completed
            };
            job.end = Some(Utc::now());
            job.error = error;
        }
    }

    /// Records a save or load that failed before it started: one whose path
    /// the filesystem refused while it was resolved (a missing directory, no
    /// permission, a name too long). A refused request — a path that is not
    /// allowed, a busy server — was never a job and changes nothing.
    fn record_early_failure(&mut self, operation: &'static str, user_path: &str, e: &SnapshotError) {
        if !matches!(
            e,
            SnapshotError::NotFound { .. }
                | SnapshotError::PermissionDenied { .. }
                | SnapshotError::Io { .. }
        ) {
            return;
        }
        let path = self.dir.root().join(user_path);
        self.begin_job(operation, &path);
        if operation == "save" {
            self.end_save(&path, Some(e.to_string()));
        } else {
            self.end_job(&path, Some(e.to_string()));
        }
    }

    /// `end_job` for a save, which is also INFO's last save.
    fn end_save(&mut self, path: &Path, error: Option<String>) {
        self.last_save = Some(LastSave {
            path: path.display().to_string(),
            time: Utc::now(),
            ok: error.is_none(),
        });
        self.end_job(path, error);
    }

    /// Chooses the file a save writes, and whether it must not replace one.
    fn target(&self, target: &SaveTarget) -> Result<(PathBuf, bool), SnapshotError> {
        let now = Utc::now();
        match target {
            SaveTarget::Path(p) => Ok((self.dir.resolve_for_save(p)?, false)),
            SaveTarget::DefaultName => {
                let base = files::dump_name(now);
                let (stem, ext) = base.rsplit_once('.').unwrap_or((base.as_str(), ""));
                self.free_name(|n| {
                    if n < 2 {
                        base.clone()
                    } else {
                        format!("{stem}_{n}.{ext}")
                    }
                })
            }
            SaveTarget::Auto => self.free_name(|n| files::auto_name(now, n)),
        }
    }

    /// The first generated name (suffix 1, 2, ...) that neither exists nor is
    /// being written; such names are written with `no_replace`.
    fn free_name(&self, name: impl Fn(u32) -> String) -> Result<(PathBuf, bool), SnapshotError> {
        for n in 1..=10_000 {
            let path = self.dir.root().join(name(n));
            if !self.saving.contains(&path) && std::fs::symlink_metadata(&path).is_err() {
                return Ok((path, true));
            }
        }
        Err(SnapshotError::AlreadyExists {
            path: self.dir.root().join(name(1)).display().to_string(),
        })
    }

    fn status_block(&self) -> Response {
        let mut fields = Vec::new();
        match &self.job {
            None => fields.push(("status".into(), "idle".into())),
            Some(job) => {
                let state = match job.state {
                    JobState::InProgress => "in_progress",
                    JobState::Completed => "completed",
                    JobState::Failed => "failed",
                };
                fields.push(("status".into(), state.into()));
                fields.push(("operation".into(), job.operation.into()));
                fields.push(("filepath".into(), job.filepath.clone()));
                fields.push(("start_time".into(), fmt_time(job.start)));
                if let Some(end) = job.end {
                    fields.push(("end_time".into(), fmt_time(end)));
                }
                if let Some(e) = &job.error {
                    fields.push(("error".into(), e.clone()));
                }
            }
        }
        Response::Block {
            head: BlockHead::Ok("STATUS".into()),
            fields,
        }
    }
}

/// The error block of a DUMP command.
pub fn error_block(e: &SnapshotError) -> Response {
    Response::Block {
        head: BlockHead::Error(e.to_string()),
        fields: e.detail_lines(),
    }
}

/// `DUMP VERIFY` / `nvecd snapshot verify`: the block for a verify result.
pub fn verify_block(r: &Result<snapshot::VerifyReport, SnapshotError>) -> Response {
    match r {
        Ok(rep) => Response::Block {
            head: BlockHead::Ok(format!("Snapshot is valid (CRC32: 0x{:08X})", rep.crc)),
            fields: vec![
                ("status".into(), "valid".into()),
                ("crc".into(), "verified".into()),
                ("size".into(), "verified".into()),
            ],
        },
        Err(e) => error_block(e),
    }
}

/// `DUMP INFO` / `nvecd snapshot info`: the block for a header.
pub fn info_block(r: &Result<snapshot::Header, SnapshotError>) -> Response {
    match r {
        Ok(h) => Response::Block {
            head: BlockHead::Ok("INFO".into()),
            fields: vec![
                ("version".into(), h.version.to_string()),
                ("event_store_count".into(), h.event_count.to_string()),
                ("vector_store_count".into(), h.vector_count.to_string()),
                ("co_occurrence_count".into(), h.pair_count.to_string()),
                ("file_size".into(), h.file_size.to_string()),
                (
                    "created_at".into(),
                    Utc.timestamp_opt(h.created_at, 0)
                        .single()
                        .map(fmt_time)
                        .unwrap_or_else(|| h.created_at.to_string()),
                ),
            ],
        },
        Err(e) => error_block(e),
    }
}

/// Runs `f` on a blocking thread; a panic there becomes an error, not a crash.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SnapshotError> + Send + 'static,
) -> Result<T, SnapshotError> {
    let span = tracing::Span::current();
    actix_rt::task::spawn_blocking(move || span.in_scope(f))
        .await
        .unwrap_or_else(|e| Err(SnapshotError::Corrupt(format!("internal failure: {e}"))))
}

fn mailbox(e: MailboxError) -> SnapshotError {
    tracing::error!(error = %e, "store actor unavailable");
    SnapshotError::Corrupt(format!("internal failure: {e}"))
}

impl Actor for SnapshotActor {
    type Context = Context<Self>;
}

impl Supervised for SnapshotActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        self.loading = false;
        self.saving.clear();
    }
}

impl Handler<SaveSnapshot> for SnapshotActor {
    type Result = ResponseActFuture<Self, Result<SaveReport, SnapshotError>>;

    fn handle(&mut self, msg: SaveSnapshot, _: &mut Self::Context) -> Self::Result {
        if self.loading {
            return Box::pin(fut::ready(Err(SnapshotError::ReadOnly)));
        }
        let (path, no_replace) = match self.target(&msg.0) {
            Ok(t) => t,
            Err(e) => {
                if let SaveTarget::Path(p) = &msg.0 {
                    self.record_early_failure("save", p, &e);
                }
                return Box::pin(fut::ready(Err(e)));
            }
        };
        if !self.saving.insert(path.clone()) {
            return Box::pin(fut::ready(Err(SnapshotError::SaveInProgress {
                path: path.display().to_string(),
            })));
        }
        self.begin_job("save", &path);
        let (store, dir, p) = (self.store.clone(), self.dir.clone(), path.clone());
        let encode = self.encode;
        let started = std::time::Instant::now();
        let work = async move {
            let image = store.send(FreezeStore).await.map_err(mailbox)??;
            let stats = image.stats();
            let created = Utc::now().timestamp();
            let target = p.clone();
            // On a thread of lower priority, so that the store and the
            // connections take a core from it as soon as they need one.
            let summary = blocking(move || {
                snapshot::parts::at_lower_priority(snapshot::parts::SAVE_NICE, || {
                    dir.write_atomically(&target, no_replace, |file| {
                        // Around the page cache where the filesystem allows
                        // it, written by a second thread (snapshot/direct.rs).
                        let (summary, done) = snapshot::direct::write_direct(file, |out| {
                            snapshot::write_source_with(out, &image, created, &target, encode)
                        });
                        let summary = summary?;
                        done.map_err(|e| snapshot::files::map_io(e, &target, &target))?;
                        Ok(summary)
                    })
                })
            })
            .await?;
            Ok(SaveReport {
                path: p,
                stats,
                bytes: summary.header.file_size,
            })
        };
        Box::pin(work.into_actor(self).map(move |res: Result<SaveReport, SnapshotError>, act, _| {
            act.saving.remove(&path);
            let elapsed_ms = started.elapsed().as_millis() as u64;
            match &res {
                Ok(r) => tracing::info!(path = %r.path.display(), bytes = r.bytes, elapsed_ms, "snapshot saved"),
                Err(e) => tracing::error!(path = %path.display(), error = %e, elapsed_ms, "snapshot save failed"),
            }
            act.end_save(&path, res.as_ref().err().map(|e| e.to_string()));
            res
        }))
    }
}

impl Handler<DumpRequest> for SnapshotActor {
    type Result = ResponseActFuture<Self, Response>;

    fn handle(&mut self, msg: DumpRequest, ctx: &mut Self::Context) -> Self::Result {
        match msg.0 {
            DumpCommand::Status => Box::pin(fut::ready(self.status_block())),
            DumpCommand::Save { path } => {
                let target = path.map(SaveTarget::Path).unwrap_or(SaveTarget::DefaultName);
                let save = <Self as Handler<SaveSnapshot>>::handle(self, SaveSnapshot(target), ctx);
                Box::pin(save.map(|res, _, _| match res {
                    Ok(r) => Response::Block {
                        head: BlockHead::Ok(format!("Snapshot saved: {}", r.path.display())),
                        fields: vec![
                            ("event_store_contexts".into(), r.stats.contexts.to_string()),
                            ("vector_store_vectors".into(), r.stats.vectors.to_string()),
                            (
                                "co_occurrence_pairs".into(),
                                r.stats.co_occurrence_pairs.to_string(),
                            ),
                            ("size".into(), format!("{} bytes", r.bytes)),
                        ],
                    },
                    Err(e) => error_block(&e),
                }))
            }
            DumpCommand::Verify { path } => {
                let (dir, opts) = (self.dir.clone(), self.options());
                Box::pin(
                    async move {
                        let path = dir.resolve(&path)?;
                        blocking(move || {
                            let mut f = dir.open_for_read(&path)?;
                            snapshot::verify_file(&mut f, &path, opts)
                        })
                        .await
                    }
                    .into_actor(self)
                    .map(|r, _, _| verify_block(&r)),
                )
            }
            DumpCommand::Info { path } => {
                let dir = self.dir.clone();
                Box::pin(
                    async move {
                        let path = dir.resolve(&path)?;
                        blocking(move || {
                            let mut f = dir.open_for_read(&path)?;
                            snapshot::read_info(&mut f, &path)
                        })
                        .await
                    }
                    .into_actor(self)
                    .map(|r, _, _| info_block(&r)),
                )
            }
            DumpCommand::Load { path } => Box::pin(self.load(path).map(|res, _, _| match res {
                Ok(s) => Response::Block {
                    head: BlockHead::Ok(format!(
                        "Snapshot loaded: {} events, {} vectors",
                        s.events, s.vectors
                    )),
                    fields: vec![
                        ("event_store_contexts".into(), s.contexts.to_string()),
                        ("vector_store_vectors".into(), s.vectors.to_string()),
                        ("co_occurrence_pairs".into(), s.co_occurrence_pairs.to_string()),
                    ],
                },
                Err(e) => error_block(&e),
            })),
        }
    }
}

impl SnapshotActor {
    fn load(&mut self, user_path: String) -> ResponseActFuture<Self, Result<StoreStats, SnapshotError>> {
        if self.loading {
            return Box::pin(fut::ready(Err(SnapshotError::LoadInProgress)));
        }
        let path = match self.dir.resolve(&user_path) {
            Ok(p) => p,
            Err(e) => {
                self.record_early_failure("load", &user_path, &e);
                return Box::pin(fut::ready(Err(e)));
            }
        };
        self.loading = true;
        self.begin_job("load", &path);
        let (store, dir, opts, p) = (self.store.clone(), self.dir.clone(), self.options(), path.clone());
        let started = std::time::Instant::now();
        let work = async move {
            let mut file = dir.open_for_read(&p)?;
            store.send(BeginLoad).await.map_err(mailbox)??;
            let feeder = store.clone();
            let decoded = blocking(move || {
                let rt = tokio::runtime::Handle::current();
                let mut feed = LoadFeed::new(feeder);
                snapshot::load_file(&mut file, &p, opts, |batch| feed.push(&rt, batch))?;
                feed.drain(&rt)
            })
            .await;
            match decoded {
                Ok(_) => store.send(FinishLoad).await.map_err(mailbox)?,
                Err(e) => {
                    let _ = store.send(AbortLoad).await;
                    Err(e)
                }
            }
        };
        Box::pin(work.into_actor(self).map(move |res: Result<StoreStats, SnapshotError>, act, _| {
            act.loading = false;
            let elapsed_ms = started.elapsed().as_millis() as u64;
            match &res {
                Ok(s) => tracing::info!(path = %path.display(), events = s.events, vectors = s.vectors, elapsed_ms, "snapshot loaded"),
                Err(e) => tracing::error!(path = %path.display(), error = %e, elapsed_ms, "snapshot load failed"),
            }
            act.end_job(&path, res.as_ref().err().map(|e| e.to_string()));
            res
        }))
    }
}

/// Sent by `server.rs` (restore on start): load a snapshot file, all or nothing.
#[derive(Debug, Message)]
#[rtype(result = "Result<StoreStats, SnapshotError>")]
pub struct LoadSnapshot {
    pub path: String,
}

impl Handler<LoadSnapshot> for SnapshotActor {
    type Result = ResponseActFuture<Self, Result<StoreStats, SnapshotError>>;
    fn handle(&mut self, msg: LoadSnapshot, _: &mut Self::Context) -> Self::Result {
        self.load(msg.path)
    }
}

impl Handler<GetSnapshotStats> for SnapshotActor {
    type Result = MessageResult<GetSnapshotStats>;
    fn handle(&mut self, _: GetSnapshotStats, _: &mut Self::Context) -> Self::Result {
        MessageResult(SnapshotStats {
            loading: self.loading,
            saves_running: self.saving.len(),
            last_save: self.last_save.clone(),
        })
    }
}

impl Handler<PruneAutoSnapshots> for SnapshotActor {
    type Result = ResponseFuture<Result<Vec<PathBuf>, SnapshotError>>;
    fn handle(&mut self, msg: PruneAutoSnapshots, _: &mut Self::Context) -> Self::Result {
        let dir = self.dir.clone();
        Box::pin(async move { blocking(move || dir.prune_auto(msg.retain)).await })
    }
}
