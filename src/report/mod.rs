//! `sessiontrail report`: who used what, how much — the "all connections in the last 30 days"
//! report, over OCSF NDJSON files written by the file or S3 sinks (plain or gzip, detected by
//! the magic bytes).
//!
//! It understands both what `correlate` writes (session results carrying
//! `unmapped.session_status`; the last result per session wins, as later ones correct earlier
//! ones) and plain OCSF starts and ends, which it pairs itself (earliest start, latest end per
//! session id and product). A start with no end is a session still open.

mod render;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use sessiontrail_core::json::get_path;
use sessiontrail_transforms::correlate::correlator::{classify, event_time, EventKind};
use sessiontrail_transforms::correlate::parse_duration_ms;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
    Html,
}

pub struct ReportOptions {
    pub inputs: Vec<PathBuf>,
    /// Sessions seen in this window before `until` are reported.
    pub since_ms: i64,
    /// End of the window (epoch ms).
    pub until_ms: i64,
    /// A session at least this long (or open this long) is listed as unusually long.
    pub long_after_ms: i64,
    pub format: Format,
}

/// Open and long session lists are capped so a report stays readable; totals are not.
const MAX_LISTED_SESSIONS: usize = 1000;

/// One session as the report sees it.
#[derive(Debug, Clone, Default)]
struct Session {
    id: String,
    source: String,
    user: Option<String>,
    resource: Option<String>,
    start: Option<i64>,
    end: Option<i64>,
    duration_ms: Option<i64>,
    /// From correlate's result, if any.
    status: Option<String>,
}

impl Session {
    fn status(&self) -> &str {
        if let Some(s) = &self.status {
            return s;
        }
        match (self.start, self.end) {
            (Some(_), Some(_)) => "complete",
            (Some(_), None) => "open",
            _ => "end_only",
        }
    }

    fn duration(&self) -> Option<i64> {
        if self.status.is_some() {
            return self.duration_ms;
        }
        match (self.start, self.end) {
            (Some(s), Some(e)) => Some(e - s),
            _ => None,
        }
    }

    fn first_seen(&self) -> Option<i64> {
        self.start.or(self.end)
    }

    fn last_seen(&self) -> Option<i64> {
        self.end.or(self.start)
    }
}

#[derive(Debug, Serialize, Default, Clone)]
pub struct Usage {
    pub name: String,
    pub sessions: u64,
    pub sessions_with_duration: u64,
    pub total_duration_s: i64,
    pub avg_duration_s: Option<f64>,
    pub max_duration_s: Option<i64>,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    pub open_sessions: u64,
    #[serde(skip)]
    total_ms: i64,
    #[serde(skip)]
    max_ms: Option<i64>,
    #[serde(skip)]
    first_ms: Option<i64>,
    #[serde(skip)]
    last_ms: Option<i64>,
}

#[derive(Debug, Serialize, Clone)]
pub struct ListedSession {
    pub session: String,
    pub source: String,
    pub user: Option<String>,
    pub resource: Option<String>,
    pub status: String,
    pub started: Option<String>,
    pub ended: Option<String>,
    pub duration_s: Option<i64>,
    /// For open sessions: time since the start at the end of the window.
    pub age_s: Option<i64>,
    #[serde(skip)]
    start_ms: Option<i64>,
    #[serde(skip)]
    end_ms: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct Totals {
    pub sessions: u64,
    pub sessions_with_duration: u64,
    pub total_duration_s: i64,
    pub open_sessions: u64,
    pub failed_attempts: u64,
    pub by_status: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub since: String,
    pub until: String,
    pub totals: Totals,
    pub users: Vec<Usage>,
    pub resources: Vec<Usage>,
    pub open_sessions: Vec<ListedSession>,
    pub long_sessions: Vec<ListedSession>,
    pub long_after_s: i64,
    /// Lines that were not JSON objects (counted, not fatal).
    pub skipped_lines: u64,
    /// Every session in the window, for the timeline and histogram of the HTML report.
    #[serde(skip)]
    sessions: Vec<ListedSession>,
}

pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Parses `--since` (a duration back from `until`).
pub fn window(since: &str, until: Option<&str>) -> Result<(i64, i64), String> {
    let until_ms = match until {
        Some(u) => chrono::DateTime::parse_from_rfc3339(u)
            .map_err(|e| format!("--until {u:?}: expected an RFC 3339 time: {e}"))?
            .timestamp_millis(),
        None => chrono::Utc::now().timestamp_millis(),
    };
    let back = parse_duration_ms(since).map_err(|e| format!("--since: {e}"))?;
    Ok((until_ms - back, until_ms))
}

/// Opens a file, decompressing when it starts with the gzip magic (several members allowed).
fn open_input(path: &Path) -> Result<Box<dyn BufRead>, String> {
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut magic = [0u8; 2];
    let n = file
        .read(&mut magic)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let head = std::io::Cursor::new(magic[..n].to_vec());
    let reader = head.chain(file);
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(
            reader,
        ))))
    } else {
        Ok(Box::new(BufReader::new(reader)))
    }
}

