//! What every input mapping shares: the OCSF class tables (ids and captions), the base event
//! every mapping starts from, timestamp parsing, the [`Reader`] that records which source
//! fields a mapping consumed (the rest becomes `unmapped`), and the final clean-up pass that
//! removes `null`s and empty objects (OCSF forbids `null`; an empty endpoint would fail the
//! schema's "at least one of" rules).

use std::borrow::Cow;

use sessiontrail_core::json_borrowed::{BorrowedObject, BorrowedValue};
use sessiontrail_core::json_write::{JsonObjectWriter, Key};
use sessiontrail_core::{Object, Value};

use super::{InputSystem, OcsfVersion, ProductOverride};

/// Why a record cannot be mapped. `reason` is one of the corpus' dead-letter reasons.
#[derive(Debug, Clone, PartialEq)]
pub struct MapError {
    pub reason: &'static str,
    pub message: String,
}

impl MapError {
    pub fn missing(path: &str) -> Self {
        MapError {
            reason: "missing_field",
            message: format!("required field \"{path}\" is missing"),
        }
    }
    pub fn wrong_type(path: &str, expected: &str, found: &BorrowedValue<'_>) -> Self {
        MapError {
            reason: "wrong_type",
            message: format!(
                "field \"{path}\" must be {expected}, found {}",
                found.kind()
            ),
        }
    }
    /// The message names the field only: a malformed timestamp could hold anything.
    pub fn invalid_timestamp(path: &str, expected: &str) -> Self {
        MapError {
            reason: "invalid_timestamp",
            message: format!("field \"{path}\" is not {expected}"),
        }
    }
    pub fn unknown_event_type(path: &str, value: &str) -> Self {
        MapError {
            reason: "unknown_event_type",
            message: format!(
                "field \"{path}\" has unknown value \"{}\"",
                truncate(value, MAX_ECHOED_CHARS)
            ),
        }
    }
}

/// Event-type names are echoed in dead-letter messages; longer ones are cut (they are not
/// secrets, but a message must stay a message).
const MAX_ECHOED_CHARS: usize = 64;

pub fn truncate(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

// ---------------------------------------------------------------------------------------------
// Classes and captions (from the OCSF schemas in shared/ocsf/schemas; identical in 1.3.0 and
// 1.8.0 for every activity used here).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    BaseEvent,
    ProcessActivity,
    Authentication,
    NetworkActivity,
    WebResourcesActivity,
    ApiActivity,
    WebResourceAccessActivity,
    FileHostingActivity,
}

pub struct ClassInfo {
    pub uid: i64,
    pub name: &'static str,
    pub category_uid: i64,
    pub category_name: &'static str,
    /// activity_id -> caption and `type_name` (0 Unknown and 99 Other are common to all
    /// classes).
    pub activities: &'static [(i64, &'static str, &'static str)],
}

impl Class {
    pub const ALL: [Class; 8] = [
        Class::BaseEvent,
        Class::ProcessActivity,
        Class::Authentication,
        Class::NetworkActivity,
        Class::WebResourcesActivity,
        Class::ApiActivity,
        Class::WebResourceAccessActivity,
        Class::FileHostingActivity,
    ];

    pub fn info(self) -> &'static ClassInfo {
        match self {
            Class::BaseEvent => &BASE_EVENT,
            Class::ProcessActivity => &PROCESS_ACTIVITY,
            Class::Authentication => &AUTHENTICATION,
            Class::NetworkActivity => &NETWORK_ACTIVITY,
            Class::WebResourcesActivity => &WEB_RESOURCES_ACTIVITY,
            Class::ApiActivity => &API_ACTIVITY,
            Class::WebResourceAccessActivity => &WEB_RESOURCE_ACCESS_ACTIVITY,
            Class::FileHostingActivity => &FILE_HOSTING_ACTIVITY,
        }
    }
}

static BASE_EVENT: ClassInfo = ClassInfo {
    uid: 0,
    name: "Base Event",
    category_uid: 0,
    category_name: "Uncategorized",
    activities: &[],
};
static PROCESS_ACTIVITY: ClassInfo = ClassInfo {
    uid: 1007,
    name: "Process Activity",
    category_uid: 1,
    category_name: "System Activity",
    activities: &[
        (1, "Launch", "Process Activity: Launch"),
        (2, "Terminate", "Process Activity: Terminate"),
    ],
};
static AUTHENTICATION: ClassInfo = ClassInfo {
    uid: 3002,
    name: "Authentication",
    category_uid: 3,
    category_name: "Identity & Access Management",
    activities: &[
        (1, "Logon", "Authentication: Logon"),
        (2, "Logoff", "Authentication: Logoff"),
    ],
};
static NETWORK_ACTIVITY: ClassInfo = ClassInfo {
    uid: 4001,
    name: "Network Activity",
    category_uid: 4,
    category_name: "Network Activity",
    activities: &[
        (1, "Open", "Network Activity: Open"),
        (2, "Close", "Network Activity: Close"),
        (4, "Fail", "Network Activity: Fail"),
        (5, "Refuse", "Network Activity: Refuse"),
    ],
};
static WEB_RESOURCES_ACTIVITY: ClassInfo = ClassInfo {
    uid: 6001,
    name: "Web Resources Activity",
    category_uid: 6,
    category_name: "Application Activity",
    activities: &[
        (2, "Read", "Web Resources Activity: Read"),
        (6, "Import", "Web Resources Activity: Import"),
        (7, "Export", "Web Resources Activity: Export"),
    ],
};
static API_ACTIVITY: ClassInfo = ClassInfo {
    uid: 6003,
    name: "API Activity",
    category_uid: 6,
    category_name: "Application Activity",
    activities: &[
        (1, "Create", "API Activity: Create"),
        (2, "Read", "API Activity: Read"),
        (3, "Update", "API Activity: Update"),
        (4, "Delete", "API Activity: Delete"),
    ],
};
static WEB_RESOURCE_ACCESS_ACTIVITY: ClassInfo = ClassInfo {
    uid: 6004,
    name: "Web Resource Access Activity",
    category_uid: 6,
    category_name: "Application Activity",
    activities: &[
        (
            1,
            "Access Grant",
            "Web Resource Access Activity: Access Grant",
        ),
        (
            2,
            "Access Deny",
            "Web Resource Access Activity: Access Deny",
        ),
    ],
};
static FILE_HOSTING_ACTIVITY: ClassInfo = ClassInfo {
    uid: 6006,
    name: "File Hosting Activity",
    category_uid: 6,
    category_name: "Application Activity",
    activities: &[
        (1, "Upload", "File Hosting Activity: Upload"),
        (2, "Download", "File Hosting Activity: Download"),
    ],
};

