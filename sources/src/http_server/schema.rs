//! The agents' event schema (docs/agent-events.md, after the wire format in
//! `shared/corpus/README.md` section A): required fields, their JSON types, allowed values,
//! and the two timestamp forms. Unknown extra fields are accepted and kept (corpus rule 4).
//!
//! Each failure carries one of the corpus' dead-letter reasons: `missing_field`,
//! `wrong_type` (also for a value outside a documented set), `invalid_timestamp`,
//! `unknown_event_type`, `path_body_mismatch`.

use chrono::{DateTime, TimeZone, Utc};

use sessiontrail_core::json::{kind_of, parse_rfc3339};
use sessiontrail_core::{Object, Value};

pub const SESSION_NOTIFY: &str = "session_notify";
pub const SESSION_END_EVENT: &str = "session_end_event";
pub const SESSION_CORRECTION: &str = "session_correction";

#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub reason: &'static str,
    pub message: String,
}

fn reject(reason: &'static str, message: impl Into<String>) -> Rejection {
    Rejection {
        reason,
        message: message.into(),
    }
}

/// What a field must hold.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Num,
    Obj,
    Arr,
    /// A string or null (`client.ip` is null for console sessions).
    StrOrNull,
    Timestamp,
    OneOf(&'static [&'static str]),
}

/// Fields every agent event carries (session_notify and session_end_event).
const COMMON_REQUIRED: &[(&str, Kind)] = &[
    ("schema_version", Kind::Str),
    ("event_id", Kind::Str),
    ("timestamp", Kind::Timestamp),
    ("session_id", Kind::Str),
    ("resource_id", Kind::Str),
    ("user_id", Kind::Str),
];

const NOTIFY_REQUIRED: &[(&str, Kind)] = &[
    ("event_trigger", Kind::OneOf(&["logon", "remote-session"])),
    // `SSH` is what the Linux PAM hook (agents/linux) sends; Windows sends RDP or Console.
    ("channel_type", Kind::OneOf(&["RDP", "Console", "SSH"])),
];

const END_REQUIRED: &[(&str, Kind)] = &[
    ("end_trigger", Kind::OneOf(&["logoff", "disconnect"])),
    ("reason", Kind::OneOf(&["user", "timeout", "failure"])),
];

/// Optional fields are checked only when present (null counts as absent).
const OPTIONAL: &[(&str, Kind)] = &[
    ("host_name", Kind::Str),
    ("windows_session_id", Kind::Int),
    ("logon_id", Kind::Str),
    ("user_sid", Kind::Str),
    ("user_name", Kind::Str),
    ("client", Kind::Obj),
    ("client.host", Kind::StrOrNull),
    ("client.ip", Kind::StrOrNull),
    ("client_env", Kind::Obj),
    ("processes", Kind::Arr),
    ("source_events", Kind::Arr),
    ("duration_s", Kind::Num),
    ("resource_usage", Kind::Obj),
];

const CORRECTION_REQUIRED: &[(&str, Kind)] = &[
    ("event_id", Kind::Str),
    ("timestamp", Kind::Timestamp),
    ("session_id", Kind::Str),
    ("updater_id", Kind::Str),
    ("status_after", Kind::OneOf(&["open", "closed"])),
];

const CORRECTION_OPTIONAL: &[(&str, Kind)] = &[
    ("schema_version", Kind::Str),
    ("reason_comment", Kind::Str),
    ("status_before", Kind::OneOf(&["open", "closed"])),
    ("corrected_end_timestamp", Kind::Timestamp),
    (
        "corrected_reason",
        Kind::OneOf(&["user", "timeout", "failure"]),
    ),
];

