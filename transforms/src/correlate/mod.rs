//! `type: correlate` — pairs session starts and ends of OCSF events (from the `ocsf`
//! transform) into sessions with start, end and duration; keeps the sessions in the durable
//! state store; serves the live view on `GET /api/sessions`.
//!
//! - `correlator.rs`: the rules (what each start / end / resume / correction does).
//! - `table.rs`: the compact in-memory `SessionTable`.
//! - `state.rs`: the durable copy in the state store (a log of segments), committed per chunk
//!   of input.
//! - `pipeline.rs`: the chunk loop; a chunk's commit is written while the next is applied.
//! - `api.rs`: `GET /api/sessions?state=open`, `GET /api/sessions/{id}`.
//!
//! Delivery: a chunk of input events (whatever is queued, up to [`MAX_EVENTS_PER_COMMIT`]) is
//! applied to the table, the changes are committed in one transaction, and only then are the
//! events forwarded (their ack tokens travel on to the sinks) or, for absorbed duplicates,
//! resolved as handled. So a source checkpoints past an event only once the state that
//! absorbed it is durable. The commit is written while the next chunk is applied (see
//! `pipeline.rs`); the order above holds per chunk. See docs/correlate.md.

pub mod api;
pub mod correlator;
mod fields;
pub mod pipeline;
mod result;
pub mod state;
pub mod table;

use std::sync::{Arc, Mutex};

use serde::Deserialize;

use sessiontrail_core::component::{ComponentError, ComponentTask, TransformContext};
use sessiontrail_core::condition::ConditionConfig;
use sessiontrail_core::{BuildError, TransformConfig};

use correlator::{ChunkOutput, CorrelateMetrics, Correlator, Settings};
use pipeline::{ChunkPipeline, CommitWatch};
use table::MAX_EXTRA_KEY_FIELDS;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelateConfig {
    /// Fields that identify a session: the first is the session id and must be present; the
    /// others must be equal when both events carry them (a missing one matches any value).
    /// Default: `session.uid`, `metadata.product.name`, `dst_endpoint.hostname`.
    #[serde(default = "default_key_fields")]
    pub key_fields: Vec<String>,
    /// Recognise session starts with this condition instead of the OCSF class/activity
    /// (Authentication Logon, Network Activity Open, API Activity StartSession).
    #[serde(default)]
    pub starts_when: Option<ConditionConfig>,
    /// Recognise session ends with this condition instead of the OCSF class/activity
    /// (Authentication Logoff, Network Activity Close, API Activity TerminateSession).
    #[serde(default)]
    pub ends_when: Option<ConditionConfig>,
    /// An open session older than this (event time) is closed with an `expired` event.
    #[serde(default = "default_max_session_age")]
    pub max_session_age: String,
    /// How long (event time) an end without start waits for a late start, and an expired
    /// session for a late end. Default 24h.
    #[serde(default = "default_allowed_lateness")]
    pub allowed_lateness: String,
    /// How long (event time) a closed session is remembered for duplicate and later ends.
    #[serde(default = "default_dedupe_window")]
    pub dedupe_window: String,
    /// How long (event time) a closed session stays correctable by an admin correction
    /// (`PUT /api/sessions/{id}`); closed sessions are kept for the longer of this and
    /// `dedupe_window`.
    #[serde(default = "default_correction_window")]
    pub correction_window: String,
    /// At most this many open sessions; when full, the oldest is expired with an event.
    #[serde(default = "default_max_open_sessions")]
    pub max_open_sessions: usize,
    /// A producer-reported duration further than this from the computed one is flagged
    /// (`unmapped.duration_disagreement`).
    #[serde(default = "default_duration_tolerance")]
    pub duration_tolerance: String,
}

fn default_key_fields() -> Vec<String> {
    vec![
        "session.uid".into(),
        "metadata.product.name".into(),
        "dst_endpoint.hostname".into(),
    ]
}
fn default_max_session_age() -> String {
    "24h".into()
}
fn default_allowed_lateness() -> String {
    "24h".into()
}
fn default_dedupe_window() -> String {
    "1h".into()
}
fn default_correction_window() -> String {
    "7d".into()
}
fn default_max_open_sessions() -> usize {
    1_000_000
}
fn default_duration_tolerance() -> String {
    "2s".into()
}

/// Events applied to the table per state commit at most. Commits are fsynced; batching makes
/// throughput independent of the disk's sync latency, and since a commit is written while the
/// next chunk is applied (`pipeline.rs`), a chunk only has to take longer to apply than its
/// commit takes to write. Events are about 4 KiB each as parsed JSON, and two chunks are in
/// memory at once (one being applied, one whose outputs wait for their commit): 4,096 keeps
/// that to ~32 MiB, which is what holds 1,000,000 open sessions within 256 bytes each of peak
/// RSS (bench/correlate.sh, pipelined: 302 B at 12,288, 254 B at 6,144, 225-231 B at 4,096). It is
/// also about what the stdin source queues (4 batches of 1,024), so real chunks were this size
/// already.
pub const MAX_EVENTS_PER_COMMIT: usize = 4_096;

/// Parses `90s`, `15m`, `24h`, `30d`, `500ms` or a bare number of seconds.
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: i64 = num.parse().map_err(|_| {
        format!("invalid duration {s:?}: expected a number and a unit such as 90s, 15m, 24h, 30d")
    })?;
    let factor = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(format!(
                "invalid duration {s:?}: unknown unit {other:?} (use ms, s, m, h or d)"
            ))
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("duration {s:?} is too large"))
}