pub const ACTIVITY_OTHER: i64 = 99;

/// What an activity is: a class activity id, or 99 Other with a source-specific name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activity<'a> {
    Id(i64),
    Other(&'a str),
}

pub const STATUS_SUCCESS: i64 = 1;
pub const STATUS_FAILURE: i64 = 2;

pub fn status_caption(status_id: i64) -> &'static str {
    match status_id {
        1 => "Success",
        2 => "Failure",
        99 => "Other",
        _ => "Unknown",
    }
}

/// Severity is informational for every session-audit event: none of the sources rates them.
const SEVERITY_INFORMATIONAL: i64 = 1;

/// Who produced an event (`metadata.product`), per input system. Stable strings: the correlate
/// transform keys sessions on them.
pub fn default_product(system: InputSystem) -> (&'static str, &'static str) {
    match system {
        InputSystem::WindowsSession => ("Microsoft Windows", "Microsoft"),
        InputSystem::SsmCloudtrail | InputSystem::SsmSessionStream | InputSystem::SsmTranscript => {
            ("AWS Systems Manager Session Manager", "AWS")
        }
        InputSystem::Wsb => ("Amazon WorkSpaces Secure Browser", "AWS"),
        InputSystem::Parsec => ("Parsec for Teams", "Parsec"),
        // Never used: `auto` is resolved before mapping.
        InputSystem::Auto => ("unknown", "unknown"),
    }
}

/// Settings every mapping reads.
#[derive(Clone)]
pub struct MapContext {
    pub version: OcsfVersion,
    /// `metadata.product` per input system as JSON text, built once (overrides applied).
    products: Vec<(InputSystem, String)>,
    /// For `auto`, which is resolved before mapping (never used).
    unknown_product: String,
    /// When the record was received (epoch ms): the time of last resort for records that
    /// carry none (plain transcript text).
    pub received_at_ms: i64,
    headers: EventHeaders,
}

impl MapContext {
    pub fn new(version: OcsfVersion, overrides: super::ProductOverrides) -> Self {
        let products = [
            InputSystem::WindowsSession,
            InputSystem::SsmCloudtrail,
            InputSystem::SsmSessionStream,
            InputSystem::SsmTranscript,
            InputSystem::Wsb,
            InputSystem::Parsec,
        ]
        .into_iter()
        .map(|s| (s, product_json(s, overrides.get(s))))
        .collect();
        MapContext {
            version,
            products,
            unknown_product: product_json(InputSystem::Auto, None),
            received_at_ms: 0,
            headers: EventHeaders::new(),
        }
    }

    fn product(&self, system: InputSystem) -> &str {
        self.products
            .iter()
            .find(|(s, _)| *s == system)
            .map_or(&self.unknown_product, |(_, p)| p)
    }

    /// The skeleton of every event: class, activity, captions, type, time, severity, metadata.
    pub fn event<'a>(
        &'a self,
        system: InputSystem,
        class: Class,
        activity: Activity<'a>,
        time_ms: i64,
    ) -> OcsfEvent<'a> {
        let info = class.info();
        let known = match activity {
            Activity::Id(id) => info.activities.iter().find(|(a, _, _)| *a == id),
            Activity::Other(_) => None,
        };
        let (activity_id, activity_name) = match (activity, known) {
            (_, Some((id, name, _))) => (*id, *name),
            (Activity::Id(id), None) => (id, "Unknown"),
            (Activity::Other(name), None) => (ACTIVITY_OTHER, name),
        };
        // The class and activity members are the same text for every event of one type:
        // written once per type (see `EventHeaders`), not sorted and escaped per event.
        let header = match known {
            Some(_) => Cow::Borrowed(self.headers.get(info.uid * 100 + activity_id)),
            None => Cow::Owned(header_text(info, activity_id, activity_name)),
        };
        let mut e = OcsfEvent::with_header(header, 40);
        e.put("time", time_ms);
        e.put("metadata.version", self.version.as_str());
        // Written whole: no mapping writes inside `metadata.product`.
        e.put_json_text("metadata.product", self.product(system));
        e
    }
}

fn product_json(system: InputSystem, over: Option<&ProductOverride>) -> String {
    let mut text = String::new();
    sessiontrail_core::json_write::write_object(&mut text, &product_object(system, over));
    text
}

fn product_object(system: InputSystem, over: Option<&ProductOverride>) -> Object {
    let (name, vendor) = default_product(system);
    let mut p = Object::new();
    p.insert(
        "name".into(),
        over.and_then(|o| o.name.clone())
            .unwrap_or_else(|| name.to_string())
            .into(),
    );
    // OCSF 1.3.0 requires vendor_name; it is always set.
    p.insert(
        "vendor_name".into(),
        over.and_then(|o| o.vendor_name.clone())
            .unwrap_or_else(|| vendor.to_string())
            .into(),
    );
    if let Some(v) = over.and_then(|o| o.version.clone()) {
        p.insert("version".into(), v.into());
    }
    if let Some(u) = over.and_then(|o| o.uid.clone()) {
        p.insert("uid".into(), u.into());
    }
    p
}

/// The members every event of one type shares, as JSON member text (`"class_uid":3002,...`):
/// class, category, activity, type and severity, for every known activity of every class.
#[derive(Clone)]
struct EventHeaders {
    /// (type_uid, members), sorted by type_uid.
    by_type: Vec<(i64, String)>,
}

impl EventHeaders {
    fn new() -> Self {
        let mut by_type: Vec<(i64, String)> = Class::ALL
            .iter()
            .flat_map(|c| {
                let info = c.info();
                info.activities
                    .iter()
                    .map(move |(id, name, _)| (info.uid * 100 + id, header_text(info, *id, name)))
            })
            .collect();
        by_type.sort_by_key(|(type_uid, _)| *type_uid);
        EventHeaders { by_type }
    }

    /// The members of a known activity's events (empty for an unknown type_uid: callers
    /// only ask for the types the class tables list).
    fn get(&self, type_uid: i64) -> &str {
        self.by_type
            .binary_search_by_key(&type_uid, |(t, _)| *t)
            .map_or("", |i| &self.by_type[i].1)
    }
}

