//! The report's text forms: aligned tables, CSV, and one self-contained HTML file (inline CSS
//! and SVG, no scripts, nothing fetched from anywhere).

use std::fmt::Write;

use super::{ListedSession, Report, Usage};

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(|x| x.to_string()).unwrap_or_default()
}

fn hms(s: i64) -> String {
    format!("{}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60)
}

fn aligned(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c}{}", " ".repeat(widths[i] - c.chars().count())))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let _ = writeln!(
        out,
        "{}",
        line(header.iter().map(|h| h.to_string()).collect())
    );
    for r in rows {
        let _ = writeln!(out, "{}", line(r.clone()));
    }
}

fn usage_rows(v: &[Usage]) -> Vec<Vec<String>> {
    v.iter()
        .map(|u| {
            vec![
                u.name.clone(),
                u.sessions.to_string(),
                hms(u.total_duration_s),
                u.avg_duration_s.map(|a| hms(a as i64)).unwrap_or_default(),
                u.max_duration_s.map(hms).unwrap_or_default(),
                opt(&u.first_seen),
                opt(&u.last_seen),
                u.open_sessions.to_string(),
            ]
        })
        .collect()
}

const USAGE_HEADER: [&str; 8] = [
    "sessions",
    "total",
    "average",
    "longest",
    "first seen",
    "last seen",
    "open",
    "",
];

fn session_rows(v: &[ListedSession]) -> Vec<Vec<String>> {
    v.iter()
        .map(|s| {
            vec![
                s.session.clone(),
                opt(&s.user),
                opt(&s.resource),
                s.source.clone(),
                opt(&s.started),
                opt(&s.ended),
                s.duration_s.or(s.age_s).map(hms).unwrap_or_default(),
                s.status.clone(),
            ]
        })
        .collect()
}

