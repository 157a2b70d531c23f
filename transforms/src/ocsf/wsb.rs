//! Amazon WorkSpaces Secure Browser session logger events (corpus README section C).
//!
//! The logger writes an OCSF-like shape (`activity_id` 99, category "WorkSpacesSecureBrowser")
//! that is not valid against the official classes; each event is mapped by its
//! `activity_name` (matched leniently: case, `UrlLoad` = `UrlVisit`, `SessionDisconnection` =
//! `SessionDisconnect`):
//!
//! | events | class | activity |
//! |---|---|---|
//! | SessionStart / SessionEnd | Authentication 3002 | 1 Logon / 2 Logoff |
//! | SessionConnect / SessionDisconnect | Authentication 3002 | 99 (source name) |
//! | UrlVisit | Web Resources Activity 6001 | 2 Read |
//! | TabOpen, TabClose, WebsiteInteract, ContentTransferFromLocalToRemoteClipboard | 6001 | 99 |
//! | ContentCopyFromWebsite / ContentPasteToWebsite | 6001 | 7 Export / 6 Import |
//! | UrlBlockByContentFilter | Web Resource Access Activity 6004 | 2 Access Deny |
//! | file transfers into the browser / out of it | File Hosting Activity 6006 | 1 Upload / 2 Download |
//! | PrintJobSubmit | 6006 | 99 |
//! | anything else | Base Event 0 | 99 (source name) |
//!
//! The logger's own OCSF-like members (`activity_id`, `category_*`, `metadata`,
//! `observables`) are kept under `unmapped`.

use sessiontrail_core::json_borrowed::BorrowedObject;
use sessiontrail_core::{Object, Value};

use super::common::{
    add_profile, epoch_ms, put, put_opt, put_user_name, set_status, Activity, Class, MapContext,
    MapError, OcsfEvent, Reader, ACTOR_USER, STATUS_FAILURE, STATUS_SUCCESS, USER,
};
use super::{InputSystem, Mapped};

