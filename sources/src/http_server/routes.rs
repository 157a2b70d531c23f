//! The routes and what one request does: authenticate, read and decode the body, check each
//! record, hand the good ones to the pipeline without waiting for room (503 when it is full),
//! dead-letter the bad ones, and answer — after delivery when acknowledgements are on.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Extension, Router};
use serde_json::json;
use tokio::sync::Semaphore;

use sessiontrail_core::json::{decode_record, DecodeError, Decoded};
use sessiontrail_core::metrics::ComponentMetrics;
use sessiontrail_core::output::TrySendError;
use sessiontrail_core::{BatchNotifier, DeadLetter, Event, Object, Output};

use super::auth::{Role, TokenSet};
use super::body::{self, BodyError, Layout};
use super::config::HttpServerConfig;
use super::schema::{self, Rejection};

/// Set on every request by the connection loop.
#[derive(Clone, Copy)]
pub struct RemoteAddr(pub SocketAddr);

pub struct ServerState {
    pub name: Arc<str>,
    pub cfg: HttpServerConfig,
    pub tokens: TokenSet,
    pub out: Output,
    pub dropped: Output,
    pub metrics: Arc<ComponentMetrics>,
    pub in_flight: Arc<Semaphore>,
}

type AppState = Arc<ServerState>;

/// What a route checks its records against.
#[derive(Clone, Copy)]
enum RouteKind {
    /// `POST /events`: any object; EventBridge envelopes are checked for `detail`.
    Generic,
    /// Agent routes: the agent schema, `event_type` implied by the path if any.
    Agent(Option<&'static str>),
    /// `PUT /api/sessions/{id}`: an admin correction.
    Correction,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/events", post(generic))
        .route("/api/events", post(agent_events))
        .route("/api/session_notify", post(session_notify))
        .route("/api/session_end_event", post(session_end_event))
        .route("/api/sessions/{id}", put(correction))
        .with_state(state)
}

async fn generic(
    State(s): State<AppState>,
    Extension(r): Extension<RemoteAddr>,
    req: Request,
) -> Response {
    handle(s, RouteKind::Generic, None, r, req).await
}
async fn agent_events(
    State(s): State<AppState>,
    Extension(r): Extension<RemoteAddr>,
    req: Request,
) -> Response {
    handle(s, RouteKind::Agent(None), None, r, req).await
}
async fn session_notify(
    State(s): State<AppState>,
    Extension(r): Extension<RemoteAddr>,
    req: Request,
) -> Response {
    handle(
        s,
        RouteKind::Agent(Some(schema::SESSION_NOTIFY)),
        None,
        r,
        req,
    )
    .await
}
async fn session_end_event(
    State(s): State<AppState>,
    Extension(r): Extension<RemoteAddr>,
    req: Request,
) -> Response {
    handle(
        s,
        RouteKind::Agent(Some(schema::SESSION_END_EVENT)),
        None,
        r,
        req,
    )
    .await
}
async fn correction(
    State(s): State<AppState>,
    Extension(r): Extension<RemoteAddr>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    handle(s, RouteKind::Correction, Some(id), r, req).await
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    let mut text = body.to_string();
    text.push('\n');
    (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

fn error(status: StatusCode, error: &str, message: impl Into<String>) -> Response {
    json_response(status, json!({ "error": error, "message": message.into() }))
}

/// 503 with `Retry-After`: the sender keeps the records and tries again later.
fn retry_later(state: &ServerState, error_id: &str, message: &str) -> Response {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, error_id, message);
    if let Ok(v) = HeaderValue::from_str(&state.cfg.retry_after_secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

fn unauthorized() -> Response {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "send a valid token as \"Authorization: Bearer <token>\"",
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"sessiontrail\""),
    );
    r
}

fn body_error(state: &ServerState, e: BodyError) -> Response {
    state.metrics.add_error("http_body");
    match e {
        BodyError::TooLarge { limit } => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than max_body_bytes ({limit} bytes); send fewer records per request"),
        ),
        BodyError::DecompressedTooLarge { limit } => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "decompressed_body_too_large",
            format!("the body decompresses to more than max_decompressed_bytes ({limit} bytes)"),
        ),
        BodyError::UnsupportedEncoding(enc) => error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_content_encoding",
            format!("Content-Encoding {enc:?} is not supported; use gzip, zstd or none"),
        ),
        BodyError::Corrupt(m) => error(
            StatusCode::BAD_REQUEST,
            "invalid_compression",
            format!("the compressed body cannot be decoded: {m}"),
        ),
        BodyError::Read(m) => error(
            StatusCode::BAD_REQUEST,
            "body_read_failed",
            format!("reading the body failed: {m}"),
        ),
    }
}

