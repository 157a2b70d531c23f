//! `type: aws_cloudwatch_logs` — pulls log events with FilterLogEvents (Vector has no such
//! source). SSM Session Manager streams session data here, one JSON record per event.
//!
//! Position: per log group a **time watermark**, never a `nextToken` (they expire after 24 h).
//! Each poll asks for events with `timestamp >= watermark - overlap_window` and pages through
//! `nextToken` until it is absent (pages may be empty while more follow). Events already
//! emitted are dropped by `eventId` (a set bounded by the overlap window). Once every event
//! of a group's poll is acknowledged, the group's watermark becomes the wall-clock time at
//! which that poll started. So an event that is ingested late (its timestamp older than its
//! arrival) is still read as long as the delay is within `overlap_window`. After a restart
//! the in-memory id set is empty: events inside the overlap window may be delivered again,
//! nothing older is.
//!
//! Every request of the source (all groups, discovery included) goes through one pacer
//! (`max_requests_per_second`, default 1) and ThrottlingException backs off.
//!
//! Files: `pacer.rs` (shared request rate), `seen.rs` (the bounded id window).

mod pacer;
mod seen;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use sessiontrail_aws::cloudwatchlogs as cwl;
use sessiontrail_aws::cloudwatchlogs::error::ProvideErrorMetadata;
use sessiontrail_aws::AwsOptions;
use sessiontrail_core::component::{ComponentError, ComponentTask, SourceContext};
use sessiontrail_core::json::{decode_record, Decoded, DEFAULT_MAX_RECORD_BYTES};
use sessiontrail_core::{
    BatchNotifier, BuildError, DeadLetter, Event, Object, SourceConfig, Value,
};

use crate::decoding::Decoding;
use crate::pull::{
    aws_error_message, parse_duration, parse_start_time, settle_remaining, settle_until,
    sleep_or_shutdown, AckQueue, Backoff, CursorStore, Settled, SettlesAcks,
};
use pacer::RequestPacer;
use seen::SeenEvents;

/// CloudWatch Logs FilterLogEvents: at most 10,000 events per response.
const MAX_PAGE_LIMIT: i32 = 10_000;
/// Events per channel message.
const BATCH_EVENTS: usize = 1000;
/// Attempts of one call on throttling / transient errors before the group is skipped until
/// the next poll (its watermark stays).
const MAX_CALL_ATTEMPTS: u32 = 8;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudWatchLogsSourceConfig {
    /// Log groups to read (exclusive with `group_prefix`).
    #[serde(default)]
    pub group_names: Vec<String>,
    /// Read every log group whose name starts with this (re-discovered on every poll).
    #[serde(default)]
    pub group_prefix: Option<String>,
    /// Only streams whose name starts with this (SSM: stream = session id).
    #[serde(default)]
    pub stream_prefix: Option<String>,
    /// CloudWatch filter pattern (server-side), e.g. `{ $.sessionId = "ops-*" }`.
    #[serde(default)]
    pub filter_pattern: Option<String>,
    /// Where a group without a stored watermark starts: RFC 3339 or relative (`-24h`).
    /// Default `-1h`.
    #[serde(default = "default_start_time")]
    pub start_time: String,
    /// Wait between polls (default `10s`).
    #[serde(default = "default_poll_interval")]
    pub poll_interval: String,
    /// How far behind the watermark each poll looks again, for late-arriving events
    /// (default `5m`). Events arriving later than this after their timestamp can be missed.
    #[serde(default = "default_overlap_window")]
    pub overlap_window: String,
    /// Request rate shared by all groups of this source (default 1; the account-wide
    /// FilterLogEvents quota is about 5).
    #[serde(default = "default_max_requests_per_second")]
    pub max_requests_per_second: f64,
    /// Events per FilterLogEvents response, 1–10000 (default 10000); lower it to bound the
    /// memory of one page when messages are large.
    #[serde(default = "default_page_limit")]
    pub page_limit: i32,
    /// `ndjson` (default: each message is a JSON object, e.g. an SSM session record; other
    /// messages are dead-lettered) or `lines` (`{"message": "..."}`).
    #[serde(default)]
    pub decoding: Decoding,
    /// Largest message accepted (default 1 MiB).
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// Field receiving `{log_group, log_stream, event_id, timestamp, ingestion_time}`;
    /// `""` leaves records untouched (labels `log_group`, `log_stream`, `event_id`,
    /// `ingestion_time` are always set).
    #[serde(default = "default_metadata_key")]
    pub metadata_key: String,
    #[serde(flatten)]
    pub aws: AwsOptions,
}

