//! The record screen of the redact transform: an event read as JSON text is redacted exactly as
//! the same event given as parsed fields (the walk of every string), whatever escapes its text
//! uses; an event with nothing to redact keeps its text and is not parsed.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde_json::{json, Value};

use sessiontrail_core::component::{FunctionTransform, TransformOutput};
use sessiontrail_core::json::{decode_record, Decoded, DEFAULT_MAX_RECORD_BYTES};
use sessiontrail_core::metrics::MetricsRegistry;
use sessiontrail_core::{Event, Object};
use sessiontrail_transforms::redact::{Redact, RedactConfig};

fn transform(cfg: Value) -> Redact {
    let cfg: RedactConfig = serde_json::from_value(cfg).expect("config");
    cfg.build_transform("scrub", MetricsRegistry::new())
        .expect("builds")
}

/// An event as a line source makes it: the validated text, not parsed.
fn text_event(text: &str) -> Event {
    match decode_record(text.as_bytes(), DEFAULT_MAX_RECORD_BYTES) {
        Ok(Decoded::Record(t)) => Event::from_json(t, "in".into(), text.len()),
        other => panic!("not a record: {other:?} {text}"),
    }
}

/// The same record as parsed fields: redact walks it whatever the screen would say.
fn parsed_event(text: &str) -> Event {
    let fields: Object = serde_json::from_str(text).expect("JSON object");
    Event::new(fields, "in".into(), text.len())
}

fn run(t: &mut Redact, e: Event) -> Event {
    let mut out = TransformOutput::default();
    t.transform(e, &mut out);
    assert_eq!(out.out.len(), 1);
    out.out.remove(0)
}

/// Redacts `texts` in order both ways (one transform each, so PEM state carries over alike);
/// checks the outputs are equal and that an unredacted event kept its text. Returns how many
/// records the screen passed without parsing.
fn check_same(cfg: &Value, texts: &[String]) -> Result<u64, TestCaseError> {
    let mut fast = transform(cfg.clone());
    let mut slow = transform(cfg.clone());
    for text in texts {
        let a = run(&mut fast, text_event(text));
        let b = run(&mut slow, parsed_event(text));
        let input: Object = serde_json::from_str(text).expect("JSON object");
        let kept = a.json_text().is_some();
        let (a, b) = (a.into_fields(), b.into_fields());
        prop_assert_eq!(&a, &b, "record {}", text);
        if b != input {
            prop_assert!(!kept, "a redacted event drops its text: {}", text);
        } else {
            prop_assert!(
                kept,
                "an event with nothing redacted keeps its text: {}",
                text
            );
        }
    }
    Ok(fast.passed_by_screen())
}

// ---- Writing JSON with every kind of escape -------------------------------------------------

/// How a string is written: the plain JSON escapes only, or more escapes than needed.
#[derive(Debug, Clone, Copy)]
enum Style {
    Minimal,
    /// `\/` for every slash.
    Slashes,
    /// `\u00XX` for ASCII letters and digits (hides anchors from a naive search).
    AlnumAsUnicode,
    /// `\uXXXX` (surrogate pairs beyond the BMP) for everything not ASCII.
    NonAsciiAsUnicode,
    /// Every character as `\uXXXX`.
    AllAsUnicode,
    /// Plain escapes, and JSON whitespace (line breaks too) around a key's colon.
    Spaced,
}

fn style() -> impl Strategy<Value = Style> {
    prop_oneof![
        4 => Just(Style::Minimal),
        1 => Just(Style::Slashes),
        1 => Just(Style::AlnumAsUnicode),
        1 => Just(Style::NonAsciiAsUnicode),
        1 => Just(Style::AllAsUnicode),
        1 => Just(Style::Spaced),
    ]
}

fn write_str(s: &str, style: Style, out: &mut String) {
    let unicode = |c: char, out: &mut String| {
        let mut units = [0u16; 2];
        for u in c.encode_utf16(&mut units) {
            out.push_str(&format!("\\u{u:04x}"));
        }
    };
    out.push('"');
    for c in s.chars() {
        match (c, style) {
            (_, Style::AllAsUnicode) => unicode(c, out),
            ('"', _) => out.push_str("\\\""),
            ('\\', _) => out.push_str("\\\\"),
            ('\n', _) => out.push_str("\\n"),
            ('\r', _) => out.push_str("\\r"),
            ('\t', _) => out.push_str("\\t"),
            ('/', Style::Slashes) => out.push_str("\\/"),
            (c, Style::AlnumAsUnicode) if c.is_ascii_alphanumeric() => unicode(c, out),
            (c, Style::NonAsciiAsUnicode) if !c.is_ascii() => unicode(c, out),
            (c, _) if (c as u32) < 0x20 => unicode(c, out),
            (c, _) => out.push(c),
        }
    }
    out.push('"');
}

