//! Fuzzes the redact transform over arbitrary JSON: any input that parses as a JSON object is
//! redacted as an event (mask and hash mode, one transform kept across inputs so PEM state
//! carries over); any input is also redacted as one string value. The transform must not
//! panic, must keep the event's shape, and its output must serialize as JSON again. An input
//! that a source accepts as a record is also redacted from its JSON text (the record screen may
//! pass it unparsed) and must come out exactly as from its parsed fields.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

use sessiontrail_core::component::{FunctionTransform, TransformOutput};
use sessiontrail_core::json::{decode_record, Decoded, DEFAULT_MAX_RECORD_BYTES};
use sessiontrail_core::metrics::MetricsRegistry;
use sessiontrail_core::Event;
use sessiontrail_transforms::redact::{Redact, RedactConfig};

fn transform(cfg: Value) -> Redact {
    let cfg: RedactConfig = serde_json::from_value(cfg).expect("config");
    cfg.build_transform("fuzz", MetricsRegistry::new())
        .expect("builds")
}

thread_local! {
    static MASK: RefCell<Redact> = RefCell::new(transform(json!({"annotate": true})));
    static HASH: RefCell<Redact> = RefCell::new(transform(
        json!({"mode": "hash", "hash_key": "fuzz-hash-key-0123456789abcdef"}),
    ));
    // One pair fed the same records, as text and as parsed fields: their PEM states stay alike.
    static FROM_TEXT: RefCell<Redact> = RefCell::new(transform(json!({"annotate": true})));
    static FROM_FIELDS: RefCell<Redact> = RefCell::new(transform(json!({"annotate": true})));
}

fn redact_one(cell: &'static std::thread::LocalKey<RefCell<Redact>>, e: Event) -> Event {
    let mut out = TransformOutput::default();
    cell.with(|t| t.borrow_mut().transform(e, &mut out));
    assert_eq!(out.out.len(), 1);
    out.out.remove(0)
}

fn shape(v: &Value) -> Value {
    match v {
        Value::String(_) => Value::Null,
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| k.as_str() != "redacted_by")
                .map(|(k, x)| (k.clone(), shape(x)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn check(t: &mut Redact, fields: Map<String, Value>) {
    let before = shape(&Value::Object(fields.clone()));
    let mut out = TransformOutput::default();
    t.transform(Event::new(fields, "fuzz".into(), 0), &mut out);
    assert_eq!(out.out.len(), 1);
    let after = Value::Object(out.out.remove(0).into_fields());
    assert_eq!(shape(&after), before);
    serde_json::to_string(&after).expect("serializes");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(Decoded::Record(text)) = decode_record(data, DEFAULT_MAX_RECORD_BYTES) {
        let fields = text.clone().into_object();
        let unchanged = fields.clone();
        let a = redact_one(
            &FROM_TEXT,
            Event::from_json(text, "fuzz".into(), data.len()),
        );
        let b = redact_one(&FROM_FIELDS, Event::new(fields, "fuzz".into(), data.len()));
        let kept = a.json_text().is_some();
        let (a, b) = (a.into_fields(), b.into_fields());
        assert_eq!(a, b, "redacted from text and from fields alike");
        if kept {
            assert_eq!(
                b, unchanged,
                "the text is kept only when nothing was redacted"
            );
        }
    }
    let mut as_text = Map::new();
    as_text.insert(
        "message".into(),
        Value::String(String::from_utf8_lossy(data).into_owned()),
    );
    let parsed = serde_json::from_slice::<Map<String, Value>>(data).ok();
    for cell in [&MASK, &HASH] {
        cell.with(|t| {
            let mut t = t.borrow_mut();
            check(&mut t, as_text.clone());
            if let Some(obj) = &parsed {
                check(&mut t, obj.clone());
            }
        });
    }
});
