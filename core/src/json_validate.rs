//! The strict check every NDJSON record passes before it is accepted: JSON syntax, nesting at
//! most [`MAX_NESTING_DEPTH`] levels and no key twice in one object, in one pass that builds
//! nothing.
//!
//! It accepts and rejects exactly what the former check did (serde_json's `Deserializer`
//! driven by a visitor; kept as the oracle of `tests/json_validate_props.rs`), and gives the
//! same dead-letter reason, because the first defect in document order decides both. It is
//! faster because it walks string bodies eight bytes at a time and leaves UTF-8 to one
//! `from_utf8` over the whole line instead of one per string.

use std::borrow::Cow;
use std::collections::HashSet;
use std::ops::Range;

use crate::json::{DecodeError, MAX_NESTING_DEPTH};
use crate::json_write::next_to_escape;

/// Keys of one object are compared one by one up to this many; records have a few dozen keys
/// per object at most, where a linear search beats hashing. Past it the object's keys move
/// into a hash set, so a huge object costs linear time, not quadratic.
const LINEAR_KEYS: usize = 32;

/// A number whose integer digits plus exponent stay at or below this is below 1e308, finite
/// however it is rounded; only larger ones can overflow f64, which serde_json rejects.
const SURELY_FINITE_DECIMAL_EXPONENT: i64 = 308;

/// Checks `bytes` as one JSON document. Invalid UTF-8 is rejected as `invalid_json` where
/// serde_json rejected it: inside a string when the string is complete, elsewhere at once.
pub(crate) fn validate(bytes: &[u8]) -> Result<(), DecodeError> {
    let utf8_valid_up_to = match std::str::from_utf8(bytes) {
        Ok(_) => bytes.len(),
        Err(e) => e.valid_up_to(),
    };
    scan(bytes, utf8_valid_up_to).map_err(|e| e.into_decode_error(bytes))
}

/// [`validate`] for text already known to be UTF-8 (a decoded line): no second UTF-8 pass.
pub(crate) fn validate_str(text: &str) -> Result<(), DecodeError> {
    let bytes = text.as_bytes();
    scan(bytes, bytes.len()).map_err(|e| e.into_decode_error(bytes))
}

fn scan(bytes: &[u8], utf8_valid_up_to: usize) -> Result<(), Fault> {
    let mut scanner = Scanner {
        bytes,
        pos: 0,
        utf8_valid_up_to,
        // Enough for the members of a typical record and its nested objects: no regrowth.
        keys: Vec::with_capacity(LINEAR_KEYS),
    };
    scanner.value(0)?;
    scanner.skip_whitespace();
    if scanner.pos < bytes.len() {
        return Err(scanner.fault(What::TrailingCharacters));
    }
    Ok(())
}

/// What is wrong with a document; each maps to one dead-letter reason and one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    UnexpectedEnd,
    ExpectedValue,
    ExpectedKey,
    ExpectedColon,
    ExpectedCommaOrBrace,
    ExpectedCommaOrBracket,
    TrailingComma,
    InvalidLiteral,
    InvalidNumber,
    NumberOutOfRange,
    ControlCharacter,
    InvalidEscape,
    LoneSurrogate,
    UnterminatedString,
    InvalidUtf8,
    TrailingCharacters,
    TooDeep,
    DuplicateKey,
}

/// The first defect found and the byte it is at. Small, so the scanner's many `?` stay cheap;
/// the message is written only once the document is known to be rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fault {
    what: What,
    at: usize,
}

