//! The `ocsf` transform against its golden files and against the official OCSF schemas.
//!
//! - Golden files: `tests/fixtures/ocsf/<family>/input.ndjson` -> `expected.ndjson` (compared
//!   as JSON). `UPDATE_GOLDEN=1 cargo test -p sessiontrail-transforms --test ocsf` rewrites
//!   them; review the diff before committing.
//! - Every record of every corpus file, mapped in both OCSF versions, validates against
//!   `shared/ocsf/schemas/<version>/<class>.schema.json` (JSON Schema draft 2020-12, through
//!   the `jsonschema` crate); malformed records are refused with the corpus' reason.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use sessiontrail_core::json::{decode_record, Decoded, DEFAULT_MAX_RECORD_BYTES};
use sessiontrail_core::{Event, Object};
use sessiontrail_transforms::ocsf::{OcsfConfig, OcsfTransform};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn shared() -> PathBuf {
    match std::env::var_os("SESSIONTRAIL_SHARED") {
        Some(p) => PathBuf::from(p),
        None => root().join("../shared"),
    }
}

fn transform(version: &str) -> OcsfTransform {
    let config: OcsfConfig =
        serde_json::from_value(serde_json::json!({ "version": version })).unwrap();
    OcsfTransform::new(Arc::from("ocsf"), &config)
}

fn event(fields: Object) -> Event {
    Event::new(fields, Arc::from("test"), 0)
}

/// Maps `fields`: the OCSF events, or the dead letter's reason.
fn map(t: &mut OcsfTransform, fields: Object) -> Result<Vec<Value>, String> {
    match t.convert(event(fields)) {
        Ok(events) => Ok(events
            .into_iter()
            .map(|e| Value::Object(e.into_fields()))
            .collect()),
        Err(dl) => Err(dl.fields()["reason"].as_str().unwrap_or("").to_string()),
    }
}

// ------------------------------------------------------------------------------------------
// Golden files.

#[test]
fn golden_files_per_input_family() {
    let dir = root().join("tests/fixtures/ocsf");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut families = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let family = entry.unwrap().path();
        let input = std::fs::read_to_string(family.join("input.ndjson")).unwrap();
        let mut t = transform("1.8.0");
        let mut got = Vec::new();
        for line in input.lines().filter(|l| !l.trim().is_empty()) {
            let fields: Object = serde_json::from_str(line).unwrap();
            got.extend(map(&mut t, fields).unwrap_or_else(|r| panic!("{family:?}: {r}")));
        }
        let expected_path = family.join("expected.ndjson");
        if update {
            let text: String = got.iter().map(|v| format!("{v}\n")).collect();
            std::fs::write(&expected_path, text).unwrap();
        }
        let expected: Vec<Value> = std::fs::read_to_string(&expected_path)
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(got.len(), expected.len(), "{family:?}: event count");
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(g, e, "{family:?}: event {i} differs from the golden file");
        }
        families += 1;
    }
    assert_eq!(families, 6, "one golden directory per input family");
}

// ------------------------------------------------------------------------------------------
// The corpus, flattened to records the way the sources deliver them.

/// One corpus record: where it came from, and its bytes (or the reason a source would have
/// refused it).
struct Record {
    origin: String,
    fields: Result<Object, &'static str>,
}

fn decode(origin: String, bytes: &[u8]) -> Option<Record> {
    match decode_record(bytes, DEFAULT_MAX_RECORD_BYTES) {
        Ok(Decoded::Blank) => None,
        Ok(Decoded::Record(o)) => Some(Record {
            origin,
            fields: Ok(o.into_object()),
        }),
        Err(e) => Some(Record {
            origin,
            fields: Err(e.reason),
        }),
    }
}

fn read_maybe_gzip(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .unwrap();
        out
    } else {
        bytes
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
    out.sort();
}

