//! `SessionTable`: every session correlate currently knows, in a compact in-memory form.
//!
//! Memory is the constraint here (the target is ≤ 256 bytes per open session at 1,000,000
//! open sessions), so a session is one fixed-size [`SessionRecord`] in a chunked slab, not a
//! JSON map: strings that repeat across sessions (users, resources, products, end reasons)
//! are interned to 4-byte symbols, canonical UUID session ids are stored as 16 bytes, event
//! ids are kept as 64-bit hashes. The index is a `hashbrown::HashTable` of 4-byte slot
//! numbers hashed by session id only, so a lookup can treat a key field the event does not
//! carry (an SSM TerminateSession has no target host) as "any value".
//!
//! Two lazily-cleaned heaps keep the orders correlate needs: open sessions by start time (for
//! `max_session_age` expiry and for evicting the oldest when `max_open_sessions` is reached)
//! and closed sessions by the time they may be forgotten (`dedupe_window`, `allowed_lateness`).
//! A heap entry carries the slot's generation; entries of reused slots are skipped when popped.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;

/// An interned string; 0 means "absent".
pub type Sym = u32;
pub const NO_SYM: Sym = 0;
/// A time in epoch milliseconds; `NO_TIME` means "absent".
pub const NO_TIME: i64 = i64::MIN;
/// Key fields after the first (the session id) that a record can hold. Four key fields in
/// all cover session id + product + host + one more; more would grow every record.
pub const MAX_EXTRA_KEY_FIELDS: usize = 3;

/// Strings shared by many sessions, stored once. Never shrinks: its size is the number of
/// distinct users, resources, products and end reasons, not the number of sessions.
#[derive(Default)]
pub struct Interner {
    ids: HashMap<Arc<str>, Sym, FastState>,
    names: Vec<Arc<str>>,
}

impl Interner {
    pub fn intern(&mut self, s: &str) -> Sym {
        if let Some(id) = self.ids.get(s) {
            return *id;
        }
        let arc: Arc<str> = Arc::from(s);
        self.names.push(Arc::clone(&arc));
        let id = self.names.len() as Sym; // 1-based: 0 is NO_SYM
        self.ids.insert(arc, id);
        id
    }

    pub fn intern_opt(&mut self, s: Option<&str>) -> Sym {
        s.map(|s| self.intern(s)).unwrap_or(NO_SYM)
    }

    pub fn lookup(&self, s: &str) -> Option<Sym> {
        self.ids.get(s).copied()
    }

    pub fn get(&self, sym: Sym) -> Option<&str> {
        if sym == NO_SYM {
            return None;
        }
        self.names.get(sym as usize - 1).map(|s| &**s)
    }
}

/// The hash of the session index and the interner. Every session event hashes its session id
/// and its key field values, and SipHash (std's default) made that a few percent of the
/// per-event time. foldhash is much cheaper and still seeded at random per table, so ids
/// written into the logs cannot be chosen to collide without knowing the seed.
type FastState = foldhash::fast::RandomState;

/// A session id: canonical lower-case UUIDs (Windows, WSB, Parsec) in 16 bytes, anything else
/// (SSM `owner-17hex`) as text.
#[derive(Clone, PartialEq, Eq)]
pub enum SessionUid {
    Uuid([u8; 16]),
    Text(Box<str>),
}

impl SessionUid {
    pub fn new(s: &str) -> Self {
        match parse_canonical_uuid(s) {
            Some(b) => SessionUid::Uuid(b),
            None => SessionUid::Text(s.into()),
        }
    }

    pub fn matches(&self, s: &str) -> bool {
        match self {
            SessionUid::Text(t) => &**t == s,
            SessionUid::Uuid(b) => parse_canonical_uuid(s).is_some_and(|p| p == *b),
        }
    }

    pub fn as_string(&self) -> String {
        match self {
            SessionUid::Text(t) => t.to_string(),
            SessionUid::Uuid(b) => {
                let mut text = Vec::with_capacity(36);
                write_uuid_text(b, &mut text);
                // ASCII hex digits and dashes: one char per byte.
                text.into_iter().map(char::from).collect()
            }
        }
    }

