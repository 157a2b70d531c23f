//! `sessiontrail report` on a generated 30-day OCSF archive: totals must match what the test
//! computes independently from the generated sessions.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Command;

use serde_json::{json, Value};

const DAY: i64 = 86_400_000;
/// 2025-04-09T00:00:00Z: the end of the report window (`--until`).
const UNTIL: i64 = 1_744_156_800_000;

/// A small deterministic generator (64-bit LCG) so the archive is the same on every run.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

struct Generated {
    session: String,
    user: String,
    resource: String,
    start: i64,
    /// None: still open.
    duration: Option<i64>,
}

fn base(session: &str, user: &str, resource: &str, activity: u64, time: i64) -> Value {
    json!({
        "class_uid": 3002, "activity_id": activity, "time": time,
        "metadata": {"uid": format!("{session}-{activity}"), "product": {"name": "Windows"}},
        "session": {"uid": session}, "user": {"name": user},
        "dst_endpoint": {"hostname": resource},
    })
}

/// Writes the archive: starts plus correlate results (most sessions), plain start/end pairs
/// with no result (every 7th), starts only (open, every 50th), and sessions before the window.
fn generate(dir: &std::path::Path) -> (Vec<std::path::PathBuf>, Vec<Generated>) {
    let mut rng = Lcg(7);
    let mut sessions = Vec::new();
    for i in 0..720 {
        let start = UNTIL - 30 * DAY + i * 3_600_000 + rng.next(1_800_000) as i64;
        let duration = if i % 50 == 0 {
            None
        } else if i % 97 == 0 {
            Some(14 * 3_600_000 + rng.next(1000) as i64)
        } else {
            Some(60_000 + rng.next(6 * 3_600_000) as i64)
        };
        sessions.push(Generated {
            session: format!("s-{i:04}"),
            user: format!("CORP\\user{}", rng.next(6)),
            resource: format!("res-{}", rng.next(4)),
            start,
            duration,
        });
    }
    // Older than the window: must not be counted.
    let old: Vec<Generated> = (0..20)
        .map(|i| Generated {
            session: format!("old-{i}"),
            user: "CORP\\user0".into(),
            resource: "res-0".into(),
            start: UNTIL - 40 * DAY + i * 1000,
            duration: Some(1000),
        })
        .collect();
    let mut plain = Vec::new();
    let mut correlated = Vec::new();
    for (i, s) in sessions.iter().chain(old.iter()).enumerate() {
        let start = base(&s.session, &s.user, &s.resource, 1, s.start);
        match s.duration {
            None => correlated.push(start),
            Some(d) if i % 7 == 0 => {
                plain.push(start);
                plain.push(base(&s.session, &s.user, &s.resource, 2, s.start + d));
            }
            Some(d) => {
                correlated.push(start);
                let mut end = base(&s.session, &s.user, &s.resource, 2, s.start + d);
                end["start_time"] = json!(s.start);
                end["end_time"] = json!(s.start + d);
                end["duration"] = json!(d);
                end["unmapped"] = json!({
                    "session_status": "complete", "correlation": "complete",
                    "session_user": s.user, "session_resource": s.resource,
                });
                correlated.push(end);
            }
        }
    }
    correlated.push(json!("not an object"));
    let plain_path = dir.join("plain.ndjson");
    let mut f = std::fs::File::create(&plain_path).unwrap();
    for e in &plain {
        writeln!(f, "{e}").unwrap();
    }
    // The correlated part gzip-compressed, under a name that does not say so.
    let gz_path = dir.join("archive").join("correlated.part");
    std::fs::create_dir_all(gz_path.parent().unwrap()).unwrap();
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz_path).unwrap(),
        flate2::Compression::fast(),
    );
    for e in &correlated {
        writeln!(gz, "{e}").unwrap();
    }
    gz.finish().unwrap();
    (vec![plain_path, dir.join("archive")], sessions)
}

