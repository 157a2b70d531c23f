//! End-to-end tests of the `aws_s3` and `aws_cloudwatch_logs` sinks: the real binary writes
//! through the real AWS SDK into the moto emulator (started by `./scripts/test`, which exports
//! `AWS_ENDPOINT_URL` and dummy credentials), and the tests read the data back with the SDK.
//! Faults are injected by proxies between the sink and the emulator: a TCP proxy that can be
//! cut and restored (outage) and an HTTP proxy that answers some requests with throttling
//! errors.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sessiontrail_aws::AwsOptions;

fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").expect(
        "AWS_ENDPOINT_URL is not set: run the tests with ./scripts/test (it starts the moto emulator)",
    )
}

fn unique(name: &str) -> String {
    format!(
        "{name}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Runs `sessiontrail run -c pipeline` with `input` on stdin; returns (success, stderr).
fn run_pipeline(dir: &Path, yaml: &str, input: &[u8]) -> (bool, String) {
    let p = common::write_pipeline(dir, yaml);
    let out = common::run_with_stdin(&["run", "-c", p.to_str().unwrap()], input);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn events(n: usize, f: impl Fn(usize) -> serde_json::Value) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        serde_json::to_writer(&mut out, &f(i)).unwrap();
        out.push(b'\n');
    }
    out
}

async fn s3() -> sessiontrail_aws::s3::Client {
    AwsOptions::default().s3_client(true).await
}

async fn logs() -> sessiontrail_aws::cloudwatchlogs::Client {
    AwsOptions::default().logs_client().await
}

async fn create_bucket(bucket: &str) {
    s3().await
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .expect("create bucket");
}

/// Every object under `prefix`: key -> decoded NDJSON lines.
async fn read_objects(bucket: &str, prefix: &str) -> BTreeMap<String, Vec<serde_json::Value>> {
    let client = s3().await;
    let mut out = BTreeMap::new();
    let mut token = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await
            .expect("list objects");
        for o in page.contents() {
            let key = o.key().unwrap().to_string();
            let body = client
                .get_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .expect("get object")
                .body
                .collect()
                .await
                .expect("read body")
                .into_bytes();
            let text = if key.ends_with(".gz") {
                let mut s = String::new();
                flate2::read::GzDecoder::new(&body[..])
                    .read_to_string(&mut s)
                    .expect("gzip body");
                s
            } else {
                String::from_utf8(body.to_vec()).expect("utf8 body")
            };
            out.insert(key, common::ndjson(&text));
        }
        match page.next_continuation_token() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    out
}

/// Every message of a log stream, read with GetLogEvents from the head.
async fn read_stream(group: &str, stream: &str) -> Vec<(i64, serde_json::Value)> {
    let client = logs().await;
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .get_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .start_from_head(true)
            .set_next_token(token.clone())
            .send()
            .await
            .expect("get log events");
        for e in page.events() {
            out.push((
                e.timestamp().unwrap(),
                serde_json::from_str(e.message().unwrap()).expect("JSON message"),
            ));
        }
        let next = page.next_forward_token().map(str::to_string);
        if page.events().is_empty() || next == token {
            break;
        }
        token = next;
    }
    out
}