    /// Appends the id's text (as `as_string`, without allocating: this runs for every session
    /// written to or read from the state store).
    pub fn write_text(&self, out: &mut Vec<u8>) {
        match self {
            SessionUid::Text(t) => out.extend_from_slice(t.as_bytes()),
            SessionUid::Uuid(b) => write_uuid_text(b, out),
        }
    }
}

/// The canonical lower-case 8-4-4-4-12 text of a UUID.
pub fn write_uuid_text(b: &[u8; 16], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push(b'-');
        }
        out.push(HEX[usize::from(x >> 4)]);
        out.push(HEX[usize::from(x & 15)]);
    }
}

/// Only the exact lower-case 8-4-4-4-12 form, so that the text round-trips unchanged.
fn parse_canonical_uuid(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut n = 0;
    let mut i = 0;
    while i < 36 {
        if matches!(i, 8 | 13 | 18 | 23) {
            if b[i] != b'-' {
                return None;
            }
            i += 1;
            continue;
        }
        let hi = lower_hex(b[i])?;
        let lo = lower_hex(*b.get(i + 1)?)?;
        out[n] = (hi << 4) | lo;
        n += 1;
        i += 2;
    }
    Some(out)
}

fn lower_hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Where a session is in its life. `Free` marks an unused slab slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    Free = 0,
    Open = 1,
    Complete = 2,
    EndOnly = 3,
    Expired = 4,
    ClosedByAdmin = 5,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Free => "free",
            Status::Open => "open",
            Status::Complete => "complete",
            Status::EndOnly => "end_only",
            Status::Expired => "expired",
            Status::ClosedByAdmin => "closed_by_admin",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "open" => Status::Open,
            "complete" => Status::Complete,
            "end_only" => Status::EndOnly,
            "expired" => Status::Expired,
            "closed_by_admin" => Status::ClosedByAdmin,
            _ => return None,
        })
    }
}

/// Record flag: loaded from the state store at start-up and not changed since (a repeat of
/// its events may be a replay after a crash, see the correlator's duplicate handling).
pub const FLAG_LOADED: u8 = 1;
/// Record flag: waiting in the dirty list for the next state commit.
pub const FLAG_DIRTY: u8 = 2;

/// Segment id of a record never written to the state store's log (see `state.rs`).
pub const NO_SEG: u32 = 0;
/// Segment id of a record loaded from a pre-log per-session key (`s` + key), still to be
/// migrated into the log by the next commit.
pub const SEG_LEGACY: u32 = u32::MAX;

/// One session, open or recently closed. 104 bytes.
#[derive(Clone)]
pub struct SessionRecord {
    pub uid: SessionUid,
    pub start_ms: i64,
    pub end_ms: i64,
    /// Hash of the start event's `metadata.uid` (0: none), for dedupe.
    pub start_event: u64,
    /// Hash of the winning end event's `metadata.uid` (0: none).
    pub end_event: u64,
    /// Values of the key fields after the session id.
    pub extra: [Sym; MAX_EXTRA_KEY_FIELDS],
    pub product: Sym,
    pub user: Sym,
    pub resource: Sym,
    pub end_reason: Sym,
    pub corrected_by: Sym,
    /// Duration the producer reported, whole seconds (`u32::MAX`: none).
    pub reported_duration_s: u32,
    pub generation: u32,
    /// Low 32 bits of the number of the log segment holding this record's latest stored
    /// version ([`NO_SEG`]: none yet). Fits in what was padding, so the record stays 104 bytes.
    pub seg: u32,
    pub resumed: u16,
    pub status: Status,
    pub flags: u8,
}

pub const NO_REPORTED_DURATION: u32 = u32::MAX;

