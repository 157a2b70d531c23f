//! Joins the lines of one multi-line record (a shell transcript block, a stack trace): a line
//! matching `start_pattern` begins a record, the following lines that do not match are
//! appended to it. A record is complete when the next start line arrives, when no line came
//! for `timeout_ms`, or when the file ends for good (rotated away, deleted).

use std::time::{Duration, Instant};

use regex::bytes::Regex;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultilineConfig {
    /// Regular expression that matches the first line of a record.
    pub start_pattern: String,
    /// Emit a held record when no new line arrived for this long (default 1000 ms).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    1000
}

/// A complete record: its bytes (lines joined with `\n`) and where it lies in the file.
pub struct Joined {
    pub text: Vec<u8>,
    pub start_offset: u64,
    pub end_offset: u64,
    /// Line number (1-based) of its first line.
    pub first_line: u64,
}

pub struct Multiline {
    start: Regex,
    timeout: Duration,
    /// A record larger than this is emitted as it is and the next line starts a new one,
    /// so memory stays bounded by `max_line_bytes`.
    max_bytes: usize,
    held: Option<Joined>,
    last_append: Instant,
}

impl Multiline {
    pub fn new(config: &MultilineConfig, max_bytes: usize) -> Result<Self, String> {
        let start = Regex::new(&config.start_pattern).map_err(|e| {
            format!("multiline.start_pattern is not a valid regular expression: {e}")
        })?;
        Ok(Multiline {
            start,
            timeout: Duration::from_millis(config.timeout_ms),
            max_bytes,
            held: None,
            last_append: Instant::now(),
        })
    }

    /// Adds one line spanning `[start, end)` of the file; returns the record it completed.
    pub fn push(&mut self, line: &[u8], start: u64, end: u64, line_no: u64) -> Option<Joined> {
        self.last_append = Instant::now();
        let begins = self.start.is_match(line);
        if let Some(h) = &mut self.held {
            if !begins && h.text.len() + 1 + line.len() <= self.max_bytes {
                h.text.push(b'\n');
                h.text.extend_from_slice(line);
                h.end_offset = end;
                return None;
            }
        }
        let done = self.held.take();
        self.held = Some(Joined {
            text: line.to_vec(),
            start_offset: start,
            end_offset: end,
            first_line: line_no,
        });
        done
    }

    /// The held record, if it waited longer than the timeout.
    pub fn take_expired(&mut self, now: Instant) -> Option<Joined> {
        if self.held.is_some() && now.duration_since(self.last_append) >= self.timeout {
            self.held.take()
        } else {
            None
        }
    }

    pub fn flush(&mut self) -> Option<Joined> {
        self.held.take()
    }

    /// Where the held record starts: the file is not handled past this point yet.
    pub fn held_start(&self) -> Option<(u64, u64)> {
        self.held.as_ref().map(|h| (h.start_offset, h.first_line))
    }

    pub fn clear(&mut self) {
        self.held = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ml() -> Multiline {
        Multiline::new(
            &MultilineConfig {
                start_pattern: r"^\S".into(),
                timeout_ms: 1000,
            },
            1 << 20,
        )
        .unwrap()
    }

    #[test]
    fn continuation_lines_join_the_record_before_them() {
        let mut m = ml();
        assert!(m.push(b"Error: boom", 0, 12, 1).is_none());
        assert!(m.push(b"  at a()", 12, 21, 2).is_none());
        let done = m.push(b"next", 21, 26, 3).unwrap();
        assert_eq!(done.text, b"Error: boom\n  at a()");
        assert_eq!(
            (done.start_offset, done.end_offset, done.first_line),
            (0, 21, 1)
        );
        assert_eq!(m.held_start(), Some((21, 3)));
        assert_eq!(m.flush().unwrap().text, b"next");
    }

    #[test]
    fn held_record_expires_after_the_timeout() {
        let mut m = ml();
        m.push(b"start", 0, 6, 1);
        assert!(m.take_expired(Instant::now()).is_none());
        let later = Instant::now() + Duration::from_millis(1500);
        assert_eq!(m.take_expired(later).unwrap().text, b"start");
    }
}