fn report(inputs: &[std::path::PathBuf], format: &str) -> String {
    let mut cmd = Command::new(common::bin());
    cmd.args([
        "report",
        "--since",
        "30d",
        "--until",
        "2025-04-09T00:00:00Z",
    ])
    .args(["--format", format, "--input"]);
    cmd.args(inputs);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn report_totals_match_the_generated_archive() {
    let dir = tempfile::tempdir().unwrap();
    let (inputs, sessions) = generate(dir.path());
    let r: Value = serde_json::from_str(&report(&inputs, "json")).unwrap();

    let total_ms: i64 = sessions.iter().filter_map(|s| s.duration).sum();
    let open = sessions.iter().filter(|s| s.duration.is_none()).count();
    let t = &r["totals"];
    assert_eq!(t["sessions"], json!(sessions.len()));
    assert_eq!(t["open_sessions"], json!(open));
    assert_eq!(t["total_duration_s"], json!(total_ms / 1000));
    assert_eq!(r["skipped_lines"], json!(1));

    let mut per_user: BTreeMap<&str, (u64, i64, i64, u64)> = BTreeMap::new();
    for s in &sessions {
        let e = per_user.entry(&s.user).or_default();
        e.0 += 1;
        if let Some(d) = s.duration {
            e.1 += d;
            e.2 = e.2.max(d);
        } else {
            e.3 += 1;
        }
    }
    let users = r["users"].as_array().unwrap();
    assert_eq!(users.len(), per_user.len());
    for u in users {
        let (n, total, max, open) = per_user[u["name"].as_str().unwrap()];
        assert_eq!(u["sessions"], json!(n), "{u}");
        assert_eq!(u["total_duration_s"], json!(total / 1000), "{u}");
        assert_eq!(u["max_duration_s"], json!(max / 1000), "{u}");
        assert_eq!(u["open_sessions"], json!(open), "{u}");
    }
    let resource_sessions: u64 = r["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["sessions"].as_u64().unwrap())
        .sum();
    assert_eq!(resource_sessions, sessions.len() as u64);
    let long: Vec<&Generated> = sessions
        .iter()
        .filter(|s| s.duration.is_some_and(|d| d >= 12 * 3_600_000))
        .collect();
    // Open sessions older than 12h at the end of the window are long too.
    let long_open = sessions
        .iter()
        .filter(|s| s.duration.is_none() && UNTIL - s.start >= 12 * 3_600_000)
        .count();
    assert_eq!(
        r["long_sessions"].as_array().unwrap().len(),
        long.len() + long_open
    );
    assert!(!long.is_empty());
}

#[test]
fn csv_and_table_formats_cover_every_user() {
    let dir = tempfile::tempdir().unwrap();
    let (inputs, sessions) = generate(dir.path());
    let users: std::collections::BTreeSet<&str> =
        sessions.iter().map(|s| s.user.as_str()).collect();
    let csv = report(&inputs, "csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("section,name,"));
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("user,")).count(),
        users.len()
    );
    let table = report(&inputs, "table");
    for u in users {
        assert!(table.contains(u), "{u} missing from the table");
    }
}

#[test]
fn html_report_is_one_well_formed_file_with_inline_svg_and_no_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let (inputs, _) = generate(dir.path());
    let html = report(&inputs, "html");
    assert!(!html.to_ascii_lowercase().contains("<script"));
    assert_eq!(html.matches("<svg ").count(), 2, "timeline and histogram");
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
    // Well-formed (XML-parsable) markup: every element closed, every entity known.
    let path = dir.path().join("report.html");
    std::fs::write(&path, &html).unwrap();
    let python = std::env::var("SESSIONTRAIL_PYTHON").unwrap_or_else(|_| "python3".into());
    let check = Command::new(python)
        .args([
            "-c",
            "import sys, xml.etree.ElementTree as ET; t = ET.parse(sys.argv[1]); \
             ns = '{http://www.w3.org/2000/svg}'; \
             assert len(t.getroot().findall('.//' + ns + 'rect')) > 100, 'too few shapes'",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "HTML is not well-formed: {}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// Opens `page` in headless Chromium (`SESSIONTRAIL_CHROMIUM`, default `chromium`; installed
/// by `scripts/test`), saves a screenshot to `shot`, and returns the lines the page logged to
/// its console (script errors included) and its rendered DOM.
fn open_in_chromium(page: &std::path::Path, shot: &std::path::Path) -> (Vec<String>, String) {
    let chromium = std::env::var("SESSIONTRAIL_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let url = format!("file://{}", page.display());
    let run = |extra: &[&str]| {
        Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--enable-logging=stderr",
                "--v=0",
            ])
            .args(extra)
            .arg(&url)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run {chromium} ({e}): install Debian's chromium or set SESSIONTRAIL_CHROMIUM")
            })
    };
    let screenshot = run(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1400,2400",
    ]);
    assert!(
        screenshot.status.success(),
        "chromium failed: {screenshot:?}"
    );
    let dom = run(&["--dump-dom"]);
    assert!(dom.status.success(), "chromium failed: {dom:?}");
    let console = [&screenshot.stderr, &dom.stderr]
        .iter()
        .flat_map(|e| {
            String::from_utf8_lossy(e)
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|l| l.contains(":CONSOLE"))
        .collect();
    (console, String::from_utf8_lossy(&dom.stdout).into_owned())
}

fn artifacts_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn html_report_opens_in_headless_chromium_without_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (inputs, _) = generate(dir.path());
    let page = dir.path().join("report.html");
    std::fs::write(&page, report(&inputs, "html")).unwrap();
    let shot = artifacts_dir().join("report.png");
    let _ = std::fs::remove_file(&shot);
    let (console, dom) = open_in_chromium(&page, &shot);
    assert!(console.is_empty(), "the page logged: {console:#?}");
    // Rendered: the DOM Chromium built holds both charts.
    assert_eq!(dom.matches("<svg").count(), 2, "timeline and histogram");
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
}

/// The check above can fail: a page whose script errors is reported.
#[test]
fn the_chromium_check_sees_a_page_error() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("broken.html");
    std::fs::write(
        &page,
        "<html><body><svg></svg><script>undefinedFunction()</script></body></html>",
    )
    .unwrap();
    let (console, _) = open_in_chromium(&page, &dir.path().join("broken.png"));
    assert!(
        console.iter().any(|l| l.contains("undefinedFunction")),
        "{console:#?}"
    );
}
