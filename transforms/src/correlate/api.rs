//! The live view on the pipeline's API server (`api.address`):
//!
//! - `GET /api/sessions?state=open|closed|all&limit=N` (default `state=open`, `limit=1000`):
//!   `{"count": <all matching>, "sessions": [{session, user, resource, source, state,
//!   started, ended, age_s, duration_s, key}...]}`, oldest start first.
//! - `GET /api/sessions/{id}`: `{"sessions": [...]}` for that session id (several when the
//!   same id exists for different products or hosts), 404 when unknown.
//!
//! What the API shows is always state that is already durable: a chunk's commit is written
//! while the next chunk is applied, so with the table locked, a request first waits for the
//! commits of what the table holds ([`CommitWatch::wait_durable`]: at most two writes, a few
//! milliseconds each). Listing runs on a blocking thread: a million sessions take a moment to
//! scan.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::correlator::Correlator;
use super::pipeline::CommitWatch;
use super::table::{Status, NO_TIME};

/// Listing size when the request gives no `limit`, and the most it may ask for.
const DEFAULT_LIMIT: usize = 1000;
const MAX_LIMIT: usize = 100_000;

/// `/api/sessions` can be served by one correlate transform per pipeline: the first built.
static ROUTES_TAKEN: AtomicBool = AtomicBool::new(false);

/// `watch`: the pipeline's, so that only durable state is shown.
pub fn router(correlator: Arc<Mutex<Correlator>>, watch: Arc<CommitWatch>) -> Router {
    if ROUTES_TAKEN.swap(true, Ordering::AcqRel) {
        tracing::warn!("several correlate transforms: /api/sessions shows the first one only");
        return Router::new();
    }
    routes(correlator, watch)
}

/// The routes, without the one-per-process guard (tests).
pub fn routes(correlator: Arc<Mutex<Correlator>>, watch: Arc<CommitWatch>) -> Router {
    let list_state = Arc::clone(&correlator);
    let list_watch = Arc::clone(&watch);
    Router::new()
        .route(
            "/api/sessions",
            get(move |Query(q): Query<HashMap<String, String>>| {
                let c = Arc::clone(&list_state);
                let w = Arc::clone(&list_watch);
                async move { blocking(move || list(&c, &w, &q)).await }
            }),
        )
        .route(
            "/api/sessions/{id}",
            get(move |Path(id): Path<String>| {
                let c = Arc::clone(&correlator);
                let w = Arc::clone(&watch);
                async move { blocking(move || one(&c, &w, &id)).await }
            }),
        )
}

/// The table, locked, once everything it holds is durable (`Err`: the status and message to
/// answer with).
fn durable_table<'a>(
    c: &'a Mutex<Correlator>,
    watch: &CommitWatch,
) -> Result<std::sync::MutexGuard<'a, Correlator>, (StatusCode, String)> {
    let c = c.lock().map_err(|_| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "session table unavailable".to_string(),
        )
    })?;
    // With the lock held no commit can be encoded; those already encoded get written without
    // it (the writer never takes this lock).
    watch
        .wait_durable()
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e))?;
    Ok(c)
}

async fn blocking(f: impl FnOnce() -> Response + Send + 'static) -> Response {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "listing failed"))
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn list(c: &Mutex<Correlator>, watch: &CommitWatch, q: &HashMap<String, String>) -> Response {
    let wanted = q.get("state").map(String::as_str).unwrap_or("open");
    if !matches!(wanted, "open" | "closed" | "all") {
        return error(StatusCode::BAD_REQUEST, "state must be open, closed or all");
    }
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) => n.min(MAX_LIMIT),
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "limit must be a number"),
    };
    let c = match durable_table(c, watch) {
        Ok(c) => c,
        Err((status, message)) => return error(status, &message),
    };
    let mut slots: Vec<u32> = c
        .table
        .iter_slots()
        .filter(|&s| {
            let open = c.table.get(s).status == Status::Open;
            match wanted {
                "open" => open,
                "closed" => !open,
                _ => true,
            }
        })
        .collect();
    let count = slots.len();
    slots.sort_by_key(|&s| c.table.get(s).start_ms);
    let now = chrono::Utc::now().timestamp_millis();
    let sessions: Vec<Value> = slots
        .into_iter()
        .take(limit)
        .map(|s| describe(&c, s, now))
        .collect();
    Json(json!({ "count": count, "sessions": sessions })).into_response()
}

fn one(c: &Mutex<Correlator>, watch: &CommitWatch, id: &str) -> Response {
    let c = match durable_table(c, watch) {
        Ok(c) => c,
        Err((status, message)) => return error(status, &message),
    };
    let now = chrono::Utc::now().timestamp_millis();
    let sessions: Vec<Value> = c
        .table
        .find_all(id)
        .into_iter()
        .map(|s| describe(&c, s, now))
        .collect();
    if sessions.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            "no such session (open, or closed within dedupe_window)",
        );
    }
    Json(json!({ "sessions": sessions })).into_response()
}

fn rfc3339(ms: i64) -> Value {
    if ms == NO_TIME {
        return Value::Null;
    }
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

fn describe(c: &Correlator, slot: u32, now_ms: i64) -> Value {
    let r = c.table.get(slot);
    let s = |sym| c.table.strings.get(sym).map(str::to_string);
    let key: serde_json::Map<String, Value> = c.settings().key_fields[1..]
        .iter()
        .zip(r.extra.iter())
        .map(|(f, &sym)| (f.clone(), s(sym).map(Value::String).unwrap_or(Value::Null)))
        .collect();
    let age_s =
        (r.status == Status::Open && r.start_ms != NO_TIME).then(|| (now_ms - r.start_ms) / 1000);
    json!({
        "session": r.uid.as_string(),
        "user": s(r.user),
        "resource": s(r.resource),
        "source": s(r.product),
        "state": r.status.as_str(),
        "started": rfc3339(r.start_ms),
        "ended": if r.status == Status::Open || r.status == Status::Expired { Value::Null } else { rfc3339(r.end_ms) },
        "age_s": age_s,
        "duration_s": r.duration_ms().filter(|_| r.status != Status::Expired).map(|d| d / 1000),
        "end_reason": s(r.end_reason),
        "resumed": r.resumed,
        "key": key,
    })
}
