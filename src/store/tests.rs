//! Tests of the public `Store` API: hand-computed scoring cases, duplicate
//! rules, freeze isolation, builder round trips and a randomised model test.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;

use super::*;

const SEC: u64 = 1000;

fn cfg() -> StoreConfig {
    StoreConfig::default()
}

fn store() -> Store {
    Store::new(cfg())
}

fn store_with(f: impl FnOnce(&mut StoreConfig)) -> Store {
    let mut c = cfg();
    f(&mut c);
    Store::new(c)
}

/// `(id, score rounded to 4 decimals)` pairs, as the wire shows them.
fn ids(res: &[Scored]) -> Vec<(String, String)> {
    res.iter()
        .map(|s| (s.id.to_string(), format!("{:.4}", s.score)))
        .collect()
}

fn expect(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn sim(s: &Store, id: &str, k: usize, mode: SimMode) -> Vec<(String, String)> {
    ids(&s.similar(id, k, mode, None).expect("sim succeeds"))
}

type Pairs = Vec<(String, String, f32)>;

type Dump = (
    Vec<(String, Vec<(String, i32, u64, EventKind)>)>,
    Pairs,
    Vec<(String, Vec<f32>)>,
);

fn dump(img: &StoreImage) -> Dump {
    let mut ctxs = Vec::new();
    img.for_each_context_sorted(|name, evs| {
        ctxs.push((
            name.to_string(),
            evs.iter()
                .map(|e| (e.id.to_string(), e.score, e.timestamp_ms, e.kind))
                .collect(),
        ));
        Ok::<(), Infallible>(())
    })
    .expect("infallible");
    let mut pairs = Vec::new();
    img.for_each_pair_sorted(|a, b, s| {
        pairs.push((a.to_string(), b.to_string(), s));
        Ok::<(), Infallible>(())
    })
    .expect("infallible");
    let mut vecs = Vec::new();
    img.for_each_vector_sorted(|id, v| {
        vecs.push((id.to_string(), v.to_vec()));
        Ok::<(), Infallible>(())
    })
    .expect("infallible");
    (ctxs, pairs, vecs)
}

/// Feeds an image into a builder the way the snapshot reader would.
fn rebuild(img: &StoreImage, cfg: StoreConfig) -> Result<Store, StoreError> {
    let (ctxs, pairs, vecs) = dump(img);
    let mut b = StoreBuilder::new(cfg);
    // One numbering for the load's events and pairs, as the reader's.
    let mut namer = ItemNamer::default();
    b.apply(LoadBatch::Contexts(namer.contexts(ctxs)))?;
    b.apply(LoadBatch::Pairs(namer.batch(
        pairs.iter().map(|(a, b, score)| (a.as_str(), b.as_str(), *score)),
    )))?;
    b.apply(LoadBatch::Dimension(img.stats().dimension as usize))?;
    b.apply(LoadBatch::Vectors(
        vecs.into_iter()
            .map(|(id, values)| LoadedVector { id, values })
            .collect(),
    ))?;
    Ok(b.finish())
}

fn counts(s: StoreStats) -> StoreStats {
    StoreStats {
        used_memory_bytes: 0,
        ..s
    }
}

fn spec_example() -> Store {
    let mut s = store();
    assert!(s.add_event("u1", EventKind::Add, "item1", 100, 0));
    assert!(s.add_event("u1", EventKind::Add, "item2", 80, 0));
    assert!(s.add_event("u2", EventKind::Add, "item1", 100, 0));
    assert!(s.add_event("u2", EventKind::Add, "item3", 90, 0));
    s
}

// ---------------------------------------------------------------- events

#[test]
fn spec_example_scores_events_relative_to_the_best_neighbour() {
    let s = spec_example();
    assert_eq!(
        sim(&s, "item1", 10, SimMode::Events),
        expect(&[("item3", "1.0000"), ("item2", "0.8889")])
    );
    let st = s.stats();
    assert_eq!((st.contexts, st.events, st.co_occurrence_pairs), (2, 4, 2));
    assert!(st.used_memory_bytes > 0);
}

#[test]
fn duplicate_add_within_window_is_not_stored() {
    let mut s = store();
    assert!(s.add_event("u", EventKind::Add, "i", 5, 0));
    assert!(!s.add_event("u", EventKind::Add, "i", 5, 59 * SEC));
    assert_eq!(s.stats().events, 1);
}

#[test]
fn add_after_the_window_or_with_another_score_is_stored() {
    let mut s = store();
    assert!(s.add_event("u", EventKind::Add, "i", 5, 0));
    assert!(s.add_event("u", EventKind::Add, "i", 6, SEC));
    assert!(s.add_event("u2", EventKind::Add, "i", 5, SEC));
    assert!(s.add_event("u", EventKind::Add, "i", 5, 60 * SEC));
    // The window runs from the last stored occurrence.
    assert!(!s.add_event("u", EventKind::Add, "i", 5, 100 * SEC));
    assert_eq!(s.stats().events, 4);
}

#[test]
fn duplicate_add_does_not_extend_the_window() {
    let mut s = store();
    assert!(s.add_event("u", EventKind::Add, "i", 5, 0));
    assert!(!s.add_event("u", EventKind::Add, "i", 5, 50 * SEC));
    assert!(s.add_event("u", EventKind::Add, "i", 5, 61 * SEC));
}

#[test]
fn zero_window_or_zero_cache_stores_every_add() {
    for mut s in [
        store_with(|c| c.dedup_window_sec = 0),
        store_with(|c| c.dedup_cache_size = 0),
    ] {
        assert!(s.add_event("u", EventKind::Add, "i", 5, 0));
        assert!(s.add_event("u", EventKind::Add, "i", 5, 0));
    }
}

#[test]
fn dedup_cache_forgets_the_key_stored_longest_ago() {
    let mut s = store_with(|c| c.dedup_cache_size = 2);
    assert!(s.add_event("u", EventKind::Add, "a", 1, 0));
    assert!(s.add_event("u", EventKind::Add, "b", 1, 0));
    assert!(s.add_event("u", EventKind::Add, "c", 1, 0));
    assert!(s.add_event("u", EventKind::Add, "a", 1, SEC));
    assert!(!s.add_event("u", EventKind::Add, "c", 1, SEC));
}

#[test]
fn set_with_the_same_score_as_the_last_state_is_a_duplicate() {
    let mut s = store();
    assert!(s.add_event("u", EventKind::Set, "i", 5, 0));
    assert!(!s.add_event("u", EventKind::Set, "i", 5, 1000 * SEC));
    assert!(s.add_event("u", EventKind::Set, "i", 6, 0));
    assert!(s.add_event("u", EventKind::Set, "i", 5, 0));
    // ADD events do not change the SET/DEL state.
    assert!(s.add_event("u", EventKind::Add, "i", 9, 0));
    assert!(!s.add_event("u", EventKind::Set, "i", 5, 0));
    // State is per context.
    assert!(s.add_event("u2", EventKind::Set, "i", 5, 0));
}

#[test]
fn del_of_an_already_deleted_item_is_a_duplicate() {
    let mut s = store();
    assert!(s.add_event("u", EventKind::Del, "i", 0, 0));
    assert!(!s.add_event("u", EventKind::Del, "i", 0, 0));
    assert!(s.add_event("u", EventKind::Set, "i", 0, 0));
    assert!(!s.add_event("u", EventKind::Set, "i", 0, 0));
    assert!(s.add_event("u", EventKind::Del, "i", 0, 0));
    let img = s.freeze();
    let (ctxs, _, _) = dump(&img);
    assert!(ctxs[0].1.iter().all(|e| e.1 == 0));
}

#[test]
fn del_is_stored_with_score_zero() {
    let mut s = store();
    assert!(s.add_event("u", EventKind::Set, "a", 50, 0));
    assert!(s.add_event("u", EventKind::Del, "b", 77, 0));
    let (ctxs, _, _) = dump(&s.freeze());
    assert_eq!(ctxs[0].1[1], ("b".to_string(), 0, 0, EventKind::Del));
    assert_eq!(s.stats().co_occurrence_pairs, 0);
}

#[test]
fn set_state_is_forgotten_once_evicted_from_the_ring() {
    let mut s = store_with(|c| c.ctx_buffer_size = 2);
    assert!(s.add_event("u", EventKind::Set, "i", 5, 0));
    assert!(s.add_event("u", EventKind::Add, "x", 1, 0));
    assert!(s.add_event("u", EventKind::Add, "y", 1, 0));
    assert!(s.add_event("u", EventKind::Set, "i", 5, 0));
}

#[test]
fn ring_keeps_the_newest_events_and_pairs_only_with_them() {
    let mut s = store_with(|c| c.ctx_buffer_size = 2);
    s.add_event("u", EventKind::Add, "a", 1, 1);
    s.add_event("u", EventKind::Add, "b", 2, 2);
    s.add_event("u", EventKind::Add, "c", 3, 3);
    s.add_event("u", EventKind::Add, "d", 4, 4);
    assert_eq!(s.stats().events, 2);
    let (ctxs, pairs, _) = dump(&s.freeze());
    assert_eq!(
        ctxs[0].1,
        vec![
            ("c".to_string(), 3, 3, EventKind::Add),
            ("d".to_string(), 4, 4, EventKind::Add)
        ]
    );
    // c met a and b (the full buffer before it was appended); d met only b and c.
    let p = |a: &str, b: &str, s| (a.to_string(), b.to_string(), s);
    assert_eq!(
        pairs,
        vec![
            p("a", "b", 2.0),
            p("a", "c", 3.0),
            p("b", "c", 6.0),
            p("b", "d", 8.0),
            p("c", "d", 12.0)
        ]
    );
}

#[test]
fn same_item_is_not_paired_with_itself_but_repeats_pair_again() {
    let mut s = store_with(|c| c.dedup_window_sec = 0);
    s.add_event("u", EventKind::Add, "a", 2, 0);
    s.add_event("u", EventKind::Add, "a", 2, 0);
    s.add_event("u", EventKind::Add, "b", 3, 0);
    let (_, pairs, _) = dump(&s.freeze());
    assert_eq!(pairs, vec![("a".to_string(), "b".to_string(), 12.0)]);
}

#[test]
fn zero_product_creates_no_pair() {
    let mut s = store();
    s.add_event("u", EventKind::Add, "a", 0, 0);
    s.add_event("u", EventKind::Add, "b", 10, 0);
    s.add_event("u", EventKind::Del, "c", 0, 0);
    assert_eq!(s.stats().co_occurrence_pairs, 0);
    assert_eq!(s.stats().events, 3);
    assert_eq!(
        s.similar("a", 5, SimMode::Events, None),
        Err(StoreError::ItemNotFound("a".into()))
    );
}

#[test]
fn decay_scales_scores_and_drops_pairs_below_the_floor() {
    let mut s = spec_example();
    s.add_event("u3", EventKind::Add, "x", 1, 0);
    s.add_event("u3", EventKind::Add, "y", 1, 0);
    let r = s.decay(0.5);
    assert_eq!(
        r,
        DecayReport {
            pairs_before: 3,
            pairs_after: 3
        }
    );
    let r = s.decay(1e-6);
    assert_eq!(
        r,
        DecayReport {
            pairs_before: 3,
            pairs_after: 2
        }
    );
    assert_eq!(s.stats().co_occurrence_pairs, 2);
    let (_, pairs, _) = dump(&s.freeze());
    assert_eq!(pairs.len(), 2);
    assert!(pairs.iter().all(|p| p.0 == "item1"));
    assert_eq!(
        s.similar("x", 5, SimMode::Events, None),
        Err(StoreError::ItemNotFound("x".into()))
    );
}

// ---------------------------------------------------------------- vectors

#[test]
fn vector_metrics_match_hand_computed_values() {
    for (metric, want) in [
        (Metric::Cosine, "0.9746"),
        (Metric::Dot, "32.0000"),
        (Metric::L2, "0.1614"),
    ] {
        let mut s = store_with(|c| c.distance_metric = metric);
        s.set_vector("a", &[1.0, 2.0, 3.0]).expect("valid");
        s.set_vector("b", &[4.0, 5.0, 6.0]).expect("valid");
        assert_eq!(
            sim(&s, "a", 5, SimMode::Vectors),
            expect(&[("b", want)]),
            "{metric:?}"
        );
    }
}

#[test]
fn long_vectors_use_every_lane_and_the_tail() {
    let a: Vec<f32> = (0..19).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..19).map(|i| (i % 3) as f32).collect();
    let mut s = store_with(|c| c.distance_metric = Metric::Dot);
    s.set_vector("b", &b).expect("valid");
    let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    let res = s.similar_to_vector(&a, 1, None).expect("valid");
    assert_eq!(res[0].score, want);
}