impl Fault {
    #[cold]
    fn into_decode_error(self, bytes: &[u8]) -> DecodeError {
        let reason = match self.what {
            What::TooDeep => "nesting_too_deep",
            What::DuplicateKey => "duplicate_key",
            _ => "invalid_json",
        };
        let at = self.at;
        let message = match self.what {
            What::UnexpectedEnd => format!("unexpected end of input at byte {at}"),
            What::ExpectedValue => format!("expected a value at byte {at}"),
            What::ExpectedKey => format!("expected a string key at byte {at}"),
            What::ExpectedColon => format!("expected ':' after an object key at byte {at}"),
            What::ExpectedCommaOrBrace => {
                format!("expected ',' or '}}' after an object member at byte {at}")
            }
            What::ExpectedCommaOrBracket => {
                format!("expected ',' or ']' after an array element at byte {at}")
            }
            What::TrailingComma => format!("trailing comma before byte {at}"),
            What::InvalidLiteral => format!("invalid literal (true, false or null) at byte {at}"),
            What::InvalidNumber => format!("invalid number at byte {at}"),
            What::NumberOutOfRange => format!("number out of range at byte {at}"),
            What::ControlCharacter => format!("control character in a string at byte {at}"),
            What::InvalidEscape => format!("invalid escape at byte {at}"),
            What::LoneSurrogate => format!("unpaired surrogate in a \\u escape at byte {at}"),
            What::UnterminatedString => format!("unterminated string starting at byte {at}"),
            What::InvalidUtf8 => format!("invalid UTF-8 in a string at byte {at}"),
            What::TrailingCharacters => format!("trailing characters at byte {at}"),
            What::TooDeep => format!("nesting deeper than {MAX_NESTING_DEPTH} levels at byte {at}"),
            What::DuplicateKey => format!(
                "duplicate key {:?} at byte {at}",
                key_for_message(bytes, at)
            ),
        };
        DecodeError { reason, message }
    }
}

/// The key whose opening quote is at `at`, cut to 64 characters: a message names the key and
/// carries nothing else of the record.
fn key_for_message(bytes: &[u8], at: usize) -> String {
    const MAX_CHARS: usize = 64;
    let mut scanner = Scanner {
        bytes,
        pos: at,
        utf8_valid_up_to: bytes.len(),
        keys: Vec::new(),
    };
    let key = scanner.key().map(|k| k.text).unwrap_or_default();
    let key = String::from_utf8_lossy(&key);
    match key.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}...", &key[..cut]),
        None => key.into_owned(),
    }
}

struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Strings ending after this byte hold the first invalid UTF-8 sequence.
    utf8_valid_up_to: usize,
    /// The keys seen so far in each open object that still compares keys one by one,
    /// innermost object last.
    keys: Vec<Key<'a>>,
}

/// An object key as compared for duplicates: unescaped only where it has escapes.
#[derive(PartialEq, Eq, Hash)]
struct Key<'a> {
    /// Compared first (fields compare in order): most keys of an object differ in it, and
    /// one integer is cheaper to compare than two texts.
    digest: u64,
    text: Cow<'a, [u8]>,
}

impl<'a> Key<'a> {
    fn new(text: Cow<'a, [u8]>) -> Self {
        Key {
            digest: digest(&text),
            text,
        }
    }
}

/// The length and the first, middle and last bytes: a few loads, no loop, and enough to tell
/// apart most keys of one object, which mostly differ in length or near their ends.
fn digest(key: &[u8]) -> u64 {
    let n = key.len();
    let byte = |i: usize| u64::from(key.get(i).copied().unwrap_or(0));
    (n as u64 & 0xff_ffff) | (byte(0) << 24) | (byte(n / 2) << 32) | (byte(n.wrapping_sub(1)) << 40)
}

impl<'a> Scanner<'a> {
    fn fault(&self, what: What) -> Fault {
        Fault { what, at: self.pos }
    }

