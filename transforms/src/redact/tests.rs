use std::sync::Arc;

use base64::Engine;
use serde_json::json;

use sessiontrail_core::component::{FunctionTransform, TransformOutput};
use sessiontrail_core::metrics::MetricsRegistry;
use sessiontrail_core::{DeadLetter, Event, Object};

use super::*;

fn config(yaml_like: serde_json::Value) -> RedactConfig {
    serde_json::from_value(yaml_like).expect("valid redact config")
}

fn transform(cfg: &RedactConfig) -> (Redact, Arc<MetricsRegistry>) {
    let registry = MetricsRegistry::new();
    let t = cfg
        .build_transform("scrub", Arc::clone(&registry))
        .expect("builds");
    (t, registry)
}

fn event(v: serde_json::Value) -> Event {
    let fields: Object = serde_json::from_value(v).expect("object");
    Event::new(fields, "in".into(), 0)
}

fn run(t: &mut Redact, v: serde_json::Value) -> serde_json::Value {
    let mut out = TransformOutput::default();
    t.transform(event(v), &mut out);
    assert_eq!(out.out.len(), 1, "redact emits every event");
    serde_json::Value::Object(out.out.remove(0).into_fields())
}

#[test]
fn mask_keeps_the_context() {
    let (mut t, _) = transform(&config(json!({})));
    let out = run(
        &mut t,
        json!({"sessionData": ["mysql -u root -pS3cr3t! -e 'select 1'", "sh-5.2$ "], "n": 1}),
    );
    assert_eq!(
        out,
        json!({"sessionData": ["mysql -u root -p[REDACTED:cli_password] -e 'select 1'", "sh-5.2$ "], "n": 1})
    );
}

#[test]
fn strings_without_secrets_are_untouched_and_nested_values_are_scanned() {
    let (mut t, _) = transform(&config(json!({})));
    let input = json!({
        "a": {"b": [{"c": "token=abcdef123456"}, "plain"]},
        "id": "451450e688efe0986ea56ec065015ac241b29c5d",
        "u": "0f136351-ab20-494f-a517-60a711e7280b"
    });
    let out = run(&mut t, input.clone());
    assert_eq!(out["a"]["b"][0]["c"], "token=[REDACTED:env_secret]");
    assert_eq!(out["a"]["b"][1], "plain");
    assert_eq!(out["id"], input["id"]);
    assert_eq!(out["u"], input["u"]);
}

#[test]
fn hash_mode_is_keyed_stable_and_hides_the_value() {
    let cfg = config(json!({"mode": "hash", "hash_key": "0123456789abcdef0123456789abcdef"}));
    let (mut t, _) = transform(&cfg);
    let a = run(
        &mut t,
        json!({"m": "export GITHUB_TOKEN=ghp_tteI0k0bnIlwvrMlJSiVd867PszvpbjSgPmw"}),
    );
    let b = run(
        &mut t,
        json!({"m": "x ghp_tteI0k0bnIlwvrMlJSiVd867PszvpbjSgPmw"}),
    );
    let c = run(
        &mut t,
        json!({"m": "x ghp_tteI0k0bnIlwvrMlJSiVd867PszvpbjSgPmX"}),
    );
    let hashed = |v: &serde_json::Value| -> String {
        let s = v["m"].as_str().unwrap();
        let at = s.find("github_token:").expect("hash replacement");
        s[at..].to_string()
    };
    assert_eq!(hashed(&a), hashed(&b), "equal secrets correlate");
    assert_ne!(hashed(&a), hashed(&c));
    assert_eq!(hashed(&a).len(), "github_token:".len() + HASH_HEX_LEN);
    assert!(!a.to_string().contains("ghp_tteI0k"));

    let other_key = config(json!({"mode": "hash", "hash_key": "another key, also long enough"}));
    let (mut t2, _) = transform(&other_key);
    let a2 = run(
        &mut t2,
        json!({"m": "x ghp_tteI0k0bnIlwvrMlJSiVd867PszvpbjSgPmw"}),
    );
    assert_ne!(hashed(&a2), hashed(&b), "the key changes the hash");
}

#[test]
fn hash_mode_without_a_usable_key_is_a_config_error() {
    let short = config(json!({"mode": "hash", "hash_key": "short"}));
    let err = short.validate().unwrap_err();
    assert!(err.contains("at least 16"), "{err}");
    assert!(
        !err.contains("short"),
        "the key itself is never echoed: {err}"
    );
    assert_eq!(format!("{:?}", short.hash_key), "Some(***)");
}

#[test]
fn bad_options_are_rejected() {
    let unknown = serde_json::from_value::<RedactConfig>(json!({"detector": {}}));
    assert!(unknown.is_err());
    assert!(config(json!({"detectors": {"except": ["jwtt"]}}))
        .validate()
        .unwrap_err()
        .contains("unknown detector \"jwtt\""));
    assert!(config(json!({"rules": [{"name": "x", "pattern": "("}]}))
        .validate()
        .is_err());
    assert!(config(json!({"fields": ["a..b"]})).validate().is_err());
    assert!(serde_json::from_value::<RedactConfig>(json!({"mode": "scramble"})).is_err());
}

