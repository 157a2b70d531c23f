//! A component's output port: sends batches to every component wired to it (fan-out).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::ack::DeliveryStatus;
use crate::event::EventBatch;
use crate::metrics::ComponentMetrics;

/// The sending end of one output (`name` or `name.dropped`).
///
/// With several consumers each gets its own copy of the batch (events are cloned, their ack
/// tokens too). Sending waits for room in every consumer's bounded channel: that wait is the
/// backpressure that stops a source from reading ahead of a slow sink.
#[derive(Clone)]
pub struct Output {
    name: Arc<str>,
    senders: Vec<mpsc::Sender<EventBatch>>,
    metrics: Arc<ComponentMetrics>,
    /// Reasons already logged for an unwired dead-letter output (logged once per kind).
    logged_reasons: Arc<Mutex<HashSet<String>>>,
}

/// The consumers are gone: the pipeline is shutting down after a fatal error.
#[derive(Debug)]
pub struct OutputClosed(pub EventBatch);

impl std::fmt::Display for OutputClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "downstream components have stopped")
    }
}

impl std::error::Error for OutputClosed {}

impl Output {
    pub fn new(
        name: Arc<str>,
        senders: Vec<mpsc::Sender<EventBatch>>,
        metrics: Arc<ComponentMetrics>,
    ) -> Self {
        Output {
            name,
            senders,
            metrics,
            logged_reasons: Default::default(),
        }
    }

    /// An output wired to nothing (tests, or a `.dropped` nobody consumes).
    pub fn unwired(name: &str, metrics: Arc<ComponentMetrics>) -> Self {
        Output::new(name.into(), Vec::new(), metrics)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_wired(&self) -> bool {
        !self.senders.is_empty()
    }

    /// Sends a batch to every consumer, waiting for room. Events of a batch sent to nobody are
    /// resolved as `Filtered` (a main output wired to nothing is rejected by config validation,
    /// so this only happens for unwired dead-letter outputs, see [`Output::send_dead_letters`]).
    pub async fn send(&self, batch: EventBatch) -> Result<(), OutputClosed> {
        if batch.is_empty() {
            return Ok(());
        }
        self.count_out(&batch);
        match self.senders.len() {
            0 => {
                for e in batch {
                    e.ack(DeliveryStatus::Filtered);
                }
                Ok(())
            }
            1 => self.senders[0]
                .send(batch)
                .await
                .map_err(|e| OutputClosed(e.0)),
            _ => {
                // Reserve room in every channel first so a closed or full consumer never
                // leaves the batch half-delivered to the others.
                let mut permits = Vec::with_capacity(self.senders.len());
                for s in &self.senders {
                    match s.reserve().await {
                        Ok(p) => permits.push(p),
                        Err(_) => return Err(OutputClosed(batch)),
                    }
                }
                let last = permits.pop();
                for p in permits {
                    p.send(batch.clone());
                }
                if let Some(p) = last {
                    p.send(batch);
                }
                Ok(())
            }
        }
    }

    /// Like [`Output::send`] but never waits: gives the batch back when any consumer's channel
    /// is full (an HTTP source answers 503 then).
    pub fn try_send(&self, batch: EventBatch) -> Result<(), TrySendError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut permits = Vec::with_capacity(self.senders.len());
        for s in &self.senders {
            match s.try_reserve() {
                Ok(p) => permits.push(p),
                Err(mpsc::error::TrySendError::Full(())) => return Err(TrySendError::Full(batch)),
                Err(mpsc::error::TrySendError::Closed(())) => {
                    return Err(TrySendError::Closed(batch))
                }
            }
        }
        self.count_out(&batch);
        if permits.is_empty() {
            for e in batch {
                e.ack(DeliveryStatus::Filtered);
            }
            return Ok(());
        }
        let last = permits.pop();
        for p in permits {
            p.send(batch.clone());
        }
        if let Some(p) = last {
            p.send(batch);
        }
        Ok(())
    }

    /// Sends dead letters (built with [`crate::DeadLetter`]). Each event's batch is marked as
    /// having had a dead letter. When nothing consumes this output the events are counted,
    /// each reason is logged once, and they are resolved as handled: a dead letter never stops
    /// the pipeline.
    pub async fn send_dead_letters(&self, batch: EventBatch) -> Result<(), OutputClosed> {
        if batch.is_empty() {
            return Ok(());
        }
        self.metrics.add_dead_lettered(batch.len() as u64);
        for e in &batch {
            e.note(DeliveryStatus::DeadLettered);
        }
        if self.senders.is_empty() {
            for e in batch {
                let reason = e
                    .fields()
                    .get("reason")
                    .and_then(|r| r.as_str())
                    .unwrap_or("unknown")
                    .to_string();
                self.metrics.add_error(&reason);
                let first_time = self
                    .logged_reasons
                    .lock()
                    .map(|mut seen| seen.insert(reason.clone()))
                    .unwrap_or(false);
                if first_time {
                    tracing::warn!(
                        output = %self.name,
                        %reason,
                        "record dead-lettered; wire `{}` to a sink to keep these records (logged once per reason)",
                        self.name
                    );
                }
                e.ack(DeliveryStatus::DeadLettered);
            }
            return Ok(());
        }
        self.send(batch).await
    }

    fn count_out(&self, batch: &EventBatch) {
        let bytes: usize = batch.iter().map(|e| e.meta.byte_size).sum();
        self.metrics.add_sent(batch.len() as u64, bytes as u64);
    }

    /// A gauge of the consumer channels' fill (0 empty .. 1 full). It holds weak senders so
    /// that it never keeps a channel open after the output is gone.
    pub fn fill_gauge(&self) -> impl Fn() -> f64 + Send + Sync + 'static {
        let weak: Vec<mpsc::WeakSender<EventBatch>> =
            self.senders.iter().map(|s| s.downgrade()).collect();
        move || {
            let (used, cap) = weak
                .iter()
                .filter_map(|w| w.upgrade())
                .fold((0, 0), |(u, c), s| {
                    (u + s.max_capacity() - s.capacity(), c + s.max_capacity())
                });
            if cap == 0 {
                0.0
            } else {
                used as f64 / cap as f64
            }
        }
    }
}

pub enum TrySendError {
    Full(EventBatch),
    Closed(EventBatch),
}
