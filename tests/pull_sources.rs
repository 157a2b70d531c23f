//! Pull sources end to end: `aws_s3` and `aws_cloudwatch_logs` against the AWS emulator that
//! `./scripts/test` starts (moto, `AWS_ENDPOINT_URL`), written to with the real SDK; `parsec`
//! against a local HTTP server that plays the corpus' recorded request scripts
//! (`parsec/api_mock/*/requests.json`) and injects failures. The built binary does the reading.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::*;

// ---------------------------------------------------------------------------------------
// shared helpers

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The emulator must be running: `./scripts/test` starts it and sets these variables.
fn require_emulator() {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run the tests with ./scripts/test (it starts the AWS emulator)"
    );
}

fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{}", std::process::id(), n % 1_000_000_000)
}

/// Waits for the process to exit after SIGTERM and returns its stderr.
fn stop(mut child: Child) -> String {
    terminate(&child);
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "sessiontrail did not stop cleanly: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn metric(api: &str, name: &str) -> Option<f64> {
    let text = http_get(api)?;
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .next()
}

/// A blocking GET for /metrics (the tests run outside any runtime).
fn http_get(url: &str) -> Option<String> {
    common::install_tls_provider();
    runtime().block_on(async { reqwest::get(url).await.ok()?.text().await.ok() })
}

fn without(mut v: Value, key: &str) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove(key);
    }
    v
}

// ---------------------------------------------------------------------------------------
// aws_s3

fn s3_pipeline(dir: &Path, bucket: &str, prefix: &str, extra: &str) -> PathBuf {
    write_pipeline(
        dir,
        &format!(
            r#"data_dir: {data}
sources:
  wsb:
    type: aws_s3
    bucket: {bucket}
    prefix: "{prefix}"
    poll_interval: 1s
{extra}
sinks:
  out:
    type: file
    inputs: [wsb]
    path: {out}
  dead:
    type: file
    inputs: [wsb.dropped]
    path: {dead}
"#,
            data = dir.join("data").display(),
            out = dir.join("out.ndjson").display(),
            dead = dir.join("dropped.ndjson").display(),
        ),
    )
}

fn s3_client(rt: &tokio::runtime::Runtime) -> sessiontrail_aws::s3::Client {
    rt.block_on(sessiontrail_aws::AwsOptions::default().s3_client(true))
}

fn put_object(
    rt: &tokio::runtime::Runtime,
    c: &sessiontrail_aws::s3::Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
) {
    rt.block_on(async {
        c.put_object()
            .bucket(bucket)
            .key(key)
            .body(sessiontrail_aws::s3::primitives::ByteStream::from(body))
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
    });
}

