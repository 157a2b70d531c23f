//! `type: parsec` — pulls the Parsec for Teams audit log (`GET /v1/teams/{team}/events`).
//!
//! Paging follows the API: the first request has no cursor (or resumes from the stored one),
//! each response's `next_cursor` is sent back as the inclusive `cursor` until it is null.
//! Because the cursor is inclusive a page may repeat the previous page's last event, so
//! events are de-duplicated by `id`. Each page is one checkpoint unit: once all its events
//! (and dead letters) are acknowledged, the cursor record becomes
//! `{cursor: <next_cursor>, last_event_id: <last id of the page>}`; when a pass reaches the
//! end (`next_cursor` null) the next poll asks for events `after` the last event id.
//!
//! Files: `event.rs` checks one event, `client.rs` makes one page request with its retries.

mod client;
mod event;

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use sessiontrail_core::component::{ComponentError, ComponentTask, SourceContext};
use sessiontrail_core::json::DEFAULT_MAX_RECORD_BYTES;
use sessiontrail_core::{BatchNotifier, BuildError, DeadLetter, Event, SourceConfig, Value};

use crate::pull::{
    parse_duration, parse_start_time, settle_remaining, settle_until, AckQueue, CursorStore,
    Settled, SettlesAcks,
};
use client::{fetch_page, FetchOutcome, PagePosition, PageRequest};

/// The public Parsec API.
pub const DEFAULT_BASE_URL: &str = "https://api.parsec.app";
/// Parsec: `limit` must be 1..=1000.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// Event ids remembered for de-duplication (a page repeats at most one event; this covers
/// far more than any overlap the API produces).
const MAX_REMEMBERED_IDS: usize = 100_000;
/// Pages emitted but not yet acknowledged before the source waits.
const MAX_PAGES_IN_FLIGHT: usize = 8;

/// The API key: deserialised from the config, never printed.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct ApiKey(String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParsecConfig {
    /// The team whose audit log is read.
    pub team_id: String,
    /// API key sent as `Authorization: Bearer`; use `${PARSEC_API_KEY}`. Never logged.
    pub api_key: ApiKey,
    /// API base URL (default the public Parsec API); override for tests or a proxy.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Events per request, 1–1000 (default 100).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Only these event names (`event_names=a,b`); default all.
    #[serde(default)]
    pub event_names: Vec<String>,
    /// Only events of this user.
    #[serde(default)]
    pub user_id: Option<u64>,
    /// Earliest events to read on the first start: RFC 3339 or relative (`-24h`). Sent as
    /// `start_at` on every request. Default: the API's beginning.
    #[serde(default)]
    pub start_at: Option<String>,
    /// Latest events to read (RFC 3339), for back-fills of a closed period. Default: none.
    #[serde(default)]
    pub end_at: Option<String>,
    /// Wait between passes once the end of the log is reached (default `60s`).
    #[serde(default = "default_poll_interval")]
    pub poll_interval: String,
    /// Timeout of one request including its body (default `30s`); a timed-out request is
    /// retried with the same cursor.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: String,
}

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_string()
}
fn default_page_size() -> u32 {
    100
}
fn default_poll_interval() -> String {
    "60s".into()
}
fn default_request_timeout() -> String {
    "30s".into()
}

/// The durable cursor record (Teleport event-handler style: small and explicit).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ParsecCursor {
    /// The API's inclusive cursor for the next page; `None` once a pass reached the end.
    pub cursor: Option<String>,
    /// Id of the last event handled (the API's order); resumes with `after` at the end.
    pub last_event_id: Option<String>,
}

impl ParsecCursor {
    fn position(&self) -> PagePosition {
        match (&self.cursor, &self.last_event_id) {
            (Some(c), _) => PagePosition::Cursor(c.clone()),
            (None, Some(id)) => PagePosition::After(id.clone()),
            (None, None) => PagePosition::Start,
        }
    }
}

