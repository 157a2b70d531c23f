//! Windows logon/logoff agent records (corpus README section A) -> Authentication (3002).
//!
//! - `session_notify` (logon, remote-session reconnect): activity 1 Logon; `status_id` 2
//!   Failure when the agent reports a failed logon (Security 4625), else 1 Success.
//! - `session_end_event` (logoff or disconnect): activity 2 Logoff. A disconnect ends the
//!   connection-session the agent tracks (the reconnect gets a new `session_id`), so it is the
//!   session's end for correlation; `unmapped.end_trigger` keeps "disconnect" vs "logoff".
//! - `session_correction` (admin `PUT /api/sessions/{id}`): activity 99 "Session Correction"
//!   with `unmapped.session_correction`.

use sessiontrail_core::json_borrowed::{BorrowedObject, BorrowedValue};
use sessiontrail_core::{Object, Value};

use super::common::{
    put, put_opt, put_os, set_status, Activity, Class, MapContext, MapError, OcsfEvent, Reader,
    DEVICE_HOST, DST_ENDPOINT_HOST, SRC_ENDPOINT_HOST, SRC_ENDPOINT_OS, STATUS_FAILURE,
    STATUS_SUCCESS,
};
use super::{InputSystem, Mapped};

const SYSTEM: InputSystem = InputSystem::WindowsSession;

/// Security log event id of a failed logon.
const EVENT_FAILED_LOGON: i64 = 4625;

/// OCSF `logon_type_id` values that are also Windows LogonType numbers (same meaning).
const WINDOWS_LOGON_TYPES: &[(i64, &str)] = &[
    (2, "Interactive"),
    (3, "Network"),
    (4, "Batch"),
    (5, "OS Service"),
    (7, "Unlock"),
    (8, "Network Cleartext"),
    (9, "New Credentials"),
    (10, "Remote Interactive"),
    (11, "Cached Interactive"),
];

pub fn map<'a>(src: &'a BorrowedObject<'a>, cx: &'a MapContext) -> Result<Mapped<'a>, MapError> {
    let mut r = Reader::new(src);
    let event_type = r.req_str("event_type")?;
    match event_type {
        "session_notify" => notify(r, cx),
        "session_end_event" => end(r, cx),
        "session_correction" => correction(r, cx),
        other => Err(MapError::unknown_event_type("event_type", other)),
    }
}

/// Fields every record type carries; read first so a defect in them is reported the same way.
struct Common<'a> {
    event_id: &'a str,
    time_ms: i64,
    original_time: &'a str,
    session_id: &'a str,
}

fn common<'a>(r: &mut Reader<'a>) -> Result<Common<'a>, MapError> {
    let event_id = r.req_str("event_id")?;
    let session_id = r.req_str("session_id")?;
    if let Some(v) = r.peek("timestamp") {
        if !v.is_string() {
            return Err(MapError::wrong_type("timestamp", "a string", v));
        }
    }
    let (time_ms, original_time) = r.req_time("timestamp", true)?;
    Ok(Common {
        event_id,
        time_ms,
        original_time,
        session_id,
    })
}

fn base<'a>(
    cx: &'a MapContext,
    c: &Common<'a>,
    r: &mut Reader<'a>,
    activity: Activity<'a>,
) -> OcsfEvent<'a> {
    let mut e = cx.event(SYSTEM, Class::Authentication, activity, c.time_ms);
    put(&mut e, "metadata.uid", c.event_id);
    put(&mut e, "metadata.original_time", c.original_time);
    put_opt(&mut e, "metadata.log_version", r.str("schema_version"));
    put(&mut e, "session.uid", c.session_id);
    e
}

