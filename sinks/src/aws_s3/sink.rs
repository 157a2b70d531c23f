//! The running S3 sink: events → per-prefix batches → one object per batch.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

use sessiontrail_aws::s3::config::retry::RetryConfig;
use sessiontrail_aws::s3::primitives::ByteStream;
use sessiontrail_aws::s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, StorageClass,
};
use sessiontrail_aws::s3::Client;
use sessiontrail_aws::AwsOptions;
use sessiontrail_core::component::{ComponentTask, SinkContext};
use sessiontrail_core::metrics::ComponentMetrics;
use sessiontrail_core::template::Template;
use sessiontrail_core::{AckToken, BuildError, DeadLetter, DeliveryStatus, Event, Output};

use super::{Compression, S3SinkConfig, ServerSideEncryption, MULTIPART_PART_BYTES};
use crate::batch::{run_batched, BatchLimits, BatchedSink};
use crate::encode::write_ndjson;
use crate::retry::{classify, retry, Backoff, ConcurrencyLimit, Failure, S3_RETRIABLE_CODES};

/// One encoded event waiting for its object.
pub struct Line {
    bytes: Vec<u8>,
    ack: Option<AckToken>,
}

struct Uploader {
    name: Arc<str>,
    client: Client,
    config: S3SinkConfig,
    backoff: Backoff,
    dropped: Output,
    metrics: Arc<ComponentMetrics>,
    retries: Arc<AtomicU64>,
}

struct Sink {
    name: Arc<str>,
    prefix: Template,
    uploader: Arc<Uploader>,
}

pub(super) async fn build(
    config: S3SinkConfig,
    aws: AwsOptions,
    prefix: Template,
    limits: BatchLimits,
    cx: SinkContext,
) -> Result<ComponentTask, BuildError> {
    let base = aws.s3_client(config.force_path_style).await;
    // Our retry loop (crate::retry) decides; the SDK's own would retry behind its back.
    let client = Client::from_conf(
        base.config()
            .to_builder()
            .retry_config(RetryConfig::disabled())
            .timeout_config(config.request.timeouts())
            .build(),
    );
    let name = Arc::clone(&cx.name);
    let uploader = Arc::new(Uploader {
        name: Arc::clone(&name),
        client,
        backoff: config.request.backoff(),
        dropped: cx.dropped.clone(),
        metrics: Arc::clone(&cx.metrics),
        retries: crate::retry::retries_counter(&cx.shared.registry, &name),
        config: config.clone(),
    });
    if config.healthcheck {
        uploader.healthcheck().await?;
    }
    let sink = Sink {
        name,
        prefix,
        uploader,
    };
    let concurrency = ConcurrencyLimit::new(config.request.concurrency);
    Ok(Box::pin(run_batched(sink, limits, concurrency, cx)))
}

impl BatchedSink for Sink {
    type Key = String;
    type Item = Line;

    fn prepare(&mut self, event: Event) -> Result<(String, Line, usize), Event> {
        // Path-safe: a field value cannot add `/` levels or `..` to the key.
        let prefix = match self.prefix.render(&event, true) {
            Ok(p) => p,
            Err(e) => {
                return Err(DeadLetter::from_event(
                    &self.name,
                    "template_error",
                    e.to_string(),
                    event,
                ))
            }
        };
        let mut bytes = Vec::with_capacity(event.meta.byte_size + 16);
        write_ndjson(&mut bytes, &event);
        let size = bytes.len();
        Ok((
            prefix,
            Line {
                bytes,
                ack: event.meta.ack,
            },
            size,
        ))
    }

    fn send(&self, prefix: String, lines: Vec<Line>) -> BoxFuture<'static, ()> {
        let uploader = Arc::clone(&self.uploader);
        Box::pin(async move { uploader.write_object(prefix, lines).await })
    }
}

/// A batch ready to upload: the NDJSON text (line ends kept for dead letters) and the body.
struct Object {
    ndjson: Bytes,
    line_ends: Vec<usize>,
    acks: Vec<Option<AckToken>>,
    body: Bytes,
}