#[test]
fn cosine_with_a_zero_vector_scores_zero() {
    let mut s = store();
    s.set_vector("z", &[0.0, 0.0]).expect("valid");
    s.set_vector("a", &[1.0, 0.0]).expect("valid");
    assert_eq!(sim(&s, "z", 5, SimMode::Vectors), expect(&[("a", "0.0000")]));
    assert_eq!(sim(&s, "a", 5, SimMode::Vectors), expect(&[("z", "0.0000")]));
}

#[test]
fn first_vector_fixes_the_dimension() {
    let mut s = store();
    s.set_vector("a", &[1.0, 2.0]).expect("valid");
    assert_eq!(
        s.set_vector("b", &[1.0, 2.0, 3.0]),
        Err(StoreError::DimensionMismatch { expected: 2, got: 3 })
    );
    assert_eq!(s.set_vector("b", &[]), Err(StoreError::InvalidVector));
    assert_eq!(s.stats().dimension, 2);
    assert_eq!(s.stats().vectors, 1);
}

#[test]
fn deleting_every_vector_unfixes_the_dimension() {
    let mut s = store();
    s.set_vector("a", &[1.0, 2.0]).expect("valid");
    s.set_vector("b", &[1.0, 2.0]).expect("valid");
    s.delete_vector("a").expect("present");
    assert_eq!(s.stats().dimension, 2);
    s.delete_vector("b").expect("present");
    assert_eq!(s.stats().dimension, 0);
    s.set_vector("c", &[1.0]).expect("dimension is free again");
    assert_eq!(s.stats().dimension, 1);
}