/// User, target host and the primary Windows event of a notify or end record.
fn subject_and_resource<'a>(
    cx: &'a MapContext,
    e: &mut OcsfEvent<'a>,
    r: &mut Reader<'a>,
) -> Result<(), MapError> {
    let user_id = r.req_str("user_id")?;
    let resource_id = r.req_str("resource_id")?;
    // The qualified DOMAIN\sam form is kept as the name: Windows account names are unique only
    // with their domain (or host, for local accounts).
    put(e, "user.name", user_id);
    if let Some((domain, _)) = user_id.split_once('\\') {
        if !domain.is_empty() {
            put(e, "user.domain", domain);
        }
    }
    put_opt(e, "user.uid", r.str("user_sid"));
    put_opt(e, "user.full_name", r.str("user_name"));

    let host = r.str("host_name");
    put(e, "dst_endpoint.uid", resource_id);
    if let Some(h) = host {
        cx.put_hostname(e, DST_ENDPOINT_HOST, h);
        // `device` comes with the `host` profile: the Windows host that reported the event.
        super::common::add_profile(e, "host");
        cx.put_hostname(e, DEVICE_HOST, h);
        put(e, "device.type_id", 0);
        put(e, "device.type", "Unknown");
    }
    if let Some(BorrowedValue::Array(events)) = r.peek("source_events") {
        // The primary Windows event: the Security log's if there is one (4624 / 4625 / 4634 /
        // 4647 / 4778 / 4779), else the first. The full list stays in `unmapped`.
        let primary = events
            .iter()
            .find(|s| s.get("log").and_then(BorrowedValue::as_str) == Some("Security"))
            .or_else(|| events.first());
        if let Some(p) = primary {
            if let Some(id) = p.get("event_id").and_then(BorrowedValue::as_i64) {
                put(e, "metadata.event_code", id.to_string());
            }
            if let Some(log) = p.get("log").and_then(BorrowedValue::as_str) {
                put(e, "metadata.log_name", log);
            }
        }
    }
    Ok(())
}

fn notify<'a>(mut r: Reader<'a>, cx: &'a MapContext) -> Result<Mapped<'a>, MapError> {
    let c = common(&mut r)?;
    let trigger = r.req_str("event_trigger")?;
    let channel = r.req_str("channel_type")?;
    let mut e = base(cx, &c, &mut r, Activity::Id(1));
    subject_and_resource(cx, &mut e, &mut r)?;

    let is_remote = channel.eq_ignore_ascii_case("RDP");
    let reported_type = security_logon_type(&r);
    let (logon_type_id, logon_type) = match reported_type {
        Some(t) => t,
        None if is_remote => (10, "Remote Interactive"),
        None if channel.eq_ignore_ascii_case("Console") => (2, "Interactive"),
        None => (99, channel),
    };
    put(&mut e, "logon_type_id", logon_type_id);
    put(&mut e, "logon_type", logon_type);
    put(&mut e, "is_remote", is_remote);
    put(&mut e, "session.is_remote", is_remote);
    put(&mut e, "session.created_time", c.time_ms);
    put_opt(&mut e, "session.uid_alt", r.str("logon_id"));
    // `logon` is a new Windows logon; `remote-session` reconnects to an existing one.
    match trigger {
        "logon" => put(&mut e, "is_new_logon", true),
        "remote-session" => put(&mut e, "is_new_logon", false),
        _ => {}
    }
    let failed = source_event_ids(&r).any(|id| id == EVENT_FAILED_LOGON);
    set_status(
        &mut e,
        if failed {
            STATUS_FAILURE
        } else {
            STATUS_SUCCESS
        },
    );

    put_opt(
        &mut e,
        "src_endpoint.ip",
        r.str("client.ip").filter(|ip| super::common::is_ip(ip)),
    );
    if let Some(h) = r.str("client.host") {
        cx.put_hostname(&mut e, SRC_ENDPOINT_HOST, h);
    }
    if let Some(os) = r.str("client_env.os") {
        let version = r.str("client_env.os_version");
        put_os(&mut e, SRC_ENDPOINT_OS, os, version);
    }
    let message = match (trigger, failed) {
        (_, true) => "Logon failed",
        ("remote-session", _) => "Remote session reconnected",
        _ if is_remote => "Remote logon",
        _ => "Logon",
    };
    put(&mut e, "message", message);
    let mut extra = Object::new();
    extra.insert("channel_type".into(), channel.into());
    extra.insert("event_trigger".into(), trigger.into());
    Ok(Mapped::one(e, extra, r.taken()))
}

