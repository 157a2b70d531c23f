//! The event: a JSON object plus metadata that never reaches the output.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::ack::{AckToken, DeliveryStatus};

pub type Value = serde_json::Value;
pub type Object = serde_json::Map<String, Value>;

/// Events travel between components in batches: one channel message per batch keeps the
/// per-event cost of the channels negligible.
pub type EventBatch = Vec<Event>;

#[derive(Debug, Clone)]
pub struct Event {
    /// What sinks write.
    pub fields: Object,
    pub meta: EventMeta,
}

#[derive(Debug, Clone)]
pub struct EventMeta {
    /// Name of the component that produced the event.
    pub source: Arc<str>,
    pub received_at: DateTime<Utc>,
    /// Size of the record as it was read (bytes on the wire or on disk).
    pub byte_size: usize,
    /// `None` for sources that cannot replay (demo); otherwise resolved by every sink.
    pub ack: Option<AckToken>,
    /// Where the record came from (file path, byte offset, host, S3 key...). Sinks can template
    /// on these as `{{ %name }}`; they are not written out.
    pub labels: Option<Box<Object>>,
}

impl Event {
    pub fn new(fields: Object, source: Arc<str>, byte_size: usize) -> Self {
        Event {
            fields,
            meta: EventMeta {
                source,
                received_at: Utc::now(),
                byte_size,
                ack: None,
                labels: None,
            },
        }
    }

    pub fn with_ack(mut self, ack: AckToken) -> Self {
        self.meta.ack = Some(ack);
        self
    }

    /// Adds a metadata label (not part of the output).
    pub fn set_label(&mut self, key: &str, value: impl Into<Value>) {
        self.meta
            .labels
            .get_or_insert_with(Default::default)
            .insert(key.to_string(), value.into());
    }

    pub fn label(&self, key: &str) -> Option<&Value> {
        self.meta.labels.as_ref().and_then(|l| l.get(key))
    }

    /// Reports this event's final outcome to its source (no-op for sources without acks).
    pub fn ack(self, status: DeliveryStatus) {
        if let Some(token) = self.meta.ack {
            token.resolve(status);
        }
    }

    /// Records an outcome on the event's batch without resolving the event (used when an
    /// event is turned into a dead letter and keeps travelling).
    pub fn note(&self, status: DeliveryStatus) {
        if let Some(token) = &self.meta.ack {
            token.note(status);
        }
    }
}