impl SessionRecord {
    pub fn new(uid: SessionUid) -> Self {
        SessionRecord {
            uid,
            start_ms: NO_TIME,
            end_ms: NO_TIME,
            start_event: 0,
            end_event: 0,
            extra: [NO_SYM; MAX_EXTRA_KEY_FIELDS],
            product: NO_SYM,
            user: NO_SYM,
            resource: NO_SYM,
            end_reason: NO_SYM,
            corrected_by: NO_SYM,
            reported_duration_s: NO_REPORTED_DURATION,
            generation: 0,
            seg: NO_SEG,
            resumed: 0,
            status: Status::Free,
            flags: 0,
        }
    }

    pub fn duration_ms(&self) -> Option<i64> {
        (self.start_ms != NO_TIME && self.end_ms != NO_TIME).then(|| self.end_ms - self.start_ms)
    }
}

/// How an event's key field compares with a record's: a field missing on either side
/// matches anything.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum KeyPart {
    Missing,
    /// Present but never interned: no record can hold it.
    Unknown,
    Known(Sym),
}

impl KeyPart {
    fn matches(self, sym: Sym) -> bool {
        match self {
            KeyPart::Missing => true,
            _ if sym == NO_SYM => true,
            KeyPart::Unknown => false,
            KeyPart::Known(s) => s == sym,
        }
    }
}

/// Records per slab chunk: 16,384 x 104 bytes, about 1.6 MiB (4,096 measured ~5 MiB more
/// peak RSS at a million sessions).
const SLAB_CHUNK: usize = 16_384;

/// The records, in fixed-size chunks rather than one `Vec`: growing never copies the records
/// already stored (a doubling `Vec` of a million records would copy ~100 MiB and briefly hold
/// old and new buffers at once), and at most one chunk is allocated ahead of use.
#[derive(Default)]
struct Slab {
    chunks: Vec<Vec<SessionRecord>>,
    len: usize,
}

impl Slab {
    /// Appends a record; returns its slot.
    fn push(&mut self, rec: SessionRecord) -> u32 {
        if self.len == self.chunks.len() * SLAB_CHUNK {
            self.chunks.push(Vec::with_capacity(SLAB_CHUNK));
        }
        let slot = self.len;
        if let Some(chunk) = self.chunks.last_mut() {
            // Never beyond the capacity reserved above, so the chunk is never reallocated.
            chunk.push(rec);
        }
        self.len += 1;
        slot as u32
    }

    fn iter(&self) -> impl Iterator<Item = &SessionRecord> {
        self.chunks.iter().flatten()
    }

    fn capacity(&self) -> usize {
        self.chunks.len() * SLAB_CHUNK
    }
}

impl std::ops::Index<u32> for Slab {
    type Output = SessionRecord;
    fn index(&self, slot: u32) -> &SessionRecord {
        let slot = slot as usize;
        &self.chunks[slot / SLAB_CHUNK][slot % SLAB_CHUNK]
    }
}

impl std::ops::IndexMut<u32> for Slab {
    fn index_mut(&mut self, slot: u32) -> &mut SessionRecord {
        let slot = slot as usize;
        &mut self.chunks[slot / SLAB_CHUNK][slot % SLAB_CHUNK]
    }
}

/// Heap entry: (time, slot, generation), smallest time first.
type OrderEntry = Reverse<(i64, u32, u32)>;

pub struct SessionTable {
    slots: Slab,
    free: Vec<u32>,
    index: HashTable<u32>,
    hasher: FastState,
    open_order: BinaryHeap<OrderEntry>,
    forget_order: BinaryHeap<OrderEntry>,
    pub strings: Interner,
    open: usize,
    closed: usize,
    next_generation: u32,
    /// Slots changed since the last commit.
    dirty: Vec<u32>,
    /// Storage keys of records removed since the last commit, with the segment that held
    /// their latest stored version.
    deleted: Vec<(Vec<u8>, u32)>,
}