#[test]
fn except_turns_detectors_off_and_custom_rules_apply() {
    let cfg = config(json!({
        "detectors": {"except": ["jwt", "http_auth"]},
        "rules": [
            {"name": "employee_id", "pattern": "EMP-(\\d{6})"},
            {"name": "ticket", "pattern": "TCK-\\d+", "replace": "<ticket>"}
        ]
    }));
    let (mut t, _) = transform(&cfg);
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln";
    let out = run(
        &mut t,
        json!({"m": format!("{jwt} EMP-123456 TCK-9 AKIAIOSFODNN7EXAMPL3")}),
    );
    assert_eq!(
        out["m"],
        format!("{jwt} EMP-[REDACTED:employee_id] <ticket> [REDACTED:aws_access_key_id]")
    );
}

#[test]
fn fields_limit_the_scan() {
    let cfg = config(json!({"fields": ["detail.requestParameters", "sessionData"]}));
    let (mut t, _) = transform(&cfg);
    let out = run(
        &mut t,
        json!({
            "detail": {"requestParameters": {"cmd": "password: hunter22"}, "other": "password: kept"},
            "sessionData": ["AKIAIOSFODNN7EXAMPL3"],
            "note": "AKIAIOSFODNN7EXAMPL3"
        }),
    );
    assert_eq!(
        out["detail"]["requestParameters"]["cmd"],
        "password: [REDACTED:credential_assignment]"
    );
    assert_eq!(out["detail"]["other"], "password: kept");
    assert_eq!(out["sessionData"][0], "[REDACTED:aws_access_key_id]");
    assert_eq!(out["note"], "AKIAIOSFODNN7EXAMPL3");
}

#[test]
fn annotate_lists_detectors_never_values() {
    let (mut t, _) = transform(&config(json!({"annotate": true})));
    let out = run(
        &mut t,
        json!({"a": "AKIAIOSFODNN7EXAMPL3", "b": ["AKIAIOSFODNN7EXAMPL4", "{\"password\": \"hunter22\"}"]}),
    );
    assert_eq!(
        out["redacted_by"],
        json!(["aws_access_key_id", "credential_assignment"])
    );
    let clean = run(&mut t, json!({"a": "nothing here"}));
    assert!(clean.get("redacted_by").is_none());
}

