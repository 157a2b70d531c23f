//! Durable correlation state in the pipeline's state store (namespace `correlate/<name>`).
//!
//! The schema, readable in one place:
//!
//! | key | value |
//! |---|---|
//! | `s` + session id + (`\0` + key field value)… | [`StoredSession`] as JSON |
//! | `w` | the event-time watermark, epoch ms, decimal text |
//!
//! Changes are committed in batches: everything a chunk of input events did to the table is
//! one redb transaction. Only after that commit are the chunk's events forwarded (their ack
//! tokens travel on to the sinks) or resolved, so a source never checkpoints past an event
//! whose effect on the state could still be lost.

use serde::{Deserialize, Serialize};

use sessiontrail_core::store::{Namespace, StoreError};
use sessiontrail_core::Object;

use super::table::{
    SessionRecord, SessionTable, SessionUid, Status, FLAG_LOADED, MAX_EXTRA_KEY_FIELDS, NO_SYM,
    NO_TIME,
};

const SESSION_PREFIX: u8 = b's';
const WATERMARK_KEY: &[u8] = b"w";

/// One session as stored. Short field names: a million of these are written.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct StoredSession {
    /// Session id.
    pub id: String,
    /// Values of the key fields after the session id (null: absent).
    #[serde(default)]
    pub key: Vec<Option<String>>,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<i64>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_event: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub end_event: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrected_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_duration_s: Option<u32>,
    #[serde(default, skip_serializing_if = "is_zero16")]
    pub resumed: u16,
    /// The end event of an end-only session, kept so that a late start can complete it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_event_body: Option<Object>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}
fn is_zero16(v: &u16) -> bool {
    *v == 0
}

fn time_opt(t: i64) -> Option<i64> {
    (t != NO_TIME).then_some(t)
}

impl StoredSession {
    pub fn from_record(table: &SessionTable, rec: &SessionRecord, body: Option<&Object>) -> Self {
        let s = |sym| table.strings.get(sym).map(str::to_string);
        StoredSession {
            id: rec.uid.as_string(),
            key: rec.extra.iter().map(|&x| s(x)).collect(),
            status: rec.status.as_str().to_string(),
            start: time_opt(rec.start_ms),
            end: time_opt(rec.end_ms),
            start_event: rec.start_event,
            end_event: rec.end_event,
            product: s(rec.product),
            user: s(rec.user),
            resource: s(rec.resource),
            end_reason: s(rec.end_reason),
            corrected_by: s(rec.corrected_by),
            reported_duration_s: (rec.reported_duration_s != u32::MAX)
                .then_some(rec.reported_duration_s),
            resumed: rec.resumed,
            end_event_body: body.cloned(),
        }
    }

    pub fn into_record(self, table: &mut SessionTable) -> Option<(SessionRecord, Option<Object>)> {
        let status = Status::parse(&self.status)?;
        let mut rec = SessionRecord::new(SessionUid::new(&self.id));
        for (i, v) in self.key.iter().take(MAX_EXTRA_KEY_FIELDS).enumerate() {
            rec.extra[i] = table.strings.intern_opt(v.as_deref());
        }
        rec.status = status;
        rec.start_ms = self.start.unwrap_or(NO_TIME);
        rec.end_ms = self.end.unwrap_or(NO_TIME);
        rec.start_event = self.start_event;
        rec.end_event = self.end_event;
        rec.product = table.strings.intern_opt(self.product.as_deref());
        rec.user = table.strings.intern_opt(self.user.as_deref());
        rec.resource = table.strings.intern_opt(self.resource.as_deref());
        rec.end_reason = table.strings.intern_opt(self.end_reason.as_deref());
        rec.corrected_by = table.strings.intern_opt(self.corrected_by.as_deref());
        rec.reported_duration_s = self.reported_duration_s.unwrap_or(u32::MAX);
        rec.resumed = self.resumed;
        rec.flags = FLAG_LOADED;
        debug_assert!(rec.extra.len() == MAX_EXTRA_KEY_FIELDS && NO_SYM == 0);
        Some((rec, self.end_event_body))
    }
}

/// The state of one correlate transform in the store.
#[derive(Clone)]
pub struct SessionStore {
    ns: Namespace,
}

