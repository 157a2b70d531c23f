//! The correlation rules: what each start, end, resume and admin correction does to the
//! [`SessionTable`], and which events come out.
//!
//! Every input event comes out once (forwarded, possibly enriched) unless it is a duplicate
//! (absorbed) or cannot be correlated (dead-lettered). Session results are ordinary events
//! with `unmapped.session_status`; when a later event changes a result already emitted (a
//! later duplicate end, a start that arrives after its end, an admin correction), a new result
//! is emitted with `unmapped.correction = true`: for each session, the last result wins.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use sessiontrail_core::condition::Condition;
use sessiontrail_core::json::set_path;
use sessiontrail_core::metrics::MetricsRegistry;
use sessiontrail_core::{DeadLetter, Event, Object, Value};

use super::fields::{
    event_id_hash, EventFields, FieldReads, ACTIVITY_ID, API_OPERATION, CLASS_UID, END_REASON,
    EVENT_UID, PRODUCT, REPORTED_DURATION, RESOURCE_FIELDS, SESSION_CORRECTION, STATUS_ID, TIME,
    USER_FIELDS,
};
use super::result::{Scalar, SessionResult};
use super::table::{
    KeyPart, SessionRecord, SessionTable, SessionUid, Status, Sym, FLAG_LOADED,
    MAX_EXTRA_KEY_FIELDS, NO_REPORTED_DURATION, NO_SYM, NO_TIME,
};

/// OCSF classes and activities the default start/end recognition uses (contract with the
/// `ocsf` transform, see `/work/shared/ocsf/MAPPINGS.md`).
const CLASS_AUTHENTICATION: u64 = 3002;
const CLASS_NETWORK_ACTIVITY: u64 = 4001;
const CLASS_API_ACTIVITY: u64 = 6003;
const ACTIVITY_LOGON_OR_OPEN: u64 = 1;
const ACTIVITY_LOGOFF_OR_CLOSE: u64 = 2;
const STATUS_FAILURE: u64 = 2;

/// The default session id field, and where the `ocsf` transform puts the id for classes
/// without a `session` attribute (API Activity for SSM, Network Activity for Parsec).
pub const SESSION_ID_FIELD: &str = "session.uid";
pub const ACTOR_SESSION_ID_FIELD: &str = "actor.session.uid";
const PRODUCT_FIELD: &str = "metadata.product.name";

/// What an event means to correlate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Start,
    /// SSM ResumeSession: a reconnect inside a session.
    Resume,
    End,
    /// An admin correction (`unmapped.session_correction`).
    Correction,
    /// Anything else: passed through unchanged.
    Other,
}

/// The default recognition (OCSF class + activity) of a parsed event (the report's).
pub fn classify(fields: &Object) -> EventKind {
    static READS: LazyLock<FieldReads> =
        LazyLock::new(|| FieldReads::new(SESSION_ID_FIELD, Some(ACTOR_SESSION_ID_FIELD), &[], &[]));
    classify_fields(&EventFields::of_object(&READS, fields), None, None)
}

fn classify_fields(
    event: &EventFields,
    starts_when: Option<&Condition>,
    ends_when: Option<&Condition>,
) -> EventKind {
    if event.get(SESSION_CORRECTION).is_some_and(Value::is_object) {
        return EventKind::Correction;
    }
    if starts_when.is_some_and(|c| event.matches(c)) {
        return EventKind::Start;
    }
    if ends_when.is_some_and(|c| event.matches(c)) {
        return EventKind::End;
    }
    let class = event.get_u64(CLASS_UID);
    let activity = event.get_u64(ACTIVITY_ID);
    let kind = match (class, activity) {
        (Some(CLASS_AUTHENTICATION | CLASS_NETWORK_ACTIVITY), Some(ACTIVITY_LOGON_OR_OPEN)) => {
            EventKind::Start
        }
        (Some(CLASS_AUTHENTICATION | CLASS_NETWORK_ACTIVITY), Some(ACTIVITY_LOGOFF_OR_CLOSE)) => {
            EventKind::End
        }
        (Some(CLASS_API_ACTIVITY), _) => match event.get_str(API_OPERATION) {
            Some("StartSession") => EventKind::Start,
            Some("ResumeSession") => EventKind::Resume,
            Some("TerminateSession") => EventKind::End,
            _ => EventKind::Other,
        },
        _ => EventKind::Other,
    };
    // An override replaces the default for its side.
    match kind {
        EventKind::Start if starts_when.is_some() => EventKind::Other,
        EventKind::End if ends_when.is_some() => EventKind::Other,
        k => k,
    }
}

