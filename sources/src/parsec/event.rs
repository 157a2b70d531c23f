//! Checks one element of a Parsec `data` array before it becomes an event. Each defect has
//! the corpus dead-letter reason, so one bad event never costs the rest of its page.

use sessiontrail_core::json::{kind_of, object_depth, parse_rfc3339, MAX_NESTING_DEPTH};
use sessiontrail_core::{Object, Value};

/// Why an element of `data` was not accepted.
#[derive(Debug, PartialEq)]
pub struct EventDefect {
    pub reason: &'static str,
    pub message: String,
}

fn defect(reason: &'static str, message: impl Into<String>) -> EventDefect {
    EventDefect {
        reason,
        message: message.into(),
    }
}

/// Validates an element (given with its re-serialised size) and returns the event object.
///
/// Required: `id`, `name`, `timestamp` (strings; the timestamp RFC 3339). Optional but typed
/// when present: `user_id` (integer), `data` (object), `team_id` / `user_email` (string or
/// null). Unknown fields are kept.
pub fn validate(
    value: Value,
    serialized_len: usize,
    max_bytes: usize,
) -> Result<Object, EventDefect> {
    if serialized_len > max_bytes {
        return Err(defect(
            "record_too_large",
            format!("event is {serialized_len} bytes re-serialised, the limit is {max_bytes}"),
        ));
    }
    let obj = match value {
        Value::Object(o) => o,
        other => {
            return Err(defect(
                "not_an_object",
                format!("expected an event object, found {}", kind_of(&other)),
            ))
        }
    };
    if object_depth(&obj) > MAX_NESTING_DEPTH {
        return Err(defect(
            "nesting_too_deep",
            format!("event nests deeper than {MAX_NESTING_DEPTH} levels"),
        ));
    }
    for field in ["id", "name", "timestamp"] {
        match obj.get(field) {
            None | Some(Value::Null) => {
                return Err(defect("missing_field", format!("event has no \"{field}\"")))
            }
            Some(Value::String(s)) if s.is_empty() => {
                return Err(defect(
                    "missing_field",
                    format!("event has an empty \"{field}\""),
                ))
            }
            Some(Value::String(_)) => {}
            Some(other) => {
                return Err(defect(
                    "wrong_type",
                    format!("\"{field}\" must be a string, found {}", kind_of(other)),
                ))
            }
        }
    }
    if let Some(ts) = obj.get("timestamp").and_then(Value::as_str) {
        if parse_rfc3339(ts).is_none() {
            return Err(defect(
                "invalid_timestamp",
                format!("\"timestamp\" {ts:?} is not an RFC 3339 time"),
            ));
        }
    }
    match obj.get("user_id") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {}
        Some(other) => {
            return Err(defect(
                "wrong_type",
                format!("\"user_id\" must be an integer, found {}", kind_of(other)),
            ))
        }
    }
    match obj.get("data") {
        None | Some(Value::Object(_)) => {}
        Some(other) => {
            return Err(defect(
                "wrong_type",
                format!("\"data\" must be an object, found {}", kind_of(other)),
            ))
        }
    }
    for field in ["team_id", "user_email"] {
        match obj.get(field) {
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(other) => {
                return Err(defect(
                    "wrong_type",
                    format!("\"{field}\" must be a string, found {}", kind_of(other)),
                ))
            }
        }
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value) -> Result<Object, EventDefect> {
        let len = v.to_string().len();
        validate(v, len, 1 << 20)
    }

    fn good() -> Value {
        json!({"id": "2u8ir", "name": "conn_client_offer", "timestamp": "2025-03-10T20:00:00.333Z",
               "user_id": 7340025, "team_id": "t", "user_email": "a@example.com", "data": {"attempt_id": "x"}})
    }

    #[test]
    fn a_complete_event_is_accepted_with_unknown_fields() {
        let mut v = good();
        v["extra"] = json!(1);
        assert_eq!(check(v).unwrap()["extra"], 1);
    }

    #[test]
    fn each_defect_has_its_reason() {
        let with = |k: &str, val: Value| {
            let mut v = good();
            v[k] = val;
            check(v).unwrap_err().reason
        };
        assert_eq!(with("user_id", json!("7340100")), "wrong_type");
        assert_eq!(with("data", Value::Null), "wrong_type");
        assert_eq!(
            with("timestamp", json!("2025-03-10T25:00:00Z")),
            "invalid_timestamp"
        );
        assert_eq!(with("name", Value::Null), "missing_field");
        let mut v = good();
        v.as_object_mut().unwrap().remove("name");
        assert_eq!(check(v).unwrap_err().reason, "missing_field");
        assert_eq!(
            check(json!("not an object")).unwrap_err().reason,
            "not_an_object"
        );
        assert_eq!(
            validate(good(), 2 << 20, 1 << 20).unwrap_err().reason,
            "record_too_large"
        );
    }
}