/// What was found in the store at start-up.
pub struct Loaded {
    pub sessions: Vec<(SessionRecord, Option<Object>)>,
    pub watermark: Option<i64>,
    /// Stored values that could not be read (counted and logged, never fatal).
    pub unreadable: usize,
}

impl SessionStore {
    pub fn new(ns: Namespace) -> Self {
        SessionStore { ns }
    }

    pub fn load(&self, table: &mut SessionTable) -> Result<Loaded, StoreError> {
        let mut loaded = Loaded {
            sessions: Vec::new(),
            watermark: None,
            unreadable: 0,
        };
        for (k, v) in self.ns.scan()? {
            if k == WATERMARK_KEY {
                loaded.watermark = std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok());
            } else if k.first() == Some(&SESSION_PREFIX) {
                match serde_json::from_slice::<StoredSession>(&v)
                    .ok()
                    .and_then(|s| s.into_record(table))
                {
                    Some(r) => loaded.sessions.push(r),
                    None => loaded.unreadable += 1,
                }
            }
        }
        Ok(loaded)
    }

    /// Writes the changed records, deletes the removed ones and stores the watermark, in one
    /// durable transaction.
    pub fn commit(
        &self,
        writes: Vec<(Vec<u8>, Vec<u8>)>,
        deletes: Vec<Vec<u8>>,
        watermark: i64,
    ) -> Result<(), StoreError> {
        let prefixed = |k: &[u8]| {
            let mut p = Vec::with_capacity(k.len() + 1);
            p.push(SESSION_PREFIX);
            p.extend_from_slice(k);
            p
        };
        let deletes: Vec<Vec<u8>> = deletes.iter().map(|k| prefixed(k)).collect();
        let writes: Vec<(Vec<u8>, Vec<u8>)> =
            writes.into_iter().map(|(k, v)| (prefixed(&k), v)).collect();
        let wm = watermark.to_string();
        // Deletes first: a key removed and re-created in the same chunk ends up written.
        let mut changes: Vec<(&[u8], Option<&[u8]>)> =
            Vec::with_capacity(deletes.len() + writes.len() + 1);
        changes.extend(deletes.iter().map(|k| (k.as_slice(), None)));
        changes.extend(
            writes
                .iter()
                .map(|(k, v)| (k.as_slice(), Some(v.as_slice()))),
        );
        if watermark != NO_TIME {
            changes.push((WATERMARK_KEY, Some(wm.as_bytes())));
        }
        if changes.is_empty() {
            return Ok(());
        }
        self.ns.write(&changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessiontrail_core::store::StateStore;

    #[test]
    fn stored_session_round_trips_through_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::new(StateStore::new(dir.path()).namespace("correlate/t"));
        let mut table = SessionTable::new();
        let mut rec = SessionRecord::new(SessionUid::new("8dab03fe-2552-49cf-b3e9-381b968ea65c"));
        rec.status = Status::Open;
        rec.start_ms = 1_741_593_600_444;
        rec.extra[0] = table.strings.intern("Windows");
        rec.user = table.strings.intern("CORP\\kzielinski");
        rec.reported_duration_s = 99;
        let slot = table.insert(rec, true);
        let stored = StoredSession::from_record(&table, table.get(slot), None);
        let value = serde_json::to_vec(&stored).unwrap();
        store
            .commit(vec![(table.storage_key(slot), value)], vec![], 5)
            .unwrap();

        let mut fresh = SessionTable::new();
        let loaded = store.load(&mut fresh).unwrap();
        assert_eq!(loaded.watermark, Some(5));
        assert_eq!(loaded.unreadable, 0);
        let (rec, body) = loaded.sessions.into_iter().next().unwrap();
        assert!(body.is_none());
        assert_eq!(rec.start_ms, 1_741_593_600_444);
        assert_eq!(rec.status, Status::Open);
        assert_eq!(rec.reported_duration_s, 99);
        assert_eq!(fresh.strings.get(rec.user), Some("CORP\\kzielinski"));
        assert_eq!(fresh.strings.get(rec.extra[0]), Some("Windows"));
        assert_eq!(rec.flags, FLAG_LOADED);
    }
}
