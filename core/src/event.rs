//! The event: a JSON object plus metadata that never reaches the output.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};

use crate::ack::{AckToken, DeliveryStatus};

pub type Value = serde_json::Value;
pub type Object = serde_json::Map<String, Value>;

/// Events travel between components in batches: one channel message per batch keeps the
/// per-event cost of the channels negligible.
pub type EventBatch = Vec<Event>;

/// An event's body is kept in up to two forms. A record read as JSON text keeps that text
/// (`raw`) and is parsed into `fields` only when a component first reads a field; a sink
/// writes the text back unchanged as long as nobody asked to modify the event. That saves the
/// parse on paths that only move records (`stdin -> file`) and the serialization on paths that
/// only read them (`filter`), the two biggest costs of a log shipper. Any mutable access
/// ([`Event::fields_mut`]) drops the text, so it can never disagree with the fields.
#[derive(Debug, Clone)]
pub struct Event {
    raw: Option<Box<str>>,
    fields: OnceLock<Object>,
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
    pub labels: Labels,
}

/// An event's labels: those common to every record of one origin (a file's path and host) are
/// shared by reference, and only those that differ per record (an offset) are the event's own,
/// so a source does not copy a map for each of millions of lines.
#[derive(Debug, Clone, Default)]
pub struct Labels {
    shared: Option<Arc<Object>>,
    /// A short chain (events have a few own labels at most): one word in every `Event`
    /// instead of a Vec's three, and one allocation per label.
    own: Option<Box<OwnLabel>>,
}

#[derive(Debug, Clone)]
struct OwnLabel {
    key: Cow<'static, str>,
    value: Value,
    next: Option<Box<OwnLabel>>,
}

impl Labels {
    pub fn shared(common: Arc<Object>) -> Self {
        Labels {
            shared: Some(common),
            own: None,
        }
    }

    /// Sets `key` for this event only (replacing a shared or earlier value).
    pub fn insert(&mut self, key: impl Into<Cow<'static, str>>, value: Value) {
        let key = key.into();
        let mut cur = self.own.as_deref_mut();
        while let Some(label) = cur {
            if label.key == key {
                label.value = value;
                return;
            }
            cur = label.next.as_deref_mut();
        }
        let next = self.own.take();
        self.own = Some(Box::new(OwnLabel { key, value, next }));
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        let mut cur = self.own.as_deref();
        while let Some(label) = cur {
            if label.key == key {
                return Some(&label.value);
            }
            cur = label.next.as_deref();
        }
        self.shared.as_ref()?.get(key)
    }
}

impl EventMeta {
    fn new(source: Arc<str>, byte_size: usize) -> Self {
        EventMeta {
            source,
            received_at: Utc::now(),
            byte_size,
            ack: None,
            labels: Labels::default(),
        }
    }
}

/// A JSON object as text, checked by [`crate::json::decode_record`] (valid UTF-8, one object,
/// the depth and duplicate-key rules), so parsing it later cannot fail.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonObjectText(pub(crate) Box<str>);

impl JsonObjectText {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_object(self) -> Object {
        parse_validated(&self.0)
    }
}

fn parse_validated(text: &str) -> Object {
    match serde_json::from_str(text) {
        Ok(fields) => fields,
        // Unreachable for text that passed decode_record; an empty object rather than a panic.
        Err(_) => Object::new(),
    }
}

impl Event {
    pub fn new(fields: Object, source: Arc<str>, byte_size: usize) -> Self {
        Event {
            raw: None,
            fields: OnceLock::from(fields),
            meta: EventMeta::new(source, byte_size),
        }
    }

    /// An event whose body is a validated JSON object text, parsed only if a field is read.
    pub fn from_json(text: JsonObjectText, source: Arc<str>, byte_size: usize) -> Self {
        Event {
            raw: Some(text.0),
            fields: OnceLock::new(),
            meta: EventMeta::new(source, byte_size),
        }
    }

    /// An event whose body is JSON text a component wrote, with the metadata of the event it
    /// came from (acks, labels, source).
    pub fn from_json_parts(text: JsonObjectText, meta: EventMeta) -> Self {
        Event {
            raw: Some(text.0),
            fields: OnceLock::new(),
            meta,
        }
    }

    /// The event's fields (parsed from the JSON text on first use).
    pub fn fields(&self) -> &Object {
        self.fields.get_or_init(|| match &self.raw {
            Some(text) => parse_validated(text),
            None => Object::new(),
        })
    }

    /// The fields, for modification: the JSON text the event was read as is dropped, so sinks
    /// serialize the modified fields.
    pub fn fields_mut(&mut self) -> &mut Object {
        self.fields();
        self.raw = None;
        match self.fields.get_mut() {
            Some(fields) => fields,
            None => unreachable!("initialized by fields() just above"),
        }
    }

