//! `type: aws_s3` — writes batches of events as NDJSON objects (gzip by default) to S3.
//!
//! - `key_prefix` is a template (strftime on the event time + `{{ field.path }}`): events are
//!   batched per rendered prefix, so one object never mixes partitions.
//! - Object names are `<prefix><UTC time>-<UUID>.ndjson[.gz]`, chosen once per batch before
//!   the first attempt: a retried upload overwrites the same key instead of duplicating.
//! - Events are acknowledged only after S3 confirmed the upload (PutObject, or
//!   CompleteMultipartUpload above `multipart_threshold_bytes`).
//! - Memory: at most `request.concurrency` batches in flight plus the open batches
//!   (bounded by [`MAX_BUFFERED_BATCHES`] × `batch.max_bytes`); a batch is at most
//!   `batch.max_bytes` of encoded events. Large objects are uploaded in parts of
//!   [`MULTIPART_PART_BYTES`], so a retry resends one part, not the object.

mod sink;

use std::time::Duration;

use serde::Deserialize;

use sessiontrail_aws::s3::types::StorageClass;
use sessiontrail_aws::AwsOptions;
use sessiontrail_core::component::{ComponentTask, SinkContext};
use sessiontrail_core::template::Template;
use sessiontrail_core::{BuildError, SinkConfig};