/// Parses an agent timestamp: RFC 3339 with any offset, or the legacy Windows PowerShell 5.1
/// `ConvertTo-Json` form `/Date(<epoch ms>)/` (written `"\/Date(...)\/"` in JSON), which is
/// UTC; a `+hhmm` suffix there only says which zone the sender was in.
pub fn parse_agent_timestamp(s: &str) -> Option<DateTime<Utc>> {
    if let Some(inner) = s.strip_prefix("/Date(").and_then(|r| r.strip_suffix(")/")) {
        let digits_end = inner
            .char_indices()
            .skip(1)
            .find(|(_, c)| *c == '+' || *c == '-')
            .map_or(inner.len(), |(i, _)| i);
        let (ms, zone) = inner.split_at(digits_end);
        let zone_ok =
            zone.is_empty() || (zone.len() == 5 && zone[1..].bytes().all(|b| b.is_ascii_digit()));
        if !zone_ok {
            return None;
        }
        let ms: i64 = ms.parse().ok()?;
        return Utc.timestamp_millis_opt(ms).single();
    }
    parse_rfc3339(s)
}

fn lookup<'a>(obj: &'a Object, path: &str) -> Option<&'a Value> {
    sessiontrail_core::json::get_path(obj, path)
}

fn check_field(obj: &Object, path: &str, kind: Kind, required: bool) -> Result<(), Rejection> {
    let value = match lookup(obj, path) {
        None if required => {
            return Err(reject(
                "missing_field",
                format!("required field \"{path}\" is missing"),
            ))
        }
        Some(Value::Null) if required && !matches!(kind, Kind::StrOrNull) => {
            return Err(reject(
                "missing_field",
                format!("required field \"{path}\" is null"),
            ))
        }
        None | Some(Value::Null) => return Ok(()),
        Some(v) => v,
    };
    let wrong = |expected: &str| {
        Err(reject(
            "wrong_type",
            format!(
                "field \"{path}\" must be {expected}, found {}",
                kind_of(value)
            ),
        ))
    };
    match kind {
        Kind::Str | Kind::StrOrNull if !value.is_string() => wrong("a string"),
        Kind::Int if !(value.is_i64() || value.is_u64()) => wrong("an integer"),
        Kind::Num if !value.is_number() => wrong("a number"),
        Kind::Obj if !value.is_object() => wrong("an object"),
        Kind::Arr if !value.is_array() => wrong("an array"),
        Kind::Timestamp => match value.as_str() {
            None => wrong("an RFC 3339 timestamp string"),
            Some(s) if parse_agent_timestamp(s).is_none() => Err(reject(
                "invalid_timestamp",
                format!(
                    "field \"{path}\" is not an RFC 3339 timestamp (or \"\\/Date(<ms>)\\/\"): {:?}",
                    truncate(s)
                ),
            )),
            Some(_) => Ok(()),
        },
        Kind::OneOf(allowed) => match value.as_str() {
            Some(s) if allowed.contains(&s) => Ok(()),
            Some(s) => Err(reject(
                "wrong_type",
                format!(
                    "field \"{path}\" must be one of {}, found {:?}",
                    allowed.join(", "),
                    truncate(s)
                ),
            )),
            None => wrong("a string"),
        },
        _ => Ok(()),
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

fn check_all(obj: &Object, fields: &[(&str, Kind)], required: bool) -> Result<(), Rejection> {
    fields
        .iter()
        .try_for_each(|(path, kind)| check_field(obj, path, *kind, required))
}

/// Checks a `session_notify` / `session_end_event`. `route_type` is the type the route
/// implies (`/api/session_notify`); it is filled in when the body has no `event_type`.
pub fn check_agent_event(
    obj: &mut Object,
    route_type: Option<&'static str>,
) -> Result<(), Rejection> {
    let event_type = match (obj.get("event_type"), route_type) {
        (None | Some(Value::Null), Some(t)) => {
            obj.insert("event_type".into(), t.into());
            t.to_string()
        }
        (None | Some(Value::Null), None) => {
            return Err(reject(
                "missing_field",
                "required field \"event_type\" is missing",
            ))
        }
        (Some(Value::String(s)), _) => s.clone(),
        (Some(v), _) => {
            return Err(reject(
                "wrong_type",
                format!(
                    "field \"event_type\" must be a string, found {}",
                    kind_of(v)
                ),
            ))
        }
    };
    if let Some(t) = route_type {
        if event_type != t {
            return Err(reject(
                "path_body_mismatch",
                format!(
                    "event_type {:?} was sent to the {t} route",
                    truncate(&event_type)
                ),
            ));
        }
    }
    let specific =
        match event_type.as_str() {
            SESSION_NOTIFY => NOTIFY_REQUIRED,
            SESSION_END_EVENT => END_REQUIRED,
            SESSION_CORRECTION => return Err(reject(
                "unknown_event_type",
                "session_correction is accepted only on PUT /api/sessions/{id} with an admin token",
            )),
            other => {
                return Err(reject(
                    "unknown_event_type",
                    format!(
                        "event_type {:?} is not one of {SESSION_NOTIFY}, {SESSION_END_EVENT}",
                        truncate(other)
                    ),
                ))
            }
        };
    check_all(obj, COMMON_REQUIRED, true)?;
    check_all(obj, specific, true)?;
    check_all(obj, OPTIONAL, false)
}

/// The short option names an admin may use (`updated_by`...) and their corpus names.
const CORRECTION_ALIASES: &[(&str, &str)] = &[
    ("updated_by", "updater_id"),
    ("reason", "reason_comment"),
    ("status", "status_after"),
    ("ended_at", "corrected_end_timestamp"),
];

/// Turns a `PUT /api/sessions/{id}` body into a corpus-format `session_correction`:
/// short names renamed, `event_type` / `session_id` filled in, a server-made `event_id`
/// and `timestamp` when the admin sent none. A body `session_id` that differs from the path
/// is rejected (`path_body_mismatch`): applying it to either session could be wrong.
pub fn normalize_correction(obj: &mut Object, path_id: &str) -> Result<(), Rejection> {
    for (short, long) in CORRECTION_ALIASES {
        if let Some(v) = obj.remove(*short) {
            if obj.contains_key(*long) {
                return Err(reject(
                    "wrong_type",
                    format!("both \"{short}\" and \"{long}\" are set; send only one of them"),
                ));
            }
            obj.insert((*long).into(), v);
        }
    }
    match obj.get("event_type") {
        None | Some(Value::Null) => {
            obj.insert("event_type".into(), SESSION_CORRECTION.into());
        }
        Some(Value::String(s)) if s == SESSION_CORRECTION => {}
        Some(other) => {
            return Err(reject(
                "unknown_event_type",
                format!(
                    "a correction must have event_type \"{SESSION_CORRECTION}\", found {other}"
                ),
            ))
        }
    }
    match obj.get("session_id") {
        None | Some(Value::Null) => {
            obj.insert("session_id".into(), path_id.into());
        }
        Some(Value::String(s)) if s == path_id => {}
        Some(Value::String(_)) => {
            return Err(reject(
                "path_body_mismatch",
                "the body's session_id differs from the session id in the URL path",
            ))
        }
        Some(v) => {
            return Err(reject(
                "wrong_type",
                format!(
                    "field \"session_id\" must be a string, found {}",
                    kind_of(v)
                ),
            ))
        }
    }
    if !obj.contains_key("event_id") {
        obj.insert("event_id".into(), uuid::Uuid::new_v4().to_string().into());
    }
    if !obj.contains_key("timestamp") {
        let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        obj.insert("timestamp".into(), now.into());
    }
    check_all(obj, CORRECTION_REQUIRED, true)?;
    check_all(obj, CORRECTION_OPTIONAL, false)
}

/// `POST /events` takes any object; an EventBridge envelope (`detail-type` + `source`) is
/// kept whole but must carry its `detail` object.
pub fn check_generic(obj: &Object) -> Result<(), Rejection> {
    if obj.contains_key("detail-type") && obj.contains_key("source") {
        check_field(obj, "detail-type", Kind::Str, true)?;
        check_field(obj, "source", Kind::Str, true)?;
        check_field(obj, "detail", Kind::Obj, true)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(s: &str) -> Object {
        serde_json::from_str(s).unwrap()
    }

    fn notify() -> Object {
        obj(
            r#"{"schema_version":"1.2","event_type":"session_notify","event_id":"e1",
            "timestamp":"2025-03-10T06:00:00.0709145+01:00","event_trigger":"logon",
            "session_id":"s1","resource_id":"r1","user_id":"CORP\\a","channel_type":"RDP",
            "client":{"host":"H","ip":null}}"#,
        )
    }

    fn reason(mut o: Object, route: Option<&'static str>) -> &'static str {
        check_agent_event(&mut o, route).unwrap_err().reason
    }

    #[test]
    fn a_complete_notify_passes() {
        assert!(check_agent_event(&mut notify(), None).is_ok());
    }

    #[test]
    fn legacy_date_form_is_utc_epoch_ms() {
        let t = parse_agent_timestamp("/Date(1741612800121)/").unwrap();
        assert_eq!(t.timestamp_millis(), 1741612800121);
        assert_eq!(
            parse_agent_timestamp("/Date(1741612800121+0100)/").unwrap(),
            t
        );
        assert!(parse_agent_timestamp("/Date(abc)/").is_none());
        assert!(parse_agent_timestamp("2025-02-30T10:00:00Z").is_none());
    }

    #[test]
    fn each_defect_has_its_reason() {
        let mut o = notify();
        o.remove("session_id");
        assert_eq!(reason(o, None), "missing_field");
        let mut o = notify();
        o.insert("timestamp".into(), 1741583400.into());
        assert_eq!(reason(o, None), "wrong_type");
        let mut o = notify();
        o.insert("timestamp".into(), "2025-02-30T10:00:00+01:00".into());
        assert_eq!(reason(o, None), "invalid_timestamp");
        let mut o = notify();
        o.insert("event_type".into(), "session_heartbeat".into());
        assert_eq!(reason(o, None), "unknown_event_type");
        let mut o = notify();
        o.insert("channel_type".into(), "Telnet".into());
        assert_eq!(reason(o, None), "wrong_type");
        let mut o = notify();
        o.insert("client".into(), obj(r#"{"ip":5}"#).into());
        assert_eq!(reason(o, None), "wrong_type");
        assert_eq!(
            reason(notify(), Some(SESSION_END_EVENT)),
            "path_body_mismatch"
        );
    }

    #[test]
    fn route_fills_a_missing_event_type() {
        let mut o = notify();
        o.remove("event_type");
        check_agent_event(&mut o, Some(SESSION_NOTIFY)).unwrap();
        assert_eq!(o["event_type"], SESSION_NOTIFY);
    }

    #[test]
    fn corrections_accept_short_names_and_reject_a_different_session() {
        let mut o = obj(
            r#"{"updated_by":"CORP\\adm","reason":"stuck","status":"closed","ended_at":"2025-03-10T12:00:00Z"}"#,
        );
        normalize_correction(&mut o, "s9").unwrap();
        assert_eq!(o["updater_id"], "CORP\\adm");
        assert_eq!(o["reason_comment"], "stuck");
        assert_eq!(o["status_after"], "closed");
        assert_eq!(o["corrected_end_timestamp"], "2025-03-10T12:00:00Z");
        assert_eq!(o["session_id"], "s9");
        assert_eq!(o["event_type"], SESSION_CORRECTION);
        assert!(o["event_id"].is_string() && o["timestamp"].is_string());
        let mut o = obj(r#"{"session_id":"other","updater_id":"a","status_after":"closed"}"#);
        assert_eq!(
            normalize_correction(&mut o, "s9").unwrap_err().reason,
            "path_body_mismatch"
        );
    }

    #[test]
    fn eventbridge_envelopes_need_a_detail_object() {
        assert!(check_generic(&obj(
            r#"{"detail-type":"x","source":"aws.ssm","detail":{}}"#
        ))
        .is_ok());
        assert_eq!(
            check_generic(&obj(
                r#"{"detail-type":"x","source":"aws.ssm","detail":"s"}"#
            ))
            .unwrap_err()
            .reason,
            "wrong_type"
        );
        assert!(check_generic(&obj(r#"{"anything":1}"#)).is_ok());
    }
}
