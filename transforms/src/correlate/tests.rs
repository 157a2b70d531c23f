//! Correlation rules on hand-built OCSF events (the contract of docs/correlate.md).

use std::sync::Arc;

use serde_json::{json, Value};

use sessiontrail_core::json::{decode_record, get_path, Decoded};
use sessiontrail_core::metrics::MetricsRegistry;
use sessiontrail_core::store::StateStore;
use sessiontrail_core::{BatchNotifier, DeliveryStatus, Event};

use super::correlator::{ChunkOutput, CorrelateMetrics, Correlator};
use super::state::SessionStore;
use super::*;

const H: i64 = 3_600_000;
const T0: i64 = 1_741_593_600_000; // 2025-03-10T08:00:00Z

fn config(extra: Value) -> CorrelateConfig {
    let mut v = json!({});
    if let (Value::Object(base), Value::Object(more)) = (&mut v, extra) {
        base.extend(more);
    }
    serde_json::from_value(v).unwrap()
}

fn correlator_with(extra: Value) -> (Correlator, Arc<MetricsRegistry>) {
    let registry = MetricsRegistry::new();
    let settings = config(extra).settings().unwrap();
    let metrics = CorrelateMetrics::new(Arc::clone(&registry), "sessions");
    (
        Correlator::new(settings, "sessions".into(), metrics),
        registry,
    )
}

fn correlator() -> Correlator {
    correlator_with(json!({})).0
}

/// An input event as the `ocsf` transform hands it over: JSON text, parsed only if read.
fn event(v: Value) -> Event {
    let text = v.to_string();
    let Ok(Decoded::Record(json)) = decode_record(text.as_bytes(), 1 << 20) else {
        panic!("an object: {text}")
    };
    Event::from_json(json, "test".into(), text.len())
}

/// The same event already parsed (as after a transform that changed it).
fn parsed_event(v: Value) -> Event {
    let Value::Object(fields) = v else {
        panic!("object")
    };
    Event::new(fields, "test".into(), 10)
}

/// Windows-style Authentication event (activity 1 logon, 2 logoff).
fn auth(activity: u64, session: &str, time: i64, event_id: &str) -> Value {
    json!({
        "class_uid": 3002, "activity_id": activity, "time": time,
        "metadata": {"uid": event_id, "product": {"name": "Windows"}},
        "session": {"uid": session},
        "user": {"name": "CORP\\jsmith"},
        "dst_endpoint": {"hostname": "res-rds-waw-02"},
    })
}

fn run(c: &mut Correlator, events: Vec<Value>) -> ChunkOutput {
    let mut out = ChunkOutput::default();
    for e in events {
        c.process(event(e), &mut out);
    }
    out
}

fn field<'a>(e: &'a Event, path: &str) -> Option<&'a Value> {
    get_path(e.fields(), path)
}

fn results(out: &ChunkOutput) -> Vec<&Event> {
    out.forward
        .iter()
        .filter(|e| field(e, "unmapped.session_status").is_some())
        .collect()
}

#[test]
fn end_matching_an_open_session_is_enriched_with_times_and_duration() {
    let mut c = correlator();
    let out = run(
        &mut c,
        vec![auth(1, "s1", T0, "e1"), auth(2, "s1", T0 + H + 500, "e2")],
    );
    assert_eq!(out.forward.len(), 2);
    let end = &out.forward[1];
    assert_eq!(field(end, "start_time"), Some(&json!(T0)));
    assert_eq!(field(end, "end_time"), Some(&json!(T0 + H + 500)));
    assert_eq!(field(end, "duration"), Some(&json!(H + 500)));
    assert_eq!(field(end, "session.created_time"), Some(&json!(T0)));
    assert_eq!(
        field(end, "unmapped.session_status"),
        Some(&json!("complete"))
    );
    assert_eq!(
        field(end, "unmapped.session_user"),
        Some(&json!("CORP\\jsmith"))
    );
    assert_eq!(c.table.open_count(), 0);
}

#[test]
fn duplicate_start_with_same_event_id_is_absorbed() {
    let mut c = correlator();
    let out = run(
        &mut c,
        vec![auth(1, "s1", T0, "e1"), auth(1, "s1", T0, "e1")],
    );
    assert_eq!(out.forward.len(), 1);
    assert_eq!(out.absorbed.len(), 1);
    assert_eq!(c.table.open_count(), 1);
}

#[test]
fn duplicate_end_keeps_latest_time_and_emits_a_correction() {
    let mut c = correlator();
    let out = run(
        &mut c,
        vec![
            auth(1, "s1", T0, "e1"),
            auth(2, "s1", T0 + 1000, "e2"),
            auth(2, "s1", T0 + 5000, "e3"),
        ],
    );
    let r = results(&out);
    assert_eq!(r.len(), 2);
    assert_eq!(field(r[1], "end_time"), Some(&json!(T0 + 5000)));
    assert_eq!(field(r[1], "duration"), Some(&json!(5000)));
    assert_eq!(field(r[1], "unmapped.correction"), Some(&json!(true)));
    assert_eq!(field(r[0], "unmapped.correction"), None);
}

#[test]
fn earlier_or_equal_duplicate_end_is_absorbed_and_counted() {
    let (mut c, registry) = correlator_with(json!({}));
    let out = run(
        &mut c,
        vec![
            auth(1, "s1", T0, "e1"),
            auth(2, "s1", T0 + 5000, "e2"),
            auth(2, "s1", T0 + 1000, "e3"),
            auth(2, "s1", T0 + 5000, "e4"),
        ],
    );
    assert_eq!(results(&out).len(), 1);
    assert_eq!(out.absorbed.len(), 2);
    assert!(registry.render().contains(
        "sessiontrail_session_duplicates_total{component=\"sessions\",kind=\"earlier_end\"} 2"
    ));
}

