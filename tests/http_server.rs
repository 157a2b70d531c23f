//! `http_server` end to end: the built binary, a real HTTP client over loopback, the Windows
//! corpus POSTed as the agent does, auth, limits, TLS, backpressure, acknowledgements, and
//! the agents.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const AGENT_TOKEN: &str = "agent-token-0123456789abcdef";
const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

/// A running `sessiontrail` with an http_server source; killed on drop.
struct Server {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// `source_extra` is added to the http_server options; `sinks` replaces the default
    /// (events to out.ndjson, dead letters to dropped.ndjson).
    fn start(source_extra: &str, sinks: Option<&str>) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let d = dir.path().display();
        let default_sinks = format!(
            "  out:\n    type: file\n    inputs: [agents]\n    path: {d}/out.ndjson\n  dead:\n    type: file\n    inputs: [agents.dropped]\n    path: {d}/dropped.ndjson\n"
        );
        let yaml = format!(
            "data_dir: {d}/data\nsources:\n  agents:\n    type: http_server\n    address: 127.0.0.1:{port}\n    auth:\n      bearer_tokens: [\"{AGENT_TOKEN}\"]\n      admin_tokens: [\"{ADMIN_TOKEN}\"]\n{source_extra}sinks:\n{}",
            sinks.unwrap_or(&default_sinks)
        );
        let pipeline = write_pipeline(dir.path(), &yaml);
        let child = spawn_pipeline(&pipeline);
        let server = Server { child, port, dir };
        server.wait_listening();
        server
    }

    fn wait_listening(&self) {
        let port = self.port;
        assert!(
            wait_until(20, || std::net::TcpStream::connect(("127.0.0.1", port))
                .is_ok()),
            "server did not start listening on {port}"
        );
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn out(&self) -> Vec<Value> {
        read_ndjson(&self.dir.path().join("out.ndjson"))
    }

    fn dropped(&self) -> Vec<Value> {
        read_ndjson(&self.dir.path().join("dropped.ndjson"))
    }
}

fn client() -> reqwest::Client {
    common::install_tls_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

async fn post(
    s: &Server,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = client()
        .post(s.url(path))
        .header("content-type", content_type)
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, json, headers)
}

/// Splits a fixture on LF like the corpus does (a trailing LF does not start a line).
fn physical_lines(bytes: &[u8]) -> Vec<&[u8]> {
    let trimmed = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    trimmed.split(|b| *b == b'\n').collect()
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| b.is_ascii_whitespace())
}

const JSON: &str = "application/json; charset=utf-8";