impl Default for SessionTable {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionTable {
    pub fn new() -> Self {
        SessionTable {
            slots: Slab::default(),
            free: Vec::new(),
            index: HashTable::new(),
            hasher: FastState::default(),
            open_order: BinaryHeap::new(),
            forget_order: BinaryHeap::new(),
            strings: Interner::default(),
            open: 0,
            closed: 0,
            next_generation: 1,
            dirty: Vec::new(),
            deleted: Vec::new(),
        }
    }

    /// Lookups hash the id as a record stores it (UUID bytes or text), so both agree.
    fn hash_uid_text(&self, uid: &str) -> u64 {
        match parse_canonical_uuid(uid) {
            Some(b) => self.hasher.hash_one(b),
            None => self.hasher.hash_one(uid),
        }
    }

    /// The hash the index files a record with this id under (for [`Self::find_key`] and
    /// [`Self::insert_hashed`]).
    pub fn hash_uid(&self, uid: &SessionUid) -> u64 {
        Self::hash_session_uid(&self.hasher, uid)
    }

    fn hash_session_uid(hasher: &FastState, uid: &SessionUid) -> u64 {
        match uid {
            SessionUid::Uuid(b) => hasher.hash_one(b),
            SessionUid::Text(t) => hasher.hash_one(&**t),
        }
    }

    fn hash_record(hasher: &FastState, rec: &SessionRecord) -> u64 {
        Self::hash_session_uid(hasher, &rec.uid)
    }

    pub fn open_count(&self) -> usize {
        self.open
    }

    pub fn closed_count(&self) -> usize {
        self.closed
    }

    /// The live record whose id is `uid` and whose other key fields are compatible.
    pub fn find(&self, uid: &str, extra: &[KeyPart]) -> Option<u32> {
        let hash = self.hash_uid_text(uid);
        self.find_matching(hash, |rec| rec.uid.matches(uid), extra)
    }

    /// [`Self::find`] for an id already parsed and hashed ([`Self::hash_uid`]): the
    /// correlator's per-event lookup, which compares ids as stored instead of as text.
    pub fn find_key(&self, uid: &SessionUid, hash: u64, extra: &[KeyPart]) -> Option<u32> {
        self.find_matching(hash, |rec| rec.uid == *uid, extra)
    }

    fn find_matching(
        &self,
        hash: u64,
        same_id: impl Fn(&SessionRecord) -> bool,
        extra: &[KeyPart],
    ) -> Option<u32> {
        self.index
            .find(hash, |&slot| {
                let rec = &self.slots[slot];
                same_id(rec)
                    && extra
                        .iter()
                        .zip(rec.extra.iter())
                        .all(|(p, s)| p.matches(*s))
            })
            .copied()
    }

