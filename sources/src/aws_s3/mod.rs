//! `type: aws_s3` — reads the objects of a bucket prefix in key order, without SQS.
//!
//! Each poll lists keys after a durable `start_after` key (`ListObjectsV2 StartAfter`; S3
//! lists in UTF-8 binary order, which matches the date-partitioned layouts of the WSB session
//! logger and of SSM), reads every new object, decodes it (`decode.rs`) and emits its records.
//! An object is one checkpoint unit: its key becomes the stored `start_after` only once all its
//! records and dead letters are acknowledged, and only after every earlier key. Objects are
//! expected to be immutable once written (as both producers do): a rewritten object whose key
//! is behind the cursor is not read again.

mod decode;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use sessiontrail_aws::s3;
use sessiontrail_aws::s3::error::ProvideErrorMetadata;
use sessiontrail_aws::AwsOptions;
use sessiontrail_core::component::{ComponentError, ComponentTask, SourceContext};
use sessiontrail_core::json::DEFAULT_MAX_RECORD_BYTES;
use sessiontrail_core::{
    BatchNotifier, BuildError, DeadLetter, Event, Object, SourceConfig, Value,
};

use crate::pull::{
    parse_duration, settle_remaining, settle_until, sleep_or_shutdown, AckQueue, Backoff,
    CursorStore, Settled, SettlesAcks,
};
use decode::{decode_object, DecodeOptions, Position};
pub use decode::{ObjectFormat, TextRecords};

/// S3 ListObjectsV2 returns at most 1,000 keys per call.
const LIST_PAGE_KEYS: i32 = 1000;
/// Objects fetched ahead of the one being emitted (responses are consumed in key order).
const OBJECT_FETCH_CONCURRENCY: usize = 4;
/// Objects emitted but not yet acknowledged before the source waits.
const MAX_OBJECTS_IN_FLIGHT: usize = 16;
/// Events per channel message.
const BATCH_EVENTS: usize = 1000;
/// Attempts of one S3 call on transient errors before the pass is given up until the next
/// poll (the cursor stays).
const MAX_S3_ATTEMPTS: u32 = 5;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3SourceConfig {
    /// Bucket to read.
    pub bucket: String,
    /// Only keys starting with this prefix (e.g. `session-logs/` or `portal-id/2025/`).
    #[serde(default)]
    pub prefix: String,
    /// Wait between listings once every listed object was read (default `60s`).
    #[serde(default = "default_poll_interval")]
    pub poll_interval: String,
    /// Key to start after on the first start (objects up to and including it are skipped);
    /// default: the beginning of the prefix.
    #[serde(default)]
    pub start_after: Option<String>,
    /// `auto` (default: `[` → JSON array, `{` → NDJSON, else text), `ndjson`, `json_array`, `text`.
    #[serde(default)]
    pub format: ObjectFormat,
    /// Text objects: `lines` (default; one record per line) or `object` (one record per object).
    #[serde(default)]
    pub text_records: TextRecords,
    /// Largest record (line, array element, whole transcript) in bytes (default 1 MiB).
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// Largest object read (stored size, default 64 MiB); larger objects are dead-lettered
    /// with reason `object_too_large`. Also bounds a decompressed JSON array document.
    #[serde(default = "default_max_object_bytes")]
    pub max_object_bytes: usize,
    /// Field receiving `{bucket, key, line|index}` on every record; `""` leaves records
    /// untouched (the same values are always available as labels `s3_bucket`, `s3_key`).
    #[serde(default = "default_metadata_key")]
    pub metadata_key: String,
    #[serde(flatten)]
    pub aws: AwsOptions,
}

fn default_poll_interval() -> String {
    "60s".into()
}
fn default_max_record_bytes() -> usize {
    DEFAULT_MAX_RECORD_BYTES
}
fn default_max_object_bytes() -> usize {
    64 << 20
}
fn default_metadata_key() -> String {
    "_s3".into()
}

/// The durable cursor record.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct S3Cursor {
    /// Every object up to and including this key was read and acknowledged.
    pub start_after: Option<String>,
}

#[async_trait::async_trait]
impl SourceConfig for S3SourceConfig {
    fn validate(&self) -> Result<(), String> {
        if self.bucket.trim().is_empty() {
            return Err("bucket must not be empty".into());
        }
        parse_duration(&self.poll_interval).map_err(|e| format!("poll_interval: {e}"))?;
        if self.max_record_bytes == 0 || self.max_object_bytes == 0 {
            return Err("max_record_bytes and max_object_bytes must be greater than 0".into());
        }
        Ok(())
    }

