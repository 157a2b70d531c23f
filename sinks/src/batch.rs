//! A partitioned batcher: items are grouped by a key (an S3 key prefix, a log group + stream)
//! and a partition's batch is ready when it reaches `max_events`, would exceed `max_bytes`,
//! or is `timeout` old. The total of all open partitions is bounded too: past
//! `max_buffered_bytes` the oldest partition is flushed early, so many keys cannot make
//! memory grow.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use sessiontrail_core::component::{ComponentError, SinkContext};
use sessiontrail_core::Event;

use crate::retry::ConcurrencyLimit;

/// `batch:` options.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchOptions {
    /// Largest batch in bytes of encoded events (before compression).
    pub max_bytes: Option<usize>,
    /// Most events in one batch.
    pub max_events: Option<usize>,
    /// Longest time an event waits for its batch to fill, in seconds.
    pub timeout_secs: Option<f64>,
}

/// Resolved batch limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchLimits {
    pub max_bytes: usize,
    pub max_events: usize,
    pub timeout: Duration,
    /// Bytes held across all partitions before the oldest is flushed early.
    pub max_buffered_bytes: usize,
}

impl BatchLimits {
    /// Applies `options` over `defaults`, keeping each limit within `hard_max` (the
    /// destination's own limits).
    pub fn resolve(
        options: Option<&BatchOptions>,
        defaults: BatchLimits,
        hard_max: BatchLimits,
    ) -> Result<BatchLimits, String> {
        let o = options.copied().unwrap_or(BatchOptions {
            max_bytes: None,
            max_events: None,
            timeout_secs: None,
        });
        let max_bytes = o.max_bytes.unwrap_or(defaults.max_bytes);
        let max_events = o.max_events.unwrap_or(defaults.max_events);
        let timeout_secs = o.timeout_secs.unwrap_or(defaults.timeout.as_secs_f64());
        if max_bytes == 0 || max_bytes > hard_max.max_bytes {
            return Err(format!(
                "batch.max_bytes must be between 1 and {}",
                hard_max.max_bytes
            ));
        }
        if max_events == 0 || max_events > hard_max.max_events {
            return Err(format!(
                "batch.max_events must be between 1 and {}",
                hard_max.max_events
            ));
        }
        if !(timeout_secs > 0.0 && timeout_secs <= hard_max.timeout.as_secs_f64()) {
            return Err(format!(
                "batch.timeout_secs must be greater than 0 and at most {}",
                hard_max.timeout.as_secs_f64()
            ));
        }
        Ok(BatchLimits {
            max_bytes,
            max_events,
            timeout: Duration::from_secs_f64(timeout_secs),
            max_buffered_bytes: defaults.max_buffered_bytes.max(max_bytes),
        })
    }
}

struct Partition<T> {
    items: Vec<T>,
    bytes: usize,
    deadline: Instant,
}

/// Groups items by key into batches. `T` is whatever the sink needs per event (an encoded
/// line and its ack token).
pub struct Batcher<K, T> {
    limits: BatchLimits,
    partitions: HashMap<K, Partition<T>>,
    buffered_bytes: usize,
}

impl<K: Hash + Eq + Clone, T> Batcher<K, T> {
    pub fn new(limits: BatchLimits) -> Self {
        Batcher {
            limits,
            partitions: HashMap::new(),
            buffered_bytes: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    pub fn buffered_bytes(&self) -> usize {
        self.buffered_bytes
    }

    /// Adds an item of `size` bytes; returns the batches that became ready.
    pub fn push(&mut self, key: K, item: T, size: usize) -> Vec<(K, Vec<T>)> {
        let mut ready = Vec::new();
        // An item that would overflow its partition closes the current batch first.
        if let Some(p) = self.partitions.get(&key) {
            if p.bytes + size > self.limits.max_bytes && !p.items.is_empty() {
                ready.extend(self.take(&key));
            }
        }
        let timeout = self.limits.timeout;
        let p = self
            .partitions
            .entry(key.clone())
            .or_insert_with(|| Partition {
                items: Vec::new(),
                bytes: 0,
                deadline: Instant::now() + timeout,
            });
        p.items.push(item);
        p.bytes += size;
        self.buffered_bytes += size;
        if p.items.len() >= self.limits.max_events || p.bytes >= self.limits.max_bytes {
            ready.extend(self.take(&key));
        }
        while self.buffered_bytes > self.limits.max_buffered_bytes {
            let Some(oldest) = self
                .partitions
                .iter()
                .min_by_key(|(_, p)| p.deadline)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            ready.extend(self.take(&oldest));
        }
        ready
    }

    /// When the next partition times out.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.partitions.values().map(|p| p.deadline).min()
    }

    /// Batches whose timeout has passed at `now`.
    pub fn take_expired(&mut self, now: Instant) -> Vec<(K, Vec<T>)> {
        let expired: Vec<K> = self
            .partitions
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        expired.iter().filter_map(|k| self.take(k)).collect()
    }

    /// Every open batch (end of input).
    pub fn take_all(&mut self) -> Vec<(K, Vec<T>)> {
        let keys: Vec<K> = self.partitions.keys().cloned().collect();
        keys.iter().filter_map(|k| self.take(k)).collect()
    }

    fn take(&mut self, key: &K) -> Option<(K, Vec<T>)> {
        let p = self.partitions.remove(key)?;
        self.buffered_bytes -= p.bytes;
        Some((key.clone(), p.items))
    }
}

/// A sink built on the batcher: turns each event into a batch item, and sends a ready batch
/// (the returned future owns the whole request: retries, acknowledgements, dead letters).
pub trait BatchedSink: Send + 'static {
    type Key: Hash + Eq + Clone + Send + 'static;
    type Item: Send + 'static;