/// Every file under `dir`, as (key relative to `dir`, bytes), in key order.
fn corpus_objects(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(d).expect("read corpus dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let key = p
                    .strip_prefix(base)
                    .expect("prefix")
                    .to_string_lossy()
                    .into_owned();
                out.push((key, std::fs::read(&p).expect("read corpus file")));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The records a correct reader gets from one NDJSON or JSON-array corpus object.
fn expected_records(bytes: &[u8]) -> Vec<Value> {
    let mut data = Vec::new();
    if bytes.starts_with(&[0x1f, 0x8b]) {
        use std::io::Read;
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut data)
            .expect("gunzip corpus");
    } else {
        data = bytes.to_vec();
    }
    let text = String::from_utf8(data).expect("utf8 corpus");
    if text.trim_start().starts_with('[') {
        serde_json::from_str::<Vec<Value>>(&text).expect("array")
    } else {
        ndjson(&text)
    }
}

#[test]
fn s3_source_reads_wsb_objects_in_key_order_and_resumes_after_restart_without_repeats() {
    require_emulator();
    let rt = runtime();
    let client = s3_client(&rt);
    let bucket = unique("wsb");
    rt.block_on(client.create_bucket().bucket(&bucket).send())
        .expect("create bucket");
    let objects = corpus_objects(&corpus("wsb/s3/example-wsb-session-logs"));
    assert_eq!(objects.len(), 7, "corpus has 7 normal-day objects");
    let (first, second) = objects.split_at(4);
    for (key, body) in first {
        put_object(&rt, &client, &bucket, key, body.clone());
    }
    let expected_first: usize = first.iter().map(|(_, b)| expected_records(b).len()).sum();
    let expected_all: usize = objects.iter().map(|(_, b)| expected_records(b).len()).sum();

    let dir = tempfile::tempdir().unwrap();
    let pipeline = s3_pipeline(dir.path(), &bucket, "portal-7b0e9c2a/", "");
    let out_path = dir.path().join("out.ndjson");
    let child = spawn_pipeline(&pipeline);
    assert!(
        wait_until(60, || read_ndjson(&out_path).len() >= expected_first),
        "first objects not read: {} of {expected_first}",
        read_ndjson(&out_path).len()
    );
    stop(child);

    // New objects arrive while the pipeline is down; it resumes after the last key.
    for (key, body) in second {
        put_object(&rt, &client, &bucket, key, body.clone());
    }
    let child = spawn_pipeline(&pipeline);
    assert!(
        wait_until(60, || read_ndjson(&out_path).len() >= expected_all),
        "not every object read after restart: {} of {expected_all}",
        read_ndjson(&out_path).len()
    );
    stop(child);

    let out = read_ndjson(&out_path);
    assert_eq!(
        out.len(),
        expected_all,
        "no record repeated across the restart"
    );
    // Emitted in key order, every record exactly as stored plus where it came from.
    let mut got_by_key: Vec<(String, Vec<Value>)> = Vec::new();
    for r in &out {
        let key = r["_s3"]["key"].as_str().expect("_s3.key").to_string();
        assert_eq!(r["_s3"]["bucket"], bucket.as_str());
        match got_by_key.last_mut() {
            Some((k, v)) if *k == key => v.push(without(r.clone(), "_s3")),
            _ => got_by_key.push((key, vec![without(r.clone(), "_s3")])),
        }
    }
    let want: Vec<(String, Vec<Value>)> = objects
        .iter()
        .map(|(k, b)| (k.clone(), expected_records(b)))
        .collect();
    assert_eq!(got_by_key, want);
    // The JSON-array object carries indexes, NDJSON objects line numbers.
    let array_record = out
        .iter()
        .find(|r| {
            r["_s3"]["key"]
                .as_str()
                .is_some_and(|k| k.ends_with(".json"))
        })
        .expect("array object read");
    assert_eq!(array_record["_s3"]["index"], 0);
    assert!(read_ndjson(&dir.path().join("dropped.ndjson")).is_empty());
}

#[test]
fn s3_source_detects_gzip_by_magic_and_dead_letters_bad_lines_and_objects_with_their_key() {
    require_emulator();
    let rt = runtime();
    let client = s3_client(&rt);
    let bucket = unique("wsb-edge");
    rt.block_on(client.create_bucket().bucket(&bucket).send())
        .expect("create bucket");
    let mut all = corpus_objects(&corpus("wsb/edge/example-wsb-session-logs"));
    all.extend(
        corpus_objects(&corpus("wsb/malformed/example-wsb-session-logs"))
            .into_iter()
            .filter(|(k, _)| k.ends_with("_malformed.jsonl")),
    );
    for (key, body) in &all {
        put_object(&rt, &client, &bucket, key, body.clone());
    }
    // Two gzip members, then garbage: the first member's record must not be lost.
    let mut broken = Vec::new();
    for part in [&b"{\"n\":1}\n"[..], &b"{\"n\":2}\n"[..]] {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(part).unwrap();
        broken.extend(e.finish().unwrap());
    }
    let cut = broken.len() - 6;
    broken.truncate(cut);
    put_object(
        &rt,
        &client,
        &bucket,
        "portal-7b0e9c2a/zz-broken.gz",
        broken,
    );

    let dir = tempfile::tempdir().unwrap();
    let pipeline = s3_pipeline(dir.path(), &bucket, "portal-7b0e9c2a/", "");
    let child = spawn_pipeline(&pipeline);
    let dead_path = dir.path().join("dropped.ndjson");
    let gz_key = all
        .iter()
        .map(|(k, _)| k.clone())
        .find(|k| k.ends_with("part-without-extension"))
        .expect("gz edge object");
    assert!(
        wait_until(60, || read_ndjson(&dead_path)
            .iter()
            .any(|d| d["key"] == "portal-7b0e9c2a/zz-broken.gz")),
        "the corrupt object never reached the dead letters"
    );
    stop(child);

    let out = read_ndjson(&dir.path().join("out.ndjson"));
    let dead = read_ndjson(&dead_path);
    // gzip detected by its magic bytes although the name does not say so.
    let gz_records: Vec<_> = out
        .iter()
        .filter(|r| r["_s3"]["key"] == gz_key.as_str())
        .collect();
    let gz_body = &all.iter().find(|(k, _)| *k == gz_key).expect("gz").1;
    assert_eq!(gz_records.len(), expected_records(gz_body).len());
    // The broken object: the complete member is kept, the damage is dead-lettered with the key.
    assert!(out
        .iter()
        .any(|r| r["n"] == 1 && r["_s3"]["key"] == "portal-7b0e9c2a/zz-broken.gz"));
    let broken_dl = dead
        .iter()
        .find(|d| d["key"] == "portal-7b0e9c2a/zz-broken.gz")
        .expect("dl");
    assert_eq!(broken_dl["reason"], "invalid_gzip");
    assert_eq!(broken_dl["bucket"], bucket.as_str());

    // Malformed object: every line the corpus marks as syntactically broken is dead-lettered
    // with its key and line; every accepted line is emitted.
    let outcomes: Value = serde_json::from_slice(
        &std::fs::read(corpus("expected/wsb_malformed.outcomes.json")).unwrap(),
    )
    .unwrap();
    let malformed_key = all
        .iter()
        .map(|(k, _)| k.clone())
        .find(|k| k.ends_with("_malformed.jsonl"))
        .unwrap();
    let syntax = [
        "invalid_json",
        "invalid_utf8",
        "not_an_object",
        "record_too_large",
        "nesting_too_deep",
        "duplicate_key",
    ];
    let dead_lines: HashSet<u64> = dead
        .iter()
        .filter(|d| d["key"] == malformed_key.as_str())
        .map(|d| d["line"].as_u64().expect("line"))
        .collect();
    let out_lines: HashSet<u64> = out
        .iter()
        .filter(|r| r["_s3"]["key"] == malformed_key.as_str())
        .map(|r| r["_s3"]["line"].as_u64().expect("line"))
        .collect();
    for l in outcomes["lines"].as_array().unwrap() {
        let n = l["line"].as_u64().unwrap();
        match l["outcome"].as_str().unwrap() {
            "accept" => assert!(out_lines.contains(&n), "line {n} should be emitted"),
            "ignore" => assert!(!out_lines.contains(&n) && !dead_lines.contains(&n)),
            _ if syntax.contains(&l["reason"].as_str().unwrap_or_default()) => {
                assert!(dead_lines.contains(&n), "line {n} should be dead-lettered")
            }
            _ => {} // schema-level defects are the ocsf transform's to reject
        }
    }
}

#[test]
fn s3_source_reads_ssm_transcripts_as_lines_or_whole_objects() {
    require_emulator();
    let rt = runtime();
    let client = s3_client(&rt);
    let bucket = unique("ssm-logs");
    rt.block_on(client.create_bucket().bucket(&bucket).send())
        .expect("create bucket");
    let objects = corpus_objects(&corpus("ssm/s3/ssm-session-logs-111122223333"));
    for (key, body) in &objects {
        put_object(&rt, &client, &bucket, key, body.clone());
    }
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            r#"data_dir: {data}
sources:
  by_line:
    type: aws_s3
    bucket: {bucket}
    prefix: session-logs/
    poll_interval: 1s
  whole:
    type: aws_s3
    bucket: {bucket}
    prefix: session-logs/
    poll_interval: 1s
    format: text
    text_records: object
sinks:
  lines:
    type: file
    inputs: [by_line]
    path: {lines}
  whole_out:
    type: file
    inputs: [whole]
    path: {whole}
"#,
            data = dir.path().join("data").display(),
            lines = dir.path().join("lines.ndjson").display(),
            whole = dir.path().join("whole.ndjson").display(),
        ),
    );
    let want_lines: usize = objects
        .iter()
        .map(|(_, b)| {
            b.split(|c| *c == b'\n')
                .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                .count()
        })
        .sum();
    let child = spawn_pipeline(&pipeline);
    let (lp, wp) = (
        dir.path().join("lines.ndjson"),
        dir.path().join("whole.ndjson"),
    );
    assert!(wait_until(60, || read_ndjson(&lp).len() >= want_lines
        && read_ndjson(&wp).len() >= objects.len()));
    stop(child);
    let lines = read_ndjson(&lp);
    assert_eq!(lines.len(), want_lines);
    // CRLF ends are stripped, escape sequences and bare CRs inside a line are kept for redact.
    assert!(lines
        .iter()
        .all(|l| !l["message"].as_str().unwrap().ends_with('\r')));
    assert!(lines
        .iter()
        .any(|l| l["message"].as_str().unwrap().contains('\u{1b}')));
    let whole = read_ndjson(&wp);
    for (key, body) in &objects {
        let rec = whole
            .iter()
            .find(|r| r["_s3"]["key"] == key.as_str())
            .expect("whole transcript");
        assert_eq!(rec["message"].as_str().unwrap().as_bytes(), body.as_slice());
    }
}