#[test]
fn end_without_start_is_marked_and_has_no_duration() {
    let mut c = correlator();
    let mut e = auth(2, "s9", T0, "e1");
    e["unmapped"] = json!({"reported_duration_s": 25910, "end_reason": "timeout"});
    let out = run(&mut c, vec![e]);
    let r = &out.forward[0];
    assert_eq!(
        field(r, "unmapped.correlation"),
        Some(&json!("end_without_start"))
    );
    assert_eq!(
        field(r, "unmapped.session_status"),
        Some(&json!("end_only"))
    );
    assert_eq!(field(r, "duration"), None);
    assert_eq!(field(r, "start_time"), None);
    assert_eq!(
        field(r, "unmapped.reported_duration_s"),
        Some(&json!(25910))
    );
    assert_eq!(
        field(r, "unmapped.session_end_reason"),
        Some(&json!("timeout"))
    );
}

#[test]
fn start_arriving_after_its_end_completes_the_session() {
    let mut c = correlator();
    let out = run(
        &mut c,
        vec![auth(2, "s1", T0 + 1_800_000, "e2"), auth(1, "s1", T0, "e1")],
    );
    let r = results(&out);
    assert_eq!(r.len(), 2);
    assert_eq!(
        field(r[1], "unmapped.session_status"),
        Some(&json!("complete"))
    );
    assert_eq!(field(r[1], "duration"), Some(&json!(1_800_000)));
    assert_eq!(field(r[1], "unmapped.correction"), Some(&json!(true)));
    assert_eq!(c.table.open_count(), 0);
}

#[test]
fn open_session_expires_after_max_session_age_of_event_time() {
    let mut c = correlator();
    let out = run(
        &mut c,
        vec![
            auth(1, "old", T0, "e1"),
            auth(1, "new", T0 + 24 * H - 1, "e2"),
        ],
    );
    assert!(results(&out).is_empty(), "not older than 24h yet");
    let out = run(&mut c, vec![auth(1, "newer", T0 + 24 * H + 1, "e3")]);
    let r = results(&out);
    assert_eq!(r.len(), 1);
    assert_eq!(field(r[0], "unmapped.correlation"), Some(&json!("expired")));
    assert_eq!(field(r[0], "session.uid"), Some(&json!("old")));
    assert_eq!(c.table.open_count(), 2);
    // A late end within allowed_lateness still completes it.
    let out = run(&mut c, vec![auth(2, "old", T0 + 25 * H, "e4")]);
    let r = results(&out);
    assert_eq!(
        field(r[0], "unmapped.session_status"),
        Some(&json!("complete"))
    );
    assert_eq!(field(r[0], "duration"), Some(&json!(25 * H)));
}

#[test]
fn full_table_expires_the_oldest_session_with_an_event() {
    let (mut c, _) = correlator_with(json!({"max_open_sessions": 2}));
    let out = run(
        &mut c,
        vec![
            auth(1, "a", T0 + 10, "e1"),
            auth(1, "b", T0, "e2"),
            auth(1, "c", T0 + 20, "e3"),
        ],
    );
    let r = results(&out);
    assert_eq!(r.len(), 1);
    assert_eq!(field(r[0], "session.uid"), Some(&json!("b")));
    assert_eq!(
        field(r[0], "unmapped.expiry_reason"),
        Some(&json!("max_open_sessions"))
    );
    assert_eq!(c.table.open_count(), 2);
}

fn correction(session: &str, body: Value) -> Value {
    json!({
        "class_uid": 3002, "activity_id": 99, "activity_name": "Session Correction",
        "time": T0 + 10 * H,
        "metadata": {"uid": "c1", "product": {"name": "Windows"}},
        "session": {"uid": session},
        "unmapped": {"session_correction": body},
    })
}

#[test]
fn admin_correction_closes_an_open_session() {
    let mut c = correlator();
    let out = run(
        &mut c,
        vec![
            auth(1, "s1", T0, "e1"),
            correction(
                "s1",
                json!({"status_before": "open", "status_after": "closed", "updated_by": "CORP\\adm",
                       "reason": "stuck", "corrected_end_time": T0 + 2 * H, "corrected_reason": "failure"}),
            ),
        ],
    );
    let r = results(&out);
    assert_eq!(r.len(), 1);
    assert_eq!(
        field(r[0], "unmapped.session_status"),
        Some(&json!("closed_by_admin"))
    );
    assert_eq!(field(r[0], "duration"), Some(&json!(2 * H)));
    assert_eq!(
        field(r[0], "unmapped.corrected_by"),
        Some(&json!("CORP\\adm"))
    );
    assert_eq!(
        field(r[0], "unmapped.session_end_reason"),
        Some(&json!("failure"))
    );
    assert_eq!(
        field(r[0], "unmapped.session_correction.reason"),
        Some(&json!("stuck"))
    );
    assert_eq!(c.table.open_count(), 0);
}

