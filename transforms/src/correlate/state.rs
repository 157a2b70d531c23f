//! Durable correlation state in the pipeline's state store (namespace `correlate/<name>`).
//!
//! The schema, readable in one place:
//!
//! | key | value |
//! |---|---|
//! | `l` + segment number (u64, big-endian) | a log segment, see below |
//! | `w` | the event-time watermark, epoch ms, decimal text |
//! | `s` + session key | *read only*: a session as [`StoredSession`] JSON, the layout before the log; migrated into the log and deleted by the first commit |
//!
//! A session key is the session id, then each extra key field's value (empty if absent), each
//! preceded by `\0` ([`SessionTable::storage_key`]).
//!
//! A segment is byte [`SEGMENT_FORMAT`] (2; segments of format 1, written by earlier
//! releases, are still read), then entries, each:
//! - `C`, value length (u32 LE), value: the session's version as of this segment, in the binary
//!   record layout below. Its key is not stored: it is the record's session id and key fields,
//!   already in the value (storing both made a third of each entry);
//! - `R`, key length (u32 LE), key, value length (u32 LE), value: the same with the key stored
//!   (format 1; the cleaner copies entries unchanged, so format-2 segments may hold them too);
//! - `T`, key length (u32 LE), key: the session was removed (tombstone).
//!
//! A commit appends one segment, or several in the same transaction when its entries exceed
//! [`SEGMENT_BYTES`]: redb stores a value in a power-of-two number of pages and writes all of
//! them, so one segment just over 2 MiB was a 4 MiB write.
//!
//! Record layout (integers little-endian; `str?` = LEB128 varint of length + 1, 0 for absent,
//! then the UTF-8 bytes; times are epoch ms with `i64::MIN` for absent):
//!
//! | field | encoding |
//! |---|---|
//! | session id | `0` + 16 UUID bytes (canonical lower-case UUID), or `1` + `str?` |
//! | extra key fields | count (u8), then one `str?` each |
//! | status | u8: 1 open, 2 complete, 3 end_only, 4 expired, 5 closed_by_admin |
//! | start, end | i64 each |
//! | start_event, end_event | u64 each (hashes of `metadata.uid`, 0: none) |
//! | product, user, resource, end_reason, corrected_by | `str?` each |
//! | reported duration | u32 seconds (`u32::MAX`: none) |
//! | resumed | u16 |
//! | end event body | `str?` holding JSON (end-only sessions) |
//!
//! (Binary rather than [`StoredSession`] JSON: encoding and writing JSON was half of a
//! commit's time and three times the bytes.)
//!
//! The state is the log replayed in segment order: a later entry for a key replaces an
//! earlier one, a tombstone removes it; `s` keys count as older than every segment.
//!
//! Why a log: rewriting one key per changed session made every commit a transaction of tens of
//! thousands of random-key B-tree updates (slow, and the dirty pages dominated memory). Now a
//! commit appends a few large values. The price is garbage (superseded versions), reclaimed by an
//! incremental cleaner (see [`SessionStore::commit`]): the oldest segment's still-latest entries
//! are copied into the new segment, and the oldest segment deleted, in the same transaction.
//!
//! Changes are committed in batches: everything a chunk of input events did to the table is
//! one redb transaction. Only after that commit are the chunk's events forwarded (their ack
//! tokens travel on to the sinks) or resolved, so a source never checkpoints past an event
//! whose effect on the state could still be lost.
//!
//! A commit is prepared ([`SessionStore::prepare`]: the changes taken from the table and
//! encoded, segment numbers allocated, cleaning decided, the bookkeeping updated) and then
//! written ([`SessionStore::write`]: the transaction). The transform writes commit N on another
//! thread while it applies and prepares chunk N+1, so prepared commits are written strictly in
//! order, one at a time, and the cleaner never reads back a segment that is only prepared.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use sessiontrail_core::store::{Namespace, StoreError};
use sessiontrail_core::Object;

use super::correlator::Correlator;
use super::table::{
    write_uuid_text, SessionRecord, SessionTable, SessionUid, Status, FLAG_LOADED,
    MAX_EXTRA_KEY_FIELDS, NO_SEG, NO_SYM, NO_TIME, SEG_LEGACY,
};

/// Prefix of the pre-log per-session keys (read and migrated, never written).
const SESSION_PREFIX: u8 = b's';
const LOG_PREFIX: u8 = b'l';
const WATERMARK_KEY: &[u8] = b"w";
/// First byte of every segment value: lets a future layout be told apart.
pub const SEGMENT_FORMAT: u8 = 2;
/// The format before compact entries (read, never written).
const SEGMENT_FORMAT_KEYED: u8 = 1;
const ENTRY_COMPACT: u8 = b'C';
const ENTRY_RECORD: u8 = b'R';
const ENTRY_TOMBSTONE: u8 = b'T';

/// A commit starts a new segment rather than grow one past this many bytes: 1 MiB less room
/// for redb's page header and key, so that a full segment takes exactly 256 pages (redb
/// rounds a value's pages up to a power of two and writes them all).
pub const SEGMENT_BYTES: usize = (1 << 20) - (4 << 10);

/// Above this many segments the oldest is cleaned even if the log holds little garbage. This
/// bounds the span of live segment numbers (a record keeps only their low 32 bits) and the
/// number of values a start-up replays; slow input commits tiny segments, one per chunk.
pub const MAX_SEGMENTS: usize = 1024;
/// The log may hold this many times the live data (plus [`CLEAN_SLACK_BYTES`]) before the
/// cleaner runs: the write amplification of cleaning is then at most about 2.
const MAX_LOG_TO_LIVE: u64 = 2;
/// Small logs are left alone: cleaning a few MiB of garbage is not worth a rewrite.
const CLEAN_SLACK_BYTES: u64 = 4 << 20;
/// At most this many live records are copied by the cleaner per commit, so that a commit's
/// size and latency stay bounded whatever the state's size.
pub const MAX_CLEANED_PER_COMMIT: usize = 32_768;

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

