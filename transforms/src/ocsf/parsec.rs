//! Parsec for Teams audit events (corpus README section D).
//!
//! Connection events (they carry `data.attempt_id`, the correlation key) -> Network Activity
//! (4001): `p2p_client_complete` is the connection's start, 1 Open (the corpus' correlation
//! rule starts a connection there), with `status_id` 2 Failure when `exit_code` is non-zero;
//! `client_disconnect` (client or host perspective) is 2 Close; the signalling steps
//! (`conn_client_offer`, `conn_signal_offer_relayed`) and the host's `p2p_host_complete` are
//! 99 Other with the event name, so only one start per attempt is seen. The perspective is
//! the reporting user: `user_id` = `data.client_user_id` is the client's.
//!
//! Other events (`team_create`, member and computer administration) -> API Activity (6003)
//! with the event name as `api.operation` and the activity its verb implies.

use sessiontrail_core::json_borrowed::{BorrowedObject, BorrowedValue};
use sessiontrail_core::Object;

use super::common::{
    add_profile, is_ip, put, put_opt, put_os, put_user_name, set_status, Activity, Class,
    MapContext, MapError, OcsfEvent, Reader, ACTOR_USER, DST_ENDPOINT_HOST, DST_ENDPOINT_OS,
    SRC_ENDPOINT_OS, STATUS_FAILURE, STATUS_SUCCESS,
};
use super::{InputSystem, Mapped};

const SYSTEM: InputSystem = InputSystem::Parsec;

pub fn map<'a>(src: &'a BorrowedObject<'a>, cx: &'a MapContext) -> Result<Mapped<'a>, MapError> {
    let mut r = Reader::new(src);
    let id = r.req_str("id")?;
    let name = r.req_str("name")?;
    let (time_ms, original_time) = r.req_time("timestamp", false)?;
    let user_id = match r.peek("user_id") {
        None => None,
        Some(v) if v.as_i64().is_some() || v.as_u64().is_some() => {
            r.mark("user_id");
            v.as_i64()
                .map(|n| n.to_string())
                .or_else(|| v.as_u64().map(|n| n.to_string()))
        }
        Some(other) => return Err(MapError::wrong_type("user_id", "an integer", other)),
    };
    match src.get("data") {
        None => return Err(MapError::missing("data")),
        Some(BorrowedValue::Object(_)) => {}
        Some(other) => return Err(MapError::wrong_type("data", "an object", other)),
    }
    let email = r.str("user_email");
    let attempt = r.str("data.attempt_id");

    let mut mapped = match attempt {
        Some(attempt) => connection(
            &mut r,
            cx,
            name,
            attempt,
            time_ms,
            user_id.as_deref(),
            email,
        )?,
        None => admin(&mut r, cx, name, time_ms, user_id.as_deref(), email),
    };
    put(&mut mapped, "metadata.uid", id);
    put(&mut mapped, "metadata.event_code", name);
    put(&mut mapped, "metadata.original_time", original_time);
    put_opt(&mut mapped, "metadata.tenant_uid", r.str("team_id"));
    let mut extra = Object::new();
    if name == "client_disconnect" && is_client_perspective(&r, user_id.as_deref()) {
        if let Some(d) = r.number("data.duration") {
            if let Some(secs) = d.as_f64() {
                put(&mut mapped, "duration", (secs * 1000.0).round() as i64);
            }
            extra.insert("reported_duration_s".into(), d.to_value());
        }
    }
    Ok(Mapped::one(mapped, extra, r.taken()))
}

/// The client reported it (a connection to one's own computer is both sides at once).
fn is_client_perspective(r: &Reader<'_>, user_id: Option<&str>) -> bool {
    // Compared as JSON text: the id is a number in both fields.
    let client = r.peek("data.client_user_id").map(BorrowedValue::raw);
    match (user_id, client) {
        (Some(u), Some(c)) => u == c,
        // Unknown reporter: the API's client_disconnect is the client's unless it says not.
        _ => true,
    }
}