#[test]
fn admin_correction_amends_the_end_reason_of_a_closed_session() {
    let mut c = correlator();
    let mut end = auth(2, "s1", T0 + H, "e2");
    end["unmapped"] = json!({"end_reason": "user"});
    let out = run(
        &mut c,
        vec![
            auth(1, "s1", T0, "e1"),
            end,
            correction(
                "s1",
                json!({"status_before": "closed", "status_after": "closed", "updated_by": "CORP\\adm",
                       "reason": "was a crash", "corrected_reason": "failure"}),
            ),
        ],
    );
    let r = results(&out);
    assert_eq!(r.len(), 2);
    assert_eq!(
        field(r[1], "unmapped.session_status"),
        Some(&json!("complete"))
    );
    assert_eq!(
        field(r[1], "unmapped.session_end_reason"),
        Some(&json!("failure"))
    );
    assert_eq!(field(r[1], "duration"), Some(&json!(H)));
    assert_eq!(field(r[1], "unmapped.correction"), Some(&json!(true)));
}

#[test]
fn correction_for_unknown_session_is_dead_lettered() {
    let mut c = correlator();
    let out = run(
        &mut c,
        vec![correction("nope", json!({"status_after": "closed"}))],
    );
    assert!(out.forward.is_empty());
    assert_eq!(out.dead.len(), 1);
    assert_eq!(out.dead[0].fields()["reason"], json!("unknown_session"));
}

#[test]
fn failed_start_is_reported_and_opens_nothing() {
    let mut c = correlator();
    let mut e = auth(1, "s1", T0, "e1");
    e["status_id"] = json!(2);
    let out = run(&mut c, vec![e]);
    assert_eq!(
        field(&out.forward[0], "unmapped.session_status"),
        Some(&json!("failed"))
    );
    assert_eq!(c.table.open_count(), 0);
}

#[test]
fn reported_duration_far_from_computed_is_flagged() {
    let mut c = correlator();
    let mut end = auth(2, "s1", T0 + 1_820_000, "e2");
    end["unmapped"] = json!({"reported_duration_s": 99999});
    let mut close = auth(2, "s2", T0 + 1_821_000, "e4");
    close["unmapped"] = json!({"reported_duration_s": 1820});
    let out = run(
        &mut c,
        vec![auth(1, "s1", T0, "e1"), end, auth(1, "s2", T0, "e3"), close],
    );
    let r = results(&out);
    assert_eq!(
        field(r[0], "unmapped.duration_disagreement"),
        Some(&json!(true))
    );
    assert_eq!(field(r[0], "duration"), Some(&json!(1_820_000)));
    assert_eq!(field(r[1], "unmapped.duration_disagreement"), None);
}

fn ssm(op: &str, session: &str, time: i64, event_id: &str, target: Option<&str>) -> Value {
    let mut v = json!({
        "class_uid": 6003, "activity_id": 99, "time": time,
        "api": {"operation": op},
        "metadata": {"uid": event_id, "product": {"name": "AWS Systems Manager"}},
        "session": {"uid": session},
        "actor": {"user": {"name": "piotr"}},
    });
    if let Some(t) = target {
        v["dst_endpoint"] = json!({"instance_uid": t});
    }
    v
}

#[test]
fn api_activity_sessions_pair_without_a_host_on_the_end_and_count_resumes() {
    let mut c = correlator();
    // Reverse arrival order: Terminate, Resume, Start.
    let out = run(
        &mut c,
        vec![
            ssm("TerminateSession", "p-1", T0 + 600_000, "t", None),
            ssm("ResumeSession", "p-1", T0 + 300_000, "r", None),
            ssm("StartSession", "p-1", T0, "s", Some("i-0abc")),
        ],
    );
    let r = results(&out);
    let last = r.last().unwrap();
    assert_eq!(
        field(last, "unmapped.session_status"),
        Some(&json!("complete"))
    );
    assert_eq!(field(last, "duration"), Some(&json!(600_000)));
    assert_eq!(field(last, "unmapped.resumed"), Some(&json!(1)));
    assert_eq!(
        field(last, "unmapped.session_resource"),
        Some(&json!("i-0abc"))
    );
}

#[test]
fn same_session_id_on_different_hosts_are_different_sessions() {
    let mut c = correlator();
    let mut other = auth(1, "s1", T0 + 10, "e2");
    other["dst_endpoint"] = json!({"hostname": "res-other"});
    let out = run(&mut c, vec![auth(1, "s1", T0, "e1"), other]);
    assert_eq!(out.forward.len(), 2);
    assert_eq!(c.table.open_count(), 2);
}

#[test]
fn starts_when_overrides_the_class_based_recognition() {
    let (mut c, _) = correlator_with(json!({
        "starts_when": {"equals": {"field": "kind", "value": "begin"}},
        "ends_when": {"equals": {"field": "kind", "value": "finish"}},
    }));
    let mk = |kind: &str, t: i64| json!({"kind": kind, "time": t, "session": {"uid": "x"}, "metadata": {"product": {"name": "P"}}});
    // The OCSF logon is no longer a start once starts_when is set.
    let out = run(
        &mut c,
        vec![
            auth(1, "x", T0, "e0"),
            mk("begin", T0),
            mk("finish", T0 + 7000),
        ],
    );
    let r = results(&out);
    assert_eq!(r.len(), 1);
    assert_eq!(field(r[0], "duration"), Some(&json!(7000)));
}

#[test]
fn session_event_without_time_or_key_is_dead_lettered() {
    let mut c = correlator();
    let mut no_time = auth(1, "s1", T0, "e1");
    no_time.as_object_mut().unwrap().remove("time");
    let mut no_key = auth(1, "s1", T0, "e2");
    no_key.as_object_mut().unwrap().remove("session");
    let out = run(
        &mut c,
        vec![no_time, no_key, json!({"class_uid": 1007, "x": 1})],
    );
    assert_eq!(out.dead.len(), 2);
    assert_eq!(out.forward.len(), 1, "other events pass through");
}