// ---------------------------------------------------------------------------------------
// aws_cloudwatch_logs

fn logs_client(rt: &tokio::runtime::Runtime) -> sessiontrail_aws::cloudwatchlogs::Client {
    rt.block_on(sessiontrail_aws::AwsOptions::default().logs_client())
}

/// The log stream of an SSM session record: its session id, '@' spelled "_at_" (see the
/// CloudWatch test for why).
fn stream_name_for(record: &Value) -> String {
    record["sessionId"]
        .as_str()
        .expect("sessionId")
        .replace('@', "_at_")
}

fn put_log_event(
    rt: &tokio::runtime::Runtime,
    c: &sessiontrail_aws::cloudwatchlogs::Client,
    group: &str,
    streams: &mut HashSet<String>,
    stream: &str,
    timestamp_ms: i64,
    message: &str,
) {
    use sessiontrail_aws::cloudwatchlogs::types::InputLogEvent;
    rt.block_on(async {
        if streams.insert(stream.to_string()) {
            c.create_log_stream()
                .log_group_name(group)
                .log_stream_name(stream)
                .send()
                .await
                .expect("create stream");
        }
        c.put_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .log_events(
                InputLogEvent::builder()
                    .timestamp(timestamp_ms)
                    .message(message)
                    .build()
                    .expect("event"),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("put log event: {e:?}"));
    });
}