fn end<'a>(mut r: Reader<'a>, cx: &'a MapContext) -> Result<Mapped<'a>, MapError> {
    let c = common(&mut r)?;
    let trigger = r.req_str("end_trigger")?;
    let reason = r.req_str("reason")?;
    let mut e = base(cx, &c, &mut r, Activity::Id(2));
    subject_and_resource(cx, &mut e, &mut r)?;
    put_opt(&mut e, "session.uid_alt", r.str("logon_id"));
    set_status(&mut e, STATUS_SUCCESS);
    let message = if trigger == "disconnect" {
        format!("Remote session disconnected (reason: {reason})")
    } else {
        format!("Logoff (reason: {reason})")
    };
    put(&mut e, "message", message);

    let mut extra = Object::new();
    extra.insert("end_trigger".into(), trigger.into());
    extra.insert("end_reason".into(), reason.into());
    if let Some(d) = r.number("duration_s") {
        extra.insert("reported_duration_s".into(), d.to_value());
    }
    Ok(Mapped::one(e, extra, r.taken()))
}

fn correction<'a>(mut r: Reader<'a>, cx: &'a MapContext) -> Result<Mapped<'a>, MapError> {
    let c = common(&mut r)?;
    // The corpus format (`updater_id`, `reason_comment`, `status_after`,
    // `corrected_end_timestamp`) with the API's short names accepted as well.
    let updated_by = match r.str("updater_id") {
        Some(u) => u,
        None => r
            .req_str("updated_by")
            .map_err(|_| MapError::missing("updater_id"))?,
    };
    let reason = r.str("reason_comment").or_else(|| r.str("reason"));
    let status_before = r.str("status_before");
    let status_after = r.str("status_after").or_else(|| r.str("status"));
    let corrected_end = match r.peek("corrected_end_timestamp") {
        Some(_) => Some(r.req_time("corrected_end_timestamp", true)?.0),
        None if r.peek("ended_at").is_some() => Some(r.req_time("ended_at", true)?.0),
        None => None,
    };
    let corrected_reason = r.str("corrected_reason");

    let mut e = base(cx, &c, &mut r, Activity::Other("Session Correction"));
    put(&mut e, "metadata.event_code", "session_correction");
    // Authentication requires `user`; a correction names only the administrator who made it.
    put(&mut e, "user.name", updated_by);
    put(&mut e, "actor.user.name", updated_by);
    // ... and a `service` or `dst_endpoint`: the correction was made through sessiontrail's
    // session API.
    put(&mut e, "service.name", "sessiontrail session API");
    put_opt(&mut e, "message", reason);
    put_opt(&mut e, "dst_endpoint.uid", r.str("resource_id"));
    if let Some(h) = r.str("host_name") {
        cx.put_hostname(&mut e, DST_ENDPOINT_HOST, h);
    }

    let mut sc = Object::new();
    sc.insert("updated_by".into(), updated_by.into());
    if let Some(v) = status_before {
        sc.insert("status_before".into(), v.into());
    }
    if let Some(v) = status_after {
        sc.insert("status_after".into(), v.into());
    }
    if let Some(v) = reason {
        sc.insert("reason".into(), v.into());
    }
    if let Some(v) = corrected_end {
        sc.insert("corrected_end_time".into(), v.into());
    }
    if let Some(v) = corrected_reason {
        sc.insert("corrected_reason".into(), v.into());
    }
    let mut extra = Object::new();
    extra.insert("session_correction".into(), Value::Object(sc));
    Ok(Mapped::one(e, extra, r.taken()))
}

/// The Security 4624 LogonType the agent reported, when it is one OCSF knows.
fn security_logon_type(r: &Reader<'_>) -> Option<(i64, &'static str)> {
    let Some(BorrowedValue::Array(events)) = r.peek("source_events") else {
        return None;
    };
    let t = events
        .iter()
        .find_map(|s| s.get("logon_type").and_then(BorrowedValue::as_i64))?;
    WINDOWS_LOGON_TYPES.iter().find(|(id, _)| *id == t).copied()
}

fn source_event_ids<'a>(r: &Reader<'a>) -> impl Iterator<Item = i64> + 'a {
    let events: &'a [BorrowedValue<'a>] = match r.peek("source_events") {
        Some(BorrowedValue::Array(a)) => a,
        _ => &[],
    };
    events
        .iter()
        .filter_map(|s| s.get("event_id").and_then(BorrowedValue::as_i64))
}
