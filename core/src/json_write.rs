//! Writing JSON text directly: string escaping, objects built field by field, and a
//! serializer for `Value` trees that is faster than serde_json's generic one on our data
//! (it finds the bytes to escape eight at a time), with the same output.

use crate::event::{JsonObjectText, Object, Value};

/// Where JSON text is written: a `String` (event text) or a `Vec<u8>` (a sink's buffer).
pub trait JsonOut {
    fn push_str(&mut self, s: &str);

    /// `"s"`: `s` needs no escaping. (One capacity check instead of three: most strings
    /// written are short, so the calls cost more than the bytes.)
    fn push_quoted(&mut self, s: &str) {
        self.push_str("\"");
        self.push_str(s);
        self.push_str("\"");
    }
}

impl JsonOut for String {
    fn push_str(&mut self, s: &str) {
        String::push_str(self, s);
    }

    fn push_quoted(&mut self, s: &str) {
        self.reserve(s.len() + 2);
        self.push('"');
        String::push_str(self, s);
        self.push('"');
    }
}

impl JsonOut for Vec<u8> {
    fn push_str(&mut self, s: &str) {
        self.extend_from_slice(s.as_bytes());
    }

    fn push_quoted(&mut self, s: &str) {
        self.reserve(s.len() + 2);
        self.push(b'"');
        self.extend_from_slice(s.as_bytes());
        self.push(b'"');
    }
}

/// Appends `value` as compact JSON, byte for byte what `serde_json::to_writer` writes.
pub fn write_value<O: JsonOut>(out: &mut O, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => out.push_str(itoa::Buffer::new().format(u)),
            (None, Some(i)) => out.push_str(itoa::Buffer::new().format(i)),
            // Floats: serde_json's own formatting (shortest round-trip form).
            (None, None) => out.push_str(&n.to_string()),
        },
        Value::String(s) => push_json_string(out, s),
        Value::Array(items) => {
            out.push_str("[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(",");
                }
                write_value(out, item);
            }
            out.push_str("]");
        }
        Value::Object(fields) => write_object(out, fields),
    }
}

pub fn write_object<O: JsonOut>(out: &mut O, fields: &Object) {
    out.push_str("{");
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push_str(",");
        }
        push_json_string(out, key);
        out.push_str(":");
        write_value(out, value);
    }
    out.push_str("}");
}

/// An object key as [`JsonObjectWriter`] writes it: any text (escaped as needed), or a key
/// written into the program that needs no escaping ([`Key::plain`]), copied without looking
/// at its bytes. Most keys of an OCSF event are attribute names of the second kind, and
/// looking for bytes to escape in them was a tenth of writing the event.
#[derive(Debug, Clone, Copy)]
pub struct Key<'k> {
    text: &'k str,
    form: KeyForm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyForm {
    /// Any text: escaped as needed.
    Text,
    /// Text with nothing to escape.
    Plain,
    /// A JSON string literal, quotes included.
    Quoted,
}

impl Key<'static> {
    /// A key in the program's own text, such as an OCSF attribute name: no `"`, `\\` or
    /// control character (checked in debug builds).
    pub fn plain(text: &'static str) -> Self {
        debug_assert!(next_to_escape(text.as_bytes(), 0).is_none(), "{text:?}");
        Key {
            text,
            form: KeyForm::Plain,
        }
    }
}

impl<'k> Key<'k> {
    /// A key as it was written in a validated JSON text, quotes and escapes included (a
    /// source record's member name passed on): copied as it is.
    pub fn quoted(literal: &'k str) -> Self {
        debug_assert!(literal.len() >= 2 && literal.starts_with('"') && literal.ends_with('"'));
        Key {
            text: literal,
            form: KeyForm::Quoted,
        }
    }
}

impl<'k> From<&'k str> for Key<'k> {
    fn from(text: &'k str) -> Self {
        Key {
            text,
            form: KeyForm::Text,
        }
    }
}

impl<'k> From<&'k String> for Key<'k> {
    fn from(text: &'k String) -> Self {
        Key::from(text.as_str())
    }
}

