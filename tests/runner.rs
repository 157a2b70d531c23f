//! The runner end to end: the built binary with real pipelines, stdin, files and signals.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::Value;

fn count_lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

fn wait_exit(child: &mut Child, secs: u64) -> ExitStatus {
    let mut status = None;
    common::wait_until(secs, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    match status {
        Some(s) => s,
        None => {
            let _ = child.kill();
            panic!("sessiontrail did not exit within {secs} s");
        }
    }
}

/// The `events` field of the JSON log line "source stopped" of `source`.
fn events_reported_by_source(stderr: &str, source: &str) -> u64 {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["fields"]["message"] == "source stopped" && l["fields"]["source"] == source)
        .and_then(|l| l["fields"]["events"].as_u64())
        .unwrap_or_else(|| panic!("no \"source stopped\" log line for {source} in:\n{stderr}"))
}

#[test]
fn demo_with_count_writes_exactly_that_many_lines_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let pipeline = common::write_pipeline(
        dir.path(),
        &format!(
            "data_dir: {data}\nsources:\n  demo:\n    type: demo\n    count: 100000\n    seed: 5\n\
             sinks:\n  out:\n    type: file\n    inputs: [demo]\n    path: {out}\n",
            data = dir.path().join("data").display(),
            out = out.display()
        ),
    );
    let status = Command::new(common::bin())
        .args(["run", "-c"])
        .arg(&pipeline)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 100_000);
    for line in lines.iter().step_by(997) {
        let v: Value = serde_json::from_str(line).unwrap();
        assert!(v.is_object(), "{line}");
    }
}

/// After a crash the output can end in half a line; the next run must not glue its first
/// record onto that fragment.
#[test]
fn a_file_sink_appending_after_a_torn_last_line_starts_on_a_new_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    std::fs::write(&out, "{\"whole\":1}\n{\"torn\":\"hal").unwrap();
    let pipeline = common::write_pipeline(
        dir.path(),
        &format!(
            "data_dir: {data}\nsources:\n  in:\n    type: stdin\n\
             sinks:\n  out:\n    type: file\n    inputs: [in]\n    path: {out}\n",
            data = dir.path().join("data").display(),
            out = out.display()
        ),
    );
    let run = common::run_with_stdin(
        &["run", "-c", pipeline.to_str().unwrap()],
        b"{\"n\":1}\n{\"n\":2}\n",
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        ["{\"whole\":1}", "{\"torn\":\"hal", "{\"n\":1}", "{\"n\":2}"],
        "{text}"
    );
}

#[test]
fn stdin_lines_all_come_out_in_order_and_eof_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = common::write_pipeline(
        dir.path(),
        &format!(
            "data_dir: {}\nsources:\n  in:\n    type: stdin\nsinks:\n  print:\n    type: stdout\n    inputs: [in]\n",
            dir.path().join("data").display()
        ),
    );
    let n = 25_000;
    let input: String = (0..n)
        .map(|i| format!("{{\"n\":{i},\"user\":\"CORP\\\\u{}\"}}\n", i % 7))
        .collect();
    let out = common::run_with_stdin(&["run", "-c", pipeline.to_str().unwrap()], input.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = common::ndjson(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(events.len(), n);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["n"], i, "event {i} out of order or changed: {e}");
    }
}

/// Line-level decoding reasons: what a source can tell from the bytes alone. Schema problems
/// (`wrong_type`, `missing_field`...) pass the source and are the mapping's to dead-letter.
const DECODE_REASONS: &[&str] = &[
    "invalid_json",
    "invalid_utf8",
    "not_an_object",
    "record_too_large",
    "nesting_too_deep",
    "duplicate_key",
];

fn check_stdin_outcomes(input: &str, outcomes: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let dropped = dir.path().join("dropped.ndjson");
    let pipeline = common::write_pipeline(
        dir.path(),
        &format!(
            "data_dir: {data}\nsources:\n  in:\n    type: stdin\nsinks:\n  out:\n    type: file\n    inputs: [in]\n    path: {out}\n  \
             dead:\n    type: file\n    inputs: [in.dropped]\n    path: {dropped}\n",
            data = dir.path().join("data").display(),
            out = out.display(),
            dropped = dropped.display()
        ),
    );
    let raw = std::fs::read(common::corpus(input)).unwrap();
    let result = common::run_with_stdin(&["run", "-c", pipeline.to_str().unwrap()], &raw);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(common::corpus(outcomes)).unwrap()).unwrap();
    let physical: Vec<&[u8]> = raw
        .strip_suffix(b"\n")
        .unwrap_or(&raw)
        .split(|&b| b == b'\n')
        .collect();
    let dead = common::read_ndjson(&dropped);
    let accepted = common::read_ndjson(&out);
    let mut want_dead = Vec::new();
    let mut want_accepted = 0;
    for line in expected["lines"].as_array().unwrap() {
        let n = line["line"].as_u64().unwrap();
        let reason = line["reason"].as_str().unwrap_or_default();
        match line["outcome"].as_str().unwrap() {
            "dead_letter" if DECODE_REASONS.contains(&reason) => want_dead.push((n, reason)),
            "ignore" => {}
            _ => want_accepted += 1,
        }
    }
    assert!(!want_dead.is_empty(), "the fixture has decode errors");
    let got_dead: Vec<(u64, &str)> = dead
        .iter()
        .map(|d| (d["line"].as_u64().unwrap(), d["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(got_dead, want_dead, "dead letters (line, reason)");
    for d in &dead {
        let n = d["line"].as_u64().unwrap() as usize;
        assert_eq!(d["component"], "in");
        assert!(!d["message"].as_str().unwrap().is_empty());
        // The original bytes are kept: as text, as base64 when not UTF-8, or as a prefix.
        let line = physical[n - 1];
        if let Some(text) = d["raw"].as_str() {
            if d["raw_truncated"] == true {
                assert!(line.starts_with(text.as_bytes()));
            } else {
                assert_eq!(text.as_bytes(), line);
            }
        } else {
            assert!(d["raw_base64"].is_string(), "{d}");
        }
    }
    assert_eq!(accepted.len(), want_accepted, "accepted records");
}

#[test]
fn malformed_stdin_lines_go_to_dropped_with_reason_line_and_raw_text() {
    check_stdin_outcomes(
        "windows/malformed.ndjson",
        "expected/windows_malformed.outcomes.json",
    );
}

#[test]
fn an_oversize_stdin_line_is_dead_lettered_and_its_neighbours_flow() {
    check_stdin_outcomes(
        "windows/malformed_2mb_line.ndjson",
        "expected/windows_malformed_2mb_line.outcomes.json",
    );
}

/// Starts `run -c pipeline` with JSON logs, stdin piped, stdout discarded.
fn spawn_with_json_logs(pipeline: &Path) -> Child {
    Command::new(common::bin())
        .args(["--log-format", "json", "run", "-c"])
        .arg(pipeline)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut s);
    }
    s
}