    async fn build(&self, cx: SourceContext) -> Result<ComponentTask, BuildError> {
        self.validate()?;
        let client = self.aws.s3_client(false).await;
        let cursors = CursorStore::<S3Cursor>::new(&cx.shared.store, "aws_s3", &cx.name);
        let committed = match cursors.load()? {
            Some(c) => c,
            None => S3Cursor {
                start_after: self.start_after.clone(),
            },
        };
        let source = S3Source {
            client,
            config: self.clone(),
            poll_interval: parse_duration(&self.poll_interval)?,
            cursors,
            position: committed.start_after.clone(),
            committed,
            acks: AckQueue::default(),
        };
        Ok(Box::pin(source.run(cx)))
    }
}

struct S3Source {
    client: s3::Client,
    config: S3SourceConfig,
    poll_interval: Duration,
    cursors: CursorStore<S3Cursor>,
    committed: S3Cursor,
    /// Last key emitted (runs ahead of `committed`).
    position: Option<String>,
    acks: AckQueue<String>,
}

enum PassEnd {
    Caught,
    Interrupted,
    Shutdown,
}

/// One fetched object, ready to emit.
struct FetchedObject {
    key: String,
    result: Result<Option<Vec<u8>>, String>,
    size: i64,
}

impl S3Source {
    async fn run(mut self, cx: SourceContext) -> Result<(), ComponentError> {
        let fatal = |m: String| ComponentError(format!("source {}: {m}", cx.name));
        loop {
            let end = self.pass(&cx).await.map_err(fatal)?;
            if matches!(end, PassEnd::Shutdown) {
                break;
            }
            let wake = tokio::time::Instant::now() + self.poll_interval;
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

impl SettlesAcks for S3Source {
    type Checkpoint = String;

    fn acks(&mut self) -> &mut AckQueue<String> {
        &mut self.acks
    }

    fn settle(&mut self, settled: Settled<String>) -> Result<bool, String> {
        match settled {
            Settled::Handled(key) => {
                let record = S3Cursor {
                    start_after: Some(key),
                };
                self.cursors.save(&record)?;
                self.committed = record;
                Ok(true)
            }
            Settled::Failed(key) => {
                tracing::warn!(bucket = %self.config.bucket, %key, "an object's events were not delivered; reading again from the last acknowledged key");
                self.acks = AckQueue::default();
                self.position = self.committed.start_after.clone();
                Ok(false)
            }
        }
    }
}

impl S3Source {
    async fn pass(&mut self, cx: &SourceContext) -> Result<PassEnd, String> {
        loop {
            let keys = match self.list_page(cx).await? {
                Some(k) => k,
                None if cx.shared.shutdown.is_cancelled() => return Ok(PassEnd::Shutdown),
                None => return Ok(PassEnd::Interrupted),
            };
            if keys.0.is_empty() {
                return Ok(PassEnd::Caught);
            }
            let truncated = keys.1;
            let client = self.client.clone();
            let bucket = self.config.bucket.clone();
            let max_object = self.config.max_object_bytes;
            let shutdown = cx.shared.shutdown.clone();
            let mut fetches = futures::stream::iter(keys.0)
                .map(|(key, size)| {
                    let client = client.clone();
                    let bucket = bucket.clone();
                    let shutdown = shutdown.clone();
                    async move {
                        let result = if size > max_object as i64 {
                            Ok(None)
                        } else {
                            get_object(&client, &bucket, &key, &shutdown).await
                        };
                        FetchedObject { key, result, size }
                    }
                })
                .buffered(OBJECT_FETCH_CONCURRENCY);
            while let Some(fetched) = fetches.next().await {
                if cx.shared.shutdown.is_cancelled() {
                    return Ok(PassEnd::Shutdown);
                }
                match fetched.result {
                    Ok(body) => {
                        self.emit_object(cx, &fetched.key, fetched.size, body)
                            .await?
                    }
                    Err(m) => {
                        tracing::warn!(source = %cx.name, key = %fetched.key, "{m}; retrying from this object at the next poll");
                        cx.metrics.add_error("get_object_failed");
                        return Ok(PassEnd::Interrupted);
                    }
                }
                self.position = Some(fetched.key);
                for s in self.acks.ready() {
                    if !self.settle(s)? {
                        return Ok(PassEnd::Interrupted);
                    }
                }
                while self.acks.len() >= MAX_OBJECTS_IN_FLIGHT {
                    let Some(s) = self.acks.next().await else {
                        break;
                    };
                    if !self.settle(s)? {
                        return Ok(PassEnd::Interrupted);
                    }
                }
            }
            if !truncated {
                return Ok(PassEnd::Caught);
            }
        }
    }

    /// Keys (with sizes) after the current position; `None` when listing kept failing.
    async fn list_page(
        &self,
        cx: &SourceContext,
    ) -> Result<Option<(Vec<(String, i64)>, bool)>, String> {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(20));
        loop {
            let mut req = self
                .client
                .list_objects_v2()
                .bucket(&self.config.bucket)
                .max_keys(LIST_PAGE_KEYS);
            if !self.config.prefix.is_empty() {
                req = req.prefix(&self.config.prefix);
            }
            if let Some(after) = &self.position {
                req = req.start_after(after);
            }
            match req.send().await {
                Ok(resp) => {
                    let keys = resp
                        .contents()
                        .iter()
                        .filter_map(|o| Some((o.key()?.to_string(), o.size().unwrap_or(0))))
                        // "Folder" placeholder objects carry no records.
                        .filter(|(k, _)| !k.ends_with('/'))
                        .collect::<Vec<_>>();
                    // A page of only placeholders still moves the position.
                    let last_listed = resp.contents().last().and_then(|o| o.key());
                    let truncated = resp.is_truncated().unwrap_or(false);
                    if keys.is_empty() && truncated {
                        if let Some(k) = last_listed {
                            return Ok(Some((vec![(k.to_string(), -1)], true)));
                        }
                    }
                    return Ok(Some((keys, truncated)));
                }
                Err(e) => {
                    let msg = crate::pull::aws_error_message(&e);
                    if !is_retriable(&e) {
                        return Err(format!(
                            "cannot list s3://{}/{}: {msg}; check the bucket name, region and the s3:ListBucket permission",
                            self.config.bucket, self.config.prefix
                        ));
                    }
                    if backoff.attempts() + 1 >= MAX_S3_ATTEMPTS {
                        tracing::warn!(source = %cx.name, "listing s3://{} failed: {msg}; retrying at the next poll", self.config.bucket);
                        cx.metrics.add_error("list_objects_failed");
                        return Ok(None);
                    }
                    if !sleep_or_shutdown(backoff.next_delay(), &cx.shared.shutdown).await {
                        return Ok(None);
                    }
                }
            }
        }
    }

    async fn emit_object(
        &mut self,
        cx: &SourceContext,
        key: &str,
        size: i64,
        body: Option<Vec<u8>>,
    ) -> Result<(), String> {
        let (notifier, rx) = BatchNotifier::new();
        let name = &cx.name;
        let Some(body) = body else {
            if size >= 0 {
                // Over max_object_bytes (size -1 marks a placeholder page, see list_page).
                let dl = DeadLetter::new(
                    name,
                    "object_too_large",
                    format!(
                        "object is {size} bytes, max_object_bytes is {}",
                        self.config.max_object_bytes
                    ),
                )
                .with("bucket", self.config.bucket.as_str())
                .with("key", key)
                .ack(Some(notifier.token()))
                .build(Arc::clone(name));
                cx.dropped
                    .send_dead_letters(vec![dl])
                    .await
                    .map_err(|e| e.to_string())?;
            }
            drop(notifier);
            self.acks.push(key.to_string(), rx);
            return Ok(());
        };
        let opts = DecodeOptions {
            format: self.config.format,
            text_records: self.config.text_records,
            max_record_bytes: self.config.max_record_bytes,
            max_document_bytes: self.config.max_object_bytes,
        };
        let body_len = body.len();
        let decoded = tokio::task::spawn_blocking(move || decode_object(&body, &opts))
            .await
            .map_err(|e| format!("decoding {key} panicked: {e}"))?;
        cx.metrics
            .add_received(decoded.records.len() as u64, body_len as u64);
        tracing::debug!(
            %key,
            gzip = decoded.compressed,
            bytes = body_len,
            decompressed_bytes = decoded.decompressed_bytes,
            records = decoded.records.len(),
            "object decoded"
        );
        let bucket = self.config.bucket.as_str();
        let mut dead = Vec::with_capacity(decoded.defects.len());
        for d in decoded.defects {
            let mut dl = DeadLetter::new(name, d.reason, d.message);
            dl = match d.truncated_from {
                Some(len) => dl.raw_prefix(&d.raw, len),
                None if d.raw.is_empty() => dl,
                None => dl.raw(&d.raw),
            };
            dl = dl.with("bucket", bucket).with("key", key);
            dl = match d.position {
                Position::Line(n) => dl.with("line", n),
                Position::Index(i) => dl.with("index", i),
                Position::Object => dl,
            };
            dead.push(dl.ack(Some(notifier.token())).build(Arc::clone(name)));
        }
        if !dead.is_empty() {
            cx.dropped
                .send_dead_letters(dead)
                .await
                .map_err(|e| e.to_string())?;
        }
        let mut batch = Vec::with_capacity(decoded.records.len().min(BATCH_EVENTS));
        for record in decoded.records {
            let mut fields = record.fields;
            let mut origin = Object::new();
            origin.insert("bucket".into(), bucket.into());
            origin.insert("key".into(), key.into());
            match record.position {
                Position::Line(n) => {
                    origin.insert("line".into(), n.into());
                }
                Position::Index(i) => {
                    origin.insert("index".into(), i.into());
                }
                Position::Object => {}
            }
            if !self.config.metadata_key.is_empty() {
                fields.insert(
                    self.config.metadata_key.clone(),
                    Value::Object(origin.clone()),
                );
            }
            let mut event =
                Event::new(fields, Arc::clone(name), record.bytes).with_ack(notifier.token());
            event.set_label("s3_bucket", bucket);
            event.set_label("s3_key", key);
            if let Some(n) = origin.get("line").or_else(|| origin.get("index")) {
                event.set_label("s3_position", n.clone());
            }
            batch.push(event);
            if batch.len() >= BATCH_EVENTS {
                cx.out
                    .send(std::mem::take(&mut batch))
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        drop(notifier);
        cx.out.send(batch).await.map_err(|e| e.to_string())?;
        self.acks.push(key.to_string(), rx);
        Ok(())
    }
}

/// The object's bytes; `Ok(None)` never happens here (kept for the size-skip path);
/// `Err` after retries.
async fn get_object(
    client: &s3::Client,
    bucket: &str,
    key: &str,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<Option<Vec<u8>>, String> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(20));
    loop {
        let attempt = async {
            let resp = client
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| {
                    (
                        is_retriable(&e),
                        crate::pull::aws_error_message(&e),
                        is_no_such_key(&e),
                    )
                })?;
            let bytes = resp
                .body
                .collect()
                .await
                .map_err(|e| (true, format!("reading the object body: {e}"), false))?;
            Ok::<_, (bool, String, bool)>(bytes.into_bytes().to_vec())
        };
        match attempt.await {
            Ok(b) => return Ok(Some(b)),
            Err((_, _, true)) => {
                // Deleted between listing and reading: nothing left to read.
                tracing::warn!(%bucket, %key, "object disappeared before it could be read; skipping it");
                return Ok(Some(Vec::new()));
            }
            Err((retriable, msg, _)) => {
                if !retriable || backoff.attempts() + 1 >= MAX_S3_ATTEMPTS {
                    return Err(format!("cannot read s3://{bucket}/{key}: {msg}"));
                }
                if !sleep_or_shutdown(backoff.next_delay(), shutdown).await {
                    return Err("shutting down".into());
                }
            }
        }
    }
}

fn is_no_such_key<R>(
    e: &s3::error::SdkError<s3::operation::get_object::GetObjectError, R>,
) -> bool {
    matches!(
        e.as_service_error(),
        Some(s3::operation::get_object::GetObjectError::NoSuchKey(_))
    )
}

/// Throttling, timeouts, 5xx and connection problems are worth retrying; access and
/// not-found errors are not.
fn is_retriable<E, R>(e: &s3::error::SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
{
    use s3::error::SdkError;
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or_default();
            matches!(
                code,
                "SlowDown"
                    | "InternalError"
                    | "ServiceUnavailable"
                    | "RequestTimeout"
                    | "Throttling"
                    | "ThrottlingException"
            )
        }
        _ => false,
    }
}