fn log_key(seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(LOG_PREFIX);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The id a record keeps for segment `seq`: its low 32 bits. Unambiguous because the live
/// segments always span far fewer than 2^32 numbers (at most about [`MAX_SEGMENTS`] plus the
/// commits of one partial cleaning), and numbers whose id would be [`NO_SEG`] or
/// [`SEG_LEGACY`] are never used.
fn seg_id(seq: u64) -> u32 {
    seq as u32
}

/// One entry of a segment, borrowed from the segment's bytes.
struct Entry<'a> {
    /// The stored key (`None`: a compact entry, whose key is derived from its value).
    stored_key: Option<&'a [u8]>,
    /// `None`: tombstone.
    value: Option<&'a [u8]>,
    /// The whole encoded entry (the cleaner copies it unchanged).
    raw: &'a [u8],
}

impl<'a> Entry<'a> {
    /// The session's storage key (`None`: a compact entry whose value is damaged).
    fn key(&self) -> Option<Cow<'a, [u8]>> {
        match (self.stored_key, self.value) {
            (Some(key), _) => Some(Cow::Borrowed(key)),
            (None, Some(value)) => {
                let mut key = Vec::with_capacity(64);
                key_of_value(value, &mut key)?;
                Some(Cow::Owned(key))
            }
            (None, None) => None,
        }
    }
}

fn read_u32(b: &[u8], at: usize) -> Option<usize> {
    let bytes: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes) as usize)
}

/// `len` bytes at `at`, and the position after them.
fn slice_at(b: &[u8], at: usize, len: usize) -> Option<(&[u8], usize)> {
    let end = at.checked_add(len)?;
    Some((b.get(at..end)?, end))
}

/// The entry at `pos` and the position after it; `None` if the bytes there are not an entry
/// (a damaged segment: the rest of it is unreadable).
fn entry_at(seg: &[u8], pos: usize) -> Option<(Entry<'_>, usize)> {
    let tag = *seg.get(pos)?;
    let len = read_u32(seg, pos + 1)?;
    let (first, after_first) = slice_at(seg, pos + 5, len)?;
    let (stored_key, value, end) = match tag {
        ENTRY_COMPACT => (None, Some(first), after_first),
        ENTRY_TOMBSTONE => (Some(first), None, after_first),
        ENTRY_RECORD => {
            let vlen = read_u32(seg, after_first)?;
            let (value, end) = slice_at(seg, after_first + 4, vlen)?;
            (Some(first), Some(value), end)
        }
        _ => return None,
    };
    Some((
        Entry {
            stored_key,
            value,
            raw: &seg[pos..end],
        },
        end,
    ))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        None => out.push(0),
        Some(s) => {
            put_varint(out, s.len() as u64 + 1);
            out.extend_from_slice(s);
        }
    }
}

/// Appends the binary layout of a record (see the module doc).
fn put_record_value(
    out: &mut Vec<u8>,
    table: &SessionTable,
    rec: &SessionRecord,
    body: Option<&Object>,
) -> Result<(), String> {
    let s = |sym| table.strings.get(sym).map(str::as_bytes);
    match &rec.uid {
        SessionUid::Uuid(b) => {
            out.push(0);
            out.extend_from_slice(b);
        }
        SessionUid::Text(t) => {
            out.push(1);
            put_opt_str(out, Some(t.as_bytes()));
        }
    }
    out.push(rec.extra.len() as u8);
    for &x in &rec.extra {
        put_opt_str(out, s(x));
    }
    out.push(rec.status as u8);
    out.extend_from_slice(&rec.start_ms.to_le_bytes());
    out.extend_from_slice(&rec.end_ms.to_le_bytes());
    out.extend_from_slice(&rec.start_event.to_le_bytes());
    out.extend_from_slice(&rec.end_event.to_le_bytes());
    for sym in [
        rec.product,
        rec.user,
        rec.resource,
        rec.end_reason,
        rec.corrected_by,
    ] {
        put_opt_str(out, s(sym));
    }
    out.extend_from_slice(&rec.reported_duration_s.to_le_bytes());
    out.extend_from_slice(&rec.resumed.to_le_bytes());
    match body {
        None => out.push(0),
        Some(b) => {
            let json = serde_json::to_vec(b).map_err(|e| format!("encoding state: {e}"))?;
            put_opt_str(out, Some(&json));
        }
    }
    Ok(())
}

/// Reads a record's binary layout (`None`: damaged).
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.bytes(1)?[0])
    }
    fn fixed<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.bytes(N)?.try_into().ok()
    }
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    fn opt_bytes(&mut self) -> Option<Option<&'a [u8]>> {
        match self.varint()? {
            0 => Some(None),
            n => Some(Some(self.bytes(usize::try_from(n - 1).ok()?)?)),
        }
    }
    fn opt_str(&mut self) -> Option<Option<&'a str>> {
        match self.opt_bytes()? {
            None => Some(None),
            Some(b) => Some(Some(std::str::from_utf8(b).ok()?)),
        }
    }
}

fn status_from_u8(b: u8) -> Option<Status> {
    Some(match b {
        1 => Status::Open,
        2 => Status::Complete,
        3 => Status::EndOnly,
        4 => Status::Expired,
        5 => Status::ClosedByAdmin,
        _ => return None,
    })
}