impl<'k> From<&'k std::borrow::Cow<'_, str>> for Key<'k> {
    fn from(text: &'k std::borrow::Cow<'_, str>) -> Self {
        Key::from(text.as_ref())
    }
}

/// Writes a JSON object field by field straight into its text, for components that build
/// their records (`decoding: lines`, the `ocsf` transform): no `Object` is built just to be
/// serialized again, and the text is valid by construction (objects left open are closed by
/// [`finish`](Self::finish)). Keys within one object must be distinct: the caller writes a
/// fixed or de-duplicated set.
pub struct JsonObjectWriter {
    text: String,
    /// The innermost open object has no member yet (no comma before the next key).
    empty: bool,
    /// Objects opened with `begin_object` and not closed yet.
    depth: usize,
}

/// A position of a [`JsonObjectWriter`], from [`JsonObjectWriter::mark`].
#[derive(Debug, Clone, Copy)]
pub struct WriterMark {
    len: usize,
    empty: bool,
    depth: usize,
}

impl JsonObjectWriter {
    pub fn with_capacity(capacity: usize) -> Self {
        let mut text = String::with_capacity(capacity);
        text.push('{');
        JsonObjectWriter {
            text,
            empty: true,
            depth: 0,
        }
    }

    #[inline]
    fn key<'k>(&mut self, key: impl Into<Key<'k>>) {
        let key = key.into();
        // `,"key":` with one capacity check: an event has dozens of short keys.
        self.text.reserve(key.text.len() + 4);
        if !self.empty {
            self.text.push(',');
        }
        self.empty = false;
        match key.form {
            KeyForm::Quoted => {
                self.text.push_str(key.text);
                self.text.push(':');
            }
            KeyForm::Text if next_to_escape(key.text.as_bytes(), 0).is_some() => {
                push_json_string(&mut self.text, key.text);
                self.text.push(':');
            }
            KeyForm::Plain | KeyForm::Text => {
                self.text.push('"');
                self.text.push_str(key.text);
                self.text.push_str("\":");
            }
        }
    }

    pub fn string<'k>(&mut self, key: impl Into<Key<'k>>, value: &str) -> &mut Self {
        self.key(key);
        push_json_string(&mut self.text, value);
        self
    }

    pub fn unsigned<'k>(&mut self, key: impl Into<Key<'k>>, value: u64) -> &mut Self {
        self.key(key);
        self.text.push_str(itoa::Buffer::new().format(value));
        self
    }

    pub fn integer<'k>(&mut self, key: impl Into<Key<'k>>, value: i64) -> &mut Self {
        self.key(key);
        self.text.push_str(itoa::Buffer::new().format(value));
        self
    }

    pub fn boolean<'k>(&mut self, key: impl Into<Key<'k>>, value: bool) -> &mut Self {
        self.key(key);
        self.text.push_str(if value { "true" } else { "false" });
        self
    }

    /// Any JSON value (serialized as [`write_value`] does).
    pub fn value<'k>(&mut self, key: impl Into<Key<'k>>, value: &Value) -> &mut Self {
        self.key(key);
        write_value(&mut self.text, value);
        self
    }

    /// A value already written as JSON text: a member's value copied from a validated object
    /// text. The caller guarantees it is one valid JSON value.
    pub fn raw<'k>(&mut self, key: impl Into<Key<'k>>, json: &str) -> &mut Self {
        self.key(key);
        self.text.push_str(json);
        self
    }

    /// Members already written as JSON text (`"a":1,"b":2`, the inside of a validated object),
    /// appended to the current object. The caller guarantees their keys are not written again.
    pub fn raw_members(&mut self, json: &str) -> &mut Self {
        if !self.empty {
            self.text.push(',');
        }
        self.empty = false;
        self.text.push_str(json);
        self
    }

    /// Opens a nested object under `key`; members written next go into it until
    /// [`end_object`](Self::end_object).
    pub fn begin_object<'k>(&mut self, key: impl Into<Key<'k>>) -> &mut Self {
        self.key(key);
        self.text.push('{');
        self.empty = true;
        self.depth += 1;
        self
    }

    /// Closes the innermost object opened with [`begin_object`](Self::begin_object) (no-op
    /// at the top level, which only `finish` closes).
    pub fn end_object(&mut self) -> &mut Self {
        if self.depth > 0 {
            self.text.push('}');
            self.depth -= 1;
            self.empty = false;
        }
        self
    }

    /// Where the writer is now, to [`rollback`](Self::rollback) to (e.g. to take back an
    /// object that turned out empty).
    pub fn mark(&self) -> WriterMark {
        WriterMark {
            len: self.text.len(),
            empty: self.empty,
            depth: self.depth,
        }
    }

    /// Takes back everything written since `mark`.
    pub fn rollback(&mut self, mark: WriterMark) {
        self.text.truncate(mark.len);
        self.empty = mark.empty;
        self.depth = mark.depth;
    }

    pub fn finish(mut self) -> JsonObjectText {
        for _ in 0..=self.depth {
            self.text.push('}');
        }
        JsonObjectText(self.text.into_boxed_str())
    }
}