/// Every record of the corpus, per corpus file (relative path).
fn corpus_records() -> BTreeMap<String, Vec<Record>> {
    let corpus = shared().join("corpus");
    let mut files = Vec::new();
    files_under(&corpus, &mut files);
    let mut all = BTreeMap::new();
    for path in files {
        let rel = path
            .strip_prefix(&corpus)
            .unwrap()
            .to_string_lossy()
            .to_string();
        let mut records = Vec::new();
        let hidden = rel.split('/').any(|part| part.starts_with('.'));
        if hidden || rel.starts_with("expected/") || rel.ends_with(".md") || rel == "manifest.json"
        {
            continue;
        } else if rel.starts_with("parsec/") {
            if !rel.contains("page_") {
                continue;
            }
            // A page: each event re-serialised, as the parsec source delivers them.
            let Ok(page) = serde_json::from_slice::<Value>(&std::fs::read(&path).unwrap()) else {
                continue; // the truncated page: the source's concern, not a record
            };
            for (i, ev) in page["data"].as_array().unwrap().iter().enumerate() {
                records.extend(decode(format!("{rel}#{i}"), ev.to_string().as_bytes()));
            }
        } else if rel.starts_with("ssm/firehose/") {
            // Concatenated gzip envelopes: each DATA_MESSAGE's logEvents[].message is a
            // streaming record.
            let text = read_maybe_gzip(&path);
            let stream = serde_json::Deserializer::from_slice(&text).into_iter::<Value>();
            for (i, env) in stream.enumerate() {
                let env = env.unwrap();
                if env["messageType"] != "DATA_MESSAGE" {
                    continue;
                }
                for ev in env["logEvents"].as_array().unwrap() {
                    let msg = ev["message"].as_str().unwrap();
                    records.extend(decode(format!("{rel}#{i}"), msg.as_bytes()));
                }
            }
        } else if rel.ends_with(".log") {
            // A transcript: one record, its text and its location.
            let text = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
            let mut o = Object::new();
            o.insert("message".into(), text.into());
            o.insert("file".into(), rel.clone().into());
            records.push(Record {
                origin: rel.clone(),
                fields: Ok(o),
            });
        } else if rel == "windows/admin_corrections.ndjson" {
            // Captured PUT requests: the http_server source emits the body.
            for (i, line) in std::fs::read_to_string(&path).unwrap().lines().enumerate() {
                let env: Value = serde_json::from_str(line).unwrap();
                records.extend(decode(
                    format!("{rel}:{}", i + 1),
                    env["body"].to_string().as_bytes(),
                ));
            }
        } else {
            let bytes = read_maybe_gzip(&path);
            if bytes.trim_ascii_start().starts_with(b"[") {
                // A WSB `Json` object: an array of events.
                let arr: Vec<Value> = serde_json::from_slice(&bytes).unwrap();
                for (i, ev) in arr.iter().enumerate() {
                    records.extend(decode(format!("{rel}#{i}"), ev.to_string().as_bytes()));
                }
            } else {
                let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
                for (i, line) in body.split(|&b| b == b'\n').enumerate() {
                    records.extend(decode(format!("{rel}:{}", i + 1), line));
                }
            }
        }
        all.insert(rel, records);
    }
    all
}

// ------------------------------------------------------------------------------------------
// Schema validation.

struct Schemas {
    by_class: BTreeMap<i64, jsonschema::Validator>,
}

impl Schemas {
    fn load(version: &str) -> Self {
        let dir = shared().join("ocsf/schemas").join(version);
        let mut by_class = BTreeMap::new();
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let schema: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let uid = schema["x-ocsf"]["class_uid"].as_i64().unwrap();
            let validator = jsonschema::draft202012::new(&schema)
                .unwrap_or_else(|e| panic!("{path:?} does not compile: {e}"));
            by_class.insert(uid, validator);
        }
        Schemas { by_class }
    }

    fn errors(&self, event: &Value) -> Vec<String> {
        let uid = event["class_uid"].as_i64().unwrap_or(-1);
        let Some(v) = self.by_class.get(&uid) else {
            return vec![format!("no schema for class_uid {uid}")];
        };
        v.iter_errors(event)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect()
    }
}

fn has_null(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.iter().any(has_null),
        Value::Object(o) => o.values().any(has_null),
        _ => false,
    }
}