    /// Every live record with this session id (for the API).
    pub fn find_all(&self, uid: &str) -> Vec<u32> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, r)| r.status != Status::Free && r.uid.matches(uid))
            .map(|(i, _)| i as u32)
            .collect()
    }

    pub fn key_part(&self, value: Option<&str>) -> KeyPart {
        match value {
            None => KeyPart::Missing,
            Some(v) => match self.strings.lookup(v) {
                Some(s) => KeyPart::Known(s),
                None => KeyPart::Unknown,
            },
        }
    }

    pub fn get(&self, slot: u32) -> &SessionRecord {
        &self.slots[slot]
    }

    /// Mutable access; the record is written at the next commit.
    pub fn get_mut(&mut self, slot: u32) -> &mut SessionRecord {
        self.mark_dirty(slot);
        &mut self.slots[slot]
    }

    fn mark_dirty(&mut self, slot: u32) {
        let rec = &mut self.slots[slot];
        rec.flags &= !FLAG_LOADED;
        if rec.flags & FLAG_DIRTY == 0 {
            rec.flags |= FLAG_DIRTY;
            self.dirty.push(slot);
        }
    }

    /// Adds a record (its `status` must not be `Free`); open records join the start order.
    pub fn insert(&mut self, rec: SessionRecord, dirty: bool) -> u32 {
        let hash = Self::hash_record(&self.hasher, &rec);
        self.insert_hashed(rec, hash, dirty)
    }

    /// [`Self::insert`] with the id's hash already known ([`Self::hash_uid`]).
    pub fn insert_hashed(&mut self, mut rec: SessionRecord, hash: u64, dirty: bool) -> u32 {
        debug_assert!(rec.status != Status::Free);
        debug_assert_eq!(hash, Self::hash_record(&self.hasher, &rec));
        rec.generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        rec.flags &= !FLAG_DIRTY;
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s] = rec;
                s
            }
            None => self.slots.push(rec),
        };
        let slots = &self.slots;
        let hasher = &self.hasher;
        self.index
            .insert_unique(hash, slot, |&s| Self::hash_record(hasher, &slots[s]));
        if self.slots[slot].status == Status::Open {
            self.open += 1;
            self.push_open_order(slot);
        } else {
            self.closed += 1;
        }
        if dirty {
            self.mark_dirty(slot);
        }
        slot
    }

    /// Called after a record's status changes between open and closed, or its start time
    /// changes, so the counters and orders stay right.
    pub fn status_changed(&mut self, slot: u32, was_open: bool) {
        let now_open = self.slots[slot].status == Status::Open;
        match (was_open, now_open) {
            (true, false) => {
                self.open -= 1;
                self.closed += 1;
            }
            (false, true) => {
                self.closed -= 1;
                self.open += 1;
            }
            _ => {}
        }
        if now_open {
            self.push_open_order(slot);
        }
        self.mark_dirty(slot);
    }

    fn push_open_order(&mut self, slot: u32) {
        let r = &self.slots[slot];
        self.open_order
            .push(Reverse((r.start_ms, slot, r.generation)));
        // Entries of closed or reused slots are skipped lazily; rebuild before they dominate.
        if self.open_order.len() > 2 * self.open + 1024 {
            self.rebuild_open_order();
        }
    }

    fn rebuild_open_order(&mut self) {
        let entries: Vec<OrderEntry> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, r)| r.status == Status::Open)
            .map(|(i, r)| Reverse((r.start_ms, i as u32, r.generation)))
            .collect();
        self.open_order = BinaryHeap::from(entries);
    }

    /// Schedules a closed record to be reconsidered for forgetting at `at` (event time).
    pub fn schedule_forget(&mut self, slot: u32, at: i64) {
        let g = self.slots[slot].generation;
        self.forget_order.push(Reverse((at, slot, g)));
        if self.forget_order.len() > 2 * self.closed + 1024 {
            // Stale entries only cost a re-check; drop the ones whose slot was reused or
            // freed, keeping one entry per live record at its latest time.
            let mut latest: HashMap<u32, (i64, u32)> = HashMap::new();
            for Reverse((t, s, g)) in self.forget_order.drain() {
                let r = &self.slots[s];
                if r.generation == g && r.status != Status::Free && r.status != Status::Open {
                    let e = latest.entry(s).or_insert((t, g));
                    e.0 = e.0.max(t);
                }
            }
            self.forget_order = latest
                .into_iter()
                .map(|(s, (t, g))| Reverse((t, s, g)))
                .collect();
        }
    }

    /// The open session with the earliest start, if it started before `before`.
    pub fn pop_open_started_before(&mut self, before: i64) -> Option<u32> {
        while let Some(Reverse((start, slot, generation))) = self.open_order.peek().copied() {
            let r = &self.slots[slot];
            if r.generation != generation || r.status != Status::Open || r.start_ms != start {
                self.open_order.pop();
                continue;
            }
            if start >= before {
                return None;
            }
            self.open_order.pop();
            return Some(slot);
        }
        None
    }

    /// A closed record scheduled for forgetting before `before` (the caller re-checks it).
    pub fn pop_forget_due(&mut self, before: i64) -> Option<u32> {
        while let Some(Reverse((at, slot, generation))) = self.forget_order.peek().copied() {
            let r = &self.slots[slot];
            if r.generation != generation || r.status == Status::Free || r.status == Status::Open {
                self.forget_order.pop();
                continue;
            }
            if at >= before {
                return None;
            }
            self.forget_order.pop();
            return Some(slot);
        }
        None
    }

    /// Removes a record; its stored copy is deleted at the next commit.
    pub fn remove(&mut self, slot: u32) {
        let key = self.storage_key(slot);
        let hash = Self::hash_record(&self.hasher, &self.slots[slot]);
        if let Ok(entry) = self.index.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
        let rec = &mut self.slots[slot];
        if rec.status == Status::Open {
            self.open -= 1;
        } else {
            self.closed -= 1;
        }
        let seg = rec.seg;
        // Free the id's heap memory now rather than at slot reuse.
        *rec = SessionRecord::new(SessionUid::Uuid([0; 16]));
        self.free.push(slot);
        self.deleted.push((key, seg));
    }

    /// The record's key in the state store: session id, then each extra key field, NUL-separated.
    pub fn storage_key(&self, slot: u32) -> Vec<u8> {
        let mut k = Vec::with_capacity(48);
        self.write_storage_key(slot, &mut k);
        k
    }

    /// Appends the record's storage key to `out` (the state log writes it in place).
    pub fn write_storage_key(&self, slot: u32, out: &mut Vec<u8>) {
        let r = &self.slots[slot];
        r.uid.write_text(out);
        for s in r.extra {
            out.push(0);
            if let Some(v) = self.strings.get(s) {
                out.extend_from_slice(v.as_bytes());
            }
        }
    }

    /// The live record whose storage key is `key` and whose latest stored version is in
    /// segment `seg` (the log cleaner's "is this stored version still the latest?").
    pub fn find_stored(&self, key: &[u8], seg: u32) -> Option<u32> {
        let mut parts = key.split(|&b| b == 0);
        let uid = std::str::from_utf8(parts.next()?).ok()?;
        let mut extra: [&[u8]; MAX_EXTRA_KEY_FIELDS] = [&[]; MAX_EXTRA_KEY_FIELDS];
        for e in extra.iter_mut() {
            *e = parts.next()?;
        }
        if parts.next().is_some() {
            return None;
        }
        self.index
            .iter_hash(self.hash_uid_text(uid))
            .copied()
            .find(|&slot| {
                let rec = &self.slots[slot];
                rec.seg == seg
                    && rec.status != Status::Free
                    && rec.uid.matches(uid)
                    && rec
                        .extra
                        .iter()
                        .zip(extra)
                        .all(|(&sym, want)| self.strings.get(sym).unwrap_or("").as_bytes() == want)
            })
    }

    /// Records that `slot`'s latest version is now stored in segment `seg`.
    pub fn set_seg(&mut self, slot: u32, seg: u32) {
        self.slots[slot].seg = seg;
    }

    /// Takes the changes since the last commit: slots to write, and the storage keys to
    /// delete with the segment holding their latest stored version.
    pub fn take_changes(&mut self) -> (Vec<u32>, Vec<(Vec<u8>, u32)>) {
        let dirty = std::mem::take(&mut self.dirty);
        for &s in &dirty {
            self.slots[s].flags &= !FLAG_DIRTY;
        }
        let live = dirty
            .into_iter()
            .filter(|&s| self.slots[s].status != Status::Free)
            .collect();
        (live, std::mem::take(&mut self.deleted))
    }

    /// Every live record's slot (API listings).
    pub fn iter_slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, r)| r.status != Status::Free)
            .map(|(i, _)| i as u32)
    }

    /// Heap bytes of the slab and index (for the benchmark's bytes-per-session figure).
    pub fn approx_heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<SessionRecord>()
            + self.index.capacity() * (std::mem::size_of::<u32>() + 1)
            + (self.open_order.capacity() + self.forget_order.capacity())
                * std::mem::size_of::<OrderEntry>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(table: &mut SessionTable, uid: &str, host: Option<&str>, start: i64) -> u32 {
        let mut r = SessionRecord::new(SessionUid::new(uid));
        r.extra[0] = table.strings.intern_opt(host);
        r.start_ms = start;
        r.status = Status::Open;
        table.insert(r, true)
    }

    #[test]
    fn records_past_the_first_slab_chunk_are_found_and_reused() {
        let mut t = SessionTable::new();
        let n = SLAB_CHUNK + 10;
        for i in 0..n {
            open(&mut t, &format!("s{i}"), None, i as i64);
        }
        let last = t.find(&format!("s{}", n - 1), &[]).unwrap();
        assert_eq!(last as usize, n - 1);
        assert_eq!(t.get(last).start_ms, (n - 1) as i64);
        t.remove(last);
        assert!(t.find(&format!("s{}", n - 1), &[]).is_none());
        let again = open(&mut t, "again", None, 0);
        assert_eq!(again, last, "a freed slot is reused");
        assert_eq!(t.iter_slots().count(), n);
        assert_eq!(t.open_count(), n);
    }

    #[test]
    fn the_index_hash_is_seeded_per_table() {
        let state = FastState::default();
        assert_eq!(state.hash_one("abc"), state.hash_one("abc"));
        // Seeded per table: another table files the same id elsewhere.
        assert_ne!(FastState::default().hash_one("abc"), state.hash_one("abc"));
    }

    #[test]
    fn record_stays_compact() {
        assert!(std::mem::size_of::<SessionRecord>() <= 104);
    }

    #[test]
    fn uuid_ids_round_trip_and_other_ids_stay_text() {
        let u = "8dab03fe-2552-49cf-b3e9-381b968ea65c";
        assert!(matches!(SessionUid::new(u), SessionUid::Uuid(_)));
        assert_eq!(SessionUid::new(u).as_string(), u);
        let upper = "8DAB03FE-2552-49CF-B3E9-381B968EA65C";
        assert_eq!(SessionUid::new(upper).as_string(), upper);
        let ssm = "ops-anna-6b19f9279fc93a31c";
        assert_eq!(SessionUid::new(ssm).as_string(), ssm);
    }

    #[test]
    fn missing_key_field_matches_any_value() {
        let mut t = SessionTable::new();
        let slot = open(&mut t, "s-1", Some("host-a"), 10);
        let host_a = t.key_part(Some("host-a"));
        assert_eq!(t.find("s-1", &[host_a]), Some(slot));
        assert_eq!(t.find("s-1", &[KeyPart::Missing]), Some(slot));
        let host_b = t.key_part(Some("host-b"));
        assert_eq!(host_b, KeyPart::Unknown);
        assert_eq!(t.find("s-1", &[host_b]), None);
        assert_eq!(t.find("s-2", &[KeyPart::Missing]), None);
    }

    #[test]
    fn oldest_open_session_comes_first_and_removed_ones_are_skipped() {
        let mut t = SessionTable::new();
        let a = open(&mut t, "a", None, 30);
        let b = open(&mut t, "b", None, 10);
        let c = open(&mut t, "c", None, 20);
        t.remove(b);
        assert_eq!(t.pop_open_started_before(100), Some(c));
        assert_eq!(t.pop_open_started_before(25), None);
        assert_eq!(t.pop_open_started_before(100), Some(a));
        assert_eq!(t.open_count(), 2);
    }

    #[test]
    fn changes_list_written_and_deleted_records() {
        let mut t = SessionTable::new();
        let a = open(&mut t, "a", Some("h"), 1);
        let b = open(&mut t, "b", None, 2);
        t.remove(b);
        let (dirty, deleted) = t.take_changes();
        assert_eq!(dirty, vec![a]);
        assert_eq!(deleted, vec![(b"b\0\0\0".to_vec(), NO_SEG)]);
        assert_eq!(t.storage_key(a), b"a\0h\0\0".to_vec());
        let (dirty, deleted) = t.take_changes();
        assert!(dirty.is_empty() && deleted.is_empty());
    }
}
