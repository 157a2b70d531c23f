//! PEM private key blocks (policy R7): every body line between `-----BEGIN ... PRIVATE KEY-----`
//! and `-----END ... PRIVATE KEY-----` is a secret; the armour lines stay.
//!
//! A block rarely sits in one string: SSM streaming records split it over `sessionData`
//! elements and, when the pty read ends mid-key, over consecutive records of the same session;
//! a transcript spreads it over lines. So the scanner carries a [`PemCursor`] from one line,
//! element or record to the next; the transform keeps one cursor per session and field (see
//! [`PemSessions`]).

use std::collections::HashMap;
use std::ops::Range;

use regex::Regex;

use super::text::lines;

/// A block that has not ended after this many body lines is given up on (the cursor closes):
/// an 8192-bit RSA key in PKCS#1 is about 75 base64 lines of 64 characters, encrypted PEM
/// headers add a few. Without a limit one truncated paste would mask the rest of a session.
pub const MAX_PEM_BODY_LINES: u32 = 200;

/// At most this many unfinished blocks are tracked across records; past it the least recently
/// touched one is forgotten (memory stays bounded whatever the input).
pub const MAX_OPEN_BLOCKS: usize = 10_000;

/// The armour line that opens a block. RFC 7468 labels: "PRIVATE KEY", "RSA PRIVATE KEY",
/// "ENCRYPTED PRIVATE KEY", "OPENSSH PRIVATE KEY", "EC PRIVATE KEY"...; OpenPGP armour adds
/// " BLOCK". Also the record screen's test for a block opening in a record.
pub const PEM_BEGIN: &str = "-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----";
const PEM_END: &str = "-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----";

/// Where a line-by-line reader is relative to a private key block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PemCursor {
    pub inside: bool,
    pub body_lines: u32,
}

/// The armour line patterns.
pub struct PemMarkers {
    begin: Regex,
    end: Regex,
}

impl PemMarkers {
    pub fn new() -> Self {
        PemMarkers {
            begin: Regex::new(PEM_BEGIN).expect("static PEM regex"),
            end: Regex::new(PEM_END).expect("static PEM regex"),
        }
    }

    /// Adds the body ranges of `text` to `out`, moving `cursor` along the lines.
    pub fn scan(&self, text: &str, cursor: &mut PemCursor, out: &mut Vec<Range<usize>>) {
        for line in lines(text) {
            let mut from = line.start;
            // A flattened key (`-----BEGIN ...----- MIIE... -----END ...-----` on one line) can
            // open and close several times in one line.
            while from < line.end {
                let rest = &text[from..line.end];
                if cursor.inside {
                    match self.end.find(rest) {
                        Some(m) => {
                            push_trimmed(text, from..from + m.start(), out);
                            *cursor = PemCursor::default();
                            from += m.end();
                        }
                        None => {
                            push_trimmed(text, from..line.end, out);
                            cursor.body_lines += 1;
                            if cursor.body_lines > MAX_PEM_BODY_LINES {
                                *cursor = PemCursor::default();
                            }
                            break;
                        }
                    }
                } else {
                    match self.begin.find(rest) {
                        Some(m) => {
                            cursor.inside = true;
                            cursor.body_lines = 0;
                            from += m.end();
                        }
                        None => break,
                    }
                }
            }
        }
    }
}

impl Default for PemMarkers {
    fn default() -> Self {
        Self::new()
    }
}

fn push_trimmed(text: &str, r: Range<usize>, out: &mut Vec<Range<usize>>) {
    let s = &text[r.clone()];
    let start = r.start + (s.len() - s.trim_start().len());
    let end = r.end - (s.len() - s.trim_end().len());
    if start < end {
        out.push(start..end);
    }
}

/// Open blocks per stream (a hash of session and field path), across events.
#[derive(Default)]
pub struct PemSessions {
    open: HashMap<u64, OpenBlock>,
    /// How many open blocks each session has: a record of a session without one cannot be
    /// inside a block, which lets the record screen pass it without parsing it.
    per_session: HashMap<u64, usize>,
    clock: u64,
}

struct OpenBlock {
    cursor: PemCursor,
    touched: u64,
    session: u64,
}

impl PemSessions {
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    pub fn get(&self, stream: u64) -> PemCursor {
        self.open.get(&stream).map(|b| b.cursor).unwrap_or_default()
    }

    /// Whether some field of `session` is inside a block.
    pub fn has_open_block(&self, session: u64) -> bool {
        self.per_session.contains_key(&session)
    }

