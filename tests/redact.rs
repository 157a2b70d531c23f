//! End to end: the corpus redaction oracle through the real binary, `stdin -> redact ->
//! stdout` with `stdin.dropped -> redact -> file`, using the shipped example pipeline.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use base64::Engine;
use serde_json::Value;

fn oracle() -> Value {
    let text = std::fs::read_to_string(common::corpus("expected/redaction.json"))
        .expect("shared/corpus/expected/redaction.json");
    serde_json::from_str(&text).expect("oracle is JSON")
}

fn repo_file(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Runs `sessiontrail run -c pipeline` in `dir` with `input` on stdin and extra environment.
fn run(pipeline: &Path, dir: &Path, input: &[u8], env: &[(&str, &str)]) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(common::bin());
    cmd.args(["run", "-c"])
        .arg(pipeline)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn sessiontrail");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait");
    let _ = writer.join();
    assert!(
        out.status.success(),
        "sessiontrail failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every string value of NDJSON `text`, JSON-unescaped, `raw_base64` decoded; a line that is
/// not JSON counts as its own text.
fn decoded(text: &str) -> String {
    fn walk(v: &Value, key: &str, out: &mut String) {
        match v {
            Value::String(s) if key == "raw_base64" => {
                let b = base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .expect("raw_base64 stays base64");
                out.push_str(&String::from_utf8_lossy(&b));
                out.push('\n');
            }
            Value::String(s) => {
                out.push_str(s);
                out.push('\n');
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, key, out)),
            Value::Object(m) => m.iter().for_each(|(k, x)| walk(x, k, out)),
            _ => {}
        }
    }
    let mut out = String::new();
    for line in text.lines() {
        match serde_json::from_str::<Value>(line.trim_start_matches('\u{feff}')) {
            Ok(v) => walk(&v, "", &mut out),
            Err(_) => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

fn check(file: &str, input: &str, output: &str, oracle: &Value) {
    let mut listed = 0;
    for (i, s) in oracle["must_not_appear"]
        .as_array()
        .expect("list")
        .iter()
        .enumerate()
    {
        if s["occurrences"].get(file).is_none() {
            continue;
        }
        listed += 1;
        let literal = s["literal"].as_str().expect("literal");
        assert!(input.contains(literal), "{file}: input holds secret #{i}");
        // Messages name the secret by its index in the oracle, never by its value.
        assert!(
            !output.contains(literal),
            "{file}: secret #{i} ({}) reached an output",
            s["class"]
        );
    }
    assert!(listed > 0, "{file}: the oracle lists secrets for it");
    for r in oracle["must_remain"].as_array().expect("list") {
        let literal = r["literal"].as_str().expect("literal");
        assert_eq!(
            input.matches(literal).count(),
            output.matches(literal).count(),
            "{file}: look-alike {literal:?} must remain"
        );
    }
}

#[test]
fn example_pipeline_keeps_every_listed_secret_out_of_main_and_dead_letter_output() {
    let oracle = oracle();
    let pipeline = repo_file("pipelines/redact-stdin.yaml");
    let files: Vec<&String> = oracle["secret_occurrences_by_file"]
        .as_object()
        .expect("by file")
        .keys()
        .filter(|f| f.ends_with(".ndjson"))
        .collect();
    assert!(files.len() >= 5);
    for file in files {
        let dir = tempfile::tempdir().expect("tempdir");
        let dead = dir.path().join("dead-letters.ndjson");
        let input = std::fs::read(common::corpus(file)).expect("corpus file");
        let out = run(
            &pipeline,
            dir.path(),
            &input,
            &[
                (
                    "REDACT_DATA_DIR",
                    dir.path().join("data").to_str().expect("utf8"),
                ),
                ("REDACT_DEAD_LETTERS", dead.to_str().expect("utf8")),
            ],
        );
        let stdout = String::from_utf8(out.stdout).expect("stdout is UTF-8");
        let dead_letters = std::fs::read_to_string(&dead).unwrap_or_default();
        for v in common::ndjson(&stdout)
            .iter()
            .chain(&common::ndjson(&dead_letters))
        {
            assert!(v.is_object(), "{file}: every output line is a JSON object");
        }
        let output = decoded(&format!("{stdout}\n{dead_letters}"));
        check(
            file,
            &decoded(&String::from_utf8_lossy(&input)),
            &output,
            &oracle,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        for s in oracle["must_not_appear"].as_array().expect("list") {
            let literal = s["literal"].as_str().expect("literal");
            assert!(
                !stderr.contains(literal),
                "{file}: a secret reached the log"
            );
        }
    }
}

#[test]
fn malformed_lines_are_dead_lettered_and_redacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dead = dir.path().join("dl.ndjson");
    // A secret in a line that is not JSON, and one in a line that is not UTF-8.
    let mut input = b"{\"cmd\": \"mysql -pS3cr3t! -e 'x'\", \n".to_vec();
    input.extend_from_slice(b"{\"m\": \"export AWS_ACCESS_KEY_ID=AKIAIUAPD55R73N3LHOU \xff\"}\n");
    input.extend_from_slice(
        b"{\"ok\": \"export GITHUB_TOKEN=ghp_tteI0k0bnIlwvrMlJSiVd867PszvpbjSgPmw\"}\n",
    );
    let out = run(
        &repo_file("pipelines/redact-stdin.yaml"),
        dir.path(),
        &input,
        &[
            (
                "REDACT_DATA_DIR",
                dir.path().join("data").to_str().expect("utf8"),
            ),
            ("REDACT_DEAD_LETTERS", dead.to_str().expect("utf8")),
        ],
    );
    let main = common::ndjson(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(main.len(), 1);
    assert_eq!(main[0]["ok"], "export GITHUB_TOKEN=[REDACTED:github_token]");
    assert_eq!(main[0]["redacted_by"], serde_json::json!(["github_token"]));
    let dls = common::read_ndjson(&dead);
    assert_eq!(dls.len(), 2, "both broken lines are dead letters");
    assert_eq!(dls[0]["reason"], "invalid_json");
    assert_eq!(
        dls[0]["raw"],
        "{\"cmd\": \"mysql -p[REDACTED:cli_password] -e 'x'\", "
    );
    assert_eq!(dls[1]["reason"], "invalid_utf8");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(dls[1]["raw_base64"].as_str().expect("raw_base64"))
        .expect("base64");
    assert_eq!(
        raw,
        b"{\"m\": \"export AWS_ACCESS_KEY_ID=[REDACTED:aws_access_key_id] \xff\"}".to_vec(),
        "secret gone, the invalid byte kept"
    );
}

#[test]
fn raw_transcript_lines_are_redacted_across_lines() {
    let oracle = oracle();
    let file = "ssm/s3/ssm-session-logs-111122223333/session-logs/ops-anna-b6d264fe7b7a87ee0.log";
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = common::write_pipeline(
        dir.path(),
        "data_dir: ./data\nsources:\n  in:\n    type: stdin\n    decoding: lines\ntransforms:\n  scrub:\n    type: redact\n    inputs: [in]\nsinks:\n  out:\n    type: stdout\n    inputs: [scrub]\n",
    );
    let input = std::fs::read(common::corpus(file)).expect("transcript");
    let out = run(&pipeline, dir.path(), &input, &[]);
    let output = decoded(&String::from_utf8_lossy(&out.stdout));
    check(file, &String::from_utf8_lossy(&input), &output, &oracle);
    assert!(output.contains("-----BEGIN OPENSSH PRIVATE KEY-----"));
    assert!(output.contains("[REDACTED:pem_private_key]"));
}

#[test]
fn hash_mode_takes_its_key_from_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = common::write_pipeline(
        dir.path(),
        "data_dir: ./data\nsources:\n  in:\n    type: stdin\ntransforms:\n  scrub:\n    type: redact\n    inputs: [in]\n    mode: hash\nsinks:\n  out:\n    type: stdout\n    inputs: [scrub]\n",
    );
    let no_key = Command::new(common::bin())
        .args(["validate", "-c"])
        .arg(&pipeline)
        .env_remove("SESSIONTRAIL_REDACT_HASH_KEY")
        .output()
        .expect("validate");
    assert!(!no_key.status.success());
    assert!(String::from_utf8_lossy(&no_key.stderr).contains("SESSIONTRAIL_REDACT_HASH_KEY"));

    let input = b"{\"a\": \"AKIAIUAPD55R73N3LHOU\", \"b\": \"id=AKIAIUAPD55R73N3LHOU\"}\n";
    let key = [(
        "SESSIONTRAIL_REDACT_HASH_KEY",
        "e2e-hash-key-0123456789abcdef",
    )];
    let out = run(&pipeline, dir.path(), input, &key);
    let lines = common::ndjson(&String::from_utf8_lossy(&out.stdout));
    let v = &lines[0];
    let a = v["a"].as_str().expect("a");
    assert!(a.starts_with("aws_access_key_id:"), "{a}");
    assert_eq!(v["b"], format!("id={a}"), "equal secrets, equal hashes");
    assert!(!v.to_string().contains("AKIAIUAPD55R73N3LHOU"));
}
