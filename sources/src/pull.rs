//! What the pull sources (`aws_cloudwatch_logs`, `aws_s3`, `parsec`) share: the durable cursor
//! record, the in-order checkpoint queue, retry backoff and shutdown-aware waiting.
//!
//! The rule they all follow: a cursor moves only over units (a poll, an object, a page) whose
//! every event was acknowledged, in the order the units were read. A restart resumes from the
//! stored cursor, so events may repeat but are never skipped.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::time::Duration;

use rand::Rng;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use sessiontrail_core::ack::{BatchReceiver, BatchStatus};
use sessiontrail_core::store::{Namespace, StateStore};

/// The key under which every pull source keeps its cursor record in its namespace.
const CURSOR_KEY: &[u8] = b"cursor";

/// One source's durable cursor: a small serde record stored as JSON under
/// `<type>/<name>` → `cursor`, so it stays readable (`redb` dump, debugging) and explicit.
pub struct CursorStore<T> {
    namespace: Namespace,
    _record: PhantomData<T>,
}

impl<T: Serialize + DeserializeOwned> CursorStore<T> {
    pub fn new(store: &StateStore, kind: &str, name: &str) -> Self {
        CursorStore {
            namespace: store.namespace(&format!("{kind}/{name}")),
            _record: PhantomData,
        }
    }

    /// The stored record; `None` on first start. A record that cannot be read is an error
    /// rather than a silent restart from the beginning.
    pub fn load(&self) -> Result<Option<T>, String> {
        let Some(bytes) = self.namespace.get(CURSOR_KEY).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            format!("the stored cursor cannot be read ({e}); remove the source's data_dir state to start over")
        })
    }

    /// Writes the record in one durable transaction.
    pub fn save(&self, record: &T) -> Result<(), String> {
        let bytes = serde_json::to_vec(record).map_err(|e| e.to_string())?;
        self.namespace
            .put(CURSOR_KEY, &bytes)
            .map_err(|e| e.to_string())
    }
}

/// Units that were emitted and wait for their acknowledgement, oldest first. A unit's
/// checkpoint is released only when it and every unit before it were handled.
pub struct AckQueue<C> {
    pending: VecDeque<(C, BatchReceiver)>,
}

/// What the oldest pending unit turned out to be.
pub enum Settled<C> {
    /// Handled: the cursor may move to this checkpoint.
    Handled(C),
    /// Not delivered (a sink gave up, or the event was dropped unresolved): the cursor must
    /// stay where it is and the source re-reads from it.
    Failed(C),
}

impl<C> Default for AckQueue<C> {
    fn default() -> Self {
        AckQueue {
            pending: VecDeque::new(),
        }
    }
}

impl<C> AckQueue<C> {
    pub fn push(&mut self, checkpoint: C, receiver: BatchReceiver) {
        self.pending.push_back((checkpoint, receiver));
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Settled units at the front of the queue, without waiting.
    pub fn ready(&mut self) -> Vec<Settled<C>> {
        let mut out = Vec::new();
        while let Some((_, rx)) = self.pending.front_mut() {
            let status = match rx.try_recv() {
                Ok(s) => Some(s),
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => None,
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                    // The batch state vanished without reporting: treat as not delivered.
                    Some(BatchStatus {
                        worst: sessiontrail_core::DeliveryStatus::Failed,
                        any_dead_lettered: false,
                    })
                }
            };
            let Some(status) = status else { break };
            if let Some((c, _)) = self.pending.pop_front() {
                out.push(settle(c, status));
            }
        }
        out
    }

    /// Waits for the oldest unit to settle; `None` when nothing is pending.
    pub async fn next(&mut self) -> Option<Settled<C>> {
        let (c, rx) = self.pending.pop_front()?;
        let status = rx.await.unwrap_or(BatchStatus {
            worst: sessiontrail_core::DeliveryStatus::Failed,
            any_dead_lettered: false,
        });
        Some(settle(c, status))
    }
}

/// A pull source that moves its durable cursor as its emitted units are acknowledged.
pub trait SettlesAcks {
    type Checkpoint;
    fn acks(&mut self) -> &mut AckQueue<Self::Checkpoint>;
    /// Records one settled unit. Returns false when the units after it must not be recorded
    /// (a failed unit holds the cursor back).
    fn settle(&mut self, settled: Settled<Self::Checkpoint>) -> Result<bool, String>;
}

/// Waits until `wake`, recording acknowledgements as they arrive (between polls). Returns
/// false when the pipeline is stopping.
pub async fn settle_until<S: SettlesAcks>(
    source: &mut S,
    wake: tokio::time::Instant,
    shutdown: &CancellationToken,
) -> Result<bool, String> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(false),
            _ = tokio::time::sleep_until(wake) => return Ok(true),
            settled = source.acks().next(), if !source.acks().is_empty() => {
                if let Some(s) = settled {
                    source.settle(s)?;
                }
            }
        }
    }
}

