//! The running CloudWatch Logs sink: events → (group, stream) batches → PutLogEvents.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;

use sessiontrail_aws::cloudwatchlogs::config::retry::RetryConfig;
use sessiontrail_aws::cloudwatchlogs::error::ProvideErrorMetadata;
use sessiontrail_aws::cloudwatchlogs::types::InputLogEvent;
use sessiontrail_aws::cloudwatchlogs::Client;
use sessiontrail_aws::AwsOptions;
use sessiontrail_core::component::{ComponentTask, SinkContext};
use sessiontrail_core::metrics::ComponentMetrics;
use sessiontrail_core::template::{event_time, Template};
use sessiontrail_core::{AckToken, BuildError, DeadLetter, DeliveryStatus, Event, Output};

use super::batch::{
    admit, rejection_of, split_into_batches, LogEntry, PutLogEventsBatch, RejectedInfo, MAX_AGE_MS,
};
use super::CloudwatchLogsSinkConfig;
use crate::batch::{run_batched, BatchLimits, BatchedSink};
use crate::retry::{
    classify, retry, Backoff, ConcurrencyLimit, Failure, CLOUDWATCH_LOGS_RETRIABLE_CODES,
};

const NOT_FOUND: &str = "ResourceNotFoundException";
const ALREADY_EXISTS: &str = "ResourceAlreadyExistsException";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamKey {
    group: String,
    stream: String,
}

/// What every request task shares.
struct Writer {
    name: Arc<str>,
    client: Client,
    config: CloudwatchLogsSinkConfig,
    backoff: Backoff,
    dropped: Output,
    metrics: Arc<ComponentMetrics>,
    retries: Arc<AtomicU64>,
}

struct Sink {
    name: Arc<str>,
    group: Template,
    stream: Template,
    max_age_ms: i64,
    writer: Arc<Writer>,
}

pub(super) async fn build(
    config: CloudwatchLogsSinkConfig,
    aws: AwsOptions,
    group: Template,
    stream: Template,
    limits: BatchLimits,
    cx: SinkContext,
) -> Result<ComponentTask, BuildError> {
    let base = aws.logs_client().await;
    // Our retry loop (crate::retry) decides; the SDK's own would retry behind its back.
    let client = Client::from_conf(
        base.config()
            .to_builder()
            .retry_config(RetryConfig::disabled())
            .timeout_config(config.request.timeouts())
            .build(),
    );
    let name = Arc::clone(&cx.name);
    let writer = Arc::new(Writer {
        name: Arc::clone(&name),
        client,
        backoff: config.request.backoff(),
        dropped: cx.dropped.clone(),
        metrics: Arc::clone(&cx.metrics),
        retries: crate::retry::retries_counter(&cx.shared.registry, &name),
        config: config.clone(),
    });
    if config.healthcheck {
        writer.healthcheck(&group).await?;
    }
    let max_age_ms = match config.retention_days {
        Some(days) => (days as i64 * 24 * 60 * 60 * 1000).min(MAX_AGE_MS),
        None => MAX_AGE_MS,
    };
    let sink = Sink {
        name,
        group,
        stream,
        max_age_ms,
        writer,
    };
    let concurrency = ConcurrencyLimit::new(config.request.concurrency);
    Ok(Box::pin(run_batched(sink, limits, concurrency, cx)))
}

impl BatchedSink for Sink {
    type Key = StreamKey;
    type Item = LogEntry;

    fn prepare(&mut self, event: Event) -> Result<(StreamKey, LogEntry, usize), Event> {
        let key = match (
            self.group.render(&event, false),
            self.stream.render(&event, false),
        ) {
            (Ok(group), Ok(stream)) => StreamKey { group, stream },
            (Err(e), _) | (_, Err(e)) => {
                return Err(DeadLetter::from_event(
                    &self.name,
                    "template_error",
                    e.to_string(),
                    event,
                ))
            }
        };
        let timestamp_ms = event_time(&event).timestamp_millis();
        let message = event.to_json_string();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let (fields, meta) = event.into_parts();
        let entry = LogEntry {
            timestamp_ms,
            message,
            ack: meta.ack,
        };
        match admit(entry, now_ms, self.max_age_ms, self.writer.config.oversize) {
            Ok(entry) => {
                let size = entry.batch_size();
                Ok((key, entry, size))
            }
            Err((entry, refusal)) => {
                let mut back = Event::new(fields, meta.source, meta.byte_size);
                back.meta.ack = entry.ack;
                back.meta.labels = meta.labels;
                Err(DeadLetter::from_event(
                    &self.name,
                    refusal.reason(),
                    refusal.describe(),
                    back,
                ))
            }
        }
    }

