//! End-to-end tests of the `file` source: the built binary tails real files while the test
//! rotates, truncates, deletes and kills it, and the output file is checked line by line.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Child;

use serde_json::Value;

/// A scratch directory with `logs/`, `data/`, the pipeline file and its outputs.
struct Scene {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Scene {
    fn new() -> Scene {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        std::fs::create_dir_all(root.join("logs")).unwrap();
        Scene { _tmp: tmp, root }
    }

    fn log(&self, name: &str) -> PathBuf {
        self.root.join("logs").join(name)
    }

    fn out(&self) -> PathBuf {
        self.root.join("out.ndjson")
    }

    fn dropped(&self) -> PathBuf {
        self.root.join("dropped.ndjson")
    }

    /// A pipeline tailing `logs/<glob>` into `out.ndjson`, dead letters into `dropped.ndjson`.
    fn pipeline(&self, glob: &str, extra: &str) -> PathBuf {
        let r = self.root.display();
        let yaml = format!(
            r#"data_dir: {r}/data
sources:
  logs:
    type: file
    include: ["{r}/logs/{glob}"]
    glob_interval: 200ms
{extra}
sinks:
  out:
    type: file
    inputs: [logs]
    path: {r}/out.ndjson
  dead:
    type: file
    inputs: [logs.dropped]
    path: {r}/dropped.ndjson
"#
        );
        common::write_pipeline(&self.root, &yaml)
    }

    fn lines_pipeline(&self, glob: &str) -> PathBuf {
        self.pipeline(glob, "    decoding: lines\n    line_timeout_ms: 2000")
    }

    /// The messages at the sink; every finished line must be valid JSON.
    fn messages(&self) -> Vec<String> {
        let (messages, torn) = self.messages_and_torn_lines();
        assert!(torn.is_empty(), "invalid output lines: {torn:?}");
        messages
    }

    /// The messages at the sink, and the lines a SIGKILL tore in the middle of a write.
    fn messages_and_torn_lines(&self) -> (Vec<String>, Vec<String>) {
        let (values, torn) = common::read_ndjson_with_torn(&self.out());
        let messages = values
            .into_iter()
            .filter_map(|v| v["message"].as_str().map(str::to_string))
            .collect();
        (messages, torn)
    }