/// A record's binary layout as a table record (strings interned into `table`).
fn read_record_value(
    value: &[u8],
    table: &mut SessionTable,
) -> Option<(SessionRecord, Option<Object>)> {
    let mut r = Reader(value);
    let uid = match r.u8()? {
        0 => SessionUid::Uuid(r.fixed::<16>()?),
        1 => SessionUid::Text(r.opt_str()??.into()),
        _ => return None,
    };
    let mut rec = SessionRecord::new(uid);
    let n = usize::from(r.u8()?);
    for i in 0..n {
        let v = r.opt_str()?;
        // A layout written with more key fields than this build supports: extra ones are
        // dropped, as for the JSON layout.
        if i < MAX_EXTRA_KEY_FIELDS {
            rec.extra[i] = table.strings.intern_opt(v);
        }
    }
    rec.status = status_from_u8(r.u8()?)?;
    rec.start_ms = i64::from_le_bytes(r.fixed()?);
    rec.end_ms = i64::from_le_bytes(r.fixed()?);
    rec.start_event = u64::from_le_bytes(r.fixed()?);
    rec.end_event = u64::from_le_bytes(r.fixed()?);
    for sym in [
        &mut rec.product,
        &mut rec.user,
        &mut rec.resource,
        &mut rec.end_reason,
        &mut rec.corrected_by,
    ] {
        *sym = table.strings.intern_opt(r.opt_str()?);
    }
    rec.reported_duration_s = u32::from_le_bytes(r.fixed()?);
    rec.resumed = u16::from_le_bytes(r.fixed()?);
    let body = match r.opt_bytes()? {
        None => None,
        Some(json) => Some(serde_json::from_slice::<Object>(json).ok()?),
    };
    if !r.0.is_empty() {
        return None;
    }
    rec.flags = FLAG_LOADED;
    Some((rec, body))
}

/// The storage key of a record value, appended to `out`: the bytes
/// [`SessionTable::write_storage_key`] writes for the record the value decodes to (compact
/// entries do not store their key). `None`: damaged.
fn key_of_value(value: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let mut r = Reader(value);
    match r.u8()? {
        0 => write_uuid_text(&r.fixed::<16>()?, out),
        1 => out.extend_from_slice(r.opt_bytes()??),
        _ => return None,
    }
    let stored = usize::from(r.u8()?);
    // As `read_record_value`: fields beyond what this build supports are dropped, missing
    // ones are absent.
    for i in 0..stored.max(MAX_EXTRA_KEY_FIELDS) {
        let v = if i < stored { r.opt_bytes()? } else { None };
        if i < MAX_EXTRA_KEY_FIELDS {
            out.push(0);
            out.extend_from_slice(v.unwrap_or_default());
        }
    }
    Some(())
}

fn put_tombstone(seg: &mut Vec<u8>, key: &[u8]) {
    seg.push(ENTRY_TOMBSTONE);
    seg.extend_from_slice(&(key.len() as u32).to_le_bytes());
    seg.extend_from_slice(key);
}

/// Writes a u32 length placeholder, then whatever `f` appends, then patches the length.
fn put_sized(
    seg: &mut Vec<u8>,
    f: impl FnOnce(&mut Vec<u8>) -> Result<(), String>,
) -> Result<(), String> {
    let len_at = seg.len();
    seg.extend_from_slice(&[0; 4]);
    f(seg)?;
    let len = u32::try_from(seg.len() - len_at - 4)
        .map_err(|_| "encoding state: session record over 4 GiB".to_string())?;
    seg[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// Appends a compact record entry for `slot`, encoded in place (no intermediate buffers: this
/// runs for every changed session of every commit).
fn put_record(seg: &mut Vec<u8>, c: &Correlator, slot: u32) -> Result<(), String> {
    seg.push(ENTRY_COMPACT);
    put_sized(seg, |seg| {
        put_record_value(seg, &c.table, c.table.get(slot), c.end_only_body(slot))
    })
}

/// What the store knows about one segment (kept in memory, rebuilt at start-up).
#[derive(Debug, Clone, Copy, Default)]
struct SegInfo {
    /// Size of the value.
    bytes: u64,
    /// Record entries (tombstones excluded).
    records: u32,
    /// Record entries that are still their session's latest version.
    live: u32,
}

impl SegInfo {
    /// Live bytes, estimated from the share of live records (a record's size is not kept).
    fn live_bytes(&self) -> u64 {
        if self.records == 0 {
            0
        } else {
            self.bytes * u64::from(self.live) / u64::from(self.records)
        }
    }
}

/// The oldest segment, partly cleaned: its bytes and where the cleaner stopped.
struct Cleaning {
    seq: u64,
    value: Vec<u8>,
    pos: usize,
}

/// When and how much the cleaner works (constants in production; small in tests).
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    pub max_segments: usize,
    pub slack_bytes: u64,
    pub max_cleaned_per_commit: usize,
    pub segment_bytes: usize,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            max_segments: MAX_SEGMENTS,
            slack_bytes: CLEAN_SLACK_BYTES,
            max_cleaned_per_commit: MAX_CLEANED_PER_COMMIT,
            segment_bytes: SEGMENT_BYTES,
        }
    }
}

