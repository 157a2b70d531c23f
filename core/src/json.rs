//! JSON helpers shared by every component: dotted field paths and the strict record decoder
//! that applies the input rules of `shared/corpus/README.md` the same way in every source.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Visitor};

use crate::event::{JsonObjectText, Object, Value};
use crate::json_validate;

/// Largest record accepted by default: 1 MiB, newline excluded (corpus input rule 2).
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Deeper nesting is dead-lettered (corpus input rule 5).
pub const MAX_NESTING_DEPTH: usize = 64;

/// Nesting depth of an object (the object itself is level 1), for records that arrive already
/// parsed (elements of a JSON array, API pages) and so did not pass [`decode_record`]'s check.
pub fn object_depth(obj: &Object) -> usize {
    fn value_depth(v: &Value) -> usize {
        match v {
            Value::Object(o) => 1 + o.values().map(value_depth).max().unwrap_or(0),
            Value::Array(a) => 1 + a.iter().map(value_depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    1 + obj.values().map(value_depth).max().unwrap_or(0)
}

/// Looks up `a.b.0.c` (numeric segments index arrays).
pub fn get_path<'a>(obj: &'a Object, path: &str) -> Option<&'a Value> {
    let (first, rest) = match path.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (path, None),
    };
    let value = obj.get(first)?;
    match rest {
        Some(rest) => get_path_value(value, rest),
        None => Some(value),
    }
}

/// [`get_path`] inside a value.
pub fn get_path_value<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = value;
    for part in path.split('.') {
        cur = match cur {
            Value::Object(m) => m.get(part)?,
            Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

pub fn get_path_mut<'a>(obj: &'a mut Object, path: &str) -> Option<&'a mut Value> {
    let mut parts = path.split('.');
    let mut cur = obj.get_mut(parts.next()?)?;
    for part in parts {
        cur = match cur {
            Value::Object(m) => m.get_mut(part)?,
            Value::Array(a) => a.get_mut(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Sets `a.b.c`, creating intermediate objects (and replacing non-objects on the way).
pub fn set_path(obj: &mut Object, path: &str, value: Value) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().unwrap_or(path);
    let mut cur = obj;
    for part in parts {
        let entry = cur
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Object::new()));
        if !entry.is_object() {
            *entry = Value::Object(Object::new());
        }
        cur = match entry {
            Value::Object(m) => m,
            _ => unreachable!("replaced by an object just above"),
        };
    }
    cur.insert(last.to_string(), value);
}

/// Why a record could not be decoded. `reason` is one of the corpus' dead-letter reasons.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError {
    pub reason: &'static str,
    pub message: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

/// Outcome of decoding one line.
#[derive(Debug)]
pub enum Decoded {
    /// Blank or whitespace-only: ignored, not counted.
    Blank,
    Record(JsonObjectText),
}

/// Decodes one NDJSON line (without its `\n`): strips a trailing CR and a leading UTF-8 BOM,
/// ignores blank lines, and rejects invalid UTF-8, oversize records, non-objects, trailing
/// data, nesting deeper than 64 and duplicate keys. Never panics.
pub fn decode_record(line: &[u8], max_bytes: usize) -> Result<Decoded, DecodeError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    if line.len() > max_bytes {
        return Err(DecodeError {
            reason: "record_too_large",
            message: format!("record is {} bytes, the limit is {max_bytes}", line.len()),
        });
    }
    if line.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Decoded::Blank);
    }
    // One UTF-8 pass over the whole line: the validator then needs none per string.
    let text = std::str::from_utf8(line).map_err(|bad| DecodeError {
        reason: "invalid_utf8",
        message: format!("invalid UTF-8 at byte {}", bad.valid_up_to()),
    })?;
    // Validation builds no values: a record that is only passed through is never parsed into
    // fields (see `Event`).
    json_validate::validate_str(text)?;
    let text = text.trim_ascii();
    if !text.starts_with('{') {
        // Valid JSON but not an object: parse it (rare; already checked) to name what it is.
        let kind = serde_json::from_str::<Value>(text).map_or("a value", |v| kind_of(&v));
        return Err(DecodeError {
            reason: "not_an_object",
            message: format!("expected a JSON object, found {kind}"),
        });
    }
    Ok(Decoded::Record(JsonObjectText(text.into())))
}

/// Checks one JSON document against the syntax, depth and duplicate-key rules without
/// building it (see the `json_validate` module). Invalid UTF-8 is `invalid_json` here;
/// [`decode_record`] checks UTF-8 first and names it `invalid_utf8`.
pub fn validate_strict(bytes: &[u8]) -> Result<(), DecodeError> {
    json_validate::validate(bytes)
}

pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A key, borrowed from the input unless it had escapes.
pub(crate) struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// Parses an RFC 3339 timestamp (any offset) to UTC.
pub fn parse_rfc3339(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(line: &[u8]) -> &'static str {
        decode_record(line, 100).unwrap_err().reason
    }

    #[test]
    fn accepts_objects_with_crlf_and_bom() {
        match decode_record(b"\xEF\xBB\xBF{\"a\":1}\r", 100).unwrap() {
            Decoded::Record(m) => assert_eq!(m.into_object()["a"], 1),
            Decoded::Blank => panic!("not blank"),
        }
    }

    #[test]
    fn blank_lines_are_ignored() {
        assert!(matches!(
            decode_record(b"  \t \r", 100).unwrap(),
            Decoded::Blank
        ));
    }

    #[test]
    fn each_defect_has_its_reason() {
        assert_eq!(reason(b"{\"a\":"), "invalid_json");
        assert_eq!(reason(b"{\"a\":1} {\"b\":2}"), "invalid_json");
        assert_eq!(reason(b"{\"a\":1,}"), "invalid_json");
        assert_eq!(reason(b"[1,2]"), "not_an_object");
        assert_eq!(reason(b"null"), "not_an_object");
        assert_eq!(reason(b"\"x\""), "not_an_object");
        assert_eq!(reason(b"{\"a\":\"\xff\"}"), "invalid_utf8");
        assert_eq!(reason(b"{\"a\":1,\"a\":2}"), "duplicate_key");
        assert_eq!(reason(&[b'x'; 101]), "record_too_large");
    }

    #[test]
    fn nesting_over_64_is_rejected_and_64_accepted() {
        let deep = |n: usize| format!("{}1{}", "[".repeat(n - 1), "]".repeat(n - 1));
        let ok = format!("{{\"a\":{}}}", deep(64));
        assert!(decode_record(ok.as_bytes(), 1 << 20).is_ok());
        let bad = format!("{{\"a\":{}}}", deep(65));
        assert_eq!(
            decode_record(bad.as_bytes(), 1 << 20).unwrap_err().reason,
            "nesting_too_deep"
        );
    }

    #[test]
    fn paths_read_and_write_nested_fields() {
        let mut o: Object = serde_json::from_str(r#"{"a":{"b":[{"c":1}]}}"#).unwrap();
        assert_eq!(get_path(&o, "a.b.0.c"), Some(&Value::from(1)));
        assert_eq!(get_path(&o, "a.x"), None);
        set_path(&mut o, "a.d.e", "v".into());
        assert_eq!(get_path(&o, "a.d.e"), Some(&Value::from("v")));
    }
}