/// Appends `s` as a JSON string literal, escaped as serde_json does (`"`, `\\`, control
/// characters), copying the runs between escapes in one piece.
#[inline]
pub fn push_json_string<O: JsonOut>(out: &mut O, s: &str) {
    match next_to_escape(s.as_bytes(), 0) {
        None => out.push_quoted(s),
        Some(first) => push_escaped(out, s, first),
    }
}

/// `s` as a JSON string, `first` being the position of its first byte to escape.
#[cold]
fn push_escaped<O: JsonOut>(out: &mut O, s: &str, first: usize) {
    let bytes = s.as_bytes();
    out.push_str("\"");
    let mut run_start = 0;
    let mut next = Some(first);
    while let Some(i) = next {
        // Every byte that needs escaping is ASCII, so `i` is a char boundary.
        out.push_str(&s[run_start..i]);
        match bytes[i] {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            b => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let code = [
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ];
                out.push_str(std::str::from_utf8(&code).unwrap_or("\\ufffd"));
            }
        }
        run_start = i + 1;
        next = next_to_escape(bytes, run_start);
    }
    out.push_str(&s[run_start..]);
    out.push_str("\"");
}

/// Position of the first byte at or after `from` that a JSON string must escape (`"`, `\\`,
/// below 0x20). Looks at eight bytes at a time (most text has long runs with nothing to
/// escape). The borrowed JSON view and the record validator use it to find the end of a string.
#[inline]
pub(crate) fn next_to_escape(bytes: &[u8], from: usize) -> Option<usize> {
    let rest = bytes.get(from..)?;
    let mut chunks = rest.chunks_exact(8);
    for (n, chunk) in chunks.by_ref().enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let hits = escape_mask(u64::from_le_bytes(word));
        if hits != 0 {
            return Some(from + n * 8 + (hits.trailing_zeros() / 8) as usize);
        }
    }
    let tail = chunks.remainder();
    if tail.is_empty() {
        return None;
    }
    // The last 1-7 bytes: as the last eight bytes when there are eight, overlapping bytes
    // already found clean (a flag below the first hit is never wrong, so the lowest flag is
    // still the first hit); else padded with a byte that needs no escape.
    let mut word = [b'a'; 8];
    let word_start = match rest.len().checked_sub(8) {
        Some(start) => {
            word.copy_from_slice(&rest[start..]);
            start
        }
        None => {
            word[..tail.len()].copy_from_slice(tail);
            0
        }
    };
    let hits = escape_mask(u64::from_le_bytes(word));
    (hits != 0).then(|| from + word_start + (hits.trailing_zeros() / 8) as usize)
}