/// The log's bookkeeping. Updated as a commit is prepared, before it is durable: a failed
/// commit stops the transform, so the bookkeeping never has to survive one.
#[derive(Default)]
struct LogState {
    limits: LogLimits,
    /// `load` ran (or the namespace was found empty): the bookkeeping matches the store.
    ready: bool,
    segments: BTreeMap<u64, SegInfo>,
    /// Number of the next segment to write.
    next_seq: u64,
    /// Pre-log `s` keys found at start-up (deleted by the first commit).
    legacy_keys: Vec<Vec<u8>>,
    cleaning: Option<Cleaning>,
    /// The watermark as last committed (a commit that changes nothing is skipped).
    watermark: i64,
}

impl LogState {
    fn take_seq(&mut self) -> u64 {
        let mut seq = self.next_seq.max(1);
        while seg_id(seq) == NO_SEG || seg_id(seq) == SEG_LEGACY {
            seq += 1;
        }
        self.next_seq = seq + 1;
        seq
    }

    /// One record of segment `id` is no longer its session's latest version.
    fn release(&mut self, id: u32) {
        if id == NO_SEG || id == SEG_LEGACY {
            return;
        }
        // Live segments span < 2^32 numbers below `next_seq`, so the id names exactly one
        // of them: the one that many numbers (mod 2^32) below `next_seq`.
        let back = u64::from(seg_id(self.next_seq).wrapping_sub(id));
        if let Some(info) = self
            .next_seq
            .checked_sub(back)
            .and_then(|seq| self.segments.get_mut(&seq))
        {
            info.live = info.live.saturating_sub(1);
        }
    }

    fn needs_cleaning(&self) -> bool {
        if self.segments.len() > self.limits.max_segments {
            return true;
        }
        let total: u64 = self.segments.values().map(|s| s.bytes).sum();
        let live: u64 = self.segments.values().map(SegInfo::live_bytes).sum();
        total > MAX_LOG_TO_LIVE * live + self.limits.slack_bytes
    }
}

/// A segment being written by a commit.
struct NewSegment {
    seq: u64,
    bytes: Vec<u8>,
    info: SegInfo,
}

/// The segments one commit appends: entries go into the last one, and a new one is started
/// when an entry would take it past [`LogLimits::segment_bytes`].
struct NewSegments {
    limit: usize,
    /// Bytes still expected after the current segment (sizes the next buffer).
    expected: usize,
    full: Vec<NewSegment>,
    current: NewSegment,
}

impl NewSegments {
    fn start(log: &mut LogState, expected: usize) -> Self {
        let limit = log.limits.segment_bytes;
        let mut segments = NewSegments {
            limit,
            expected,
            full: Vec::new(),
            current: NewSegment {
                seq: 0,
                bytes: Vec::new(),
                info: SegInfo::default(),
            },
        };
        segments.current = segments.next_segment(log);
        segments
    }

    fn next_segment(&mut self, log: &mut LogState) -> NewSegment {
        // A little over the limit: the entry that crosses it is written before it moves.
        let capacity = self.expected.min(self.limit + (64 << 10));
        self.expected = self.expected.saturating_sub(self.limit);
        let mut bytes = Vec::with_capacity(capacity);
        bytes.push(SEGMENT_FORMAT);
        NewSegment {
            seq: log.take_seq(),
            bytes,
            info: SegInfo::default(),
        }
    }

    /// Appends one entry (`write` encodes it at the end of the buffer); returns the id of the
    /// segment that holds it.
    fn append(
        &mut self,
        log: &mut LogState,
        is_record: bool,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), String>,
    ) -> Result<u32, String> {
        let start = self.current.bytes.len();
        write(&mut self.current.bytes)?;
        // The entry that crosses the limit opens the next segment (unless it is alone: an
        // entry larger than the limit gets a segment of its own).
        if self.current.bytes.len() > self.limit && start > 1 {
            let mut next = self.next_segment(log);
            next.bytes.extend_from_slice(&self.current.bytes[start..]);
            self.current.bytes.truncate(start);
            let done = std::mem::replace(&mut self.current, next);
            self.full.push(done);
        }
        if is_record {
            self.current.info.records += 1;
            self.current.info.live += 1;
        }
        Ok(seg_id(self.current.seq))
    }

    /// The segments with entries, in order, their sizes set.
    fn finish(self) -> Vec<NewSegment> {
        let mut segments = self.full;
        if self.current.bytes.len() > 1 {
            segments.push(self.current);
        }
        for s in &mut segments {
            s.info.bytes = s.bytes.len() as u64;
        }
        segments
    }
}

/// The state of one correlate transform in the store.
#[derive(Clone)]
pub struct SessionStore {
    ns: Namespace,
    log: Arc<Mutex<LogState>>,
    /// Every segment numbered below this is in the store: prepared commits up to here were
    /// written (the cleaner must not read a segment back before that).
    written_below: Arc<AtomicU64>,
    /// A write failed: the bookkeeping is ahead of the store for good.
    failed: Arc<AtomicBool>,
    /// Runs before each write; an `Err` fails it (tests: slow and failing stores).
    #[cfg(test)]
    before_write: Option<WriteHook>,
}

#[cfg(test)]
pub(crate) type WriteHook = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// A commit encoded by [`SessionStore::prepare`], to be written by [`SessionStore::write`].
pub struct PreparedCommit {
    /// Keys deleted: cleaned segments, migrated pre-log keys.
    deletes: Vec<Vec<u8>>,
    /// The new segments (number, bytes), in order.
    segments: Vec<(u64, Vec<u8>)>,
    /// The watermark, decimal text (`None`: none yet, or nothing to write).
    watermark: Option<String>,
    /// `next_seq` after this commit: once it is written, so is every segment below.
    written_below: u64,
}

