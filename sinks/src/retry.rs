//! Retries and concurrency shared by the AWS sinks: exponential backoff with jitter, one
//! error classification per service (what is worth retrying), and a semaphore that bounds the
//! requests in flight.
//!
//! The SDK's own retry loop is switched off for the sinks ([`RequestOptions::timeouts`] and
//! `RetryConfig::disabled()` in each sink) so that this one loop decides: a retriable error
//! (throttling, 5xx, timeout, connection refused) is retried until it succeeds — by default
//! without an attempt limit, because a destination that is down must not make us lose data;
//! while a request waits to be retried it holds its concurrency permit, so the sink stops
//! pulling input and backpressure reaches the sources instead of memory growing.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use sessiontrail_aws::s3::config::http::HttpResponse;
use sessiontrail_aws::s3::error::{ProvideErrorMetadata, SdkError};

/// `request:` options of the AWS sinks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestOptions {
    /// Requests in flight at once (default 4). Waiting for a free slot stops the sink from
    /// reading more input.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Time allowed for one attempt of one request, in seconds (default 30); a timed-out
    /// attempt is retried.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// First retry delay in milliseconds (default 200); doubled on each attempt.
    #[serde(default = "default_initial_backoff_ms")]
    pub retry_initial_backoff_ms: u64,
    /// Longest retry delay in seconds (default 10).
    #[serde(default = "default_max_backoff_secs")]
    pub retry_max_backoff_secs: u64,
    /// Attempts before a retriable error is given up and the events dead-lettered with
    /// reason `retries_exhausted`. Default: unlimited (retry until the destination is back).
    #[serde(default)]
    pub retry_attempts: Option<u32>,
}

fn default_concurrency() -> usize {
    4
}
fn default_timeout_secs() -> u64 {
    30
}
fn default_initial_backoff_ms() -> u64 {
    200
}
fn default_max_backoff_secs() -> u64 {
    10
}

impl Default for RequestOptions {
    fn default() -> Self {
        RequestOptions {
            concurrency: default_concurrency(),
            timeout_secs: default_timeout_secs(),
            retry_initial_backoff_ms: default_initial_backoff_ms(),
            retry_max_backoff_secs: default_max_backoff_secs(),
            retry_attempts: None,
        }
    }
}

impl RequestOptions {
    pub fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 {
            return Err("request.concurrency must be at least 1".into());
        }
        if self.timeout_secs == 0 {
            return Err("request.timeout_secs must be at least 1".into());
        }
        if self.retry_attempts == Some(0) {
            return Err(
                "request.retry_attempts must be at least 1 (or left out: unlimited)".into(),
            );
        }
        Ok(())
    }

    pub fn backoff(&self) -> Backoff {
        Backoff {
            initial: Duration::from_millis(self.retry_initial_backoff_ms.max(1)),
            max: Duration::from_secs(self.retry_max_backoff_secs.max(1)),
            max_attempts: self.retry_attempts,
        }
    }

    /// Connect and per-attempt timeouts for an SDK client.
    pub fn timeouts(&self) -> sessiontrail_aws::s3::config::timeout::TimeoutConfig {
        sessiontrail_aws::s3::config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(self.timeout_secs.min(10)))
            .operation_attempt_timeout(Duration::from_secs(self.timeout_secs))
            .build()
    }
}

/// Exponential backoff with "equal jitter": attempt n waits between half and all of
/// `min(max, initial * 2^n)`, so that many sinks throttled together do not retry in lockstep
/// yet never retry immediately.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub max_attempts: Option<u32>,
}

impl Backoff {
    /// The delay before retry number `attempt` (0 = first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
            .min(self.max);
        let half = ceiling / 2;
        let jitter_ms = rand::random_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter_ms)
    }
}

/// How a failed request is handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Throttling, 5xx, timeout, connection trouble: try again later.
    Retriable { code: String, message: String },
    /// The destination refused the data for good (access denied, bad request...): the
    /// events go to `<name>.dropped` with this AWS error code.
    Permanent { code: String, message: String },
}

