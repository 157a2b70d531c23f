//! SSM session transcripts (the S3 object `<prefix>/<sessionId>.log`, the agent's local
//! `<sessionId>.log` and `ipcTempFile.log`) -> Process Activity (1007), one event per command.
//!
//! The record is `{"message": "<text>"}`: a whole transcript (S3 object) or one line or
//! multiline chunk of it (file source). The session comes from a `sessionId` / `session_id`
//! field, else from the file path or S3 key (a `file` / `path` / `key` field or label): the
//! file name `<sessionId>.log`, or for `ipcTempFile.log` its `<session-id>/Standard_Stream`
//! directory. The node is the `i-` / `mi-` id in that path or in the util-linux header.
//!
//! The text is raw pty output: ANSI escape sequences are removed and a bare CR is a line
//! break; util-linux `Script started/done` lines are skipped. Those lines' timestamps are the
//! upload time, not the command's, and are the event time only when the record has no
//! `timestamp` / `eventTime`; text with neither gets the time it was received.

use std::borrow::Cow;

use sessiontrail_core::json_borrowed::{BorrowedObject, BorrowedValue};
use sessiontrail_core::{Labels, Value};

use super::common::{put, put_opt, Class, MapContext, MapError, Reader};
use super::ssm_stream::{command_fields, common_process_fields, split_commands};
use super::{InputSystem, Mapped};

const SYSTEM: InputSystem = InputSystem::SsmTranscript;

/// Where a transcript's location can be found, in order: record fields, then labels.
const LOCATION_KEYS: &[&str] = &["file", "path", "key"];

pub fn map<'a>(
    src: &'a BorrowedObject<'a>,
    labels: &'a Labels,
    cx: &'a MapContext,
) -> Result<Mapped<'a>, MapError> {
    let mut r = Reader::new(src);
    // A blank line of a transcript read line by line carries no command and no output.
    if src.get("message").and_then(BorrowedValue::as_str) == Some("") {
        return Ok(Mapped {
            events: Vec::new(),
            taken: Vec::new(),
        });
    }
    let text = r.req_str("message")?;
    let location = location(src, labels);
    let session_id = match r.opt_str_strict("sessionId")? {
        Some(s) => s,
        None => match r.opt_str_strict("session_id")? {
            Some(s) => s,
            None => location
                .and_then(session_from_path)
                .ok_or_else(|| MapError::missing("sessionId"))?,
        },
    };
    let cleaned = strip_ansi(text);
    let lines: Vec<&str> = cleaned.split(['\n', '\r']).collect();

    let mut script_time = None;
    let mut header_instance = None;
    for l in &lines {
        if let Some(rest) = l
            .strip_prefix("Script started on ")
            .or_else(|| l.strip_prefix("Script done on "))
        {
            script_time = script_time.or_else(|| parse_script_time(rest));
            header_instance = header_instance.or_else(|| find_instance_id(rest));
        }
    }
    let time_ms = match r.peek("timestamp").or_else(|| r.peek("eventTime")) {
        Some(_) => {
            let path = if r.peek("timestamp").is_some() {
                "timestamp"
            } else {
                "eventTime"
            };
            r.req_time(path, false)?.0
        }
        None => script_time.unwrap_or(cx.received_at_ms),
    };
    let instance: Option<Cow<'a, str>> = r
        .str("target.id")
        .or_else(|| r.str("instance_id"))
        .or_else(|| location.and_then(find_instance_id))
        .map(Cow::Borrowed)
        // Cut from the cleaned text, which does not outlive this function.
        .or(header_instance.map(|h| Cow::Owned(h.to_string())));
    let arn = r.str("userIdentity.arn");
    let run_as = r.str("runAsUser");
    for k in LOCATION_KEYS {
        // A location field is consumed: it is kept as `metadata.log_name`.
        if src.get(k).is_some_and(BorrowedValue::is_string) {
            r.mark(k);
        }
    }

    let body = lines
        .iter()
        .copied()
        .filter(|l| !(l.starts_with("Script started on ") || l.starts_with("Script done on ")));
    let commands = split_commands(body, false);
    let mut events = Vec::with_capacity(commands.len());
    for (n, c) in commands.iter().enumerate() {
        let mut e = cx.event(SYSTEM, Class::ProcessActivity, c.activity(), time_ms);
        put_opt(&mut e, "metadata.log_name", location);
        put(
            &mut e,
            "metadata.log_provider",
            "AWS Systems Manager session log",
        );
        common_process_fields(&mut e, session_id, instance.clone(), arn, run_as);
        let extra = command_fields(&mut e, session_id, time_ms, n, c);
        events.push((e, extra));
    }
    Ok(Mapped {
        events,
        taken: r.taken(),
    })
}