use crate::batch::{BatchLimits, BatchOptions};
use crate::retry::RequestOptions;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3SinkConfig {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix template (default `date=%Y-%m-%d/`); events are batched per rendered prefix.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// `gzip` (default) or `none`.
    #[serde(default)]
    pub compression: Compression,
    /// `ndjson` (the only encoding).
    #[serde(default)]
    pub encoding: Encoding,
    /// Batching: `max_bytes` (default 10 MB of NDJSON before compression), `max_events`
    /// (default 100,000), `timeout_secs` (default 300).
    #[serde(default)]
    pub batch: Option<BatchOptions>,
    /// Objects whose body is larger than this use a multipart upload (default 16 MiB;
    /// at least 5 MiB, the S3 minimum part size).
    #[serde(default = "default_multipart_threshold_bytes")]
    pub multipart_threshold_bytes: usize,
    /// Path-style addressing (`endpoint/bucket/key`), needed by MinIO and most emulators;
    /// always on when an endpoint override is set.
    #[serde(default)]
    pub force_path_style: bool,
    /// S3 storage class (`STANDARD`, `STANDARD_IA`, `GLACIER_IR`...). Default: the bucket's.
    #[serde(default)]
    pub storage_class: Option<String>,
    /// `AES256` or `aws:kms`. Default: the bucket's default encryption.
    #[serde(default)]
    pub server_side_encryption: Option<ServerSideEncryption>,
    /// KMS key id or ARN for `server_side_encryption: aws:kms` (default: the AWS managed key).
    #[serde(default)]
    pub kms_key_id: Option<String>,
    /// AWS region (default from the environment / profile).
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint override (MinIO, LocalStack, moto); `AWS_ENDPOINT_URL_S3` also works.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Concurrency, timeouts and retries.
    #[serde(default)]
    pub request: RequestOptions,
    /// Check at start-up (HeadBucket) that the bucket exists and the credentials may use it
    /// (default true).
    #[serde(default = "default_true")]
    pub healthcheck: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    Gzip,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    #[default]
    Ndjson,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ServerSideEncryption {
    #[serde(rename = "AES256")]
    Aes256,
    #[serde(rename = "aws:kms")]
    AwsKms,
}

fn default_key_prefix() -> String {
    "date=%Y-%m-%d/".into()
}
fn default_multipart_threshold_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_true() -> bool {
    true
}

/// S3's smallest part (all but the last): 5 MiB (Amazon S3 multipart upload limits,
/// <https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html>).
pub const MIN_PART_BYTES: usize = 5 * 1024 * 1024;
/// The part size we upload.
pub const MULTIPART_PART_BYTES: usize = 8 * 1024 * 1024;
/// S3 allows at most 10,000 parts per upload (same source).
pub const MAX_PARTS: usize = 10_000;
/// Open batches (across prefixes) held before the oldest is uploaded early.
pub const MAX_BUFFERED_BATCHES: usize = 4;

fn default_limits() -> BatchLimits {
    let max_bytes = 10_000_000;
    BatchLimits {
        max_bytes,
        max_events: 100_000,
        timeout: Duration::from_secs(300),
        max_buffered_bytes: MAX_BUFFERED_BATCHES * max_bytes,
    }
}

/// Upper bounds: one object of at most MAX_PARTS parts; a batch waits at most a day.
fn hard_limits() -> BatchLimits {
    BatchLimits {
        max_bytes: MULTIPART_PART_BYTES * MAX_PARTS,
        max_events: usize::MAX,
        timeout: Duration::from_secs(24 * 3600),
        max_buffered_bytes: usize::MAX,
    }
}

impl S3SinkConfig {
    fn limits(&self) -> Result<BatchLimits, String> {
        let mut limits =
            BatchLimits::resolve(self.batch.as_ref(), default_limits(), hard_limits())?;
        limits.max_buffered_bytes = MAX_BUFFERED_BATCHES * limits.max_bytes;
        Ok(limits)
    }

    fn aws(&self) -> AwsOptions {
        AwsOptions {
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
        }
    }
}

#[async_trait::async_trait]
impl SinkConfig for S3SinkConfig {
    fn validate(&self) -> Result<(), String> {
        if self.bucket.trim().is_empty() {
            return Err("bucket must not be empty".into());
        }
        Template::parse(&self.key_prefix).map_err(|e| format!("key_prefix: {e}"))?;
        self.limits()?;
        self.request.validate()?;
        if self.multipart_threshold_bytes < MIN_PART_BYTES {
            return Err(format!(
                "multipart_threshold_bytes must be at least {MIN_PART_BYTES} (the S3 minimum part size)"
            ));
        }
        if let Some(class) = &self.storage_class {
            let known = StorageClass::values();
            if !known.contains(&class.as_str()) {
                return Err(format!(
                    "storage_class: unknown S3 storage class {class:?}; use one of {known:?}"
                ));
            }
        }
        if self.kms_key_id.is_some()
            && self.server_side_encryption != Some(ServerSideEncryption::AwsKms)
        {
            return Err("kms_key_id needs server_side_encryption: aws:kms".into());
        }
        Ok(())
    }

    async fn build(&self, cx: SinkContext) -> Result<ComponentTask, BuildError> {
        self.validate()
            .map_err(|e| BuildError(format!("sink {}: {e}", cx.name)))?;
        let prefix = Template::parse(&self.key_prefix)?;
        let limits = self.limits()?;
        sink::build(self.clone(), self.aws(), prefix, limits, cx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Result<S3SinkConfig, String> {
        serde_json::from_str(&format!(r#"{{"bucket": "b"{extra}}}"#)).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_gzip_ndjson_with_a_date_prefix() {
        let c = config("").unwrap();
        assert_eq!(c.compression, Compression::Gzip);
        assert_eq!(c.key_prefix, "date=%Y-%m-%d/");
        assert!(c.validate().is_ok());
    }

    #[test]
    fn encryption_options_are_checked() {
        let c = config(r#", "server_side_encryption": "aws:kms", "kms_key_id": "k""#).unwrap();
        assert!(c.validate().is_ok());
        let c = config(r#", "server_side_encryption": "AES256", "kms_key_id": "k""#).unwrap();
        assert!(c.validate().unwrap_err().contains("kms_key_id"));
        assert!(config(r#", "server_side_encryption": "des""#).is_err());
    }

    #[test]
    fn storage_class_must_be_known_to_s3() {
        assert!(config(r#", "storage_class": "STANDARD_IA""#)
            .unwrap()
            .validate()
            .is_ok());
        let err = config(r#", "storage_class": "COLD""#)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.contains("storage_class"), "{err}");
    }

    #[test]
    fn multipart_threshold_respects_the_s3_minimum_part() {
        let c = config(r#", "multipart_threshold_bytes": 1000"#).unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .contains("multipart_threshold_bytes"));
    }
}
