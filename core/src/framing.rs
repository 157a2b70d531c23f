//! Splits a byte stream into newline-delimited records without ever buffering more than
//! `max_line_bytes` of one record: a longer line is reported with its first KiB and skipped
//! up to its newline (Fluent Bit's fixed 32 KiB line buffer silently stops reading instead).

use crate::dead_letter::MAX_RAW_PREFIX;

/// One framed record.
pub enum Frame<'a> {
    /// A complete line, without its `\n` (a trailing `\r` is left for the decoder).
    Line(&'a [u8]),
    /// A line longer than the limit: its first [`MAX_RAW_PREFIX`] bytes and its full length.
    TooLong { prefix: &'a [u8], len: usize },
}

pub struct LineFramer {
    max: usize,
    partial: Vec<u8>,
    /// Set while skipping the rest of an oversize line: (first bytes, length so far).
    oversize: Option<(Vec<u8>, usize)>,
}

impl LineFramer {
    pub fn new(max_line_bytes: usize) -> Self {
        LineFramer {
            max: max_line_bytes,
            partial: Vec::new(),
            oversize: None,
        }
    }

    /// Bytes held for an incomplete line (0 when the stream is at a line boundary).
    pub fn pending_len(&self) -> usize {
        self.partial.len() + self.oversize.as_ref().map_or(0, |(_, n)| *n)
    }

    /// Feeds a chunk; calls `f` for every record it completes, in order.
    pub fn push(&mut self, mut chunk: &[u8], mut f: impl FnMut(Frame<'_>)) {
        while !chunk.is_empty() {
            let nl = memchr::memchr(b'\n', chunk);
            let (piece, rest, complete) = match nl {
                Some(i) => (&chunk[..i], &chunk[i + 1..], true),
                None => (chunk, &chunk[chunk.len()..], false),
            };
            chunk = rest;
            if let Some((prefix, len)) = &mut self.oversize {
                *len += piece.len();
                if complete {
                    f(Frame::TooLong { prefix, len: *len });
                    self.oversize = None;
                }
                continue;
            }
            if self.partial.len() + piece.len() > self.max {
                let mut prefix = std::mem::take(&mut self.partial);
                let len = prefix.len() + piece.len();
                let want = MAX_RAW_PREFIX.saturating_sub(prefix.len()).min(piece.len());
                prefix.extend_from_slice(&piece[..want]);
                prefix.truncate(MAX_RAW_PREFIX);
                if complete {
                    f(Frame::TooLong {
                        prefix: &prefix,
                        len,
                    });
                } else {
                    self.oversize = Some((prefix, len));
                }
                continue;
            }
            if !complete {
                self.partial.extend_from_slice(piece);
            } else if self.partial.is_empty() {
                f(Frame::Line(piece));
            } else {
                self.partial.extend_from_slice(piece);
                let line = std::mem::take(&mut self.partial);
                f(Frame::Line(&line));
            }
        }
    }

    /// End of input: an unterminated last line is still a record.
    pub fn finish(&mut self, mut f: impl FnMut(Frame<'_>)) {
        if let Some((prefix, len)) = self.oversize.take() {
            f(Frame::TooLong {
                prefix: &prefix,
                len,
            });
        } else if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            f(Frame::Line(&line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(chunks: &[&[u8]], max: usize) -> Vec<String> {
        let mut fr = LineFramer::new(max);
        let mut out = Vec::new();
        let mut on = |f: Frame<'_>| match f {
            Frame::Line(l) => out.push(String::from_utf8_lossy(l).into_owned()),
            Frame::TooLong { prefix, len } => out.push(format!("TOOLONG({len},{})", prefix.len())),
        };
        for c in chunks {
            fr.push(c, &mut on);
        }
        fr.finish(&mut on);
        out
    }

    #[test]
    fn lines_split_across_chunks_are_joined() {
        assert_eq!(
            frames(&[b"ab", b"c\nde", b"f\n", b"g"], 100),
            ["abc", "def", "g"]
        );
    }

    #[test]
    fn oversize_line_is_skipped_and_reading_continues() {
        let big = vec![b'x'; 5000];
        let out = frames(&[b"ok\n", &big[..3000], &big[3000..], b"\nnext\n"], 2000);
        assert_eq!(out, ["ok", "TOOLONG(5000,1024)", "next"]);
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_accepted() {
        let line = vec![b'y'; 10];
        let mut input = line.clone();
        input.push(b'\n');
        assert_eq!(frames(&[&input], 10), ["yyyyyyyyyy"]);
        input.insert(0, b'y');
        assert_eq!(frames(&[&input], 10), ["TOOLONG(11,11)"]);
    }
}