fn text(v: &serde_json::Map<String, Value>, path: &str) -> Option<String> {
    match get_path(v, path)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

const USER_FIELDS: &[&str] = &[
    "user.name",
    "actor.user.name",
    "user.email_addr",
    "actor.user.email_addr",
];
const RESOURCE_FIELDS: &[&str] = &[
    "dst_endpoint.uid",
    "dst_endpoint.instance_uid",
    "dst_endpoint.hostname",
    "device.hostname",
];

fn first(v: &serde_json::Map<String, Value>, paths: &[&str]) -> Option<String> {
    paths.iter().find_map(|p| text(v, p))
}

pub fn build(opts: &ReportOptions) -> Result<Report, String> {
    let mut sessions: HashMap<(String, String), Session> = HashMap::new();
    let mut failed_attempts = 0u64;
    let mut skipped = 0u64;
    for path in &opts.inputs {
        let reader = open_input(path)?;
        for line in reader.split(b'\n') {
            let line = line.map_err(|e| format!("reading {}: {e}", path.display()))?;
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let Ok(Value::Object(ev)) = serde_json::from_slice::<Value>(line) else {
                skipped += 1;
                continue;
            };
            absorb(&ev, &mut sessions, &mut failed_attempts);
        }
    }
    Ok(summarise(sessions, failed_attempts, skipped, opts))
}

fn absorb(
    ev: &serde_json::Map<String, Value>,
    sessions: &mut HashMap<(String, String), Session>,
    failed_attempts: &mut u64,
) {
    let status = text(ev, "unmapped.session_status");
    if status.as_deref() == Some("failed") {
        *failed_attempts += 1;
        return;
    }
    let kind = classify(ev);
    if status.is_none() && !matches!(kind, EventKind::Start | EventKind::End) {
        return;
    }
    let id = text(ev, "session.uid").or_else(|| text(ev, "actor.session.uid"));
    let (Some(id), Some(time)) = (id, event_time(ev)) else {
        return;
    };
    let source = text(ev, "metadata.product.name").unwrap_or_default();
    let s = sessions
        .entry((id.clone(), source.clone()))
        .or_insert_with(|| Session {
            id,
            source,
            ..Default::default()
        });
    if let Some(status) = status {
        // correlate's result: authoritative, and a later one corrects an earlier one.
        s.status = Some(status);
        s.start = get_path(ev, "start_time").and_then(Value::as_i64);
        s.end = get_path(ev, "end_time")
            .and_then(Value::as_i64)
            .or_else(|| get_path(ev, "unmapped.expired_at").and_then(Value::as_i64));
        s.duration_ms = get_path(ev, "duration").and_then(Value::as_i64);
        s.user = text(ev, "unmapped.session_user").or_else(|| first(ev, USER_FIELDS));
        s.resource = text(ev, "unmapped.session_resource").or_else(|| first(ev, RESOURCE_FIELDS));
        return;
    }
    if s.status.is_some() {
        if s.user.is_none() {
            s.user = first(ev, USER_FIELDS);
        }
        return;
    }
    match kind {
        EventKind::Start => {
            s.start = Some(s.start.map_or(time, |t| t.min(time)));
            s.user = first(ev, USER_FIELDS).or(s.user.take());
            s.resource = first(ev, RESOURCE_FIELDS).or(s.resource.take());
        }
        _ => {
            s.end = Some(s.end.map_or(time, |t| t.max(time)));
            if s.user.is_none() {
                s.user = first(ev, USER_FIELDS);
            }
            if s.resource.is_none() {
                s.resource = first(ev, RESOURCE_FIELDS);
            }
        }
    }
}

fn listed(s: &Session, until: i64) -> ListedSession {
    let open = s.status() == "open";
    ListedSession {
        session: s.id.clone(),
        source: s.source.clone(),
        user: s.user.clone(),
        resource: s.resource.clone(),
        status: s.status().to_string(),
        started: s.start.map(rfc3339),
        ended: if open { None } else { s.end.map(rfc3339) },
        duration_s: s.duration().map(|d| d / 1000),
        age_s: if open {
            s.start.map(|t| (until - t) / 1000)
        } else {
            None
        },
        start_ms: s.start,
        end_ms: if open { None } else { s.end },
    }
}

fn add_usage(u: &mut Usage, s: &Session) {
    u.sessions += 1;
    if let Some(d) = s.duration() {
        u.sessions_with_duration += 1;
        u.total_ms += d;
        u.max_ms = Some(u.max_ms.map_or(d, |m| m.max(d)));
    }
    if s.status() == "open" {
        u.open_sessions += 1;
    }
    if let Some(f) = s.first_seen() {
        u.first_ms = Some(u.first_ms.map_or(f, |m| m.min(f)));
    }
    if let Some(l) = s.last_seen() {
        u.last_ms = Some(u.last_ms.map_or(l, |m| m.max(l)));
    }
}

fn finish_usage(mut map: BTreeMap<String, Usage>) -> Vec<Usage> {
    let mut v: Vec<Usage> = map
        .iter_mut()
        .map(|(name, u)| {
            u.name = name.clone();
            u.total_duration_s = u.total_ms / 1000;
            u.avg_duration_s = (u.sessions_with_duration > 0).then(|| {
                (u.total_ms as f64 / u.sessions_with_duration as f64 / 100.0).round() / 10.0
            });
            u.max_duration_s = u.max_ms.map(|m| m / 1000);
            u.first_seen = u.first_ms.map(rfc3339);
            u.last_seen = u.last_ms.map(rfc3339);
            u.clone()
        })
        .collect();
    v.sort_by(|a, b| b.total_ms.cmp(&a.total_ms).then(a.name.cmp(&b.name)));
    v
}

fn summarise(
    sessions: HashMap<(String, String), Session>,
    failed_attempts: u64,
    skipped: u64,
    opts: &ReportOptions,
) -> Report {
    let mut users: BTreeMap<String, Usage> = BTreeMap::new();
    let mut resources: BTreeMap<String, Usage> = BTreeMap::new();
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    let mut open = Vec::new();
    let mut long = Vec::new();
    let mut all = Vec::new();
    let mut totals = Totals {
        sessions: 0,
        sessions_with_duration: 0,
        total_duration_s: 0,
        open_sessions: 0,
        failed_attempts,
        by_status: BTreeMap::new(),
    };
    let mut total_ms = 0i64;
    let mut in_window: Vec<&Session> = sessions
        .values()
        .filter(|s| {
            // In the window when any part of it is: seen after `since`, begun before `until`.
            let last = s.last_seen().unwrap_or(i64::MIN);
            let first = s.first_seen().unwrap_or(i64::MAX);
            (last >= opts.since_ms || s.status() == "open") && first <= opts.until_ms
        })
        .collect();
    in_window.sort_by(|a, b| a.first_seen().cmp(&b.first_seen()).then(a.id.cmp(&b.id)));
    for s in in_window {
        totals.sessions += 1;
        *by_status.entry(s.status().to_string()).or_default() += 1;
        if let Some(d) = s.duration() {
            totals.sessions_with_duration += 1;
            total_ms += d;
        }
        let user = s.user.clone().unwrap_or_else(|| "(unknown)".into());
        let resource = s.resource.clone().unwrap_or_else(|| "(unknown)".into());
        add_usage(users.entry(user).or_default(), s);
        add_usage(resources.entry(resource).or_default(), s);
        let l = listed(s, opts.until_ms);
        if s.status() == "open" {
            totals.open_sessions += 1;
            open.push(l.clone());
        }
        let long_enough = s.duration().is_some_and(|d| d >= opts.long_after_ms)
            || l.age_s.is_some_and(|a| a * 1000 >= opts.long_after_ms);
        if long_enough {
            long.push(l.clone());
        }
        all.push(l);
    }
    totals.total_duration_s = total_ms / 1000;
    totals.by_status = by_status;
    long.sort_by(|a, b| {
        let key = |x: &ListedSession| x.duration_s.or(x.age_s).unwrap_or(0);
        key(b).cmp(&key(a)).then(a.session.cmp(&b.session))
    });
    long.truncate(MAX_LISTED_SESSIONS);
    open.truncate(MAX_LISTED_SESSIONS);
    Report {
        since: rfc3339(opts.since_ms),
        until: rfc3339(opts.until_ms),
        totals,
        users: finish_usage(users),
        resources: finish_usage(resources),
        open_sessions: open,
        long_sessions: long,
        long_after_s: opts.long_after_ms / 1000,
        skipped_lines: skipped,
        sessions: all,
    }
}

/// Runs the report and writes it to `out`.
pub fn run(opts: &ReportOptions, out: &mut dyn std::io::Write) -> Result<(), String> {
    let report = build(opts)?;
    let text = match opts.format {
        Format::Json => serde_json::to_string_pretty(&report).map_err(|e| e.to_string())? + "\n",
        Format::Csv => render::csv(&report),
        Format::Table => render::table(&report),
        Format::Html => render::html(&report),
    };
    out.write_all(text.as_bytes())
        .map_err(|e| format!("writing the report: {e}"))
}