    fn send(&self, key: StreamKey, items: Vec<LogEntry>) -> BoxFuture<'static, ()> {
        let writer = Arc::clone(&self.writer);
        Box::pin(async move {
            // Requests of one partition go one after another; partitions run in parallel.
            for batch in split_into_batches(items) {
                writer.put(&key, batch).await;
            }
        })
    }
}

impl Writer {
    /// Sends one request, retrying; then resolves every event of it.
    async fn put(&self, key: &StreamKey, batch: PutLogEventsBatch) {
        let PutLogEventsBatch { entries, bytes } = batch;
        let mut events = Vec::with_capacity(entries.len());
        let mut acks = Vec::with_capacity(entries.len());
        for e in entries {
            match InputLogEvent::builder()
                .timestamp(e.timestamp_ms)
                .message(e.message)
                .build()
            {
                Ok(ev) => events.push(ev),
                // Both required fields are set above; keep the event's fate explicit anyway.
                Err(_) => continue,
            }
            acks.push(e.ack);
        }
        let result = retry(
            self.backoff,
            || self.put_once(key, &events),
            |f, attempt| {
                self.retries.fetch_add(1, Ordering::Relaxed);
                self.metrics.add_error(f.code());
                tracing::warn!(sink = %self.name, group = %key.group, stream = %key.stream, error = %f, attempt, "PutLogEvents failed; retrying");
            },
        )
        .await;
        match result {
            Ok(info) => {
                let mut delivered = 0u64;
                let mut dead = Vec::new();
                for (i, (event, ack)) in events.into_iter().zip(acks).enumerate() {
                    match info.as_ref().and_then(|info| rejection_of(i, info)) {
                        None => {
                            delivered += 1;
                            if let Some(ack) = ack {
                                ack.resolve(DeliveryStatus::Delivered);
                            }
                        }
                        Some(refusal) => dead.push(self.dead_letter(
                            refusal.reason(),
                            refusal.describe(),
                            key,
                            event,
                            ack,
                        )),
                    }
                }
                self.metrics.add_sent(delivered, bytes as u64);
                self.send_dead_letters(dead).await;
            }
            Err(failure) => {
                self.metrics.add_error(failure.code());
                tracing::error!(sink = %self.name, group = %key.group, stream = %key.stream, error = %failure, "PutLogEvents refused; events sent to {}.dropped", self.name);
                let dead = events
                    .into_iter()
                    .zip(acks)
                    .map(|(event, ack)| {
                        self.dead_letter(
                            "destination_rejected",
                            &failure.to_string(),
                            key,
                            event,
                            ack,
                        )
                        .with("error_code", failure.code())
                    })
                    .map(|d| d.build(Arc::clone(&self.name)))
                    .collect();
                self.send_dead_letters_built(dead).await;
            }
        }
    }

    fn dead_letter(
        &self,
        reason: &str,
        message: &str,
        key: &StreamKey,
        event: InputLogEvent,
        ack: Option<AckToken>,
    ) -> DeadLetter {
        let raw = event.message();
        DeadLetter::new(&self.name, reason, message)
            .raw(raw.as_bytes())
            .with("log_group", key.group.as_str())
            .with("log_stream", key.stream.as_str())
            .with("timestamp", event.timestamp())
            .ack(ack)
    }

    async fn send_dead_letters(&self, dead: Vec<DeadLetter>) {
        let built = dead
            .into_iter()
            .map(|d| d.build(Arc::clone(&self.name)))
            .collect();
        self.send_dead_letters_built(built).await;
    }

    async fn send_dead_letters_built(&self, dead: Vec<Event>) {
        if dead.is_empty() {
            return;
        }
        if let Err(e) = self.dropped.send_dead_letters(dead).await {
            // Downstream is gone (fatal shutdown): the events stay unacknowledged, so their
            // sources will read them again.
            tracing::error!(sink = %self.name, "cannot forward dead letters: {e}");
        }
    }