    /// The fault for the byte at `pos`, or for the end of the input if there is none.
    fn unexpected(&self, what: What) -> Fault {
        if self.pos < self.bytes.len() {
            self.fault(what)
        } else {
            self.fault(What::UnexpectedEnd)
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        self.pos += usize::from(found);
        found
    }

    /// Records rarely have whitespace between tokens: one comparison rules it out.
    #[inline(always)]
    fn skip_whitespace(&mut self) {
        if self.peek().is_some_and(|b| b > b' ') {
            return;
        }
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// A value inside `depth` arrays and objects, after optional whitespace. Inlined into the
    /// member loops, so the common string or number member costs no call of a container's
    /// size (containers recurse and stay out of line).
    #[inline(always)]
    fn value(&mut self, depth: usize) -> Result<(), Fault> {
        self.skip_whitespace();
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().map(drop),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            _ => Err(self.unexpected(What::ExpectedValue)),
        }
    }

    /// Steps over the `[` or `{` of a container at nesting `level`. The depth is checked
    /// before anything inside is looked at, as serde_json's visitor did: `[[...[x` past level
    /// 64 is too deep whatever `x` is.
    fn open(&mut self, level: usize) -> Result<(), Fault> {
        if level > MAX_NESTING_DEPTH {
            return Err(self.fault(What::TooDeep));
        }
        self.pos += 1;
        Ok(())
    }

    #[inline(never)]
    fn array(&mut self, level: usize) -> Result<(), Fault> {
        self.open(level)?;
        self.skip_whitespace();
        if self.eat(b']') {
            return Ok(());
        }
        loop {
            self.value(level)?;
            self.skip_whitespace();
            if self.eat(b']') {
                return Ok(());
            }
            if !self.eat(b',') {
                return Err(self.unexpected(What::ExpectedCommaOrBracket));
            }
            self.skip_whitespace();
            if self.peek() == Some(b']') {
                return Err(self.fault(What::TrailingComma));
            }
        }
    }

    #[inline(never)]
    fn object(&mut self, level: usize) -> Result<(), Fault> {
        self.open(level)?;
        self.skip_whitespace();
        if self.eat(b'}') {
            return Ok(());
        }
        let keys_from = self.keys.len();
        let mut hashed = None;
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.unexpected(What::ExpectedKey));
            }
            let key_at = self.pos;
            let key = self.key()?;
            // Before the ':' is looked at, as serde_json's visitor did.
            if !self.remember_key(key, keys_from, &mut hashed) {
                return Err(Fault {
                    what: What::DuplicateKey,
                    at: key_at,
                });
            }
            self.skip_whitespace();
            if !self.eat(b':') {
                return Err(self.unexpected(What::ExpectedColon));
            }
            self.value(level)?;
            self.skip_whitespace();
            if self.eat(b'}') {
                break;
            }
            if !self.eat(b',') {
                return Err(self.unexpected(What::ExpectedCommaOrBrace));
            }
            self.skip_whitespace();
            if self.peek() == Some(b'}') {
                return Err(self.fault(What::TrailingComma));
            }
        }
        self.keys.truncate(keys_from);
        Ok(())
    }

    /// Adds `key` to the keys of the object whose keys start at `keys_from` (or live in
    /// `hashed`, once it has many); false if the object already has it.
    fn remember_key(
        &mut self,
        key: Key<'a>,
        keys_from: usize,
        hashed: &mut Option<HashSet<Key<'a>>>,
    ) -> bool {
        if let Some(set) = hashed {
            return set.insert(key);
        }
        let earlier = self.keys.get(keys_from..).unwrap_or_default();
        if earlier.contains(&key) {
            return false;
        }
        if earlier.len() < LINEAR_KEYS {
            self.keys.push(key);
        } else {
            let mut set: HashSet<_> = self.keys.drain(keys_from..).collect();
            set.insert(key);
            *hashed = Some(set);
        }
        true
    }

    /// A key string, unescaped if it has escapes, so `"a"` and `"\u0061"` compare equal.
    fn key(&mut self) -> Result<Key<'a>, Fault> {
        let start = self.pos + 1;
        let escaped = self.string()?;
        let content = start..self.pos - 1;
        let text = if escaped {
            Cow::Owned(unescape(self.bytes, content)?)
        } else {
            Cow::Borrowed(self.bytes.get(content).unwrap_or_default())
        };
        Ok(Key::new(text))
    }

    /// A string whose opening quote is at `pos`; whether its body has escapes. Most strings
    /// have none: one search finds their closing quote, in a path small enough to inline.
    #[inline]
    fn string(&mut self) -> Result<bool, Fault> {
        match next_to_escape(self.bytes, self.pos + 1) {
            Some(end) if self.bytes.get(end) == Some(&b'"') && end <= self.utf8_valid_up_to => {
                self.pos = end + 1;
                Ok(false)
            }
            _ => self.string_with_escapes_or_faults(),
        }
    }

    #[inline(never)]
    fn string_with_escapes_or_faults(&mut self) -> Result<bool, Fault> {
        let mut from = self.pos + 1;
        let mut escaped = false;
        let end = loop {
            let Some(at) = next_to_escape(self.bytes, from) else {
                return Err(self.fault(What::UnterminatedString));
            };
            match self.bytes.get(at) {
                Some(b'"') => break at,
                Some(b'\\') => {
                    from = escape(self.bytes, at)?.1;
                    escaped = true;
                }
                _ => {
                    return Err(Fault {
                        what: What::ControlCharacter,
                        at,
                    })
                }
            }
        };
        // serde_json checked each string's UTF-8 once the string was read; the first invalid
        // byte is either in this string, or outside strings and so already rejected above.
        if self.utf8_valid_up_to < end {
            return Err(Fault {
                what: What::InvalidUtf8,
                at: self.utf8_valid_up_to,
            });
        }
        self.pos = end + 1;
        Ok(escaped)
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, and not beyond f64's range.
    fn number(&mut self) -> Result<(), Fault> {
        let start = self.pos;
        self.eat(b'-');
        let int_start = self.pos;
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.skip_digits(),
            _ => return Err(self.unexpected(What::InvalidNumber)),
        }
        let int_digits = self.pos - int_start;
        if matches!(self.peek(), Some(b'0'..=b'9')) {
            // Only a leading zero ends the integer part with a digit after it.
            return Err(self.fault(What::InvalidNumber));
        }
        if self.eat(b'.') {
            self.required_digits()?;
        }
        let mut exponent: i64 = 0;
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            let negative = self.eat(b'-');
            if !negative {
                self.eat(b'+');
            }
            exponent = self.required_digits()?;
            if negative {
                exponent = -exponent;
            }
        }
        let magnitude = i64::try_from(int_digits)
            .unwrap_or(i64::MAX)
            .saturating_add(exponent);
        if magnitude > SURELY_FINITE_DECIMAL_EXPONENT {
            let text = self.bytes.get(start..self.pos).unwrap_or_default();
            if !serde_json_accepts_number(text) {
                return Err(Fault {
                    what: What::NumberOutOfRange,
                    at: start,
                });
            }
        }
        Ok(())
    }

    fn skip_digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    /// One or more digits; their value, saturated far beyond any exponent that matters.
    fn required_digits(&mut self) -> Result<i64, Fault> {
        let start = self.pos;
        let mut value: i64 = 0;
        while let Some(digit @ b'0'..=b'9') = self.peek() {
            value = (value * 10 + i64::from(digit - b'0')).min(1 << 40);
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.unexpected(What::InvalidNumber));
        }
        Ok(value)
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Fault> {
        match self.bytes.get(self.pos..self.pos + word.len()) {
            Some(found) if found == word => {
                self.pos += word.len();
                Ok(())
            }
            _ => Err(self.fault(What::InvalidLiteral)),
        }
    }
}