struct Rejected {
    index: usize,
    reason: &'static str,
    message: String,
}

async fn handle(
    state: AppState,
    kind: RouteKind,
    path_id: Option<String>,
    remote: RemoteAddr,
    req: Request,
) -> Response {
    // Bounded work in progress: beyond it the sender retries instead of us queueing.
    let Ok(_permit) = Arc::clone(&state.in_flight).try_acquire_owned() else {
        state.metrics.add_error("http_busy");
        return retry_later(&state, "busy", "too many requests in progress; retry later");
    };
    let (parts, body) = req.into_parts();
    let Some(role) = state.tokens.authenticate(&parts.headers) else {
        state.metrics.add_error("http_unauthorized");
        return unauthorized();
    };
    if matches!(kind, RouteKind::Correction) && role != Role::Admin {
        state.metrics.add_error("http_forbidden");
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "correcting a session needs one of auth.admin_tokens",
        );
    }
    let raw = match body::read_limited(&parts.headers, body, state.cfg.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return body_error(&state, e),
    };
    let wire_bytes = raw.len();
    let decoded = match body::encoding_of(&parts.headers, &raw)
        .and_then(|enc| body::decompress(raw, enc, state.cfg.max_decompressed_bytes))
    {
        Ok(b) => b,
        Err(e) => return body_error(&state, e),
    };
    state.metrics.add_received(0, wire_bytes as u64);
    let path = parts.uri.path().to_string();
    process(
        &state,
        kind,
        path_id.as_deref(),
        &parts.headers,
        &decoded,
        &path,
        remote,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn process(
    state: &ServerState,
    kind: RouteKind,
    path_id: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    path: &str,
    remote: RemoteAddr,
) -> Response {
    let name = &state.name;
    let max = state.cfg.max_record_bytes;
    let dead_letter = |reason: &str, message: &str, bytes: &[u8], index: Option<usize>| {
        let dl = DeadLetter::new(name, reason, message);
        let dl = if bytes.len() > max {
            dl.raw_prefix(bytes, bytes.len())
        } else {
            dl.raw(bytes)
        };
        let dl = dl
            .with("path", path)
            .with("remote_addr", remote.0.to_string());
        match index {
            Some(i) => dl.with("index", i),
            None => dl,
        }
    };

    if body.trim_ascii().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "empty_body",
            "the body is empty; send a JSON object, an array of objects or NDJSON",
        );
    }
    let layout = body::layout_of(headers);
    let not_json = |e: DecodeError| (e.reason, e.message);
    let records = match body::split_records(body, layout) {
        Ok(r) => r,
        Err(body::NotJson) => {
            let msg =
                "the body is not a JSON array: it is cut off or has trailing data".to_string();
            return whole_body_rejected(
                state,
                "invalid_json",
                &msg,
                dead_letter("invalid_json", &msg, body, None),
            )
            .await;
        }
    };
    // A single JSON document that is not JSON at all is the sender's bug, not a record's.
    if layout == Layout::Json
        && records.len() == 1
        && records[0].index == 0
        && !body.trim_ascii_start().starts_with(b"[")
    {
        if let Err(e) = decode_record(records[0].bytes, max) {
            if e.reason == "invalid_json" || e.reason == "invalid_utf8" {
                let (reason, msg) = not_json(e);
                return whole_body_rejected(
                    state,
                    reason,
                    &msg,
                    dead_letter(reason, &msg, body, None),
                )
                .await;
            }
        }
    }

    let mut events: Vec<Event> = Vec::with_capacity(records.len());
    let mut dead: Vec<DeadLetter> = Vec::new();
    let mut rejected: Vec<Rejected> = Vec::new();
    for rec in &records {
        let outcome = if rec.empty_element {
            Err(Rejection {
                reason: "invalid_json",
                message: "empty array element".into(),
            })
        } else {
            match decode_record(rec.bytes, max) {
                Ok(Decoded::Blank) => continue,
                Ok(Decoded::Record(text)) => {
                    let mut obj = text.into_object();
                    check(kind, path_id, &mut obj).map(|()| obj)
                }
                Err(e) => Err(Rejection {
                    reason: e.reason,
                    message: e.message,
                }),
            }
        };
        match outcome {
            Ok(obj) => events.push(Event::new(obj, Arc::clone(name), rec.bytes.len())),
            Err(r) => {
                dead.push(dead_letter(
                    r.reason,
                    &r.message,
                    rec.bytes,
                    Some(rec.index),
                ));
                rejected.push(Rejected {
                    index: rec.index,
                    reason: r.reason,
                    message: r.message,
                });
            }
        }
    }
    deliver(state, events, dead, rejected).await
}

