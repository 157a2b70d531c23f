//! Raw terminal text: the view the detectors scan when a string carries ANSI escape sequences.
//!
//! SSM transcripts (S3 session logs, `ipcTempFile.log`) hold raw pty bytes: colour and
//! bracketed-paste sequences sit between the prompt and what was typed
//! (`ESC[?2004l\r<secret>\r\n`). The detectors run on the text with those sequences removed;
//! [`StrippedText::original_range`] maps what they find back to the original string so that
//! only the secret is replaced and everything else, escapes included, is kept. Bare CR is
//! handled where lines matter (see [`lines`]), not by rewriting the text.

use std::ops::Range;

const ESC: u8 = 0x1b;
const BEL: u8 = 0x07;

/// A string with its escape sequences removed, and for each kept byte its offset in the original.
pub struct StrippedText {
    pub text: String,
    /// `original[i]` is the original offset of byte `i` of `text`.
    original: Vec<usize>,
}

impl StrippedText {
    /// `None` when `s` has no ESC byte (scan `s` itself then).
    pub fn new(s: &str) -> Option<StrippedText> {
        memchr::memchr(ESC, s.as_bytes())?;
        let bytes = s.as_bytes();
        let mut kept = Vec::with_capacity(bytes.len());
        let mut original = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == ESC {
                i += escape_len(&bytes[i..]);
                continue;
            }
            kept.push(bytes[i]);
            original.push(i);
            i += 1;
        }
        // Escape sequences are ASCII and are removed whole, so the kept bytes are the original
        // characters in order; a lone ESC before a multi-byte character only removes the ESC.
        let text = String::from_utf8(kept).ok()?;
        Some(StrippedText { text, original })
    }

    /// The original byte range of `range` (a non-empty range of `text` on char boundaries).
    /// Escape sequences inside the range are included, so replacing it removes them too.
    pub fn original_range(&self, range: Range<usize>, original_len: usize) -> Range<usize> {
        let start = self
            .original
            .get(range.start)
            .copied()
            .unwrap_or(original_len);
        let end = if range.end == 0 {
            start
        } else {
            self.original
                .get(range.end - 1)
                .map(|o| o + 1)
                .unwrap_or(original_len)
        };
        start..end.max(start)
    }
}

/// Length of the escape sequence at the start of `b` (which starts with ESC).
///
/// CSI `ESC [ params intermediates final` (ECMA-48 5.4: params 0x30-0x3f, intermediates
/// 0x20-0x2f, final 0x40-0x7e), OSC `ESC ] ... BEL | ESC \`, charset designations
/// `ESC ( B`, and two-byte escapes `ESC x`. An unterminated sequence ends at the end of the text.
fn escape_len(b: &[u8]) -> usize {
    debug_assert_eq!(b.first(), Some(&ESC));
    match b.get(1) {
        None => 1,
        Some(b'[') => {
            let mut i = 2;
            while i < b.len() && (0x30..=0x3f).contains(&b[i]) {
                i += 1;
            }
            while i < b.len() && (0x20..=0x2f).contains(&b[i]) {
                i += 1;
            }
            if i < b.len() && (0x40..=0x7e).contains(&b[i]) {
                i + 1
            } else {
                i
            }
        }
        Some(b']') | Some(b'P') | Some(b'_') | Some(b'^') => {
            // OSC / DCS / APC / PM: up to BEL or ST (ESC \).
            let mut i = 2;
            while i < b.len() {
                if b[i] == BEL {
                    return i + 1;
                }
                if b[i] == ESC {
                    return if b.get(i + 1) == Some(&b'\\') {
                        i + 2
                    } else {
                        i
                    };
                }
                i += 1;
            }
            i
        }
        Some(b'(') | Some(b')') | Some(b'*') | Some(b'+') => {
            if b.len() > 2 && b[2].is_ascii() {
                3
            } else {
                2
            }
        }
        Some(c) if c.is_ascii() && *c >= 0x20 => 2,
        Some(_) => 1,
    }
}

/// The lines of `s` with their byte ranges: LF, CRLF and a bare CR all end a line (corpus
/// README: in raw pty text a bare CR is a line break for the line-anchored rules).
pub fn lines(s: &str) -> impl Iterator<Item = Range<usize>> + '_ {
    let bytes = s.as_bytes();
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos > bytes.len() {
            return None;
        }
        let start = pos;
        match memchr::memchr2(b'\n', b'\r', &bytes[start..]) {
            Some(off) => {
                let end = start + off;
                pos = if bytes[end] == b'\r' && bytes.get(end + 1) == Some(&b'\n') {
                    end + 2
                } else {
                    end + 1
                };
                Some(start..end)
            }
            None => {
                pos = bytes.len() + 1;
                Some(start..bytes.len())
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_csi_and_maps_back() {
        let s = "\x1b[?2004hsh-5.2$ ls\r\n\x1b[?2004l\rsecret\x1b[0m!";
        let st = StrippedText::new(s).unwrap();
        assert_eq!(st.text, "sh-5.2$ ls\r\n\rsecret!");
        let at = st.text.find("secret").unwrap();
        let r = st.original_range(at..at + 6, s.len());
        assert_eq!(&s[r], "secret");
    }

    #[test]
    fn range_spanning_an_escape_covers_it() {
        let s = "pass\x1b[1mword";
        let st = StrippedText::new(s).unwrap();
        assert_eq!(st.text, "password");
        assert_eq!(st.original_range(0..8, s.len()), 0..s.len());
    }

    #[test]
    fn osc_title_and_charset_are_removed() {
        let s = "\x1b]0;user@host\x07a\x1b(Bb\x1b]2;t\x1b\\c";
        assert_eq!(StrippedText::new(s).unwrap().text, "abc");
    }

    #[test]
    fn no_escape_means_no_copy() {
        assert!(StrippedText::new("plain\r\ntext").is_none());
    }

    #[test]
    fn bare_cr_crlf_and_lf_all_end_lines() {
        let s = "a\r\nb\rc\nd";
        let got: Vec<&str> = lines(s).map(|r| &s[r]).collect();
        assert_eq!(got, ["a", "b", "c", "d"]);
        let s = "x\n";
        let got: Vec<&str> = lines(s).map(|r| &s[r]).collect();
        assert_eq!(got, ["x", ""]);
    }
}
