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
    fn key(&mut self, key: &str) {
        // `,"key":` with one capacity check: an event has dozens of short keys.
        self.text.reserve(key.len() + 4);
        if !self.empty {
            self.text.push(',');
        }
        self.empty = false;
        push_json_string(&mut self.text, key);
        self.text.push(':');
    }

    pub fn string(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        push_json_string(&mut self.text, value);
        self
    }

    pub fn unsigned(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        self.text.push_str(itoa::Buffer::new().format(value));
        self
    }

    pub fn integer(&mut self, key: &str, value: i64) -> &mut Self {
        self.key(key);
        self.text.push_str(itoa::Buffer::new().format(value));
        self
    }

    pub fn boolean(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key);
        self.text.push_str(if value { "true" } else { "false" });
        self
    }

    /// Any JSON value (serialized as [`write_value`] does).
    pub fn value(&mut self, key: &str, value: &Value) -> &mut Self {
        self.key(key);
        write_value(&mut self.text, value);
        self
    }

    /// A value already written as JSON text: a member's value copied from a validated object
    /// text. The caller guarantees it is one valid JSON value.
    pub fn raw(&mut self, key: &str, json: &str) -> &mut Self {
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
    pub fn begin_object(&mut self, key: &str) -> &mut Self {
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
    // The last 1-7 bytes as one word too, padded with a byte that needs no escape.
    let tail = chunks.remainder();
    let tail_start = from + rest.len() - tail.len();
    let mut word = [b'a'; 8];
    word[..tail.len()].copy_from_slice(tail);
    let hits = escape_mask(u64::from_le_bytes(word));
    (hits != 0).then(|| tail_start + (hits.trailing_zeros() / 8) as usize)
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
    fn escaping_matches_serde_json_for_every_byte_at_every_position() {
        // Each special byte alone, at each offset within and across the 8-byte words.
        for c in (0u8..0x80).map(char::from).chain(['é', '\u{2028}', '🦀']) {
            for pad in 0..17 {
                let s = format!("{}{c}{}", "x".repeat(pad), "y".repeat(17 - pad));
                let mut got = String::new();
                push_json_string(&mut got, &s);
                assert_eq!(got, serde_json::to_string(&s).unwrap(), "{s:?}");
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