fn encode(lines: Vec<Line>, compression: Compression) -> std::io::Result<Object> {
    let total: usize = lines.iter().map(|l| l.bytes.len()).sum();
    let mut ndjson = Vec::with_capacity(total);
    let mut line_ends = Vec::with_capacity(lines.len());
    let mut acks = Vec::with_capacity(lines.len());
    for l in lines {
        ndjson.extend_from_slice(&l.bytes);
        line_ends.push(ndjson.len());
        acks.push(l.ack);
    }
    let ndjson = Bytes::from(ndjson);
    let body = match compression {
        Compression::None => ndjson.clone(),
        Compression::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(total / 4),
                flate2::Compression::default(),
            );
            gz.write_all(&ndjson)?;
            Bytes::from(gz.finish()?)
        }
    };
    Ok(Object {
        ndjson,
        line_ends,
        acks,
        body,
    })
}

impl Uploader {
    async fn write_object(&self, prefix: String, lines: Vec<Line>) {
        let events = lines.len() as u64;
        let compression = self.config.compression;
        let object = match tokio::task::spawn_blocking(move || encode(lines, compression)).await {
            Ok(Ok(o)) => o,
            // Writing into memory cannot fail short of a panic in the encoder; the events are
            // then dropped unacknowledged (Failed) and their sources read them again.
            Ok(Err(e)) => {
                tracing::error!(sink = %self.name, "cannot compress a batch: {e}");
                return;
            }
            Err(e) => {
                tracing::error!(sink = %self.name, "compression task failed: {e}");
                return;
            }
        };
        // Chosen once, before the first attempt: a retry overwrites, never duplicates.
        let key = format!(
            "{prefix}{}-{}.ndjson{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
            uuid::Uuid::new_v4(),
            match compression {
                Compression::Gzip => ".gz",
                Compression::None => "",
            }
        );
        let result = if object.body.len() > self.config.multipart_threshold_bytes {
            self.multipart_upload(&key, &object.body).await
        } else {
            self.retrying(&key, || self.put_object(&key, object.body.clone()))
                .await
        };
        match result {
            Ok(()) => {
                self.metrics.add_sent(events, object.body.len() as u64);
                for ack in object.acks.into_iter().flatten() {
                    ack.resolve(DeliveryStatus::Delivered);
                }
            }
            Err(failure) => {
                self.metrics.add_error(failure.code());
                tracing::error!(sink = %self.name, bucket = %self.config.bucket, %key, error = %failure, "upload refused; events sent to {}.dropped", self.name);
                let mut start = 0;
                let dead: Vec<Event> = object
                    .line_ends
                    .iter()
                    .zip(object.acks)
                    .map(|(&end, ack)| {
                        let line = &object.ndjson[start..end.saturating_sub(1).max(start)];
                        start = end;
                        DeadLetter::new(&self.name, "destination_rejected", failure.to_string())
                            .raw(line)
                            .with("error_code", failure.code())
                            .with("bucket", self.config.bucket.as_str())
                            .with("key", key.as_str())
                            .ack(ack)
                            .build(Arc::clone(&self.name))
                    })
                    .collect();
                if let Err(e) = self.dropped.send_dead_letters(dead).await {
                    tracing::error!(sink = %self.name, "cannot forward dead letters: {e}");
                }
            }
        }
    }

