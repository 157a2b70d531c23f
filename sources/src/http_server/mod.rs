//! `type: http_server` — receives events over HTTP(S): the Windows agents' `session_notify` /
//! `session_end_event`, admin session corrections, EventBridge API-destination deliveries and
//! any JSON records.
//!
//! Split by concern: [`config`] options, [`server`] listener / TLS / connections, [`routes`]
//! what one request does, [`auth`] bearer tokens, [`body`] limits / decompression / record
//! splitting, [`schema`] the agents' event schema (docs/agent-events.md).
//!
//! Answers a sender can act on: 200/202 with `{"accepted", "rejected": [{"index", "error"}]}`
//! (rejected records are never worth retrying and went to `<name>.dropped`), 503 with
//! `Retry-After` (keep the records, retry later), 4xx for a request that is wrong as a whole.

pub mod auth;
pub mod body;
pub mod config;
pub mod routes;
pub mod schema;
pub mod server;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use sessiontrail_core::component::{ComponentTask, SourceContext};
use sessiontrail_core::{BuildError, SourceConfig};

pub use config::HttpServerConfig;

#[async_trait::async_trait]
impl SourceConfig for HttpServerConfig {
    fn validate(&self) -> Result<(), String> {
        self.check().map(|_| ())
    }

    async fn build(&self, cx: SourceContext) -> Result<ComponentTask, BuildError> {
        let addr = self.check().map_err(BuildError)?;
        let tls = self
            .tls
            .as_ref()
            .map(server::tls_acceptor)
            .transpose()
            .map_err(BuildError)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| BuildError(format!("address {addr}: cannot listen: {e}")))?;
        tracing::info!(source = %cx.name, %addr, tls = tls.is_some(), "http_server listening");
        let state = Arc::new(routes::ServerState {
            name: Arc::clone(&cx.name),
            cfg: self.clone(),
            tokens: auth::TokenSet::new(&self.auth),
            out: cx.out,
            dropped: cx.dropped,
            metrics: cx.metrics,
            in_flight: Arc::new(Semaphore::new(self.max_in_flight_requests)),
        });
        let app = routes::router(state);
        let shutdown = cx.shared.shutdown.clone();
        let name = Arc::clone(&cx.name);
        Ok(Box::pin(async move {
            server::serve(listener, tls, app, shutdown, name).await;
            Ok(())
        }))
    }
}