    /// One PutLogEvents attempt; a missing group or stream is created and the put repeated.
    async fn put_once(
        &self,
        key: &StreamKey,
        events: &[InputLogEvent],
    ) -> Result<Option<RejectedInfo>, Failure> {
        let mut created = false;
        loop {
            let r = self
                .client
                .put_log_events()
                .log_group_name(&key.group)
                .log_stream_name(&key.stream)
                .set_log_events(Some(events.to_vec()))
                .send()
                .await;
            match r {
                Ok(out) => {
                    return Ok(out.rejected_log_events_info().map(|i| RejectedInfo {
                        too_new_start_index: i.too_new_log_event_start_index(),
                        too_old_end_index: i.too_old_log_event_end_index(),
                        expired_end_index: i.expired_log_event_end_index(),
                    }))
                }
                Err(e) if e.code() == Some(NOT_FOUND) && !created => {
                    self.create_destination(key).await?;
                    created = true;
                }
                Err(e) => return Err(classify(&e, CLOUDWATCH_LOGS_RETRIABLE_CODES)),
            }
        }
    }

    /// Creates the stream, and the group first if it is missing too (when allowed).
    async fn create_destination(&self, key: &StreamKey) -> Result<(), Failure> {
        if !self.config.create_missing_stream {
            return Err(Failure::Permanent {
                code: NOT_FOUND.into(),
                message: format!(
                    "log stream {:?} in group {:?} does not exist and create_missing_stream is false",
                    key.stream, key.group
                ),
            });
        }
        match self.create_stream(key).await {
            Err(Failure::Permanent { code, .. }) if code == NOT_FOUND => {
                self.create_group(&key.group).await?;
                self.create_stream(key).await
            }
            other => other,
        }
    }

    async fn create_stream(&self, key: &StreamKey) -> Result<(), Failure> {
        let r = self
            .client
            .create_log_stream()
            .log_group_name(&key.group)
            .log_stream_name(&key.stream)
            .send()
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(ALREADY_EXISTS) => Ok(()),
            Err(e) => Err(classify(&e, CLOUDWATCH_LOGS_RETRIABLE_CODES)),
        }
    }

    async fn create_group(&self, group: &str) -> Result<(), Failure> {
        if !self.config.create_missing_group {
            return Err(Failure::Permanent {
                code: NOT_FOUND.into(),
                message: format!(
                    "log group {group:?} does not exist and create_missing_group is false"
                ),
            });
        }
        let r = self
            .client
            .create_log_group()
            .log_group_name(group)
            .send()
            .await;
        match r {
            Ok(_) => {
                if let Some(days) = self.config.retention_days {
                    self.client
                        .put_retention_policy()
                        .log_group_name(group)
                        .retention_in_days(days as i32)
                        .send()
                        .await
                        .map_err(|e| classify(&e, CLOUDWATCH_LOGS_RETRIABLE_CODES))?;
                }
                Ok(())
            }
            Err(e) if e.code() == Some(ALREADY_EXISTS) => Ok(()),
            Err(e) => Err(classify(&e, CLOUDWATCH_LOGS_RETRIABLE_CODES)),
        }
    }

    /// At start-up: credentials work, and a static log group exists or can be created.
    async fn healthcheck(&self, group: &Template) -> Result<(), BuildError> {
        let fail = |what: String| {
            BuildError(format!(
                "sink {}: CloudWatch Logs healthcheck failed: {what} (set `healthcheck: false` to start anyway)",
                self.name
            ))
        };
        let prefix = if group.is_static() {
            Some(group.source().to_string())
        } else {
            None
        };
        let r = self
            .client
            .describe_log_groups()
            .set_log_group_name_prefix(prefix.clone())
            .limit(1)
            .send()
            .await;
        let out = match r {
            Ok(out) => out,
            Err(e) => {
                let f = classify(&e, CLOUDWATCH_LOGS_RETRIABLE_CODES);
                return Err(fail(format!(
                    "{f}; check the credentials (AWS default chain), the region and that the role may call logs:DescribeLogGroups"
                )));
            }
        };
        if let Some(group) = prefix {
            let exists = out
                .log_groups()
                .iter()
                .any(|g| g.log_group_name() == Some(group.as_str()));
            if !exists {
                if !self.config.create_missing_group {
                    return Err(fail(format!(
                        "log group {group:?} does not exist; create it or set create_missing_group: true"
                    )));
                }
                self.create_group(&group)
                    .await
                    .map_err(|f| fail(format!("cannot create log group {group:?}: {f}")))?;
            }
        }
        Ok(())
    }
}