#[test]
fn metrics_count_sessions_and_durations() {
    let (mut c, registry) = correlator_with(json!({}));
    run(
        &mut c,
        vec![
            auth(1, "a", T0, "1"),
            auth(1, "b", T0, "2"),
            auth(2, "a", T0 + 120_000, "3"),
        ],
    );
    let text = registry.render();
    assert!(text.contains("sessiontrail_sessions_started_total{component=\"sessions\"} 2"));
    assert!(text.contains("sessiontrail_sessions_ended_total{component=\"sessions\"} 1"));
    assert!(
        text.contains("sessiontrail_sessions_open{component=\"sessions\",product=\"Windows\"} 1")
    );
    assert!(text.contains(
        "sessiontrail_session_duration_seconds_bucket{component=\"sessions\",le=\"300\"} 1"
    ));
    assert!(text.contains(
        "sessiontrail_session_duration_seconds_bucket{component=\"sessions\",le=\"60\"} 0"
    ));
}

/// Runs the chunk path of the transform (apply + commit) against a real store.
fn commit_chunk(
    c: &std::sync::Mutex<Correlator>,
    store: &SessionStore,
    events: Vec<Value>,
) -> ChunkOutput {
    apply_and_commit(c, store, events.into_iter().map(event).collect()).unwrap()
}

#[test]
fn sessions_survive_a_restart_through_the_state_store() {
    let dir = tempfile::tempdir().unwrap();
    let ns = || SessionStore::new(StateStore::new(dir.path()).namespace("correlate/sessions"));
    {
        let c = std::sync::Mutex::new(correlator());
        commit_chunk(
            &c,
            &ns(),
            vec![
                auth(1, "s1", T0, "e1"),
                auth(1, "s2", T0 + 5, "e2"),
                auth(2, "s2", T0 + 9, "e3"),
            ],
        );
    }
    let mut c = correlator();
    // The store that loaded the state is the one that commits (it knows the log).
    let store = ns();
    let loaded = store.load(&mut c.table).unwrap();
    assert_eq!(loaded.watermark, Some(T0 + 9));
    for (rec, body) in loaded.sessions {
        c.restore(rec, body);
    }
    assert_eq!(c.table.open_count(), 1);
    let c = std::sync::Mutex::new(c);
    let out = commit_chunk(
        &c,
        &store,
        vec![auth(2, "s1", T0 + H, "e4"), auth(2, "s2", T0 + 9, "e3")],
    );
    let r = results(&out);
    assert_eq!(field(r[0], "duration"), Some(&json!(H)));
    // e3 was absorbed before the restart: its repeat may be a replay, so it is forwarded again.
    assert_eq!(r.len(), 2);
    assert_eq!(field(r[1], "duration"), Some(&json!(4)));
}

#[tokio::test]
async fn absorbed_duplicates_are_acknowledged_only_through_the_transform() {
    // The ack contract: forwarded events keep their token, duplicates resolve as Filtered.
    let (notifier, rx) = BatchNotifier::new();
    let mut c = correlator();
    let mut out = ChunkOutput::default();
    for v in [auth(1, "s1", T0, "e1"), auth(1, "s1", T0, "e1")] {
        c.process(event(v).with_ack(notifier.token()), &mut out);
    }
    drop(notifier);
    assert_eq!(out.absorbed.len(), 1);
    for e in out.absorbed {
        e.ack(DeliveryStatus::Filtered);
    }
    for e in out.forward {
        e.ack(DeliveryStatus::Delivered);
    }
    assert!(rx.await.unwrap().is_handled());
}

#[test]
fn durations_parse_with_units() {
    assert_eq!(parse_duration_ms("24h"), Ok(24 * H));
    assert_eq!(parse_duration_ms("30d"), Ok(30 * 24 * H));
    assert_eq!(parse_duration_ms("90"), Ok(90_000));
    assert_eq!(parse_duration_ms("250ms"), Ok(250));
    assert!(parse_duration_ms("5 weeks").is_err());
}

#[test]
fn config_rejects_too_many_key_fields() {
    let c = config(json!({"key_fields": ["a", "b", "c", "d", "e"]}));
    assert!(c.validate().unwrap_err().contains("key_fields"));
}

// ---- The durable log (state.rs) ----

use super::state::{LogLimits, StoredSession};

/// Every session of the table as it would be stored, sorted: what a reload must reproduce.
fn snapshot(c: &Correlator) -> Vec<String> {
    let mut v: Vec<String> = c
        .table
        .iter_slots()
        .map(|slot| {
            let stored =
                StoredSession::from_record(&c.table, c.table.get(slot), c.end_only_body(slot));
            serde_json::to_string(&stored).unwrap()
        })
        .collect();
    v.sort();
    v
}

/// A fresh correlator restored from the store, and the load's unreadable count.
fn reload(store: &SessionStore, settings: Value) -> (Correlator, usize) {
    let mut c = correlator_with(settings).0;
    let loaded = store.load(&mut c.table).unwrap();
    if let Some(w) = loaded.watermark {
        c.watermark = w;
    }
    for (rec, body) in loaded.sessions {
        c.restore(rec, body);
    }
    (c, loaded.unreadable)
}