/// High bit set in each byte of `x` that is `"`, `\\` or below 0x20. Bytes above the first
/// hit may be flagged wrongly (a borrow carries upward), but the lowest flag is always exact,
/// and only the lowest is used.
fn escape_mask(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let below_0x20 = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
    zero_byte(x ^ (ONES * u64::from(b'"'))) | zero_byte(x ^ (ONES * u64::from(b'\\'))) | below_0x20
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::validate_strict;

    #[test]
    fn written_objects_equal_serde_json_output() {
        let texts = [
            "plain",
            "quote \" back \\ slash",
            "ctl \u{1} \u{1f} \n\r\t \u{8}\u{c}",
            "é 🦀",
            "",
        ];
        for t in texts {
            let mut w = JsonObjectWriter::with_capacity(8);
            w.string("message", t)
                .unsigned("offset", 42)
                .boolean("flag", true);
            let text = w.finish();
            let mut want = Object::new();
            want.insert("message".into(), t.into());
            want.insert("offset".into(), 42.into());
            want.insert("flag".into(), true.into());
            assert_eq!(text.clone().into_object(), want, "{t:?}");
            let mut alone = String::new();
            push_json_string(&mut alone, t);
            assert_eq!(alone, serde_json::to_string(t).unwrap());
            assert!(validate_strict(text.as_str().as_bytes()).is_ok());
        }
    }

    #[test]
    fn each_key_form_writes_the_same_member_name() {
        let mut w = JsonObjectWriter::with_capacity(8);
        w.integer(Key::plain("plain"), 1)
            .integer("needs \"escaping\"\n", 2)
            .integer(Key::quoted(r#""as \u0077ritten""#), 3);
        w.begin_object(Key::plain("inner"))
            .integer(Key::quoted(r#""q\"""#), 4);
        let text = w.finish();
        assert!(validate_strict(text.as_str().as_bytes()).is_ok());
        let got = text.into_object();
        assert_eq!(got["plain"], 1);
        assert_eq!(got["needs \"escaping\"\n"], 2);
        assert_eq!(got["as written"], 3);
        assert_eq!(got["inner"]["q\""], 4);
    }

    #[test]
    fn escaping_matches_serde_json_for_every_byte_at_every_position() {
        // Each special byte alone, at each offset within and across the 8-byte words.
        for c in (0u8..0x80).map(char::from).chain(['é', '\u{2028}', '🦀']) {
            // Every length up to 18 bytes and every position of the byte in it: whole words,
            // a padded short tail, and a tail read as the last eight bytes.
            for len in 0..18 {
                for pad in 0..=len {
                    let s = format!("{}{c}{}", "x".repeat(pad), "y".repeat(len - pad));
                    let mut got = String::new();
                    push_json_string(&mut got, &s);
                    assert_eq!(got, serde_json::to_string(&s).unwrap(), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn values_are_written_as_serde_json_writes_them() {
        let docs = [
            r#"{"a":[1,-2,3.5,1e300,-0.0,18446744073709551615,-9223372036854775808],"b":null}"#,
            r#"{"s":"q\"b\\c\u0001\n é 🦀","t":true,"f":false,"o":{"z":{},"y":[]}}"#,
            r#"{"n":0.1,"m":100000000000000000000,"e":1.5e-7}"#,
        ];
        for doc in docs {
            let obj: Object = serde_json::from_str(doc).unwrap();
            let mut ours = Vec::new();
            write_object(&mut ours, &obj);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&obj).unwrap()
            );
        }
    }

    #[test]
    fn nested_objects_are_written_and_left_open_ones_closed_by_finish() {
        let mut w = JsonObjectWriter::with_capacity(8);
        w.integer("t", -5)
            .begin_object("a")
            .begin_object("b")
            .string("c", "x")
            .end_object()
            .value("d", &serde_json::json!([1, {"e": null}]))
            .end_object()
            .begin_object("empty")
            .end_object()
            .begin_object("open")
            .boolean("f", false);
        let text = w.finish();
        assert!(validate_strict(text.as_str().as_bytes()).is_ok());
        assert_eq!(
            serde_json::Value::Object(text.into_object()),
            serde_json::json!({"t": -5, "a": {"b": {"c": "x"}, "d": [1, {"e": null}]},
                               "empty": {}, "open": {"f": false}})
        );
    }
}
