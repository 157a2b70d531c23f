//! The pipeline's own HTTP API (`api.address`): `/health`, `/metrics`, and routes that
//! components add (e.g. the correlate transform's `/api/sessions`).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use sessiontrail_core::metrics::MetricsRegistry;

#[repr(u8)]
pub enum Health {
    Starting = 0,
    Running = 1,
    Draining = 2,
}

pub async fn serve(
    address: &str,
    registry: Arc<MetricsRegistry>,
    health: Arc<AtomicU8>,
    extra: Vec<Router>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("api.address {address}: cannot listen: {e}"))?;
    let mut app = Router::new()
        .route(
            "/health",
            get(move || {
                let h = health.load(Ordering::Acquire);
                async move {
                    match h {
                        1 => (StatusCode::OK, "{\"status\":\"running\"}\n"),
                        2 => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "{\"status\":\"draining\"}\n",
                        ),
                        _ => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "{\"status\":\"starting\"}\n",
                        ),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let body = registry.render();
                async move {
                    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
                }
            }),
        );
    for r in extra {
        app = app.merge(r);
    }
    tracing::info!(%address, "API listening (/health, /metrics)");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "API server stopped");
        }
    }))
}