#[test]
fn log_round_trip_keeps_live_sessions_and_drops_removed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let settings = json!({"dedupe_window": "1h", "correction_window": "1h"});
    // One database handle (redb locks the file); a new SessionStore is a restart's view.
    let db = StateStore::new(dir.path());
    let ns = || SessionStore::new(db.namespace("correlate/sessions"));
    let store = ns();
    let c = std::sync::Mutex::new(correlator_with(settings.clone()).0);
    let starts = (0..10)
        .map(|i| auth(1, &format!("s{i}"), T0 + i, &format!("a{i}")))
        .collect();
    commit_chunk(&c, &store, starts);
    // An end without start keeps its body (for a late start); s0..s4 complete.
    let mut ends: Vec<Value> = (0..5)
        .map(|i| auth(2, &format!("s{i}"), T0 + H, &format!("b{i}")))
        .collect();
    ends.push(auth(2, "x1", T0 + H, "bx"));
    commit_chunk(&c, &store, ends);
    // 3h later: the completed sessions are past their 1h retention and are removed.
    commit_chunk(&c, &store, vec![auth(1, "late", T0 + 3 * H, "l1")]);
    let c = c.into_inner().unwrap();
    assert_eq!(c.table.open_count(), 6, "s5..s9 and late");
    assert_eq!(c.table.closed_count(), 1, "only the end-only x1 is left");
    assert!(c.end_only_body(c.table.find("x1", &[]).unwrap()).is_some());
    let before = snapshot(&c);
    assert!(before
        .iter()
        .any(|s| s.contains("end_only") && s.contains("end_event_body")));

    let (fresh, unreadable) = reload(&ns(), settings);
    assert_eq!(unreadable, 0);
    assert_eq!(fresh.watermark, T0 + 3 * H);
    assert_eq!(snapshot(&fresh), before);
    assert!(
        fresh.table.find("s0", &[]).is_none(),
        "a removed session came back"
    );
}

const ONE_SEGMENT_PER_COMMIT: LogLimits = LogLimits {
    max_segments: 6,
    slack_bytes: 0,
    // Smaller than a segment's live records: cleaning spans several commits.
    max_cleaned_per_commit: 40,
    // Larger than any commit: one segment per commit.
    segment_bytes: 1 << 20,
};

#[test]
fn log_cleaning_bounds_the_log_and_loses_nothing() {
    let segments_per_commit = log_cleaning_check(ONE_SEGMENT_PER_COMMIT, false);
    assert_eq!(segments_per_commit, 1);
}

/// As the transform commits: each commit is prepared (and cleans) before the previous one is
/// written.
#[test]
fn log_cleaning_with_the_previous_commit_still_unwritten_loses_nothing() {
    log_cleaning_check(ONE_SEGMENT_PER_COMMIT, true);
    log_cleaning_check(
        LogLimits {
            segment_bytes: 1024,
            ..ONE_SEGMENT_PER_COMMIT
        },
        true,
    );
}

#[test]
fn commits_larger_than_a_segment_split_and_clean_alike() {
    // A commit rewrites ~50 records of ~100 bytes: several segments each.
    let segments_per_commit = log_cleaning_check(
        LogLimits {
            segment_bytes: 1024,
            ..ONE_SEGMENT_PER_COMMIT
        },
        false,
    );
    assert!(segments_per_commit > 2, "{segments_per_commit}");
}

#[test]
fn the_cleaner_leaves_segments_not_yet_written_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateStore::new(dir.path());
    // Every segment but the one being written is cleaned.
    let limits = LogLimits {
        max_segments: 0,
        slack_bytes: 0,
        ..LogLimits::default()
    };
    let ns = || SessionStore::with_limits(db.namespace("correlate/s"), limits);
    let store = ns();
    let mut c = correlator();
    let mut out = ChunkOutput::default();
    c.process(event(auth(1, "s1", T0, "a1")), &mut out);
    let first = store.prepare(&mut c).unwrap();
    c.process(event(auth(1, "s2", T0 + 1, "a2")), &mut out);
    // Segment 1 is only prepared: the cleaner must not read it back from the store (it is
    // not there yet) nor copy from it.
    let second = store.prepare(&mut c).unwrap();
    store.write(&first).unwrap();
    store.write(&second).unwrap();
    // Both written: the next commit cleans them.
    c.process(event(auth(1, "s3", T0 + 2, "a3")), &mut out);
    store.commit(&mut c).unwrap();
    assert_eq!(store.stats().segments, 1);
    let (fresh, unreadable) = reload(&ns(), json!({}));
    assert_eq!(unreadable, 0);
    assert_eq!(snapshot(&fresh), snapshot(&c));
}

#[test]
fn a_failed_write_refuses_later_commits() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateStore::new(dir.path());
    let hook: WriteHook = Arc::new(|| Err("disk full".to_string()));
    let store = SessionStore::new(db.namespace("correlate/s")).with_write_hook(hook);
    let mut c = correlator();
    let mut out = ChunkOutput::default();
    c.process(event(auth(1, "s1", T0, "a1")), &mut out);
    let prepared = store.prepare(&mut c).unwrap();
    assert_eq!(store.write(&prepared).unwrap_err(), "disk full");
    // The bookkeeping counts the segment that was never written.
    c.process(event(auth(1, "s2", T0 + 1, "a2")), &mut out);
    assert!(store.prepare(&mut c).is_err());
}