#[test]
fn default_dimension_is_fixed_from_the_start() {
    let mut s = store_with(|c| c.default_dimension = 3);
    assert_eq!(s.stats().dimension, 3);
    assert_eq!(
        s.set_vector("a", &[1.0]),
        Err(StoreError::DimensionMismatch { expected: 3, got: 1 })
    );
    assert_eq!(
        s.similar_to_vector(&[1.0], 1, None),
        Err(StoreError::DimensionMismatch { expected: 3, got: 1 })
    );
}

#[test]
fn vecset_of_an_existing_id_replaces_it_and_vecdel_of_unknown_fails() {
    let mut s = store_with(|c| c.distance_metric = Metric::Dot);
    s.set_vector("a", &[1.0]).expect("valid");
    s.set_vector("b", &[2.0]).expect("valid");
    s.set_vector("b", &[3.0]).expect("valid");
    assert_eq!(s.stats().vectors, 2);
    assert_eq!(sim(&s, "a", 5, SimMode::Vectors), expect(&[("b", "3.0000")]));
    assert_eq!(
        s.delete_vector("nope"),
        Err(StoreError::ItemNotFound("nope".into()))
    );
    s.delete_vector("b").expect("present");
    assert_eq!(s.delete_vector("b"), Err(StoreError::ItemNotFound("b".into())));
}

#[test]
fn sim_vectors_of_an_item_without_vector_is_not_found() {
    let s = spec_example();
    assert_eq!(
        s.similar("item1", 5, SimMode::Vectors, None),
        Err(StoreError::ItemNotFound("item1".into()))
    );
    assert_eq!(
        s.similar("ghost", 5, SimMode::Fusion, None),
        Err(StoreError::ItemNotFound("ghost".into()))
    );
}

#[test]
fn simv_checks_dimension_and_excludes_nothing() {
    let mut s = store();
    assert_eq!(s.similar_to_vector(&[1.0, 0.0], 5, None), Ok(vec![]));
    s.set_vector("a", &[1.0, 0.0]).expect("valid");
    s.set_vector("b", &[0.0, 1.0]).expect("valid");
    assert_eq!(
        s.similar_to_vector(&[1.0], 5, None),
        Err(StoreError::DimensionMismatch { expected: 2, got: 1 })
    );
    let res = s.similar_to_vector(&[1.0, 0.0], 5, None).expect("valid");
    assert_eq!(ids(&res), expect(&[("a", "1.0000"), ("b", "0.0000")]));
    assert_eq!(
        s.similar_to_vector(&[1.0, 0.0], 0, None),
        Err(StoreError::InvalidTopK { max: 1000 })
    );
}

// ---------------------------------------------------------------- ranking rules

#[test]
fn top_k_outside_one_to_max_is_rejected_before_anything_else() {
    let s = store_with(|c| c.max_top_k = 3);
    for k in [0, 4] {
        assert_eq!(
            s.similar("ghost", k, SimMode::Events, None),
            Err(StoreError::InvalidTopK { max: 3 })
        );
    }
    assert_eq!(
        s.similar("ghost", 3, SimMode::Events, None),
        Err(StoreError::ItemNotFound("ghost".into()))
    );
}

#[test]
fn ties_are_ordered_by_id_ascending_and_cut_to_top_k() {
    let mut s = store_with(|c| c.distance_metric = Metric::Dot);
    for id in ["d", "b", "c", "a", "e"] {
        s.set_vector(id, &[1.0]).expect("valid");
    }
    s.set_vector("z", &[2.0]).expect("valid");
    let res = s.similar_to_vector(&[1.0], 3, None).expect("valid");
    assert_eq!(
        ids(&res),
        expect(&[("z", "2.0000"), ("a", "1.0000"), ("b", "1.0000")])
    );
    // Byte order: upper case sorts before lower case.
    s.set_vector("B", &[1.0]).expect("valid");
    let res = s.similar("z", 2, SimMode::Vectors, None).expect("valid");
    assert_eq!(ids(&res), expect(&[("B", "2.0000"), ("a", "2.0000")]));
}

