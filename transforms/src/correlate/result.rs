//! The session result correlate writes onto an end event: `start_time`, `end_time`,
//! `duration`, `session.created_time` and the `unmapped.session_*` members.
//!
//! Computed once from the session record ([`SessionResult`]), then written either into a
//! parsed event or straight into the event's JSON text. Half of the events of a session
//! stream are ends, so the text path matters: it copies the members it does not change as
//! they are, writes the new ones directly, and splices the new members into `session` /
//! `unmapped` without parsing them when they cannot already hold those keys.

use sessiontrail_core::json_edit::object_members;
use sessiontrail_core::json_write::JsonObjectWriter;
use sessiontrail_core::{JsonObjectText, Object, Value};

/// A value of an `unmapped` member.
#[derive(Debug, Clone, Copy)]
pub enum Scalar<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
}

impl Scalar<'_> {
    fn to_value(self) -> Value {
        match self {
            Scalar::Str(s) => s.into(),
            Scalar::Int(i) => i.into(),
            Scalar::Bool(b) => b.into(),
        }
    }

    fn write(self, w: &mut JsonObjectWriter, key: &str) {
        match self {
            Scalar::Str(s) => w.string(key, s),
            Scalar::Int(i) => w.integer(key, i),
            Scalar::Bool(b) => w.boolean(key, b),
        };
    }
}

/// What is written onto the event. The three top-level times are set, or removed when the
/// session has none (an event may carry its own).
#[derive(Debug)]
pub struct SessionResult<'a> {
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
    pub duration: Option<i64>,
    /// Set in `session` when the event has a `session` object, else in `actor.session` when
    /// that is an object (only Authentication has a top-level `session`; the other classes
    /// carry it under `actor` and reject a top-level one). `None`: start unknown.
    pub created_time: Option<i64>,
    /// Members set in `unmapped` (which is replaced when it is not an object), in order.
    pub unmapped: Vec<(&'static str, Scalar<'a>)>,
}

const TIMES: [&str; 3] = ["start_time", "end_time", "duration"];

impl SessionResult<'_> {
    fn times(&self) -> [(&'static str, Option<i64>); 3] {
        [
            (TIMES[0], self.start_time),
            (TIMES[1], self.end_time),
            (TIMES[2], self.duration),
        ]
    }

    /// Writes the result into a parsed event.
    pub fn write_into_object(&self, fields: &mut Object) {
        for (key, value) in self.times() {
            match value {
                Some(v) => fields.insert(key.into(), v.into()),
                None => fields.remove(key),
            };
        }
        if let Some(created) = self.created_time {
            let session = if fields.get("session").is_some_and(Value::is_object) {
                fields.get_mut("session")
            } else {
                fields.get_mut("actor").and_then(|a| a.get_mut("session"))
            };
            if let Some(Value::Object(session)) = session {
                session.insert("created_time".into(), created.into());
            }
        }
        if self.unmapped.is_empty() {
            return;
        }
        // `unmapped` once (replaced when it is not an object, as `set_path` would), then plain
        // inserts, instead of a path walk per member.
        if !fields.get("unmapped").is_some_and(Value::is_object) {
            fields.insert("unmapped".into(), Value::Object(Object::new()));
        }
        if let Some(Value::Object(unmapped)) = fields.get_mut("unmapped") {
            for (key, value) in &self.unmapped {
                unmapped.insert((*key).into(), value.to_value());
            }
        }
    }

    /// The event's JSON text (a validated object) with the result written into it.
    pub fn write_into_text(&self, text: &str) -> JsonObjectText {
        let Some(members) = object_members(text) else {
            // Not reachable for validated text; parse whole rather than lose the result.
            let mut fields: Object = serde_json::from_str(text).unwrap_or_default();
            self.write_into_object(&mut fields);
            let mut w = JsonObjectWriter::with_capacity(text.len() + 256);
            for (k, v) in &fields {
                w.value(k, v);
            }
            return w.finish();
        };
        let session_is_object = members
            .iter()
            .any(|(k, raw)| k == "session" && raw.get().starts_with('{'));
        let mut w = JsonObjectWriter::with_capacity(text.len() + 256);
        let mut wrote_unmapped = false;
        for (key, raw) in &members {
            let raw = raw.get();
            match key.as_ref() {
                k if TIMES.contains(&k) => {} // written below
                "session" if session_is_object => match self.created_time {
                    Some(t) => write_merged(&mut w, key, raw, &[("created_time", Scalar::Int(t))]),
                    None => {
                        w.raw(key, raw);
                    }
                },
                "actor" if !session_is_object && self.created_time.is_some() => {
                    let mut actor: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
                    if let Some(Value::Object(session)) = actor.get_mut("session") {
                        if let Some(t) = self.created_time {
                            session.insert("created_time".into(), t.into());
                        }
                    }
                    w.value(key, &actor);
                }
                "unmapped" if !self.unmapped.is_empty() => {
                    wrote_unmapped = true;
                    if raw.starts_with('{') {
                        write_merged(&mut w, key, raw, &self.unmapped);
                    } else {
                        write_new_object(&mut w, key, &self.unmapped);
                    }
                }
                _ => {
                    w.raw(key, raw);
                }
            }
        }
        for (key, value) in self.times() {
            if let Some(v) = value {
                w.integer(key, v);
            }
        }
        if !wrote_unmapped && !self.unmapped.is_empty() {
            write_new_object(&mut w, "unmapped", &self.unmapped);
        }
        w.finish()
    }
}