/// Runs rounds of rewrites, removals and new sessions through the log with these limits and
/// checks its size and contents after each; returns the most segments one commit appended.
/// `pipelined`: each commit is prepared before the previous one is written, as the
/// transform does.
fn log_cleaning_check(limits: LogLimits, pipelined: bool) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let db = StateStore::new(dir.path());
    let ns = || SessionStore::with_limits(db.namespace("correlate/s"), limits);
    let store = ns();
    let mut c = correlator();
    let mut out = ChunkOutput::default();
    for i in 0..150 {
        c.process(
            event(auth(1, &format!("s{i}"), T0 + i, &format!("a{i}"))),
            &mut out,
        );
    }
    store.commit(&mut c).unwrap();
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = 150;
    let mut max_segments = 0;
    let mut max_segments_per_commit = 0;
    // The initial commit wrote segment 1.
    let mut last_seq = 1u64;
    let mut unwritten = None;
    for round in 0..120 {
        // Rewrite a third of the sessions, remove a few, open a few.
        let slots: Vec<u32> = c.table.iter_slots().collect();
        for &slot in &slots {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            match rng % 30 {
                0 => c.table.remove(slot),
                1..=10 => c.table.get_mut(slot).resumed += 1,
                _ => {}
            }
        }
        for _ in 0..3 {
            let e = auth(1, &format!("s{next}"), T0 + next, &format!("a{next}"));
            c.process(event(e), &mut out);
            next += 1;
        }
        if pipelined {
            let prepared = store.prepare(&mut c).unwrap();
            if let Some(previous) = unwritten.replace(prepared) {
                store.write(&previous).unwrap();
            }
        } else {
            store.commit(&mut c).unwrap();
        }
        let stats = store.stats();
        max_segments = max_segments.max(stats.segments);
        let mut added = 0;
        let mut newest = last_seq;
        for (k, v) in db.namespace("correlate/s").scan().unwrap() {
            if k[0] != b'l' {
                continue;
            }
            let seq = u64::from_be_bytes(k[1..].try_into().unwrap());
            if seq > last_seq {
                added += 1;
                newest = newest.max(seq);
            }
            // Every entry here is far smaller than the limit: no segment exceeds it.
            assert!(
                v.len() <= limits.segment_bytes,
                "segment of {} bytes",
                v.len()
            );
        }
        last_seq = newest;
        max_segments_per_commit = max_segments_per_commit.max(added);
        assert_eq!(
            stats.live_records,
            c.table.iter_slots().count() as u64,
            "round {round}: every session is live in exactly one segment"
        );
        let live_bytes: usize = c
            .table
            .iter_slots()
            .map(|slot| super::state::encoded_len(&c, slot))
            .sum();
        // Twice the live data before cleaning starts, plus the new segments (a third of the
        // sessions rewritten) and the partly cleaned oldest one.
        assert!(
            stats.bytes < 3 * live_bytes as u64 + 4096,
            "round {round}: log {} bytes for {live_bytes} live bytes",
            stats.bytes
        );
    }
    // The cleaner kept the count near its limit (each commit may add its segments and a
    // partly cleaned one stays until it is empty).
    assert!(
        max_segments <= limits.max_segments + 1 + max_segments_per_commit,
        "{max_segments} segments"
    );

    if let Some(last) = unwritten {
        store.write(&last).unwrap();
    }
    let before = snapshot(&c);
    let (fresh, unreadable) = reload(&ns(), json!({}));
    assert_eq!(unreadable, 0);
    assert_eq!(snapshot(&fresh), before);
    let keys = db.namespace("correlate/s").scan().unwrap();
    assert!(
        keys.iter().filter(|(k, _)| k[0] == b'l').count()
            <= limits.max_segments + 1 + max_segments_per_commit
    );
    max_segments_per_commit
}

#[test]
fn per_session_keys_of_the_old_layout_are_migrated_into_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateStore::new(dir.path());
    let ns = || db.namespace("correlate/sessions");
    // The old layout, as the previous release wrote it: one JSON value per session.
    let mut old = correlator();
    run(
        &mut old,
        vec![
            auth(1, "s1", T0, "e1"),
            auth(1, "s2", T0 + 5, "e2"),
            auth(2, "s2", T0 + 9, "e3"),
            auth(2, "x9", T0 + 9, "e9"),
        ],
    );
    let mut values: Vec<(Vec<u8>, Vec<u8>)> = old
        .table
        .iter_slots()
        .map(|slot| {
            let mut k = vec![b's'];
            k.extend_from_slice(&old.table.storage_key(slot));
            let stored = StoredSession::from_record(
                &old.table,
                old.table.get(slot),
                old.end_only_body(slot),
            );
            (k, serde_json::to_vec(&stored).unwrap())
        })
        .collect();
    values.push((b"sbroken\0\0\0".to_vec(), b"{not json".to_vec()));
    values.push((b"w".to_vec(), (T0 + 9).to_string().into_bytes()));
    let changes: Vec<(&[u8], Option<&[u8]>)> = values
        .iter()
        .map(|(k, v)| (k.as_slice(), Some(v.as_slice())))
        .collect();
    ns().write(&changes).unwrap();
    let before = snapshot(&old);

    let store = SessionStore::new(ns());
    let (c, unreadable) = reload(&store, json!({}));
    assert_eq!(unreadable, 1);
    assert_eq!(snapshot(&c), before);
    // The first commit (even of an empty chunk) moves them into the log.
    let c = std::sync::Mutex::new(c);
    commit_chunk(&c, &store, vec![auth(2, "s1", T0 + H, "e4")]);
    let keys: Vec<Vec<u8>> = ns().scan().unwrap().into_iter().map(|(k, _)| k).collect();
    let old_keys: Vec<&Vec<u8>> = keys.iter().filter(|k| k[0] == b's').collect();
    assert_eq!(
        old_keys,
        vec![&b"sbroken\0\0\0".to_vec()],
        "only the unreadable one stays"
    );
    assert!(keys.iter().any(|k| k[0] == b'l'));
    let expected = snapshot(&c.into_inner().unwrap());
    let (again, unreadable) = reload(&SessionStore::new(ns()), json!({}));
    assert_eq!(unreadable, 1);
    assert_eq!(snapshot(&again), expected);
    assert_eq!(
        again.table.closed_count(),
        3,
        "s1 completed after the migration"
    );
}

