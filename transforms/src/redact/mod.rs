//! `type: redact` — replaces secrets in string values so that none reaches a sink.
//!
//! Every string value (or the configured `fields`) is scanned by the built-in detectors
//! ([`detectors`]) and the custom `rules`; only the secret is replaced, the context stays:
//! `mysql -u root -p[REDACTED:cli_password]`. `mode: hash` writes `<detector>:<HMAC-SHA256>`
//! instead, so equal secrets can be correlated without being revealed.
//!
//! Strings are scanned as decoded JSON (the event holds decoded values). Strings with ANSI
//! escape sequences (raw pty text) are scanned with the sequences stripped ([`text`]); bare CR
//! ends a line for the line-anchored rules. PEM private key blocks are followed across array
//! elements and across consecutive records of one session ([`pem`]).
//!
//! A record that still has its JSON text is first screened ([`screen`]): when no detector can
//! fire on any of its strings and no private key block of its session is open, it is passed on
//! as it is, neither parsed nor re-serialized. Otherwise it is parsed into a copy that is
//! walked, and the event takes the copy only if something was redacted.
//!
//! Dead letters are ordinary events: wired to `<name>.dropped`, redact scans their `raw` text
//! and `event` like any other string. `raw_base64` (a record that was not UTF-8) is decoded,
//! its UTF-8 runs are scanned and redacted, and it is re-encoded; the invalid bytes are kept.

pub mod detectors;
pub mod pem;
pub mod screen;
pub mod text;

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

use sessiontrail_core::component::{
    run_function_transform, ComponentTask, FunctionTransform, TransformContext, TransformOutput,
};
use sessiontrail_core::json::{get_path, get_path_mut};
use sessiontrail_core::json_paths::PathSet;
use sessiontrail_core::metrics::MetricsRegistry;
use sessiontrail_core::{BuildError, Event, Object, TransformConfig, Value};

use detectors::{merge, CustomRule, Scanner, Span};
use pem::{PemCursor, PemSessions};
use screen::RecordScreen;
use text::StrippedText;

/// Hex characters kept of the HMAC-SHA256 in `mode: hash` (64 bits: enough to correlate
/// equal secrets in an audit trail, too short to be a useful offline guessing oracle).
pub const HASH_HEX_LEN: usize = 16;
/// Where the HMAC key comes from when `hash_key` is not set.
pub const HASH_KEY_ENV: &str = "SESSIONTRAIL_REDACT_HASH_KEY";
/// A shorter key is rejected (RFC 2104 section 3: keys shorter than the output length weaken
/// the MAC; 16 bytes is the floor we accept, 32 random bytes are recommended).
pub const MIN_HASH_KEY_BYTES: usize = 16;
/// Metric: redactions per detector and field.
pub const REDACTIONS_METRIC: &str = "sessiontrail_redactions_total";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactConfig {
    /// Field paths to scan (dots; numeric segments index arrays). Each path's value is scanned
    /// recursively. Default: every string value of the event, in arrays and objects too.
    #[serde(default)]
    pub fields: Vec<String>,
    /// Which built-in detectors run: all by default; `except: [jwt, ...]` turns some off.
    #[serde(default)]
    pub detectors: DetectorsConfig,
    /// Custom rules `{name, pattern, replace?}`: `pattern` is a regular expression whose first
    /// capture group (or whole match) is the secret; `replace` is the mask-mode replacement
    /// (default `[REDACTED:<name>]`).
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// `mask` (default): `[REDACTED:<detector>]`; `hash`: `<detector>:<HMAC-SHA256, 16 hex>`.
    #[serde(default)]
    pub mode: Mode,
    /// HMAC key for `mode: hash` (use `${VAR}`); default: the environment variable
    /// `SESSIONTRAIL_REDACT_HASH_KEY`. At least 16 bytes.
    #[serde(default)]
    pub hash_key: Option<HashKey>,
    /// Adds `annotate_field` listing the detectors that fired on the event (never the values).
    #[serde(default)]
    pub annotate: bool,
    /// Name of the annotation field (default `redacted_by`).
    #[serde(default = "default_annotate_field")]
    pub annotate_field: String,
    /// Fields that identify a session, tried in order, for PEM blocks that continue in the next
    /// record (default: `sessionId`, `session_id`, `session.uid`, `session_detail.session_id`,
    /// `data.attempt_id`, `logStream`); without one, the event's source component.
    #[serde(default = "default_session_fields")]
    pub session_fields: Vec<String>,
}

