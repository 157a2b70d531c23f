//! Helpers for end-to-end tests that run the built `sessiontrail` binary as a user would.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The binary under test (built by cargo for the integration tests).
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sessiontrail"))
}

/// `../shared` (or `$SESSIONTRAIL_SHARED`): corpus, OCSF schemas, generators.
pub fn shared() -> PathBuf {
    match std::env::var_os("SESSIONTRAIL_SHARED") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"),
    }
}

pub fn corpus(rel: &str) -> PathBuf {
    shared().join("corpus").join(rel)
}

/// Writes `yaml` to `dir/pipeline.yaml` and returns its path.
pub fn write_pipeline(dir: &Path, yaml: &str) -> PathBuf {
    let p = dir.join("pipeline.yaml");
    std::fs::write(&p, yaml).expect("write pipeline");
    p
}

/// Runs `sessiontrail <args>` with `stdin` as input and waits for it.
pub fn run_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sessiontrail");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait");
    let _ = writer.join();
    out
}

/// Starts `sessiontrail run -c <pipeline>` in the background (stdout/stderr piped).
pub fn spawn_pipeline(pipeline: &Path) -> Child {
    Command::new(bin())
        .args(["run", "-c"])
        .arg(pipeline)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sessiontrail")
}

/// Sends SIGTERM (graceful stop).
pub fn terminate(child: &Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
}

/// Parses NDJSON text into JSON values (panics on an invalid line: output must be valid).
pub fn ndjson(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("invalid output line {l:?}: {e}"))
        })
        .collect()
}

/// Reads an NDJSON file a sink may still be writing: a last line without its newline is a
/// write in progress, not output, and is left out.
pub fn read_ndjson(path: &Path) -> Vec<serde_json::Value> {
    ndjson(complete_lines(
        &std::fs::read_to_string(path).unwrap_or_default(),
    ))
}

/// Like `read_ndjson`, for output written across a SIGKILL: a line torn by the kill does not
/// parse and is returned apart instead of failing the read.
pub fn read_ndjson_with_torn(path: &Path) -> (Vec<serde_json::Value>, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut values = Vec::new();
    let mut torn = Vec::new();
    for line in complete_lines(&text)
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        match serde_json::from_str(line) {
            Ok(v) => values.push(v),
            Err(_) => torn.push(line.to_string()),
        }
    }
    (values, torn)
}

fn complete_lines(text: &str) -> &str {
    match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    }
}

/// Polls `f` every 50 ms until it returns true or `secs` pass.
pub fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    f()
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A free port below Linux's ephemeral range (32768-60999), for a test that must reserve a port
/// before its server runs: a port from `free_port()` can meanwhile be handed to another test's
/// server or outgoing connection, and a client aimed at it would reach the wrong process.
#[allow(dead_code)]
pub fn free_port_outside_ephemeral_range() -> u16 {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
    (0..10_000u64)
        .map(|i| 20_000 + ((seed + i * 7919) % 12_000) as u16)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 20000-31999")
}

/// reqwest is built without a TLS crypto provider of its own (it shares the AWS SDK's
/// aws-lc-rs): install it before creating an HTTP client in a test.
pub fn install_tls_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Python with `jsonschema` for validate-ocsf (`./scripts/test` exports it).
pub fn python() -> String {
    std::env::var("SESSIONTRAIL_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs validate-ocsf --strict on `file` for `version`; returns its report.
pub fn validate_ocsf(file: &Path, version: &str) -> String {
    let out = Command::new(python())
        .arg(shared().join("ocsf/validate-ocsf"))
        .args(["--strict", "--max-errors", "20", "--ocsf-version", version])
        .arg(file)
        .output()
        .expect("run validate-ocsf");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(
        out.status.code(),
        Some(2),
        "validate-ocsf could not run (set SESSIONTRAIL_PYTHON to a python with jsonschema):\n{report}"
    );
    assert!(
        out.status.success(),
        "OCSF {version} output is invalid:\n{report}"
    );
    report
}