fn write_new_object(w: &mut JsonObjectWriter, key: &str, members: &[(&str, Scalar)]) {
    w.begin_object(key);
    for (k, v) in members {
        v.write(w, k);
    }
    w.end_object();
}

/// Writes the object `raw` (JSON text) under `key` with `members` set in it. When `raw`
/// cannot hold any of those keys (none appears in it, and it has no escapes that could spell
/// one), the new members are written first and `raw`'s own copied after them; otherwise the
/// object is parsed, updated and written.
fn write_merged(w: &mut JsonObjectWriter, key: &str, raw: &str, members: &[(&str, Scalar)]) {
    let inner = raw
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .map(str::trim);
    let clash = |inner: &str| {
        inner.contains('\\') || members.iter().any(|(k, _)| contains_quoted(inner, k))
    };
    match inner {
        Some(inner) if !clash(inner) => {
            w.begin_object(key);
            for (k, v) in members {
                v.write(w, k);
            }
            if !inner.is_empty() {
                w.raw_members(inner);
            }
            w.end_object();
        }
        _ => {
            let mut object: Object = serde_json::from_str(raw).unwrap_or_default();
            for (k, v) in members {
                object.insert((*k).into(), v.to_value());
            }
            w.value(key, &Value::Object(object));
        }
    }
}

/// `"key"` (with its quotes) appears in `text`.
fn contains_quoted(text: &str, key: &str) -> bool {
    text.match_indices(key)
        .any(|(at, _)| text[..at].ends_with('"') && text[at + key.len()..].starts_with('"'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessiontrail_core::json::{decode_record, Decoded};

    fn result(
        created: Option<i64>,
        unmapped: Vec<(&'static str, Scalar<'static>)>,
    ) -> SessionResult<'static> {
        SessionResult {
            start_time: created,
            end_time: Some(20),
            duration: created.map(|c| 20 - c),
            created_time: created,
            unmapped,
        }
    }

    #[test]
    fn text_and_object_writes_agree() {
        let docs = [
            r#"{"session":{"uid":"s"},"time":1,"start_time":3}"#,
            r#"{"session":{},"unmapped":{"a":1},"end_time":5}"#,
            r#"{"session":{"uid":"s","created_time":4},"unmapped":{"correlation":"old","b":[1]}}"#,
            r#"{"session":{"u\u0069d":"s"},"unmapped":{"x\u0079":1}}"#,
            r#"{"session":"flat","actor":{"session":{"uid":"a"},"user":{"name":"n"}},"unmapped":"flat"}"#,
            r#"{"actor":{"user":{"name":"n"}},"duration":9}"#,
            r#"{"time":1}"#,
        ];
        let results = [
            result(
                Some(10),
                vec![
                    ("correlation", Scalar::Str("complete")),
                    ("resumed", Scalar::Int(2)),
                    ("correction", Scalar::Bool(true)),
                ],
            ),
            result(
                None,
                vec![("correlation", Scalar::Str("end_without_start"))],
            ),
            result(Some(10), vec![]),
        ];
        for doc in docs {
            let Ok(Decoded::Record(text)) = decode_record(doc.as_bytes(), 1 << 20) else {
                panic!("valid: {doc}");
            };
            for r in &results {
                let got = r.write_into_text(text.as_str());
                // Valid, and no key written twice (decode_record rejects duplicates).
                let checked = decode_record(got.as_str().as_bytes(), 1 << 20);
                assert!(
                    matches!(checked, Ok(Decoded::Record(_))),
                    "{}",
                    got.as_str()
                );
                let got: Object = serde_json::from_str(got.as_str()).expect("valid JSON out");
                let mut want: Object = serde_json::from_str(doc).unwrap();
                r.write_into_object(&mut want);
                assert_eq!(got, want, "{doc} with {r:?}");
            }
        }
    }
}