#[test]
fn committing_without_loading_a_stored_state_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // One database handle (redb locks the file); a new SessionStore is a restart's view.
    let db = StateStore::new(dir.path());
    let ns = || SessionStore::new(db.namespace("correlate/sessions"));
    let c = std::sync::Mutex::new(correlator());
    commit_chunk(&c, &ns(), vec![auth(1, "s1", T0, "e1")]);
    let events = vec![event(auth(1, "s2", T0, "e2"))];
    assert!(apply_and_commit(&c, &ns(), events).is_err());
}

// ---- The pipelined loop (pipeline.rs): outputs wait for their own commit ----

use super::pipeline::{run_chunks, ChunkPipeline, CommitWatch};
use super::state::WriteHook;
use sessiontrail_core::ack::BatchReceiver;
use sessiontrail_core::{EventBatch, Output};
use tokio::sync::mpsc;

/// A store whose writes each wait for the test: `started` receives one message as a write
/// begins, and the write goes ahead when `go` receives one.
fn gated_store(
    db: &StateStore,
) -> (
    SessionStore,
    mpsc::UnboundedReceiver<()>,
    std::sync::mpsc::Sender<()>,
) {
    let (started_tx, started) = mpsc::unbounded_channel();
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    let go_rx = std::sync::Mutex::new(go_rx);
    let hook: WriteHook = Arc::new(move || {
        let _ = started_tx.send(());
        go_rx
            .lock()
            .map_err(|_| "gate poisoned".to_string())?
            .recv()
            .map_err(|_| "gate closed".to_string())
    });
    let store = SessionStore::new(db.namespace("correlate/sessions")).with_write_hook(hook);
    (store, started, go)
}