impl PreparedCommit {
    /// The chunk changed nothing that is stored.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty() && self.deletes.is_empty() && self.watermark.is_none()
    }

    /// Bytes of new segments.
    pub fn bytes(&self) -> usize {
        self.segments.iter().map(|(_, b)| b.len()).sum()
    }
}

/// What was found in the store at start-up.
pub struct Loaded {
    pub sessions: Vec<(SessionRecord, Option<Object>)>,
    pub watermark: Option<i64>,
    /// Stored values that could not be read (counted and logged, never fatal).
    pub unreadable: usize,
}

/// Figures about the log (tests, benchmark).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    pub segments: usize,
    pub bytes: u64,
    pub live_records: u64,
}

/// A session's latest version during replay.
enum Latest {
    /// Segment number and the entry's value.
    Record(u64, Vec<u8>),
    Removed,
}

impl SessionStore {
    pub fn new(ns: Namespace) -> Self {
        Self::with_limits(ns, LogLimits::default())
    }

    pub fn with_limits(ns: Namespace, limits: LogLimits) -> Self {
        SessionStore {
            ns,
            log: Arc::new(Mutex::new(LogState {
                limits,
                watermark: NO_TIME,
                ..LogState::default()
            })),
            written_below: Arc::new(AtomicU64::new(0)),
            failed: Arc::new(AtomicBool::new(false)),
            #[cfg(test)]
            before_write: None,
        }
    }

    /// This store, with `hook` run before each write (its `Err` fails the write).
    #[cfg(test)]
    pub(crate) fn with_write_hook(mut self, hook: WriteHook) -> Self {
        self.before_write = Some(hook);
        self
    }