#[test]
fn the_query_item_is_never_a_result() {
    let mut s = spec_example();
    s.set_vector("item1", &[1.0, 0.0]).expect("valid");
    s.set_vector("item2", &[1.0, 0.0]).expect("valid");
    for mode in [SimMode::Events, SimMode::Vectors, SimMode::Fusion] {
        let res = s.similar("item1", 10, mode, None).expect("valid");
        assert!(res.iter().all(|r| &*r.id != "item1"), "{mode:?}");
        assert!(!res.is_empty());
    }
}

#[test]
fn min_score_drops_results_after_the_cut() {
    let s = spec_example();
    let res = s.similar("item1", 1, SimMode::Events, Some(0.5)).expect("valid");
    assert_eq!(ids(&res), expect(&[("item3", "1.0000")]));
    let res = s.similar("item1", 2, SimMode::Events, Some(0.9)).expect("valid");
    assert_eq!(ids(&res), expect(&[("item3", "1.0000")]));
    let res = s
        .similar("item1", 2, SimMode::Events, Some(0.8889))
        .expect("valid");
    assert_eq!(res.len(), 1, "0.88888.. is below 0.8889");
    let res = s.similar("item1", 2, SimMode::Events, Some(2.0)).expect("valid");
    assert!(res.is_empty());
}

#[test]
fn events_mode_with_a_vector_but_no_neighbours_is_empty() {
    let mut s = store();
    s.set_vector("a", &[1.0]).expect("valid");
    s.set_vector("b", &[1.0]).expect("valid");
    assert_eq!(s.similar("a", 5, SimMode::Events, None), Ok(vec![]));
}

// ---------------------------------------------------------------- fusion

#[test]
fn fusion_normalises_each_list_and_weights_them() {
    let mut s = store();
    s.set_vector("a", &[1.0, 0.0]).expect("valid");
    s.set_vector("b", &[1.0, 0.0]).expect("valid");
    s.set_vector("c", &[0.0, 1.0]).expect("valid");
    s.set_vector("d", &[1.0, 1.0]).expect("valid");
    s.add_event("u1", EventKind::Add, "a", 10, 0);
    s.add_event("u1", EventKind::Add, "c", 10, 0);
    s.add_event("u2", EventKind::Add, "a", 10, 0);
    s.add_event("u2", EventKind::Add, "d", 5, 0);
    // vec: b 1, d .7071, c 0 -> normalised b 1, d .7071, c 0.
    // ev: c 1, d .5 -> normalised c 1, d 0.
    // fused: b .6, d .6*.7071 = .4243, c .4.
    assert_eq!(
        sim(&s, "a", 3, SimMode::Fusion),
        expect(&[("b", "0.6000"), ("d", "0.4243"), ("c", "0.4000")])
    );
    // Cut to top_k after fusion; candidates come from the top 3*k of each list.
    assert_eq!(sim(&s, "a", 1, SimMode::Fusion), expect(&[("b", "0.6000")]));
}

#[test]
fn fusion_with_only_events_uses_the_normalised_event_scores_alone() {
    let mut s = store();
    s.add_event("u1", EventKind::Add, "x", 10, 0);
    s.add_event("u1", EventKind::Add, "y", 10, 0);
    s.add_event("u2", EventKind::Add, "x", 10, 0);
    s.add_event("u2", EventKind::Add, "z", 5, 0);
    assert_eq!(
        sim(&s, "x", 5, SimMode::Fusion),
        expect(&[("y", "1.0000"), ("z", "0.0000")])
    );
}

#[test]
fn fusion_list_of_equal_scores_is_clamped_not_normalised() {
    let mut s = store_with(|c| c.distance_metric = Metric::Dot);
    s.set_vector("a", &[1.0]).expect("valid");
    s.set_vector("c", &[2.0]).expect("valid");
    s.set_vector("b", &[2.0]).expect("valid");
    // Both dot products are 2.0: clamped to 1.0, vectors are the only source.
    assert_eq!(
        sim(&s, "a", 5, SimMode::Fusion),
        expect(&[("b", "1.0000"), ("c", "1.0000")])
    );
    // One neighbour scores 1.0 (kept); with both sources it is weighted.
    s.add_event("u", EventKind::Add, "a", 10, 0);
    s.add_event("u", EventKind::Add, "c", 10, 0);
    assert_eq!(
        sim(&s, "a", 5, SimMode::Fusion),
        expect(&[("c", "1.0000"), ("b", "0.6000")])
    );
    // Negative scores clamp to 0.
    let mut s = store_with(|c| c.distance_metric = Metric::Dot);
    s.set_vector("a", &[1.0]).expect("valid");
    s.set_vector("b", &[-2.0]).expect("valid");
    assert_eq!(sim(&s, "a", 5, SimMode::Fusion), expect(&[("b", "0.0000")]));
}

// ---------------------------------------------------------------- images and builder

#[test]
fn store_is_send_and_image_is_send_and_sync() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<Store>();
    send_sync::<StoreImage>();
    send::<StoreBuilder>();
}

fn sample_store() -> Store {
    let mut s = store_with(|c| c.ctx_buffer_size = 3);
    let mut t = 0;
    for (ctx, kind, id, score) in [
        ("u1", EventKind::Add, "item1", 100),
        ("u1", EventKind::Add, "item2", 80),
        ("u2", EventKind::Add, "item1", 100),
        ("u2", EventKind::Add, "item3", 90),
        ("u1", EventKind::Set, "item3", 40),
        ("u1", EventKind::Add, "item4", 10),
        ("s", EventKind::Del, "item2", 0),
        ("s", EventKind::Set, "item1", 7),
        ("a", EventKind::Add, "item9", 3),
    ] {
        t += SEC;
        s.add_event(ctx, kind, id, score, t);
    }
    s.set_vector("item1", &[1.0, 0.0, 0.5]).expect("valid");
    s.set_vector("item2", &[0.5, 1.0, 0.0]).expect("valid");
    s.set_vector("v3", &[0.0, 0.0, 1.0]).expect("valid");
    s.set_vector("v0", &[1.0, 1.0, 1.0]).expect("valid");
    s
}