/// The class, category, activity, type and severity members of an event, as JSON member text.
fn header_text(info: &ClassInfo, activity_id: i64, activity_name: &str) -> String {
    let type_name = info
        .activities
        .iter()
        .find(|(id, _, _)| *id == activity_id)
        .map_or_else(
            || format!("{}: {}", info.name, activity_name),
            |(_, _, t)| (*t).to_string(),
        );
    let mut w = JsonObjectWriter::with_capacity(256);
    w.integer("class_uid", info.uid)
        .string("class_name", info.name)
        .integer("category_uid", info.category_uid)
        .string("category_name", info.category_name)
        .integer("activity_id", activity_id)
        .string("activity_name", activity_name)
        .integer("type_uid", info.uid * 100 + activity_id)
        .string("type_name", &type_name)
        .integer("severity_id", SEVERITY_INFORMATIONAL)
        .string("severity", "Informational");
    let text = w.finish();
    let object = text.as_str();
    // Without the braces: members to write into an open object.
    object[1..object.len() - 1].to_string()
}

/// The two attributes a host name can go to in one object: `hostname`, or `name` when OCSF
/// 1.3.0 refuses the value as a hostname (see [`MapContext::put_hostname`]).
#[derive(Debug, Clone, Copy)]
pub struct HostPaths {
    pub hostname: &'static str,
    pub name: &'static str,
}

pub const DST_ENDPOINT_HOST: HostPaths = HostPaths {
    hostname: "dst_endpoint.hostname",
    name: "dst_endpoint.name",
};
pub const SRC_ENDPOINT_HOST: HostPaths = HostPaths {
    hostname: "src_endpoint.hostname",
    name: "src_endpoint.name",
};
pub const DEVICE_HOST: HostPaths = HostPaths {
    hostname: "device.hostname",
    name: "device.name",
};

impl MapContext {
    /// Sets `<object>.hostname`, or `<object>.name` in OCSF 1.3.0 when the value is not a DNS
    /// hostname (1.3.0's `hostname_t` has a pattern; a Windows computer name such as
    /// "山田のPC" does not match it; 1.8.0 accepts any string).
    pub fn put_hostname<'a>(&self, e: &mut OcsfEvent<'a>, object: HostPaths, host: &'a str) {
        let path = if self.version == OcsfVersion::V1_3_0 && !is_dns_hostname(host) {
            object.name
        } else {
            object.hostname
        };
        e.put(path, host);
    }
}

/// OCSF 1.3.0 `hostname_t`: dot-separated labels of ASCII letters, digits and inner hyphens.
pub fn is_dns_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

pub fn set_status(e: &mut OcsfEvent<'_>, status_id: i64) {
    e.put("status_id", status_id);
    e.put("status", status_caption(status_id));
}

/// Adds a profile to `metadata.profiles` (an attribute a profile adds is only valid when the
/// profile is declared).
pub fn add_profile(e: &mut OcsfEvent<'_>, profile: &'static str) {
    if !e.profiles.contains(&profile) {
        e.profiles.push(profile);
    }
}

/// Inserts `value` at `a.b.c` inside `e` (see [`OcsfEvent::put`]).
pub fn put<'a>(e: &mut OcsfEvent<'a>, path: &'static str, value: impl Into<Field<'a>>) {
    e.put(path, value);
}

/// Inserts an optional string.
pub fn put_opt<'a>(e: &mut OcsfEvent<'a>, path: &'static str, value: Option<&'a str>) {
    if let Some(v) = value {
        e.put(path, v);
    }
}

// ---------------------------------------------------------------------------------------------
// The OCSF event being built.

/// A value of an OCSF event: borrowed from the source record where it can be.
#[derive(Debug, Clone)]
pub enum Field<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Bool(bool),
    /// Numbers, arrays and objects written whole.
    Json(Cow<'a, Value>),
    /// A value of the source record, split into members when it is an object.
    Source(&'a BorrowedValue<'a>),
    /// JSON text written as it is: a value without `null`s or empty objects.
    Text(&'a str),
}

impl<'a> From<&'a str> for Field<'a> {
    fn from(s: &'a str) -> Self {
        Field::Str(Cow::Borrowed(s))
    }
}
impl From<String> for Field<'_> {
    fn from(s: String) -> Self {
        Field::Str(Cow::Owned(s))
    }
}
impl From<i64> for Field<'_> {
    fn from(n: i64) -> Self {
        Field::Int(n)
    }
}
impl From<i32> for Field<'_> {
    fn from(n: i32) -> Self {
        Field::Int(n.into())
    }
}
impl From<bool> for Field<'_> {
    fn from(b: bool) -> Self {
        Field::Bool(b)
    }
}
impl From<Value> for Field<'_> {
    fn from(v: Value) -> Self {
        match v {
            Value::String(s) => Field::Str(Cow::Owned(s)),
            Value::Bool(b) => Field::Bool(b),
            other => Field::Json(Cow::Owned(other)),
        }
    }
}
impl<'a> From<&'a Value> for Field<'a> {
    fn from(v: &'a Value) -> Self {
        match v {
            Value::String(s) => Field::Str(Cow::Borrowed(s)),
            Value::Bool(b) => Field::Bool(*b),
            other => Field::Json(Cow::Borrowed(other)),
        }
    }
}
impl<'a> From<&'a BorrowedValue<'a>> for Field<'a> {
    fn from(v: &'a BorrowedValue<'a>) -> Self {
        match v {
            BorrowedValue::String(s) => Field::Str(Cow::Borrowed(s.as_str())),
            BorrowedValue::Bool(b) => Field::Bool(*b),
            other => Field::Source(other),
        }
    }
}
impl From<serde_json::Number> for Field<'_> {
    fn from(n: serde_json::Number) -> Self {
        Field::Json(Cow::Owned(Value::Number(n)))
    }
}

/// An OCSF event under construction: a flat list of (dotted path, value) pairs, written out as
/// nested JSON text once. Building a `Value` tree per event (a map node and a key allocation
/// per member, a walk per `a.b.c` insert) and serializing it again in the sink was most of the
/// transform's cost; the pairs borrow the source record's strings instead of copying them.
#[derive(Debug, Default)]
pub struct OcsfEvent<'a> {
    /// Top-level members written first, as JSON member text; no entry sets these paths.
    header: Cow<'a, str>,
    entries: Vec<(Cow<'static, str>, Field<'a>)>,
    /// `metadata.profiles`, in the order they were added.
    profiles: Vec<&'static str>,
}

impl<'a> OcsfEvent<'a> {
    /// An event whose first members are `header` (JSON member text, `"a":1,"b":"x"`) that no
    /// later `put` writes into.
    pub fn with_header(header: Cow<'a, str>, n: usize) -> Self {
        OcsfEvent {
            header,
            entries: Vec::with_capacity(n),
            profiles: Vec::new(),
        }
    }