    /// Changes the top-level members named in `touched` with `edit`. An event held as JSON
    /// text stays text: only those members are parsed, the others are copied as they are
    /// ([`crate::json_edit::edit_object_text`]), so neither this edit nor the sink has to
    /// handle the whole tree. `edit` must only change the members named.
    pub fn edit_members(&mut self, touched: &[&str], edit: impl FnOnce(&mut Object)) {
        match &self.raw {
            Some(text) => {
                let text = crate::json_edit::edit_object_text(text, touched, edit);
                self.set_json(text);
            }
            None => edit(self.fields_mut()),
        }
    }

    /// Replaces the event's body with `text` (its metadata stays).
    pub fn set_json(&mut self, text: JsonObjectText) {
        self.raw = Some(text.0);
        self.fields = OnceLock::new();
    }

    pub fn into_fields(mut self) -> Object {
        self.fields();
        self.fields.take().unwrap_or_default()
    }

    pub fn set_fields(&mut self, fields: Object) {
        self.raw = None;
        self.fields = OnceLock::from(fields);
    }

    /// Splits the event into its fields and metadata.
    pub fn into_parts(mut self) -> (Object, EventMeta) {
        self.fields();
        (self.fields.take().unwrap_or_default(), self.meta)
    }

    pub fn from_parts(fields: Object, meta: EventMeta) -> Self {
        Event {
            raw: None,
            fields: OnceLock::from(fields),
            meta,
        }
    }

    /// The JSON text the event was read as, while it is unmodified.
    pub fn json_text(&self) -> Option<&str> {
        self.raw.as_deref()
    }

    /// The JSON text, if the event has one and it was not parsed yet (a reader that needs few
    /// fields can extract them from the text instead of parsing all of them).
    pub fn unparsed_json_text(&self) -> Option<&str> {
        match self.fields.get() {
            Some(_) => None,
            None => self.raw.as_deref(),
        }
    }

    /// Appends the event as compact JSON (its original text when it has one).
    pub fn write_json(&self, buf: &mut Vec<u8>) {
        match &self.raw {
            Some(text) => buf.extend_from_slice(text.as_bytes()),
            None => crate::json_write::write_object(buf, self.fields()),
        }
    }

    pub fn to_json_string(&self) -> String {
        match &self.raw {
            Some(text) => text.to_string(),
            None => {
                let mut text = String::new();
                crate::json_write::write_object(&mut text, self.fields());
                text
            }
        }
    }

    pub fn with_ack(mut self, ack: AckToken) -> Self {
        self.meta.ack = Some(ack);
        self
    }

    /// Adds a metadata label (not part of the output).
    pub fn set_label(&mut self, key: impl Into<Cow<'static, str>>, value: impl Into<Value>) {
        self.meta.labels.insert(key, value.into());
    }

    pub fn label(&self, key: &str) -> Option<&Value> {
        self.meta.labels.get(key)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::{decode_record, Decoded};

    fn text(json: &str) -> JsonObjectText {
        match decode_record(json.as_bytes(), 1 << 20) {
            Ok(Decoded::Record(t)) => t,
            other => panic!("{json}: {other:?}"),
        }
    }

    #[test]
    fn an_unmodified_event_keeps_its_text_and_a_modified_one_loses_it() {
        let mut e = Event::from_json(text(r#"{ "b": 1, "a": [true] }"#), "s".into(), 20);
        assert_eq!(e.fields()["b"], 1, "reads parse the text");
        let mut out = Vec::new();
        e.write_json(&mut out);
        assert_eq!(out, br#"{ "b": 1, "a": [true] }"#, "written as read");
        e.fields_mut().insert("c".into(), 2.into());
        assert_eq!(e.json_text(), None);
        out.clear();
        e.write_json(&mut out);
        assert_eq!(out, br#"{"a":[true],"b":1,"c":2}"#);
    }

    #[test]
    fn own_labels_override_shared_ones() {
        let mut shared = Object::new();
        shared.insert("file".into(), "/a.log".into());
        shared.insert("host".into(), "h".into());
        let mut labels = Labels::shared(Arc::new(shared));
        labels.insert("offset", 10.into());
        labels.insert("file", "/b.log".into());
        labels.insert("offset", 20.into());
        assert_eq!(labels.get("file"), Some(&"/b.log".into()));
        assert_eq!(labels.get("host"), Some(&"h".into()));
        assert_eq!(labels.get("offset"), Some(&20.into()));
        assert_eq!(labels.get("none"), None);
    }
}