/// Whether serde_json takes this number (already known to be well-formed) as an f64 rather
/// than failing with "number out of range". Asked only for numbers of 1e308 or more, so
/// rarely: its answer near f64::MAX depends on whether its `float_roundtrip` feature is on
/// (some crate of the workspace turns it on), and asking it is the only way to agree in every
/// build.
#[cold]
fn serde_json_accepts_number(text: &[u8]) -> bool {
    use serde::Deserializer as _;
    let mut de = serde_json::Deserializer::from_slice(text);
    (&mut de).deserialize_any(serde::de::IgnoredAny).is_ok()
}

/// The escape whose backslash is at `at`: the character it stands for and the index after it.
/// A `\u` escape must be a whole character: a surrogate only as a high-low pair.
fn escape(bytes: &[u8], at: usize) -> Result<(char, usize), Fault> {
    let fault = |what| Fault { what, at };
    let simple = match bytes.get(at + 1) {
        Some(b'"') => '"',
        Some(b'\\') => '\\',
        Some(b'/') => '/',
        Some(b'b') => '\u{8}',
        Some(b'f') => '\u{c}',
        Some(b'n') => '\n',
        Some(b'r') => '\r',
        Some(b't') => '\t',
        Some(b'u') => return unicode_escape(bytes, at),
        Some(_) => return Err(fault(What::InvalidEscape)),
        None => return Err(fault(What::UnterminatedString)),
    };
    Ok((simple, at + 2))
}