fn reasons_of(response: &Value) -> Vec<String> {
    response["rejected"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["error"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn clean_windows_corpus_files_are_accepted_whole() {
    let s = Server::start("", None);
    let mut sent = 0;
    for file in ["windows/normal_day.ndjson", "windows/edge_cases.ndjson"] {
        let bytes = std::fs::read(corpus(file)).expect("corpus file");
        for (i, line) in physical_lines(&bytes).into_iter().enumerate() {
            let (status, body, _) =
                post(&s, "/api/events", Some(AGENT_TOKEN), JSON, line.to_vec()).await;
            assert_eq!(status, 200, "{file} line {}: {body}", i + 1);
            assert_eq!(body["accepted"], 1, "{file} line {}: {body}", i + 1);
            assert_eq!(body["rejected"], json!([]), "{file} line {}", i + 1);
            sent += 1;
        }
    }
    // Corpus README: 28 + 25 records, no dead letters. Ack mode: 200 means written.
    assert_eq!(sent, 53);
    let out = s.out();
    assert_eq!(out.len(), 53);
    assert!(s.dropped().is_empty());
    // Kept as sent, including the legacy timestamp form and PowerShell 5.1 escapes.
    assert!(out
        .iter()
        .any(|e| e["timestamp"] == "/Date(1741612800121)/"));
    // normal_day: 14 complete pairs, so 14 notifies and 14 ends reached the sink.
    let from_normal_day = |t: &str| out.iter().take(28).filter(|e| e["event_type"] == t).count();
    assert_eq!(from_normal_day("session_notify"), 14);
    assert_eq!(from_normal_day("session_end_event"), 14);
}

#[tokio::test]
async fn malformed_lines_posted_one_by_one_get_their_corpus_reason() {
    let s = Server::start("", None);
    let outcomes: Value = serde_json::from_slice(
        &std::fs::read(corpus("expected/windows_malformed.outcomes.json")).expect("outcomes"),
    )
    .expect("outcomes json");
    let bytes = std::fs::read(corpus("windows/malformed.ndjson")).expect("corpus");
    let lines = physical_lines(&bytes);
    let mut accepted = 0;
    let mut dead_letters = 0;
    for o in outcomes["lines"].as_array().expect("lines") {
        let n = o["line"].as_u64().expect("line") as usize;
        let line = lines[n - 1];
        match o["outcome"].as_str() {
            // The agent never sends a blank record.
            Some("ignore") => assert!(is_blank(line)),
            Some("accept") => {
                let (status, body, _) =
                    post(&s, "/api/events", Some(AGENT_TOKEN), JSON, line.to_vec()).await;
                assert_eq!(
                    (status, body["accepted"].clone()),
                    (200, json!(1)),
                    "line {n}: {body}"
                );
                accepted += 1;
            }
            Some("dead_letter") => {
                let want = o["reason"].as_str().expect("reason");
                let (status, body, _) =
                    post(&s, "/api/events", Some(AGENT_TOKEN), JSON, line.to_vec()).await;
                if status == 400 {
                    // Not JSON at all: the whole body is refused and dead-lettered.
                    assert_eq!(body["error"], want, "line {n}: {body}");
                    dead_letters += 1;
                } else {
                    assert_eq!(status, 200, "line {n}: {body}");
                    assert_eq!(body["accepted"], 0, "line {n}: {body}");
                    let reasons = reasons_of(&body);
                    assert!(!reasons.is_empty(), "line {n}: {body}");
                    assert!(reasons.iter().all(|r| r == want), "line {n}: {body}");
                    dead_letters += reasons.len();
                }
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(accepted, 4);
    assert_eq!(s.out().len(), 4);
    let dropped = s.dropped();
    assert_eq!(dropped.len(), dead_letters);
    // The invalid UTF-8 line is kept byte for byte (base64), not "fixed".
    assert!(dropped
        .iter()
        .any(|d| d["reason"] == "invalid_utf8" && d["raw_base64"].is_string()));
}

#[tokio::test]
async fn malformed_file_as_one_ndjson_body_lists_rejected_lines_by_index() {
    let s = Server::start("", None);
    let outcomes: Value = serde_json::from_slice(
        &std::fs::read(corpus("expected/windows_malformed.outcomes.json")).expect("outcomes"),
    )
    .expect("outcomes json");
    let body = std::fs::read(corpus("windows/malformed.ndjson")).expect("corpus");
    let (status, answer, _) = post(
        &s,
        "/api/events",
        Some(AGENT_TOKEN),
        "application/x-ndjson",
        body,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let expected: Vec<(u64, String)> = outcomes["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .filter(|o| o["outcome"] == "dead_letter")
        .map(|o| {
            (
                o["line"].as_u64().unwrap_or(0) - 1,
                o["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let got: Vec<(u64, String)> = answer["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap_or(u64::MAX),
                r["error"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(got, expected);
    assert_eq!(answer["accepted"], 4);
    assert_eq!(s.out().len(), 4);
    let dropped = s.dropped();
    assert_eq!(dropped.len(), expected.len());
    let mut indexes: Vec<u64> = dropped.iter().filter_map(|d| d["index"].as_u64()).collect();
    indexes.sort();
    assert_eq!(
        indexes,
        expected.iter().map(|(i, _)| *i).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn two_megabyte_record_is_rejected_and_its_neighbours_accepted() {
    let s = Server::start("", None);
    let bytes = std::fs::read(corpus("windows/malformed_2mb_line.ndjson")).expect("corpus");
    let lines = physical_lines(&bytes);
    assert_eq!(lines.len(), 3);
    for (i, line) in lines.into_iter().enumerate() {
        let (status, body, _) =
            post(&s, "/api/events", Some(AGENT_TOKEN), JSON, line.to_vec()).await;
        assert_eq!(status, 200, "line {}: {body}", i + 1);
        if i == 1 {
            assert_eq!(body["accepted"], 0);
            assert_eq!(reasons_of(&body), vec!["record_too_large"]);
        } else {
            assert_eq!(body["accepted"], 1);
        }
    }
    assert_eq!(s.out().len(), 2);
    let dropped = s.dropped();
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0]["reason"], "record_too_large");
    assert_eq!(dropped[0]["raw_truncated"], true);
}

#[tokio::test]
async fn admin_corrections_replayed_as_puts() {
    let s = Server::start("", None);
    let bytes = std::fs::read(corpus("windows/admin_corrections.ndjson")).expect("corpus");
    let mut results = Vec::new();
    for line in physical_lines(&bytes) {
        let capture: Value = serde_json::from_slice(line).expect("capture envelope");
        assert_eq!(capture["method"], "PUT");
        let resp = client()
            .put(s.url(capture["path"].as_str().expect("path")))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", JSON)
            .body(capture["body"].to_string())
            .send()
            .await
            .expect("put");
        assert_eq!(resp.status().as_u16(), 200);
        let body: Value = resp.json().await.expect("json");
        results.push(body);
    }
    // Line 3: path id differs from the body's session_id (corpus: path_body_mismatch).
    // Line 4 (unknown session) is the correlate transform's to reject, not the server's.
    for (i, r) in results.iter().enumerate() {
        if i == 2 {
            assert_eq!(r["accepted"], 0);
            assert_eq!(reasons_of(r), vec!["path_body_mismatch"]);
        } else {
            assert_eq!(r["accepted"], 1, "line {}: {r}", i + 1);
        }
    }
    let out = s.out();
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|e| e["event_type"] == "session_correction"));
    assert_eq!(out[0]["session_id"], "3c18e748-0823-4606-8018-6e2f3ba9a412");
    assert_eq!(out[0]["corrected_reason"], "failure");
    let dropped = s.dropped();
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0]["reason"], "path_body_mismatch");
}

#[tokio::test]
async fn short_correction_names_are_normalised_and_the_path_id_fills_the_session() {
    let s = Server::start("", None);
    let resp = client()
        .put(s.url("/api/sessions/abc-123"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"updated_by": "CORP\\adm", "reason": "no logoff arrived", "status": "closed", "ended_at": "2025-03-10T15:40:00Z"}))
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status().as_u16(), 200);
    let out = s.out();
    assert_eq!(out.len(), 1);
    let e = &out[0];
    assert_eq!(e["event_type"], "session_correction");
    assert_eq!(e["session_id"], "abc-123");
    assert_eq!(e["updater_id"], "CORP\\adm");
    assert_eq!(e["reason_comment"], "no logoff arrived");
    assert_eq!(e["status_after"], "closed");
    assert_eq!(e["corrected_end_timestamp"], "2025-03-10T15:40:00Z");
    assert!(e["event_id"].is_string());
}

fn first_notify_and_end() -> (Value, Value) {
    let text = std::fs::read_to_string(corpus("windows/normal_day.ndjson")).expect("corpus");
    let records = ndjson(&text);
    let notify = records
        .iter()
        .find(|r| r["event_type"] == "session_notify")
        .cloned()
        .expect("a notify");
    let end = records
        .iter()
        .find(|r| r["event_type"] == "session_end_event")
        .cloned()
        .expect("an end");
    (notify, end)
}

#[tokio::test]
async fn typed_routes_fill_event_type_and_refuse_the_other_type() {
    let s = Server::start("", None);
    let (mut notify, mut end) = first_notify_and_end();
    notify.as_object_mut().expect("object").remove("event_type");
    end.as_object_mut().expect("object").remove("event_type");
    let (status, body, _) = post(
        &s,
        "/api/session_notify",
        Some(AGENT_TOKEN),
        JSON,
        notify.to_string().into_bytes(),
    )
    .await;
    assert_eq!(
        (status, body["accepted"].clone()),
        (200, json!(1)),
        "{body}"
    );
    // An array body of two end events, the first without event_type.
    let (_, full_end) = first_notify_and_end();
    let batch = json!([end, full_end.clone()]);
    let (status, body, _) = post(
        &s,
        "/api/session_end_event",
        Some(AGENT_TOKEN),
        JSON,
        batch.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["accepted"], 2, "{body}");
    let (status, body, _) = post(
        &s,
        "/api/session_notify",
        Some(AGENT_TOKEN),
        JSON,
        full_end.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(reasons_of(&body), vec!["path_body_mismatch"]);
    let out = s.out();
    assert_eq!(out.len(), 3);
    assert_eq!(out[0]["event_type"], "session_notify");
    assert_eq!(out[1]["event_type"], "session_end_event");
}

#[tokio::test]
async fn eventbridge_envelopes_on_events_are_kept_whole() {
    let s = Server::start("", None);
    let body =
        std::fs::read(corpus("ssm/cloudtrail_eventbridge_normal_day.ndjson")).expect("corpus");
    let (status, answer, _) = post(
        &s,
        "/events",
        Some(AGENT_TOKEN),
        "application/x-ndjson",
        body.clone(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 19);
    let sent = ndjson(std::str::from_utf8(&body).expect("utf8"));
    assert_eq!(s.out(), sent);
}

#[tokio::test]
async fn missing_or_wrong_token_is_401_and_agents_cannot_correct() {
    let s = Server::start("", None);
    let (notify, _) = first_notify_and_end();
    let body = notify.to_string().into_bytes();
    for token in [None, Some("agent-token-0123456789abcdeX"), Some("")] {
        let (status, answer, headers) = post(&s, "/api/events", token, JSON, body.clone()).await;
        assert_eq!(status, 401, "{token:?}");
        assert!(headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Bearer")));
        assert_eq!(answer["error"], "unauthorized");
    }
    let resp = client()
        .put(s.url("/api/sessions/abc"))
        .bearer_auth(AGENT_TOKEN)
        .json(&json!({"updated_by": "x", "status": "closed"}))
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status().as_u16(), 403);
    // Admin tokens work on the agent routes too.
    let (status, _, _) = post(&s, "/api/events", Some(ADMIN_TOKEN), JSON, body).await;
    assert_eq!(status, 200);
    assert_eq!(s.out().len(), 1);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

#[tokio::test]
async fn oversize_body_and_gzip_bomb_are_413_and_gzip_bodies_work() {
    let s = Server::start(
        "    max_body_bytes: 65536\n    max_decompressed_bytes: 1048576\n",
        None,
    );
    let (notify, _) = first_notify_and_end();
    let big = vec![b' '; 100_000];
    let (status, answer, _) = post(&s, "/api/events", Some(AGENT_TOKEN), JSON, big).await;
    assert_eq!(status, 413, "{answer}");
    // 64 MiB of spaces compress to ~64 KiB, under the wire limit; expanding is refused.
    let bomb = gzip(&vec![b' '; 64 << 20]);
    assert!(bomb.len() < 65536, "bomb is {} bytes", bomb.len());
    let resp = client()
        .post(s.url("/api/events"))
        .bearer_auth(AGENT_TOKEN)
        .header("content-type", JSON)
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 413);
    let resp = client()
        .post(s.url("/api/events"))
        .bearer_auth(AGENT_TOKEN)
        .header("content-type", JSON)
        .header("content-encoding", "gzip")
        .body(gzip(notify.to_string().as_bytes()))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(s.out(), vec![notify]);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_400_with_a_json_error() {
    let s = Server::start("", None);
    let (status, answer, _) = post(
        &s,
        "/api/events",
        Some(AGENT_TOKEN),
        JSON,
        b"user=alice&logon=1".to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(answer["error"], "invalid_json");
    assert!(answer["message"].is_string());
    let (status, _, _) = post(
        &s,
        "/events",
        Some(AGENT_TOKEN),
        JSON,
        b"[{\"a\":1}".to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    // Still kept for the operator.
    assert!(wait_until(10, || s.dropped().len() == 2));
    assert!(s.out().is_empty());
}

#[tokio::test]
async fn tls_with_a_self_signed_certificate() {
    use http_body_util::{BodyExt, Full};
    use rustls_pki_types::ServerName;

    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let certs = tempfile::tempdir().expect("dir");
    let cert_file = certs.path().join("cert.pem");
    let key_file = certs.path().join("key.pem");
    std::fs::write(&cert_file, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).expect("write key");
    let s = Server::start(
        &format!(
            "    tls:\n      cert_file: {}\n      key_file: {}\n",
            cert_file.display(),
            key_file.display()
        ),
        None,
    );

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("root");
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.port))
        .await
        .expect("connect");
    let tls = connector
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake with the self-signed certificate");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .expect("http handshake");
    tokio::spawn(conn);
    let (notify, _) = first_notify_and_end();
    let req = hyper::Request::post("/api/events")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {AGENT_TOKEN}"))
        .header("content-type", JSON)
        .body(Full::new(bytes_of(&notify)))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status().as_u16(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let answer: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(answer["accepted"], 1);
    assert_eq!(s.out(), vec![notify]);

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = client()
        .post(s.url("/api/events"))
        .bearer_auth(AGENT_TOKEN)
        .body("{}")
        .send()
        .await;
    assert!(plain.is_err());
}

fn bytes_of(v: &Value) -> hyper::body::Bytes {
    hyper::body::Bytes::from(v.to_string())
}

/// A stdout sink whose pipe nobody reads: it blocks once the pipe buffer is full, the
/// pipeline's channels fill up behind it.
const STUCK_STDOUT: &str = "  out:\n    type: stdout\n    inputs: [agents]\n";

fn padded_event(i: usize, pad: usize) -> Value {
    let (mut notify, _) = first_notify_and_end();
    notify["event_id"] = json!(format!("evt-{i}"));
    notify["padding"] = json!("x".repeat(pad));
    notify
}

#[tokio::test]
async fn full_pipeline_answers_503_with_retry_after() {
    let s = Server::start("    acknowledgements: false\n", Some(STUCK_STDOUT));
    let mut saw_503 = None;
    // The pipe (64 KiB) plus a handful of channel slots hold a bounded number of requests.
    for i in 0..500 {
        let body = padded_event(i, 16 * 1024).to_string().into_bytes();
        let (status, answer, headers) =
            post(&s, "/api/events", Some(AGENT_TOKEN), JSON, body).await;
        if status == 503 {
            saw_503 = Some((i, answer, headers));
            break;
        }
        assert_eq!(status, 202, "{answer}");
    }
    let (i, answer, headers) = saw_503.expect("a 503 once the pipeline is full");
    assert!(i > 0);
    assert_eq!(answer["error"], "busy");
    assert_eq!(
        headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
}

#[tokio::test]
async fn ack_mode_answers_only_after_the_sink_wrote_the_events() {
    let mut s = Server::start("", Some(STUCK_STDOUT));
    let mut stdout = s.child.stdout.take().expect("stdout");
    // 256 KiB: more than the pipe holds, so the sink cannot finish writing it.
    let event = padded_event(1, 256 * 1024);
    let url = s.url("/api/events");
    let body = event.to_string();
    let request = tokio::spawn(async move {
        client()
            .post(url)
            .bearer_auth(AGENT_TOKEN)
            .header("content-type", JSON)
            .body(body)
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !request.is_finished(),
        "answered before the sink could write the event"
    );
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        // Read until the whole event line is out.
        while !buf.ends_with(b"\n") {
            match stdout.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf
    });
    let status = request.await.expect("task").expect("response");
    assert_eq!(status, 200);
    let written = reader.join().expect("reader");
    let line: Value = serde_json::from_slice(&written).expect("the event line");
    assert_eq!(line, event);
}

fn doc_fields() -> Vec<String> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/agent-events.md"))
            .expect("docs/agent-events.md");
    let mut fields = Vec::new();
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let first = line.split('|').nth(1).unwrap_or("");
        for part in first.split('`').skip(1).step_by(2) {
            fields.push(part.to_string());
        }
    }
    fields
}

#[tokio::test]
async fn windows_agent_templates_match_the_documented_schema_and_are_accepted() {
    let fields = doc_fields();
    let s = Server::start("", None);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("agents/windows/templates");
    for name in ["session_notify", "session_end_event"] {
        let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).expect("template");
        let template: Value = serde_json::from_str(&text).expect("template is JSON");
        assert_eq!(template["event_type"], name);
        for key in template.as_object().expect("object").keys() {
            assert!(
                fields.contains(key),
                "{name}: field {key} is not documented in docs/agent-events.md"
            );
        }
        // The script fills these; the template's own values must already pass the schema.
        let (status, answer, _) = post(
            &s,
            "/api/events",
            Some(AGENT_TOKEN),
            JSON,
            text.into_bytes(),
        )
        .await;
        assert_eq!(status, 200, "{name}: {answer}");
        assert_eq!(answer["accepted"], 1, "{name}: {answer}");
    }
    // The script sets every field it builds on the template (never adds undocumented ones).
    let script = std::fs::read_to_string(dir.join("../Send-SessionEvent.ps1")).expect("script");
    for assigned in script.split("$rec.").skip(1) {
        let field: String = assigned
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        assert!(
            fields.contains(&field),
            "script sets undocumented field {field}"
        );
    }
}

fn linux_agent() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("agents/linux/sessiontrail-pam.sh")
}

fn run_pam_hook(spool: &Path, port: u16, token_file: &Path, pam_type: &str) {
    let status = std::process::Command::new("sh")
        .arg(linux_agent())
        .env("PAM_TYPE", pam_type)
        .env("PAM_USER", "alice")
        .env("PAM_RHOST", "198.51.100.7")
        .env("PAM_TTY", "ssh")
        .env("PAM_SERVICE", "sshd")
        .env("SESSIONTRAIL_AGENT_CONF", "/nonexistent")
        .env("SESSIONTRAIL_URL", format!("http://127.0.0.1:{port}"))
        .env("SESSIONTRAIL_TOKEN_FILE", token_file)
        .env("SESSIONTRAIL_SPOOL", spool)
        .env("SESSIONTRAIL_RESOURCE_ID", "res-linux-01")
        .env("SESSIONTRAIL_BACKOFF_MAX_S", "1")
        .env("SESSIONTRAIL_RETRY_FOR_S", "60")
        .status()
        .expect("run the PAM hook");
    assert!(status.success(), "the hook must never fail a login");
}

fn queued(spool: &Path) -> usize {
    std::fs::read_dir(spool.join("queue"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn linux_agent_queues_while_the_server_is_down_then_delivers() {
    let work = tempfile::tempdir().expect("dir");
    let spool = work.path().join("spool");
    let token_file = work.path().join("token");
    std::fs::write(&token_file, format!("{AGENT_TOKEN}\n")).expect("token");
    // Reserve a port for the server that is not running yet.
    let port = free_port_outside_ephemeral_range();
    run_pam_hook(&spool, port, &token_file, "open_session");
    run_pam_hook(&spool, port, &token_file, "close_session");
    assert_eq!(queued(&spool), 2, "both records wait in the spool");

    // Now the server comes up on that port; the background flusher delivers in order.
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path().display();
    let yaml = format!(
        "data_dir: {d}/data\nsources:\n  agents:\n    type: http_server\n    address: 127.0.0.1:{port}\n    auth:\n      bearer_tokens: [\"{AGENT_TOKEN}\"]\nsinks:\n  out:\n    type: file\n    inputs: [agents]\n    path: {d}/out.ndjson\n  dead:\n    type: file\n    inputs: [agents.dropped]\n    path: {d}/dropped.ndjson\n"
    );
    let child = spawn_pipeline(&write_pipeline(dir.path(), &yaml));
    let server = Server { child, port, dir };
    server.wait_listening();
    let out_path = server.dir.path().join("out.ndjson");
    assert!(
        wait_until(30, || read_ndjson(&out_path).len() == 2),
        "queued records were not delivered"
    );
    assert!(wait_until(10, || queued(&spool) == 0));
    let out = read_ndjson(&out_path);
    assert_eq!(out[0]["event_type"], "session_notify");
    assert_eq!(out[1]["event_type"], "session_end_event");
    assert_eq!(out[0]["session_id"], out[1]["session_id"]);
    assert_eq!(
        out[0]["user_id"].as_str().map(|u| u.ends_with("\\alice")),
        Some(true)
    );
    assert_eq!(out[0]["client"]["ip"], "198.51.100.7");
    assert_eq!(out[0]["resource_id"], "res-linux-01");
    assert!(server.dropped().is_empty());
}

#[test]
fn windows_sessions_pipeline_is_valid_and_needs_its_tokens() {
    let pipeline = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/windows-sessions.yaml");
    let with_tokens = std::process::Command::new(bin())
        .args(["validate", "-c"])
        .arg(&pipeline)
        .env("AGENT_TOKEN", AGENT_TOKEN)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .expect("validate");
    assert!(
        with_tokens.status.success(),
        "{}",
        String::from_utf8_lossy(&with_tokens.stderr)
    );
    let without = std::process::Command::new(bin())
        .args(["validate", "-c"])
        .arg(&pipeline)
        .env_remove("AGENT_TOKEN")
        .env_remove("ADMIN_TOKEN")
        .output()
        .expect("validate");
    assert!(!without.status.success());
}

/// The shipped Windows aggregator pipeline as an operator runs it: the agents' events POSTed
/// over loopback come out as valid OCSF, paired into the corpus' expected sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_sessions_pipeline_turns_agent_posts_into_ocsf_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let (port, api_port) = (free_port(), free_port());
    let out = dir.path().join("stdout.ndjson");
    let pipeline = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/windows-sessions.yaml");
    let child = std::process::Command::new(bin())
        .args(["run", "-c"])
        .arg(&pipeline)
        .env("AGENT_TOKEN", AGENT_TOKEN)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("AGENTS_ADDRESS", format!("127.0.0.1:{port}"))
        .env("SESSIONTRAIL_API", format!("127.0.0.1:{api_port}"))
        .env("SESSIONTRAIL_DATA_DIR", dir.path().join("data"))
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
        .spawn()
        .expect("spawn");
    let server = Server {
        child,
        port,
        dir: tempfile::tempdir().unwrap(),
    };
    server.wait_listening();
    let body = std::fs::read(corpus("windows/normal_day.ndjson")).unwrap();
    let (status, response, _) = post(
        &server,
        "/events",
        Some(AGENT_TOKEN),
        "application/x-ndjson",
        body,
    )
    .await;
    // Acknowledgements are on: 200 means the events are written.
    assert_eq!(status, 200, "{response}");
    let events = read_ndjson(&out);
    let report = common::validate_ocsf(&out, "1.8.0");
    assert!(!report.is_empty());
    let results: std::collections::HashMap<String, &Value> = events
        .iter()
        .filter(|e| e["unmapped"]["session_status"].is_string())
        .map(|e| (e["session"]["uid"].as_str().unwrap().to_string(), e))
        .collect();
    let expected =
        std::fs::read_to_string(corpus("expected/windows_normal_day.sessions.ndjson")).unwrap();
    let expected: Vec<Value> = expected
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), expected.len(), "one result per session");
    for x in &expected {
        let id = x["session_id"].as_str().unwrap();
        let r = results
            .get(id)
            .unwrap_or_else(|| panic!("no session result for {id}"));
        assert_eq!(r["unmapped"]["session_status"], x["status"], "{id}");
        assert_eq!(
            r["duration"].as_i64().map(|ms| ms / 1000),
            x["duration_s"].as_i64(),
            "{id}"
        );
    }
    assert!(
        read_ndjson(&dir.path().join("data/agents-dropped.ndjson")).is_empty(),
        "no dead letters"
    );
}