    async fn retrying<T, F, Fut>(&self, key: &str, attempt: F) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        retry(self.backoff, attempt, |f, attempt| {
            self.retries.fetch_add(1, Ordering::Relaxed);
            self.metrics.add_error(f.code());
            tracing::warn!(sink = %self.name, bucket = %self.config.bucket, %key, error = %f, attempt, "S3 request failed; retrying");
        })
        .await
    }

    async fn put_object(&self, key: &str, body: Bytes) -> Result<(), Failure> {
        let c = &self.config;
        self.client
            .put_object()
            .bucket(&c.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .content_type(content_type(c.compression))
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .set_storage_class(c.storage_class.as_deref().map(StorageClass::from))
            .set_server_side_encryption(sse(c.server_side_encryption))
            .set_ssekms_key_id(c.kms_key_id.clone())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(&e, S3_RETRIABLE_CODES))
    }

    /// Uploads `body` in parts; each part is retried on its own. A permanent failure aborts
    /// the upload so no incomplete parts are left behind.
    async fn multipart_upload(&self, key: &str, body: &Bytes) -> Result<(), Failure> {
        let c = &self.config;
        let created = self
            .retrying(key, || async {
                self.client
                    .create_multipart_upload()
                    .bucket(&c.bucket)
                    .key(key)
                    .content_type(content_type(c.compression))
                    .checksum_algorithm(ChecksumAlgorithm::Crc32)
                    .set_storage_class(c.storage_class.as_deref().map(StorageClass::from))
                    .set_server_side_encryption(sse(c.server_side_encryption))
                    .set_ssekms_key_id(c.kms_key_id.clone())
                    .send()
                    .await
                    .map_err(|e| classify(&e, S3_RETRIABLE_CODES))
            })
            .await?;
        let Some(upload_id) = created.upload_id().map(str::to_string) else {
            return Err(Failure::Permanent {
                code: "missing_upload_id".into(),
                message: "CreateMultipartUpload returned no upload id".into(),
            });
        };
        let result = self.upload_parts(key, &upload_id, body).await;
        if result.is_err() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&c.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    async fn upload_parts(&self, key: &str, upload_id: &str, body: &Bytes) -> Result<(), Failure> {
        let c = &self.config;
        let mut parts = Vec::new();
        for (i, start) in (0..body.len()).step_by(MULTIPART_PART_BYTES).enumerate() {
            let part_number = i as i32 + 1;
            let chunk = body.slice(start..(start + MULTIPART_PART_BYTES).min(body.len()));
            let uploaded = self
                .retrying(key, || async {
                    self.client
                        .upload_part()
                        .bucket(&c.bucket)
                        .key(key)
                        .upload_id(upload_id)
                        .part_number(part_number)
                        .checksum_algorithm(ChecksumAlgorithm::Crc32)
                        .body(ByteStream::from(chunk.clone()))
                        .send()
                        .await
                        .map_err(|e| classify(&e, S3_RETRIABLE_CODES))
                })
                .await?;
            parts.push(
                CompletedPart::builder()
                    .part_number(part_number)
                    .set_e_tag(uploaded.e_tag().map(str::to_string))
                    .set_checksum_crc32(uploaded.checksum_crc32().map(str::to_string))
                    .build(),
            );
        }
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(parts))
            .build();
        self.retrying(key, || async {
            self.client
                .complete_multipart_upload()
                .bucket(&c.bucket)
                .key(key)
                .upload_id(upload_id)
                .multipart_upload(completed.clone())
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(&e, S3_RETRIABLE_CODES))
        })
        .await
    }

    /// At start-up: HeadBucket, with an error that says what to fix.
    async fn healthcheck(&self) -> Result<(), BuildError> {
        let bucket = &self.config.bucket;
        let r = self.client.head_bucket().bucket(bucket).send().await;
        let Err(e) = r else { return Ok(()) };
        let status = e.raw_response().map(|r| r.status().as_u16());
        let what = match status {
            Some(404) => format!("bucket {bucket:?} does not exist; create it or fix `bucket`"),
            Some(403) => format!(
                "access to bucket {bucket:?} denied; check the credentials (AWS default chain) and that the policy allows s3:ListBucket and s3:PutObject on it"
            ),
            Some(301) | Some(400) => format!(
                "bucket {bucket:?} is not in the configured region; set `region` to the bucket's region"
            ),
            _ => format!(
                "cannot reach bucket {bucket:?} ({}); check `endpoint`, the network and the credentials",
                classify(&e, S3_RETRIABLE_CODES)
            ),
        };
        Err(BuildError(format!(
            "sink {}: S3 healthcheck failed: {what} (set `healthcheck: false` to start anyway)",
            self.name
        )))
    }
}

fn content_type(c: Compression) -> &'static str {
    match c {
        Compression::Gzip => "application/gzip",
        Compression::None => "application/x-ndjson",
    }
}

fn sse(
    s: Option<ServerSideEncryption>,
) -> Option<sessiontrail_aws::s3::types::ServerSideEncryption> {
    use sessiontrail_aws::s3::types::ServerSideEncryption as Sdk;
    s.map(|s| match s {
        ServerSideEncryption::Aes256 => Sdk::Aes256,
        ServerSideEncryption::AwsKms => Sdk::AwsKms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn gzip_body_decompresses_to_the_ndjson_lines() {
        let lines = vec![
            Line {
                bytes: b"{\"a\":1}\n".to_vec(),
                ack: None,
            },
            Line {
                bytes: b"{\"b\":2}\n".to_vec(),
                ack: None,
            },
        ];
        let o = encode(lines, Compression::Gzip).unwrap();
        let mut text = String::new();
        flate2::read::GzDecoder::new(&o.body[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "{\"a\":1}\n{\"b\":2}\n");
        assert_eq!(o.line_ends, vec![8, 16]);
    }
}