impl ParsecConfig {
    fn checked(&self) -> Result<Settings, String> {
        if self.team_id.trim().is_empty() {
            return Err("team_id must not be empty".into());
        }
        if !(1..=MAX_PAGE_SIZE).contains(&self.page_size) {
            return Err(format!(
                "page_size must be between 1 and {MAX_PAGE_SIZE}, not {}",
                self.page_size
            ));
        }
        let base = self.base_url.trim_end_matches('/');
        let parsed = reqwest::Url::parse(base)
            .map_err(|e| format!("base_url \"{base}\" is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("base_url \"{base}\" must be http:// or https://"));
        }
        let fmt = |t: chrono::DateTime<chrono::Utc>| {
            t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        };
        let now = chrono::Utc::now();
        let mut base_query = vec![("limit".to_string(), self.page_size.to_string())];
        if let Some(s) = &self.start_at {
            base_query.push((
                "start_at".into(),
                fmt(parse_start_time(s, now).map_err(|e| format!("start_at: {e}"))?),
            ));
        }
        if let Some(s) = &self.end_at {
            let t = sessiontrail_core::json::parse_rfc3339(s)
                .ok_or_else(|| format!("end_at: \"{s}\" is not an RFC 3339 time"))?;
            base_query.push(("end_at".into(), fmt(t)));
        }
        if let Some(u) = self.user_id {
            base_query.push(("user_id".into(), u.to_string()));
        }
        if !self.event_names.is_empty() {
            base_query.push(("event_names".into(), self.event_names.join(",")));
        }
        Ok(Settings {
            url: format!("{base}/v1/teams/{}/events", self.team_id),
            base_query,
            poll_interval: parse_duration(&self.poll_interval)
                .map_err(|e| format!("poll_interval: {e}"))?,
            request_timeout: parse_duration(&self.request_timeout)
                .map_err(|e| format!("request_timeout: {e}"))?,
        })
    }
}

struct Settings {
    url: String,
    base_query: Vec<(String, String)>,
    poll_interval: Duration,
    request_timeout: Duration,
}

#[async_trait::async_trait]
impl SourceConfig for ParsecConfig {
    fn validate(&self) -> Result<(), String> {
        self.checked().map(|_| ())
    }

    async fn build(&self, cx: SourceContext) -> Result<ComponentTask, BuildError> {
        let settings = self.checked()?;
        // Checked here rather than in validate(): the key usually comes from the environment
        // of the running service, not of the machine that validates the file.
        if self.api_key.0.trim().is_empty() {
            return Err("api_key is empty; set it, e.g. api_key: ${PARSEC_API_KEY}"
                .to_string()
                .into());
        }
        crate::install_tls_provider();
        let client = reqwest::Client::builder()
            .user_agent(concat!("sessiontrail/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot create the HTTP client: {e}"))?;
        let cursors = CursorStore::<ParsecCursor>::new(&cx.shared.store, "parsec", &cx.name);
        let stored = cursors.load()?.unwrap_or_default();
        let duplicates = cx.shared.registry.counter(
            "sessiontrail_pull_duplicate_events_total",
            "Events a pull source read again and dropped as duplicates (same event id).",
            &[("component", &cx.name)],
        );
        let source = ParsecSource {
            client,
            settings,
            api_key: self.api_key.clone(),
            cursors,
            committed: stored.clone(),
            position: stored.position(),
            seen: RecentIds::seeded(stored.last_event_id.as_deref()),
            last_id: stored.last_event_id.clone(),
            acks: AckQueue::default(),
            duplicates,
        };
        Ok(Box::pin(source.run(cx)))
    }
}

/// Ids already emitted, bounded: the oldest are forgotten first.
struct RecentIds {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl RecentIds {
    fn seeded(id: Option<&str>) -> Self {
        let mut r = RecentIds {
            set: HashSet::new(),
            order: VecDeque::new(),
        };
        if let Some(id) = id {
            r.insert(id);
        }
        r
    }