fn ids(values: impl IntoIterator<Item = serde_json::Value>) -> HashMap<u64, usize> {
    let mut counts = HashMap::new();
    for v in values {
        *counts.entry(v["id"].as_u64().expect("id")).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_sink_writes_every_event_once_gzipped_and_partitioned_by_prefix() {
    let _ = endpoint();
    let dir = tempfile::tempdir().unwrap();
    let bucket = unique("archive");
    create_bucket(&bucket).await;
    let input = events(
        50,
        |i| serde_json::json!({"id": i, "user": if i % 2 == 0 { "anna" } else { "bob" }, "time": 1741597200000u64}),
    );
    let yaml = format!(
        "sources:\n  in:\n    type: stdin\nsinks:\n  archive:\n    type: aws_s3\n    inputs: [in]\n    bucket: {bucket}\n    key_prefix: \"sessions/%Y/{{{{ user }}}}/\"\n    batch: {{ max_events: 7 }}\n    storage_class: STANDARD_IA\n    server_side_encryption: AES256\n"
    );
    let (ok, stderr) = run_pipeline(dir.path(), &yaml, &input);
    assert!(ok, "{stderr}");
    let objects = read_objects(&bucket, "sessions/").await;
    // 25 events per user in batches of at most 7: 4 objects per user.
    assert_eq!(objects.len(), 8, "{:?}", objects.keys());
    for (key, lines) in &objects {
        assert!(key.ends_with(".ndjson.gz"), "{key}");
        assert!(lines.len() <= 7);
        for l in lines {
            let user = l["user"].as_str().unwrap();
            assert!(key.starts_with(&format!("sessions/2025/{user}/")), "{key}");
        }
    }
    let counts = ids(objects.into_values().flatten());
    assert_eq!(counts.len(), 50);
    assert!(counts.values().all(|&c| c == 1), "duplicates: {counts:?}");
    let head = s3()
        .await
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let class = head.contents()[0]
        .storage_class()
        .unwrap()
        .as_str()
        .to_string();
    assert_eq!(class, "STANDARD_IA");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_large_uncompressed_object_is_uploaded_in_parts() {
    let _ = endpoint();
    let dir = tempfile::tempdir().unwrap();
    let bucket = unique("large");
    create_bucket(&bucket).await;
    // ~12 MB of NDJSON in one batch, uploaded as 8 MiB parts above a 5 MiB threshold.
    let pad = "p".repeat(1000);
    let input = events(12_000, |i| serde_json::json!({"id": i, "pad": pad}));
    let yaml = format!(
        "sources:\n  in:\n    type: stdin\nsinks:\n  archive:\n    type: aws_s3\n    inputs: [in]\n    bucket: {bucket}\n    key_prefix: big/\n    compression: none\n    multipart_threshold_bytes: 5242880\n    batch: {{ max_bytes: 20000000, max_events: 100000 }}\n"
    );
    let (ok, stderr) = run_pipeline(dir.path(), &yaml, &input);
    assert!(ok, "{stderr}");
    let objects = read_objects(&bucket, "big/").await;
    assert_eq!(objects.len(), 1, "{:?}", objects.keys());
    let key = objects.keys().next().unwrap().clone();
    let head = s3()
        .await
        .head_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    // A multipart ETag ends in -<number of parts>.
    assert!(
        head.e_tag().unwrap().trim_matches('"').ends_with("-2"),
        "{:?}",
        head.e_tag()
    );
    let counts = ids(objects.into_values().flatten());
    assert_eq!(counts.len(), 12_000);
    assert!(counts.values().all(|&c| c == 1));
}

#[test]
fn s3_healthcheck_names_the_missing_bucket() {
    let _ = endpoint();
    let dir = tempfile::tempdir().unwrap();
    let bucket = unique("missing");
    let yaml = format!(
        "sources:\n  in:\n    type: stdin\nsinks:\n  archive:\n    type: aws_s3\n    inputs: [in]\n    bucket: {bucket}\n"
    );
    let (ok, stderr) = run_pipeline(dir.path(), &yaml, b"{\"id\":1}\n");
    assert!(!ok);
    assert!(
        stderr.contains(&format!("bucket \"{bucket}\" does not exist")),
        "{stderr}"
    );
}

#[test]
fn s3_permanent_error_sends_the_events_to_dropped_with_the_aws_code() {
    let _ = endpoint();
    let dir = tempfile::tempdir().unwrap();
    let dropped = dir.path().join("dropped.ndjson");
    let bucket = unique("gone");
    let yaml = format!(
        "sources:\n  in:\n    type: stdin\nsinks:\n  archive:\n    type: aws_s3\n    inputs: [in]\n    bucket: {bucket}\n    healthcheck: false\n  dead:\n    type: file\n    inputs: [archive.dropped]\n    path: {}\n",
        dropped.display()
    );
    let (ok, stderr) = run_pipeline(
        dir.path(),
        &yaml,
        &events(3, |i| serde_json::json!({"id": i})),
    );
    assert!(ok, "{stderr}");
    let dead = common::read_ndjson(&dropped);
    assert_eq!(dead.len(), 3, "{dead:?}");
    for d in &dead {
        assert_eq!(d["reason"], "destination_rejected");
        assert_eq!(d["error_code"], "NoSuchBucket");
        let raw: serde_json::Value = serde_json::from_str(d["raw"].as_str().unwrap()).unwrap();
        assert!(raw["id"].is_u64());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cloudwatch_sink_delivers_every_event_to_its_stream_and_creates_group_and_stream() {
    let _ = endpoint();
    let dir = tempfile::tempdir().unwrap();
    let group = format!("/sessiontrail/{}", unique("g"));
    let base = now_ms() - 60_000;
    // Out of order on input: the sink sorts each request by time.
    let input = events(
        300,
        |i| serde_json::json!({"id": i, "host": if i % 3 == 0 { "web-1" } else { "db-1" }, "time": base + ((i * 7919) % 300) as i64}),
    );
    let yaml = format!(
        "sources:\n  in:\n    type: stdin\nsinks:\n  siem:\n    type: aws_cloudwatch_logs\n    inputs: [in]\n    group_name: {group}\n    stream_name: \"{{{{ host }}}}\"\n    retention_days: 30\n    batch: {{ max_events: 40 }}\n"
    );
    let (ok, stderr) = run_pipeline(dir.path(), &yaml, &input);
    assert!(ok, "{stderr}");
    let web = read_stream(&group, "web-1").await;
    let db = read_stream(&group, "db-1").await;
    assert_eq!(web.len(), 100);
    assert_eq!(db.len(), 200);
    for (ts, v) in web.iter().chain(&db) {
        assert_eq!(
            *ts,
            v["time"].as_i64().unwrap(),
            "timestamp is the event time"
        );
    }
    assert!(web.iter().all(|(_, v)| v["host"] == "web-1"));
    let counts = ids(web.into_iter().chain(db).map(|(_, v)| v));
    assert_eq!(counts.len(), 300);
    assert!(counts.values().all(|&c| c == 1));
    let groups = logs()
        .await
        .describe_log_groups()
        .log_group_name_prefix(&group)
        .send()
        .await
        .unwrap();
    assert_eq!(groups.log_groups()[0].retention_in_days(), Some(30));
    // FilterLogEvents over the whole group sees the same events.
    let filtered = logs()
        .await
        .filter_log_events()
        .log_group_name(&group)
        .send()
        .await
        .unwrap();
    assert!(!filtered.events().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cloudwatch_events_outside_the_accepted_time_window_are_dead_lettered_with_reason() {
    let _ = endpoint();
    let dir = tempfile::tempdir().unwrap();
    let dropped = dir.path().join("dropped.ndjson");
    let group = format!("/sessiontrail/{}", unique("g"));
    let now = now_ms();
    let day = 24 * 3600 * 1000;
    let input = events(4, |i| {
        let time = match i {
            0 => now - 15 * day,        // older than 14 days
            1 => now + 3 * 3600 * 1000, // more than 2 h in the future
            _ => now - 1000,
        };
        serde_json::json!({"id": i, "time": time})
    });
    let yaml = format!(
        "sources:\n  in:\n    type: stdin\nsinks:\n  siem:\n    type: aws_cloudwatch_logs\n    inputs: [in]\n    group_name: {group}\n    stream_name: s\n  dead:\n    type: file\n    inputs: [siem.dropped]\n    path: {}\n",
        dropped.display()
    );
    let (ok, stderr) = run_pipeline(dir.path(), &yaml, &input);
    assert!(ok, "{stderr}");
    let mut reasons: Vec<(u64, String)> = common::read_ndjson(&dropped)
        .iter()
        .map(|d| {
            (
                d["event"]["id"].as_u64().unwrap(),
                d["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        vec![
            (0, "log_event_too_old".into()),
            (1, "log_event_too_new".into())
        ]
    );
    let delivered = ids(read_stream(&group, "s").await.into_iter().map(|(_, v)| v));
    assert_eq!(
        delivered
            .keys()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        [2, 3].into()
    );
}

#[test]
fn cloudwatch_missing_group_without_create_fails_the_healthcheck_clearly() {
    let _ = endpoint();
    let dir = tempfile::tempdir().unwrap();
    let group = format!("/sessiontrail/{}", unique("absent"));
    let yaml = format!(
        "sources:\n  in:\n    type: stdin\nsinks:\n  siem:\n    type: aws_cloudwatch_logs\n    inputs: [in]\n    group_name: {group}\n    stream_name: s\n    create_missing_group: false\n"
    );
    let (ok, stderr) = run_pipeline(dir.path(), &yaml, b"{\"id\":1}\n");
    assert!(!ok);
    assert!(stderr.contains("does not exist"), "{stderr}");
}

// ---------------------------------------------------------------------------------------
// Fault injection

/// An HTTP proxy in front of the emulator that answers every other PutLogEvents with
/// ThrottlingException and every other S3 PutObject with 503 SlowDown; the rest is forwarded.
struct ThrottlingProxy {
    url: String,
    throttled: Arc<AtomicU64>,
}

async fn throttling_proxy() -> ThrottlingProxy {
    use axum::body::Body;
    use axum::extract::{Request, State};
    use axum::response::Response;

    #[derive(Clone)]
    struct St {
        upstream: String,
        client: reqwest::Client,
        seen: Arc<AtomicU64>,
        throttled: Arc<AtomicU64>,
    }

    async fn handle(State(st): State<St>, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let target = parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let is_put_log_events = target.ends_with("PutLogEvents");
        let is_put_object = parts.method == "PUT"
            && parts.uri.path().trim_start_matches('/').contains('/')
            && !parts.uri.query().unwrap_or("").contains("uploadId");
        if (is_put_log_events || is_put_object) && st.seen.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
            st.throttled.fetch_add(1, Ordering::SeqCst);
            return if is_put_log_events {
                Response::builder()
                    .status(400)
                    .header("content-type", "application/x-amz-json-1.1")
                    .header("x-amzn-errortype", "ThrottlingException")
                    .body(Body::from(
                        r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
                    ))
                    .unwrap()
            } else {
                Response::builder()
                    .status(503)
                    .header("content-type", "application/xml")
                    .body(Body::from(
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
                    ))
                    .unwrap()
            };
        }
        let url = format!(
            "{}{}",
            st.upstream,
            parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
        );
        let mut fwd = st.client.request(parts.method.clone(), url).body(body);
        for (k, v) in &parts.headers {
            if !matches!(
                k.as_str(),
                "host" | "content-length" | "connection" | "transfer-encoding" | "expect"
            ) {
                fwd = fwd.header(k, v);
            }
        }
        let resp = fwd.send().await.unwrap();
        let mut out = Response::builder().status(resp.status().as_u16());
        for (k, v) in resp.headers() {
            if !matches!(
                k.as_str(),
                "content-length" | "connection" | "transfer-encoding"
            ) {
                out = out.header(k, v);
            }
        }
        out.body(Body::from(resp.bytes().await.unwrap())).unwrap()
    }

    let st = St {
        upstream: endpoint(),
        client: {
            common::install_tls_provider();
            reqwest::Client::new()
        },
        seen: Arc::new(AtomicU64::new(0)),
        throttled: Arc::new(AtomicU64::new(0)),
    };
    let throttled = Arc::clone(&st.throttled);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(handle).with_state(st);
    tokio::spawn(async move { axum::serve(listener, app).await });
    ThrottlingProxy { url, throttled }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn throttling_responses_are_retried_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let dropped = dir.path().join("dropped.ndjson");
    let proxy = throttling_proxy().await;
    let bucket = unique("throttled");
    create_bucket(&bucket).await;
    let group = format!("/sessiontrail/{}", unique("throttled"));
    let base = now_ms() - 10_000;
    let input = events(
        200,
        |i| serde_json::json!({"id": i, "time": base + i as i64}),
    );
    let yaml = format!(
        "sources:\n  in:\n    type: stdin\nsinks:\n  archive:\n    type: aws_s3\n    inputs: [in]\n    bucket: {bucket}\n    key_prefix: t/\n    endpoint: {url}\n    batch: {{ max_events: 50 }}\n    request: {{ retry_initial_backoff_ms: 10, retry_max_backoff_secs: 1 }}\n  siem:\n    type: aws_cloudwatch_logs\n    inputs: [in]\n    group_name: {group}\n    stream_name: s\n    endpoint: {url}\n    batch: {{ max_events: 50 }}\n    request: {{ retry_initial_backoff_ms: 10, retry_max_backoff_secs: 1 }}\n  dead:\n    type: file\n    inputs: [archive.dropped, siem.dropped]\n    path: {}\n",
        dropped.display(),
        url = proxy.url
    );
    let (ok, stderr) = tokio::task::spawn_blocking(move || {
        let r = run_pipeline(dir.path(), &yaml, &input);
        drop(dir);
        r
    })
    .await
    .unwrap();
    assert!(ok, "{stderr}");
    // Each of the 4 objects and 4 puts met one throttling answer before it went through.
    assert!(proxy.throttled.load(Ordering::SeqCst) >= 8);
    assert!(
        common::read_ndjson(&dropped).is_empty(),
        "nothing is dropped"
    );
    let s3_ids = ids(read_objects(&bucket, "t/").await.into_values().flatten());
    assert_eq!(s3_ids.len(), 200);
    assert!(s3_ids.values().all(|&c| c == 1));
    let cw_ids = ids(read_stream(&group, "s").await.into_iter().map(|(_, v)| v));
    assert_eq!(cw_ids.len(), 200);
}

/// A TCP proxy that can be cut (refuses new connections and kills open ones) and restored
/// on the same port: the destination looks down to the sink, and nothing in the emulator is
/// lost meanwhile.
struct CuttableProxy {
    port: u16,
    up: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
}

impl CuttableProxy {
    fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(AtomicU64::new(0));
        let (u, g) = (Arc::clone(&up), Arc::clone(&generation));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                if !u.load(Ordering::SeqCst) {
                    // Down: the connection is closed at once.
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(upstream) else {
                    continue;
                };
                let born = g.load(Ordering::SeqCst);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let g = Arc::clone(&g);
                    from.set_read_timeout(Some(Duration::from_millis(200)))
                        .unwrap();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 64 * 1024];
                        loop {
                            if g.load(Ordering::SeqCst) != born {
                                break;
                            }
                            match from.read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock
                                            | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => break,
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        CuttableProxy {
            port,
            up,
            generation,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Outage: both sinks write through a proxy that is cut for 30 s while input keeps coming as
/// fast as the pipeline accepts it, then restored. Every event must arrive (S3 exactly once:
/// a retried object overwrites its own key), and the sink's memory must stay bounded: input
/// is refused (backpressure), not buffered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outage_of_30_seconds_loses_nothing_and_memory_stays_bounded() {
    let upstream: std::net::SocketAddr = endpoint()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("AWS_ENDPOINT_URL is http://127.0.0.1:PORT");
    let proxy = CuttableProxy::start(upstream);
    let url = format!("http://127.0.0.1:{}", proxy.port);
    let dir = tempfile::tempdir().unwrap();
    let dropped = dir.path().join("dropped.ndjson");
    let log = dir.path().join("sessiontrail.log");
    let bucket = unique("outage");
    create_bucket(&bucket).await;
    let group = format!("/sessiontrail/{}", unique("outage"));
    let yaml = format!(
        "sources:\n  in:\n    type: stdin\nsinks:\n  archive:\n    type: aws_s3\n    inputs: [in]\n    bucket: {bucket}\n    key_prefix: o/\n    endpoint: {url}\n    batch: {{ max_bytes: 1000000, timeout_secs: 1 }}\n    request: {{ timeout_secs: 5, retry_max_backoff_secs: 2 }}\n  siem:\n    type: aws_cloudwatch_logs\n    inputs: [in]\n    group_name: {group}\n    stream_name: s\n    endpoint: {url}\n    request: {{ timeout_secs: 5, retry_max_backoff_secs: 2 }}\n  dead:\n    type: file\n    inputs: [archive.dropped, siem.dropped]\n    path: {}\n",
        dropped.display()
    );
    let pipeline = common::write_pipeline(dir.path(), &yaml);
    let mut child: Child = Command::new(common::bin())
        .args(["run", "-c"])
        .arg(&pipeline)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        // To a file, not a pipe: a 30 s outage logs a retry warning per attempt, and a pipe
        // nobody reads until exit fills up and blocks the process on its own log writes.
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    // Phase flags for the writer: paced before the cut, flooding during it, stop after.
    let flood = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let pad = "x".repeat(400);
    let writer = {
        let (flood, stop, written) = (Arc::clone(&flood), Arc::clone(&stop), Arc::clone(&written));
        std::thread::spawn(move || {
            let mut id: u64 = 0;
            while !stop.load(Ordering::SeqCst) {
                let mut chunk = Vec::new();
                for _ in 0..100 {
                    let line = serde_json::json!({"id": id, "time": now_ms(), "pad": pad});
                    serde_json::to_writer(&mut chunk, &line).unwrap();
                    chunk.push(b'\n');
                    id += 1;
                }
                if stdin.write_all(&chunk).is_err() {
                    break;
                }
                written.store(id, Ordering::SeqCst);
                if !flood.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50)); // ~2,000 events/s
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.cut();
    flood.store(true, Ordering::SeqCst);
    let at_cut = written.load(Ordering::SeqCst);
    let mut peak_rss_kb = 0;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak_rss_kb = peak_rss_kb.max(rss_kb(pid));
    }
    let during_outage = written.load(Ordering::SeqCst) - at_cut;
    proxy.restore();
    flood.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    tokio::task::spawn_blocking(move || writer.join().unwrap())
        .await
        .unwrap();
    let total = written.load(Ordering::SeqCst);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    eprintln!(
        "outage: {total} events in total, {during_outage} accepted during the 30 s outage, peak RSS {} MB",
        peak_rss_kb / 1024
    );
    // Backpressure: flooding for 30 s got only a bounded backlog in (~500 bytes each)...
    assert!(
        during_outage * 500 < 200_000_000,
        "{during_outage} events accepted while the destination was down"
    );
    // ...and memory stayed bounded.
    assert!(
        peak_rss_kb < 300 * 1024,
        "peak RSS {peak_rss_kb} kB during the outage"
    );
    assert!(
        common::read_ndjson(&dropped).is_empty(),
        "nothing is dropped"
    );
    let s3_ids = ids(read_objects(&bucket, "o/").await.into_values().flatten());
    assert_eq!(s3_ids.len() as u64, total, "every event in S3");
    assert!(s3_ids.values().all(|&c| c == 1), "no S3 duplicates");
    let cw_ids = ids(read_stream(&group, "s").await.into_iter().map(|(_, v)| v));
    // CloudWatch has no idempotent put: a put accepted just before the cut may be sent again.
    assert_eq!(cw_ids.len() as u64, total, "every event in CloudWatch");
}