    /// The event's partition key, batch item and size in bytes, or its dead letter.
    fn prepare(&mut self, event: Event) -> Result<(Self::Key, Self::Item, usize), Event>;

    /// Sends one batch. Runs as its own task while holding a concurrency permit.
    fn send(&self, key: Self::Key, items: Vec<Self::Item>) -> BoxFuture<'static, ()>;
}

/// Runs a [`BatchedSink`] until its input closes, then flushes every open batch and waits
/// for the requests in flight. While every concurrency permit is taken (requests in flight
/// or waiting to be retried) no input is read: that is the sink's backpressure.
pub async fn run_batched<S: BatchedSink>(
    mut sink: S,
    limits: BatchLimits,
    concurrency: ConcurrencyLimit,
    mut cx: SinkContext,
) -> Result<(), ComponentError> {
    let name = Arc::clone(&cx.name);
    let failed = |e: tokio::task::JoinError| {
        ComponentError(format!("sink {name}: a request task failed: {e}"))
    };
    let mut batcher: Batcher<S::Key, S::Item> = Batcher::new(limits);
    let mut in_flight = JoinSet::new();
    loop {
        let deadline = batcher.next_deadline();
        let ready = tokio::select! {
            maybe = cx.input.recv() => match maybe {
                None => break,
                Some(events) => {
                    let bytes: usize = events.iter().map(|e| e.meta.byte_size).sum();
                    cx.metrics.add_received(events.len() as u64, bytes as u64);
                    let mut ready = Vec::new();
                    let mut dead = Vec::new();
                    for event in events {
                        match sink.prepare(event) {
                            Ok((key, item, size)) => ready.extend(batcher.push(key, item, size)),
                            Err(dead_letter) => dead.push(dead_letter),
                        }
                    }
                    if !dead.is_empty() {
                        cx.dropped
                            .send_dead_letters(dead)
                            .await
                            .map_err(|e| ComponentError(format!("sink {}: {e}", cx.name)))?;
                    }
                    ready
                }
            },
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                batcher.take_expired(Instant::now())
            }
            Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                joined.map_err(failed)?;
                continue;
            }
        };
        for (key, items) in ready {
            let permit = concurrency.acquire().await;
            let request = sink.send(key, items);
            in_flight.spawn(async move {
                request.await;
                drop(permit);
            });
        }
        while let Some(joined) = in_flight.try_join_next() {
            joined.map_err(failed)?;
        }
    }
    for (key, items) in batcher.take_all() {
        let permit = concurrency.acquire().await;
        let request = sink.send(key, items);
        in_flight.spawn(async move {
            request.await;
            drop(permit);
        });
    }
    while let Some(joined) = in_flight.join_next().await {
        joined.map_err(failed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_bytes: usize, max_events: usize) -> BatchLimits {
        BatchLimits {
            max_bytes,
            max_events,
            timeout: Duration::from_millis(20),
            max_buffered_bytes: 1000,
        }
    }

    #[test]
    fn batch_is_ready_at_max_events() {
        let mut b = Batcher::new(limits(1000, 3));
        assert!(b.push("a", 1, 1).is_empty());
        assert!(b.push("a", 2, 1).is_empty());
        let ready = b.push("a", 3, 1);
        assert_eq!(ready, vec![("a", vec![1, 2, 3])]);
        assert!(b.is_empty());
    }

    #[test]
    fn item_that_would_overflow_max_bytes_starts_a_new_batch() {
        let mut b = Batcher::new(limits(10, 100));
        assert!(b.push("a", 1, 6).is_empty());
        let ready = b.push("a", 2, 5);
        assert_eq!(ready, vec![("a", vec![1])]);
        assert_eq!(b.buffered_bytes(), 5);
        // Exactly max_bytes closes the batch.
        assert_eq!(b.push("a", 3, 5), vec![("a", vec![2, 3])]);
    }

    #[test]
    fn partitions_are_batched_separately() {
        let mut b = Batcher::new(limits(1000, 2));
        assert!(b.push("a", 1, 1).is_empty());
        assert!(b.push("b", 2, 1).is_empty());
        assert_eq!(b.push("a", 3, 1), vec![("a", vec![1, 3])]);
        let mut rest = b.take_all();
        rest.sort();
        assert_eq!(rest, vec![("b", vec![2])]);
    }

    #[tokio::test]
    async fn timeout_flushes_a_partial_batch() {
        let mut b = Batcher::new(limits(1000, 100));
        b.push("a", 1, 1);
        let deadline = b.next_deadline().unwrap();
        assert!(b
            .take_expired(deadline - Duration::from_millis(1))
            .is_empty());
        tokio::time::sleep_until(deadline).await;
        assert_eq!(b.take_expired(Instant::now()), vec![("a", vec![1])]);
        assert_eq!(b.next_deadline(), None);
    }

    #[tokio::test]
    async fn total_buffer_limit_flushes_the_oldest_partition() {
        let mut b = Batcher::new(BatchLimits {
            max_buffered_bytes: 10,
            ..limits(8, 100)
        });
        b.push("old", 1, 6);
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(b.push("new", 2, 6), vec![("old", vec![1])]);
        assert_eq!(b.buffered_bytes(), 6);
    }

    #[test]
    fn resolve_rejects_limits_beyond_the_destination() {
        let hard = limits(100, 10);
        assert!(BatchLimits::resolve(
            Some(&BatchOptions {
                max_bytes: Some(101),
                max_events: None,
                timeout_secs: None
            }),
            limits(50, 5),
            hard
        )
        .is_err());
        let ok = BatchLimits::resolve(None, limits(50, 5), hard).unwrap();
        assert_eq!(ok.max_bytes, 50);
    }
}
