//! Actors driven directly by messages, without TCP: what the protocol cannot
//! reach on its own (two auto saves in one second, decay on its timer).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use nvecd::actors::scheduler::SchedulerActor;
use nvecd::actors::snapshot::{LoadSnapshot, SaveSnapshot, SaveTarget, SnapshotActor};
use nvecd::actors::store::{ExecuteBatch, GetStats, StoreActor, StoreOp};
use nvecd::protocol::command::EventArgs;
use nvecd::snapshot::files::SnapshotDir;
use nvecd::store::EventKind;

use crate::support::{test_config, TestServer};

fn event(ctx: &str, id: &str, score: u8) -> StoreOp {
    StoreOp::AddEvent(EventArgs {
        ctx: ctx.into(),
        kind: EventKind::Add,
        id: id.into(),
        score,
    })
}

#[test]
fn two_auto_saves_in_the_same_second_do_not_overwrite_each_other() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = test_config(tmp.path());
    actix_rt::System::new().block_on(async move {
        let store = StoreActor::new(config.store_config()).start();
        let dir = Arc::new(SnapshotDir::open(&config.snapshot.dir).expect("dir"));
        let snapshot = SnapshotActor::new(store.clone(), dir, 0).start();
        store
            .send(ExecuteBatch(vec![event("u1", "a", 5), event("u1", "b", 5)]))
            .await
            .expect("store");
        let (a, b, c) = futures_util::future::join3(
            snapshot.send(SaveSnapshot(SaveTarget::Auto)),
            snapshot.send(SaveSnapshot(SaveTarget::Auto)),
            snapshot.send(SaveSnapshot(SaveTarget::Auto)),
        )
        .await;
        let paths: std::collections::HashSet<_> = [a, b, c]
            .into_iter()
            .map(|r| r.expect("mailbox").expect("save").path)
            .collect();
        assert_eq!(paths.len(), 3, "{paths:?}");
        for p in &paths {
            let name = p.file_name().expect("name").to_string_lossy().to_string();
            assert!(nvecd::snapshot::files::parse_auto_name(&name).is_some(), "{name}");
        }
    });
}

#[test]
fn decay_runs_on_its_interval_and_drops_small_pairs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(tmp.path());
    config.events.decay_interval_sec = 1;
    config.events.decay_alpha = 0.001;
    let config = Arc::new(config);
    actix_rt::System::new().block_on(async move {
        let store = StoreActor::new(config.store_config()).start();
        let dir = Arc::new(SnapshotDir::open(&config.snapshot.dir).expect("dir"));
        let snapshot = SnapshotActor::new(store.clone(), dir, 0).start();
        let _scheduler = SchedulerActor::new(store.clone(), snapshot, config.clone()).start();
        // 1 * 1 = 1; after three decays by 0.001 it is 1e-9 < 1e-6: dropped.
        store
            .send(ExecuteBatch(vec![event("u1", "a", 1), event("u1", "b", 1)]))
            .await
            .expect("store");
        assert_eq!(
            store
                .send(GetStats)
                .await
                .expect("stats")
                .stats
                .co_occurrence_pairs,
            1
        );
        let mut pairs = 1;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            pairs = store
                .send(GetStats)
                .await
                .expect("stats")
                .stats
                .co_occurrence_pairs;
            if pairs == 0 {
                break;
            }
        }
        assert_eq!(pairs, 0, "decay never dropped the pair");
    });
}

#[test]
fn stray_temporary_files_are_removed_at_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let snaps = tmp.path().join("snapshots");
    std::fs::create_dir_all(&snaps).expect("mkdir");
    // What an interrupted save leaves behind: the writer's temp-name pattern.
    let stray = ".keep.nvec.tmp.12345.0";
    assert!(nvecd::snapshot::files::is_temp_name(stray));
    std::fs::write(snaps.join(stray), b"partial").expect("write");
    std::fs::write(snaps.join("keep.nvec"), b"kept").expect("write");
    std::fs::write(snaps.join(".hidden.tmp"), b"not ours").expect("write");
    let server = TestServer::spawn_config(test_config(tmp.path()), tmp);
    assert_eq!(server.client().cmd("PING"), "OK PONG");
    assert!(!snaps.join(stray).exists(), "stray temp file survived a start");
    assert!(snaps.join("keep.nvec").exists());
    assert!(snaps.join(".hidden.tmp").exists());
}

/// The store's figures, read once through its mailbox.
async fn status(store: &Addr<StoreActor>) -> nvecd::actors::store::StoreStatus {
    store.send(GetStats).await.expect("stats")
}

/// A store actor with a reserve of `percent` % and a snapshot actor on
/// `config.snapshot.dir`: `ops` stored, saved, then loaded back. Checks that
/// there is no reserve before the LOAD.
async fn loaded_back(
    config: &nvecd::config::Config,
    percent: u8,
    ops: Vec<StoreOp>,
) -> (Addr<StoreActor>, nvecd::store::StoreStats) {
    let store = StoreActor::new(config.store_config())
        .cow_reserve_percent(percent)
        .start();
    let dir = Arc::new(SnapshotDir::open(&config.snapshot.dir).expect("dir"));
    let snapshot = SnapshotActor::new(store.clone(), dir, 0).start();
    store.send(ExecuteBatch(ops)).await.expect("store");
    let target = SaveTarget::Path("r.nvec".into());
    snapshot
        .send(SaveSnapshot(target))
        .await
        .expect("mailbox")
        .expect("save");
    assert_eq!(
        status(&store).await.cow_reserve_bytes,
        0,
        "no reserve without a LOAD"
    );
    let loaded = snapshot
        .send(LoadSnapshot {
            path: "r.nvec".into(),
        })
        .await
        .expect("mailbox")
        .expect("load");
    (store, loaded)
}

#[test]
fn a_load_makes_the_copy_on_write_reserve_its_share_of_the_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = test_config(tmp.path());
    actix_rt::System::new().block_on(async move {
        let ops = (0..3000)
            .map(|i| event(&format!("u{}", i % 60), &format!("item{}", i % 400), 5))
            .collect();
        let (store, loaded) = loaded_back(&config, 100, ops).await;
        let used = loaded.used_memory_bytes;
        assert!(
            used > 1 << 18,
            "a state worth a reserve of several pieces: {used}"
        );
        // Made a step at a time after the reply; bounded wait, no timing
        // asserted.
        let mut made = 0;
        for _ in 0..2000 {
            made = status(&store).await.cow_reserve_bytes;
            if made >= used {
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(made >= used, "reserve {made} for a store of {used} bytes");
        assert!(
            made < used + (1 << 17),
            "whole pieces of about 64 KiB: {made} for {used}"
        );
        // The store serves as before.
        let replies = store
            .send(ExecuteBatch(vec![event("u1", "item1", 9)]))
            .await
            .expect("store");
        assert_eq!(replies, vec![nvecd::protocol::Response::Ok]);
        assert_eq!(status(&store).await.stats.events, loaded.events + 1);
    });
}

#[test]
fn no_reserve_is_made_when_its_share_is_zero() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = test_config(tmp.path());
    actix_rt::System::new().block_on(async move {
        let ops = vec![event("u1", "a", 5), event("u1", "b", 5)];
        let (store, _) = loaded_back(&config, 0, ops).await;
        for _ in 0..20 {
            assert_eq!(status(&store).await.cow_reserve_bytes, 0);
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
    });
}