fn default_start_time() -> String {
    "-1h".into()
}
fn default_poll_interval() -> String {
    "10s".into()
}
fn default_overlap_window() -> String {
    "5m".into()
}
fn default_max_requests_per_second() -> f64 {
    1.0
}
fn default_page_limit() -> i32 {
    MAX_PAGE_LIMIT
}
fn default_max_record_bytes() -> usize {
    DEFAULT_MAX_RECORD_BYTES
}
fn default_metadata_key() -> String {
    "_cloudwatch".into()
}

/// The durable cursor record: one watermark per log group.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CloudWatchCursor {
    /// Log group → every event with a timestamp before `watermark_ms - overlap` was read and
    /// acknowledged (epoch milliseconds).
    pub groups: BTreeMap<String, GroupWatermark>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct GroupWatermark {
    pub watermark_ms: i64,
}

struct Settings {
    poll_interval: Duration,
    overlap_ms: i64,
    start_ms: i64,
}

impl CloudWatchLogsSourceConfig {
    fn settings(&self) -> Result<Settings, String> {
        match (self.group_names.is_empty(), &self.group_prefix) {
            (true, None) => return Err("set group_names or group_prefix".into()),
            (false, Some(_)) => {
                return Err("group_names and group_prefix are exclusive; set one of them".into())
            }
            _ => {}
        }
        if self.group_names.iter().any(|g| g.trim().is_empty()) {
            return Err("group_names must not contain empty names".into());
        }
        if !(self.max_requests_per_second > 0.0 && self.max_requests_per_second <= 100.0) {
            return Err(format!(
                "max_requests_per_second must be above 0 and at most 100, not {}",
                self.max_requests_per_second
            ));
        }
        if !(1..=MAX_PAGE_LIMIT).contains(&self.page_limit) {
            return Err(format!(
                "page_limit must be between 1 and {MAX_PAGE_LIMIT}, not {}",
                self.page_limit
            ));
        }
        if self.max_record_bytes == 0 {
            return Err("max_record_bytes must be greater than 0".into());
        }
        let overlap =
            parse_duration(&self.overlap_window).map_err(|e| format!("overlap_window: {e}"))?;
        Ok(Settings {
            poll_interval: parse_duration(&self.poll_interval)
                .map_err(|e| format!("poll_interval: {e}"))?,
            overlap_ms: overlap.as_millis() as i64,
            start_ms: parse_start_time(&self.start_time, chrono::Utc::now())
                .map_err(|e| format!("start_time: {e}"))?
                .timestamp_millis(),
        })
    }
}

#[async_trait::async_trait]
impl SourceConfig for CloudWatchLogsSourceConfig {
    fn validate(&self) -> Result<(), String> {
        self.settings().map(|_| ())
    }

    async fn build(&self, cx: SourceContext) -> Result<ComponentTask, BuildError> {
        let settings = self.settings()?;
        let client = self.aws.logs_client().await;
        let cursors =
            CursorStore::<CloudWatchCursor>::new(&cx.shared.store, "aws_cloudwatch_logs", &cx.name);
        let committed = cursors.load()?.unwrap_or_default();
        let duplicates = cx.shared.registry.counter(
            "sessiontrail_pull_duplicate_events_total",
            "Events a pull source read again and dropped as duplicates (same event id).",
            &[("component", &cx.name)],
        );
        let requests = cx.shared.registry.counter(
            "sessiontrail_cloudwatch_logs_requests_total",
            "CloudWatch Logs API requests made by the source.",
            &[("component", &cx.name)],
        );
        let source = CloudWatchSource {
            client,
            pacer: RequestPacer::new(self.max_requests_per_second),
            read_positions: committed
                .groups
                .iter()
                .map(|(g, w)| (g.clone(), w.watermark_ms))
                .collect(),
            committed,
            cursors,
            settings,
            config: self.clone(),
            seen: BTreeMap::new(),
            acks: AckQueue::default(),
            duplicates,
            requests,
        };
        Ok(Box::pin(source.run(cx)))
    }
}