    /// Sets `a.b.c` as inserting into a JSON tree would: a later value for the same path
    /// replaces an earlier one, an object value is merged member by member (so `put("user",
    /// {...})` and `put("user.uid", ...)` combine), `null`s are dropped (OCSF forbids them) and
    /// so are empty objects.
    pub fn put(&mut self, path: impl Into<Cow<'static, str>>, value: impl Into<Field<'a>>) {
        let path = path.into();
        match value.into() {
            Field::Json(Cow::Owned(Value::Null)) | Field::Json(Cow::Borrowed(Value::Null)) => {}
            Field::Json(Cow::Owned(Value::Object(members))) => {
                for (k, v) in members {
                    self.put([path.as_ref(), ".", k.as_str()].concat(), v);
                }
            }
            Field::Json(Cow::Borrowed(Value::Object(members))) => {
                for (k, v) in members {
                    self.put([path.as_ref(), ".", k.as_str()].concat(), v);
                }
            }
            Field::Json(Cow::Owned(mut v)) => {
                if !strip_nulls(&mut v) {
                    self.entries.push((path, Field::Json(Cow::Owned(v))));
                }
            }
            Field::Json(Cow::Borrowed(v)) => {
                if has_null(v) {
                    self.put(path, v.clone());
                } else {
                    self.entries.push((path, Field::Json(Cow::Borrowed(v))));
                }
            }
            Field::Source(BorrowedValue::Null) => {}
            Field::Source(BorrowedValue::Object(members)) => {
                for (k, v) in members.iter() {
                    self.put([path.as_ref(), ".", k.as_str()].concat(), v);
                }
            }
            Field::Source(v) if v.is_clean() => self.entries.push((path, Field::Text(v.raw()))),
            Field::Source(v) => self.put(path, v.to_value()),
            field => self.entries.push((path, field)),
        }
    }

    /// Sets `path` to JSON text nothing else is written into (an object is not split into
    /// members). The text must hold no `null` and no empty object.
    pub fn put_json_text(&mut self, path: &'static str, json: &'a str) {
        self.entries.push((Cow::Borrowed(path), Field::Text(json)));
    }

    /// Writes the event as nested JSON members into `w` (an open object).
    pub fn write(mut self, w: &mut JsonObjectWriter) {
        if !self.header.is_empty() {
            w.raw_members(&self.header);
        }
        if !self.profiles.is_empty() {
            let list = self.profiles.iter().map(|p| Value::from(*p)).collect();
            self.entries.push((
                Cow::Borrowed("metadata.profiles"),
                Field::Json(Cow::Owned(Value::Array(list))),
            ));
        }
        let entries = &self.entries;
        // Sorted by path; of equal paths the one set last is last.
        let mut order: Vec<(u128, usize)> = entries
            .iter()
            .enumerate()
            .map(|(i, (path, _))| (order_key(path), i))
            .collect();
        insertion_sort(&mut order, |a, b| {
            a.0 < b.0 || (a.0 == b.0 && path_order(&entries[a.1].0, &entries[b.1].0).is_lt())
        });
        // The dotted path of the objects currently open ("" at the top level).
        let mut open = "";
        for (n, &(_, i)) in order.iter().enumerate() {
            let (path, field) = &entries[i];
            if let Some((next, _)) = order.get(n + 1).map(|&(_, j)| &entries[j]) {
                // Replaced by a later value for the same path, or by members written inside
                // it (a leaf then an object at the same place: the object wins).
                if next == path || is_inside(next, path) {
                    continue;
                }
            }
            let (parents, leaf) = match path.bytes().rposition(|b| b == b'.') {
                Some(dot) => (&path[..dot], segment_key(path, dot + 1..path.len())),
                None => ("", segment_key(path, 0..path.len())),
            };
            // Most entries sit in the object the previous one did. Otherwise close the open
            // objects this path does not share and open the rest.
            if parents != open {
                let shared = shared_segments(open, parents);
                for _ in 0..segment_count(open) - segment_count(&open[..shared]) {
                    w.end_object();
                }
                let rest = parents[shared..].trim_start_matches('.');
                if !rest.is_empty() {
                    let mut start = parents.len() - rest.len();
                    for seg in rest.split('.') {
                        w.begin_object(segment_key(path, start..start + seg.len()));
                        start += seg.len() + 1;
                    }
                }
                open = parents;
            }
            match field {
                Field::Str(s) => w.string(leaf, s),
                Field::Int(n) => w.integer(leaf, *n),
                Field::Bool(b) => w.boolean(leaf, *b),
                Field::Json(v) => w.value(leaf, v),
                Field::Text(json) => w.raw(leaf, json),
                Field::Source(v) => w.raw(leaf, v.raw()),
            };
        }
        for _ in 0..segment_count(open) {
            w.end_object();
        }
    }
}

/// The key for the part `range` of `path`. A path written in the mappings is made of attribute
/// names, which need no escaping; a built one (`put` of an object) may hold any source key.
// `&Cow`, not `&str`: which variant it is (a path in the program's text or a built one) decides.
#[allow(clippy::ptr_arg)]
fn segment_key<'p>(path: &'p Cow<'static, str>, range: std::ops::Range<usize>) -> Key<'p> {
    match path {
        Cow::Borrowed(p) => Key::plain(&p[range]),
        Cow::Owned(p) => Key::from(&p[range]),
    }
}

/// The length of the longest prefix of whole segments `a` and `b` share (`a.b` and `a.bc`
/// share `a`: 1).
fn shared_segments(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut shared = 0;
    let mut i = 0;
    while i < a.len() && i < b.len() && a[i] == b[i] {
        if a[i] == b'.' {
            shared = i;
        }
        i += 1;
    }
    let ends_segment = |s: &[u8]| s.get(i).is_none_or(|c| *c == b'.');
    if ends_segment(a) && ends_segment(b) {
        shared = i;
    }
    shared
}

/// Segments of a dotted path (`""`: 0, `a.b`: 2).
fn segment_count(path: &str) -> usize {
    if path.is_empty() {
        0
    } else {
        1 + path.bytes().filter(|b| *b == b'.').count()
    }
}

/// Sorts `items` stably by `less`. An event has a few dozen entries: a plain insertion sort
/// on their order keys does a fraction of the work of the general-purpose sorts here.
fn insertion_sort<T: Copy>(items: &mut [T], less: impl Fn(&T, &T) -> bool) {
    for i in 1..items.len() {
        let item = items[i];
        let mut j = i;
        while j > 0 && less(&item, &items[j - 1]) {
            items[j] = items[j - 1];
            j -= 1;
        }
        items[j] = item;
    }
}

