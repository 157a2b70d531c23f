//! What the correlation rules read from an event, and how it is read.
//!
//! The rules read about twenty fields (class, activity, time, the session key, the owner and
//! resource candidates, ...), a few of them for any one event. Events usually reach correlate
//! as the JSON text the `ocsf` transform wrote: parsing all of it into a `Value` tree to read
//! those fields, then serializing the tree again in the sink, cost more than the rules. So the
//! paths are numbered once ([`FieldReads`]) and an event's values are taken from its text in
//! one pass ([`PathSet::extract`]); an event already parsed is read from its tree.

use std::borrow::Cow;
use std::ops::Range;

use sessiontrail_core::condition::Condition;
use sessiontrail_core::json::get_path;
use sessiontrail_core::json_paths::{ExtractedPaths, PathSet};
use sessiontrail_core::{Event, Object, Value};

/// The fields every event is read at. Their numbers are the constants below (a `PathSet`
/// numbers distinct paths in order, and these come first).
const FIXED_PATHS: &[&str] = &[
    "class_uid",
    "activity_id",
    "time",
    "status_id",
    "unmapped.session_correction",
    "unmapped.end_reason",
    "unmapped.reported_duration_s",
    "api.operation",
    "metadata.uid",
    "metadata.product.name",
    // The session owner, first present wins.
    "user.name",
    "actor.user.name",
    "user.email_addr",
    "actor.user.email_addr",
    "user.uid",
    "actor.user.uid",
    // The resource, first present wins: `dst_endpoint.uid` first, as the Windows agent's
    // `resource_id` is the resource's identity and its host name only a label.
    "dst_endpoint.uid",
    "dst_endpoint.instance_uid",
    "dst_endpoint.hostname",
    "device.hostname",
];
pub const CLASS_UID: usize = 0;
pub const ACTIVITY_ID: usize = 1;
pub const TIME: usize = 2;
pub const STATUS_ID: usize = 3;
pub const SESSION_CORRECTION: usize = 4;
pub const END_REASON: usize = 5;
pub const REPORTED_DURATION: usize = 6;
pub const API_OPERATION: usize = 7;
pub const EVENT_UID: usize = 8;
pub const PRODUCT: usize = 9;
pub const USER_FIELDS: Range<usize> = 10..16;
pub const RESOURCE_FIELDS: Range<usize> = 16..20;

/// The paths the rules read, numbered: the fixed ones, then the configured session key and
/// condition fields.
#[derive(Debug)]
pub struct FieldReads {
    set: PathSet,
    pub session_id: usize,
    /// `actor.session.uid`, when the session id is the default `session.uid`.
    pub actor_session_id: Option<usize>,
    /// The key fields after the session id.
    pub extra_keys: Vec<usize>,
}

impl FieldReads {
    pub fn new(
        session_id: &str,
        actor_session_id: Option<&str>,
        extra_keys: &[String],
        conditions: &[&Condition],
    ) -> Self {
        let mut paths: Vec<String> = FIXED_PATHS.iter().map(|p| p.to_string()).collect();
        paths.push(session_id.to_string());
        paths.extend(actor_session_id.map(str::to_string));
        paths.extend(extra_keys.iter().cloned());
        for c in conditions {
            c.fields(&mut paths);
        }
        let set = PathSet::new(paths);
        let index = |p: &str| set.index_of(p).unwrap_or(usize::MAX);
        FieldReads {
            session_id: index(session_id),
            actor_session_id: actor_session_id.map(index),
            extra_keys: extra_keys.iter().map(|p| index(p)).collect(),
            set,
        }
    }
}

/// One event's values at the [`FieldReads`] paths.
pub struct EventFields<'a> {
    reads: &'a FieldReads,
    found: Found<'a>,
}

enum Found<'a> {
    /// Extracted from the event's JSON text.
    Text(ExtractedPaths<'a>, &'a Event),
    /// The event was parsed already: looked up in its tree.
    Tree(&'a Object),
}

impl<'a> EventFields<'a> {
    pub fn new(reads: &'a FieldReads, event: &'a Event) -> Self {
        let found = match event.unparsed_json_text() {
            Some(text) => Found::Text(reads.set.extract(text), event),
            None => Found::Tree(event.fields()),
        };
        EventFields { reads, found }
    }

    /// Reads a parsed object (the report reads stored events as trees).
    pub fn of_object(reads: &'a FieldReads, fields: &'a Object) -> Self {
        EventFields {
            reads,
            found: Found::Tree(fields),
        }
    }

