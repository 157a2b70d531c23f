//! The corpus redaction oracle (`shared/corpus/expected/redaction.json`), checked on the
//! transform itself: every listed file is decoded the way a source does it (NDJSON records
//! with the corpus input rules, undecodable lines as dead letters; raw transcripts as one
//! text and as one record per line), redacted, and its output decoded back to text. No
//! `must_not_appear` literal may remain; every `must_remain` literal keeps its count.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::{json, Value};

use sessiontrail_core::component::{FunctionTransform, TransformOutput};
use sessiontrail_core::json::{decode_record, Decoded, DEFAULT_MAX_RECORD_BYTES};
use sessiontrail_core::metrics::MetricsRegistry;
use sessiontrail_core::{DeadLetter, Event, Object};
use sessiontrail_transforms::redact::{Redact, RedactConfig};

fn corpus() -> PathBuf {
    match std::env::var_os("SESSIONTRAIL_SHARED") {
        Some(p) => PathBuf::from(p).join("corpus"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus"),
    }
}

fn oracle() -> Value {
    let text = std::fs::read_to_string(corpus().join("expected/redaction.json"))
        .expect("shared/corpus/expected/redaction.json");
    serde_json::from_str(&text).expect("oracle is JSON")
}

fn transform(cfg: Value) -> Redact {
    let cfg: RedactConfig = serde_json::from_value(cfg).expect("config");
    cfg.build_transform("scrub", MetricsRegistry::new())
        .expect("builds")
}

/// What a line-oriented NDJSON source makes of `bytes`: records and dead letters.
fn ndjson_events(bytes: &[u8]) -> Vec<Event> {
    let mut events = Vec::new();
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        match decode_record(line, DEFAULT_MAX_RECORD_BYTES) {
            Ok(Decoded::Blank) => {}
            Ok(Decoded::Record(obj)) => events.push(Event::from_json(obj, "in".into(), line.len())),
            Err(e) => events.push(
                DeadLetter::new("in", e.reason, e.message)
                    .raw(line)
                    .with("line", i + 1)
                    .build("in".into()),
            ),
        }
    }
    events
}

fn message_event(text: &str) -> Event {
    let mut obj = Object::new();
    obj.insert("message".into(), text.into());
    Event::new(obj, "in".into(), text.len())
}

fn redact_all(t: &mut Redact, events: Vec<Event>) -> Vec<Event> {
    let mut out = TransformOutput::default();
    for e in events {
        t.transform(e, &mut out);
    }
    assert!(out.dropped.is_empty());
    out.out
}

/// Every string of the events, JSON-unescaped, with `raw_base64` decoded (lossily), one per line.
fn decoded_text(events: &[Event]) -> String {
    fn walk(v: &Value, key: &str, out: &mut String) {
        match v {
            Value::String(s) if key == "raw_base64" => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .expect("raw_base64 stays valid base64");
                out.push_str(&String::from_utf8_lossy(&bytes));
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
    for e in events {
        walk(&Value::Object(e.fields().clone()), "", &mut out);
    }
    out
}

fn must_not_appear(oracle: &Value, file: &str) -> Vec<String> {
    oracle["must_not_appear"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|s| s["occurrences"].get(file).is_some())
        .map(|s| s["literal"].as_str().expect("literal").to_string())
        .collect()
}

/// The look-alikes of the oracle (listed for one file; checked wherever they occur).
fn look_alikes(oracle: &Value) -> Vec<String> {
    oracle["must_remain"]
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s["literal"].as_str().expect("literal").to_string())
        .collect()
}

fn check(file: &str, input: &str, output: &str, oracle: &Value) {
    let secrets = must_not_appear(oracle, file);
    assert!(
        !secrets.is_empty(),
        "{file}: the oracle lists secrets for it"
    );
    // Messages name the secret by its position in the oracle, never by its value.
    for (i, s) in secrets.iter().enumerate() {
        assert!(
            input.contains(s.as_str()),
            "{file}: input holds secret #{i}"
        );
        assert!(
            !output.contains(s.as_str()),
            "{file}: secret #{i} of its must_not_appear list survived redaction"
        );
    }
    for l in look_alikes(oracle) {
        let before = input.matches(l.as_str()).count();
        let after = output.matches(l.as_str()).count();
        assert_eq!(before, after, "{file}: look-alike {l:?} must remain");
    }
    for r in oracle["must_remain"].as_array().expect("list") {
        if r["file"] == file {
            let l = r["literal"].as_str().expect("literal");
            assert!(
                output.matches(l).count() as u64 >= r["occurrences"].as_u64().unwrap_or(1),
                "{file}: {l:?} must remain as often as listed"
            );
        }
    }
}

#[test]
fn every_listed_ndjson_file_loses_its_secrets_and_keeps_its_look_alikes() {
    let oracle = oracle();
    let files: Vec<String> = oracle["secret_occurrences_by_file"]
        .as_object()
        .expect("by file")
        .keys()
        .filter(|f| f.ends_with(".ndjson"))
        .cloned()
        .collect();
    assert!(
        files.len() >= 5,
        "the oracle lists the NDJSON files: {files:?}"
    );
    for file in files {
        let bytes = std::fs::read(corpus().join(&file)).expect("corpus file");
        let events = ndjson_events(&bytes);
        let input = decoded_text(&events);
        let mut t = transform(json!({}));
        let output = decoded_text(&redact_all(&mut t, events));
        check(&file, &input, &output, &oracle);
    }
}

#[test]
fn every_listed_transcript_loses_its_secrets_whole_and_line_by_line() {
    let oracle = oracle();
    let files: Vec<String> = oracle["secret_occurrences_by_file"]
        .as_object()
        .expect("by file")
        .keys()
        .filter(|f| !f.ends_with(".ndjson"))
        .cloned()
        .collect();
    assert!(!files.is_empty());
    for file in files {
        let text = std::fs::read_to_string(corpus().join(&file)).expect("UTF-8 transcript");
        // As an object store source delivers it: the whole transcript in one string.
        let mut t = transform(json!({}));
        let whole = redact_all(&mut t, vec![message_event(&text)]);
        check(&file, &text, &decoded_text(&whole), &oracle);
        // As a line-oriented source delivers it: one record per LF line, CRs and escapes kept,
        // so a private key block spans records.
        let mut t = transform(json!({}));
        let lines: Vec<Event> = text.split('\n').map(message_event).collect();
        let input = decoded_text(&lines);
        let by_line = redact_all(&mut t, lines);
        check(&file, &input, &decoded_text(&by_line), &oracle);
    }
}

#[test]
fn streaming_records_in_hash_mode_keep_no_secret_either() {
    let oracle = oracle();
    let file = "ssm/secrets_stream.ndjson";
    let bytes = std::fs::read(corpus().join(file)).expect("corpus file");
    let events = ndjson_events(&bytes);
    let input = decoded_text(&events);
    let mut t = transform(json!({"mode": "hash", "hash_key": "corpus-test-key-0123456789"}));
    let output = decoded_text(&redact_all(&mut t, events));
    check(file, &input, &output, &oracle);
    assert!(output.contains("aws_access_key_id:"));
}