/// Orders dotted paths segment by segment (`a` < `a.b` < `a_c`), which keeps the members of
/// one object next to each other and orders keys as JSON maps do.
fn path_order(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len().min(b.len());
    match a[..n].iter().zip(&b[..n]).position(|(x, y)| x != y) {
        Some(i) => {
            let key = |c: u8| if c == b'.' { 0 } else { c };
            key(a[i]).cmp(&key(b[i]))
        }
        None => a.len().cmp(&b.len()),
    }
}

/// The first 16 bytes of a path as a number that orders as [`path_order`] does (`.` below
/// every other byte, a shorter path first): it never contradicts `path_order`, and only paths
/// sharing their first 16 bytes tie.
fn order_key(path: &str) -> u128 {
    let mut key = [0u8; 16];
    for (slot, b) in key.iter_mut().zip(path.bytes()) {
        *slot = if b == b'.' { 0 } else { b };
    }
    u128::from_be_bytes(key)
}

/// `inner` is a member path below `outer` (`a.b.c` is inside `a.b`).
fn is_inside(inner: &str, outer: &str) -> bool {
    inner.len() > outer.len() && inner.starts_with(outer) && inner.as_bytes()[outer.len()] == b'.'
}

fn has_null(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.iter().any(has_null),
        Value::Object(m) => m.is_empty() || m.values().any(has_null),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Reading source fields.

/// The source members a mapping took, by identity: (the member's value, whole). `whole` false:
/// only members inside it were taken. Matched by address, not by path: writing the leftovers
/// compares pointers instead of strings, and a key holding a dot (`"a.b"`) is never mistaken
/// for the path `a.b`.
pub type Taken<'a> = Vec<(&'a BorrowedValue<'a>, bool)>;

/// Objects on the way to a value that a [`Reader`] marks taken in part (the mappings read at
/// most four levels down). A deeper path would leave the objects below this depth unmarked:
/// they would be copied to `unmapped` whole, taken member included (duplicated, not lost).
const MAX_TAKEN_DEPTH: usize = 8;

/// A value a [`Reader`] found, and the objects on the way to it (outermost first).
struct Found<'a> {
    value: &'a BorrowedValue<'a>,
    parents: [Option<&'a BorrowedValue<'a>>; MAX_TAKEN_DEPTH],
}

/// `a.b.c` -> (`a`, Some(`b.c`)); `a` -> (`a`, None).
fn split_segment(path: &str) -> (&str, Option<&str>) {
    match path.bytes().position(|b| b == b'.') {
        Some(dot) => (&path[..dot], Some(&path[dot + 1..])),
        None => (path, None),
    }
}

/// Reads fields of a source object (or of one nested object, `prefix`) and remembers which
/// members a mapping took, so the rest can go to `unmapped`.
pub struct Reader<'a> {
    src: &'a BorrowedObject<'a>,
    prefix: &'static str,
    taken: Taken<'a>,
}

impl<'a> Reader<'a> {
    pub fn new(src: &'a BorrowedObject<'a>) -> Self {
        Reader {
            src,
            prefix: "",
            taken: Vec::with_capacity(24),
        }
    }

    /// A reader of the object `member` (the value of the record's member `prefix`, e.g.
    /// `"detail"`): what it takes is inside that member, which is so taken in part.
    pub fn nested(member: &'a BorrowedValue<'a>, prefix: &'static str) -> Option<Self> {
        let src = member.as_object()?;
        let mut taken = Vec::with_capacity(24);
        taken.push((member, false));
        Some(Reader { src, prefix, taken })
    }