    /// False when the id was already there.
    fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() >= MAX_REMEMBERED_IDS {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.set.insert(id.to_string());
        self.order.push_back(id.to_string());
        true
    }
}

struct ParsecSource {
    client: reqwest::Client,
    settings: Settings,
    api_key: ApiKey,
    cursors: CursorStore<ParsecCursor>,
    /// The last record written to the store.
    committed: ParsecCursor,
    /// Where the next request starts (runs ahead of `committed`).
    position: PagePosition,
    seen: RecentIds,
    /// Last event id read (API order), handled or not.
    last_id: Option<String>,
    acks: AckQueue<ParsecCursor>,
    duplicates: Arc<AtomicU64>,
}

/// How a pass ended.
enum PassEnd {
    /// `next_cursor` was null: wait `poll_interval`.
    Caught,
    /// A page could not be fetched or decoded: wait `poll_interval`, resume from the cursor.
    Interrupted,
    Shutdown,
}

impl ParsecSource {
    async fn run(mut self, cx: SourceContext) -> Result<(), ComponentError> {
        let fatal = |m: String| ComponentError(format!("source {}: {m}", cx.name));
        loop {
            let end = self.pass(&cx).await.map_err(fatal)?;
            if matches!(end, PassEnd::Shutdown) {
                break;
            }
            // Between passes, keep committing pages as their acknowledgements arrive.
            let wake = tokio::time::Instant::now() + self.settings.poll_interval;
            if !settle_until(&mut self, wake, &cx.shared.shutdown)
                .await
                .map_err(fatal)?
            {
                break;
            }
        }
        // Stop sending (the pipeline drains), then record what the sinks confirmed.
        let name = Arc::clone(&cx.name);
        let SourceContext { out, dropped, .. } = cx;
        drop((out, dropped));
        settle_remaining(&mut self)
            .await
            .map_err(|m| ComponentError(format!("source {name}: {m}")))
    }
}

impl SettlesAcks for ParsecSource {
    type Checkpoint = ParsecCursor;

    fn acks(&mut self) -> &mut AckQueue<ParsecCursor> {
        &mut self.acks
    }

    /// Records a settled page; returns false when it failed (the cursor stays).
    fn settle(&mut self, settled: Settled<ParsecCursor>) -> Result<bool, String> {
        match settled {
            Settled::Handled(record) => {
                if record != self.committed {
                    self.cursors.save(&record)?;
                    self.committed = record;
                }
                Ok(true)
            }
            Settled::Failed(_) => {
                tracing::warn!("a Parsec page was not delivered; reading again from the last acknowledged cursor");
                // Later pages are re-read too: forget them and everything remembered.
                self.acks = AckQueue::default();
                self.position = self.committed.position();
                self.seen = RecentIds::seeded(self.committed.last_event_id.as_deref());
                self.last_id = self.committed.last_event_id.clone();
                Ok(false)
            }
        }
    }
}

impl ParsecSource {
    async fn pass(&mut self, cx: &SourceContext) -> Result<PassEnd, String> {
        loop {
            if cx.shared.shutdown.is_cancelled() {
                return Ok(PassEnd::Shutdown);
            }
            for s in self.acks.ready() {
                if !self.settle(s)? {
                    return Ok(PassEnd::Interrupted);
                }
            }
            while self.acks.len() >= MAX_PAGES_IN_FLIGHT {
                let Some(s) = self.acks.next().await else {
                    break;
                };
                if !self.settle(s)? {
                    return Ok(PassEnd::Interrupted);
                }
            }
            let request = PageRequest {
                url: &self.settings.url,
                api_key: &self.api_key.0,
                base_query: &self.settings.base_query,
                position: &self.position,
                timeout: self.settings.request_timeout,
            };
            let page = match fetch_page(&self.client, &request, &cx.shared.shutdown).await {
                FetchOutcome::Page(p) => p,
                FetchOutcome::Fatal(m) => return Err(m),
                FetchOutcome::GaveUp(m) => {
                    if cx.shared.shutdown.is_cancelled() {
                        return Ok(PassEnd::Shutdown);
                    }
                    tracing::warn!(source = %cx.name, "{m}");
                    cx.metrics.add_error("request_failed");
                    return Ok(PassEnd::Interrupted);
                }
                FetchOutcome::Undecodable {
                    reason,
                    message,
                    body_prefix,
                    body_len,
                } => {
                    tracing::error!(source = %cx.name, %reason, "{message}");
                    let mut dl = DeadLetter::new(&cx.name, reason, message)
                        .raw_prefix(&body_prefix, body_len)
                        .with("url", self.settings.url.as_str());
                    if let PagePosition::Cursor(c) | PagePosition::After(c) = &self.position {
                        dl = dl.with("cursor", c.as_str());
                    }
                    cx.dropped
                        .send_dead_letters(vec![dl.build(Arc::clone(&cx.name))])
                        .await
                        .map_err(|e| e.to_string())?;
                    // The page itself is not skipped: the cursor stays before it.
                    return Ok(PassEnd::Interrupted);
                }
            };
            let next_cursor = page.next_cursor.clone();
            self.emit_page(cx, page, next_cursor.clone()).await?;
            match next_cursor {
                Some(c) => self.position = PagePosition::Cursor(c),
                None => {
                    self.position = match &self.last_id {
                        Some(id) => PagePosition::After(id.clone()),
                        None => PagePosition::Start,
                    };
                    return Ok(PassEnd::Caught);
                }
            }
        }
    }

