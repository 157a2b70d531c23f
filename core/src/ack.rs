//! End-to-end acknowledgements: how a source learns that the events it emitted were handled.
//!
//! A source creates one [`BatchNotifier`] per unit it can checkpoint (a run of file lines, an
//! HTTP request, an API page) and gives every event a clone of its [`AckToken`]. Each token
//! is resolved exactly once, by whoever ends the event's journey: a sink after the
//! destination confirmed the write, a filter that drops it on purpose, the runner when it
//! goes to an unwired dead-letter output. Fan-out clones the token, so a batch is complete
//! only when every copy on every branch is resolved. A token dropped without being resolved
//! (a crash path, a shutdown that could not drain) counts as `Failed`: at-least-once
//! delivery means "unknown" must be treated as "not delivered".

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// The outcome of one event. Ordered by severity: a batch reports its worst event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum DeliveryStatus {
    /// The destination confirmed the write.
    Delivered = 0,
    /// Dropped on purpose by a transform (a filter, a duplicate): handled.
    Filtered = 1,
    /// Written to (or counted by) a dead-letter output: handled, never to be retried.
    DeadLettered = 2,
    /// Not delivered: the source must not checkpoint past it and may retry.
    Failed = 3,
}

impl DeliveryStatus {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => DeliveryStatus::Delivered,
            1 => DeliveryStatus::Filtered,
            2 => DeliveryStatus::DeadLettered,
            _ => DeliveryStatus::Failed,
        }
    }

    /// Handled means the source may move its checkpoint past the event.
    pub fn is_handled(self) -> bool {
        self != DeliveryStatus::Failed
    }
}

/// What the source learns about a whole batch once every token is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchStatus {
    /// The worst outcome of any event of the batch.
    pub worst: DeliveryStatus,
    /// Whether any event of the batch went to a dead-letter output.
    pub any_dead_lettered: bool,
}

impl BatchStatus {
    pub fn is_handled(&self) -> bool {
        self.worst.is_handled()
    }
}

struct BatchState {
    worst: AtomicU8,
    dead_lettered: AtomicU8,
    tx: Mutex<Option<oneshot::Sender<BatchStatus>>>,
}

impl BatchState {
    fn record(&self, status: DeliveryStatus) {
        self.worst.fetch_max(status as u8, Ordering::AcqRel);
        if status == DeliveryStatus::DeadLettered {
            self.dead_lettered.store(1, Ordering::Release);
        }
    }
}

impl Drop for BatchState {
    // Runs when the last token (and the notifier) are gone: every event has been resolved.
    fn drop(&mut self) {
        let status = BatchStatus {
            worst: DeliveryStatus::from_u8(self.worst.load(Ordering::Acquire)),
            any_dead_lettered: self.dead_lettered.load(Ordering::Acquire) == 1,
        };
        if let Ok(mut guard) = self.tx.lock() {
            if let Some(tx) = guard.take() {
                let _ = tx.send(status);
            }
        }
    }
}

/// Created by a source for one checkpointable unit; hands out tokens, then is dropped.
pub struct BatchNotifier {
    state: Arc<BatchState>,
}

/// Resolves when every event of the batch has been resolved.
pub type BatchReceiver = oneshot::Receiver<BatchStatus>;

impl BatchNotifier {
    pub fn new() -> (Self, BatchReceiver) {
        let (tx, rx) = oneshot::channel();
        let state = Arc::new(BatchState {
            worst: AtomicU8::new(DeliveryStatus::Delivered as u8),
            dead_lettered: AtomicU8::new(0),
            tx: Mutex::new(Some(tx)),
        });
        (BatchNotifier { state }, rx)
    }

    pub fn token(&self) -> AckToken {
        AckToken {
            state: Arc::clone(&self.state),
            resolved: false,
        }
    }
}

/// One event's share of a batch. Clone it when an event is duplicated (fan-out).
pub struct AckToken {
    state: Arc<BatchState>,
    resolved: bool,
}

impl std::fmt::Debug for AckToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AckToken")
    }
}

impl Clone for AckToken {
    fn clone(&self) -> Self {
        AckToken {
            state: Arc::clone(&self.state),
            resolved: false,
        }
    }
}

impl AckToken {
    pub fn resolve(mut self, status: DeliveryStatus) {
        self.state.record(status);
        self.resolved = true;
    }

    /// Records an outcome without resolving the token.
    pub fn note(&self, status: DeliveryStatus) {
        self.state.record(status);
    }
}

impl Drop for AckToken {
    fn drop(&mut self) {
        if !self.resolved {
            self.state.record(DeliveryStatus::Failed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn outcome(statuses: &[DeliveryStatus]) -> BatchStatus {
        let (notifier, rx) = BatchNotifier::new();
        let tokens: Vec<_> = statuses.iter().map(|_| notifier.token()).collect();
        drop(notifier);
        for (t, s) in tokens.into_iter().zip(statuses) {
            t.resolve(*s);
        }
        rx.await.expect("batch finalized")
    }

    #[tokio::test]
    async fn all_delivered_reports_delivered() {
        let s = outcome(&[DeliveryStatus::Delivered; 3]).await;
        assert_eq!(s.worst, DeliveryStatus::Delivered);
        assert!(s.is_handled());
        assert!(!s.any_dead_lettered);
    }

    #[tokio::test]
    async fn filtered_and_dead_lettered_count_as_handled() {
        let s = outcome(&[DeliveryStatus::Delivered, DeliveryStatus::Filtered]).await;
        assert_eq!(s.worst, DeliveryStatus::Filtered);
        assert!(s.is_handled());
        let s = outcome(&[DeliveryStatus::DeadLettered, DeliveryStatus::Delivered]).await;
        assert_eq!(s.worst, DeliveryStatus::DeadLettered);
        assert!(s.any_dead_lettered);
        assert!(s.is_handled());
    }

    #[tokio::test]
    async fn one_failure_fails_the_batch() {
        let s = outcome(&[
            DeliveryStatus::Delivered,
            DeliveryStatus::Failed,
            DeliveryStatus::DeadLettered,
        ])
        .await;
        assert_eq!(s.worst, DeliveryStatus::Failed);
        assert!(!s.is_handled());
    }

    #[tokio::test]
    async fn unresolved_token_counts_as_failed() {
        let (notifier, rx) = BatchNotifier::new();
        let t = notifier.token();
        drop(notifier);
        drop(t);
        assert_eq!(rx.await.unwrap().worst, DeliveryStatus::Failed);
    }

    #[tokio::test]
    async fn fan_out_waits_for_every_copy() {
        let (notifier, mut rx) = BatchNotifier::new();
        let t = notifier.token();
        drop(notifier);
        let copy = t.clone();
        t.resolve(DeliveryStatus::Delivered);
        assert!(rx.try_recv().is_err(), "one branch still pending");
        copy.resolve(DeliveryStatus::Delivered);
        assert_eq!(rx.await.unwrap().worst, DeliveryStatus::Delivered);
    }

    #[tokio::test]
    async fn noted_dead_letter_is_reported_even_when_later_delivered() {
        let (notifier, rx) = BatchNotifier::new();
        let t = notifier.token();
        drop(notifier);
        t.note(DeliveryStatus::DeadLettered);
        t.resolve(DeliveryStatus::Delivered);
        let s = rx.await.unwrap();
        assert!(s.any_dead_lettered);
        assert!(s.is_handled());
    }
}