#[test]
fn metrics_count_per_detector_and_field() {
    let (mut t, registry) = transform(&config(json!({})));
    run(
        &mut t,
        json!({"sessionData": ["AKIAIOSFODNN7EXAMPL3", "AKIAIOSFODNN7EXAMPL4"], "detail": {"x": "password=abcdefgh"}}),
    );
    let text = registry.render();
    assert!(
        text.contains(r#"sessiontrail_redactions_total{component="scrub",detector="aws_access_key_id",field="sessionData"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"sessiontrail_redactions_total{component="scrub",detector="env_secret",field="detail"} 1"#),
        "{text}"
    );
}

#[test]
fn pem_block_spans_elements_and_records_of_one_session() {
    let (mut t, _) = transform(&config(json!({})));
    let first = run(
        &mut t,
        json!({"sessionId": "s1", "sessionData": ["cat key", "-----BEGIN RSA PRIVATE KEY-----", "MIIEpAIBAAKCAQEA0Z3VS5JJcds3xfn"]}),
    );
    // Another session in between is not inside a key.
    let other = run(
        &mut t,
        json!({"sessionId": "s2", "sessionData": ["QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo"]}),
    );
    let second = run(
        &mut t,
        json!({"sessionId": "s1", "sessionData": ["kWeGBqok0oAly7Gy9xrr69lf4FTVnZdNzcK2c8lcyZz0", "-----END RSA PRIVATE KEY-----", "sh-5.2$ ls"]}),
    );
    let third = run(
        &mut t,
        json!({"sessionId": "s1", "sessionData": ["YWZ0ZXIgdGhlIGtleQ"]}),
    );
    assert_eq!(
        first["sessionData"],
        json!([
            "cat key",
            "-----BEGIN RSA PRIVATE KEY-----",
            "[REDACTED:pem_private_key]"
        ])
    );
    assert_eq!(
        other["sessionData"][0],
        "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo"
    );
    assert_eq!(
        second["sessionData"],
        json!([
            "[REDACTED:pem_private_key]",
            "-----END RSA PRIVATE KEY-----",
            "sh-5.2$ ls"
        ])
    );
    assert_eq!(third["sessionData"][0], "YWZ0ZXIgdGhlIGtleQ");
}

#[test]
fn pem_state_does_not_leak_into_other_fields_of_the_record() {
    let (mut t, _) = transform(&config(json!({})));
    let out = run(
        &mut t,
        json!({"sessionData": ["-----BEGIN PRIVATE KEY-----", "QUJD"], "sessionId": "s9", "target": {"id": "i-0a1b2c3d4e5f60718"}}),
    );
    assert_eq!(out["sessionId"], "s9");
    assert_eq!(out["target"]["id"], "i-0a1b2c3d4e5f60718");
    assert_eq!(out["sessionData"][1], "[REDACTED:pem_private_key]");
}

#[test]
fn raw_transcript_with_ansi_and_bare_cr() {
    let (mut t, _) = transform(&config(json!({})));
    let raw = "\x1b[?2004hsh-5.2$ cat creds\r\n\x1b[?2004l\rwG9xecIxSiKh2BQIfjYRY/pb5DDReqXorTIyZIPI\r\n\x1b[?2004hsh-5.2$ echo \x1b[1mdone\x1b[0m\r\n";
    let out = run(&mut t, json!({"message": raw}));
    assert_eq!(
        out["message"],
        "\x1b[?2004hsh-5.2$ cat creds\r\n\x1b[?2004l\r[REDACTED:aws_secret_access_key]\r\n\x1b[?2004hsh-5.2$ echo \x1b[1mdone\x1b[0m\r\n"
    );
}

#[test]
fn dead_letters_raw_and_event_are_redacted() {
    let (mut t, _) = transform(&config(json!({})));
    let raw = br#"{"cmd": "mysql -pS3cr3t! -e 'x'", "broken"#;
    let dl = DeadLetter::new("in", "invalid_json", "expected ':' at line 1 column 40")
        .raw(raw)
        .with("line", 3)
        .build("in".into());
    let mut out = TransformOutput::default();
    t.transform(dl, &mut out);
    let v = serde_json::Value::Object(out.out.remove(0).into_fields());
    assert_eq!(
        v["raw"],
        r#"{"cmd": "mysql -p[REDACTED:cli_password] -e 'x'", "broken"#
    );
    assert_eq!(v["reason"], "invalid_json");
    assert_eq!(v["line"], 3);

    let inner: Object = serde_json::from_value(json!({"password": "hunter22"})).unwrap();
    let dl = DeadLetter::from_event("ocsf", "wrong_type", "x", Event::new(inner, "in".into(), 1));
    let mut out = TransformOutput::default();
    t.transform(dl, &mut out);
    assert_eq!(
        out.out[0].fields()["event"]["password"],
        "[REDACTED:credential_assignment]"
    );
}

#[test]
fn dead_letter_raw_base64_is_decoded_scanned_and_reencoded() {
    let (mut t, _) = transform(&config(json!({})));
    let mut bytes = b"{\"m\": \"AKIAIOSFODNN7EXAMPL3 \xff\xfe caf".to_vec();
    bytes.extend_from_slice(b" export DB_PASSWORD=hunter22\"}");
    let dl = DeadLetter::new("in", "invalid_utf8", "line is not UTF-8")
        .raw(&bytes)
        .build("in".into());
    assert!(dl.fields().contains_key("raw_base64"));
    let mut out = TransformOutput::default();
    t.transform(dl, &mut out);
    let b64 = out.out[0].fields()["raw_base64"]
        .as_str()
        .unwrap()
        .to_string();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let mut expected = b"{\"m\": \"[REDACTED:aws_access_key_id] \xff\xfe caf".to_vec();
    expected.extend_from_slice(b" export DB_PASSWORD=[REDACTED:env_secret]\"}");
    assert_eq!(decoded, expected, "invalid bytes kept, secrets gone");
}

#[test]
fn redacting_twice_changes_nothing_more() {
    let (mut t, _) = transform(&config(json!({})));
    let once = run(
        &mut t,
        json!({"m": "mysql -pS3cr3t! && export API_TOKEN=abc123 && curl -H 'Authorization: Basic dXNlcjpwYXNz' https://u:p4ss@h/"}),
    );
    let twice = run(&mut t, once.clone());
    assert_eq!(once, twice);
}

#[test]
fn structured_fields_named_like_secrets_are_redacted_whole() {
    let (mut t, _) = transform(&config(json!({})));
    let out = run(
        &mut t,
        json!({"responseElements": {
            "credentials": {
                "accessKeyId": "ASIAIOSFODNN7EXAMPL3",
                "secretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "sessionToken": "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ"
            },
            "tokenValue": "Value hidden due to security reasons.",
            "password": "<not set>",
            "apiKeys": ["k1", "k2"]
        }}),
    );
    let r = &out["responseElements"];
    assert_eq!(
        r["credentials"]["accessKeyId"],
        "[REDACTED:aws_access_key_id]"
    );
    assert_eq!(
        r["credentials"]["secretAccessKey"],
        "[REDACTED:aws_secret_access_key]"
    );
    assert_eq!(
        r["credentials"]["sessionToken"],
        "[REDACTED:credential_assignment]"
    );
    assert_eq!(r["tokenValue"], "Value hidden due to security reasons.");
    assert_eq!(r["password"], "<not set>", "placeholders stay");
    assert_eq!(
        r["apiKeys"],
        json!(["k1", "k2"]),
        "the name must end in the word"
    );
}
