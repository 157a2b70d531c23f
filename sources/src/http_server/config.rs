//! Options of `type: http_server`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use sessiontrail_core::json::DEFAULT_MAX_RECORD_BYTES;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    /// Address to listen on, e.g. `0.0.0.0:8080`.
    pub address: String,
    /// Serve HTTPS with these PEM files (rustls). Without it the server speaks plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Who may send events.
    pub auth: AuthConfig,
    /// Largest request body accepted as sent on the wire (default 4 MiB); larger: 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Largest body after gzip/zstd decompression (default 16 MiB); larger: 413, so a
    /// decompression bomb never fills memory.
    #[serde(default = "default_max_decompressed_bytes")]
    pub max_decompressed_bytes: usize,
    /// Largest single record (default 1 MiB, the corpus limit); larger records are rejected
    /// (`record_too_large`) while the rest of the request is accepted.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// `true` (default): answer 200 only once every event of the request was delivered by the
    /// sinks, 503 if any could not be. `false`: answer 202 as soon as the events are queued.
    #[serde(default = "default_acknowledgements")]
    pub acknowledgements: bool,
    /// Requests processed at the same time (default 256); beyond it: 503 with `Retry-After`.
    /// Bounds the memory held by request bodies to about this times `max_decompressed_bytes`.
    #[serde(default = "default_max_in_flight_requests")]
    pub max_in_flight_requests: usize,
    /// Seconds a client is told to wait in `Retry-After` when the pipeline is full (default 1).
    #[serde(default = "default_retry_after_secs")]
    pub retry_after_secs: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain (leaf first).
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Tokens the agents send as `Authorization: Bearer <token>`.
    #[serde(default)]
    pub bearer_tokens: Vec<String>,
    /// Tokens that may also correct sessions (`PUT /api/sessions/{id}`); they are accepted on
    /// every other route too.
    #[serde(default)]
    pub admin_tokens: Vec<String>,
}

// Never print token values (they end up in logs via `{:?}` of the whole config).
impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field(
                "bearer_tokens",
                &format!("<{} redacted>", self.bearer_tokens.len()),
            )
            .field(
                "admin_tokens",
                &format!("<{} redacted>", self.admin_tokens.len()),
            )
            .finish()
    }
}

fn default_max_body_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_max_decompressed_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_max_record_bytes() -> usize {
    DEFAULT_MAX_RECORD_BYTES
}
fn default_acknowledgements() -> bool {
    true
}
fn default_max_in_flight_requests() -> usize {
    256
}
fn default_retry_after_secs() -> u32 {
    1
}

/// Shortest token accepted: shorter secrets are guessable by brute force over HTTP.
pub const MIN_TOKEN_CHARS: usize = 16;

impl HttpServerConfig {
    pub fn check(&self) -> Result<SocketAddr, String> {
        let addr: SocketAddr = self.address.parse().map_err(|_| {
            format!(
                "address \"{}\" is not an IP:port such as 0.0.0.0:8080",
                self.address
            )
        })?;
        if self.auth.bearer_tokens.is_empty() && self.auth.admin_tokens.is_empty() {
            return Err("auth.bearer_tokens is empty: configure at least one token \
                 (e.g. bearer_tokens: [\"${AGENT_TOKEN}\"])"
                .into());
        }
        for (list, tokens) in [
            ("auth.bearer_tokens", &self.auth.bearer_tokens),
            ("auth.admin_tokens", &self.auth.admin_tokens),
        ] {
            for (i, t) in tokens.iter().enumerate() {
                if t.chars().count() < MIN_TOKEN_CHARS {
                    return Err(format!(
                        "{list}[{i}] is shorter than {MIN_TOKEN_CHARS} characters; use a long random token"
                    ));
                }
                if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(format!(
                        "{list}[{i}] contains whitespace or control characters, which cannot be sent in an Authorization header"
                    ));
                }
            }
        }
        for (name, v) in [
            ("max_body_bytes", self.max_body_bytes),
            ("max_decompressed_bytes", self.max_decompressed_bytes),
            ("max_record_bytes", self.max_record_bytes),
            ("max_in_flight_requests", self.max_in_flight_requests),
        ] {
            if v == 0 {
                return Err(format!("{name} must be greater than 0"));
            }
        }
        if self.max_decompressed_bytes < self.max_body_bytes {
            return Err(format!(
                "max_decompressed_bytes ({}) must be at least max_body_bytes ({})",
                self.max_decompressed_bytes, self.max_body_bytes
            ));
        }
        Ok(addr)
    }
}