    /// Remembers the cursor of `stream` (a field of `session`) if it is inside a block,
    /// forgets it otherwise.
    pub fn put(&mut self, session: u64, stream: u64, cursor: PemCursor) {
        if !cursor.inside {
            self.remove(stream);
            return;
        }
        self.clock += 1;
        if let Some(block) = self.open.get_mut(&stream) {
            block.cursor = cursor;
            block.touched = self.clock;
            if block.session == session {
                return;
            }
            // Two sessions whose streams hash alike: the block now counts for the later one.
            let previous = std::mem::replace(&mut block.session, session);
            self.forget_session(previous);
            *self.per_session.entry(session).or_default() += 1;
            return;
        }
        if self.open.len() >= MAX_OPEN_BLOCKS {
            if let Some(oldest) = self
                .open
                .iter()
                .min_by_key(|(_, b)| b.touched)
                .map(|(k, _)| *k)
            {
                self.remove(oldest);
            }
        }
        self.open.insert(
            stream,
            OpenBlock {
                cursor,
                touched: self.clock,
                session,
            },
        );
        *self.per_session.entry(session).or_default() += 1;
    }

    fn remove(&mut self, stream: u64) {
        if let Some(block) = self.open.remove(&stream) {
            self.forget_session(block.session);
        }
    }

    /// One open block of `session` fewer.
    fn forget_session(&mut self, session: u64) {
        if let Some(n) = self.per_session.get_mut(&session) {
            *n -= 1;
            if *n == 0 {
                self.per_session.remove(&session);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bodies(text: &str, cursor: &mut PemCursor) -> Vec<String> {
        let mut out = Vec::new();
        PemMarkers::new().scan(text, cursor, &mut out);
        out.into_iter().map(|r| text[r].to_string()).collect()
    }

    #[test]
    fn body_lines_between_armour_lines_only() {
        let mut c = PemCursor::default();
        let t = "cat key\n-----BEGIN RSA PRIVATE KEY-----\nAAAA\r\nBBBB\rCC\n-----END RSA PRIVATE KEY-----\n$ ";
        assert_eq!(bodies(t, &mut c), ["AAAA", "BBBB", "CC"]);
        assert!(!c.inside);
    }

    #[test]
    fn block_continues_across_strings() {
        let mut c = PemCursor::default();
        assert!(bodies("-----BEGIN OPENSSH PRIVATE KEY-----", &mut c).is_empty());
        assert!(c.inside);
        assert_eq!(bodies("b3BlbnNzaC1rZXk", &mut c), ["b3BlbnNzaC1rZXk"]);
        assert_eq!(bodies("  tail==  ", &mut c), ["tail=="]);
        assert!(bodies("-----END OPENSSH PRIVATE KEY-----", &mut c).is_empty());
        assert!(!c.inside);
        assert!(bodies("after", &mut c).is_empty());
    }

    #[test]
    fn flattened_block_on_one_line() {
        let mut c = PemCursor::default();
        let t = "KEY=-----BEGIN PRIVATE KEY----- MIIEv QQ== -----END PRIVATE KEY----- done";
        assert_eq!(bodies(t, &mut c), ["MIIEv QQ=="]);
        assert!(!c.inside);
    }

    #[test]
    fn public_keys_and_certificates_are_not_bodies() {
        let mut c = PemCursor::default();
        let t = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
        assert!(bodies(t, &mut c).is_empty());
    }

    #[test]
    fn unterminated_block_is_given_up_after_the_limit() {
        let mut c = PemCursor::default();
        bodies("-----BEGIN EC PRIVATE KEY-----", &mut c);
        for _ in 0..MAX_PEM_BODY_LINES {
            assert_eq!(bodies("QUJD", &mut c).len(), 1);
        }
        assert_eq!(bodies("QUJD", &mut c).len(), 1);
        assert!(!c.inside);
        assert!(bodies("plain output again", &mut c).is_empty());
    }

    #[test]
    fn sessions_are_bounded() {
        let mut s = PemSessions::default();
        let open = PemCursor {
            inside: true,
            body_lines: 0,
        };
        for k in 0..(MAX_OPEN_BLOCKS as u64 + 5) {
            s.put(k % 3, k, open);
        }
        assert_eq!(s.open.len(), MAX_OPEN_BLOCKS);
        assert!(!s.get(0).inside, "oldest forgotten");
        assert!(s.get(MAX_OPEN_BLOCKS as u64 + 4).inside);
        s.put(7 % 3, 7, PemCursor::default());
        assert!(!s.get(7).inside);
        let counted: usize = s.per_session.values().sum();
        assert_eq!(counted, s.open.len(), "per-session counts follow evictions");
    }

    #[test]
    fn sessions_with_open_blocks_are_known() {
        let mut s = PemSessions::default();
        let open = PemCursor {
            inside: true,
            body_lines: 0,
        };
        s.put(1, 10, open);
        s.put(1, 11, open);
        s.put(1, 11, open);
        assert!(s.has_open_block(1));
        assert!(!s.has_open_block(2));
        s.put(1, 10, PemCursor::default());
        assert!(s.has_open_block(1), "field 11 is still inside a block");
        s.put(1, 11, PemCursor::default());
        assert!(!s.has_open_block(1));
        assert!(s.is_empty());
        // A stream hash shared by two sessions counts for the one that used it last.
        s.put(1, 12, open);
        s.put(2, 12, open);
        assert!(!s.has_open_block(1));
        assert!(s.has_open_block(2));
    }
}