pub fn table(r: &Report) -> String {
    let mut out = String::new();
    let t = &r.totals;
    let _ = writeln!(
        out,
        "Sessions {} .. {}: {} sessions ({} with a duration, total {}), {} still open, {} failed attempts",
        r.since,
        r.until,
        t.sessions,
        t.sessions_with_duration,
        hms(t.total_duration_s),
        t.open_sessions,
        t.failed_attempts
    );
    for (title, first, rows) in [
        ("Per user", "user", usage_rows(&r.users)),
        ("Per resource", "resource", usage_rows(&r.resources)),
    ] {
        let _ = writeln!(out, "\n{title}");
        let mut header = vec![first];
        header.extend_from_slice(&USAGE_HEADER[..7]);
        aligned(&mut out, &header, &rows);
    }
    let header = [
        "session", "user", "resource", "source", "started", "ended", "duration", "status",
    ];
    let _ = writeln!(out, "\nStill open");
    aligned(&mut out, &header, &session_rows(&r.open_sessions));
    let _ = writeln!(out, "\nUnusually long (at least {})", hms(r.long_after_s));
    aligned(&mut out, &header, &session_rows(&r.long_sessions));
    if r.skipped_lines > 0 {
        let _ = writeln!(
            out,
            "\n{} input lines were not JSON objects and were skipped",
            r.skipped_lines
        );
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One table with a `section` column: `user` and `resource` rows (usage), `open` and `long`
/// rows (one session each: `name` is the session id).
pub fn csv(r: &Report) -> String {
    let mut out = String::from("section,name,user,resource,sessions,total_duration_s,avg_duration_s,max_duration_s,first_seen,last_seen,open_sessions,status\n");
    let mut row = |cells: Vec<String>| {
        let line: Vec<String> = cells.iter().map(|c| csv_field(c)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    };
    for (section, v) in [("user", &r.users), ("resource", &r.resources)] {
        for u in v {
            row(vec![
                section.into(),
                u.name.clone(),
                if section == "user" {
                    u.name.clone()
                } else {
                    String::new()
                },
                if section == "resource" {
                    u.name.clone()
                } else {
                    String::new()
                },
                u.sessions.to_string(),
                u.total_duration_s.to_string(),
                opt(&u.avg_duration_s),
                opt(&u.max_duration_s),
                opt(&u.first_seen),
                opt(&u.last_seen),
                u.open_sessions.to_string(),
                String::new(),
            ]);
        }
    }
    for (section, v) in [("open", &r.open_sessions), ("long", &r.long_sessions)] {
        for s in v {
            let d = s.duration_s.or(s.age_s);
            row(vec![
                section.into(),
                s.session.clone(),
                opt(&s.user),
                opt(&s.resource),
                "1".into(),
                opt(&d),
                opt(&d),
                opt(&d),
                opt(&s.started),
                opt(&s.ended),
                u8::from(s.status == "open").to_string(),
                s.status.clone(),
            ]);
        }
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn html_table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    out.push_str("<table><thead><tr>");
    for h in header {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for r in rows {
        out.push_str("<tr>");
        for c in r {
            let _ = write!(out, "<td>{}</td>", esc(c));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>\n");
}

/// Sessions drawn on the timeline at most; the tables still cover every session.
const MAX_TIMELINE_SESSIONS: usize = 2000;
/// Resources (lanes) on the timeline at most: the busiest ones.
const MAX_TIMELINE_LANES: usize = 40;

fn timeline(r: &Report, until_ms: i64, since_ms: i64) -> String {
    let lanes: Vec<&str> = r
        .resources
        .iter()
        .take(MAX_TIMELINE_LANES)
        .map(|u| u.name.as_str())
        .collect();
    let (label_w, plot_w, lane_h) = (180.0, 900.0, 18.0);
    let height = 30.0 + lanes.len() as f64 * lane_h;
    let span = (until_ms - since_ms).max(1) as f64;
    let x = |t: i64| label_w + ((t.clamp(since_ms, until_ms) - since_ms) as f64 / span) * plot_w;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" viewBox=\"0 0 {w} {height}\" role=\"img\" aria-label=\"session timeline\">\n",
        w = label_w + plot_w + 10.0
    );
    let _ = writeln!(
        svg,
        "<text x=\"{label_w}\" y=\"12\" class=\"axis\">{}</text><text x=\"{}\" y=\"12\" class=\"axis\" text-anchor=\"end\">{}</text>",
        esc(&r.since),
        label_w + plot_w,
        esc(&r.until)
    );
    for (i, lane) in lanes.iter().enumerate() {
        let y = 20.0 + i as f64 * lane_h;
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" class=\"lane\" text-anchor=\"end\">{}</text><line x1=\"{label_w}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" class=\"grid\"/>",
            label_w - 6.0,
            y + 12.0,
            esc(lane),
            label_w + plot_w,
            y + lane_h,
            y + lane_h
        );
    }
    for s in r.sessions.iter().take(MAX_TIMELINE_SESSIONS) {
        let Some(lane) = lanes
            .iter()
            .position(|l| Some(*l) == s.resource.as_deref().or(Some("(unknown)")))
        else {
            continue;
        };
        let (Some(start), end) = (s.start_ms, s.end_ms) else {
            continue;
        };
        let open = s.status == "open";
        let end = end.unwrap_or(until_ms);
        let (x1, x2) = (x(start), x(end));
        let y = 22.0 + lane as f64 * lane_h;
        let _ = writeln!(
            svg,
            "<rect x=\"{x1:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"{}\" class=\"{}\"><title>{}</title></rect>",
            (x2 - x1).max(1.0),
            lane_h - 6.0,
            if open { "open" } else { "done" },
            esc(&format!(
                "{} {} on {} {} .. {}",
                s.session,
                s.user.as_deref().unwrap_or(""),
                s.resource.as_deref().unwrap_or(""),
                s.started.as_deref().unwrap_or(""),
                s.ended.as_deref().unwrap_or("open")
            ))
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Histogram bucket upper bounds in seconds, with labels.
const HISTOGRAM_BUCKETS: &[(i64, &str)] = &[
    (300, "&lt;5m"),
    (900, "5-15m"),
    (1800, "15-30m"),
    (3600, "30m-1h"),
    (7200, "1-2h"),
    (14400, "2-4h"),
    (28800, "4-8h"),
    (43200, "8-12h"),
    (86400, "12-24h"),
    (i64::MAX, "&gt;24h"),
];

fn histogram(r: &Report) -> String {
    let mut counts = vec![0u64; HISTOGRAM_BUCKETS.len()];
    for d in r.sessions.iter().filter_map(|s| s.duration_s) {
        let i = HISTOGRAM_BUCKETS
            .iter()
            .position(|(le, _)| d < *le)
            .unwrap_or(HISTOGRAM_BUCKETS.len() - 1);
        counts[i] += 1;
    }
    let max = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let (bar_w, gap, plot_h) = (60.0, 10.0, 200.0);
    let width = HISTOGRAM_BUCKETS.len() as f64 * (bar_w + gap) + 20.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" viewBox=\"0 0 {width} {}\" role=\"img\" aria-label=\"duration histogram\">\n",
        plot_h + 50.0,
        plot_h + 50.0
    );
    for (i, ((_, label), n)) in HISTOGRAM_BUCKETS.iter().zip(&counts).enumerate() {
        let h = (*n as f64 / max) * plot_h;
        let x = 10.0 + i as f64 * (bar_w + gap);
        let y = 20.0 + plot_h - h;
        let _ = writeln!(
            svg,
            "<rect x=\"{x}\" y=\"{y:.1}\" width=\"{bar_w}\" height=\"{h:.1}\" class=\"bar\"><title>{n} sessions</title></rect><text x=\"{}\" y=\"{:.1}\" text-anchor=\"middle\" class=\"count\">{n}</text><text x=\"{}\" y=\"{}\" text-anchor=\"middle\" class=\"axis\">{label}</text>",
            x + bar_w / 2.0,
            y - 4.0,
            x + bar_w / 2.0,
            plot_h + 40.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}th{background:#f0f0f0}.axis,.lane,.count{font-size:11px;fill:#444}.grid{stroke:#eee}rect.done{fill:#4a7fb5}rect.open{fill:#e08a2c}rect.bar{fill:#4a7fb5}";

pub fn html(r: &Report) -> String {
    let since_ms = chrono::DateTime::parse_from_rfc3339(&r.since)
        .map(|t| t.timestamp_millis())
        .unwrap_or(0);
    let until_ms = chrono::DateTime::parse_from_rfc3339(&r.until)
        .map(|t| t.timestamp_millis())
        .unwrap_or(0);
    let t = &r.totals;
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/><title>Sessions {} .. {}</title><style>{STYLE}</style></head><body>\n<h1>Remote sessions {} .. {}</h1>\n<p>{} sessions ({} with a duration, total {}), {} still open, {} failed attempts.</p>\n",
        esc(&r.since), esc(&r.until), esc(&r.since), esc(&r.until),
        t.sessions, t.sessions_with_duration, hms(t.total_duration_s), t.open_sessions, t.failed_attempts
    );
    let _ = writeln!(out, "<h2>Timeline by resource</h2>");
    out.push_str(&timeline(r, until_ms, since_ms));
    let _ = writeln!(out, "<h2>Session durations</h2>");
    out.push_str(&histogram(r));
    for (title, first, rows) in [
        ("Per user", "user", usage_rows(&r.users)),
        ("Per resource", "resource", usage_rows(&r.resources)),
    ] {
        let _ = writeln!(out, "<h2>{title}</h2>");
        let mut header = vec![first];
        header.extend_from_slice(&USAGE_HEADER[..7]);
        html_table(&mut out, &header, &rows);
    }
    let header = [
        "session", "user", "resource", "source", "started", "ended", "duration", "status",
    ];
    let _ = writeln!(out, "<h2>Still open</h2>");
    html_table(&mut out, &header, &session_rows(&r.open_sessions));
    let _ = writeln!(
        out,
        "<h2>Unusually long (at least {})</h2>",
        hms(r.long_after_s)
    );
    html_table(&mut out, &header, &session_rows(&r.long_sessions));
    out.push_str("</body></html>\n");
    out
}