    async fn emit_page(
        &mut self,
        cx: &SourceContext,
        page: client::Page,
        next_cursor: Option<String>,
    ) -> Result<(), String> {
        let (notifier, rx) = BatchNotifier::new();
        let mut events = Vec::with_capacity(page.data.len());
        let mut dead = Vec::new();
        let mut duplicates = 0u64;
        let count = page.data.len();
        for (index, value) in page.data.into_iter().enumerate() {
            // Position by id even when the event is defective otherwise.
            if let Some(id) = value.get("id").and_then(Value::as_str) {
                self.last_id = Some(id.to_string());
            }
            let serialized = serde_json::to_vec(&value).unwrap_or_default();
            match event::validate(value, serialized.len(), DEFAULT_MAX_RECORD_BYTES) {
                Ok(obj) => {
                    let id = obj.get("id").and_then(Value::as_str).unwrap_or_default();
                    if !self.seen.insert(id) {
                        duplicates += 1;
                        continue;
                    }
                    let mut e = Event::new(obj, Arc::clone(&cx.name), serialized.len())
                        .with_ack(notifier.token());
                    e.set_label("parsec_index", index);
                    events.push(e);
                }
                Err(defect) => {
                    let dl = DeadLetter::new(&cx.name, defect.reason, defect.message);
                    let dl = if serialized.len() > DEFAULT_MAX_RECORD_BYTES {
                        dl.raw_prefix(&serialized, serialized.len())
                    } else {
                        dl.raw(&serialized)
                    };
                    let mut dl = dl.with("index", index).ack(Some(notifier.token()));
                    if let PagePosition::Cursor(c) | PagePosition::After(c) = &self.position {
                        dl = dl.with("cursor", c.as_str());
                    }
                    dead.push(dl.build(Arc::clone(&cx.name)));
                }
            }
        }
        drop(notifier);
        if duplicates > 0 {
            self.duplicates.fetch_add(duplicates, Ordering::Relaxed);
            cx.metrics.add_discarded(duplicates);
        }
        cx.metrics
            .add_received(events.len() as u64, page.bytes as u64);
        tracing::debug!(source = %cx.name, count, emitted = events.len(), duplicates, "Parsec page read");
        let checkpoint = ParsecCursor {
            cursor: next_cursor,
            last_event_id: self.last_id.clone(),
        };
        if !dead.is_empty() {
            cx.dropped
                .send_dead_letters(dead)
                .await
                .map_err(|e| e.to_string())?;
        }
        cx.out.send(events).await.map_err(|e| e.to_string())?;
        self.acks.push(checkpoint, rx);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: serde_json::Value) -> ParsecConfig {
        let mut v = serde_json::json!({"team_id": "team", "api_key": "pk-secret-value"});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn debug_output_hides_the_api_key() {
        let shown = format!("{:?}", config(serde_json::json!({})));
        assert!(!shown.contains("pk-secret-value"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn page_size_and_times_are_validated_and_sent_as_the_api_expects() {
        assert!(config(serde_json::json!({"page_size": 0}))
            .validate()
            .is_err());
        assert!(config(serde_json::json!({"page_size": 1001}))
            .validate()
            .is_err());
        assert!(config(serde_json::json!({"start_at": "yesterday"}))
            .validate()
            .is_err());
        let s = config(
            serde_json::json!({"page_size": 10, "start_at": "2025-03-10T01:00:00+01:00",
            "event_names": ["client_disconnect", "p2p_client_complete"], "user_id": 7}),
        )
        .checked()
        .unwrap();
        assert_eq!(s.url, "https://api.parsec.app/v1/teams/team/events");
        let q: Vec<(&str, &str)> = s
            .base_query
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            q,
            vec![
                ("limit", "10"),
                ("start_at", "2025-03-10T00:00:00Z"),
                ("user_id", "7"),
                ("event_names", "client_disconnect,p2p_client_complete"),
            ]
        );
    }

    #[test]
    fn the_stored_record_decides_where_paging_resumes() {
        let mut c = ParsecCursor::default();
        assert_eq!(c.position(), PagePosition::Start);
        c.last_event_id = Some("b".into());
        assert_eq!(c.position(), PagePosition::After("b".into()));
        c.cursor = Some("c".into());
        assert_eq!(c.position(), PagePosition::Cursor("c".into()));
    }
}