    /// The value at `path` (dotted; a numeric segment indexes an array) and the objects on
    /// the way to it.
    fn find(&self, path: &str) -> Option<Found<'a>> {
        let mut parents = [None; MAX_TAKEN_DEPTH];
        let (first, mut rest) = split_segment(path);
        let mut cur = self.src.get(first)?;
        let mut depth = 0;
        while let Some(after) = rest {
            let (segment, next) = split_segment(after);
            cur = match cur {
                BorrowedValue::Object(o) => {
                    if let Some(slot) = parents.get_mut(depth) {
                        *slot = Some(cur);
                        depth += 1;
                    }
                    o.get(segment)?
                }
                // Inside an array nothing is marked: arrays are kept whole.
                BorrowedValue::Array(a) => a.get(segment.parse::<usize>().ok()?)?,
                _ => return None,
            };
            rest = next;
        }
        Some(Found {
            value: cur,
            parents,
        })
    }

    /// Marks a found member taken (it does not go to `unmapped`), and the objects on the way
    /// to it taken in part.
    fn take(&mut self, found: &Found<'a>) -> &'a BorrowedValue<'a> {
        for parent in found.parents.iter().map_while(|p| *p) {
            self.taken.push((parent, false));
        }
        self.taken.push((found.value, true));
        found.value
    }

    /// The value at `path`, `None` when absent or `null` (not marked used).
    pub fn peek(&self, path: &str) -> Option<&'a BorrowedValue<'a>> {
        self.find(path).map(|f| f.value).filter(|v| !v.is_null())
    }

    /// Marks the member at `path` taken, as reading it does.
    pub fn mark(&mut self, path: &'static str) {
        if let Some(found) = self.find(path) {
            self.take(&found);
        }
    }

    /// Forgets what was taken: everything read so far goes to `unmapped` after all.
    pub fn untake_all(&mut self) {
        // A nested reader's own member stays taken in part (see `nested`).
        self.taken.truncate(usize::from(!self.prefix.is_empty()));
    }

    fn full(&self, path: &str) -> String {
        if self.prefix.is_empty() {
            path.to_string()
        } else {
            format!("{}.{path}", self.prefix)
        }
    }

    /// A required string: absent -> `missing_field`, `null` or another type -> `wrong_type`,
    /// empty -> `missing_field`.
    pub fn req_str(&mut self, path: &'static str) -> Result<&'a str, MapError> {
        let Some(found) = self.find(path) else {
            return Err(MapError::missing(&self.full(path)));
        };
        match found.value {
            BorrowedValue::String(s) if s.is_empty() => Err(MapError::missing(&self.full(path))),
            BorrowedValue::String(s) => {
                self.take(&found);
                Ok(s.as_str())
            }
            other => Err(MapError::wrong_type(&self.full(path), "a string", other)),
        }
    }

    /// A required object (not marked used: its members are consumed one by one).
    pub fn req_obj(&mut self, path: &'static str) -> Result<&'a BorrowedObject<'a>, MapError> {
        match self.find(path).map(|f| f.value) {
            None => Err(MapError::missing(&self.full(path))),
            Some(BorrowedValue::Object(m)) => Ok(m),
            Some(other) => Err(MapError::wrong_type(&self.full(path), "an object", other)),
        }
    }

    /// An optional string: used when it is a non-empty string; anything else stays where it
    /// is and so ends up in `unmapped`.
    pub fn str(&mut self, path: &'static str) -> Option<&'a str> {
        let found = self.find(path)?;
        match found.value {
            BorrowedValue::String(s) if !s.is_empty() => {
                self.take(&found);
                Some(s.as_str())
            }
            _ => None,
        }
    }

    /// An optional string that must be a string when present (`wrong_type` otherwise).
    pub fn opt_str_strict(&mut self, path: &'static str) -> Result<Option<&'a str>, MapError> {
        let Some(found) = self.find(path) else {
            return Ok(None);
        };
        match found.value {
            BorrowedValue::Null => Ok(None),
            BorrowedValue::String(s) if s.is_empty() => Ok(None),
            BorrowedValue::String(s) => {
                self.take(&found);
                Ok(Some(s.as_str()))
            }
            other => Err(MapError::wrong_type(&self.full(path), "a string", other)),
        }
    }

    pub fn i64(&mut self, path: &'static str) -> Option<i64> {
        let found = self.find(path)?;
        let v = found.value.as_i64()?;
        self.take(&found);
        Some(v)
    }

    /// A number, as the JSON text it was written as.
    pub fn number(&mut self, path: &'static str) -> Option<&'a BorrowedValue<'a>> {
        let found = self.find(path)?;
        match found.value {
            BorrowedValue::Number(_) => Some(self.take(&found)),
            _ => None,
        }
    }

    pub fn bool(&mut self, path: &'static str) -> Option<bool> {
        let found = self.find(path)?;
        let v = found.value.as_bool()?;
        self.take(&found);
        Some(v)
    }

    /// An RFC 3339 timestamp (or the Windows PowerShell 5.1 `/Date(ms)/` form when
    /// `legacy_windows`), as epoch milliseconds.
    pub fn req_time(
        &mut self,
        path: &'static str,
        legacy_windows: bool,
    ) -> Result<(i64, &'a str), MapError> {
        let s = self.req_str(path)?;
        let ms = parse_timestamp_ms(s, legacy_windows).ok_or_else(|| {
            MapError::invalid_timestamp(&self.full(path), "an RFC 3339 timestamp")
        })?;
        Ok((ms, s))
    }

    pub fn taken(self) -> Taken<'a> {
        self.taken
    }
}

// ---------------------------------------------------------------------------------------------
// Time.

/// Earliest and latest accepted instants (epoch ms): years 1970 and 9999. Anything outside is
/// a producer bug, not an audit event.
const MIN_TIME_MS: i64 = 0;
const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// RFC 3339 (any offset, any fraction) -> epoch ms. With `legacy_windows`, also the form
/// Windows PowerShell 5.1's `ConvertTo-Json` writes for dates, `/Date(1741612800121)/`
/// (optionally with a `+hhmm` suffix, which does not change the instant: the number is UTC).
pub fn parse_timestamp_ms(s: &str, legacy_windows: bool) -> Option<i64> {
    if legacy_windows {
        if let Some(ms) = parse_ms_date(s) {
            return Some(ms);
        }
    }
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    let ms = t.timestamp_millis();
    (MIN_TIME_MS..=MAX_TIME_MS).contains(&ms).then_some(ms)
}

fn parse_ms_date(s: &str) -> Option<i64> {
    let inner = s.strip_prefix("/Date(")?.strip_suffix(")/")?;
    let digits_end = inner
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-')))
        .map_or(inner.len(), |(i, _)| i);
    let (num, rest) = inner.split_at(digits_end);
    let offset_ok = rest.is_empty()
        || (rest.len() == 5
            && (rest.starts_with('+') || rest.starts_with('-'))
            && rest[1..].bytes().all(|b| b.is_ascii_digit()));
    if !offset_ok {
        return None;
    }
    let ms: i64 = num.parse().ok()?;
    (MIN_TIME_MS..=MAX_TIME_MS).contains(&ms).then_some(ms)
}

/// Epoch milliseconds given as a JSON number (WorkSpaces Secure Browser `time`).
pub fn epoch_ms(v: &BorrowedValue<'_>) -> Option<i64> {
    let ms = v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && f.fract() == 0.0)
            .map(|f| f as i64)
    })?;
    (MIN_TIME_MS..=MAX_TIME_MS).contains(&ms).then_some(ms)
}

// ---------------------------------------------------------------------------------------------
// Helpers for common objects.

/// Where an `os` object's members go (`src_endpoint.os`, `dst_endpoint.os`).
#[derive(Debug, Clone, Copy)]
pub struct OsPaths {
    pub name: &'static str,
    pub type_id: &'static str,
    pub type_name: &'static str,
    pub version: &'static str,
}

pub const SRC_ENDPOINT_OS: OsPaths = OsPaths {
    name: "src_endpoint.os.name",
    type_id: "src_endpoint.os.type_id",
    type_name: "src_endpoint.os.type",
    version: "src_endpoint.os.version",
};
pub const DST_ENDPOINT_OS: OsPaths = OsPaths {
    name: "dst_endpoint.os.name",
    type_id: "dst_endpoint.os.type_id",
    type_name: "dst_endpoint.os.type",
    version: "dst_endpoint.os.version",
};

/// An OCSF `os` object from a free-text OS name (`type_id` values from the OCSF `os` object).
pub fn put_os<'a>(e: &mut OcsfEvent<'a>, os: OsPaths, name: &'a str, version: Option<&'a str>) {
    let lower = name.to_ascii_lowercase();
    let (type_id, caption) = if lower.contains("windows") || lower == "win" {
        (100, "Windows")
    } else if lower.contains("android") {
        (201, "Android")
    } else if lower.contains("linux") {
        (200, "Linux")
    } else if lower.contains("ipados") {
        (302, "iPadOS")
    } else if lower.contains("ios") && !lower.contains("macos") {
        (301, "iOS")
    } else if lower.contains("mac") || lower.contains("darwin") {
        (300, "macOS")
    } else {
        (99, "Other")
    };
    e.put(os.name, name);
    e.put(os.type_id, type_id);
    e.put(os.type_name, caption);
    if let Some(v) = version {
        e.put(os.version, v);
    }
}

/// Where a user object's members go (`user`, `actor.user`): whole static paths, so setting
/// them builds no object and no path.
#[derive(Debug, Clone, Copy)]
pub struct UserPaths {
    pub name: &'static str,
    pub email_addr: &'static str,
    pub uid: &'static str,
}