#[test]
fn image_keeps_the_frozen_state_while_the_store_changes() {
    let mut s = sample_store();
    let img = s.freeze();
    let before = dump(&img);
    let stats = img.stats();
    s.add_event("u1", EventKind::Add, "item1", 55, 100 * SEC);
    s.add_event("new", EventKind::Add, "item1", 1, 100 * SEC);
    s.add_event("new", EventKind::Add, "fresh", 1, 100 * SEC);
    s.decay(0.5);
    s.set_vector("item1", &[9.0, 9.0, 9.0]).expect("valid");
    s.delete_vector("item2").expect("present");
    s.delete_vector("v3").expect("present");
    s.set_vector("v4", &[4.0, 4.0, 4.0]).expect("valid");
    assert_ne!(dump(&s.freeze()), before);
    assert_eq!(dump(&img), before);
    assert_eq!(img.stats(), stats);
    assert_eq!(before.0.len(), 4);
    assert_eq!(before.2.len(), 4);
}

#[test]
fn image_lists_are_sorted_and_pairs_are_listed_once() {
    let s = sample_store();
    let (ctxs, pairs, vecs) = dump(&s.freeze());
    let names: Vec<&str> = ctxs.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(names, vec!["a", "s", "u1", "u2"]);
    assert!(pairs.windows(2).all(|w| (&w[0].0, &w[0].1) < (&w[1].0, &w[1].1)));
    assert!(pairs.iter().all(|p| p.0 < p.1));
    assert_eq!(pairs.len() as u64, s.stats().co_occurrence_pairs);
    let ids: Vec<&str> = vecs.iter().map(|v| v.0.as_str()).collect();
    assert_eq!(ids, vec!["item1", "item2", "v0", "v3"]);
    let events: usize = ctxs.iter().map(|c| c.1.len()).sum();
    assert_eq!(events as u64, s.stats().events);
}

#[test]
fn image_callbacks_stop_at_the_first_error() {
    let s = sample_store();
    let img = s.freeze();
    let mut n = 0;
    let r = img.for_each_pair_sorted(|_, _, _| {
        n += 1;
        Err("stop")
    });
    assert_eq!((r, n), (Err("stop"), 1));
}

#[test]
fn builder_round_trip_gives_the_same_answers() {
    for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
        let mut c = cfg();
        c.ctx_buffer_size = 3;
        c.distance_metric = metric;
        let mut s = Store::new(c.clone());
        let (_, _, vecs) = dump(&sample_store().freeze());
        s.add_event("u1", EventKind::Add, "item1", 100, SEC);
        s.add_event("u1", EventKind::Add, "item2", 80, 2 * SEC);
        s.add_event("u2", EventKind::Add, "item1", 100, 3 * SEC);
        s.add_event("u2", EventKind::Add, "item3", 90, 4 * SEC);
        s.add_event("u1", EventKind::Set, "item3", 40, 5 * SEC);
        s.add_event("s", EventKind::Del, "item2", 0, 6 * SEC);
        for (id, v) in &vecs {
            s.set_vector(id, v).expect("valid");
        }
        s.decay(0.9);
        let img = s.freeze();
        let mut r = rebuild(&img, c).expect("consistent");
        assert_eq!(counts(r.stats()), counts(s.stats()));
        assert_eq!(dump(&r.freeze()), dump(&img));
        for id in ["item1", "item2", "item3", "v0", "v3", "ghost"] {
            for mode in [SimMode::Events, SimMode::Vectors, SimMode::Fusion] {
                assert_eq!(
                    r.similar(id, 5, mode, None),
                    s.similar(id, 5, mode, None),
                    "{id} {mode:?}"
                );
            }
        }
        assert_eq!(
            r.similar_to_vector(&[1.0, 2.0, 3.0], 3, None),
            s.similar_to_vector(&[1.0, 2.0, 3.0], 3, None)
        );
        // Duplicate rules survive the restore.
        for st in [&mut s, &mut r] {
            assert!(!st.add_event("u2", EventKind::Add, "item3", 90, 10 * SEC));
            assert!(!st.add_event("u1", EventKind::Set, "item3", 40, 10 * SEC));
            assert!(!st.add_event("s", EventKind::Del, "item2", 0, 10 * SEC));
            assert!(st.add_event("s", EventKind::Set, "item2", 0, 10 * SEC));
        }
    }
}

#[test]
fn builder_of_an_empty_store_is_empty() {
    let s = store();
    let r = rebuild(&s.freeze(), cfg()).expect("consistent");
    assert_eq!(counts(r.stats()), counts(s.stats()));
}

#[test]
fn builder_rejects_a_dimension_that_differs_from_the_default() {
    let mut b = StoreBuilder::new(StoreConfig {
        default_dimension: 4,
        ..cfg()
    });
    assert_eq!(
        b.apply(LoadBatch::Dimension(3)),
        Err(StoreError::InvalidData(
            "vector dimension 3 differs from vectors.default_dimension 4".into()
        ))
    );
    b.apply(LoadBatch::Dimension(0)).expect("0 means empty");
    b.apply(LoadBatch::Vectors(vec![LoadedVector {
        id: "a".into(),
        values: vec![1.0; 4],
    }]))
    .expect("matches the default");
    assert_eq!(b.finish().stats().dimension, 4);
}

#[test]
fn builder_rejects_inconsistent_records() {
    let pair = |a: &str, b: &str, score| LoadBatch::Pairs(ItemNamer::default().batch([(a, b, score)]));
    let ctx = |score, kind| {
        LoadBatch::Contexts(
            ItemNamer::default().contexts([("u".to_string(), vec![("i".to_string(), score, 0, kind)])]),
        )
    };
    let unnamed = LoadBatch::Contexts(ContextBatch {
        new_names: vec![],
        contexts: vec![LoadedContext {
            name: "u".into(),
            events: vec![LoadedEvent {
                item: 0,
                score: 1,
                timestamp_ms: 0,
                kind: EventKind::Add,
            }],
        }],
    });
    let vecs = |id: &str, n| {
        LoadBatch::Vectors(vec![LoadedVector {
            id: id.into(),
            values: vec![1.0; n],
        }])
    };
    let bad = [
        vec![pair("a", "a", 1.0)],
        vec![pair("a", "b", 0.0)],
        vec![pair("a", "b", f32::NAN)],
        vec![ctx(101, EventKind::Add)],
        vec![ctx(-1, EventKind::Set)],
        vec![ctx(3, EventKind::Del)],
        vec![ctx(3, EventKind::Add), ctx(4, EventKind::Add)],
        vec![unnamed],
        vec![LoadBatch::Dimension(0), vecs("a", 2)],
        vec![LoadBatch::Dimension(2), vecs("a", 3)],
        vec![LoadBatch::Dimension(2), vecs("a", 2), vecs("a", 2)],
        vec![LoadBatch::Dimension(2), vecs("a", 2), LoadBatch::Dimension(2)],
    ];
    for batches in bad {
        let mut b = StoreBuilder::new(cfg());
        let r: Result<(), StoreError> = batches.into_iter().try_for_each(|x| b.apply(x));
        assert!(matches!(r, Err(StoreError::InvalidData(_))), "{r:?}");
    }
    // Pair errors name the items, not the batch's load-local numbers.
    let r = StoreBuilder::new(cfg()).apply(pair("a", "b", 0.0));
    assert!(
        matches!(&r, Err(StoreError::InvalidData(m)) if m == "pair a b has score 0, must be positive"),
        "{r:?}"
    );
}