/// Events per OCSF class_uid.
type ClassCounts = BTreeMap<i64, usize>;
/// Per corpus record (by its label): the OCSF events it mapped to, or its dead-letter reason.
type RecordOutcomes = BTreeMap<String, Result<Vec<Value>, String>>;

/// Maps the whole corpus in `version`: per-class counts, and the outcome of every record.
fn map_corpus(version: &str) -> (ClassCounts, RecordOutcomes) {
    let schemas = Schemas::load(version);
    let mut t = transform(version);
    let mut per_class = BTreeMap::new();
    let mut outcomes = BTreeMap::new();
    for (_, records) in corpus_records() {
        for r in records {
            let outcome = match r.fields {
                Err(reason) => Err(reason.to_string()),
                Ok(fields) => map(&mut t, fields),
            };
            if let Ok(events) = &outcome {
                assert!(!events.is_empty(), "{}: no event", r.origin);
                for e in events {
                    let errors = schemas.errors(e);
                    assert!(
                        errors.is_empty(),
                        "{} (OCSF {version}): {errors:#?}\n{e}",
                        r.origin
                    );
                    assert!(!has_null(e), "{}: null value in {e}", r.origin);
                    assert_eq!(e["metadata"]["version"], version);
                    *per_class
                        .entry(e["class_uid"].as_i64().unwrap())
                        .or_insert(0) += 1;
                }
            }
            outcomes.insert(r.origin, outcome);
        }
    }
    (per_class, outcomes)
}

/// Expected dead-letter reasons of the malformed corpus files (from their outcomes files).
fn expected_dead_letters() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (file, key, sep) in [
        ("windows_malformed", "lines", ':'),
        ("ssm_malformed", "lines", ':'),
        ("wsb_malformed", "lines", ':'),
        ("parsec_malformed", "events", '#'),
    ] {
        let path = shared().join(format!("corpus/expected/{file}.outcomes.json"));
        let o: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let src = o["file"].as_str().unwrap();
        for l in o[key].as_array().unwrap() {
            if l["outcome"] == "dead_letter" {
                let n = l.get("line").or_else(|| l.get("index")).unwrap();
                out.insert(
                    format!("{src}{sep}{n}"),
                    l["reason"].as_str().unwrap().to_string(),
                );
            }
        }
    }
    out
}

fn check_corpus(version: &str) {
    let (per_class, outcomes) = map_corpus(version);
    // Every malformed record is refused (by the source's decoding or by the mapping) with the
    // reason its outcomes file gives.
    let expected = expected_dead_letters();
    for (origin, reason) in &expected {
        // WSB malformed lines are keyed by the file's path under wsb/malformed/...
        let got = outcomes
            .iter()
            .find(|(k, _)| k.as_str() == origin || k.ends_with(&format!("/{origin}")))
            .map(|(_, v)| v);
        match got {
            Some(Err(r)) => assert_eq!(r, reason, "{origin}"),
            other => panic!("{origin}: expected dead letter {reason}, got {other:?}"),
        }
    }
    // ... and every other record is mapped.
    for (origin, outcome) in &outcomes {
        if let Err(r) = outcome {
            assert!(
                expected
                    .keys()
                    .any(|k| origin == k || origin.ends_with(&format!("/{k}")))
                    || r == "record_too_large",
                "{origin}: mappable record refused ({r})"
            );
        }
    }
    println!("OCSF {version} per class: {per_class:?}");
    let mut per_class = per_class;
    let process = per_class.remove(&1007).unwrap_or(0);
    assert!(
        process >= SSM_STREAM_RECORDS_AND_TRANSCRIPTS,
        "{process} Process Activity events"
    );
    assert_eq!(
        per_class,
        expected_per_class(),
        "per-class counts (OCSF {version})"
    );
}