/// `\uXXXX`, or `\uD8xx\uDCxx` for a character beyond the BMP, starting at `at`.
fn unicode_escape(bytes: &[u8], at: usize) -> Result<(char, usize), Fault> {
    let fault = |what| Fault { what, at };
    let unit = hex4(bytes, at + 2).ok_or(fault(What::InvalidEscape))?;
    let (code, next) = match unit {
        0xD800..=0xDBFF => {
            if bytes.get(at + 6..at + 8) != Some(b"\\u") {
                return Err(fault(What::LoneSurrogate));
            }
            let low = hex4(bytes, at + 8).ok_or(fault(What::InvalidEscape))?;
            if !(0xDC00..=0xDFFF).contains(&low) {
                return Err(fault(What::LoneSurrogate));
            }
            (
                0x1_0000 + (((unit - 0xD800) << 10) | (low - 0xDC00)),
                at + 12,
            )
        }
        _ => (unit, at + 6),
    };
    // None only for a low surrogate without a high one before it.
    let c = char::from_u32(code).ok_or(fault(What::LoneSurrogate))?;
    Ok((c, next))
}

/// The four hex digits at `at` as a number.
fn hex4(bytes: &[u8], at: usize) -> Option<u32> {
    let digits = bytes.get(at..at + 4)?;
    digits.iter().try_fold(0, |n, &d| {
        let v = char::from(d).to_digit(16)?;
        Some((n << 4) | v)
    })
}

/// The body `content` of a string literal in `text` with its escapes decoded, or None if one
/// of them is invalid: how the borrowed view (`json_borrowed`) reads a string with escapes.
pub(crate) fn unescape_str(text: &str, content: Range<usize>) -> Option<String> {
    let bytes = unescape(text.as_bytes(), content).ok()?;
    // Valid: the text is, and each escape decodes to a whole character.
    String::from_utf8(bytes).ok()
}