    fn log(&self) -> Result<std::sync::MutexGuard<'_, LogState>, String> {
        self.log
            .lock()
            .map_err(|_| "state log bookkeeping poisoned by an earlier panic".to_string())
    }

    pub fn stats(&self) -> LogStats {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        LogStats {
            segments: log.segments.len(),
            bytes: log.segments.values().map(|s| s.bytes).sum(),
            live_records: log.segments.values().map(|s| u64::from(s.live)).sum(),
        }
    }

    /// Replays the stored state (segments in order; then pre-log `s` keys not superseded by
    /// the log). The returned records carry the segment holding them, for the cleaner.
    pub fn load(&self, table: &mut SessionTable) -> Result<Loaded, StoreError> {
        let mut loaded = Loaded {
            sessions: Vec::new(),
            watermark: None,
            unreadable: 0,
        };
        let mut latest: HashMap<Vec<u8>, Latest> = HashMap::new();
        let mut legacy: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut segments = BTreeMap::new();
        // Keys come in order: `l` (segments, by number) before `s` before `w`.
        self.ns.scan_each(|k, v| {
            if k == WATERMARK_KEY {
                loaded.watermark = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok());
            } else if k.first() == Some(&SESSION_PREFIX) {
                legacy.push((k[1..].to_vec(), v.to_vec()));
            } else if k.first() == Some(&LOG_PREFIX) {
                let Some(seq) = k[1..].try_into().ok().map(u64::from_be_bytes) else {
                    loaded.unreadable += 1;
                    return;
                };
                let mut info = SegInfo {
                    bytes: v.len() as u64,
                    ..SegInfo::default()
                };
                if !matches!(v.first(), Some(&(SEGMENT_FORMAT | SEGMENT_FORMAT_KEYED))) {
                    loaded.unreadable += 1;
                } else {
                    let mut pos = 1;
                    while pos < v.len() {
                        let Some((e, next)) = entry_at(v, pos) else {
                            loaded.unreadable += 1;
                            break;
                        };
                        pos = next;
                        // A compact entry whose key cannot be read shadows nothing: skipped
                        // alone (its length still leads to the next entry).
                        let Some(key) = e.key() else {
                            loaded.unreadable += 1;
                            continue;
                        };
                        let l = match e.value {
                            Some(value) => {
                                info.records += 1;
                                Latest::Record(seq, value.to_vec())
                            }
                            None => Latest::Removed,
                        };
                        latest.insert(key.into_owned(), l);
                    }
                }
                segments.insert(seq, info);
            }
        })?;
        let mut log = self.log().map_err(StoreError)?;
        for (key, value) in legacy {
            if !latest.contains_key(&key) {
                match read_legacy_session(&value, table) {
                    Some((mut rec, body)) => {
                        rec.seg = SEG_LEGACY;
                        loaded.sessions.push((rec, body));
                    }
                    // Left in place, as before the log: skipped and counted at each start.
                    None => {
                        loaded.unreadable += 1;
                        continue;
                    }
                }
            }
            // Migrated (or superseded by the log): deleted by the first commit.
            log.legacy_keys.push(key);
        }
        for (_, l) in latest {
            let Latest::Record(seq, value) = l else {
                continue;
            };
            match read_record_value(&value, table) {
                Some((mut rec, body)) => {
                    rec.seg = seg_id(seq);
                    if let Some(info) = segments.get_mut(&seq) {
                        info.live += 1;
                    }
                    loaded.sessions.push((rec, body));
                }
                None => loaded.unreadable += 1,
            }
        }
        log.next_seq = segments.keys().next_back().map_or(1, |s| s + 1);
        self.written_below.store(log.next_seq, Ordering::Release);
        log.segments = segments;
        log.watermark = loaded.watermark.unwrap_or(NO_TIME);
        log.cleaning = None;
        log.ready = true;
        Ok(loaded)
    }

    /// Commits what the chunk changed in the correlator's table, in one durable transaction:
    /// [`SessionStore::prepare`] then [`SessionStore::write`] (the transform does the two on
    /// different threads, see `pipeline.rs`).
    pub fn commit(&self, c: &mut Correlator) -> Result<(), String> {
        let prepared = self.prepare(c)?;
        self.write(&prepared)
    }

    /// The part of a commit that needs the table (called with the correlator locked): takes the
    /// chunk's changes and encodes them as the transaction [`SessionStore::write`] applies:
    /// new segments (one, or more past [`SEGMENT_BYTES`]) with the changed records and
    /// tombstones of the removed ones, the watermark, and a bounded amount of cleaning:
    /// - oldest segments without live records are deleted (their tombstones too: no older
    ///   segment is left for them to shadow);
    /// - while the log holds more than [`MAX_LOG_TO_LIVE`] times the live data, or more than
    ///   [`MAX_SEGMENTS`] segments, the oldest segment's live records (at most
    ///   [`MAX_CLEANED_PER_COMMIT`] per commit) are copied into the new segments, and the
    ///   oldest segment is deleted once none is left in it.
    ///
    /// The first commit after start-up also migrates the pre-log `s` keys: their records are
    /// written to the new segments and the keys deleted.
    ///
    /// The bookkeeping (segment numbers, live counts, the records' segment ids) is updated
    /// here, as if the commit were already written: the next chunk's changes are prepared on
    /// top of it, possibly before this one's write finished. Prepared commits must be written
    /// in the order they were prepared, each only after the previous one succeeded: a write
    /// applies exactly the segment numbers and deletions decided here.
    pub fn prepare(&self, c: &mut Correlator) -> Result<PreparedCommit, String> {
        if self.failed.load(Ordering::Acquire) {
            // The bookkeeping counts segments that were never written.
            return Err("an earlier state commit failed".into());
        }
        let prepared = self.prepare_changes(c);
        if prepared.is_err() {
            // Stopped half-way: the table's changes are taken, the bookkeeping partly updated.
            self.failed.store(true, Ordering::Release);
        }
        prepared
    }

    fn prepare_changes(&self, c: &mut Correlator) -> Result<PreparedCommit, String> {
        let mut log = self.log()?;
        if !log.ready {
            // Without `load` the table does not know the stored sessions, and segment numbers
            // would be reused: only an empty namespace may be committed to directly.
            let mut empty = true;
            self.ns
                .scan_each(|_, _| empty = false)
                .map_err(|e| e.to_string())?;
            if !empty {
                return Err("state store: commit before the stored state was loaded".into());
            }
            log.ready = true;
        }
        let (dirty, deleted) = c.table.take_changes();
        let mut deletes: Vec<Vec<u8>> = Vec::new();
        // Sized for the chunk up front (~130 bytes per record): growing a MiB buffer by
        // doubling would briefly hold two copies.
        let expected = 1 + dirty.len() * 160 + deleted.len() * 64;
        let mut new = NewSegments::start(&mut log, expected);

        // Tombstones first: a key removed and re-created in the chunk ends up live.
        for (key, old) in deleted {
            if old == NO_SEG || old == SEG_LEGACY {
                // Never in the log: nothing to shadow (a legacy key is deleted below).
                continue;
            }
            log.release(old);
            new.append(&mut log, false, |seg| {
                put_tombstone(seg, &key);
                Ok(())
            })?;
        }
        for slot in dirty {
            let old = c.table.get(slot).seg;
            log.release(old);
            let id = new.append(&mut log, true, |seg| put_record(seg, c, slot))?;
            c.table.set_seg(slot, id);
        }
        if !log.legacy_keys.is_empty() {
            let legacy: Vec<u32> = c
                .table
                .iter_slots()
                .filter(|&s| c.table.get(s).seg == SEG_LEGACY)
                .collect();
            for slot in legacy {
                let id = new.append(&mut log, true, |seg| put_record(seg, c, slot))?;
                c.table.set_seg(slot, id);
            }
            for key in std::mem::take(&mut log.legacy_keys) {
                let mut k = Vec::with_capacity(key.len() + 1);
                k.push(SESSION_PREFIX);
                k.extend_from_slice(&key);
                deletes.push(k);
            }
        }

        // Cleaning. The new segments are not in `log.segments` yet, so never cleaned here; nor
        // are those of a prepared commit not yet written (the cleaner reads the oldest segment
        // back from the store, and it is the newest data anyway).
        let max_cleaned = log.limits.max_cleaned_per_commit;
        let written_below = self.written_below.load(Ordering::Acquire);
        let mut copied = 0usize;
        while let Some((&oldest, &old_info)) = log.segments.iter().next() {
            if oldest >= written_below {
                break;
            }
            if old_info.live > 0 {
                if copied >= max_cleaned || !log.needs_cleaning() {
                    break;
                }
                let mut cleaning = match log.cleaning.take() {
                    Some(cl) if cl.seq == oldest => cl,
                    _ => {
                        // A segment the bookkeeping counts but the store lacks: sessions whose
                        // latest copy was there would silently lose it, so stop instead.
                        let value = self
                            .ns
                            .get(&log_key(oldest))
                            .map_err(|e| e.to_string())?
                            .ok_or_else(|| format!("state log segment {oldest} is missing"))?;
                        Cleaning {
                            seq: oldest,
                            value,
                            pos: 1,
                        }
                    }
                };
                let old_id = seg_id(oldest);
                let mut moved = 0u32;
                while copied < max_cleaned && cleaning.pos < cleaning.value.len() {
                    let Some((e, next)) = entry_at(&cleaning.value, cleaning.pos) else {
                        // Damaged: its records were not loaded, so none of them is live.
                        cleaning.pos = cleaning.value.len();
                        break;
                    };
                    cleaning.pos = next;
                    if e.value.is_none() {
                        continue;
                    }
                    // Unreadable compact entries were not loaded either.
                    let Some(key) = e.key() else {
                        continue;
                    };
                    if let Some(slot) = c.table.find_stored(&key, old_id) {
                        let id = new.append(&mut log, true, |seg| {
                            seg.extend_from_slice(e.raw);
                            Ok(())
                        })?;
                        c.table.set_seg(slot, id);
                        moved += 1;
                        copied += 1;
                    }
                }
                let done = cleaning.pos >= cleaning.value.len();
                if let Some(i) = log.segments.get_mut(&oldest) {
                    i.live = i.live.saturating_sub(moved);
                    if done {
                        // Every entry was checked: whatever the count says, nothing in the
                        // table points here any more.
                        i.live = 0;
                    }
                }
                if !done {
                    log.cleaning = Some(cleaning);
                    break;
                }
            }
            // No live record left: its tombstones shadow nothing older, as it is the oldest.
            log.segments.remove(&oldest);
            deletes.push(log_key(oldest));
            if log.cleaning.as_ref().is_some_and(|cl| cl.seq == oldest) {
                log.cleaning = None;
            }
        }

        let segments = new.finish();
        let mut prepared = PreparedCommit {
            deletes,
            segments: Vec::with_capacity(segments.len()),
            watermark: None,
            written_below: log.next_seq,
        };
        if segments.is_empty() && prepared.deletes.is_empty() && c.watermark == log.watermark {
            return Ok(prepared);
        }
        if c.watermark != NO_TIME {
            prepared.watermark = Some(c.watermark.to_string());
        }
        for s in segments {
            log.segments.insert(s.seq, s.info);
            prepared.segments.push((s.seq, s.bytes));
        }
        log.watermark = c.watermark;
        Ok(prepared)
    }

    /// Writes a prepared commit in one durable transaction. A failure is final for this store:
    /// its bookkeeping already counts the commit, so later prepares are refused.
    pub fn write(&self, prepared: &PreparedCommit) -> Result<(), String> {
        if self.failed.load(Ordering::Acquire) {
            return Err("an earlier state commit failed".into());
        }
        #[cfg(test)]
        if let Some(hook) = &self.before_write {
            if let Err(e) = hook() {
                self.failed.store(true, Ordering::Release);
                return Err(e);
            }
        }
        if !prepared.is_empty() {
            let seg_keys: Vec<Vec<u8>> = prepared
                .segments
                .iter()
                .map(|(seq, _)| log_key(*seq))
                .collect();
            let mut changes: Vec<(&[u8], Option<&[u8]>)> = prepared
                .deletes
                .iter()
                .map(|k| (k.as_slice(), None))
                .collect();
            for (key, (_, bytes)) in seg_keys.iter().zip(&prepared.segments) {
                changes.push((key.as_slice(), Some(bytes.as_slice())));
            }
            if let Some(wm) = &prepared.watermark {
                changes.push((WATERMARK_KEY, Some(wm.as_bytes())));
            }
            if let Err(e) = self.ns.write(&changes) {
                self.failed.store(true, Ordering::Release);
                return Err(e.to_string());
            }
        }
        self.written_below
            .fetch_max(prepared.written_below, Ordering::AcqRel);
        Ok(())
    }
}