/// Per-class counts over the whole corpus (accepted records only), derived from the corpus
/// README's record counts and event types — not from this mapping's output. Process
/// Activity (SSM commands) is checked separately: the README does not count commands.
fn expected_per_class() -> BTreeMap<i64, usize> {
    BTreeMap::from([
        // Windows: normal_day 28 + edge_cases 25 + admin_corrections 4 + malformed 4 accepted
        // + 2mb_line 2 accepted, all Authentication; WSB SessionStart/End/Connect/Disconnect:
        // s3 26, edge 14, malformed + 2mb_line accepted 6.
        (3002, 28 + 25 + 4 + 4 + 2 + 26 + 14 + 6),
        // SSM CloudTrail: normal_day 19 + edge_cases 10; Parsec team_create (normal_day) 1.
        (6003, 19 + 10 + 1),
        // Parsec connection events: normal_day 35 - 1 admin, edge_cases 22 (page-boundary
        // repeats included: dedupe is correlate's job), malformed 6 accepted.
        (4001, 34 + 22 + 6),
        // WSB URL / tab / interaction / clipboard events: s3 30, edge 8, malformed accepted 3.
        (6001, 30 + 8 + 3),
        // WSB UrlBlockByContentFilter (edge 1).
        (6004, 1),
        // WSB file transfers and print jobs (s3 8).
        (6006, 8),
    ])
}

/// SSM streaming records in the corpus: normal_day 24 + edge_cases 9 + secrets 15 +
/// malformed 5 accepted + 2mb_line 2 accepted + Firehose 4; and 5 transcript files. Each
/// yields at least one Process Activity event (one per command).
const SSM_STREAM_RECORDS_AND_TRANSCRIPTS: usize = 24 + 9 + 15 + 5 + 2 + 4 + 5;

#[test]
fn every_corpus_record_maps_to_valid_ocsf_1_8_0() {
    check_corpus("1.8.0");
}

#[test]
fn every_corpus_record_maps_to_valid_ocsf_1_3_0() {
    check_corpus("1.3.0");
}

// ------------------------------------------------------------------------------------------
// Several threads.

/// The corpus as one stream of events read from text (as sources deliver them), mapped by
/// two copies on two threads and by one copy: the same events in the same order, since each
/// SSM session's reads stay with one copy and outputs are put back in input order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_threads_map_the_corpus_stream_exactly_as_one_does() {
    use sessiontrail_core::component::{FunctionTransform, ParallelCopies, TransformOutput};

    let mut texts = Vec::new();
    for (_, records) in corpus_records() {
        for r in records {
            if let Ok(fields) = r.fields {
                texts.push(serde_json::to_string(&fields).unwrap());
            }
        }
    }
    let stream: Vec<&String> = texts.iter().chain(&texts).chain(&texts).collect();
    let events: Vec<Event> = stream
        .iter()
        .map(
            |t| match decode_record(t.as_bytes(), DEFAULT_MAX_RECORD_BYTES) {
                Ok(Decoded::Record(text)) => Event::from_json(text, Arc::from("test"), t.len()),
                _ => panic!("corpus record re-serialized is valid: {t}"),
            },
        )
        .collect();
    let texts_of = |out: &TransformOutput| -> (Vec<String>, Vec<String>) {
        (
            out.out.iter().map(|e| e.to_json_string()).collect(),
            out.dropped.iter().map(|e| e.to_json_string()).collect(),
        )
    };

    let mut one = transform("1.8.0");
    let mut expected = (Vec::new(), Vec::new());
    let mut parallel = ParallelCopies::new(transform("1.8.0"), 2);
    let mut got = (Vec::new(), Vec::new());
    for chunk in events.chunks(256) {
        let batch: Vec<Event> = chunk.to_vec();
        let mut out = TransformOutput::default();
        for e in chunk.iter().cloned() {
            one.transform(e, &mut out);
        }
        let (o, d) = texts_of(&out);
        expected.0.extend(o);
        expected.1.extend(d);
        let (o, d) = texts_of(&parallel.transform_batch(batch).await.expect("no panic"));
        got.0.extend(o);
        got.1.extend(d);
    }
    assert!(expected.0.len() > 100, "the corpus maps to events");
    assert_eq!(got.0.len(), expected.0.len());
    for (i, (g, e)) in got.0.iter().zip(&expected.0).enumerate() {
        assert_eq!(g, e, "event {i}");
    }
    assert_eq!(got.1, expected.1, "dead letters");
}