/// The body `content` of a string already validated, with its escapes decoded.
fn unescape(bytes: &[u8], content: Range<usize>) -> Result<Vec<u8>, Fault> {
    let mut out = Vec::with_capacity(content.len());
    let mut i = content.start;
    while i < content.end {
        let rest = bytes.get(i..content.end).unwrap_or_default();
        let Some(backslash) = memchr::memchr(b'\\', rest) else {
            out.extend_from_slice(rest);
            break;
        };
        out.extend_from_slice(rest.get(..backslash).unwrap_or_default());
        let (c, next) = escape(bytes, i + backslash)?;
        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        i = next;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn what(doc: &str) -> Option<What> {
        scan(doc.as_bytes(), doc.len()).err().map(|f| f.what)
    }

    fn rejects(doc: &str, want: What) {
        assert_eq!(what(doc), Some(want), "{doc:?}");
    }

    fn accepts(doc: &str) {
        assert_eq!(what(doc), None, "{doc:?}");
    }

    fn message(doc: &[u8]) -> DecodeError {
        validate(doc).expect_err("rejected")
    }

    fn nested(levels: usize) -> String {
        format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn any_value_is_a_document() {
        for doc in [
            "{}",
            "[]",
            "\"\"",
            "0",
            "-0.5e+3",
            "true",
            "false",
            "null",
            " {} \r\n\t",
        ] {
            accepts(doc);
        }
    }

    #[test]
    fn only_space_tab_cr_and_lf_are_whitespace() {
        accepts(" \t\r\n{ \t\r\n\"a\" \t\r\n: \t\r\n[ 1 , 2 ] \t\r\n} \t\r\n");
        rejects("\u{c}{}", What::ExpectedValue);
        rejects("{}\u{b}", What::TrailingCharacters);
        rejects("{\u{a0}}", What::ExpectedKey);
    }

    #[test]
    fn nothing_may_follow_the_document() {
        rejects("{} {}", What::TrailingCharacters);
        rejects("1 2", What::TrailingCharacters);
        rejects("{}x", What::TrailingCharacters);
        rejects("", What::UnexpectedEnd);
        rejects("   ", What::UnexpectedEnd);
    }

    #[test]
    fn objects_need_string_keys_colons_and_commas() {
        rejects("{a:1}", What::ExpectedKey);
        rejects("{1:1}", What::ExpectedKey);
        rejects("{\"a\" 1}", What::ExpectedColon);
        rejects("{\"a\":1 \"b\":2}", What::ExpectedCommaOrBrace);
        rejects("{\"a\":1,}", What::TrailingComma);
        rejects("{,}", What::ExpectedKey);
        rejects("{\"a\":1,,\"b\":2}", What::ExpectedKey);
        rejects("{\"a\":}", What::ExpectedValue);
        rejects("{\"a\":1", What::UnexpectedEnd);
        rejects("{\"a\"", What::UnexpectedEnd);
        rejects("{", What::UnexpectedEnd);
    }

    #[test]
    fn arrays_need_commas_and_no_trailing_comma() {
        accepts("[1,[2,{}],\"x\"]");
        rejects("[1 2]", What::ExpectedCommaOrBracket);
        rejects("[1,]", What::TrailingComma);
        rejects("[,1]", What::ExpectedValue);
        rejects("[1,", What::UnexpectedEnd);
        rejects("[", What::UnexpectedEnd);
        rejects("[}", What::ExpectedValue);
    }

    #[test]
    fn literals_are_spelled_out_in_lower_case() {
        rejects("tru", What::InvalidLiteral);
        rejects("True", What::ExpectedValue);
        rejects("nul", What::InvalidLiteral);
        rejects("[nulL]", What::InvalidLiteral);
        rejects("falsey", What::TrailingCharacters);
    }

    #[test]
    fn numbers_follow_the_json_grammar() {
        for n in [
            "0",
            "-0",
            "12",
            "1.5",
            "0.25",
            "1e5",
            "1E+5",
            "1e-5",
            "-12.5e-003",
        ] {
            accepts(n);
        }
        rejects("01", What::InvalidNumber);
        rejects("-01", What::InvalidNumber);
        rejects("-", What::UnexpectedEnd);
        rejects("-a", What::InvalidNumber);
        rejects("+1", What::ExpectedValue);
        rejects(".5", What::ExpectedValue);
        rejects("1.", What::UnexpectedEnd);
        rejects("1.e5", What::InvalidNumber);
        rejects("1e", What::UnexpectedEnd);
        rejects("1e+", What::UnexpectedEnd);
        rejects("[1e+]", What::InvalidNumber);
        rejects("0x10", What::TrailingCharacters);
        rejects("1.5.", What::TrailingCharacters);
    }

    #[test]
    fn numbers_beyond_f64_are_rejected_small_ones_are_not() {
        rejects("1e400", What::NumberOutOfRange);
        rejects("-1e309", What::NumberOutOfRange);
        rejects(&format!("1{}", "0".repeat(400)), What::NumberOutOfRange);
        rejects("1e99999999999999999999", What::NumberOutOfRange);
        accepts("1e308");
        accepts("1.5e-400");
        accepts("1e-99999999999999999999");
        accepts("0e400");
        accepts("0.0e99999999999999999999");
        accepts(&format!("1{}e-300", "0".repeat(400)));
        accepts(&format!("0.{}1e400", "0".repeat(400)));
        accepts("123456789012345678901234567890");
    }

    #[test]
    fn strings_allow_the_json_escapes_and_nothing_else() {
        accepts(r#""\" \\ \/ \b \f \n \r \t \u0041 \u00e9 \uFFFF \ud83e\udd80""#);
        rejects(r#""\a""#, What::InvalidEscape);
        rejects(r#""\x41""#, What::InvalidEscape);
        rejects(r#""\u12""#, What::InvalidEscape);
        rejects(r#""\u12G4""#, What::InvalidEscape);
        rejects("\"\\", What::UnterminatedString);
        rejects("\"\\u12", What::InvalidEscape);
    }

    #[test]
    fn surrogates_only_in_high_low_pairs() {
        accepts(r#""\uD800\uDC00\uDBFF\uDFFF""#);
        rejects(r#""\ud800""#, What::LoneSurrogate);
        rejects(r#""\udc00""#, What::LoneSurrogate);
        rejects(r#""\udc00\ud800""#, What::LoneSurrogate);
        rejects(r#""\ud800\ud800""#, What::LoneSurrogate);
        rejects(r#""\ud800\u0041""#, What::LoneSurrogate);
        rejects(r#""\ud800\n""#, What::LoneSurrogate);
        rejects(r#""\ud800x""#, What::LoneSurrogate);
        rejects(r#""\ud800\uZZZZ""#, What::InvalidEscape);
    }

    #[test]
    fn raw_control_bytes_are_rejected_in_strings() {
        for b in 0u8..0x20 {
            let doc = format!("\"ab{}c\"", char::from(b));
            rejects(&doc, What::ControlCharacter);
        }
        accepts("\"\u{7f} é 🦀\"");
        rejects("\"abc", What::UnterminatedString);
    }

    #[test]
    fn nesting_counts_arrays_and_objects_from_one() {
        accepts(&nested(64));
        rejects(&nested(65), What::TooDeep);
        let objects = |n: usize| format!("{}{{}}{}", "{\"a\":".repeat(n - 1), "}".repeat(n - 1));
        accepts(&objects(64));
        rejects(&objects(65), What::TooDeep);
        // Too deep wins over what follows the 65th opening bracket.
        rejects(&format!("{}x", "[".repeat(65)), What::TooDeep);
        rejects(&format!("{}x", "[".repeat(64)), What::ExpectedValue);
    }

    #[test]
    fn a_key_twice_in_one_object_is_a_duplicate_even_when_escaped() {
        rejects(r#"{"a":1,"a":2}"#, What::DuplicateKey);
        rejects(r#"{"a":1,"\u0061":2}"#, What::DuplicateKey);
        rejects(r#"{"\/":1,"/":2}"#, What::DuplicateKey);
        rejects(r#"{"🦀":1,"\ud83e\udd80":2}"#, What::DuplicateKey);
        accepts(r#"{"a":{"a":1},"b":[{"a":1},{"a":2}]}"#);
        accepts(r#"{"a":1,"A":2,"a ":3,"\u0062":4}"#);
        // Same length, first, middle and last byte: one digest, two keys.
        accepts(r#"{"aXbc":1,"aYbc":2}"#);
        // Found when the key is read, before the rest of the member is looked at.
        rejects(r#"{"a":1,"a""#, What::DuplicateKey);
    }

    #[test]
    fn duplicates_are_found_in_objects_too_big_to_search_linearly() {
        let keys: Vec<String> = (0..200).map(|i| format!("\"k{i}\":{i}")).collect();
        accepts(&format!("{{{}}}", keys.join(",")));
        for dup in [0, 31, 32, 33, 199] {
            rejects(
                &format!("{{{},\"k{dup}\":0}}", keys.join(",")),
                What::DuplicateKey,
            );
        }
        // The keys of an inner object, past the switch, do not leak into the outer one.
        accepts(&format!("{{\"o\":{{{}}},\"k1\":1}}", keys.join(",")));
    }

    #[test]
    fn invalid_utf8_is_invalid_json_where_serde_json_found_it() {
        assert_eq!(message(b"{\"a\":\"\xff\"}").reason, "invalid_json");
        assert_eq!(message(b"{\"a\":\xff}").reason, "invalid_json");
        assert_eq!(message(b"{\"\xc3\":1,\"\xc3\":1}").reason, "invalid_json");
        // A defect before the bad byte still decides the reason.
        assert_eq!(message(b"{\"a\":1,\"a\":\"\xff\"}").reason, "duplicate_key");
        assert!(validate("{\"é\":\"🦀\"}".as_bytes()).is_ok());
    }

    #[test]
    fn messages_name_the_defect_and_its_byte_and_nothing_else_of_the_record() {
        let e = message(br#"{"secret":1,"a" 1}"#);
        assert_eq!(e.reason, "invalid_json");
        assert_eq!(e.message, "expected ':' after an object key at byte 16");
        let e = message(br#"{"secret":1,"\u0061":2,"a":3}"#);
        assert_eq!(e.reason, "duplicate_key");
        assert_eq!(e.message, "duplicate key \"a\" at byte 23");
        let e = message(nested(65).as_bytes());
        assert_eq!(e.reason, "nesting_too_deep");
        assert_eq!(e.message, "nesting deeper than 64 levels at byte 64");
        let long = "k".repeat(100);
        let e = message(format!("{{\"{long}\":1,\"{long}\":2}}").as_bytes());
        assert_eq!(
            e.message,
            format!("duplicate key \"{}...\" at byte 106", "k".repeat(64))
        );
    }
}