fn next_style(styles: &[Style], next: &mut usize) -> Style {
    let s = styles
        .get(*next % styles.len().max(1))
        .copied()
        .unwrap_or(Style::Minimal);
    *next += 1;
    s
}

/// Writes `v` as JSON, taking the style of each string (keys too) from `styles` in turn.
fn write_json(v: &Value, styles: &[Style], next: &mut usize, out: &mut String) {
    match v {
        Value::String(s) => write_str(s, next_style(styles, next), out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(item, styles, next, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let style = next_style(styles, next);
                write_str(k, style, out);
                out.push_str(match style {
                    Style::Spaced => "\r\n\t:\n ",
                    _ => ":",
                });
                write_json(item, styles, next, out);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

// ---- Generated records ----------------------------------------------------------------------

fn secret() -> impl Strategy<Value = String> {
    prop_oneof![
        "(AKIA|ASIA)[A-Z0-9]{16}",
        "[A-Za-z0-9/+]{40}",
        // A bare secret access key: 40 characters with upper, lower and digits.
        "[ \t]{0,2}[a-z]{8}[A-Z]{8}[0-9]{8}[A-Za-z0-9/+]{16}[ \t]{0,2}",
        "ghp_[A-Za-z0-9]{36}",
        "glpat-[A-Za-z0-9_-]{20}",
        "xoxb-[0-9]{10}-[a-z]{12}",
        "eyJ[A-Za-z0-9_-]{4,10}\\.eyJ[A-Za-z0-9_-]{4,10}\\.[A-Za-z0-9_-]{0,10}",
        "(https|postgresql|redis)://[a-z]{0,5}:[A-Za-z0-9_!]{1,10}@[a-z]{2,8}",
        "(Authorization|authorization): (Bearer|Basic) [A-Za-z0-9]{16,24}",
        "bearer [A-Za-z0-9._~+/-]{16,24}",
        "Server=db;Password=[a-z ]{1,8};",
        "mysql -u root -p[A-Za-z0-9!]{1,10}",
        "tool --password[ =][a-z0-9]{1,8}",
        "sshpass -p [a-z0-9]{1,8} ssh h",
        "echo '[a-z0-9]{1,8}' \\| sudo -S ls",
        "sudo -S ls <<< [a-z0-9]{1,8}",
        "export [A-Z_]{0,6}(TOKEN|SECRET|PASSWORD|API_KEY)=[a-z0-9]{1,10}",
        "(password|api-key|client_secret|accessKey)[:=] ?[a-z0-9]{1,10}",
        "aws_secret_access_key = [A-Za-z0-9/+]{40}",
        Just("-----BEGIN RSA PRIVATE KEY-----".to_string()),
        Just("-----END RSA PRIVATE KEY-----".to_string()),
        // `(?i)` in a detector folds these onto `k` and `s`.
        Just("MY_TO\u{212a}EN=abc123".to_string()),
        Just("\u{17f}ecret: xyz789".to_string()),
        Just("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n".to_string()),
    ]
}

/// Text that looks like secrets to a quick glance: anchor words without a secret.
fn look_alike() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Value hidden due to security reasons.".to_string()),
        Just("wss://ssmmessages.eu-central-1.amazonaws.com/v1/data-channel/x".to_string()),
        Just("sudo systemctl restart nginx".to_string()),
        Just("the secret garden; token bucket; password_policy".to_string()),
        Just("Asia/Tokyo".to_string()),
        Just("451450e688efe0986ea56ec065015ac241b29c5d".to_string()),
        Just("CORP\\edubois".to_string()),
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    ]
}

/// Pieces of a string: noise, line breaks, terminal escape sequences, secrets.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => "[ -~]{0,12}",
            1 => "[\\u{a0}-\\u{2fff}\\u{1f600}-\\u{1f602}]{0,3}",
            1 => prop_oneof![Just("\n"), Just("\r\n"), Just("\r"), Just("\t"), Just(" ")]
                .prop_map(String::from),
            1 => prop_oneof![
                Just("\x1b[?2004l\r"),
                Just("\x1b[1;32m"),
                Just("\x1b]0;title\x07"),
                Just("\x1b["),
                Just("\x1b"),
                Just("\u{0}\u{7}\u{1f}"),
            ]
            .prop_map(String::from),
            2 => secret(),
            // A terminal escape sequence inside a secret: the detectors see through it.
            1 => (secret(), any::<prop::sample::Index>(), prop_oneof![Just("\x1b[1m"), Just("\x1b[K")])
                .prop_map(|(s, at, seq)| {
                    let cut = s.char_indices().map(|(i, _)| i).nth(at.index(s.chars().count().max(1))).unwrap_or(0);
                    format!("{}{seq}{}", &s[..cut], &s[cut..])
                }),
            2 => look_alike(),
        ],
        0..6,
    )
    .prop_map(|parts| parts.concat())
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z_]{1,10}",
        1 => prop_oneof![
            Just("password"),
            Just("db_Password"),
            Just("tokenValue"),
            Just("x-api-key"),
            Just("credentials"),
            Just("raw_base64"),
            Just("message"),
            Just("sessionData"),
        ]
        .prop_map(String::from),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => any::<i32>().prop_map(|n| json!(n)),
        3 => text().prop_map(Value::String),
        // Base64 of text, for a top-level `raw_base64`.
        1 => text().prop_map(|t| {
            use base64::Engine;
            Value::String(base64::engine::general_purpose::STANDARD.encode(t))
        }),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A record: a few fields, a session id from a small set (or none), written with escapes.
