//! `SchedulerActor`: the timed jobs. Co-occurrence decay every
//! `events.decay_interval_sec`; an auto snapshot every `snapshot.interval_sec`
//! followed by retention pruning. States: Waiting → Saving → Pruning → Waiting.
//! Supervised: a restart re-arms the timers in `started()`.

use actix::prelude::*;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;

use super::snapshot::{
    fmt_time, prune_auto_snapshots, GetSnapshotStats, SaveSnapshot, SaveTarget, SnapshotActor,
};
use super::store::{RunDecay, StoreActor};
use crate::config::Config;

/// Sent by a connection for INFO.
#[derive(Debug, Message)]
#[rtype(result = "SchedulerStats")]
pub struct GetSchedulerStats;

/// Sent by the auto-snapshot timer to itself (and by tests): take an auto
/// snapshot now unless one is running or a load is in progress.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RunAutoSnapshot;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerStats {
    pub interval_sec: u64,
    pub taken: u64,
    pub failed: u64,
    pub next: Option<DateTime<Utc>>,
}

impl SchedulerStats {
    /// The `auto_snapshot*` INFO lines.
    pub fn fields(&self) -> Vec<(String, String)> {
        vec![
            ("auto_snapshot_interval_sec".into(), self.interval_sec.to_string()),
            ("auto_snapshots_taken".into(), self.taken.to_string()),
            ("auto_snapshots_failed".into(), self.failed.to_string()),
            (
                "next_auto_snapshot_time".into(),
                self.next.map(fmt_time).unwrap_or_default(),
            ),
        ]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Saving,
    Pruning,
}

pub struct SchedulerActor {
    store: Addr<StoreActor>,
    snapshot: Addr<SnapshotActor>,
    config: Arc<Config>,
    state: State,
    taken: u64,
    failed: u64,
    next: Option<DateTime<Utc>>,
}

impl SchedulerActor {
    pub fn new(store: Addr<StoreActor>, snapshot: Addr<SnapshotActor>, config: Arc<Config>) -> Self {
        SchedulerActor {
            store,
            snapshot,
            config,
            state: State::Waiting,
            taken: 0,
            failed: 0,
            next: None,
        }
    }

    fn auto_interval(&self) -> Option<Duration> {
        Some(self.config.snapshot.interval_sec)
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
    }

    fn schedule_next(&mut self) {
        self.next = self
            .auto_interval()
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| Utc::now() + d);
    }
}

impl Actor for SchedulerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let decay = self.config.events.decay_interval_sec;
        if decay > 0 {
            let alpha = self.config.events.decay_alpha as f32;
            ctx.run_interval(Duration::from_secs(decay), move |act, ctx| {
                act.store
                    .send(RunDecay { alpha })
                    .into_actor(act)
                    .map(|res, _, _| match res {
                        Ok(r) => tracing::info!(
                            pairs_before = r.pairs_before,
                            pairs_after = r.pairs_after,
                            "co-occurrence decay"
                        ),
                        Err(e) => tracing::error!(error = %e, "co-occurrence decay failed"),
                    })
                    .spawn(ctx);
            });
        }
        if let Some(every) = self.auto_interval() {
            self.schedule_next();
            ctx.run_interval(every, |act, ctx| {
                act.schedule_next();
                ctx.notify(RunAutoSnapshot);
            });
        }
    }
}

impl Supervised for SchedulerActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        tracing::warn!("scheduler restarting");
        self.state = State::Waiting;
    }
}

impl Handler<RunAutoSnapshot> for SchedulerActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: RunAutoSnapshot, _: &mut Self::Context) -> Self::Result {
        if self.state != State::Waiting {
            tracing::warn!("auto snapshot skipped: the previous one is still running");
            return Box::pin(fut::ready(()));
        }
        self.state = State::Saving;
        let snapshot = self.snapshot.clone();
        let retain = self.config.snapshot.retain;
        let work = async move {
            match snapshot.send(GetSnapshotStats).await {
                Ok(s) if s.busy() => return None,
                Ok(_) => {}
                Err(e) => return Some(Err(e.to_string())),
            }
            Some(match snapshot.send(SaveSnapshot(SaveTarget::Auto)).await {
                Ok(Ok(report)) => Ok((report, snapshot)),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            })
        };
        Box::pin(work.into_actor(self).then(move |res, act, _| {
            let prune = match res {
                None => {
                    tracing::warn!("auto snapshot skipped: a save or load is in progress");
                    None
                }
                Some(Err(e)) => {
                    act.failed += 1;
                    tracing::error!(error = %e, "auto snapshot failed; nothing pruned");
                    None
                }
                Some(Ok((report, snapshot))) => {
                    act.taken += 1;
                    tracing::info!(path = %report.path.display(), bytes = report.bytes, "auto snapshot saved");
                    act.state = State::Pruning;
                    Some(snapshot)
                }
            };
            async move {
                if let Some(snapshot) = prune {
                    prune_auto_snapshots(&snapshot, retain).await;
                }
            }
            .into_actor(act)
            .map(|_, act, _| act.state = State::Waiting)
        }))
    }
}

impl Handler<GetSchedulerStats> for SchedulerActor {
    type Result = MessageResult<GetSchedulerStats>;
    fn handle(&mut self, _: GetSchedulerStats, _: &mut Self::Context) -> Self::Result {
        MessageResult(SchedulerStats {
            interval_sec: self.config.snapshot.interval_sec,
            taken: self.taken,
            failed: self.failed,
            next: self.next,
        })
    }
}