/// What one group's poll covered; becomes the group's watermark once acknowledged.
struct GroupPoll {
    group: String,
    watermark_ms: i64,
    /// Ids this poll emitted, forgotten again if it is not delivered (so they are re-read).
    ids: Vec<String>,
}

struct CloudWatchSource {
    client: cwl::Client,
    pacer: RequestPacer,
    committed: CloudWatchCursor,
    /// Watermarks of polls already read (runs ahead of `committed`).
    read_positions: BTreeMap<String, i64>,
    cursors: CursorStore<CloudWatchCursor>,
    settings: Settings,
    config: CloudWatchLogsSourceConfig,
    seen: BTreeMap<String, SeenEvents>,
    acks: AckQueue<GroupPoll>,
    duplicates: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

/// A call failed for good (after retries) or shutdown began.
enum CallError {
    Shutdown,
    /// The log group does not exist (yet).
    NotFound,
    Failed(String),
}

impl CloudWatchSource {
    async fn run(mut self, cx: SourceContext) -> Result<(), ComponentError> {
        let fatal = |m: String| ComponentError(format!("source {}: {m}", cx.name));
        'polls: loop {
            let groups = match self.groups(&cx).await {
                Ok(g) => g,
                Err(CallError::Shutdown) => break,
                Err(CallError::NotFound) => Vec::new(),
                Err(CallError::Failed(m)) => {
                    tracing::warn!(source = %cx.name, "listing log groups failed: {m}; retrying at the next poll");
                    cx.metrics.add_error("describe_log_groups_failed");
                    Vec::new()
                }
            };
            for group in groups {
                if cx.shared.shutdown.is_cancelled() {
                    break 'polls;
                }
                for s in self.acks.ready() {
                    self.settle(s).map_err(fatal)?;
                }
                match self.poll_group(&cx, &group).await {
                    Ok(()) => {}
                    Err(CallError::Shutdown) => break 'polls,
                    Err(CallError::NotFound) => {
                        tracing::warn!(source = %cx.name, %group, "log group does not exist (yet); checking again at the next poll");
                    }
                    Err(CallError::Failed(m)) => {
                        tracing::warn!(source = %cx.name, %group, "reading the log group failed: {m}; its watermark stays, retrying at the next poll");
                        cx.metrics.add_error("filter_log_events_failed");
                    }
                }
            }
            let wake = tokio::time::Instant::now() + self.settings.poll_interval;
            if !settle_until(&mut self, wake, &cx.shared.shutdown)
                .await
                .map_err(fatal)?
            {
                break;
            }
        }
        let name = Arc::clone(&cx.name);
        let SourceContext { out, dropped, .. } = cx;
        drop((out, dropped));
        settle_remaining(&mut self)
            .await
            .map_err(|m| ComponentError(format!("source {name}: {m}")))
    }
}

impl SettlesAcks for CloudWatchSource {
    type Checkpoint = GroupPoll;

    fn acks(&mut self) -> &mut AckQueue<GroupPoll> {
        &mut self.acks
    }

    /// Always true: log groups have their own watermarks, so a failed poll of one group does
    /// not hold back the polls of the others.
    fn settle(&mut self, settled: Settled<GroupPoll>) -> Result<bool, String> {
        match settled {
            Settled::Handled(poll) => {
                let prev = self
                    .committed
                    .groups
                    .get(&poll.group)
                    .map(|w| w.watermark_ms);
                if prev.is_none_or(|p| poll.watermark_ms > p) {
                    self.committed.groups.insert(
                        poll.group.clone(),
                        GroupWatermark {
                            watermark_ms: poll.watermark_ms,
                        },
                    );
                    self.cursors.save(&self.committed)?;
                }
                // Events older than the committed window are never returned again.
                if let Some(seen) = self.seen.get_mut(&poll.group) {
                    seen.forget_before(poll.watermark_ms - self.settings.overlap_ms);
                }
            }
            Settled::Failed(poll) => {
                tracing::warn!(group = %poll.group, "events of a poll were not delivered; reading them again from the last acknowledged watermark");
                if let Some(seen) = self.seen.get_mut(&poll.group) {
                    for id in &poll.ids {
                        seen.remove(id);
                    }
                }
                match self.committed.groups.get(&poll.group) {
                    Some(w) => self.read_positions.insert(poll.group, w.watermark_ms),
                    None => self.read_positions.remove(&poll.group),
                };
            }
        }
        Ok(true)
    }
}