impl Failure {
    pub fn code(&self) -> &str {
        match self {
            Failure::Retriable { code, .. } | Failure::Permanent { code, .. } => code,
        }
    }
    pub fn message(&self) -> &str {
        match self {
            Failure::Retriable { message, .. } | Failure::Permanent { message, .. } => message,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

/// Classifies an SDK error. `retriable_codes` are the service's own throttling / transient
/// error codes; every service also retries HTTP 429 and 5xx, timeouts and transport errors.
/// Messages are built from the error code and AWS's message only (never the request, which
/// could carry data or signatures).
/// The counter of retried requests, one series per sink component (the same metric for every
/// AWS sink, so dashboards need one query).
pub fn retries_counter(
    registry: &sessiontrail_core::metrics::MetricsRegistry,
    component: &str,
) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
    registry.counter(
        "sessiontrail_sink_request_retries_total",
        "Requests to a destination retried after a retriable error (throttling, 5xx, timeout).",
        &[("component", component)],
    )
}

pub fn classify<E: ProvideErrorMetadata>(
    err: &SdkError<E, HttpResponse>,
    retriable_codes: &[&str],
) -> Failure {
    match err {
        SdkError::TimeoutError(_) => Failure::Retriable {
            code: "timeout".into(),
            message: "the request timed out".into(),
        },
        SdkError::DispatchFailure(d) => {
            let kind = if d.is_timeout() {
                "timeout"
            } else if d.is_io() {
                "connection_error"
            } else {
                "dispatch_failure"
            };
            Failure::Retriable {
                code: kind.into(),
                message: "could not send the request (destination unreachable?)".into(),
            }
        }
        SdkError::ResponseError(_) => Failure::Retriable {
            code: "response_error".into(),
            message: "the response could not be read (connection cut?)".into(),
        },
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let e = ctx.err();
            let code = e
                .code()
                .map(str::to_string)
                .unwrap_or_else(|| format!("http_{status}"));
            let message = e.message().unwrap_or("no message").to_string();
            if status == 429 || status >= 500 || retriable_codes.contains(&code.as_str()) {
                Failure::Retriable { code, message }
            } else {
                Failure::Permanent { code, message }
            }
        }
        // Construction failures are our own bugs or bad configuration: retrying cannot help.
        _ => Failure::Permanent {
            code: "request_construction".into(),
            message: "the request could not be built".into(),
        },
    }
}

/// S3 error codes worth retrying (S3 error responses reference, "SlowDown" et al.).
pub const S3_RETRIABLE_CODES: &[&str] = &[
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "Throttling",
    "ThrottlingException",
    "OperationAborted",
];

/// CloudWatch Logs error codes worth retrying (PutLogEvents "Errors" section).
pub const CLOUDWATCH_LOGS_RETRIABLE_CODES: &[&str] = &[
    "ThrottlingException",
    "ServiceUnavailableException",
    "Throttling",
    "RequestTimeout",
    "InternalFailure",
];

/// Runs `attempt` until it succeeds, fails permanently, or (if configured) runs out of
/// attempts. `on_retry` sees each retriable failure (for metrics and logs).
pub async fn retry<T, F, Fut>(
    backoff: Backoff,
    mut attempt: F,
    mut on_retry: impl FnMut(&Failure, u32),
) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let mut n: u32 = 0;
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(f @ Failure::Permanent { .. }) => return Err(f),
            Err(f @ Failure::Retriable { .. }) => {
                if backoff.max_attempts.is_some_and(|max| n + 1 >= max) {
                    return Err(Failure::Permanent {
                        code: "retries_exhausted".into(),
                        message: format!("gave up after {} attempts; last error {f}", n + 1),
                    });
                }
                on_retry(&f, n);
                tokio::time::sleep(backoff.delay(n)).await;
                n = n.saturating_add(1);
            }
        }
    }
}

/// Bounds the requests in flight. A permit is held for the whole life of a request,
/// retries included.
#[derive(Clone)]
pub struct ConcurrencyLimit(Arc<Semaphore>);

impl ConcurrencyLimit {
    pub fn new(n: usize) -> Self {
        ConcurrencyLimit(Arc::new(Semaphore::new(n.max(1))))
    }

    pub async fn acquire(&self) -> OwnedSemaphorePermit {
        // The semaphore is never closed, so acquiring cannot fail; fall back to a fresh
        // permit rather than panic if that ever changes.
        match Arc::clone(&self.0).acquire_owned().await {
            Ok(p) => p,
            Err(_) => Arc::new(Semaphore::new(1))
                .acquire_owned()
                .await
                .unwrap_or_else(|_| unreachable!("a new semaphore is open")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast() -> Backoff {
        Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(4),
            max_attempts: None,
        }
    }

    #[test]
    fn delay_grows_exponentially_within_jitter_bounds_and_caps() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            max_attempts: None,
        };
        for _ in 0..50 {
            let d0 = b.delay(0);
            assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100));
            let d2 = b.delay(2);
            assert!(d2 >= Duration::from_millis(200) && d2 <= Duration::from_millis(400));
            let d30 = b.delay(30);
            assert!(d30 >= Duration::from_millis(500) && d30 <= Duration::from_secs(1));
        }
    }

    #[tokio::test]
    async fn retriable_failures_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let r = retry(
            fast(),
            || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                    Err(Failure::Retriable {
                        code: "ThrottlingException".into(),
                        message: "slow down".into(),
                    })
                } else {
                    Ok(7)
                }
            },
            |_, _| {},
        )
        .await;
        assert_eq!(r, Ok(7));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn permanent_failure_is_not_retried() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = retry(
            fast(),
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Failure::Permanent {
                    code: "AccessDenied".into(),
                    message: "no".into(),
                })
            },
            |_, _| {},
        )
        .await;
        assert_eq!(r.unwrap_err().code(), "AccessDenied");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn attempt_limit_turns_retriable_into_retries_exhausted() {
        let calls = AtomicU32::new(0);
        let b = Backoff {
            max_attempts: Some(3),
            ..fast()
        };
        let r: Result<(), _> = retry(
            b,
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Failure::Retriable {
                    code: "SlowDown".into(),
                    message: "".into(),
                })
            },
            |_, _| {},
        )
        .await;
        assert_eq!(r.unwrap_err().code(), "retries_exhausted");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
