//! `type: aws_cloudwatch_logs` — sends events as JSON log events to CloudWatch Logs.
//!
//! - `group_name` / `stream_name` are templates; events are batched per (group, stream).
//! - Every PutLogEvents request obeys the API limits ([`batch`]); events CloudWatch would
//!   refuse (too old, too far in the future, too large) go to `<name>.dropped` with the
//!   reason instead of vanishing, and so do events the response lists in
//!   `rejectedLogEventsInfo`.
//! - No sequence tokens and no DescribeLogStreams on the hot path: a missing group or stream
//!   shows up as ResourceNotFoundException, is created (AlreadyExists counts as success) and
//!   the put is retried.
//! - Requests to the same stream may run in parallel (`request.concurrency`): CloudWatch no
//!   longer orders puts by sequence token, each request is sorted by time on its own, and each
//!   request acknowledges only its own events.

pub mod batch;
mod sink;

use std::time::Duration;

use serde::Deserialize;

use sessiontrail_aws::AwsOptions;
use sessiontrail_core::component::{ComponentTask, SinkContext};
use sessiontrail_core::template::Template;
use sessiontrail_core::{BuildError, SinkConfig};

use crate::batch::{BatchLimits, BatchOptions};
use crate::retry::RequestOptions;
use batch::Oversize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudwatchLogsSinkConfig {
    /// Log group name template (`/audit/{{ metadata.product.name }}`).
    pub group_name: String,
    /// Log stream name template (`{{ device.hostname }}`).
    pub stream_name: String,
    /// Create the log group when it does not exist (default true).
    #[serde(default = "default_true")]
    pub create_missing_group: bool,
    /// Create the log stream when it does not exist (default true).
    #[serde(default = "default_true")]
    pub create_missing_stream: bool,
    /// Retention set on log groups this sink creates; one of the values CloudWatch allows
    /// ([`ALLOWED_RETENTION_DAYS`]). Default: never expire.
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// A message over 1,048,550 bytes: `dead_letter` (default) or `truncate` (with a marker).
    #[serde(default)]
    pub oversize: Oversize,
    /// AWS region (default from the environment / profile).
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint override (LocalStack, moto); `AWS_ENDPOINT_URL_CLOUDWATCH_LOGS` also works.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Batching: `max_bytes` (default and maximum 1,048,576 incl. 26 per event),
    /// `max_events` (default and maximum 10,000), `timeout_secs` (default 1).
    #[serde(default)]
    pub batch: Option<BatchOptions>,
    /// Concurrency, timeouts and retries.
    #[serde(default)]
    pub request: RequestOptions,
    /// Check at start-up that credentials work and the log group exists or can be created
    /// (default true).
    #[serde(default = "default_true")]
    pub healthcheck: bool,
}

fn default_true() -> bool {
    true
}

/// Retention values CloudWatch Logs accepts (PutRetentionPolicy, `retentionInDays`:
/// <https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_PutRetentionPolicy.html>).
pub const ALLOWED_RETENTION_DAYS: &[u32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// The destination's own limits: a batch never exceeds one PutLogEvents request.
fn hard_limits() -> BatchLimits {
    BatchLimits {
        max_bytes: batch::MAX_BATCH_BYTES,
        max_events: batch::MAX_BATCH_EVENTS,
        timeout: Duration::from_secs(300),
        max_buffered_bytes: usize::MAX,
    }
}

fn default_limits() -> BatchLimits {
    BatchLimits {
        max_bytes: batch::MAX_BATCH_BYTES,
        max_events: batch::MAX_BATCH_EVENTS,
        timeout: Duration::from_secs(1),
        // Open batches across all streams; beyond this the oldest is sent early.
        max_buffered_bytes: 8 * batch::MAX_BATCH_BYTES,
    }
}

impl CloudwatchLogsSinkConfig {
    fn templates(&self) -> Result<(Template, Template), String> {
        let group = Template::parse(&self.group_name).map_err(|e| format!("group_name: {e}"))?;
        let stream = Template::parse(&self.stream_name).map_err(|e| format!("stream_name: {e}"))?;
        Ok((group, stream))
    }

    fn limits(&self) -> Result<BatchLimits, String> {
        BatchLimits::resolve(self.batch.as_ref(), default_limits(), hard_limits())
    }

    fn aws(&self) -> AwsOptions {
        AwsOptions {
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
        }
    }
}

#[async_trait::async_trait]
impl SinkConfig for CloudwatchLogsSinkConfig {
    fn validate(&self) -> Result<(), String> {
        self.templates()?;
        self.limits()?;
        self.request.validate()?;
        if self.group_name.trim().is_empty() || self.stream_name.trim().is_empty() {
            return Err("group_name and stream_name must not be empty".into());
        }
        if let Some(days) = self.retention_days {
            if !ALLOWED_RETENTION_DAYS.contains(&days) {
                return Err(format!(
                    "retention_days: {days} is not a retention CloudWatch Logs allows; use one of {ALLOWED_RETENTION_DAYS:?}"
                ));
            }
        }
        Ok(())
    }

    async fn build(&self, cx: SinkContext) -> Result<ComponentTask, BuildError> {
        self.validate()
            .map_err(|e| BuildError(format!("sink {}: {e}", cx.name)))?;
        let (group, stream) = self.templates()?;
        let limits = self.limits()?;
        sink::build(self.clone(), self.aws(), group, stream, limits, cx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Result<CloudwatchLogsSinkConfig, String> {
        let yaml = format!(r#"{{"group_name": "/g", "stream_name": "{{{{ host }}}}"{extra}}}"#);
        serde_json::from_str(&yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn retention_must_be_an_allowed_value() {
        assert!(config(r#", "retention_days": 30"#)
            .unwrap()
            .validate()
            .is_ok());
        let err = config(r#", "retention_days": 31"#)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.contains("retention_days: 31"), "{err}");
    }

    #[test]
    fn batch_limits_cannot_exceed_put_log_events_limits() {
        let c = config(r#", "batch": {"max_events": 10001}"#).unwrap();
        assert!(c.validate().unwrap_err().contains("max_events"));
        let c = config(r#", "batch": {"max_bytes": 1048577}"#).unwrap();
        assert!(c.validate().unwrap_err().contains("max_bytes"));
    }

    #[test]
    fn unknown_options_are_rejected() {
        assert!(config(r#", "group": "x""#).is_err());
    }
}