fn location<'a>(src: &'a BorrowedObject<'a>, labels: &'a Labels) -> Option<&'a str> {
    LOCATION_KEYS
        .iter()
        .find_map(|k| src.get(k).and_then(BorrowedValue::as_str))
        .or_else(|| {
            LOCATION_KEYS
                .iter()
                .find_map(|k| labels.get(k).and_then(Value::as_str))
        })
}

/// The session a transcript belongs to, from its record's location (for `from: auto`).
pub fn session_from_location<'a>(
    src: &'a BorrowedObject<'a>,
    labels: &'a Labels,
) -> Option<&'a str> {
    location(src, labels).and_then(session_from_path)
}

/// `<...>/<sessionId>.log` -> sessionId; `<...>/<sessionId>/Standard_Stream/ipcTempFile.log`
/// -> sessionId.
pub fn session_from_path(path: &str) -> Option<&str> {
    let mut parts = path.rsplit('/');
    let file = parts.next()?;
    if file == "ipcTempFile.log" {
        let dir = parts.next()?;
        let session = if dir == "Standard_Stream" {
            parts.next()?
        } else {
            dir
        };
        return (!session.is_empty()).then_some(session);
    }
    file.strip_suffix(".log").filter(|s| !s.is_empty())
}

/// The first `i-<hex>` / `mi-<hex>` token (an SSM node id) in `s`.
fn find_instance_id(s: &str) -> Option<&str> {
    s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .find(|t| {
            let hex = t.strip_prefix("i-").or_else(|| t.strip_prefix("mi-"));
            hex.is_some_and(|h| h.len() >= 8 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        })
}

/// util-linux `script` header/footer times: `2025-03-10 08:42:52+00:00 [...]` (newer) or
/// `Mon 10 Mar 2025 10:30:45 AM UTC` (util-linux 2.30, Amazon Linux 2).
fn parse_script_time(rest: &str) -> Option<i64> {
    let stamp = rest.split(" [").next()?.trim();
    if let Ok(t) = chrono::DateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S%:z") {
        return Some(t.timestamp_millis());
    }
    let utc = stamp.strip_suffix(" UTC")?;
    chrono::NaiveDateTime::parse_from_str(utc, "%a %d %b %Y %I:%M:%S %p")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

/// Removes ANSI escape sequences (CSI `ESC [ ... final`, OSC `ESC ] ... BEL|ESC \`, and
/// two-byte `ESC x`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                // Parameters and intermediates, then one final byte in @..~.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\u{7}' {
                        break;
                    }
                    if c == '\u{1b}' && chars.peek() == Some(&'\\') {
                        chars.next();
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_come_from_file_names() {
        assert_eq!(
            session_from_path("session-logs/maria.wisniewska@example.com-c4ac44afd30619df3.log"),
            Some("maria.wisniewska@example.com-c4ac44afd30619df3")
        );
        assert_eq!(
            session_from_path("/var/lib/amazon/ssm/i-0f9e8d7c6b5a40312/session/orchestration/s-95d/Standard_Stream/ipcTempFile.log"),
            Some("s-95d")
        );
        assert_eq!(session_from_path("notes.txt"), None);
    }

    #[test]
    fn ansi_sequences_are_removed() {
        assert_eq!(
            strip_ansi("\u{1b}[?2004hsh-5.2$ ls\r\n\u{1b}[01;34m.\u{1b}[0m"),
            "sh-5.2$ ls\r\n."
        );
    }

    #[test]
    fn both_script_header_formats_give_a_time() {
        assert_eq!(
            parse_script_time("2025-03-10 08:42:52+00:00 [COMMAND=\"cat x\"]"),
            Some(1_741_596_172_000)
        );
        assert_eq!(
            parse_script_time("Mon 10 Mar 2025 10:30:45 AM UTC"),
            Some(1_741_602_645_000)
        );
    }

    #[test]
    fn instance_ids_are_found_in_paths() {
        assert_eq!(
            find_instance_id("cat /var/lib/amazon/ssm/i-0a1b2c3d4e5f60718/session/x"),
            Some("i-0a1b2c3d4e5f60718")
        );
        assert_eq!(find_instance_id("session-logs/ops-anna.log"), None);
    }
}