/// OCSF `time` (epoch ms, integer or float).
pub fn event_time(fields: &Object) -> Option<i64> {
    epoch_ms(fields.get("time")?)
}

fn epoch_ms(time: &Value) -> Option<i64> {
    match time {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
        _ => None,
    }
}

/// Settings resolved from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// First: the session id field; the others must match when both sides have them.
    pub key_fields: Vec<String>,
    pub starts_when: Option<Condition>,
    pub ends_when: Option<Condition>,
    pub max_session_age_ms: i64,
    pub allowed_lateness_ms: i64,
    pub dedupe_window_ms: i64,
    pub correction_window_ms: i64,
    pub max_open_sessions: usize,
    pub duration_tolerance_ms: i64,
}

/// Duration histogram buckets in seconds (1 min .. 1 day).
const DURATION_BUCKETS_S: &[f64] = &[
    60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0,
];

/// The transform's own series on `/metrics`.
pub struct CorrelateMetrics {
    registry: Arc<MetricsRegistry>,
    component: String,
    started: Arc<AtomicU64>,
    ended: Arc<AtomicU64>,
    expired_by_age: Arc<AtomicU64>,
    expired_by_capacity: Arc<AtomicU64>,
    end_without_start: Arc<AtomicU64>,
    duplicate_events: Arc<AtomicU64>,
    ends_absorbed: Arc<AtomicU64>,
    corrections: Arc<AtomicU64>,
    open_by_product: HashMap<Sym, Arc<AtomicI64>>,
    duration_buckets: Vec<Arc<AtomicU64>>,
    duration_sum_s: Arc<AtomicU64>,
    duration_count: Arc<AtomicU64>,
}

impl CorrelateMetrics {
    pub fn new(registry: Arc<MetricsRegistry>, component: &str) -> Self {
        let c = |name: &str, help: &str, extra: &[(&str, &str)]| {
            let mut labels = vec![("component", component)];
            labels.extend_from_slice(extra);
            registry.counter(name, help, &labels)
        };
        let expired = "sessiontrail_sessions_expired_total";
        let expired_help =
            "Sessions closed without an end (reason: max_session_age or max_open_sessions).";
        let duplicates = "sessiontrail_session_duplicates_total";
        let dup_help = "Duplicate session events absorbed (kind: event_id = same metadata.uid, earlier_end = an end not later than the one kept).";
        let bucket = "sessiontrail_session_duration_seconds_bucket";
        let bucket_help = "Durations of correlated sessions (cumulative histogram buckets).";
        let duration_buckets = DURATION_BUCKETS_S
            .iter()
            .map(|le| le.to_string())
            .chain(std::iter::once("+Inf".to_string()))
            .map(|le| c(bucket, bucket_help, &[("le", &le)]))
            .collect();
        CorrelateMetrics {
            started: c(
                "sessiontrail_sessions_started_total",
                "Sessions opened.",
                &[],
            ),
            ended: c(
                "sessiontrail_sessions_ended_total",
                "Sessions closed by an end event or an admin correction.",
                &[],
            ),
            expired_by_age: c(expired, expired_help, &[("reason", "max_session_age")]),
            expired_by_capacity: c(expired, expired_help, &[("reason", "max_open_sessions")]),
            end_without_start: c(
                "sessiontrail_sessions_end_without_start_total",
                "Ends that matched no known session.",
                &[],
            ),
            duplicate_events: c(duplicates, dup_help, &[("kind", "event_id")]),
            ends_absorbed: c(duplicates, dup_help, &[("kind", "earlier_end")]),
            corrections: c(
                "sessiontrail_session_corrections_total",
                "Admin corrections applied.",
                &[],
            ),
            duration_sum_s: c(
                "sessiontrail_session_duration_seconds_sum",
                "Sum of correlated session durations, whole seconds.",
                &[],
            ),
            duration_count: c(
                "sessiontrail_session_duration_seconds_count",
                "Number of correlated session durations.",
                &[],
            ),
            duration_buckets,
            open_by_product: HashMap::new(),
            component: component.to_string(),
            registry,
        }
    }