fn default_annotate_field() -> String {
    "redacted_by".into()
}

fn default_session_fields() -> Vec<String> {
    [
        "sessionId",
        "session_id",
        "session.uid",
        "session_detail.session_id",
        "data.attempt_id",
        "logStream",
    ]
    .map(String::from)
    .to_vec()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorsConfig {
    /// Built-in detectors to turn off, by name.
    #[serde(default)]
    pub except: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Shown in replacements and metrics: lower-case letters, digits, `_`.
    pub name: String,
    /// Regular expression (Rust `regex` syntax).
    pub pattern: String,
    /// Mask-mode replacement text (default `[REDACTED:<name>]`).
    #[serde(default)]
    pub replace: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Mask,
    Hash,
}

/// The HMAC key: never printed (config dumps and debug logs show `***`).
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct HashKey(String);

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl RedactConfig {
    fn compile(&self) -> Result<Redactor, String> {
        let rules: Vec<CustomRule> = self
            .rules
            .iter()
            .map(|r| CustomRule {
                name: r.name.clone(),
                pattern: r.pattern.clone(),
                replace: r.replace.clone(),
            })
            .collect();
        let scanner = Scanner::new(&self.detectors.except, &rules)?;
        let hmac = match self.mode {
            Mode::Mask => None,
            Mode::Hash => {
                let key = match &self.hash_key {
                    Some(k) => k.0.clone(),
                    None => std::env::var(HASH_KEY_ENV).map_err(|_| {
                        format!("mode: hash needs a key: set hash_key (e.g. hash_key: \"${{REDACT_HASH_KEY}}\") or the environment variable {HASH_KEY_ENV}")
                    })?,
                };
                if key.len() < MIN_HASH_KEY_BYTES {
                    return Err(format!(
                        "hash_key is {} bytes; use at least {MIN_HASH_KEY_BYTES} (32 random bytes recommended, e.g. `openssl rand -base64 32`)",
                        key.len()
                    ));
                }
                Some(
                    Hmac::<Sha256>::new_from_slice(key.as_bytes())
                        .map_err(|e| format!("hash_key: {e}"))?,
                )
            }
        };
        for f in &self.fields {
            if f.is_empty() || f.split('.').any(str::is_empty) {
                return Err(format!(
                    "fields: \"{f}\" is not a field path (dots between non-empty names)"
                ));
            }
        }
        if self.annotate && self.annotate_field.is_empty() {
            return Err("annotate_field must not be empty".into());
        }
        Ok(Redactor {
            scanner,
            mode: self.mode,
            hmac,
        })
    }

    /// The per-event transform, without the runner (tests, benchmarks, fuzzing).
    pub fn build_transform(
        &self,
        component: &str,
        registry: Arc<MetricsRegistry>,
    ) -> Result<Redact, String> {
        let redactor = self.compile()?;
        let annotated = vec![false; redactor.scanner.detector_count()];
        let screen = RecordScreen::new(&redactor.scanner)?;
        Ok(Redact {
            redactor,
            screen,
            fields: self.fields.clone(),
            annotate: self.annotate.then(|| self.annotate_field.clone()),
            session_fields: self.session_fields.clone(),
            session_paths: PathSet::new(self.session_fields.iter().cloned()),
            pem: PemSessions::default(),
            passed_by_screen: 0,
            counters: HashMap::new(),
            registry,
            component: component.to_string(),
            fired: annotated,
        })
    }
}

#[async_trait::async_trait]
impl TransformConfig for RedactConfig {
    fn validate(&self) -> Result<(), String> {
        self.compile().map(|_| ())
    }

    async fn build(&self, cx: TransformContext) -> Result<ComponentTask, BuildError> {
        let t = self.build_transform(&cx.name, Arc::clone(&cx.shared.registry))?;
        Ok(run_function_transform(t, cx))
    }
}

/// Replaces the secrets of one string.
pub struct Redactor {
    scanner: Scanner,
    mode: Mode,
    hmac: Option<Hmac<Sha256>>,
}

impl Redactor {
    /// The redacted copy of `s`, or `None` when nothing in it is secret. `pem` is the private
    /// key cursor of the stream `s` belongs to; `fired` is told each detector that redacted.
    pub fn redact_str(
        &self,
        s: &str,
        pem: &mut PemCursor,
        fired: &mut dyn FnMut(usize),
    ) -> Option<String> {
        let stripped = StrippedText::new(s);
        let text = stripped.as_ref().map(|t| t.text.as_str()).unwrap_or(s);
        let mut spans: Vec<Span> = Vec::new();
        self.scanner.scan(text, pem, &mut spans);
        if spans.is_empty() {
            return None;
        }
        merge(&mut spans);
        if let Some(st) = &stripped {
            for span in &mut spans {
                span.range = st.original_range(span.range.clone(), s.len());
            }
        }
        let mut out = String::with_capacity(s.len() + 16 * spans.len());
        let mut at = 0;
        for span in &spans {
            out.push_str(&s[at..span.range.start]);
            self.replacement(span.detector, &s[span.range.clone()], &mut out);
            fired(span.detector);
            at = span.range.end;
        }
        out.push_str(&s[at..]);
        Some(out)
    }

    fn replacement(&self, detector: usize, secret: &str, out: &mut String) {
        let name = self.scanner.name(detector);
        match (&self.hmac, self.mode) {
            (Some(mac), Mode::Hash) => {
                let digest = mac.clone().chain_update(secret.as_bytes()).finalize();
                out.push_str(name);
                out.push(':');
                for b in digest.into_bytes().iter().take(HASH_HEX_LEN / 2) {
                    out.push(char::from(HEX[usize::from(b >> 4)]));
                    out.push(char::from(HEX[usize::from(b & 0x0f)]));
                }
            }
            _ => match self.scanner.custom_replacement(detector) {
                Some(r) => out.push_str(r),
                None => {
                    out.push_str("[REDACTED:");
                    out.push_str(name);
                    out.push(']');
                }
            },
        }
    }

    pub fn detector_name(&self, detector: usize) -> &str {
        self.scanner.name(detector)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The running transform: a [`Redactor`] plus the per-session PEM state and the metrics.
pub struct Redact {
    redactor: Redactor,
    screen: RecordScreen,
    fields: Vec<String>,
    annotate: Option<String>,
    session_fields: Vec<String>,
    /// `session_fields`, to read them from a record's text without parsing it.
    session_paths: PathSet,
    pem: PemSessions,
    /// Records the screen passed on without walking them.
    passed_by_screen: u64,
    counters: HashMap<(usize, String), Arc<AtomicU64>>,
    registry: Arc<MetricsRegistry>,
    component: String,
    /// Scratch: which detectors fired on the current event.
    fired: Vec<bool>,
}

/// What a walk over one event reports: (detector, field label) per redaction.
struct Walk<'a> {
    redactor: &'a Redactor,
    pem: &'a mut PemSessions,
    /// Known up front only when some block is open; otherwise worked out after the walk, and
    /// only if a block opened in this event (finding it costs several field look-ups).
    session: Option<u64>,
    /// Blocks opened in this event while `session` was unknown: (field path, cursor).
    opened: Vec<(String, PemCursor)>,
    hits: Vec<(usize, String)>,
    /// The field path being visited (array indices left out: the elements of one array are
    /// one stream for PEM blocks).
    path: String,
    /// The metrics label of the field being visited (the configured path, or the top-level key).
    label: String,
}

impl Walk<'_> {
    /// `key`: the name of the field holding `v` (for an array, of the field holding the array).
    fn value(&mut self, v: &mut Value, key: &str, depth: usize) {
        match v {
            Value::String(s) => self.string(s, key, depth),
            Value::Array(items) => {
                for item in items {
                    self.value(item, key, depth + 1);
                }
            }
            Value::Object(map) => {
                for (k, item) in map.iter_mut() {
                    let len = self.path.len();
                    if !self.path.is_empty() {
                        self.path.push('.');
                    }
                    self.path.push_str(k);
                    self.value(item, k, depth + 1);
                    self.path.truncate(len);
                }
            }
            _ => {}
        }
    }

    fn cursor(&self) -> PemCursor {
        match self.session {
            Some(session) => self.pem.get(stream(session, &self.path)),
            None => self
                .opened
                .iter()
                .find(|(p, _)| *p == self.path)
                .map(|(_, c)| *c)
                .unwrap_or_default(),
        }
    }

    fn keep_cursor(&mut self, cursor: PemCursor) {
        match self.session {
            Some(session) => self.pem.put(session, stream(session, &self.path), cursor),
            None => match self.opened.iter_mut().find(|(p, _)| *p == self.path) {
                Some((_, c)) => *c = cursor,
                None if cursor.inside => self.opened.push((self.path.clone(), cursor)),
                None => {}
            },
        }
    }

    fn string(&mut self, s: &mut String, key: &str, depth: usize) {
        if let Some(detector) = self.redactor.scanner.secret_field(key, s) {
            let mut whole = String::new();
            self.redactor.replacement(detector, s, &mut whole);
            *s = whole;
            self.hits.push((detector, self.label.clone()));
            return;
        }
        let mut cursor = self.cursor();
        let mut fired: Vec<usize> = Vec::new();
        // A dead letter of a record that was not UTF-8: scan the text runs of its bytes.
        let redacted = if depth == 1 && self.path == "raw_base64" {
            redact_base64(self.redactor, s, &mut cursor, &mut |d| fired.push(d))
        } else {
            self.redactor
                .redact_str(s, &mut cursor, &mut |d| fired.push(d))
        };
        self.keep_cursor(cursor);
        if let Some(new) = redacted {
            *s = new;
        }
        for d in fired {
            self.hits.push((d, self.label.clone()));
        }
    }
}

/// The PEM stream of a field path in a session: a block continues only in the same field.
fn stream(session: u64, path: &str) -> u64 {
    let mut h = DefaultHasher::new();
    session.hash(&mut h);
    path.hash(&mut h);
    h.finish()
}

/// Decodes `b64`, redacts each UTF-8 run of the bytes, re-encodes. Invalid bytes are kept as
/// they were (the dead letter keeps the original bytes, minus the secrets).
fn redact_base64(
    redactor: &Redactor,
    b64: &str,
    cursor: &mut PemCursor,
    fired: &mut dyn FnMut(usize),
) -> Option<String> {
    let engine = base64::engine::general_purpose::STANDARD;
    let bytes = engine.decode(b64.as_bytes()).ok()?;
    let mut out = Vec::with_capacity(bytes.len());
    let mut changed = false;
    for chunk in bytes.utf8_chunks() {
        match redactor.redact_str(chunk.valid(), cursor, fired) {
            Some(r) => {
                changed = true;
                out.extend_from_slice(r.as_bytes());
            }
            None => out.extend_from_slice(chunk.valid().as_bytes()),
        }
        out.extend_from_slice(chunk.invalid());
    }
    changed.then(|| engine.encode(out))
}

/// The session a record belongs to for PEM blocks: the first non-null `session_fields` value,
/// or else the component the record came from.
fn session_hash(found: Option<&Value>, source: &str) -> u64 {
    let mut h = DefaultHasher::new();
    match found {
        Some(v) => {
            0u8.hash(&mut h);
            match v {
                Value::String(s) => s.hash(&mut h),
                other => other.to_string().hash(&mut h),
            }
        }
        None => {
            1u8.hash(&mut h);
            source.hash(&mut h);
        }
    }
    h.finish()
}

impl Redact {
    fn session_of(&self, fields: &Object, source: &str) -> u64 {
        let found = self
            .session_fields
            .iter()
            .find_map(|f| get_path(fields, f).filter(|v| !v.is_null()));
        session_hash(found, source)
    }

    /// Whether a private key block is open in the session of `event` (a record without a
    /// secret word can still be a body line of a key that began in an earlier record).
    fn in_open_pem_block(&self, event: &Event) -> bool {
        if self.pem.is_empty() {
            return false;
        }
        let source = &*event.meta.source;
        let session = match event.unparsed_json_text() {
            // Reading two or three fields from the text costs less than parsing it.
            Some(text) => {
                let values = self.session_paths.extract(text);
                let found = self
                    .session_fields
                    .iter()
                    .find_map(|f| values.get(f).filter(|v| !v.is_null()));
                session_hash(found, source)
            }
            None => self.session_of(event.fields(), source),
        };
        self.pem.has_open_block(session)
    }

    /// Records the screen passed on without walking them (for tests and benchmarks).
    pub fn passed_by_screen(&self) -> u64 {
        self.passed_by_screen
    }

    /// Redacts one event; returns the (detector, field) of each redaction. An event read as
    /// JSON text keeps its text unless something was redacted.
    pub fn redact_fields(&mut self, event: &mut Event) -> Vec<(usize, String)> {
        let source = Arc::clone(&event.meta.source);
        if let Some(text) = event.json_text() {
            if !self.screen.may_change(text) && !self.in_open_pem_block(event) {
                self.passed_by_screen += 1;
                return Vec::new();
            }
            // Walk a copy: `fields_mut` would drop the text even when nothing is redacted.
            let copy = match event.unparsed_json_text() {
                Some(text) => serde_json::from_str::<Object>(text).ok(),
                None => Some(event.fields().clone()),
            };
            // A validated text always parses; if not, the event's own fields are walked.
            if let Some(mut fields) = copy {
                let hits = self.redact_object(&mut fields, &source);
                if !hits.is_empty() {
                    event.set_fields(fields);
                }
                return hits;
            }
        }
        self.redact_object(event.fields_mut(), &source)
    }

    /// Redacts `fields` in place (`source`: the event's component, its session by default).
    fn redact_object(&mut self, fields: &mut Object, source: &str) -> Vec<(usize, String)> {
        let session = (!self.pem.is_empty()).then(|| self.session_of(fields, source));
        let mut walk = Walk {
            redactor: &self.redactor,
            pem: &mut self.pem,
            session,
            opened: Vec::new(),
            hits: Vec::new(),
            path: String::new(),
            label: String::new(),
        };
        if self.fields.is_empty() {
            walk_object(&mut walk, fields);
        } else {
            for f in &self.fields {
                if let Some(v) = get_path_mut(fields, f) {
                    walk.path.clear();
                    walk.path.push_str(f);
                    walk.label.clear();
                    walk.label.push_str(f);
                    let key = f.rsplit('.').next().unwrap_or(f);
                    walk.value(v, key, f.split('.').count());
                }
            }
        }
        let Walk { hits, opened, .. } = walk;
        if !opened.is_empty() {
            let session = self.session_of(fields, source);
            for (path, cursor) in opened {
                self.pem.put(session, stream(session, &path), cursor);
            }
        }
        hits
    }

    fn count(&mut self, detector: usize, field: String) {
        let key = (detector, field);
        let counter = match self.counters.get(&key) {
            Some(c) => Arc::clone(c),
            None => {
                let c = self.registry.counter(
                    REDACTIONS_METRIC,
                    "Secrets replaced by redact transforms, by detector and field.",
                    &[
                        ("component", &self.component),
                        ("detector", self.redactor.detector_name(key.0)),
                        ("field", &key.1),
                    ],
                );
                self.counters.insert(key, Arc::clone(&c));
                c
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

fn walk_object(walk: &mut Walk<'_>, obj: &mut Object) {
    for (k, v) in obj.iter_mut() {
        walk.path.clear();
        walk.path.push_str(k);
        walk.label.clear();
        walk.label.push_str(k);
        walk.value(v, k, 1);
    }
}

impl FunctionTransform for Redact {
    fn transform(&mut self, mut event: Event, output: &mut TransformOutput) {
        let hits = self.redact_fields(&mut event);
        if !hits.is_empty() {
            self.fired.iter_mut().for_each(|f| *f = false);
            for (detector, field) in hits {
                self.fired[detector] = true;
                self.count(detector, field);
            }
            if let Some(field) = &self.annotate {
                let mut names: BTreeSet<String> = match event.fields().get(field) {
                    Some(Value::Array(a)) => a
                        .iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect(),
                    _ => BTreeSet::new(),
                };
                for (d, fired) in self.fired.iter().enumerate() {
                    if *fired {
                        names.insert(self.redactor.detector_name(d).to_string());
                    }
                }
                event.fields_mut().insert(
                    field.clone(),
                    Value::Array(names.into_iter().map(Value::String).collect()),
                );
            }
        }
        output.emit(event);
    }
}

#[cfg(test)]
mod tests;