fn cloudwatch_pipeline(dir: &Path, group: &str) -> PathBuf {
    write_pipeline(
        dir,
        &format!(
            r#"data_dir: {data}
api:
  address: 127.0.0.1:{port}
sources:
  ssm_stream:
    type: aws_cloudwatch_logs
    group_names: ["{group}"]
    start_time: -1h
    poll_interval: 1s
    overlap_window: 5m
    max_requests_per_second: 5
    page_limit: 5
sinks:
  out:
    type: file
    inputs: [ssm_stream]
    path: {out}
  dead:
    type: file
    inputs: [ssm_stream.dropped]
    path: {dead}
"#,
            data = dir.join("data").display(),
            port = free_port(),
            out = dir.join("out.ndjson").display(),
            dead = dir.join("dropped.ndjson").display(),
        ),
    )
}

#[test]
fn cloudwatch_source_reads_ssm_stream_resumes_after_restart_and_catches_late_events() {
    require_emulator();
    let rt = runtime();
    let client = logs_client(&rt);
    let group = format!("/sessiontrail-test/{}", unique("ssm"));
    rt.block_on(client.create_log_group().log_group_name(&group).send())
        .expect("create group");
    let records: Vec<String> =
        std::fs::read_to_string(corpus("ssm/cloudwatch_stream_normal_day.ndjson"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
    assert_eq!(records.len(), 24);
    // The stream is named after the session, as the SSM agent does. moto (5.2.5) builds its
    // FilterLogEvents page token as `group@stream@eventId` and splits it on '@', so a stream
    // name holding the '@' of an SSO user's session id ends paging early (an empty page, no
    // token). Real CloudWatch tokens are opaque; the test spells '@' as "_at_" to page here.
    let session = |line: &str| stream_name_for(&serde_json::from_str::<Value>(line).unwrap());
    let now = chrono::Utc::now().timestamp_millis();
    let mut streams = HashSet::new();
    // Phase 1: 8 events well before the overlap window, 4 inside it.
    let mut old_ts = HashMap::new();
    for (i, line) in records[..12].iter().enumerate() {
        let ts = if i < 8 {
            now - 20 * 60_000 + i as i64 * 1000
        } else {
            now - 60_000 + i as i64 * 1000
        };
        old_ts.insert(line.clone(), ts);
        put_log_event(&rt, &client, &group, &mut streams, &session(line), ts, line);
    }
    let dir = tempfile::tempdir().unwrap();
    let pipeline = cloudwatch_pipeline(dir.path(), &group);
    let out_path = dir.path().join("out.ndjson");
    let child = spawn_pipeline(&pipeline);
    assert!(
        wait_until(60, || read_ndjson(&out_path).len() >= 12),
        "phase 1 not read"
    );
    stop(child);

    // Phase 2, while the pipeline is down: late events (timestamps minutes before the stored
    // watermark, ingested now) and current ones.
    let late_from = chrono::Utc::now().timestamp_millis() - 3 * 60_000;
    for (i, line) in records[12..].iter().enumerate() {
        let ts = if i < 6 {
            late_from + i as i64 * 1000
        } else {
            chrono::Utc::now().timestamp_millis()
        };
        put_log_event(&rt, &client, &group, &mut streams, &session(line), ts, line);
    }
    let child = spawn_pipeline(&pipeline);
    let all_seen = || {
        let got: HashSet<String> = read_ndjson(&out_path)
            .iter()
            .map(|r| serde_json::to_string(&without(r.clone(), "_cloudwatch")).unwrap())
            .collect();
        records.iter().all(|l| {
            got.contains(
                &serde_json::to_string(&serde_json::from_str::<Value>(l).unwrap()).unwrap(),
            )
        })
    };
    assert!(
        wait_until(60, all_seen),
        "not every event read after the restart (late events missed?)"
    );
    stop(child);

    let out = read_ndjson(&out_path);
    let mut count: HashMap<String, usize> = HashMap::new();
    for r in &out {
        let meta = &r["_cloudwatch"];
        assert_eq!(meta["log_group"], group.as_str());
        assert_eq!(
            meta["log_stream"],
            stream_name_for(r),
            "stream = session id"
        );
        *count
            .entry(meta["event_id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(count.len(), 24, "24 distinct event ids");
    let late = out
        .iter()
        .filter(|r| {
            let m = &r["_cloudwatch"];
            m["ingestion_time"].as_i64().unwrap() - m["timestamp"].as_i64().unwrap() >= 120_000
        })
        .count();
    assert!(
        late >= 6,
        "the late events were read, with their ingestion time"
    );
    // Only events inside the overlap window of the stored watermark may repeat.
    for r in &out {
        let id = r["_cloudwatch"]["event_id"].as_str().unwrap();
        if count[id] > 1 {
            let ts = r["_cloudwatch"]["timestamp"].as_i64().unwrap();
            assert!(
                ts >= now - 5 * 60_000,
                "event {id} (ts {ts}) repeated although older than the overlap window"
            );
        }
    }
    assert!(read_ndjson(&dir.path().join("dropped.ndjson")).is_empty());
}

#[test]
fn cloudwatch_source_dead_letters_messages_that_are_not_json_objects() {
    require_emulator();
    let rt = runtime();
    let client = logs_client(&rt);
    let group = format!("/sessiontrail-test/{}", unique("mixed"));
    rt.block_on(client.create_log_group().log_group_name(&group).send())
        .expect("create group");
    let now = chrono::Utc::now().timestamp_millis();
    let mut streams = HashSet::new();
    let lines = ["{\"ok\":1}", "plain text", "[1,2]", "{\"ok\":2}"];
    for (i, l) in lines.iter().enumerate() {
        put_log_event(
            &rt,
            &client,
            &group,
            &mut streams,
            "s1",
            now - 10_000 + i as i64,
            l,
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let pipeline = cloudwatch_pipeline(dir.path(), &group);
    let child = spawn_pipeline(&pipeline);
    let dead_path = dir.path().join("dropped.ndjson");
    assert!(wait_until(60, || read_ndjson(&dead_path).len() >= 2
        && read_ndjson(&dir.path().join("out.ndjson")).len() >= 2));
    stop(child);
    let dead = read_ndjson(&dead_path);
    let reasons: HashSet<&str> = dead.iter().map(|d| d["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, HashSet::from(["invalid_json", "not_an_object"]));
    for d in &dead {
        assert_eq!(d["log_group"], group.as_str());
        assert_eq!(d["log_stream"], "s1");
        assert!(d["event_id"].as_str().is_some_and(|s| !s.is_empty()));
    }
}

// ---------------------------------------------------------------------------------------
// parsec: a mock of the API that plays a corpus request script

const TEAM: &str = "2dT8kQw1HtN4mB7xZc3VpLs9YfR";
const API_KEY: &str = "pk-test-7f3a9c1e5b2d4f60";

#[derive(Clone, Debug)]
enum Fault {
    Status(u16, Option<&'static str>),
    /// Answers with the scripted response, but only after this delay.
    Slow(Duration),
}

#[derive(Default)]
struct MockState {
    script: Vec<Value>,
    dir: PathBuf,
    next: usize,
    /// Faults served (in order) before the scripted response with this index.
    faults: HashMap<usize, VecDeque<Fault>>,
    requests: Vec<(Instant, BTreeMap<String, String>)>,
    mismatches: Vec<String>,
}

struct MockApi {
    state: Arc<Mutex<MockState>>,
    port: u16,
    _thread: std::thread::JoinHandle<()>,
}

impl MockApi {
    fn start(scenario: &str, script: Vec<Value>, faults: Vec<(usize, Fault)>) -> MockApi {
        let mut state = MockState {
            script,
            dir: corpus(&format!("parsec/api_mock/{scenario}")),
            ..Default::default()
        };
        for (at, f) in faults {
            state.faults.entry(at).or_default().push_back(f);
        }
        let state = Arc::new(Mutex::new(state));
        let port = free_port();
        let shared = Arc::clone(&state);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = runtime();
            rt.block_on(async move {
                let app = axum::Router::new()
                    .route("/v1/teams/{team}/events", axum::routing::get(serve))
                    .with_state(shared);
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                    .await
                    .expect("bind mock");
                let _ = ready_tx.send(());
                axum::serve(listener, app).await.expect("mock server");
            });
        });
        ready_rx.recv().expect("mock ready");
        MockApi {
            state,
            port,
            _thread: thread,
        }
    }

    fn scripted(scenario: &str, faults: Vec<(usize, Fault)>) -> MockApi {
        let script: Vec<Value> = serde_json::from_slice(
            &std::fs::read(corpus(&format!("parsec/api_mock/{scenario}/requests.json"))).unwrap(),
        )
        .unwrap();
        MockApi::start(scenario, script, faults)
    }

    fn requests(&self) -> Vec<(Instant, BTreeMap<String, String>)> {
        self.state.lock().unwrap().requests.clone()
    }

    fn mismatches(&self) -> Vec<String> {
        self.state.lock().unwrap().mismatches.clone()
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

async fn serve(
    axum::extract::State(state): axum::extract::State<Arc<Mutex<MockState>>>,
    axum::extract::Path(team): axum::extract::Path<String>,
    axum::extract::Query(query): axum::extract::Query<BTreeMap<String, String>>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (fault, scripted) = {
        let mut s = state.lock().unwrap();
        s.requests.push((Instant::now(), query.clone()));
        let next = s.next;
        let fault = s.faults.get_mut(&next).and_then(VecDeque::pop_front);
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if auth != format!("Bearer {API_KEY}") {
            s.mismatches
                .push(format!("request {next}: wrong Authorization header"));
        }
        if team != TEAM {
            s.mismatches.push(format!("request {next}: team {team}"));
        }
        let scripted = s.script.get(next).cloned();
        if let Some(step) = &scripted {
            let want: BTreeMap<String, String> =
                serde_json::from_value(step["request"]["query"].clone()).unwrap_or_default();
            if want != query {
                s.mismatches.push(format!(
                    "request {next}: query {query:?}, the script expects {want:?}"
                ));
            }
        }
        // A fault is not the scripted answer: the client must ask the same again.
        if fault.is_none() {
            s.next += 1;
        }
        let body = scripted.map(|step| {
            let resp = &step["response"];
            let body = match resp["body_file"].as_str() {
                Some(f) => std::fs::read(s.dir.join(f)).expect("body file"),
                None => serde_json::to_vec(&resp["body"]).unwrap(),
            };
            let retry_after = resp["headers"]["retry-after"].as_str().map(str::to_string);
            (
                resp["status"].as_u64().unwrap_or(200) as u16,
                retry_after,
                body,
            )
        });
        (fault, body)
    };
    let respond = |status: u16, retry_after: Option<String>, body: Vec<u8>| {
        let mut r = (
            axum::http::StatusCode::from_u16(status).unwrap(),
            [("content-type", "application/json")],
            body,
        )
            .into_response();
        if let Some(ra) = retry_after {
            r.headers_mut().insert("retry-after", ra.parse().unwrap());
        }
        r
    };
    match (fault, scripted) {
        (Some(Fault::Status(code, retry_after)), _) => respond(
            code,
            retry_after.map(str::to_string),
            json!({"message": "injected failure"})
                .to_string()
                .into_bytes(),
        ),
        (Some(Fault::Slow(d)), Some((status, ra, body))) => {
            tokio::time::sleep(d).await;
            respond(status, ra, body)
        }
        (_, Some((status, ra, body))) => respond(status, ra, body),
        // Past the end of the script: the log has nothing newer.
        (_, None) => respond(200, None, br#"{"data":[],"next_cursor":null}"#.to_vec()),
    }
}

fn parsec_pipeline(dir: &Path, base_url: &str, options: &str, api_port: u16) -> PathBuf {
    write_pipeline(
        dir,
        &format!(
            r#"data_dir: {data}
api:
  address: 127.0.0.1:{api_port}
sources:
  parsec_audit:
    type: parsec
    team_id: {TEAM}
    api_key: {API_KEY}
    base_url: {base_url}
    poll_interval: 1h
    request_timeout: 1s
{options}
sinks:
  out:
    type: file
    inputs: [parsec_audit]
    path: {out}
  dead:
    type: file
    inputs: [parsec_audit.dropped]
    path: {dead}
"#,
            data = dir.join("data").display(),
            out = dir.join("out.ndjson").display(),
            dead = dir.join("dropped.ndjson").display(),
        ),
    )
}

#[test]
fn parsec_normal_day_follows_cursors_and_retries_429_500_and_slow_responses() {
    // The script itself answers request 2 with 429 + Retry-After: 2. On top: a 500 before
    // the third scripted response and a response slower than request_timeout before the fourth.
    let api = MockApi::scripted(
        "normal_day",
        vec![
            (2, Fault::Status(500, None)),
            (3, Fault::Slow(Duration::from_secs(3))),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let api_port = free_port();
    let pipeline = parsec_pipeline(
        dir.path(),
        &api.url(),
        "    page_size: 10\n    start_at: 2025-03-10T00:00:00Z\n    end_at: 2025-03-11T00:00:00Z",
        api_port,
    );
    let child = spawn_pipeline(&pipeline);
    let out_path = dir.path().join("out.ndjson");
    assert!(
        wait_until(90, || read_ndjson(&out_path).len() >= 35),
        "35 events expected"
    );
    let stderr = stop(child);

    assert_eq!(api.mismatches(), Vec::<String>::new());
    let requests = api.requests();
    // 5 scripted (the 429 included) + the injected 500 + the slow one that timed out.
    assert_eq!(requests.len(), 7, "requests_made");
    // Retry-After: 2 was honoured before the same cursor was asked again.
    assert!(requests[2].0 - requests[1].0 >= Duration::from_secs(2));
    assert_eq!(
        requests[1].1, requests[2].1,
        "429 retried with the same cursor"
    );
    let out = read_ndjson(&out_path);
    let ids: HashSet<&str> = out.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!((out.len(), ids.len()), (35, 35));
    assert!(read_ndjson(&dir.path().join("dropped.ndjson")).is_empty());
    assert!(
        !stderr.contains(API_KEY),
        "the API key must never be logged"
    );
}

#[test]
fn parsec_edge_cases_drop_repeated_boundary_events_and_resume_after_the_last_event() {
    let api = MockApi::scripted("edge_cases", vec![]);
    let dir = tempfile::tempdir().unwrap();
    let api_port = free_port();
    let pipeline = parsec_pipeline(dir.path(), &api.url(), "    page_size: 6", api_port);
    let child = spawn_pipeline(&pipeline);
    let out_path = dir.path().join("out.ndjson");
    assert!(wait_until(60, || read_ndjson(&out_path).len() >= 19));
    let metrics_url = format!("http://127.0.0.1:{api_port}/metrics");
    assert!(wait_until(10, || metric(
        &metrics_url,
        "sessiontrail_pull_duplicate_events_total"
    ) == Some(3.0)));
    stop(child);
    assert_eq!(api.mismatches(), Vec::<String>::new());
    assert_eq!(api.requests().len(), 4, "requests_made");
    let out = read_ndjson(&out_path);
    let ids: HashSet<&str> = out.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(
        (out.len(), ids.len()),
        (19, 19),
        "unique_events 19, duplicates dropped"
    );

    // Restart: the durable cursor is the last acknowledged event, asked for with `after`.
    let last_page: Value = serde_json::from_slice(
        &std::fs::read(corpus("parsec/api_mock/edge_cases/page_004.json")).unwrap(),
    )
    .unwrap();
    let last_id = last_page["data"].as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let resume = MockApi::start(
        "edge_cases",
        vec![
            json!({"request": {"query": {"limit": "6", "after": last_id}},
                    "response": {"status": 200, "body": {"data": [], "next_cursor": null}}}),
        ],
        vec![],
    );
    let pipeline = parsec_pipeline(dir.path(), &resume.url(), "    page_size: 6", free_port());
    let child = spawn_pipeline(&pipeline);
    assert!(wait_until(30, || !resume.requests().is_empty()));
    stop(child);
    assert_eq!(resume.mismatches(), Vec::<String>::new());
    assert_eq!(
        read_ndjson(&out_path).len(),
        19,
        "nothing re-emitted after the restart"
    );
}

#[test]
fn parsec_malformed_events_are_dead_lettered_one_by_one_and_a_truncated_page_after_retries() {
    let api = MockApi::scripted("malformed", vec![]);
    let dir = tempfile::tempdir().unwrap();
    let pipeline = parsec_pipeline(dir.path(), &api.url(), "    page_size: 100", free_port());
    let child = spawn_pipeline(&pipeline);
    let dead_path = dir.path().join("dropped.ndjson");
    assert!(wait_until(60, || read_ndjson(&dead_path).len() >= 7));
    stop(child);
    assert_eq!(api.mismatches(), Vec::<String>::new());
    assert_eq!(
        api.requests().len(),
        3,
        "requests_made: page 1, then the truncated page twice"
    );

    let outcomes: Value = serde_json::from_slice(
        &std::fs::read(corpus("expected/parsec_malformed.outcomes.json")).unwrap(),
    )
    .unwrap();
    let page: Value = serde_json::from_slice(
        &std::fs::read(corpus("parsec/api_mock/malformed/page_001.json")).unwrap(),
    )
    .unwrap();
    let out = read_ndjson(&dir.path().join("out.ndjson"));
    let dead = read_ndjson(&dead_path);
    let mut want_out = Vec::new();
    let mut want_dead = BTreeMap::new();
    for e in outcomes["events"].as_array().unwrap() {
        let i = e["index"].as_u64().unwrap();
        match e["outcome"].as_str().unwrap() {
            "accept" => want_out.push(page["data"][i as usize].clone()),
            _ => {
                want_dead.insert(i, e["reason"].as_str().unwrap().to_string());
            }
        }
    }
    assert_eq!(out, want_out, "accepted events unchanged, in page order");
    let got_dead: BTreeMap<u64, String> = dead
        .iter()
        .filter_map(|d| Some((d["index"].as_u64()?, d["reason"].as_str()?.to_string())))
        .collect();
    assert_eq!(got_dead, want_dead);
    let page_dl: Vec<_> = dead.iter().filter(|d| d.get("index").is_none()).collect();
    assert_eq!(page_dl.len(), 1);
    assert_eq!(page_dl[0]["reason"], "invalid_json");
    assert_eq!(page_dl[0]["cursor"], page["next_cursor"]);
}

#[test]
fn parsec_401_stops_the_source_with_a_clear_error_and_no_key_in_it() {
    let api = MockApi::scripted("normal_day", vec![(0, Fault::Status(401, None))]);
    let dir = tempfile::tempdir().unwrap();
    let pipeline = parsec_pipeline(dir.path(), &api.url(), "    page_size: 10", free_port());
    let child = spawn_pipeline(&pipeline);
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a rejected key must stop the pipeline"
    );
    assert!(
        stderr.contains("401") && stderr.contains("api_key"),
        "{stderr}"
    );
    assert!(!stderr.contains(API_KEY));
    assert_eq!(api.requests().len(), 1, "no retry of a rejected key");
}
