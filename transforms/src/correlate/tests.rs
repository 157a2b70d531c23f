//! Correlation rules on hand-built OCSF events (the contract of docs/correlate.md).

use std::sync::Arc;

use serde_json::{json, Value};

use sessiontrail_core::json::get_path;
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

fn event(v: Value) -> Event {
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
    get_path(&e.fields, path)
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
    assert_eq!(out.dead[0].fields["reason"], json!("unknown_session"));
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
    let loaded = ns().load(&mut c.table).unwrap();
    assert_eq!(loaded.watermark, Some(T0 + 9));
    for (rec, body) in loaded.sessions {
        c.restore(rec, body);
    }
    assert_eq!(c.table.open_count(), 1);
    let c = std::sync::Mutex::new(c);
    let out = commit_chunk(
        &c,
        &ns(),
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