pub const USER: UserPaths = UserPaths {
    name: "user.name",
    email_addr: "user.email_addr",
    uid: "user.uid",
};
pub const ACTOR_USER: UserPaths = UserPaths {
    name: "actor.user.name",
    email_addr: "actor.user.email_addr",
    uid: "actor.user.uid",
};

/// A user's name, also as the e-mail address when it looks like one.
pub fn put_user_name<'a>(e: &mut OcsfEvent<'a>, user: UserPaths, name: &'a str) {
    e.put(user.name, name);
    if looks_like_email(name) {
        e.put(user.email_addr, name);
    }
}

pub fn looks_like_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !s.contains(char::is_whitespace)
        }
        None => false,
    }
}

/// True for an IPv4 or IPv6 address (OCSF `ip_t` is validated by the schema's format).
pub fn is_ip(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok()
}

// ---------------------------------------------------------------------------------------------
// Clean-up.

/// Writes `unmapped`: the members of the source record no mapping used (`used`, as (prefix,
/// path) pairs), without `null`s and the objects left empty, then the mapping's own `extra`
/// members (which replace a source member of the same name). Nothing is written when nothing
/// is left. Members are copied as the text they were read as wherever they hold no `null`.
pub fn write_unmapped(
    w: &mut JsonObjectWriter,
    src: &BorrowedObject<'_>,
    taken: &[(&BorrowedValue<'_>, bool)],
    extra: &Object,
) {
    let mark = w.mark();
    w.begin_object(Key::plain("unmapped"));
    let mut wrote = write_leftovers(w, src, taken, Some(extra));
    for (k, v) in extra {
        if has_null(v) {
            let mut v = v.clone();
            if strip_nulls(&mut v) {
                continue;
            }
            w.value(k, &v);
        } else {
            w.value(k, v);
        }
        wrote = true;
    }
    if wrote {
        w.end_object();
    } else {
        w.rollback(mark);
    }
}

/// Writes the members of `obj` that are neither taken nor replaced by `replaced`. True when
/// it wrote any.
fn write_leftovers(
    w: &mut JsonObjectWriter,
    obj: &BorrowedObject<'_>,
    taken: &[(&BorrowedValue<'_>, bool)],
    replaced: Option<&Object>,
) -> bool {
    let mut wrote = false;
    for (k, v) in obj.iter() {
        if v.is_null() || replaced.is_some_and(|r| !r.is_empty() && r.contains_key(k.as_str())) {
            continue;
        }
        // Taken whole: Some(true); only members inside it: Some(false).
        let mut state = None;
        for (t, whole) in taken {
            if std::ptr::eq(*t, v) {
                state = Some(*whole);
                if *whole {
                    break;
                }
            }
        }
        if state != Some(true) {
            wrote |= write_leftover(w, Key::quoted(k.quoted()), v, taken, state.is_some());
        }
    }
    wrote
}

/// Writes one member of the leftovers (`partly_taken`: a member inside it was taken). True
/// when anything was left to write.
fn write_leftover(
    w: &mut JsonObjectWriter,
    key: Key<'_>,
    value: &BorrowedValue<'_>,
    taken: &[(&BorrowedValue<'_>, bool)],
    partly_taken: bool,
) -> bool {
    match value {
        BorrowedValue::Object(inner) if partly_taken || !inner.is_clean() => {
            let mark = w.mark();
            w.begin_object(key);
            if write_leftovers(w, inner, taken, None) {
                w.end_object();
                true
            } else {
                w.rollback(mark);
                false
            }
        }
        // Nothing inside an array is marked taken: an array is kept whole.
        v if v.is_clean() => {
            w.raw(key, v.raw());
            true
        }
        v => {
            let mut v = v.to_value();
            let removed = strip_nulls(&mut v);
            if !removed {
                w.value(key, &v);
            }
            !removed
        }
    }
}

/// Removes `null` values and the objects left empty by that (recursively, arrays included).
/// Returns true when `v` itself should be removed.
pub fn strip_nulls(v: &mut Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => {
            strip_object(m);
            m.is_empty()
        }
        Value::Array(a) => {
            a.retain_mut(|x| !strip_nulls(x));
            false
        }
        _ => false,
    }
}

pub fn strip_object(m: &mut Object) {
    m.retain(|_, x| !strip_nulls(x));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_with_seven_fraction_digits_and_offset_is_utc_ms() {
        assert_eq!(
            parse_timestamp_ms("2025-03-10T09:30:12.2973809+09:00", false),
            Some(1_741_566_612_297)
        );
    }

    #[test]
    fn legacy_powershell_date_is_epoch_ms_utc() {
        assert_eq!(
            parse_timestamp_ms("/Date(1741612800121)/", true),
            Some(1_741_612_800_121)
        );
        assert_eq!(
            parse_timestamp_ms("/Date(1741612800121+0100)/", true),
            Some(1_741_612_800_121)
        );
        assert_eq!(parse_timestamp_ms("/Date(1741612800121)/", false), None);
        assert_eq!(parse_timestamp_ms("/Date(abc)/", true), None);
    }

    #[test]
    fn impossible_dates_are_rejected() {
        assert_eq!(
            parse_timestamp_ms("2025-02-30T10:00:00.0000000+01:00", false),
            None
        );
        assert_eq!(parse_timestamp_ms("2025-03-10T25:00:00Z", false), None);
        assert_eq!(parse_timestamp_ms("yesterday 10:00", false), None);
    }

    #[test]
    fn nulls_and_emptied_objects_are_removed() {
        let mut v = serde_json::json!({"a": null, "b": {"c": null}, "d": [1, null], "e": ""});
        strip_nulls(&mut v);
        assert_eq!(v, serde_json::json!({"d": [1], "e": ""}));
    }

    /// `unmapped` of `src` once `root` paths are taken from it and `detail` paths from its
    /// member `detail` (read by a nested reader, as an EventBridge envelope is).
    fn unmapped_of(
        src: &str,
        root: &[&'static str],
        detail: &[&'static str],
        extra: Value,
    ) -> Value {
        let src = BorrowedObject::parse(src).expect("valid");
        let mut r = Reader::new(&src);
        for path in root {
            r.mark(path);
        }
        let mut taken = r.taken();
        if !detail.is_empty() {
            let member = src.get("detail").expect("a detail member");
            let mut r = Reader::nested(member, "detail").expect("an object");
            for path in detail {
                r.mark(path);
            }
            taken.extend(r.taken());
        }
        let extra = match extra {
            Value::Object(o) => o,
            _ => Object::new(),
        };
        let mut w = JsonObjectWriter::with_capacity(64);
        w.string("kept", "before");
        write_unmapped(&mut w, &src, &taken, &extra);
        let text = w.finish();
        assert!(sessiontrail_core::json::validate_strict(text.as_str().as_bytes()).is_ok());
        let mut out = text.into_object();
        assert_eq!(out.remove("kept"), Some(Value::from("before")));
        out.remove("unmapped").unwrap_or(Value::Null)
    }

    #[test]
    fn unmapped_is_what_is_left_without_nulls_and_emptied_objects() {
        let src = r#"{"detail":{"a":{"b":1,"c":2},"gone":{"x":null},"d":[1,null,{}]},
                      "x":1,"y":null,"z":"kept","w":{"in":"whole"},"a.b":"dotted key"}"#;
        assert_eq!(
            unmapped_of(
                src,
                &["x", "a.b"],
                &["a.b"],
                serde_json::json!({"z": "replaced", "n": null})
            ),
            serde_json::json!({
                "detail": {"a": {"c": 2}, "d": [1]},
                "w": {"in": "whole"},
                "a.b": "dotted key",
                "z": "replaced",
            })
        );
    }

    #[test]
    fn leftover_keys_with_escapes_keep_their_names() {
        // Copied as written (`Key::quoted`): escapes stay escapes, in nested objects too.
        let src = r#"{"q\"uote":1,"\u0041scii":{"t\tab":2,"taken":3},"x":4}"#;
        assert_eq!(
            unmapped_of(src, &["x", "Ascii.taken"], &[], Value::Null),
            serde_json::json!({"q\"uote": 1, "Ascii": {"t\tab": 2}})
        );
    }

    #[test]
    fn taken_members_are_the_members_a_path_names_never_a_dotted_key() {
        let src = r#"{"a.b":"dotted","a":{"b":1,"c":{"d":2,"e":3}},"arr":[{"x":1}]}"#;
        assert_eq!(
            unmapped_of(
                src,
                &["a.b", "a.c.d", "arr.0.x", "missing.path"],
                &[],
                Value::Null
            ),
            serde_json::json!({"a.b": "dotted", "a": {"c": {"e": 3}}, "arr": [{"x": 1}]})
        );
        assert_eq!(
            unmapped_of(src, &["a", "a.b"], &[], Value::Null),
            serde_json::json!({"a.b": "dotted", "arr": [{"x": 1}]})
        );
    }

    #[test]
    fn untaking_puts_everything_read_back_into_unmapped() {
        let src = BorrowedObject::parse(r#"{"a":1,"b":{"c":2,"d":3},"e":4}"#).expect("valid");
        let mut r = Reader::new(&src);
        r.mark("a");
        r.mark("b.c");
        r.untake_all();
        r.mark("e");
        let mut w = JsonObjectWriter::with_capacity(64);
        write_unmapped(&mut w, &src, &r.taken(), &Object::new());
        assert_eq!(
            Value::Object(w.finish().into_object())["unmapped"],
            serde_json::json!({"a": 1, "b": {"c": 2, "d": 3}})
        );
    }

    #[test]
    fn nothing_left_writes_no_unmapped_member() {
        let left = unmapped_of(
            r#"{"a":1,"b":{"c":2,"d":null}}"#,
            &["a", "b.c"],
            &[],
            Value::Null,
        );
        assert_eq!(left, Value::Null);
    }

    fn written(e: OcsfEvent<'_>) -> Value {
        let mut w = JsonObjectWriter::with_capacity(64);
        e.write(&mut w);
        let text = w.finish();
        assert!(sessiontrail_core::json::validate_strict(text.as_str().as_bytes()).is_ok());
        Value::Object(text.into_object())
    }

    #[test]
    fn an_event_is_written_as_the_tree_its_paths_describe() {
        let src = serde_json::json!({"os": {"name": "Windows", "gone": null}, "list": [1, null]});
        let mut e = OcsfEvent::default();
        e.put("b.z", 1);
        e.put("a", "x");
        e.put("b.a.c", true);
        e.put(String::from("b.a_b"), String::from("owned"));
        e.put("b.a.d", -7);
        e.put("c", &src["os"]);
        e.put("c.version", "11");
        e.put("d", src["list"].clone());
        e.put("e", Value::Null);
        e.put("f", Value::Object(Object::new()));
        add_profile(&mut e, "host");
        add_profile(&mut e, "host");
        assert_eq!(
            written(e),
            serde_json::json!({
                "a": "x",
                "b": {"a": {"c": true, "d": -7}, "a_b": "owned", "z": 1},
                "c": {"name": "Windows", "version": "11"},
                "d": [1],
                "metadata": {"profiles": ["host"]},
            })
        );
    }

    #[test]
    fn the_last_value_set_for_a_path_wins_and_members_replace_a_leaf() {
        let mut e = OcsfEvent::default();
        e.put("message", "first");
        e.put("message", "second");
        e.put("user", "a leaf");
        e.put("user.name", "anna");
        assert_eq!(
            written(e),
            serde_json::json!({"message": "second", "user": {"name": "anna"}})
        );
    }

    #[test]
    fn each_written_out_type_name_is_its_class_and_activity() {
        for info in Class::ALL.map(Class::info) {
            for (_, activity, type_name) in info.activities {
                assert_eq!(*type_name, format!("{}: {activity}", info.name));
            }
        }
    }

    #[test]
    fn paths_share_whole_segments_only() {
        assert_eq!(shared_segments("a.b", "a.c"), 1);
        assert_eq!(shared_segments("a.b", "a.bc"), 1);
        assert_eq!(shared_segments("a.b", "a.b.c"), 3);
        assert_eq!(shared_segments("ab", "a"), 0);
        assert_eq!(shared_segments("", "a"), 0);
        assert_eq!(shared_segments("a.b", "a.b"), 3);
        assert_eq!(
            (segment_count(""), segment_count("a"), segment_count("a.b")),
            (0, 1, 2)
        );
    }

    #[test]
    fn paths_sort_segment_by_segment() {
        let mut paths = vec!["a_c", "a.b", "a", "a-b", "ab.c"];
        paths.sort_by(|a, b| path_order(a, b));
        assert_eq!(paths, vec!["a", "a.b", "a-b", "a_c", "ab.c"]);
        let long = [
            "metadata.original_time.x",
            "metadata.original_time",
            "metadata.original_timex",
            "metadata.original",
            "metadata-x",
            "metadata",
        ];
        for a in long.iter().chain(&paths) {
            for b in long.iter().chain(&paths) {
                let (ka, kb) = (order_key(a), order_key(b));
                if ka != kb {
                    assert_eq!(ka.cmp(&kb), path_order(a, b), "{a} vs {b}");
                }
            }
        }
    }
}