fn record() -> impl Strategy<Value = String> {
    (
        prop::collection::vec((key(), value()), 0..5),
        prop::option::of(prop_oneof![Just("s1"), Just("s2")]),
        prop::collection::vec(style(), 1..6),
    )
        .prop_map(|(fields, session, styles)| {
            let mut obj: Object = fields.into_iter().collect();
            if let Some(s) = session {
                obj.insert("sessionId".into(), s.into());
            }
            let mut text = String::new();
            write_json(&Value::Object(obj), &styles, &mut 0, &mut text);
            text
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn records_read_as_text_are_redacted_like_parsed_records(
        records in prop::collection::vec(record(), 1..6)
    ) {
        check_same(&json!({"annotate": true}), &records)?;
    }

    #[test]
    fn a_single_string_is_redacted_alike_whatever_its_escapes(
        s in text(), styles in prop::collection::vec(style(), 1..3), k in key()
    ) {
        let mut records = Vec::new();
        for st in styles {
            let mut text = String::new();
            write_json(&json!({ k.clone(): s.clone() }), &[st], &mut 0, &mut text);
            records.push(text);
        }
        check_same(&json!({}), &records)?;
    }
}

/// A private key block cut into records of session `a` (field `sessionId` or `session.uid`),
/// between records of session `b`.
fn split_key_block() -> impl Strategy<Value = Vec<String>> {
    (
        prop::collection::vec("[A-Za-z0-9+/]{16,64}", 1..12),
        prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        prop::collection::vec(text(), 0..4),
        any::<bool>(),
    )
        .prop_map(|(body, cuts, others, nested)| {
            let mut lines = vec!["-----BEGIN PRIVATE KEY-----".to_string()];
            lines.extend(body);
            lines.push("-----END PRIVATE KEY-----".to_string());
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(lines.len() + 1)).collect();
            cuts.push(lines.len());
            cuts.sort_unstable();
            let mut records = Vec::new();
            let mut others = others.into_iter();
            let mut from = 0;
            for cut in cuts {
                let chunk = &lines[from..cut.max(from)];
                from = cut.max(from);
                let record = if nested {
                    json!({"session": {"uid": "a"}, "sessionData": chunk})
                } else {
                    json!({"sessionId": "a", "sessionData": chunk})
                };
                records.push(record.to_string());
                if let Some(m) = others.next() {
                    records.push(json!({"sessionId": "b", "sessionData": [m]}).to_string());
                }
            }
            records
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn key_blocks_spanning_records_are_redacted_alike(records in split_key_block()) {
        check_same(&json!({}), &records)?;
    }
}

// ---- Fixed cases ----------------------------------------------------------------------------

#[test]
fn a_record_without_secrets_keeps_its_text_and_is_not_parsed() {
    let mut t = transform(json!({"annotate": true}));
    let text = r#"{"eventName":"StartSession","responseElements":{"tokenValue":"Value hidden due to security reasons.","streamUrl":"wss://ssm.example/v1/data-channel/x?role=publish"},"user":"CORP\\edubois","cmd":"sudo systemctl status"}"#;
    let out = run(&mut t, text_event(text));
    assert_eq!(out.json_text(), Some(text));
    assert_eq!(out.unparsed_json_text(), Some(text), "not even parsed");
    assert_eq!(t.passed_by_screen(), 1);
}

#[test]
fn a_record_with_a_secret_loses_its_text() {
    let mut t = transform(json!({"annotate": true}));
    let out = run(
        &mut t,
        text_event(r#"{"cmd":"export DB_PASSWORD=hunter2","n":1}"#),
    );
    assert!(out.json_text().is_none());
    assert_eq!(
        Value::Object(out.into_fields()),
        json!({"cmd": "export DB_PASSWORD=[REDACTED:env_secret]", "n": 1, "redacted_by": ["env_secret"]})
    );
    assert_eq!(t.passed_by_screen(), 0);
}

#[test]
fn an_anchor_word_without_a_secret_is_parsed_but_keeps_its_text() {
    let mut t = transform(json!({}));
    let text = r#"{"m":"-----BEGIN CERTIFICATE-----","n":"password=${DB_PASSWORD};"}"#;
    let out = run(&mut t, text_event(text));
    assert_eq!(out.json_text(), Some(text));
    assert_eq!(t.passed_by_screen(), 0, "the screen could not rule it out");
}

#[test]
fn escaped_secrets_are_found() {
    for (text, gone) in [
        (
            r#"{"m":"id \u0041KIAIOSFODNN7EXAMPL3"}"#,
            "IOSFODNN7EXAMPL3",
        ),
        (
            r#"{"m":"psql postgresql:\/\/app:Pg_Pa55@db\/x"}"#,
            "Pg_Pa55",
        ),
        (r#"{"db_pass\u0077ord":"hunter2"}"#, "hunter2"),
        // JSON whitespace between a name and its colon may be a line break.
        ("{\"db_password\"\n:\"hunter2\"}", "hunter2"),
        (r#"{"m":"pass\u001b[1mword=hunter2 x"}"#, "hunter2"),
        (
            r#"{"m":"$ cat k\n  wJalrXUtnFEMI\/K7MDENG\/bPxRfiCYEXAMPLEKEY\r\n$ "}"#,
            "bPxRfiCYEXAMPLEKEY",
        ),
        (
            r#"{"m":"-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBvX\n-----END EC PRIVATE KEY-----"}"#,
            "MHcCAQEEIBvX",
        ),
        (
            r#"{"m":"curl -H \"Authorization: Bearer abcdefghijklmnopqrstuv\""}"#,
            "abcdefghijklmnopqrstuv",
        ),
    ] {
        let mut t = transform(json!({}));
        let out = Value::Object(run(&mut t, text_event(text)).into_fields());
        assert!(!out.to_string().contains(gone), "{text} -> {out}");
        assert_eq!(t.passed_by_screen(), 0, "{text}");
    }
}

#[test]
fn a_top_level_raw_base64_is_decoded_and_scanned() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let text = json!({ "raw_base64": b64.encode("key AKIAIOSFODNN7EXAMPL3\n") }).to_string();
    let mut t = transform(json!({}));
    let out = run(&mut t, text_event(&text));
    let decoded = b64
        .decode(out.fields()["raw_base64"].as_str().expect("string"))
        .expect("base64");
    assert_eq!(decoded, b"key [REDACTED:aws_access_key_id]\n");
}

#[test]
fn a_key_block_open_in_a_session_stops_that_session_only() {
    let mut t = transform(json!({}));
    let begin =
        r#"{"sessionId":"a","sessionData":["cat id_rsa","-----BEGIN OPENSSH PRIVATE KEY-----"]}"#;
    let body = r#"{"sessionId":"a","sessionData":["b3BlbnNzaC1rZXktdjEAAAAA"]}"#;
    let other = r#"{"sessionId":"b","sessionData":["b3BlbnNzaC1rZXktdjEAAAAA"]}"#;
    let nested = r#"{"session":{"uid":"a"},"sessionData":["b3BlbnNzaC1rZXktdjEAAAAA"]}"#;
    let end =
        r#"{"sessionId":"a","sessionData":["QUJD","-----END OPENSSH PRIVATE KEY-----","$ "]}"#;
    let after = r#"{"sessionId":"a","sessionData":["b3BlbnNzaC1rZXktdjEAAAAA"]}"#;

    let out = run(&mut t, text_event(begin));
    assert_eq!(out.json_text(), Some(begin), "the BEGIN line itself stays");
    assert_eq!(t.passed_by_screen(), 0, "but opens a block: walked");

    let out = run(&mut t, text_event(body));
    assert_eq!(
        out.fields()["sessionData"][0],
        "[REDACTED:pem_private_key]",
        "a body line without any keyword, in the open session"
    );
    let out = run(&mut t, text_event(other));
    assert_eq!(
        out.json_text(),
        Some(other),
        "another session is not inside the block"
    );
    assert_eq!(t.passed_by_screen(), 1);
    // `sessionId` comes first in session_fields; `session.uid` names the same session here.
    let out = run(&mut t, text_event(nested));
    assert_eq!(out.fields()["sessionData"][0], "[REDACTED:pem_private_key]");

    let out = run(&mut t, text_event(end));
    assert_eq!(out.fields()["sessionData"][0], "[REDACTED:pem_private_key]");
    let out = run(&mut t, text_event(after));
    assert_eq!(out.json_text(), Some(after), "the block ended");
    assert_eq!(t.passed_by_screen(), 2);
}

#[test]
fn custom_rules_walk_every_record() {
    let mut t = transform(json!({"rules": [{"name": "ticket", "pattern": "^TCK-(\\d{6})$"}]}));
    let out = run(&mut t, text_event(r#"{"m":"TCK-123456","n":"plain"}"#));
    assert_eq!(out.fields()["m"], "TCK-[REDACTED:ticket]");
    let text = r#"{"m":"nothing here"}"#;
    let out = run(&mut t, text_event(text));
    assert_eq!(out.json_text(), Some(text));
    assert_eq!(t.passed_by_screen(), 0);
}

#[test]
fn listed_fields_only_are_redacted_from_text_too() {
    let cfg = json!({"fields": ["cmd", "auth.password"]});
    let texts = [
        r#"{"cmd":"export TOKEN=abc","other":"export TOKEN=abc"}"#,
        r#"{"auth":{"password":"hunter2","token":"x"},"cmd":"ls"}"#,
        r#"{"other":"export TOKEN=abc"}"#,
    ]
    .map(String::from);
    check_same(&cfg, &texts).expect("same as the walk of parsed fields");
    let mut t = transform(cfg);
    let out = run(&mut t, text_event(&texts[2]));
    assert_eq!(
        out.json_text(),
        Some(texts[2].as_str()),
        "nothing listed to redact"
    );
}

#[test]
fn a_parsed_event_that_still_has_its_text_keeps_it_when_nothing_is_redacted() {
    let mut t = transform(json!({}));
    let text = r#"{"m":"(using password: YES)"}"#;
    let e = text_event(text);
    assert_eq!(
        e.fields()["m"],
        "(using password: YES)",
        "parsed by an earlier reader"
    );
    let out = run(&mut t, e);
    assert_eq!(out.json_text(), Some(text));
}

// ---- The shared corpus ----------------------------------------------------------------------

fn corpus() -> PathBuf {
    match std::env::var_os("SESSIONTRAIL_SHARED") {
        Some(p) => PathBuf::from(p).join("corpus"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus"),
    }
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn corpus_records_and_transcript_lines_are_redacted_alike_from_text() {
    let mut all = Vec::new();
    files(&corpus(), &mut all);
    all.sort();
    let mut records = 0;
    let mut passed = 0;
    for path in all {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let name = path.display().to_string();
        let texts: Vec<String> = if name.ends_with(".ndjson") || name.ends_with(".jsonl") {
            bytes
                .split(|b| *b == b'\n')
                .filter_map(|line| match decode_record(line, DEFAULT_MAX_RECORD_BYTES) {
                    Ok(Decoded::Record(t)) => Some(t.as_str().to_string()),
                    _ => None,
                })
                .collect()
        } else if name.ends_with(".log") {
            // A transcript, one record per line of one session: escapes (`\u001b`, `\r`) and
            // key blocks spanning records.
            String::from_utf8_lossy(&bytes)
                .split('\n')
                .map(|l| json!({"sessionId": name.clone(), "message": l}).to_string())
                .collect()
        } else {
            continue;
        };
        records += texts.len();
        passed += check_same(&json!({}), &texts).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert!(records > 100, "the corpus has records: {records}");
    assert!(passed > 0, "the screen passes some corpus records");
}
