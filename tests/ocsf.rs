//! The `ocsf` transform end to end: the built binary maps corpus records read from stdin, and
//! `shared/ocsf/validate-ocsf` (the project's reference validator) checks the output.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Corpus records as one NDJSON stream: NDJSON files as they are, Parsec pages and WSB JSON
/// arrays flattened to one event per line (what the pull sources emit), transcripts as
/// `{"message", "file"}`, admin-correction captures as their request body.
fn corpus_stream() -> Vec<u8> {
    let c = |rel: &str| common::corpus(rel);
    let mut out = Vec::new();
    let mut push = |line: &[u8]| {
        out.extend_from_slice(line);
        out.push(b'\n');
    };
    for rel in [
        "windows/normal_day.ndjson",
        "windows/edge_cases.ndjson",
        "windows/malformed.ndjson",
        "ssm/cloudtrail_eventbridge_normal_day.ndjson",
        "ssm/edge_cases_cloudtrail.ndjson",
        "ssm/cloudwatch_stream_normal_day.ndjson",
        "ssm/edge_cases_stream.ndjson",
        "ssm/secrets_stream.ndjson",
        "ssm/malformed.ndjson",
        "wsb/malformed/example-wsb-session-logs/portal-7b0e9c2a/7b0e9c2a-41d3-4f6e-9a85-3c1d2e4f5a6b_malformed.jsonl",
        "wsb/s3/example-wsb-session-logs/portal-7b0e9c2a/2025/03/10/7b0e9c2a-41d3-4f6e-9a85-3c1d2e4f5a6b_20250310T095400Z_62b5c437.jsonl",
    ] {
        let bytes = std::fs::read(c(rel)).unwrap();
        push(bytes.strip_suffix(b"\n").unwrap_or(&bytes));
    }
    for line in std::fs::read_to_string(c("windows/admin_corrections.ndjson"))
        .unwrap()
        .lines()
    {
        let env: Value = serde_json::from_str(line).unwrap();
        push(env["body"].to_string().as_bytes());
    }
    let json_array = "wsb/s3/example-wsb-session-logs/portal-7b0e9c2a/2025/03/10/7b0e9c2a-41d3-4f6e-9a85-3c1d2e4f5a6b_20250310T165000Z_19d6b5d3.json";
    let arr: Vec<Value> = serde_json::from_slice(&std::fs::read(c(json_array)).unwrap()).unwrap();
    for ev in arr {
        push(ev.to_string().as_bytes());
    }
    for page in [
        "normal_day/page_001.json",
        "normal_day/page_002.json",
        "edge_cases/page_001.json",
    ] {
        let p: Value =
            serde_json::from_slice(&std::fs::read(c(&format!("parsec/api_mock/{page}"))).unwrap())
                .unwrap();
        for ev in p["data"].as_array().unwrap() {
            push(ev.to_string().as_bytes());
        }
    }
    for rel in [
        "ssm/s3/ssm-session-logs-111122223333/session-logs/ops-anna-6b19f9279fc93a31c.log",
        "ssm/s3/ssm-session-logs-111122223333/session-logs/maria.wisniewska@example.com-c4ac44afd30619df3.log",
    ] {
        let text = std::fs::read_to_string(c(rel)).unwrap();
        push(serde_json::json!({"message": text, "file": rel}).to_string().as_bytes());
    }
    out
}

fn pipeline(dir: &Path, version: &str) -> PathBuf {
    common::write_pipeline(
        dir,
        &format!(
            r#"
data_dir: {data}
sources:
  in:
    type: stdin
transforms:
  normalize:
    type: ocsf
    inputs: [in]
    version: "{version}"
sinks:
  out:
    type: file
    inputs: [normalize]
    path: {out}
  dropped:
    type: file
    inputs: [in.dropped, normalize.dropped]
    path: {dropped}
"#,
            data = dir.join("data").display(),
            out = dir.join("out.ndjson").display(),
            dropped = dir.join("dropped.ndjson").display(),
        ),
    )
}

fn run_corpus(version: &str) {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), version);
    let input = corpus_stream();
    let out = common::run_with_stdin(&["run", "-c", p.to_str().unwrap()], &input);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let events = common::read_ndjson(&dir.path().join("out.ndjson"));
    assert!(!events.is_empty());
    assert!(events.iter().all(|e| e["metadata"]["version"] == version));
    let report = common::validate_ocsf(&dir.path().join("out.ndjson"), version);
    assert!(report.contains("0 invalid"), "{report}");

    // Malformed records are in the dead-letter file with a reason, and nothing else is.
    let dropped = common::read_ndjson(&dir.path().join("dropped.ndjson"));
    let mut reasons: Vec<&str> = dropped
        .iter()
        .map(|d| d["reason"].as_str().unwrap())
        .collect();
    reasons.sort();
    let mut expected = vec![
        // windows/malformed.ndjson (expected/windows_malformed.outcomes.json)
        "invalid_json",
        "invalid_utf8",
        "wrong_type",
        "wrong_type",
        "not_an_object",
        "not_an_object",
        "missing_field",
        "unknown_event_type",
        "invalid_json",
        "invalid_timestamp",
        // ssm/malformed.ndjson
        "invalid_json",
        "wrong_type",
        "wrong_type",
        "invalid_utf8",
        "wrong_type",
        "missing_field",
        "missing_field",
        "invalid_timestamp",
        "invalid_json",
        // wsb malformed
        "invalid_json",
        "wrong_type",
        "invalid_timestamp",
        "missing_field",
        "invalid_utf8",
        "not_an_object",
        "missing_field",
        "wrong_type",
    ];
    expected.sort();
    assert_eq!(reasons, expected);
    // Mapping failures keep the original record for the operator.
    assert!(dropped
        .iter()
        .filter(|d| d["component"] == "normalize")
        .all(|d| d["event"].is_object()));

    // The correlation key is present wherever the source has a session id.
    for e in &events {
        let key = e["session"]["uid"]
            .as_str()
            .or(e["actor"]["session"]["uid"].as_str());
        let admin =
            e["class_uid"] == 6003 && e["metadata"]["product"]["name"] == "Parsec for Teams";
        let failed_start = e["api"]["operation"] == "StartSession" && e["status_id"] == 2;
        assert!(
            key.is_some() || admin || failed_start,
            "no session id in {e}"
        );
    }
}

#[test]
fn corpus_maps_to_valid_ocsf_1_8_0_end_to_end() {
    run_corpus("1.8.0");
}

#[test]
fn corpus_maps_to_valid_ocsf_1_3_0_end_to_end() {
    run_corpus("1.3.0");
}

#[test]
fn example_pipeline_output_is_valid_ocsf() {
    let pipeline = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/ocsf-stdin.yaml");
    let dir = tempfile::tempdir().unwrap();
    let input = std::fs::read(common::corpus("windows/normal_day.ndjson")).unwrap();
    let out = Command::new(common::bin())
        .args(["run", "-c"])
        .arg(&pipeline)
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&input)?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = common::ndjson(&String::from_utf8_lossy(&out.stdout));
    // normal_day: 14 sessions, each a logon and a logoff.
    assert_eq!(events.len(), 28);
    assert_eq!(events.iter().filter(|e| e["activity_id"] == 1).count(), 14);
    assert_eq!(events.iter().filter(|e| e["activity_id"] == 2).count(), 14);
    let file = dir.path().join("out.ndjson");
    std::fs::write(&file, &out.stdout).unwrap();
    common::validate_ocsf(&file, "1.8.0");
}