    pub fn reads(&self) -> &'a FieldReads {
        self.reads
    }

    /// The value at path number `id`.
    pub fn get(&self, id: usize) -> Option<&Value> {
        match &self.found {
            Found::Text(found, _) => found.value(id),
            Found::Tree(fields) => get_path(fields, self.reads.set.path(id)?),
        }
    }

    /// The value at a dotted path of the set, by its text (what a condition asks for).
    pub fn get_path(&self, path: &str) -> Option<&Value> {
        self.get(self.reads.set.index_of(path)?)
    }

    pub fn get_u64(&self, id: usize) -> Option<u64> {
        self.get(id).and_then(Value::as_u64)
    }

    /// A non-empty string at path number `id`.
    pub fn get_str(&self, id: usize) -> Option<&str> {
        match self.get(id)? {
            Value::String(s) if !s.is_empty() => Some(s),
            _ => None,
        }
    }

    /// The first non-empty string of the paths numbered `ids`.
    pub fn first_str(&self, ids: Range<usize>) -> Option<&str> {
        ids.into_iter().find_map(|id| self.get_str(id))
    }

    /// A key field's text: strings as they are (borrowed), numbers in decimal (Parsec ids are
    /// numbers).
    pub fn key_text(&self, id: usize) -> Option<Cow<'_, str>> {
        match self.get(id)? {
            Value::String(s) if !s.is_empty() => Some(Cow::Borrowed(s)),
            Value::Number(n) => Some(Cow::Owned(n.to_string())),
            _ => None,
        }
    }

    pub fn matches(&self, condition: &Condition) -> bool {
        match &self.found {
            Found::Text(..) => condition.eval(&|path| self.get_path(path)),
            Found::Tree(fields) => condition.matches(fields),
        }
    }

    /// The whole event as a tree (kept for an end whose start has not come yet).
    pub fn to_object(&self) -> Object {
        match &self.found {
            Found::Text(_, event) => event.fields().clone(),
            Found::Tree(fields) => (*fields).clone(),
        }
    }
}

/// FNV-1a 64: a stable hash (it is persisted) of an event id (`metadata.uid`), for dedupe.
/// 0 means "no id".
pub fn event_id_hash(id: Option<&Value>) -> u64 {
    let number;
    let id: &str = match id {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(Value::Number(n)) => {
            number = n.to_string();
            &number
        }
        _ => return 0,
    };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessiontrail_core::json::{decode_record, Decoded};
    use std::sync::Arc;

    fn text_event(text: &str) -> Event {
        let Ok(Decoded::Record(t)) = decode_record(text.as_bytes(), 1 << 20) else {
            panic!("valid object: {text}");
        };
        Event::from_json(t, Arc::from("test"), text.len())
    }

    #[test]
    fn text_and_tree_events_read_the_same_values() {
        let docs = [
            r#"{"class_uid":3002,"activity_id":1,"time":5,"metadata":{"uid":"e1","product":{"name":"Windows"}},"session":{"uid":"s1"},"user":{"name":""},"actor":{"user":{"email_addr":"a@x"}},"dst_endpoint":{"hostname":"h1"},"host":{"id":7}}"#,
            r#"{"class_uid":6003,"api":{"operation":"StartSession"},"actor":{"session":{"uid":42}},"time":1.5,"unmapped":{"session_correction":{"updated_by":"ops"},"end_reason":"x"}}"#,
            r#"{"session":"flat","unmapped":[1],"time":null}"#,
        ];
        let cond: Condition =
            serde_json::from_str::<sessiontrail_core::condition::ConditionConfig>(
                r#"{"exists":"host.id"}"#,
            )
            .unwrap()
            .compile()
            .unwrap();
        let reads = FieldReads::new(
            "session.uid",
            Some("actor.session.uid"),
            &["host.id".to_string(), "dst_endpoint.hostname".to_string()],
            &[&cond],
        );
        for doc in docs {
            let text = text_event(doc);
            let tree = Event::new(serde_json::from_str(doc).unwrap(), Arc::from("t"), 0);
            let (a, b) = (
                EventFields::new(&reads, &text),
                EventFields::new(&reads, &tree),
            );
            assert!(matches!(a.found, Found::Text(..)) && matches!(b.found, Found::Tree(_)));
            let mut id = 0;
            while let Some(path) = reads.set.path(id) {
                assert_eq!(a.get(id), b.get(id), "path {path} of {doc}");
                id += 1;
            }
            for id in [reads.session_id, reads.actor_session_id.unwrap()]
                .into_iter()
                .chain(reads.extra_keys.iter().copied())
            {
                assert_eq!(a.key_text(id), b.key_text(id));
            }
            assert_eq!(a.first_str(USER_FIELDS), b.first_str(USER_FIELDS));
            assert_eq!(a.matches(&cond), b.matches(&cond));
        }
        // A configured key already among the fixed paths shares its number.
        assert_eq!(reads.extra_keys[1], RESOURCE_FIELDS.start + 2);
    }
}