    fn wait_for_messages(&self, n: usize) -> Vec<String> {
        let ok = common::wait_until(120, || self.messages().len() >= n);
        let got = self.messages();
        assert!(ok, "expected {n} lines at the sink, got {}", got.len());
        got
    }
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn numbered(prefix: &str, range: std::ops::Range<usize>) -> String {
    range.map(|i| format!("{prefix}-{i}\n")).collect()
}

fn expected(parts: &[(&str, std::ops::Range<usize>)]) -> Vec<String> {
    let mut v: Vec<String> = parts
        .iter()
        .flat_map(|(p, r)| r.clone().map(move |i| format!("{p}-{i}")))
        .collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn stop(child: Child) {
    common::terminate(&child);
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "pipeline failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rename_and_create_finishes_the_old_file_then_reads_the_new() {
    let s = Scene::new();
    append(&s.log("app.log"), &numbered("old", 0..1000));
    let child = common::spawn_pipeline(&s.lines_pipeline("*.log"));
    s.wait_for_messages(1000);
    // More lines, then rotate at once: the source has most likely not read them yet and must
    // find them in the renamed file (which no longer matches the glob).
    append(&s.log("app.log"), &numbered("old", 1000..20000));
    std::fs::rename(s.log("app.log"), s.log("app.log.1")).unwrap();
    append(&s.log("app.log"), &numbered("new", 0..1000));
    let got = s.wait_for_messages(21000);
    stop(child);
    assert_eq!(
        sorted(got),
        expected(&[("old", 0..20000), ("new", 0..1000)])
    );
}

#[test]
fn copytruncate_restarts_from_zero() {
    let s = Scene::new();
    append(&s.log("app.log"), &numbered("before", 0..500));
    let child = common::spawn_pipeline(&s.lines_pipeline("*.log"));
    s.wait_for_messages(500);
    std::fs::copy(s.log("app.log"), s.root.join("app.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(s.log("app.log"))
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&s.log("app.log"), &numbered("after", 0..300));
    let got = s.wait_for_messages(800);
    stop(child);
    assert_eq!(
        sorted(got),
        expected(&[("before", 0..500), ("after", 0..300)])
    );
}

#[test]
fn a_file_deleted_while_open_is_read_to_its_end() {
    let s = Scene::new();
    append(&s.log("app.log"), &numbered("line", 0..10));
    let child = common::spawn_pipeline(&s.lines_pipeline("*.log"));
    s.wait_for_messages(10);
    append(&s.log("app.log"), &numbered("line", 10..100_000));
    std::fs::remove_file(s.log("app.log")).unwrap();
    let got = s.wait_for_messages(100_000);
    stop(child);
    assert_eq!(sorted(got), expected(&[("line", 0..100_000)]));
}

#[test]
fn a_file_replaced_while_stopped_is_read_from_its_start() {
    let s = Scene::new();
    let pipeline = s.lines_pipeline("*.log");
    append(&s.log("app.log"), &numbered("v1", 0..100));
    let child = common::spawn_pipeline(&pipeline);
    s.wait_for_messages(100);
    stop(child);
    // A new file (new inode, other content) takes the old one's name.
    let tmp = s.root.join("replacement");
    std::fs::write(&tmp, numbered("v2", 0..50)).unwrap();
    std::fs::rename(&tmp, s.log("app.log")).unwrap();
    let child = common::spawn_pipeline(&pipeline);
    let got = s.wait_for_messages(150);
    stop(child);
    assert_eq!(sorted(got), expected(&[("v1", 0..100), ("v2", 0..50)]));
}

#[test]
fn a_file_truncated_and_refilled_while_stopped_is_read_from_its_start() {
    let s = Scene::new();
    let pipeline = s.lines_pipeline("*.log");
    // The same 2 KiB first line in both contents: the fingerprint of the first bytes matches,
    // only the offset marker can tell that the rest changed.
    let header = format!("header-{}\n", "h".repeat(2048));
    append(&s.log("app.log"), &header);
    append(&s.log("app.log"), &numbered("a", 0..100));
    let child = common::spawn_pipeline(&pipeline);
    s.wait_for_messages(101);
    stop(child);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(s.log("app.log"))
        .unwrap();
    f.set_len(0).unwrap();
    drop(f);
    append(&s.log("app.log"), &header);
    append(&s.log("app.log"), &numbered("b", 0..300));
    let child = common::spawn_pipeline(&pipeline);
    let got = s.wait_for_messages(101 + 301);
    stop(child);
    let header_line = header.trim_end().to_string();
    let mut want = expected(&[("a", 0..100), ("b", 0..300)]);
    want.push(header_line.clone());
    want.push(header_line);
    assert_eq!(sorted(got), sorted(want));
}

#[test]
fn restart_resumes_where_it_stopped_without_repeating() {
    let s = Scene::new();
    let pipeline = s.lines_pipeline("*.log");
    append(&s.log("app.log"), &numbered("first", 0..1000));
    let child = common::spawn_pipeline(&pipeline);
    s.wait_for_messages(1000);
    stop(child);
    append(&s.log("app.log"), &numbered("second", 0..1000));
    let child = common::spawn_pipeline(&pipeline);
    let got = s.wait_for_messages(2000);
    stop(child);
    assert_eq!(
        sorted(got),
        expected(&[("first", 0..1000), ("second", 0..1000)])
    );
}

#[test]
fn partial_last_line_waits_for_its_end_then_times_out() {
    let s = Scene::new();
    append(&s.log("app.log"), "one\ntwo\nthr");
    let child = common::spawn_pipeline(
        &s.pipeline("*.log", "    decoding: lines\n    line_timeout_ms: 10000"),
    );
    s.wait_for_messages(2);
    // The writer finishes the line well within line_timeout_ms: one line, not two.
    append(&s.log("app.log"), "ee\nfour");
    s.wait_for_messages(3);
    // "four" never gets its newline: emitted once the file stayed quiet for the timeout.
    let got = s.wait_for_messages(4);
    stop(child);
    assert_eq!(got, ["one", "two", "three", "four"]);
}

#[test]
fn partial_last_line_is_emitted_when_the_file_is_rotated_away() {
    let s = Scene::new();
    append(&s.log("app.log"), "one\nunterminated");
    // A timeout far beyond the test's patience: only the rotation can emit the line.
    let child = common::spawn_pipeline(
        &s.pipeline("*.log", "    decoding: lines\n    line_timeout_ms: 3600000"),
    );
    s.wait_for_messages(1);
    std::fs::rename(s.log("app.log"), s.root.join("rotated")).unwrap();
    let got = s.wait_for_messages(2);
    stop(child);
    assert_eq!(got, ["one", "unterminated"]);
}

/// Kills the pipeline with SIGKILL while 200,000 lines are being appended, restarts it, and
/// checks that every line arrives and that only lines after the saved checkpoint repeat.
#[test]
fn kill_9_while_appending_loses_nothing() {
    const LINES: usize = 200_000;
    let s = Scene::new();
    let pipeline = s.lines_pipeline("*.log");
    let path = s.log("app.log");
    std::fs::write(&path, "").unwrap();
    let mut child = common::spawn_pipeline(&pipeline);
    let writer_path = path.clone();
    // Fixed-width lines so a byte offset names a line: "seq-000123\n" is 11 bytes.
    let writer = std::thread::spawn(move || {
        for chunk in 0..(LINES / 1000) {
            let text: String = (chunk * 1000..(chunk + 1) * 1000)
                .map(|i| format!("seq-{i:06}\n"))
                .collect();
            append(&writer_path, &text);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    });
    // Kill at a random point of the append, after something was delivered.
    let target = rand_between(1_000, LINES as u64 - 20_000) as usize;
    common::wait_until(120, || s.messages_and_torn_lines().0.len() >= target);
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let before_kill = s.messages_and_torn_lines().0.len();
    let checkpoint_line = saved_offset(&s.root.join("data")) / 11;
    writer.join().unwrap();

    let child = common::spawn_pipeline(&pipeline);
    let ok = common::wait_until(180, || {
        let got = s.messages_and_torn_lines().0;
        let distinct: std::collections::HashSet<_> = got.iter().collect();
        distinct.len() >= LINES
    });
    stop(child);
    assert!(ok, "not every line arrived after the restart");
    let mut counts: HashMap<String, usize> = HashMap::new();
    for m in s.messages_and_torn_lines().0 {
        *counts.entry(m).or_default() += 1;
    }
    for i in 0..LINES {
        assert!(counts.contains_key(&format!("seq-{i:06}")), "line {i} lost");
    }
    let duplicates: Vec<usize> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(m, _)| m[4..].parse::<usize>().unwrap())
        .collect();
    for d in &duplicates {
        assert!(
            *d as u64 >= checkpoint_line,
            "line {d} repeated although the checkpoint at the kill (line {checkpoint_line}) was past it"
        );
    }
    assert!(counts.values().all(|n| *n <= 2), "a line arrived 3 times");
    // One kill can tear at most the one line being written; its event was not acknowledged,
    // so it was sent again and is counted above.
    let torn = s.messages_and_torn_lines().1;
    assert!(torn.len() <= 1, "more than one torn line: {torn:?}");
    eprintln!(
        "kill -9 after {before_kill} delivered lines: checkpoint at line {checkpoint_line}, {} duplicates",
        duplicates.len()
    );
}

fn rand_between(lo: u64, hi: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    lo + nanos % (hi - lo)
}

/// The offset saved for the (single) file of source `logs`, read from the pipeline's store.
fn saved_offset(data_dir: &Path) -> u64 {
    let store = sessiontrail_core::store::StateStore::new(data_dir);
    let entries = store
        .namespace("file/logs")
        .scan()
        .expect("read state store");
    entries
        .iter()
        .filter_map(|(_, v)| serde_json::from_slice::<Value>(v).ok())
        .filter_map(|v| v["offset"].as_u64())
        .max()
        .unwrap_or(0)
}

#[test]
fn ten_thousand_files_matched_by_one_glob() {
    const FILES: usize = 10_000;
    let s = Scene::new();
    for i in 0..FILES {
        std::fs::write(s.log(&format!("f{i:05}.log")), format!("file-{i}\n")).unwrap();
    }
    let child = common::spawn_pipeline(&s.lines_pipeline("*.log"));
    let got = s.wait_for_messages(FILES);
    stop(child);
    assert_eq!(sorted(got), expected(&[("file", 0..FILES)]));
}

#[test]
fn a_2_mb_line_is_dead_lettered_and_reading_continues() {
    let s = Scene::new();
    let big = "x".repeat(2 * 1024 * 1024);
    append(&s.log("app.log"), &format!("before\n{big}\nafter\n"));
    let child = common::spawn_pipeline(&s.lines_pipeline("*.log"));
    let got = s.wait_for_messages(2);
    common::wait_until(60, || !common::read_ndjson(&s.dropped()).is_empty());
    stop(child);
    assert_eq!(got, ["before", "after"]);
    let dead = common::read_ndjson(&s.dropped());
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["reason"], "line_too_long");
    assert_eq!(dead[0]["length"], 2 * 1024 * 1024);
    assert_eq!(dead[0]["offset"], 7);
    assert_eq!(dead[0]["raw"].as_str().unwrap().len(), 1024);
    assert_eq!(
        dead[0]["file"].as_str().unwrap(),
        s.log("app.log").to_str().unwrap()
    );
}

#[test]
fn invalid_utf8_is_decoded_lossily_and_flagged() {
    let s = Scene::new();
    std::fs::write(s.log("bin.log"), b"ok\n\xff\xfe bad \xc3\n\x80\x81\x82\n").unwrap();
    let child = common::spawn_pipeline(&s.lines_pipeline("*.log"));
    s.wait_for_messages(3);
    stop(child);
    let events = common::read_ndjson(&s.out());
    assert_eq!(events[0]["message"], "ok");
    assert!(events[0].get("invalid_utf8").is_none());
    assert_eq!(events[1]["message"], "\u{fffd}\u{fffd} bad \u{fffd}");
    assert_eq!(events[1]["invalid_utf8"], true);
    assert_eq!(events[1]["offset"], 3);
    assert_eq!(events[2]["invalid_utf8"], true);
}

#[test]
fn ndjson_lines_that_do_not_decode_are_dead_lettered_with_file_and_line() {
    let s = Scene::new();
    std::fs::write(
        s.log("audit.log"),
        b"{\"a\":1}\n{not json\n\n\xff{\"b\":2}\n{\"c\":3}\n",
    )
    .unwrap();
    let child = common::spawn_pipeline(&s.pipeline("*.log", "    decoding: ndjson"));
    common::wait_until(60, || {
        common::read_ndjson(&s.out()).len() >= 2 && common::read_ndjson(&s.dropped()).len() >= 2
    });
    stop(child);
    let out = common::read_ndjson(&s.out());
    assert_eq!(
        out,
        [serde_json::json!({"a": 1}), serde_json::json!({"c": 3})]
    );
    let dead = common::read_ndjson(&s.dropped());
    let reasons: Vec<(&str, u64, u64)> = dead
        .iter()
        .map(|d| {
            (
                d["reason"].as_str().unwrap(),
                d["line"].as_u64().unwrap(),
                d["offset"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(reasons, [("invalid_json", 2, 8), ("invalid_utf8", 4, 19)]);
    assert!(dead[0]["file"].as_str().unwrap().ends_with("audit.log"));
    assert_eq!(dead[0]["raw"], "{not json");
}

#[test]
fn lines_events_carry_file_offset_and_host_usable_in_sink_templates() {
    let s = Scene::new();
    append(&s.log("a.log"), "x\ny\n");
    let r = s.root.display();
    let yaml = format!(
        r#"data_dir: {r}/data
sources:
  logs:
    type: file
    include: ["{r}/logs/*.log"]
    decoding: ndjson
sinks:
  out:
    type: file
    inputs: [logs]
    path: "{r}/by-host/{{{{ %host }}}}.ndjson"
"#
    );
    std::fs::write(s.log("a.log"), "{\"k\":1}\n").unwrap();
    let child = common::spawn_pipeline(&common::write_pipeline(&s.root, &yaml));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let target = s.root.join("by-host").join(format!("{host}.ndjson"));
    let ok = common::wait_until(60, || !common::read_ndjson(&target).is_empty());
    stop(child);
    assert!(ok, "no output under the host name label");
    assert_eq!(common::read_ndjson(&target), [serde_json::json!({"k": 1})]);

    let s = Scene::new();
    append(&s.log("a.log"), "x\ny\n");
    let child = common::spawn_pipeline(&s.lines_pipeline("*.log"));
    s.wait_for_messages(2);
    stop(child);
    let events = common::read_ndjson(&s.out());
    assert_eq!(events[1]["offset"], 2);
    assert_eq!(events[1]["host"], Value::String(host));
    assert!(events[1]["file"].as_str().unwrap().ends_with("a.log"));
}

#[test]
fn multiline_joins_continuation_lines() {
    let s = Scene::new();
    append(
        &s.log("t.log"),
        "Error: boom\n  at a()\n  at b()\nnext record\n",
    );
    let child = common::spawn_pipeline(&s.pipeline(
        "*.log",
        "    decoding: lines\n    multiline:\n      start_pattern: '^\\S'\n      timeout_ms: 300",
    ));
    let got = s.wait_for_messages(2);
    stop(child);
    assert_eq!(got, ["Error: boom\n  at a()\n  at b()", "next record"]);
}

#[test]
fn ssm_sidecar_pipeline_tails_the_agent_session_logs() {
    let s = Scene::new();
    let root = common::corpus("ssm/agent_local/var/lib/amazon/ssm");
    let out = s.root.join("stdout.ndjson");
    let dropped = s.root.join("data").join("dropped.ndjson");
    // The shipped pipeline as an operator runs it, printing to `stdout`.
    let run_sidecar = |stdout: &Path| {
        std::process::Command::new(common::bin())
            .args(["run", "-c", "pipelines/ssm-sidecar.yaml"])
            .env("SSM_AGENT_DIR", &root)
            .env("SESSIONTRAIL_DATA_DIR", s.root.join("data"))
            .stdout(std::fs::File::create(stdout).unwrap())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let child = run_sidecar(&out);
    // Every transcript on the node: (instance id, session id, the commands typed in it).
    let transcripts: Vec<(String, String, String)> = glob_files(&root)
        .into_iter()
        .map(|f| {
            let rel = f
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let parts: Vec<&str> = rel.split('/').collect();
            // <instance>/session/orchestration/<session>/Standard_Stream/<file>
            let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
            (parts[0].to_string(), parts[3].to_string(), text)
        })
        .collect();
    assert!(
        transcripts.len() >= 2,
        "corpus transcripts found under {root:?}"
    );
    let sessions: std::collections::BTreeSet<&str> =
        transcripts.iter().map(|(_, s, _)| s.as_str()).collect();
    let seen_sessions = || -> std::collections::BTreeSet<String> {
        common::read_ndjson(&out)
            .iter()
            .filter_map(|e| e["actor"]["session"]["uid"].as_str().map(str::to_string))
            .collect()
    };
    // Wait for every session, then for the output to stop growing.
    let ok = common::wait_until(60, || seen_sessions().len() >= sessions.len());
    let mut last = 0;
    common::wait_until(20, || {
        let n = common::read_ndjson(&out).len();
        let settled = n == last;
        last = n;
        std::thread::sleep(std::time::Duration::from_millis(500));
        settled
    });
    stop(child);
    assert!(
        ok,
        "sessions in the output: {:?}, expected {sessions:?}",
        seen_sessions()
    );
    let events = common::read_ndjson(&out);
    for e in &events {
        assert_eq!(e["class_uid"], 1007, "Process Activity: {e}");
        let session = e["actor"]["session"]["uid"].as_str().unwrap();
        let (instance, _, _) = transcripts
            .iter()
            .find(|(_, s, _)| s == session)
            .unwrap_or_else(|| panic!("unknown session {session}"));
        assert_eq!(e["device"]["instance_uid"], instance.as_str(), "{e}");
        assert!(e["metadata"]["log_name"]
            .as_str()
            .unwrap()
            .contains("/session/orchestration/"));
    }
    // Each session's typed commands come out as Launch events.
    for session in &sessions {
        let launches = events
            .iter()
            .filter(|e| e["actor"]["session"]["uid"] == *session && e["activity_id"] == 1)
            .count();
        assert!(
            launches > 0,
            "no command of session {session} in the output"
        );
    }
    assert!(
        common::read_ndjson(&dropped).is_empty(),
        "dead letters: {:?}",
        common::read_ndjson(&dropped)
    );
    common::validate_ocsf(&out, "1.8.0");

    // Every line was acknowledged through redact and ocsf, so the checkpoints moved to the
    // ends of the files: a second run has nothing to send again.
    let again = s.root.join("stdout-again.ndjson");
    let child = run_sidecar(&again);
    std::thread::sleep(std::time::Duration::from_secs(3));
    stop(child);
    assert_eq!(
        common::read_ndjson(&again).len(),
        0,
        "lines sent again after a restart"
    );
}

fn glob_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "log") {
                out.push(p);
            }
        }
    }
    out
}