    /// The open-sessions gauge of a product (registered on first use). Borrowed, not
    /// cloned: this runs for every start and end.
    fn open_gauge(&mut self, product: Sym, strings: &super::table::Interner) -> &AtomicI64 {
        let registry = &self.registry;
        let component = &self.component;
        self.open_by_product.entry(product).or_insert_with(|| {
            registry.gauge(
                "sessiontrail_sessions_open",
                "Open sessions by product.",
                &[
                    ("component", component),
                    ("product", strings.get(product).unwrap_or("")),
                ],
            )
        })
    }

    fn observe_duration(&self, ms: i64) {
        let s = (ms.max(0) / 1000) as u64;
        for (i, le) in DURATION_BUCKETS_S.iter().enumerate() {
            if (s as f64) <= *le {
                self.duration_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(inf) = self.duration_buckets.last() {
            inf.fetch_add(1, Ordering::Relaxed);
        }
        self.duration_sum_s.fetch_add(s, Ordering::Relaxed);
        self.duration_count.fetch_add(1, Ordering::Relaxed);
    }
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What a chunk of input produced, in input order.
#[derive(Default)]
pub struct ChunkOutput {
    /// Sent downstream after the commit (input events keep their ack tokens).
    pub forward: Vec<Event>,
    /// Sent to `<name>.dropped` after the commit.
    pub dead: Vec<Event>,
    /// Duplicates: resolved as handled (`Filtered`) after the commit.
    pub absorbed: Vec<Event>,
}

pub struct Correlator {
    pub table: SessionTable,
    settings: Settings,
    /// The fields the rules read, numbered. The session id is `key_fields[0]`, or
    /// `actor.session.uid` when the id field is the default `session.uid` and the event has
    /// none (where the `ocsf` transform puts the id for classes without a `session`
    /// attribute); then at most [`MAX_EXTRA_KEY_FIELDS`] more key fields. In an `Arc` so that
    /// an event's [`EventFields`] can borrow it while the rules change `self`.
    reads: Arc<FieldReads>,
    name: Arc<str>,
    /// Newest event time seen on a start or end (epoch ms): the clock of expiry and forgetting.
    pub watermark: i64,
    /// Raw end events of end-only sessions, by slot: a late start completes them.
    end_only_bodies: HashMap<u32, Object>,
    metrics: CorrelateMetrics,
}

/// A session event's key, read before the event is handled: the session id and how the
/// other key fields compare with stored records.
struct SessionKey {
    uid: SessionUid,
    /// Of `uid`, by the table's hasher: computed once, used by the lookup and the insert.
    hash: u64,
    parts: [KeyPart; MAX_EXTRA_KEY_FIELDS],
}

/// What happens to a session event once the rules have run: decided while the event is only
/// read, done after.
enum Outcome {
    Forward,
    /// Forward it, then this event (a late start's corrected result).
    ForwardThen(Event),
    /// Forward it with the session result of `slot` written on it.
    Annotate {
        slot: u32,
        correlation: &'static str,
        correction: bool,
    },
    /// A duplicate: resolved as handled.
    Absorb,
    DeadLetter {
        reason: &'static str,
        message: String,
    },
}

impl Correlator {
    pub fn new(settings: Settings, name: Arc<str>, metrics: CorrelateMetrics) -> Self {
        let id_field = settings.key_fields.first().map_or(SESSION_ID_FIELD, |f| f);
        let extra_keys: Vec<String> = settings
            .key_fields
            .iter()
            .skip(1)
            .take(MAX_EXTRA_KEY_FIELDS)
            .cloned()
            .collect();
        let conditions: Vec<&Condition> = [&settings.starts_when, &settings.ends_when]
            .into_iter()
            .flatten()
            .collect();
        let reads = Arc::new(FieldReads::new(
            id_field,
            (id_field == SESSION_ID_FIELD).then_some(ACTOR_SESSION_ID_FIELD),
            &extra_keys,
            &conditions,
        ));
        Correlator {
            table: SessionTable::new(),
            settings,
            reads,
            name,
            watermark: NO_TIME,
            end_only_bodies: HashMap::new(),
            metrics,
        }
    }

    /// Restores a record read from the state store.
    pub fn restore(&mut self, rec: SessionRecord, body: Option<Object>) {
        let open = rec.status == Status::Open;
        let product = rec.product;
        let forget_at = self.forget_at(&rec);
        let slot = self.table.insert(rec, false);
        if open {
            self.gauge_add(product, 1);
        } else {
            self.table.schedule_forget(slot, forget_at);
        }
        if let Some(b) = body {
            self.end_only_bodies.insert(slot, b);
        }
    }

    pub fn end_only_body(&self, slot: u32) -> Option<&Object> {
        self.end_only_bodies.get(&slot)
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn process(&mut self, mut event: Event, out: &mut ChunkOutput) {
        // Everything the rules need is read in one pass over the event (its text, usually);
        // the event is changed (if at all) once the outcome is known.
        let reads = Arc::clone(&self.reads);
        let fields = EventFields::new(&reads, &event);
        let kind = classify_fields(
            &fields,
            self.settings.starts_when.as_ref(),
            self.settings.ends_when.as_ref(),
        );
        if kind == EventKind::Other {
            drop(fields);
            out.forward.push(event);
            return;
        }
        let Some(time) = fields.get(TIME).and_then(epoch_ms) else {
            let reason = if fields.get(TIME).is_some() {
                "wrong_type"
            } else {
                "missing_field"
            };
            drop(fields);
            self.dead_letter(
                reason,
                "a session event needs `time` as epoch milliseconds".into(),
                event,
                out,
            );
            return;
        };
        if kind == EventKind::Start && fields.get_u64(STATUS_ID) == Some(STATUS_FAILURE) {
            drop(fields);
            event.edit_members(&["unmapped"], |fields| {
                set_path(fields, "unmapped.correlation", "failed_start".into());
                set_path(fields, "unmapped.session_status", "failed".into());
            });
            out.forward.push(event);
            return;
        }
        let Some(key) = self.session_key(&fields) else {
            let msg = format!(
                "a session event needs the session key field `{}`",
                self.settings.key_fields[0]
            );
            drop(fields);
            self.dead_letter("missing_field", msg, event, out);
            return;
        };
        let slot = self
            .table
            .find_key(&key.uid, key.hash, &key.parts[..reads.extra_keys.len()]);
        let outcome = match kind {
            EventKind::Correction => self.on_correction(&fields, time, slot, &key.uid),
            EventKind::Start | EventKind::Resume => {
                self.on_start(&fields, time, slot, key, kind, out)
            }
            EventKind::End => self.on_end(&fields, time, slot, key),
            EventKind::Other => unreachable!("handled above"),
        };
        drop(fields);
        self.dispose(event, outcome, out);
        if kind == EventKind::Correction {
            // The watermark follows starts and ends only; corrections do not sweep.
            return;
        }
        if time > self.watermark {
            self.watermark = time;
        }
        self.sweep(out);
    }

    /// Does what the rules decided with the input event.
    fn dispose(&mut self, mut event: Event, outcome: Outcome, out: &mut ChunkOutput) {
        match outcome {
            Outcome::Forward => out.forward.push(event),
            Outcome::ForwardThen(next) => {
                out.forward.push(event);
                out.forward.push(next);
            }
            Outcome::Annotate {
                slot,
                correlation,
                correction,
            } => {
                let result = self.session_result(slot, correlation, correction);
                match event.json_text() {
                    Some(text) => {
                        let text = result.write_into_text(text);
                        event.set_json(text);
                    }
                    None => result.write_into_object(event.fields_mut()),
                }
                out.forward.push(event);
            }
            Outcome::Absorb => out.absorbed.push(event),
            Outcome::DeadLetter { reason, message } => {
                self.dead_letter(reason, message, event, out)
            }
        }
    }

    /// The event's session key; `None` without a session id. Reads without copying: only a
    /// session id that is not a canonical UUID is copied (it becomes the record's id).
    fn session_key(&self, event: &EventFields) -> Option<SessionKey> {
        let reads = event.reads();
        let id = event
            .key_text(reads.session_id)
            .or_else(|| reads.actor_session_id.and_then(|id| event.key_text(id)))?;
        let uid = SessionUid::new(&id);
        let mut parts = [KeyPart::Missing; MAX_EXTRA_KEY_FIELDS];
        for (part, &id) in parts.iter_mut().zip(&reads.extra_keys) {
            *part = self.table.key_part(event.key_text(id).as_deref());
        }
        Some(SessionKey {
            hash: self.table.hash_uid(&uid),
            uid,
            parts,
        })
    }

    fn dead_letter(&self, reason: &str, message: String, event: Event, out: &mut ChunkOutput) {
        out.dead
            .push(DeadLetter::from_event(&self.name, reason, message, event));
    }

    /// A repeat of an event already absorbed. Within one run it is a duplicate delivery and is
    /// dropped. When the record comes unchanged from the store, the repeat may be the source
    /// replaying an event whose output was lost in a crash after the commit: forward it again
    /// (at-least-once allows a duplicate, never a loss).
    fn repeat(&mut self, slot: u32, is_end: bool) -> Outcome {
        if self.table.get(slot).flags & FLAG_LOADED != 0 {
            if is_end {
                let status = self.table.get(slot).status;
                return Outcome::Annotate {
                    slot,
                    correlation: correlation_for(status),
                    correction: false,
                };
            }
            return Outcome::Forward;
        }
        inc(&self.metrics.duplicate_events);
        Outcome::Absorb
    }

    /// A new record for the session `key`, with the owner, resource and product of `event`.
    fn new_record(&mut self, key: SessionKey, event: &EventFields) -> SessionRecord {
        let mut rec = SessionRecord::new(key.uid);
        for ((sym, part), &id) in rec
            .extra
            .iter_mut()
            .zip(key.parts)
            .zip(&event.reads().extra_keys)
        {
            *sym = match part {
                KeyPart::Known(s) => s,
                KeyPart::Missing => NO_SYM,
                // Looked up but never interned: the value is read again to be stored.
                KeyPart::Unknown => self.table.strings.intern_opt(event.key_text(id).as_deref()),
            };
        }
        let strings = &mut self.table.strings;
        rec.product = strings.intern_opt(event.get_str(PRODUCT));
        rec.user = strings.intern_opt(event.first_str(USER_FIELDS));
        rec.resource = strings.intern_opt(event.first_str(RESOURCE_FIELDS));
        rec
    }

    fn on_start(
        &mut self,
        event: &EventFields,
        time: i64,
        slot: Option<u32>,
        key: SessionKey,
        kind: EventKind,
        out: &mut ChunkOutput,
    ) -> Outcome {
        let event_id = event_id_hash(event.get(EVENT_UID));
        let Some(slot) = slot else {
            if self.table.open_count() >= self.settings.max_open_sessions {
                if let Some(oldest) = self.table.pop_open_started_before(i64::MAX) {
                    self.expire(oldest, "max_open_sessions", out);
                }
            }
            let hash = key.hash;
            let mut rec = self.new_record(key, event);
            rec.start_ms = time;
            rec.start_event = event_id;
            rec.status = Status::Open;
            if kind == EventKind::Resume {
                rec.resumed = 1;
            }
            let product = rec.product;
            self.table.insert_hashed(rec, hash, true);
            self.gauge_add(product, 1);
            inc(&self.metrics.started);
            return Outcome::Forward;
        };
        if kind == EventKind::Resume {
            let rec = self.table.get_mut(slot);
            rec.resumed = rec.resumed.saturating_add(1);
            return Outcome::Forward;
        }
        let (status, start_ms, start_event) = {
            let r = self.table.get(slot);
            (r.status, r.start_ms, r.start_event)
        };
        if event_id != 0 && start_event == event_id {
            return self.repeat(slot, false);
        }
        match status {
            Status::Open => {
                if time == start_ms {
                    return self.repeat(slot, false);
                }
                if time < start_ms {
                    // Two starts for one session: the session began at the earlier one.
                    let rec = self.table.get_mut(slot);
                    rec.start_ms = time;
                    rec.start_event = event_id;
                    self.table.status_changed(slot, true);
                }
                Outcome::Forward
            }
            Status::EndOnly if start_ms == NO_TIME => {
                // The end arrived first: complete the session and correct its result.
                let strings = &mut self.table.strings;
                let user = strings.intern_opt(event.first_str(USER_FIELDS));
                let resource = strings.intern_opt(event.first_str(RESOURCE_FIELDS));
                let rec = self.table.get_mut(slot);
                rec.start_ms = time;
                rec.start_event = event_id;
                rec.status = Status::Complete;
                if user != NO_SYM {
                    rec.user = user;
                }
                if resource != NO_SYM {
                    rec.resource = resource;
                }
                self.table.status_changed(slot, false);
                let forget = self.forget_at(self.table.get(slot));
                self.table.schedule_forget(slot, forget);
                inc(&self.metrics.started);
                if let Some(d) = self.table.get(slot).duration_ms() {
                    self.metrics.observe_duration(d);
                }
                match self.end_only_bodies.remove(&slot) {
                    Some(mut body) => {
                        self.annotate(&mut body, slot, "late_start", true);
                        Outcome::ForwardThen(self.synthetic(body))
                    }
                    None => Outcome::Forward,
                }
            }
            // A start for a session already closed: nothing to change, keep the event.
            _ => Outcome::Forward,
        }
    }

    fn on_end(
        &mut self,
        event: &EventFields,
        time: i64,
        slot: Option<u32>,
        key: SessionKey,
    ) -> Outcome {
        let event_id = event_id_hash(event.get(EVENT_UID));
        let reason = self.table.strings.intern_opt(event.get_str(END_REASON));
        let reported = event
            .get(REPORTED_DURATION)
            .and_then(Value::as_f64)
            .filter(|d| d.is_finite() && *d >= 0.0 && *d < f64::from(NO_REPORTED_DURATION))
            .map(|d| d as u32)
            .unwrap_or(NO_REPORTED_DURATION);
        let Some(slot) = slot else {
            let hash = key.hash;
            let mut rec = self.new_record(key, event);
            rec.end_ms = time;
            rec.end_event = event_id;
            rec.end_reason = reason;
            rec.reported_duration_s = reported;
            rec.status = Status::EndOnly;
            let forget = self.forget_at(&rec);
            let slot = self.table.insert_hashed(rec, hash, true);
            self.table.schedule_forget(slot, forget);
            self.end_only_bodies.insert(slot, event.to_object());
            inc(&self.metrics.end_without_start);
            return Outcome::Annotate {
                slot,
                correlation: "end_without_start",
                correction: false,
            };
        };
        let rec = self.table.get(slot);
        let status = rec.status;
        if event_id != 0 && rec.end_event == event_id {
            return self.repeat(slot, true);
        }
        let (correlation, correction) = match status {
            Status::Open => ("complete", false),
            Status::Expired => ("late_end", true),
            Status::Complete | Status::EndOnly if time > rec.end_ms => {
                (correlation_for(status), true)
            }
            _ => {
                // Not later than the end kept (or the session was closed by an admin).
                inc(&self.metrics.ends_absorbed);
                return Outcome::Absorb;
            }
        };
        let was_open = status == Status::Open;
        let product = rec.product;
        let rec = self.table.get_mut(slot);
        rec.end_ms = time;
        rec.end_event = event_id;
        if reason != NO_SYM {
            rec.end_reason = reason;
        }
        rec.reported_duration_s = reported;
        if matches!(status, Status::Open | Status::Expired) {
            rec.status = Status::Complete;
            inc(&self.metrics.ended);
            if let Some(d) = rec.duration_ms() {
                self.metrics.observe_duration(d);
            }
        }
        self.table.status_changed(slot, was_open);
        if was_open {
            self.gauge_add(product, -1);
        }
        if status == Status::EndOnly {
            self.end_only_bodies.insert(slot, event.to_object());
        }
        let forget = self.forget_at(self.table.get(slot));
        self.table.schedule_forget(slot, forget);
        Outcome::Annotate {
            slot,
            correlation,
            correction,
        }
    }

    fn on_correction(
        &mut self,
        event: &EventFields,
        time: i64,
        slot: Option<u32>,
        uid: &SessionUid,
    ) -> Outcome {
        let Some(slot) = slot else {
            return Outcome::DeadLetter {
                reason: "unknown_session",
                message: format!(
                    "correction for session {}, which is neither open nor closed within the last dedupe_window",
                    uid.as_string()
                ),
            };
        };
        let c = |k: &str| event.get(SESSION_CORRECTION).and_then(|c| c.get(k));
        if c("status_after")
            .and_then(Value::as_str)
            .is_some_and(|s| s != "closed")
        {
            return Outcome::DeadLetter {
                reason: "unsupported_correction",
                message: "only corrections to status `closed` (close a session or amend a closed one) are supported".to_string(),
            };
        }
        let corrected_end = c("corrected_end_time").and_then(Value::as_i64);
        let strings = &mut self.table.strings;
        let corrected_reason = strings.intern_opt(c("corrected_reason").and_then(Value::as_str));
        let updated_by = strings.intern_opt(c("updated_by").and_then(Value::as_str));
        let status = self.table.get(slot).status;
        let product = self.table.get(slot).product;
        let rec = self.table.get_mut(slot);
        if corrected_reason != NO_SYM {
            rec.end_reason = corrected_reason;
        }
        if updated_by != NO_SYM {
            rec.corrected_by = updated_by;
        }
        let correlation = match status {
            Status::Open | Status::Expired => {
                rec.end_ms = corrected_end.unwrap_or(time);
                rec.status = Status::ClosedByAdmin;
                "closed_by_admin"
            }
            _ => {
                if let Some(end) = corrected_end {
                    rec.end_ms = end;
                }
                "amended"
            }
        };
        if status == Status::Open {
            inc(&self.metrics.ended);
            if let Some(d) = self.table.get(slot).duration_ms() {
                self.metrics.observe_duration(d);
            }
            self.gauge_add(product, -1);
        }
        self.table.status_changed(slot, status == Status::Open);
        let forget = self.forget_at(self.table.get(slot));
        self.table.schedule_forget(slot, forget);
        inc(&self.metrics.corrections);
        Outcome::Annotate {
            slot,
            correlation,
            correction: status != Status::Open,
        }
    }

    /// When a closed record may be forgotten (event time).
    fn forget_at(&self, rec: &SessionRecord) -> i64 {
        let end = if rec.end_ms == NO_TIME {
            self.watermark
        } else {
            rec.end_ms
        };
        let keep = match rec.status {
            // Waiting for a late start, or for a late end after expiry.
            Status::EndOnly | Status::Expired => self.settings.allowed_lateness_ms,
            // Duplicate ends and admin corrections find the session while it is kept.
            _ => self
                .settings
                .dedupe_window_ms
                .max(self.settings.correction_window_ms),
        };
        end.saturating_add(keep)
    }

    /// Expires open sessions older than `max_session_age` and forgets closed records whose
    /// retention passed, both against the event-time watermark.
    fn sweep(&mut self, out: &mut ChunkOutput) {
        if self.watermark == NO_TIME {
            return;
        }
        let cutoff = self
            .watermark
            .saturating_sub(self.settings.max_session_age_ms);
        while let Some(slot) = self.table.pop_open_started_before(cutoff) {
            self.expire(slot, "max_session_age", out);
        }
        while let Some(slot) = self.table.pop_forget_due(self.watermark) {
            let due = self.forget_at(self.table.get(slot));
            if due >= self.watermark {
                self.table.schedule_forget(slot, due);
            } else {
                self.end_only_bodies.remove(&slot);
                self.table.remove(slot);
            }
        }
    }

    /// Closes an open session without an end and emits an expiry event.
    fn expire(&mut self, slot: u32, why: &str, out: &mut ChunkOutput) {
        let at = if self.watermark == NO_TIME {
            self.table.get(slot).start_ms
        } else {
            self.watermark
        };
        let product = self.table.get(slot).product;
        let rec = self.table.get_mut(slot);
        rec.status = Status::Expired;
        rec.end_ms = at;
        self.table.status_changed(slot, true);
        self.gauge_add(product, -1);
        let forget = self.forget_at(self.table.get(slot));
        self.table.schedule_forget(slot, forget);
        if why == "max_open_sessions" {
            inc(&self.metrics.expired_by_capacity);
        } else {
            inc(&self.metrics.expired_by_age);
        }
        let mut fields = Object::new();
        fields.insert("class_uid".into(), CLASS_AUTHENTICATION.into());
        fields.insert("category_uid".into(), 3.into());
        fields.insert("activity_id".into(), 99.into());
        fields.insert("activity_name".into(), "Session Expired".into());
        fields.insert("type_uid".into(), 300299.into());
        fields.insert("severity_id".into(), 1.into());
        fields.insert("time".into(), at.into());
        let message = match why {
            "max_open_sessions" => {
                "session expired: max_open_sessions reached and it was the oldest open session"
            }
            _ => "session expired: no end within max_session_age",
        };
        fields.insert("message".into(), message.into());
        let rec = self.table.get(slot);
        set_path(
            &mut fields,
            &self.settings.key_fields[0],
            rec.uid.as_string().into(),
        );
        for (i, f) in self.settings.key_fields[1..]
            .iter()
            .enumerate()
            .take(MAX_EXTRA_KEY_FIELDS)
        {
            if let Some(v) = self.table.strings.get(rec.extra[i]) {
                set_path(&mut fields, f, v.into());
            }
        }
        let strings = &self.table.strings;
        if let Some(p) = strings.get(rec.product) {
            set_path(&mut fields, PRODUCT_FIELD, p.into());
        }
        if let Some(u) = strings.get(rec.user) {
            set_path(&mut fields, "user.name", u.into());
        }
        if let Some(r) = strings.get(rec.resource) {
            set_path(&mut fields, "dst_endpoint.hostname", r.into());
        }
        set_path(&mut fields, "unmapped.expiry_reason", why.into());
        self.annotate(&mut fields, slot, "expired", false);
        out.forward.push(self.synthetic(fields));
    }

    fn synthetic(&self, fields: Object) -> Event {
        Event::new(fields, Arc::clone(&self.name), 0)
    }

    fn gauge_add(&mut self, product: Sym, delta: i64) {
        let strings = &self.table.strings;
        self.metrics
            .open_gauge(product, strings)
            .fetch_add(delta, Ordering::Relaxed);
    }

    /// The session result of `slot`, to be written onto an event ([`SessionResult`]).
    fn session_result(
        &self,
        slot: u32,
        correlation: &'static str,
        correction: bool,
    ) -> SessionResult<'_> {
        let rec = self.table.get(slot);
        let strings = &self.table.strings;
        let start = (rec.start_ms != NO_TIME).then_some(rec.start_ms);
        let end = (rec.status != Status::Expired && rec.end_ms != NO_TIME).then_some(rec.end_ms);
        let duration = (rec.status != Status::Expired)
            .then(|| rec.duration_ms())
            .flatten();
        let mut unmapped = Vec::with_capacity(8);
        if rec.status == Status::Expired {
            unmapped.push(("expired_at", Scalar::Int(rec.end_ms)));
        }
        unmapped.push(("correlation", Scalar::Str(correlation)));
        unmapped.push(("session_status", Scalar::Str(rec.status.as_str())));
        for (key, sym) in [
            ("session_user", rec.user),
            ("session_resource", rec.resource),
            ("session_end_reason", rec.end_reason),
            ("corrected_by", rec.corrected_by),
        ] {
            if let Some(v) = strings.get(sym) {
                unmapped.push((key, Scalar::Str(v)));
            }
        }
        if rec.resumed > 0 {
            unmapped.push(("resumed", Scalar::Int(i64::from(rec.resumed))));
        }
        if correction {
            unmapped.push(("correction", Scalar::Bool(true)));
        }
        if rec.reported_duration_s != NO_REPORTED_DURATION {
            let reported = i64::from(rec.reported_duration_s);
            unmapped.push(("reported_duration_s", Scalar::Int(reported)));
            if duration
                .is_some_and(|d| (reported * 1000 - d).abs() > self.settings.duration_tolerance_ms)
            {
                unmapped.push(("duration_disagreement", Scalar::Bool(true)));
            }
        }
        SessionResult {
            start_time: start,
            end_time: end,
            duration,
            created_time: start,
            unmapped,
        }
    }

    /// Writes the session result of `slot` onto a parsed event.
    pub fn annotate(
        &self,
        fields: &mut Object,
        slot: u32,
        correlation: &'static str,
        correction: bool,
    ) {
        self.session_result(slot, correlation, correction)
            .write_into_object(fields);
    }
}

fn correlation_for(status: Status) -> &'static str {
    match status {
        Status::EndOnly => "end_without_start",
        Status::ClosedByAdmin => "closed_by_admin",
        Status::Expired => "expired",
        _ => "complete",
    }
}