/// Bytes a record entry for `slot` takes in a segment (tests: the live data's true size).
#[cfg(test)]
pub(crate) fn encoded_len(c: &Correlator, slot: u32) -> usize {
    let mut seg = Vec::new();
    put_record(&mut seg, c, slot).map_or(0, |_| seg.len())
}

/// A pre-log `s` key's JSON as a table record (`None`: unreadable).
fn read_legacy_session(
    value: &[u8],
    table: &mut SessionTable,
) -> Option<(SessionRecord, Option<Object>)> {
    serde_json::from_slice::<StoredSession>(value)
        .ok()
        .and_then(|s| s.into_record(table))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessiontrail_core::store::StateStore;

    fn correlator() -> Correlator {
        let config: crate::correlate::CorrelateConfig =
            serde_json::from_value(serde_json::json!({})).unwrap();
        let metrics = super::super::correlator::CorrelateMetrics::new(
            sessiontrail_core::metrics::MetricsRegistry::new(),
            "t",
        );
        Correlator::new(config.settings().unwrap(), "t".into(), metrics)
    }

    #[test]
    fn stored_session_round_trips_through_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::new(StateStore::new(dir.path()).namespace("correlate/t"));
        let mut c = correlator();
        let table = &mut c.table;
        let mut rec = SessionRecord::new(SessionUid::new("8dab03fe-2552-49cf-b3e9-381b968ea65c"));
        rec.status = Status::Open;
        rec.start_ms = 1_741_593_600_444;
        rec.extra[0] = table.strings.intern("Windows");
        rec.user = table.strings.intern("CORP\\kzielinski");
        rec.reported_duration_s = 99;
        table.insert(rec, true);
        c.watermark = 5;
        store.commit(&mut c).unwrap();

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
        assert_ne!(rec.seg, NO_SEG);
    }

    #[test]
    fn binary_record_layout_round_trips_every_field() {
        let mut table = SessionTable::new();
        let mut rec = SessionRecord::new(SessionUid::new("ops-anna-6b19f9279fc93a31c"));
        rec.status = Status::ClosedByAdmin;
        rec.start_ms = -5;
        rec.end_ms = 1_741_593_600_444;
        rec.start_event = u64::MAX;
        rec.end_event = 7;
        rec.extra = [
            table.strings.intern("SSM"),
            NO_SYM,
            table.strings.intern(""),
        ];
        rec.product = table.strings.intern("Systems Manager");
        rec.user = table.strings.intern("zażółć");
        rec.resource = table.strings.intern("i-0abc");
        rec.end_reason = table.strings.intern("admin");
        rec.corrected_by = table.strings.intern("ops");
        rec.reported_duration_s = 99;
        rec.resumed = 3;
        let slot = table.insert(rec, false);
        let body: Object = serde_json::from_str(r#"{"a":{"b":[1,"x"]}}"#).unwrap();
        let mut value = Vec::new();
        put_record_value(&mut value, &table, table.get(slot), Some(&body)).unwrap();
        let original = StoredSession::from_record(&table, table.get(slot), Some(&body));

        let mut fresh = SessionTable::new();
        let (back, back_body) = read_record_value(&value, &mut fresh).unwrap();
        assert_eq!(
            StoredSession::from_record(&fresh, &back, back_body.as_ref()),
            original
        );
        assert_eq!(back.extra[1], NO_SYM);
        assert!(read_record_value(&value[..value.len() - 1], &mut fresh).is_none());
        value.push(0);
        assert!(read_record_value(&value, &mut fresh).is_none());
    }

    #[test]
    fn compact_entries_derive_the_stored_key() {
        let mut table = SessionTable::new();
        let uuid = SessionRecord::new(SessionUid::new("8dab03fe-2552-49cf-b3e9-381b968ea65c"));
        let text = SessionRecord::new(SessionUid::new("ops-anna-6b19f9279fc93a31c"));
        for (mut rec, extra) in [
            (uuid, [Some("Windows"), Some("host-1"), None]),
            (text, [None, Some("i-0abc"), Some("")]),
        ] {
            rec.status = Status::Open;
            for (sym, v) in rec.extra.iter_mut().zip(extra) {
                *sym = table.strings.intern_opt(v);
            }
            let slot = table.insert(rec, false);
            let mut value = Vec::new();
            put_record_value(&mut value, &table, table.get(slot), None).unwrap();
            let mut key = Vec::new();
            key_of_value(&value, &mut key).unwrap();
            assert_eq!(key, table.storage_key(slot));
            assert!(key_of_value(&value[..3], &mut Vec::new()).is_none());
        }
    }

    #[test]
    fn segments_of_the_keyed_format_are_still_read_and_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateStore::new(dir.path());
        let ns = || db.namespace("correlate/t");
        // Two sessions as a format-1 segment (`R` entries, key stored), as earlier releases
        // wrote them.
        let mut old = correlator();
        for (uid, start) in [("8dab03fe-2552-49cf-b3e9-381b968ea65c", 10), ("ssm-1", 20)] {
            let mut rec = SessionRecord::new(SessionUid::new(uid));
            rec.status = Status::Open;
            rec.start_ms = start;
            rec.extra[0] = old.table.strings.intern("Windows");
            old.table.insert(rec, false);
        }
        let mut seg = vec![SEGMENT_FORMAT_KEYED];
        for slot in old.table.iter_slots() {
            seg.push(ENTRY_RECORD);
            let key = old.table.storage_key(slot);
            seg.extend_from_slice(&(key.len() as u32).to_le_bytes());
            seg.extend_from_slice(&key);
            let mut value = Vec::new();
            put_record_value(&mut value, &old.table, old.table.get(slot), None).unwrap();
            seg.extend_from_slice(&(value.len() as u32).to_le_bytes());
            seg.extend_from_slice(&value);
        }
        ns().write(&[(&log_key(1), Some(&seg))]).unwrap();

        // Every segment but the one being written is cleaned.
        let limits = LogLimits {
            max_segments: 0,
            ..LogLimits::default()
        };
        let store = SessionStore::with_limits(ns(), limits);
        let mut c = correlator();
        let loaded = store.load(&mut c.table).unwrap();
        assert_eq!(loaded.unreadable, 0);
        assert_eq!(loaded.sessions.len(), 2);
        for (rec, body) in loaded.sessions {
            c.restore(rec, body);
        }
        // The commit cleans the format-1 segment (its `R` entries copied unchanged into the
        // new one) and deletes it.
        let slot = c.table.find("ssm-1", &[]).unwrap();
        c.table.get_mut(slot).resumed = 2;
        store.commit(&mut c).unwrap();
        assert!(ns().get(&log_key(1)).unwrap().is_none());
        assert_eq!(store.stats().segments, 1);

        let mut fresh = correlator();
        let loaded = SessionStore::new(ns()).load(&mut fresh.table).unwrap();
        assert_eq!(loaded.unreadable, 0);
        let mut starts: Vec<(i64, u16)> = loaded
            .sessions
            .iter()
            .map(|(r, _)| (r.start_ms, r.resumed))
            .collect();
        starts.sort();
        assert_eq!(starts, vec![(10, 0), (20, 2)]);
    }

    #[test]
    fn damaged_segment_entries_are_not_read_past() {
        let mut seg = vec![SEGMENT_FORMAT];
        put_tombstone(&mut seg, b"a\0\0\0");
        let (e, next) = entry_at(&seg, 1).unwrap();
        assert_eq!(
            (e.stored_key, e.value, next),
            (Some(&b"a\0\0\0"[..]), None, seg.len())
        );
        seg.extend_from_slice(&[ENTRY_RECORD, 200, 0, 0, 0, b'x']);
        assert!(entry_at(&seg, next).is_none());
        assert_eq!(seg_id(1 << 32 | 7), 7);
    }
}
