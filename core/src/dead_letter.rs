//! Dead letters: records a component could not process, with the reason, kept for an operator.
//!
//! A dead letter is an ordinary event on the component's `<name>.dropped` output:
//! `{"reason", "message", "component", "raw" | "raw_base64", "event"?, ...origin}`. The raw
//! bytes are kept as text when they are UTF-8 and as base64 otherwise, so nothing is
//! "fixed" silently. Dead letters carry secrets exactly as they arrived: pipelines route
//! `.dropped` through `redact` before any sink.

use std::sync::Arc;

use base64::Engine;

use crate::ack::AckToken;
use crate::event::{Event, Object, Value};

/// Builder for one dead-letter event.
pub struct DeadLetter {
    fields: Object,
    byte_size: usize,
    ack: Option<AckToken>,
}

/// At most this much of an oversize record is kept in its dead letter.
pub const MAX_RAW_PREFIX: usize = 1024;

impl DeadLetter {
    /// `reason` is a stable identifier (`invalid_json`, `record_too_large`...); `message`
    /// says what exactly was wrong. Neither may contain secret values.
    pub fn new(component: &str, reason: &str, message: impl Into<String>) -> Self {
        let mut fields = Object::new();
        fields.insert("reason".into(), reason.into());
        fields.insert("message".into(), Value::String(message.into()));
        fields.insert("component".into(), component.into());
        DeadLetter {
            fields,
            byte_size: 0,
            ack: None,
        }
    }

    /// Keeps the original bytes: as text when valid UTF-8, otherwise as `raw_base64`.
    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.byte_size = bytes.len();
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                self.fields.insert("raw".into(), s.into());
            }
            Err(_) => {
                let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
                self.fields.insert("raw_base64".into(), b64.into());
            }
        }
        self
    }

    /// Keeps only the first [`MAX_RAW_PREFIX`] bytes of an oversize record, plus its length.
    pub fn raw_prefix(self, bytes: &[u8], total_len: usize) -> Self {
        let end = bytes.len().min(MAX_RAW_PREFIX);
        let mut dl = self.raw(&bytes[..end]);
        dl.byte_size = total_len;
        dl.fields.insert("raw_truncated".into(), true.into());
        dl.fields.insert("length".into(), total_len.into());
        dl
    }

    /// Keeps an event that was parsed but cannot be processed further.
    pub fn event(mut self, fields: Object) -> Self {
        self.fields.insert("event".into(), Value::Object(fields));
        self
    }

    /// Adds origin information (`file`, `line`, `offset`, `index`, `key`...).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(key.into(), value.into());
        self
    }

    pub fn ack(mut self, ack: Option<AckToken>) -> Self {
        self.ack = ack;
        self
    }

    pub fn build(self, source: Arc<str>) -> Event {
        let mut e = Event::new(self.fields, source, self.byte_size);
        e.meta.ack = self.ack;
        e
    }

    /// Turns an event that a transform or sink cannot handle into a dead letter, keeping its
    /// ack token and labels.
    pub fn from_event(
        component: &str,
        reason: &str,
        message: impl Into<String>,
        event: Event,
    ) -> Event {
        let (fields, meta) = event.into_parts();
        let mut dl = DeadLetter::new(component, reason, message).event(fields);
        dl.byte_size = meta.byte_size;
        dl.ack = meta.ack;
        let mut e = dl.build(meta.source);
        e.meta.labels = meta.labels;
        e.meta.received_at = meta.received_at;
        e
    }
}