#[test]
fn builder_keeps_the_newest_events_when_the_buffer_shrank() {
    let mut b = StoreBuilder::new(StoreConfig {
        ctx_buffer_size: 2,
        ..cfg()
    });
    let events = (0..5).map(|i| (format!("i{i}"), 1, i, EventKind::Add)).collect();
    b.apply(LoadBatch::Contexts(
        ItemNamer::default().contexts([("u".to_string(), events)]),
    ))
    .expect("valid");
    assert_eq!(b.dropped_events(), 3);
    let s = b.finish();
    let (ctxs, pairs, _) = dump(&s.freeze());
    let got: Vec<&str> = ctxs[0].1.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(got, vec!["i3", "i4"]);
    assert!(pairs.is_empty(), "loading events creates no pairs");
    // Only the kept events' items are interned.
    assert_eq!(s.items.get("i0"), None);
    assert!(s.items.get("i3").is_some());
}

// ---------------------------------------------------------------- model test

/// Tiny deterministic xorshift64* generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The naive model of events and co-occurrence.
#[derive(Default)]
struct Model {
    rings: BTreeMap<String, VecDeque<(String, u8, EventKind, u64)>>,
    co: HashMap<(String, String), f32>,
    dedup: Vec<((String, String, u8), u64)>,
}

const CAP: usize = 4;
const DEDUP_CAP: usize = 3;
const WINDOW_MS: u64 = 60 * SEC;

impl Model {
    fn add(&mut self, ctx: &str, kind: EventKind, id: &str, score: u8, now: u64) -> bool {
        let score = if kind == EventKind::Del { 0 } else { score };
        let ring = self.rings.get(ctx);
        let state = ring.and_then(|r| {
            r.iter()
                .rev()
                .find(|e| e.0 == id && e.2 != EventKind::Add)
                .map(|e| (e.2, e.1))
        });
        let key = (ctx.to_string(), id.to_string(), score);
        let dup = match kind {
            EventKind::Add => self
                .dedup
                .iter()
                .any(|(k, ms)| *k == key && now.saturating_sub(*ms) < WINDOW_MS),
            EventKind::Set => state == Some((EventKind::Set, score)),
            EventKind::Del => matches!(state, Some((EventKind::Del, _))),
        };
        if dup {
            return false;
        }
        let ring = self.rings.entry(ctx.to_string()).or_default();
        for (other, s, _, _) in ring.iter() {
            let p = f32::from(score) * f32::from(*s);
            if other != id && p != 0.0 {
                *self.co.entry((id.to_string(), other.clone())).or_default() += p;
                *self.co.entry((other.clone(), id.to_string())).or_default() += p;
            }
        }
        ring.push_back((id.to_string(), score, kind, now));
        if ring.len() > CAP {
            ring.pop_front();
        }
        if kind == EventKind::Add {
            self.dedup.retain(|(k, _)| *k != key);
            self.dedup.push((key, now));
            if self.dedup.len() > DEDUP_CAP {
                self.dedup.remove(0);
            }
        }
        true
    }

    fn decay(&mut self, alpha: f32) {
        self.co.retain(|_, v| {
            *v *= alpha;
            *v >= 1e-6
        });
    }

    fn pairs(&self) -> Vec<(String, String, f32)> {
        let mut v: Vec<_> = self
            .co
            .iter()
            .filter(|((a, b), _)| a < b)
            .map(|((a, b), s)| (a.clone(), b.clone(), *s))
            .collect();
        v.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
        v
    }

    fn sim_events(&self, id: &str, k: usize) -> Vec<(String, f32)> {
        let row: Vec<(String, f32)> = self
            .co
            .iter()
            .filter(|((a, _), _)| a == id)
            .map(|((_, b), s)| (b.clone(), *s))
            .collect();
        let max = row.iter().map(|r| r.1).fold(0.0, f32::max);
        let mut v: Vec<(String, f32)> = row.into_iter().map(|(b, s)| (b, s / max)).collect();
        v.sort_by(|x, y| y.1.total_cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
        v.truncate(k);
        v
    }
}

#[test]
fn random_events_match_a_naive_model() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut s = store_with(|c| {
        c.ctx_buffer_size = CAP;
        c.dedup_cache_size = DEDUP_CAP;
        c.dedup_window_sec = WINDOW_MS / SEC;
    });
    let mut m = Model::default();
    let mut now = 0u64;
    let mut stored = 0;
    let mut img: Option<(StoreImage, Pairs)> = None;
    for step in 0..5000 {
        now += rng.below(20 * SEC);
        let ctx = format!("c{}", rng.below(3));
        let id = format!("i{}", rng.below(6));
        let kind = [EventKind::Add, EventKind::Set, EventKind::Del][rng.below(3) as usize];
        let score = [0u8, 1, 2, 50, 100][rng.below(5) as usize];
        let a = s.add_event(&ctx, kind, &id, score, now);
        let b = m.add(&ctx, kind, &id, score, now);
        assert_eq!(a, b, "step {step}: {ctx} {kind:?} {id} {score}");
        stored += usize::from(a);
        if rng.below(200) == 0 {
            s.decay(0.01);
            m.decay(0.01);
        }
        if step % 97 == 0 {
            let want = m.pairs();
            let (ctxs, pairs, _) = dump(&s.freeze());
            assert_eq!(pairs, want, "step {step}");
            let want_ctxs: Vec<_> = m
                .rings
                .iter()
                .map(|(c, r)| {
                    (
                        c.clone(),
                        r.iter()
                            .map(|e| (e.0.clone(), i32::from(e.1), e.3, e.2))
                            .collect::<Vec<_>>(),
                    )
                })
                .collect();
            assert_eq!(ctxs, want_ctxs, "step {step}");
            assert_eq!(s.stats().co_occurrence_pairs, want.len() as u64);
            for i in 0..6 {
                let id = format!("i{i}");
                let want = m.sim_events(&id, 3);
                match s.similar(&id, 3, SimMode::Events, None) {
                    Ok(got) => {
                        let got: Vec<(String, f32)> =
                            got.into_iter().map(|r| (r.id.to_string(), r.score)).collect();
                        assert_eq!(got, want, "step {step} {id}");
                    }
                    Err(e) => {
                        assert_eq!(e, StoreError::ItemNotFound(id.clone()));
                        assert!(want.is_empty());
                    }
                }
            }
            // An older image must not have moved.
            if let Some((old, old_pairs)) = &img {
                assert_eq!(&dump(old).1, old_pairs);
            }
            img = Some((s.freeze(), want));
        }
    }
    assert!(stored > 1000, "the model test stores a fair share: {stored}");
}