/// The transform's loop on `store`, with its input, output and the pipeline's watch.
struct Loop {
    input: mpsc::Sender<EventBatch>,
    out: mpsc::Receiver<EventBatch>,
    watch: Arc<CommitWatch>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

fn start_loop(store: SessionStore) -> Loop {
    let registry = MetricsRegistry::new();
    let metrics = registry.component("sessions", "correlate");
    let (input, mut input_rx) = mpsc::channel(8);
    let (out_tx, out) = mpsc::channel(8);
    let watch = CommitWatch::new();
    let correlator = Arc::new(std::sync::Mutex::new(correlator()));
    let mut pipeline = ChunkPipeline::new(correlator, store, Arc::clone(&watch)).unwrap();
    let task = tokio::spawn(async move {
        let out = Output::new("sessions".into(), vec![out_tx], Arc::clone(&metrics));
        let dropped = Output::unwired("sessions.dropped", Arc::clone(&metrics));
        run_chunks(&mut pipeline, &mut input_rx, &out, &dropped, &metrics).await
    });
    Loop {
        input,
        out,
        watch,
        task,
    }
}

/// `events` as one source batch, every event carrying a token of one notifier.
fn acked_batch(events: Vec<Value>) -> (EventBatch, BatchReceiver) {
    let (notifier, rx) = BatchNotifier::new();
    let batch = events
        .into_iter()
        .map(|v| event(v).with_ack(notifier.token()))
        .collect();
    (batch, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_are_released_only_after_their_own_commit() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateStore::new(dir.path());
    let (store, mut started, go) = gated_store(&db);
    let mut l = start_loop(store);

    // Chunk 1: a start, its duplicate (absorbed) and the end.
    let (batch, mut first) = acked_batch(vec![
        auth(1, "s1", T0, "e1"),
        auth(1, "s1", T0, "e1"),
        auth(2, "s1", T0 + H, "e2"),
    ]);
    l.input.send(batch).await.unwrap();
    started.recv().await.unwrap();
    // Its commit is being written: nothing is forwarded, not even the duplicate is resolved.
    assert!(l.out.try_recv().is_err());
    assert!(first.try_recv().is_err());
    assert_eq!(l.watch.in_flight(), 1);

    // Chunk 2 arrives while commit 1 is held up (the loop may apply it meanwhile); commit 1
    // going through releases chunk 1 only.
    let (batch, mut second) = acked_batch(vec![auth(1, "s2", T0 + H, "e3")]);
    l.input.send(batch).await.unwrap();
    go.send(()).unwrap();
    let forwarded = l.out.recv().await.unwrap();
    assert_eq!(forwarded.len(), 2);
    assert_eq!(
        field(&forwarded[1], "unmapped.session_status"),
        Some(&json!("complete"))
    );
    for e in forwarded {
        e.ack(DeliveryStatus::Delivered);
    }
    let status = first.await.unwrap();
    assert!(status.is_handled());
    assert_eq!(
        status.worst,
        DeliveryStatus::Filtered,
        "the absorbed duplicate"
    );

    started.recv().await.unwrap();
    // Commit 2 is being written: chunk 2 is held.
    assert!(l.out.try_recv().is_err());
    assert!(second.try_recv().is_err());
    go.send(()).unwrap();
    let forwarded = l.out.recv().await.unwrap();
    assert_eq!(forwarded.len(), 1);
    for e in forwarded {
        e.ack(DeliveryStatus::Delivered);
    }
    assert_eq!(second.await.unwrap().worst, DeliveryStatus::Delivered);

    drop(l.input);
    l.task.await.unwrap().unwrap();
    assert_eq!(l.watch.in_flight(), 0);
    // What was acknowledged is what the store holds.
    let (c, _) = reload(
        &SessionStore::new(db.namespace("correlate/sessions")),
        json!({}),
    );
    assert_eq!(c.table.closed_count(), 1);
    assert_eq!(c.table.open_count(), 1);
}

#[tokio::test]
async fn a_failed_commit_forwards_nothing_and_fails_the_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateStore::new(dir.path());
    let hook: WriteHook = Arc::new(|| Err("disk full".to_string()));
    let store = SessionStore::new(db.namespace("correlate/sessions")).with_write_hook(hook);
    let mut l = start_loop(store);
    let (batch, acked) = acked_batch(vec![
        auth(1, "s1", T0, "e1"),
        auth(1, "s1", T0, "e1"),
        auth(2, "s1", T0 + H, "e2"),
    ]);
    l.input.send(batch).await.unwrap();
    let err = l.task.await.unwrap().unwrap_err();
    assert!(
        err.contains("disk full") && err.contains("not saved"),
        "{err}"
    );
    // Nothing reached the sink, and the tokens were dropped unresolved: the source re-reads.
    assert!(l.out.recv().await.is_none());
    assert_eq!(acked.await.unwrap().worst, DeliveryStatus::Failed);
    // The API no longer shows the table as durable.
    assert!(l.watch.wait_durable().is_err());
}

/// Events held as JSON text are read and annotated without parsing them whole; the results
/// must be exactly those of the same events already parsed, for every rule.
#[test]
fn text_events_and_parsed_events_come_out_alike() {
    let mut end_reported = auth(2, "s2", T0 + 3 * H, "e4");
    end_reported["unmapped"] =
        json!({"reported_duration_s": 5, "end_reason": "logoff", "other": [1]});
    let mut failed = auth(1, "s9", T0, "e9");
    failed["status_id"] = json!(2);
    let mut parsec = json!({
        "class_uid": 4001, "activity_id": 1, "time": T0 + H,
        "metadata": {"uid": 77, "product": {"name": "Parsec"}},
        "actor": {"session": {"uid": 1234}, "user": {"email_addr": "a@example.com"}},
        "device": {"hostname": "gpu-01"},
    });
    let mut parsec_end = parsec.clone();
    parsec_end["activity_id"] = json!(2);
    parsec_end["time"] = json!(T0 + 2 * H);
    parsec_end["metadata"]["uid"] = json!(78);
    parsec["unmapped"] = json!("not an object");
    let stream = vec![
        auth(1, "s1", T0, "e1"),
        auth(1, "s1", T0, "e1"), // duplicate start
        auth(2, "s1", T0 + H, "e2"),
        auth(2, "s1", T0 + 2 * H, "e3"), // later duplicate end: a correction
        end_reported,                    // end without start
        auth(1, "s2", T0 + H, "e5"),     // its late start
        failed,
        ssm("StartSession", "ssm-1", T0, "a1", Some("i-1")),
        ssm("TerminateSession", "ssm-1", T0 + H, "a2", None),
        parsec,
        parsec_end,
        auth(1, "s3", T0 + 2 * H, "e6"),
        correction(
            "s3",
            json!({"status_after": "closed", "updated_by": "ops", "reason": "r"}),
        ),
        json!({"class_uid": 3002, "activity_id": 1, "session": {"uid": "no-time"}}),
        json!({"class_uid": 3002, "activity_id": 1, "time": "noon", "session": {"uid": "t"}}),
        json!({"class_uid": 3002, "activity_id": 2, "time": T0}),
        json!({"class_uid": 1007, "activity_id": 1, "time": T0, "note": "not a session event"}),
        auth(1, "s4", T0, "e7"),
        auth(1, "s5", T0 + 30 * H, "e8"), // expires s3 and s4 by age
    ];
    let body = |e: &Event| -> Value { serde_json::from_str(&e.to_json_string()).unwrap() };
    let outputs = |text: bool| {
        let mut c = correlator();
        let mut out = ChunkOutput::default();
        for v in stream.clone() {
            let e = if text { event(v) } else { parsed_event(v) };
            c.process(e, &mut out);
        }
        let bodies = |events: &[Event]| events.iter().map(body).collect::<Vec<_>>();
        (bodies(&out.forward), bodies(&out.dead), out.absorbed.len())
    };
    let (text, parsed) = (outputs(true), outputs(false));
    assert_eq!(text, parsed);
    // The stream did exercise the rules: results, corrections, dead letters, duplicates.
    let statuses: Vec<&str> = text
        .0
        .iter()
        .filter_map(|e| get_path(e.as_object()?, "unmapped.session_status")?.as_str())
        .collect();
    for s in [
        "complete",
        "end_only",
        "failed",
        "closed_by_admin",
        "expired",
    ] {
        assert!(statuses.contains(&s), "no {s} result in {statuses:?}");
    }
    assert_eq!(text.1.len(), 3);
    assert_eq!(text.2, 1);
}