#[test]
fn sigterm_with_stdin_in_flight_keeps_every_event_read() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let pipeline = common::write_pipeline(
        dir.path(),
        &format!(
            "data_dir: {data}\nsources:\n  in:\n    type: stdin\nsinks:\n  out:\n    type: file\n    inputs: [in]\n    path: {out}\n",
            data = dir.path().join("data").display(),
            out = out.display()
        ),
    );
    let mut child = spawn_with_json_logs(&pipeline);
    // Feed records without end (stdin stays open) so the channels are busy when the signal
    // comes; the writer stops when the process has exited (broken pipe).
    let mut stdin = child.stdin.take().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let pad = "x".repeat(200);
            let mut i: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut chunk = String::new();
                for _ in 0..100 {
                    chunk.push_str(&format!("{{\"n\":{i},\"pad\":\"{pad}\"}}\n"));
                    i += 1;
                }
                if stdin.write_all(chunk.as_bytes()).is_err() {
                    break;
                }
            }
        })
    };
    assert!(
        common::wait_until(60, || count_lines(&out) >= 5_000),
        "the pipeline did not start writing"
    );
    common::terminate(&child);
    let status = wait_exit(&mut child, 60);
    stop.store(true, Ordering::Relaxed);
    let _ = writer.join();
    let stderr = stderr_of(&mut child);
    assert!(status.success(), "{stderr}");
    let read = events_reported_by_source(&stderr, "in");
    let written = common::read_ndjson(&out);
    assert_eq!(written.len() as u64, read, "events read vs written");
    for (i, e) in written.iter().enumerate() {
        assert_eq!(e["n"], i, "gap or reorder at {i}");
    }
}

#[test]
fn sigterm_with_an_unthrottled_demo_keeps_every_event_emitted() {
    // The demo outruns an fsyncing file sink, so every channel is full when the signal comes.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let pipeline = common::write_pipeline(
        dir.path(),
        &format!(
            "data_dir: {data}\nsources:\n  gen:\n    type: demo\n    format: mixed\nsinks:\n  out:\n    type: file\n    inputs: [gen]\n    path: {out}\n",
            data = dir.path().join("data").display(),
            out = out.display()
        ),
    );
    let mut child = spawn_with_json_logs(&pipeline);
    assert!(
        common::wait_until(60, || count_lines(&out) >= 20_000),
        "the pipeline did not start writing"
    );
    common::terminate(&child);
    let status = wait_exit(&mut child, 60);
    let stderr = stderr_of(&mut child);
    assert!(status.success(), "{stderr}");
    let emitted = events_reported_by_source(&stderr, "gen");
    assert_eq!(count_lines(&out) as u64, emitted);
    // And they are the generator's events, complete lines.
    let last = common::read_ndjson(&out).pop().unwrap();
    assert!(last.is_object());
}

#[test]
fn a_fatal_sink_error_stops_the_pipeline_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the sink needs a directory.
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let target = blocker.join("out.ndjson");
    let pipeline = common::write_pipeline(
        dir.path(),
        &format!(
            "data_dir: {data}\nsources:\n  gen:\n    type: demo\nsinks:\n  out:\n    type: file\n    inputs: [gen]\n    path: {out}\n",
            data = dir.path().join("data").display(),
            out = target.display()
        ),
    );
    let mut child = Command::new(common::bin())
        .args(["run", "-c"])
        .arg(&pipeline)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, 60);
    let stderr = stderr_of(&mut child);
    assert_eq!(status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: pipeline stopped: component \"out\""),
        "{stderr}"
    );
    assert!(last.contains(&target.display().to_string()), "{last}");
    assert!(last.contains("cannot write"), "{last}");
}