#[test]
fn random_vectors_match_a_naive_model() {
    let mut rng = Rng(42);
    let mut s = store_with(|c| c.distance_metric = Metric::L2);
    let mut m: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    // Enough ids to span several vector chunks.
    let n_ids = (vectors::CHUNK_VECS * 3) as u64;
    for step in 0..6000 {
        let id = format!("v{}", rng.below(n_ids));
        if rng.below(3) == 0 {
            let want = m.remove(&id).is_some();
            assert_eq!(s.delete_vector(&id).is_ok(), want);
        } else {
            let v: Vec<f32> = (0..5).map(|_| rng.below(100) as f32 / 10.0).collect();
            s.set_vector(&id, &v).expect("valid");
            m.insert(id, v);
        }
        if step % 500 == 0 {
            let (_, _, vecs) = dump(&s.freeze());
            let want: Vec<(String, Vec<f32>)> = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            assert_eq!(vecs, want);
            let q = [1.0, 2.0, 3.0, 4.0, 5.0];
            let mut brute: Vec<(String, f32)> = m
                .iter()
                .map(|(k, v)| {
                    let d: f32 = v.iter().zip(&q).map(|(a, b)| (a - b) * (a - b)).sum();
                    (k.clone(), 1.0 / (1.0 + d.sqrt()))
                })
                .collect();
            brute.sort_by(|x, y| y.1.total_cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
            brute.truncate(10);
            let got = s.similar_to_vector(&q, 10, None).expect("valid");
            let got_ids: Vec<&str> = got.iter().map(|r| &*r.id).collect();
            let want_ids: Vec<&str> = brute.iter().map(|r| r.0.as_str()).collect();
            assert_eq!(got_ids, want_ids, "step {step}");
            for (g, w) in got.iter().zip(&brute) {
                assert!((g.score - w.1).abs() < 1e-5);
            }
        }
    }
    assert_eq!(s.stats().vectors, m.len() as u64);
}

#[test]
fn pair_batches_name_each_item_once_per_load() {
    let mut namer = ItemNamer::default();
    let first = namer.batch([("a", "b", 1.0), ("a", "c", 2.0)]);
    assert_eq!(first.new_names, vec!["a", "b", "c"]);
    assert_eq!(first.pairs, vec![(0, 1, 1.0), (0, 2, 2.0)]);
    // The next batch numbers on and lists only the names it adds.
    let second = namer.batch([("b", "c", 3.0), ("b", "d", 4.0)]);
    assert_eq!(second.new_names, vec!["d"]);
    assert_eq!(second.pairs, vec![(1, 2, 3.0), (1, 3, 4.0)]);
    let mut names = ItemNames::default();
    assert_eq!(
        names.resolve(first),
        Some(vec![("a".into(), "b".into(), 1.0), ("a".into(), "c".into(), 2.0)])
    );
    assert_eq!(
        names.resolve(second),
        Some(vec![("b".into(), "c".into(), 3.0), ("b".into(), "d".into(), 4.0)])
    );
    let unnamed = PairBatch {
        new_names: Vec::new(),
        pairs: vec![(0, 9, 1.0)],
    };
    assert_eq!(names.resolve(unnamed), None);
    // A builder refuses a number no batch named.
    let mut b = StoreBuilder::new(StoreConfig::default());
    let bad = PairBatch {
        new_names: vec!["x".into()],
        pairs: vec![(0, 1, 1.0)],
    };
    assert!(matches!(
        b.apply(LoadBatch::Pairs(bad)),
        Err(StoreError::InvalidData(_))
    ));
}

#[test]
fn pair_rows_are_the_same_whatever_the_batch_order() {
    // A store with many pairs, rebuilt from its sorted pairs in batches of
    // every size (runs split across batches), and from the same pairs
    // reversed (rows built before the entries waiting for them arrive).
    let mut s = store();
    for u in 0..40u64 {
        for k in 0..6u64 {
            let item = format!("i{}", (u * 7 + k * k * 3) % 23);
            s.add_event(
                &format!("u{u}"),
                EventKind::Add,
                &item,
                (1 + (u + k) % 100) as u8,
                u * 10 + k,
            );
        }
    }
    let img = s.freeze();
    let (_, pairs, _) = dump(&img);
    assert!(pairs.len() > 100, "{} pairs", pairs.len());
    let build = |order: &[(String, String, f32)], size: usize| {
        let mut namer = ItemNamer::default();
        let mut b = StoreBuilder::new(cfg());
        for chunk in order.chunks(size) {
            let batch = namer.batch(chunk.iter().map(|(a, b, score)| (a.as_str(), b.as_str(), *score)));
            b.apply(LoadBatch::Pairs(batch)).expect("consistent");
        }
        b.apply(LoadBatch::Dimension(0)).expect("dimension");
        b.finish()
    };
    let reversed: Vec<_> = pairs.iter().rev().cloned().collect();
    for (order, sizes) in [
        (&pairs, &[1, 2, 7, 64, 100_000][..]),
        (&reversed, &[1, 5, 100_000][..]),
    ] {
        for &size in sizes {
            let r = build(order, size);
            assert_eq!(dump(&r.freeze()).1, pairs, "batches of {size}");
            assert_eq!(r.stats().co_occurrence_pairs, s.stats().co_occurrence_pairs);
            for k in 0..23 {
                let id = format!("i{k}");
                assert_eq!(
                    r.similar(&id, 30, SimMode::Events, None),
                    s.similar(&id, 30, SimMode::Events, None),
                    "{id}, batches of {size}"
                );
            }
        }
    }
}

#[test]
fn a_restored_dedup_lru_equals_a_replay_of_every_stored_add() {
    // (ADDs, where the few repeated keys start): the second case makes the
    // newest 64 ADDs hold fewer keys than the LRU, so more are selected.
    for (cap, (total, switch)) in [1, 3, 7, 1_000]
        .into_iter()
        .flat_map(|cap| [(cap, (90u64, 60u64)), (cap, (400, 40))])
    {
        let c = StoreConfig {
            dedup_cache_size: cap,
            dedup_window_sec: 1,
            ..cfg()
        };
        let mut s = Store::new(c.clone());
        // Many keys, then a few repeated ones (2 s apart, so stored) that
        // fill the newest ADDs; equal timestamps; SETs between.
        for t in 0..total {
            let (ctx, item) = if t < switch {
                (format!("e{}", t % 20), format!("i{}", (t * 7) % 15))
            } else {
                (format!("u{}", t % 4), format!("i{}", t % 2))
            };
            let ts = (t / 3) * 2_000;
            s.add_event(&ctx, EventKind::Add, &item, 10 + (t % 2) as u8, ts);
            if t % 10 == 0 {
                s.add_event(&ctx, EventKind::Set, &item, 50, ts);
            }
        }
        let r = rebuild(&s.freeze(), c.clone()).expect("consistent");
        let mut replay = DedupLru::new(cap, 1);
        for (ts, key) in r.stored_adds() {
            replay.record(key, ts);
        }
        assert!(r.stored_adds().len() > cap.min(50), "cap {cap}");
        assert_eq!(r.dedup.entries(), replay.entries(), "cap {cap}");
    }
}

/// `add_events` with its co-occurrence writes on two threads (forced on, so
/// a one-core machine checks it too) builds the same store, bit for bit, as
/// `add_event` one event at a time: through ring evictions, duplicates,
/// decays, and images that share rows (large rows get overlays), with
/// groups of every size around the point where the second thread starts.
#[test]
fn batched_events_on_two_threads_build_the_same_store_bit_for_bit() {
    fn bits(d: Dump) -> (Dump, Vec<u32>) {
        let scores = d.1.iter().map(|p| p.2.to_bits()).collect();
        (d, scores)
    }
    let cfg = |c: &mut StoreConfig| {
        c.ctx_buffer_size = 12;
        c.dedup_cache_size = 50;
        c.dedup_window_sec = 30;
    };
    let mut one = store_with(cfg);
    let mut batched = store_with(cfg);
    batched.set_split_writes(true);
    let mut rng = Rng(7);
    let mut now = 0u64;
    let mut images: Vec<(StoreImage, (Dump, Vec<u32>))> = Vec::new();
    let mut group = Vec::new();
    let mut stored = 0;
    for round in 0..400 {
        now += rng.below(10 * SEC);
        group.clear();
        let n = match rng.below(4) {
            0 => rng.below(8),
            1 => cooccurrence::MIN_SPLIT_EVENTS as u64 - 1 + rng.below(3),
            _ => rng.below(400),
        };
        for _ in 0..n {
            // Item numbers skewed to the first few, so that some rows grow
            // past one page and get overlays while an image shares them.
            let spread = rng.below(3000) + 1;
            let id = format!("i{}", rng.below(spread));
            let ctx = format!("c{}", rng.below(300));
            let kind =
                [EventKind::Add, EventKind::Add, EventKind::Set, EventKind::Del][rng.below(4) as usize];
            let score = [0u8, 1, 7, 50, 100][rng.below(5) as usize];
            group.push((ctx, kind, id, score));
        }
        let want = group
            .iter()
            .filter(|(c, k, i, s)| one.add_event(c, *k, i, *s, now))
            .count();
        let refs = group.iter().map(|(ctx, kind, id, score)| EventRef {
            ctx,
            kind: *kind,
            id,
            score: *score,
        });
        assert_eq!(batched.add_events(refs, now), want, "round {round}");
        stored += want;
        // Decays make scores that sums round, so the order of a row's
        // writes shows in its bits.
        if rng.below(10) == 0 {
            one.decay(0.9);
            batched.decay(0.9);
        }
        if rng.below(25) == 0 {
            let img = batched.freeze();
            let seen = bits(dump(&img));
            images.push((img, seen));
        }
        if rng.below(30) == 0 && !images.is_empty() {
            images.remove(rng.below(images.len() as u64) as usize);
        }
        if round % 100 == 0 || round == 399 {
            assert_eq!(
                bits(dump(&batched.freeze())),
                bits(dump(&one.freeze())),
                "round {round}"
            );
            assert_eq!(batched.stats(), one.stats(), "round {round}");
            for (k, (img, seen)) in images.iter().enumerate() {
                assert_eq!(&bits(dump(img)), seen, "image {k} at round {round}");
            }
        }
    }
    assert!(stored > 20_000, "a fair share is stored: {stored}");
    assert!(one.stats().co_occurrence_pairs > 50_000);
}

#[test]
fn write_threads_one_keeps_the_writes_on_the_callers_thread() {
    let one = store_with(|c| c.write_threads = 1);
    assert!(!one.split_writes);
    let two = store_with(|c| c.write_threads = 2);
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    assert_eq!(two.split_writes, cores > 1);
    // A LOAD builds the new store with the same setting.
    let b = StoreBuilder::new(StoreConfig {
        write_threads: 1,
        ..cfg()
    });
    assert!(!b.finish().split_writes);
}