fn check(kind: RouteKind, path_id: Option<&str>, obj: &mut Object) -> Result<(), Rejection> {
    match kind {
        RouteKind::Generic => schema::check_generic(obj),
        RouteKind::Agent(route_type) => schema::check_agent_event(obj, route_type),
        RouteKind::Correction => schema::normalize_correction(obj, path_id.unwrap_or_default()),
    }
}

/// 400 for a body that is not JSON at all; the body still goes to `<name>.dropped` so
/// nothing disappears without a trace.
async fn whole_body_rejected(
    state: &ServerState,
    reason: &str,
    message: &str,
    dl: DeadLetter,
) -> Response {
    let event = dl.build(Arc::clone(&state.name));
    if state.dropped.send_dead_letters(vec![event]).await.is_err() {
        return retry_later(
            state,
            "shutting_down",
            "the pipeline is stopping; retry later",
        );
    }
    error(StatusCode::BAD_REQUEST, reason, message)
}

async fn deliver(
    state: &ServerState,
    mut events: Vec<Event>,
    dead: Vec<DeadLetter>,
    rejected: Vec<Rejected>,
) -> Response {
    let accepted = events.len();
    let (notifier, receiver) = if state.cfg.acknowledgements {
        let (n, r) = BatchNotifier::new();
        (Some(n), Some(r))
    } else {
        (None, None)
    };
    if let Some(n) = &notifier {
        for e in &mut events {
            e.meta.ack = Some(n.token());
        }
    }
    let dead: Vec<Event> = dead
        .into_iter()
        .map(|d| {
            d.ack(notifier.as_ref().map(|n| n.token()))
                .build(Arc::clone(&state.name))
        })
        .collect();
    drop(notifier);

    let bytes: usize = events.iter().map(|e| e.meta.byte_size).sum();
    // Never wait for room: a full pipeline is the sender's cue to retry later, and its
    // records stay on its disk instead of in our memory.
    match state.out.try_send(events) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            state.metrics.add_error("http_backpressure");
            return retry_later(state, "busy", "the pipeline is full; retry later");
        }
        Err(TrySendError::Closed(_)) => {
            return retry_later(
                state,
                "shutting_down",
                "the pipeline is stopping; retry later",
            );
        }
    }
    state.metrics.add_received(accepted as u64, bytes as u64);
    // Dead letters may wait for room: they are few, and bounded by this request's body.
    if state.dropped.send_dead_letters(dead).await.is_err() {
        return retry_later(
            state,
            "shutting_down",
            "the pipeline is stopping; retry later",
        );
    }
    let rejected_json: Vec<serde_json::Value> = rejected
        .iter()
        .map(|r| json!({ "index": r.index, "error": r.reason, "message": r.message }))
        .collect();
    match receiver {
        None => json_response(
            StatusCode::ACCEPTED,
            json!({ "accepted": accepted, "rejected": rejected_json }),
        ),
        Some(rx) => match rx.await {
            Ok(status) if status.is_handled() => json_response(
                StatusCode::OK,
                json!({ "accepted": accepted, "rejected": rejected_json }),
            ),
            _ => retry_later(
                state,
                "not_delivered",
                "the events could not be delivered; send them again",
            ),
        },
    }
}