const SYSTEM: InputSystem = InputSystem::Wsb;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Session(Activity<'static>),
    Web(Activity<'static>),
    Blocked,
    File(Activity<'static>),
    Unknown,
}

fn kind_of(name: &str) -> Kind {
    let n = name.to_ascii_lowercase();
    match n.as_str() {
        "sessionstart" => Kind::Session(Activity::Id(1)),
        "sessionend" => Kind::Session(Activity::Id(2)),
        "sessionconnect" => Kind::Session(Activity::Other("SessionConnect")),
        "sessiondisconnect" | "sessiondisconnection" => {
            Kind::Session(Activity::Other("SessionDisconnect"))
        }
        "urlvisit" | "urlload" => Kind::Web(Activity::Id(2)),
        "tabopen" => Kind::Web(Activity::Other("TabOpen")),
        "tabclose" => Kind::Web(Activity::Other("TabClose")),
        "websiteinteract" => Kind::Web(Activity::Other("WebsiteInteract")),
        "contentcopyfromwebsite" => Kind::Web(Activity::Id(7)),
        "contentpastetowebsite" => Kind::Web(Activity::Id(6)),
        "contenttransferfromlocaltoremoteclipboard" => {
            Kind::Web(Activity::Other("ContentTransferFromLocalToRemoteClipboard"))
        }
        "urlblockbycontentfilter" => Kind::Blocked,
        // Into the secure browser (towards the website): upload.
        "fileuploadfromremotedisktosecurebrowser" | "filetransferfromlocaltoremotedisk" => {
            Kind::File(Activity::Id(1))
        }
        // Out of the website / towards the user's machine: download.
        "filedownloadfromsecurebrowsertoremotedisk" | "filetransferfromremotetolocaldisk" => {
            Kind::File(Activity::Id(2))
        }
        "printjobsubmit" => Kind::File(Activity::Other("PrintJobSubmit")),
        _ => Kind::Unknown,
    }
}

pub fn map<'a>(src: &'a BorrowedObject<'a>, cx: &'a MapContext) -> Result<Mapped<'a>, MapError> {
    let mut r = Reader::new(src);
    let name = r.req_str("activity_name")?;
    let time_ms = match r.peek("time") {
        None => return Err(MapError::missing("time")),
        Some(v) => {
            epoch_ms(v).ok_or_else(|| MapError::invalid_timestamp("time", "epoch milliseconds"))?
        }
    };
    r.mark("time");
    r.req_obj("session_detail")?;
    let session_id = r.req_str("session_detail.session_id")?;
    let username = r.req_str("session_detail.username")?;
    let client_ip = r
        .str("session_detail.client_ip")
        .filter(|ip| super::common::is_ip(ip));
    let portal_ip = r
        .str("session_detail.portal_ip")
        .filter(|ip| super::common::is_ip(ip));
    let portal_id = r.str("session_detail.portal_id");
    let url_string = r.str("url.url_string");
    let url_host = r.str("url.hostname");
    let url_path = r.str("url.path");

    let kind = kind_of(name);
    let mut e = match kind {
        Kind::Session(a) => cx.event(SYSTEM, Class::Authentication, a, time_ms),
        Kind::Web(a) => cx.event(SYSTEM, Class::WebResourcesActivity, a, time_ms),
        Kind::Blocked => cx.event(
            SYSTEM,
            Class::WebResourceAccessActivity,
            Activity::Id(2),
            time_ms,
        ),
        Kind::File(a) => cx.event(SYSTEM, Class::FileHostingActivity, a, time_ms),
        Kind::Unknown => cx.event(SYSTEM, Class::BaseEvent, Activity::Other(name), time_ms),
    };
    put(&mut e, "metadata.event_code", name);
    put(
        &mut e,
        "message",
        [name, " in secure browser session ", session_id].concat(),
    );
    if kind == Kind::Unknown {
        // Base Event has no user, endpoint or session attributes in OCSF 1.3.0: the session
        // details stay under `unmapped`.
        r.untake_all();
        r.mark("activity_name");
        r.mark("time");
        return Ok(Mapped::one(e, Object::new(), r.taken()));
    }

    let dst = |e: &mut OcsfEvent<'a>| {
        put_opt(e, "dst_endpoint.ip", portal_ip);
        put_opt(e, "dst_endpoint.uid", portal_id);
    };
    match kind {
        Kind::Session(a) => {
            put_user_name(&mut e, USER, username);
            put(&mut e, "session.uid", session_id);
            if a == Activity::Id(1) {
                put(&mut e, "session.created_time", time_ms);
            }
            put(&mut e, "is_remote", true);
            put(&mut e, "service.name", "Amazon WorkSpaces Secure Browser");
            put_opt(&mut e, "service.uid", portal_id);
            put_opt(&mut e, "src_endpoint.ip", client_ip);
            dst(&mut e);
            set_status(&mut e, STATUS_SUCCESS);
        }
        Kind::Web(_) | Kind::Blocked => {
            // `actor` on these classes comes with the `host` profile.
            add_profile(&mut e, "host");
            put_user_name(&mut e, ACTOR_USER, username);
            put(&mut e, "actor.session.uid", session_id);
            put_opt(&mut e, "src_endpoint.ip", client_ip);
            let resource = match (url_string, url_host) {
                (Some(u), h) => {
                    serde_json::json!({"url_string": u, "name": h.unwrap_or(u), "type": "URL"})
                }
                // Tab and clipboard events without a URL: the resource is the portal.
                (None, _) => serde_json::json!({
                    "uid": portal_id.unwrap_or(session_id),
                    "name": "WorkSpaces Secure Browser portal",
                    "type": "Portal",
                }),
            };
            put(&mut e, "web_resources", Value::Array(vec![resource]));
            if let Some(u) = url_string {
                put(&mut e, "http_request.url.url_string", u);
                put_opt(&mut e, "http_request.url.hostname", url_host);
                put_opt(&mut e, "http_request.url.path", url_path);
            }
            if kind == Kind::Blocked {
                set_status(&mut e, STATUS_FAILURE);
                put(
                    &mut e,
                    "status_detail",
                    "Blocked by the portal's content filter",
                );
                if url_string.is_none() {
                    // Web Resource Access Activity requires `http_request`.
                    put(&mut e, "http_request.uid", session_id);
                }
            } else {
                dst(&mut e);
            }
        }
        Kind::File(_) => {
            put_user_name(&mut e, ACTOR_USER, username);
            put(&mut e, "actor.session.uid", session_id);
            // File Hosting Activity requires `src_endpoint`: the user's client, else the portal.
            match client_ip {
                Some(ip) => put(&mut e, "src_endpoint.ip", ip),
                None => put(&mut e, "src_endpoint.uid", portal_id.unwrap_or(session_id)),
            }
            dst(&mut e);
            let mut file = Object::new();
            match r.str("file.name") {
                Some(n) => {
                    file.insert("name".into(), n.into());
                    let type_id = r.i64("file.type_id").unwrap_or(1);
                    file.insert("type_id".into(), type_id.into());
                }
                None => {
                    // A print job (or a transfer logged without its file) names no file.
                    file.insert("name".into(), "(not reported)".into());
                    file.insert("type_id".into(), 0.into());
                    file.insert("type".into(), "Unknown".into());
                }
            }
            if let Some(s) = r.i64("file.size") {
                file.insert("size".into(), s.into());
            }
            if let Some(x) = r.str("file.ext") {
                file.insert("ext".into(), x.into());
            }
            put(&mut e, "file", Value::Object(file));
        }
        Kind::Unknown => {}
    }
    Ok(Mapped::one(e, Object::new(), r.taken()))
}