/// Records the acknowledgements still outstanding at shutdown, in order, until one holds the
/// cursor back. Call it after dropping the source's outputs, so the pipeline can drain.
pub async fn settle_remaining<S: SettlesAcks>(source: &mut S) -> Result<(), String> {
    while let Some(s) = source.acks().next().await {
        if !source.settle(s)? {
            break;
        }
    }
    Ok(())
}

fn settle<C>(c: C, status: BatchStatus) -> Settled<C> {
    if status.is_handled() {
        Settled::Handled(c)
    } else {
        Settled::Failed(c)
    }
}

/// Exponential backoff with full jitter, capped: 0.5 s, 1 s, 2 s... up to `max`.
pub struct Backoff {
    attempt: u32,
    base: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            attempt: 0,
            base,
            max,
        }
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The next delay (between half and all of the exponential step, so concurrent
    /// clients spread out).
    pub fn next_delay(&mut self) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt += 1;
        let ms = exp.as_millis() as u64;
        let jittered = rand::rng().random_range(ms / 2..=ms.max(1));
        Duration::from_millis(jittered)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// An AWS SDK error as one line with its causes (the SDK's own `Display` of a service error
/// is just "service error"; the code and message are in its sources).
pub fn aws_error_message(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// Sleeps for `d` unless shutdown comes first; returns false on shutdown.
pub async fn sleep_or_shutdown(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// Parses a duration such as `30s`, `5m`, `2h`, `1d`, `500ms` (used by `poll_interval`,
/// `overlap_window` and relative start times).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("\"{s}\" is not a duration; use e.g. 500ms, 30s, 5m, 2h, 1d"))?;
    let secs = match unit.trim() {
        "ms" => value / 1000.0,
        "s" | "" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        other => {
            return Err(format!(
                "unknown duration unit \"{other}\" in \"{s}\"; use ms, s, m, h or d"
            ))
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("\"{s}\" is not a valid duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A start time: RFC 3339 (`2025-03-10T00:00:00Z`) or relative to now (`-24h`, `-30m`).
pub fn parse_start_time(
    s: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Some(rel) = s.trim().strip_prefix('-') {
        let d = parse_duration(rel)?;
        let d = chrono::Duration::from_std(d).map_err(|e| format!("\"{s}\": {e}"))?;
        return Ok(now - d);
    }
    sessiontrail_core::json::parse_rfc3339(s).ok_or_else(|| {
        format!(
            "\"{s}\" is neither an RFC 3339 time (2025-03-10T00:00:00Z) nor a relative one (-24h)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessiontrail_core::{BatchNotifier, DeliveryStatus};

    #[test]
    fn durations_and_start_times_parse() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("5 parsecs").is_err());
        let now = chrono::Utc::now();
        assert_eq!(
            parse_start_time("-24h", now).unwrap(),
            now - chrono::Duration::hours(24)
        );
        assert_eq!(
            parse_start_time("2025-03-10T01:00:00+01:00", now)
                .unwrap()
                .to_rfc3339(),
            "2025-03-10T00:00:00+00:00"
        );
        assert!(parse_start_time("yesterday", now).is_err());
    }

    #[tokio::test]
    async fn checkpoints_are_released_in_order_only() {
        let mut q = AckQueue::default();
        let (n1, r1) = BatchNotifier::new();
        let (n2, r2) = BatchNotifier::new();
        let t1 = n1.token();
        let t2 = n2.token();
        drop((n1, n2));
        q.push("a", r1);
        q.push("b", r2);
        t2.resolve(DeliveryStatus::Delivered);
        assert!(q.ready().is_empty(), "b is done but a is not");
        t1.resolve(DeliveryStatus::Delivered);
        let done: Vec<_> = q
            .ready()
            .into_iter()
            .map(|s| match s {
                Settled::Handled(c) => c,
                Settled::Failed(_) => panic!("failed"),
            })
            .collect();
        assert_eq!(done, vec!["a", "b"]);
    }

    #[tokio::test]
    async fn an_unresolved_unit_is_failed() {
        let mut q = AckQueue::default();
        let (n, r) = BatchNotifier::new();
        let t = n.token();
        drop(n);
        q.push(1, r);
        drop(t);
        assert!(matches!(q.next().await, Some(Settled::Failed(1))));
    }

    #[test]
    fn cursor_records_survive_a_reopen() {
        #[derive(Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Rec {
            key: String,
        }
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let c = CursorStore::<Rec>::new(&store, "aws_s3", "in");
        assert_eq!(c.load().unwrap(), None);
        c.save(&Rec { key: "a/b".into() }).unwrap();
        drop(c);
        drop(store);
        let store = StateStore::new(dir.path());
        let c = CursorStore::<Rec>::new(&store, "aws_s3", "in");
        assert_eq!(c.load().unwrap(), Some(Rec { key: "a/b".into() }));
    }
}