fn connection<'a>(
    r: &mut Reader<'a>,
    cx: &'a MapContext,
    name: &'a str,
    attempt: &'a str,
    time_ms: i64,
    user_id: Option<&str>,
    email: Option<&'a str>,
) -> Result<OcsfEvent<'a>, MapError> {
    let exit_code = r.i64("data.exit_code");
    let failed = exit_code.is_some_and(|c| c != 0);
    let activity = match name {
        "p2p_client_complete" => Activity::Id(1),
        "client_disconnect" => Activity::Id(2),
        "conn_client_offer" => Activity::Other("Connection Offer"),
        "conn_signal_offer_relayed" => Activity::Other("Offer Relayed"),
        "p2p_host_complete" => Activity::Other("Host Connection Complete"),
        other => Activity::Other(other),
    };
    let mut e = cx.event(SYSTEM, Class::NetworkActivity, activity, time_ms);
    // `actor` on Network Activity comes with the `host` profile.
    add_profile(&mut e, "host");
    put(&mut e, "app_name", "Parsec");
    put(&mut e, "actor.session.uid", attempt);
    set_status(
        &mut e,
        if failed {
            STATUS_FAILURE
        } else {
            STATUS_SUCCESS
        },
    );
    if let Some(c) = exit_code {
        if failed {
            put(&mut e, "status_code", c.to_string());
        }
    }

    let client_side = is_client_perspective(r, user_id);
    let ip = r.str("data.ip").filter(|ip| is_ip(ip));
    let os = r.str("data.os");
    let os_version = r.str("data.os_version");
    let host_name = r.str("data.host_computer_name");
    let host_peer = r.str("data.host_peer_id");
    let client_peer = r.str("data.client_peer_id");

    // The client user is the actor; the event's e-mail is the reporter's.
    if client_side {
        if let Some(m) = email {
            put_user_name(&mut e, ACTOR_USER, m);
        }
        if let Some(u) = user_id {
            put(&mut e, ACTOR_USER.uid, u.to_string());
        }
    } else if let Some(c) = r
        .peek("data.client_user_id")
        .and_then(BorrowedValue::as_i64)
    {
        put(&mut e, ACTOR_USER.uid, c.to_string());
    }
    if r.peek("data.client_user_id").is_some() {
        r.mark("data.client_user_id");
    }

    // Client -> host. OCSF 1.3.0 requires `dst_endpoint`: the host computer, else its peer id,
    // else the attempt.
    put_opt(&mut e, "src_endpoint.uid", client_peer);
    if let Some(h) = host_name {
        cx.put_hostname(&mut e, DST_ENDPOINT_HOST, h);
    }
    put(&mut e, "dst_endpoint.uid", host_peer.unwrap_or(attempt));
    if client_side {
        put_opt(&mut e, "src_endpoint.ip", ip);
        if let Some(o) = os {
            put_os(&mut e, SRC_ENDPOINT_OS, o, os_version);
        }
    } else {
        put_opt(&mut e, "dst_endpoint.ip", ip);
        if let Some(o) = os {
            put_os(&mut e, DST_ENDPOINT_OS, o, os_version);
        }
    }
    let message = match (name, failed) {
        ("p2p_client_complete", true) => "Connection attempt failed".to_string(),
        ("p2p_client_complete", false) => "Connection established".to_string(),
        ("client_disconnect", _) => "Connection closed".to_string(),
        (other, _) => format!("Parsec {other}"),
    };
    put(&mut e, "message", message);
    Ok(e)
}

fn admin<'a>(
    r: &mut Reader<'a>,
    cx: &'a MapContext,
    name: &'a str,
    time_ms: i64,
    user_id: Option<&str>,
    email: Option<&'a str>,
) -> OcsfEvent<'a> {
    let verb = name.rsplit('_').next().unwrap_or(name);
    let activity = match verb {
        "create" | "add" | "invite" => Activity::Id(1),
        "update" | "change" | "edit" | "rename" => Activity::Id(3),
        "delete" | "remove" | "kick" => Activity::Id(4),
        _ => Activity::Other(name),
    };
    let mut e = cx.event(SYSTEM, Class::ApiActivity, activity, time_ms);
    put(&mut e, "api.operation", name);
    put(&mut e, "api.service.name", "Parsec Teams API");
    if let Some(m) = email {
        put_user_name(&mut e, ACTOR_USER, m);
    }
    match user_id {
        Some(u) => put(&mut e, ACTOR_USER.uid, u.to_string()),
        None if email.is_none() => put(&mut e, ACTOR_USER.name, "unknown"),
        None => {}
    }
    // API Activity requires `src_endpoint`; the audit log names the caller's address only
    // for connection events.
    match r.str("data.ip").filter(|ip| is_ip(ip)) {
        Some(ip) => put(&mut e, "src_endpoint.ip", ip),
        None => put(&mut e, "src_endpoint.name", "unknown"),
    }
    set_status(&mut e, STATUS_SUCCESS);
    put(&mut e, "message", format!("Parsec {name}"));
    e
}
