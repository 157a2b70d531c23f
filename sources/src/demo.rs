//! `type: demo` — synthetic session events, for the quickstart and as a load generator.
//! Minimal version: Windows session_notify / session_end_event pairs.

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::Deserialize;
use serde_json::json;

use sessiontrail_core::component::{ComponentError, ComponentTask, SourceContext};
use sessiontrail_core::{BuildError, Event, SourceConfig, Value};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// Events to generate, then stop (the pipeline drains and exits). Unset: run until stopped.
    #[serde(default)]
    pub count: Option<u64>,
    /// Events per second; unset or 0: as fast as the pipeline takes them.
    #[serde(default)]
    pub rate: Option<f64>,
    /// Seed of the random generator: the same seed gives the same events.
    #[serde(default = "default_seed")]
    pub seed: u64,
}

fn default_seed() -> u64 {
    1
}

const BATCH_EVENTS: usize = 512;

#[async_trait::async_trait]
impl SourceConfig for DemoConfig {
    async fn build(&self, cx: SourceContext) -> Result<ComponentTask, BuildError> {
        let config = self.clone();
        Ok(Box::pin(run(config, cx)))
    }
}

async fn run(config: DemoConfig, cx: SourceContext) -> Result<(), ComponentError> {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut emitted: u64 = 0;
    let interval = config
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| std::time::Duration::from_secs_f64(1.0 / r));
    let start = Utc
        .with_ymd_and_hms(2025, 3, 10, 8, 0, 0)
        .single()
        .unwrap_or_else(Utc::now);
    let mut pending_end: Option<Value> = None;
    loop {
        if cx.shared.shutdown.is_cancelled() || config.count.is_some_and(|c| emitted >= c) {
            break;
        }
        let room = config.count.map_or(BATCH_EVENTS as u64, |c| {
            (c - emitted).min(BATCH_EVENTS as u64)
        });
        let room = if interval.is_some() { 1 } else { room };
        let mut batch = Vec::with_capacity(room as usize);
        for _ in 0..room {
            let fields = match pending_end.take() {
                Some(end) => end,
                None => {
                    let t = start + Duration::seconds(emitted as i64 * 7);
                    let sid = format!(
                        "{:08x}-0000-4000-8000-{:012x}",
                        rng.random::<u32>(),
                        emitted
                    );
                    let user = format!("CORP\\user{}", rng.random_range(1..50));
                    let host = format!("HOST-{:02}", rng.random_range(1..10));
                    pending_end = Some(json!({
                        "schema_version": "1.2", "event_type": "session_end_event",
                        "event_id": format!("e-{emitted}"), "timestamp": (t + Duration::seconds(rng.random_range(60..7200))).to_rfc3339(),
                        "end_trigger": "logoff", "reason": "user", "session_id": sid, "resource_id": host, "user_id": user,
                    }));
                    json!({
                        "schema_version": "1.2", "event_type": "session_notify", "event_id": format!("s-{emitted}"),
                        "timestamp": t.to_rfc3339(), "event_trigger": "logon", "session_id": sid,
                        "resource_id": host, "user_id": user, "channel_type": "RDP",
                    })
                }
            };
            let Value::Object(obj) = fields else { continue };
            batch.push(Event::new(obj, Arc::clone(&cx.name), 300));
            emitted += 1;
        }
        cx.metrics.add_received(batch.len() as u64, 0);
        cx.out
            .send(batch)
            .await
            .map_err(|e| ComponentError(format!("source {}: {e}", cx.name)))?;
        if let Some(iv) = interval {
            tokio::select! {
                _ = cx.shared.shutdown.cancelled() => break,
                _ = tokio::time::sleep(iv) => {}
            }
        }
    }
    Ok(())
}