impl CloudWatchSource {
    /// The groups to read this poll.
    async fn groups(&mut self, cx: &SourceContext) -> Result<Vec<String>, CallError> {
        let Some(prefix) = self.config.group_prefix.clone() else {
            return Ok(self.config.group_names.clone());
        };
        let mut groups = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let client = self.client.clone();
            let (p, t) = (prefix.clone(), token.clone());
            let resp = self
                .call(cx, || {
                    client
                        .describe_log_groups()
                        .log_group_name_prefix(p.clone())
                        .set_next_token(t.clone())
                        .send()
                })
                .await?;
            groups.extend(
                resp.log_groups()
                    .iter()
                    .filter_map(|g| g.log_group_name().map(str::to_string)),
            );
            token = resp.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(groups);
            }
        }
    }

    /// One paced call with retries on throttling and transient errors.
    async fn call<T, E, F, Fut>(&mut self, cx: &SourceContext, mut make: F) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<
            Output = Result<T, cwl::error::SdkError<E, cwl::config::http::HttpResponse>>,
        >,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            tokio::select! {
                _ = cx.shared.shutdown.cancelled() => return Err(CallError::Shutdown),
                _ = self.pacer.wait() => {}
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            let result = tokio::select! {
                _ = cx.shared.shutdown.cancelled() => return Err(CallError::Shutdown),
                r = make() => r,
            };
            let err = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let code = err
                .as_service_error()
                .and_then(|s| s.code())
                .unwrap_or_default()
                .to_string();
            if code == "ResourceNotFoundException" {
                return Err(CallError::NotFound);
            }
            let throttled = matches!(
                code.as_str(),
                "ThrottlingException" | "LimitExceededException" | "RequestLimitExceeded"
            );
            let transient = throttled
                || code == "ServiceUnavailableException"
                || matches!(
                    err,
                    cwl::error::SdkError::TimeoutError(_)
                        | cwl::error::SdkError::DispatchFailure(_)
                        | cwl::error::SdkError::ResponseError(_)
                );
            let message = aws_error_message(&err);
            if !transient || backoff.attempts() + 1 >= MAX_CALL_ATTEMPTS {
                return Err(CallError::Failed(message));
            }
            let delay = backoff.next_delay();
            if throttled {
                // Slow the whole source down, not only this call.
                self.pacer.penalize(delay);
                cx.metrics.add_error("throttled");
                tracing::warn!(source = %cx.name, ?delay, "CloudWatch Logs throttled the source; backing off");
            } else {
                tracing::warn!(source = %cx.name, ?delay, "CloudWatch Logs call failed: {message}; retrying");
                if !sleep_or_shutdown(delay, &cx.shared.shutdown).await {
                    return Err(CallError::Shutdown);
                }
            }
        }
    }

    async fn poll_group(&mut self, cx: &SourceContext, group: &str) -> Result<(), CallError> {
        let poll_started_ms = chrono::Utc::now().timestamp_millis();
        let start_ms = match self.read_positions.get(group) {
            Some(w) => (w - self.settings.overlap_ms).max(0),
            None => self.settings.start_ms,
        };
        let (notifier, rx) = BatchNotifier::new();
        let mut ids = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0u64;
        loop {
            let client = self.client.clone();
            let t = token.clone();
            let cfg = &self.config;
            let (pattern, stream_prefix) = (cfg.filter_pattern.clone(), cfg.stream_prefix.clone());
            let g = group.to_string();
            let page_limit = cfg.page_limit;
            let resp = self
                .call(cx, || {
                    client
                        .filter_log_events()
                        .log_group_name(g.clone())
                        .start_time(start_ms)
                        .set_filter_pattern(pattern.clone())
                        .set_log_stream_name_prefix(stream_prefix.clone())
                        .set_next_token(t.clone())
                        .limit(page_limit)
                        .send()
                })
                .await?;
            pages += 1;
            self.emit_page(cx, group, resp.events(), &notifier, &mut ids)
                .await
                .map_err(|_| CallError::Shutdown)?;
            // An empty page with a token is normal: keep going until the token is absent.
            token = resp.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        drop(notifier);
        tracing::debug!(source = %cx.name, %group, pages, events = ids.len(), start_ms, "log group polled");
        let watermark_ms =
            poll_started_ms.max(self.read_positions.get(group).copied().unwrap_or(i64::MIN));
        self.read_positions.insert(group.to_string(), watermark_ms);
        self.acks.push(
            GroupPoll {
                group: group.to_string(),
                watermark_ms,
                ids,
            },
            rx,
        );
        Ok(())
    }

    async fn emit_page(
        &mut self,
        cx: &SourceContext,
        group: &str,
        page: &[cwl::types::FilteredLogEvent],
        notifier: &BatchNotifier,
        ids: &mut Vec<String>,
    ) -> Result<(), sessiontrail_core::output::OutputClosed> {
        let seen = self.seen.entry(group.to_string()).or_default();
        let mut batch = Vec::with_capacity(page.len().min(BATCH_EVENTS));
        let mut dead = Vec::new();
        let mut duplicates = 0u64;
        let mut bytes = 0u64;
        for ev in page {
            let stream = ev.log_stream_name().unwrap_or_default();
            // moto and some CloudWatch endpoints ignore the stream prefix: check it here too.
            if let Some(p) = &self.config.stream_prefix {
                if !stream.starts_with(p.as_str()) {
                    continue;
                }
            }
            let event_id = ev.event_id().unwrap_or_default();
            let timestamp = ev.timestamp().unwrap_or_default();
            if !event_id.is_empty() && !seen.insert(event_id, timestamp) {
                duplicates += 1;
                continue;
            }
            ids.push(event_id.to_string());
            let message = ev.message().unwrap_or_default();
            bytes += message.len() as u64;
            let mut origin = Object::new();
            origin.insert("log_group".into(), group.into());
            origin.insert("log_stream".into(), stream.into());
            origin.insert("event_id".into(), event_id.into());
            origin.insert("timestamp".into(), timestamp.into());
            origin.insert(
                "ingestion_time".into(),
                ev.ingestion_time().unwrap_or_default().into(),
            );
            let fields = match self.config.decoding {
                Decoding::Ndjson => {
                    match decode_record(message.as_bytes(), self.config.max_record_bytes) {
                        Ok(Decoded::Record(obj)) => obj.into_object(),
                        Ok(Decoded::Blank) => continue,
                        Err(e) => {
                            let mut dl = DeadLetter::new(&cx.name, e.reason, e.message);
                            dl = if message.len() > self.config.max_record_bytes {
                                dl.raw_prefix(message.as_bytes(), message.len())
                            } else {
                                dl.raw(message.as_bytes())
                            };
                            for (k, v) in &origin {
                                dl = dl.with(k, v.clone());
                            }
                            dead.push(dl.ack(Some(notifier.token())).build(Arc::clone(&cx.name)));
                            continue;
                        }
                    }
                }
                Decoding::Lines => {
                    let mut o = Object::new();
                    o.insert("message".into(), message.into());
                    o
                }
            };
            let mut fields = fields;
            let mut event = Event::new(Object::new(), Arc::clone(&cx.name), message.len())
                .with_ack(notifier.token());
            for (k, v) in &origin {
                event.set_label(k.clone(), v.clone());
            }
            if !self.config.metadata_key.is_empty() {
                fields.insert(self.config.metadata_key.clone(), Value::Object(origin));
            }
            event.set_fields(fields);
            batch.push(event);
            if batch.len() >= BATCH_EVENTS {
                cx.metrics.add_received(batch.len() as u64, 0);
                cx.out.send(std::mem::take(&mut batch)).await?;
            }
        }
        if duplicates > 0 {
            self.duplicates.fetch_add(duplicates, Ordering::Relaxed);
            cx.metrics.add_discarded(duplicates);
        }
        cx.metrics.add_received(batch.len() as u64, bytes);
        if !dead.is_empty() {
            cx.dropped.send_dead_letters(dead).await?;
        }
        cx.out.send(batch).await
    }
}