impl CorrelateConfig {
    /// The resolved settings (validated).
    pub fn settings(&self) -> Result<Settings, String> {
        if self.key_fields.is_empty() {
            return Err("key_fields must name at least the session id field".into());
        }
        if self.key_fields.len() > 1 + MAX_EXTRA_KEY_FIELDS {
            return Err(format!(
                "key_fields: at most {} fields are supported",
                1 + MAX_EXTRA_KEY_FIELDS
            ));
        }
        if self.max_open_sessions == 0 {
            return Err("max_open_sessions must be greater than 0".into());
        }
        let dur = |name: &str, v: &str| parse_duration_ms(v).map_err(|e| format!("{name}: {e}"));
        Ok(Settings {
            key_fields: self.key_fields.clone(),
            starts_when: self.starts_when.as_ref().map(|c| c.compile()).transpose()?,
            ends_when: self.ends_when.as_ref().map(|c| c.compile()).transpose()?,
            max_session_age_ms: dur("max_session_age", &self.max_session_age)?,
            allowed_lateness_ms: dur("allowed_lateness", &self.allowed_lateness)?,
            dedupe_window_ms: dur("dedupe_window", &self.dedupe_window)?,
            correction_window_ms: dur("correction_window", &self.correction_window)?,
            max_open_sessions: self.max_open_sessions,
            duration_tolerance_ms: dur("duration_tolerance", &self.duration_tolerance)?,
        })
    }
}

#[async_trait::async_trait]
impl TransformConfig for CorrelateConfig {
    fn validate(&self) -> Result<(), String> {
        self.settings().map(|_| ())
    }

    async fn build(&self, cx: TransformContext) -> Result<ComponentTask, BuildError> {
        let settings = self.settings()?;
        let metrics = CorrelateMetrics::new(Arc::clone(&cx.shared.registry), &cx.name);
        let mut correlator = Correlator::new(settings, Arc::clone(&cx.name), metrics);
        let store =
            state::SessionStore::new(cx.shared.store.namespace(&format!("correlate/{}", cx.name)));
        let name = Arc::clone(&cx.name);
        let loader = store.clone();
        let correlator = tokio::task::spawn_blocking(move || -> Result<Correlator, String> {
            let loaded = loader
                .load(&mut correlator.table)
                .map_err(|e| e.to_string())?;
            if loaded.unreadable > 0 {
                tracing::warn!(
                    component = %name,
                    records = loaded.unreadable,
                    "unreadable session records in the state store were skipped"
                );
            }
            if let Some(w) = loaded.watermark {
                correlator.watermark = w;
            }
            let restored = loaded.sessions.len();
            for (rec, body) in loaded.sessions {
                correlator.restore(rec, body);
            }
            if restored > 0 {
                tracing::info!(
                    component = %name,
                    open = correlator.table.open_count(),
                    closed = correlator.table.closed_count(),
                    "correlation state restored"
                );
            }
            Ok(correlator)
        })
        .await
        .map_err(|e| BuildError(format!("loading correlation state: {e}")))?
        .map_err(|e| {
            BuildError(format!(
                "loading correlation state from {}: {e}",
                cx.shared.data_dir.display()
            ))
        })?;
        let shared = Arc::new(Mutex::new(correlator));
        let watch = CommitWatch::new();
        cx.shared
            .api
            .add(api::router(Arc::clone(&shared), Arc::clone(&watch)));
        let pipeline = ChunkPipeline::new(shared, store, watch)?;
        Ok(Box::pin(run(pipeline, cx)))
    }
}

async fn run(mut pipeline: ChunkPipeline, cx: TransformContext) -> Result<(), ComponentError> {
    let TransformContext {
        name,
        mut input,
        out,
        dropped,
        metrics,
        ..
    } = cx;
    // A failed commit is fatal: the chunk's ack tokens are dropped unresolved (= Failed), so
    // the sources re-read those events after a restart.
    pipeline::run_chunks(&mut pipeline, &mut input, &out, &dropped, &metrics)
        .await
        .map_err(|e| ComponentError(format!("transform {name}: {e}")))
}

/// Applies a chunk to the table and commits the resulting changes in one transaction, on the
/// calling thread: what the pipeline does for a chunk, without the overlap (tests).
#[cfg(test)]
pub(crate) fn apply_and_commit(
    correlator: &Mutex<Correlator>,
    store: &state::SessionStore,
    events: Vec<sessiontrail_core::Event>,
) -> Result<ChunkOutput, String> {
    let mut c = correlator
        .lock()
        .map_err(|_| "correlation state lock poisoned by an earlier panic".to_string())?;
    let out = apply_chunk(&mut c, events);
    store.commit(&mut c)?;
    Ok(out)
}

/// Applies a chunk to the table, without committing it (the pipeline commits after).
pub fn apply_chunk(c: &mut Correlator, events: Vec<sessiontrail_core::Event>) -> ChunkOutput {
    let mut out = ChunkOutput::default();
    // Nearly every event is forwarded: sized once rather than doubled along the chunk.
    out.forward.reserve(events.len());
    for e in events {
        c.process(e, &mut out);
    }
    out
}

#[cfg(test)]
mod tests;
