//! A read-only view of a JSON object text that borrows from it: keys and strings are slices of
//! the text (unescaped copies only when they hold escapes), numbers are their own text, and
//! every object and array remembers the text it was read from.
//!
//! Why not `serde_json::Value`: a transform that reads a few dozen fields of each record and
//! passes the rest on (the `ocsf` transform's `unmapped`) paid more for building a `Value`
//! tree (an allocation per key and per string, a map node per object) and freeing it than for
//! its own work. Here a record costs one vector per object and array, lookups scan a few
//! members, and a member that is passed on whole is copied as the text it was read as.
//!
//! The text is expected to be valid JSON (event text is validated when it is read, see
//! [`crate::json::decode_record`]); anything else is an `Err`, never a panic.

use std::borrow::Cow;

use crate::event::Value;
use crate::json_validate::unescape_str;
use crate::json_write::next_to_escape;

/// Objects and arrays nested deeper than this are refused (the readers validate a lower limit).
const MAX_DEPTH: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub enum BorrowedValue<'a> {
    Null,
    Bool(bool),
    /// The number as written (valid JSON number text).
    Number(&'a str),
    String(JsonStr<'a>),
    Array(BorrowedArray<'a>),
    Object(BorrowedObject<'a>),
}

/// A string: its unescaped text, and the string as written (quotes included).
#[derive(Debug, Clone, PartialEq)]
pub struct JsonStr<'a> {
    text: Cow<'a, str>,
    quoted: &'a str,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BorrowedArray<'a> {
    items: Vec<BorrowedValue<'a>>,
    raw: &'a str,
    clean: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BorrowedObject<'a> {
    members: Vec<(JsonStr<'a>, BorrowedValue<'a>)>,
    raw: &'a str,
    clean: bool,
}

/// Why a text could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewError {
    pub offset: usize,
    pub message: &'static str,
}

impl std::fmt::Display for ViewError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.message, self.offset)
    }
}

impl std::error::Error for ViewError {}

impl<'a> JsonStr<'a> {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The string as written, quotes included: valid JSON text.
    pub fn quoted(&self) -> &'a str {
        self.quoted
    }
}

impl std::ops::Deref for JsonStr<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

impl<'a> BorrowedValue<'a> {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            BorrowedValue::String(s) => Some(s.as_str()),
            _ => None,
        }
    }

    /// An integer number that fits an i64 (not `1.0`, as with `serde_json::Value::as_i64`).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            BorrowedValue::Number(n) => n.parse().ok(),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            BorrowedValue::Number(n) => n.parse().ok(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            BorrowedValue::Number(n) => n.parse().ok(),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            BorrowedValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&BorrowedArray<'a>> {
        match self {
            BorrowedValue::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&BorrowedObject<'a>> {
        match self {
            BorrowedValue::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, BorrowedValue::Null)
    }

    /// The value's JSON type, for messages (named as [`crate::json::kind_of`] names them).
    pub fn kind(&self) -> &'static str {
        match self {
            BorrowedValue::Null => "null",
            BorrowedValue::Bool(_) => "a boolean",
            BorrowedValue::Number(_) => "a number",
            BorrowedValue::String(_) => "a string",
            BorrowedValue::Array(_) => "an array",
            BorrowedValue::Object(_) => "an object",
        }
    }

    pub fn is_string(&self) -> bool {
        matches!(self, BorrowedValue::String(_))
    }

    pub fn is_number(&self) -> bool {
        matches!(self, BorrowedValue::Number(_))
    }

    /// The member `key` of an object (None for other values).
    pub fn get(&self, key: &str) -> Option<&BorrowedValue<'a>> {
        self.as_object()?.get(key)
    }

    /// The value as JSON text: exactly what the record held.
    pub fn raw(&self) -> &'a str {
        match self {
            BorrowedValue::Null => "null",
            BorrowedValue::Bool(true) => "true",
            BorrowedValue::Bool(false) => "false",
            BorrowedValue::Number(n) => n,
            BorrowedValue::String(s) => s.quoted,
            BorrowedValue::Array(a) => a.raw,
            BorrowedValue::Object(o) => o.raw,
        }
    }

    /// No `null` and no empty object anywhere in the value (OCSF forbids both; such a value
    /// can be copied as it was written).
    pub fn is_clean(&self) -> bool {
        match self {
            BorrowedValue::Null => false,
            BorrowedValue::Array(a) => a.clean,
            BorrowedValue::Object(o) => o.clean,
            _ => true,
        }
    }

    /// An owned `serde_json::Value` with the same content.
    pub fn to_value(&self) -> Value {
        match self {
            BorrowedValue::Null => Value::Null,
            BorrowedValue::Bool(b) => Value::Bool(*b),
            BorrowedValue::Number(n) => serde_json::from_str(n).unwrap_or(Value::Null),
            BorrowedValue::String(s) => Value::String(s.as_str().to_string()),
            BorrowedValue::Array(a) => Value::Array(a.iter().map(Self::to_value).collect()),
            BorrowedValue::Object(o) => Value::Object(o.to_object()),
        }
    }
}

impl<'a> BorrowedArray<'a> {
    pub fn raw(&self) -> &'a str {
        self.raw
    }
    pub fn is_clean(&self) -> bool {
        self.clean
    }
}

impl<'a> std::ops::Deref for BorrowedArray<'a> {
    type Target = [BorrowedValue<'a>];
    fn deref(&self) -> &[BorrowedValue<'a>] {
        &self.items
    }
}

impl<'a> BorrowedObject<'a> {
    /// Reads a JSON object text.
    pub fn parse(text: &'a str) -> Result<Self, ViewError> {
        let mut p = Parser {
            text,
            bytes: text.as_bytes(),
            pos: 0,
        };
        p.skip_ws();
        let obj = match p.value(0)? {
            BorrowedValue::Object(o) => o,
            _ => return Err(p.error("not a JSON object")),
        };
        p.skip_ws();
        if p.pos != p.bytes.len() {
            return Err(p.error("text after the object"));
        }
        Ok(obj)
    }

    pub fn get(&self, key: &str) -> Option<&BorrowedValue<'a>> {
        // Members are few; a scan beats hashing. The last of duplicate keys wins, as in
        // serde_json (the readers refuse duplicates anyway).
        self.members
            .iter()
            .rev()
            .find(|(k, _)| k.as_str() == key)
            .map(|(_, v)| v)
    }

    /// The value at a dotted path (`client.ip`; numeric segments index arrays), as
    /// [`crate::json::get_path`] finds it in a `Value` tree.
    pub fn get_path(&self, path: &str) -> Option<&BorrowedValue<'a>> {
        let mut parts = path.split('.');
        let mut cur = self.get(parts.next()?)?;
        for part in parts {
            cur = match cur {
                BorrowedValue::Object(o) => o.get(part)?,
                BorrowedValue::Array(a) => a.get(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&JsonStr<'a>, &BorrowedValue<'a>)> {
        self.members.iter().map(|(k, v)| (k, v))
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The object as JSON text, as written.
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    pub fn is_clean(&self) -> bool {
        self.clean
    }

    pub fn to_object(&self) -> crate::event::Object {
        self.members
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_value()))
            .collect()
    }
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn error(&self, message: &'static str) -> ViewError {
        ViewError {
            offset: self.pos,
            message,
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<BorrowedValue<'a>, ViewError> {
        match self.bytes.get(self.pos) {
            Some(b'{') => self.object(depth + 1).map(BorrowedValue::Object),
            Some(b'[') => self.array(depth + 1).map(BorrowedValue::Array),
            Some(b'"') => self.string().map(BorrowedValue::String),
            Some(b't') => self.literal("true", BorrowedValue::Bool(true)),
            Some(b'f') => self.literal("false", BorrowedValue::Bool(false)),
            Some(b'n') => self.literal("null", BorrowedValue::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("unexpected character")),
            None => Err(self.error("unexpected end of text")),
        }
    }

    fn literal(
        &mut self,
        word: &'static str,
        value: BorrowedValue<'a>,
    ) -> Result<BorrowedValue<'a>, ViewError> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error("unexpected character"))
        }
    }

    fn number(&mut self) -> Result<BorrowedValue<'a>, ViewError> {
        let start = self.pos;
        while let Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
        let text = &self.text[start..self.pos];
        // The shape is checked by the JSON grammar's own reader, once per number.
        if serde_json::from_str::<serde_json::Number>(text).is_err() {
            self.pos = start;
            return Err(self.error("invalid number"));
        }
        Ok(BorrowedValue::Number(text))
    }

    /// A string starting at the opening quote.
    fn string(&mut self) -> Result<JsonStr<'a>, ViewError> {
        let open = self.pos;
        let start = open + 1;
        let mut at = start;
        let mut escaped = false;
        loop {
            // The next quote, backslash or control character, eight bytes at a time (most
            // strings are short: cheaper than a vectorised search's setup).
            let Some(i) = next_to_escape(self.bytes, at) else {
                self.pos = self.bytes.len();
                return Err(self.error("unterminated string"));
            };
            at = i;
            match self.bytes[at] {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    // Skip the escaped character (a `\uXXXX` needs no special case: its
                    // digits hold no quote or backslash).
                    at += 2;
                    if at > self.bytes.len() {
                        self.pos = self.bytes.len();
                        return Err(self.error("unterminated string"));
                    }
                }
                _ => {
                    self.pos = open;
                    return Err(self.error("control character in string"));
                }
            }
        }
        let raw = &self.text[start..at];
        let quoted = &self.text[open..=at];
        self.pos = at + 1;
        let text = if escaped {
            // Decoded as the record validator reads escapes (surrogate pairs included).
            match unescape_str(self.text, start..at) {
                Some(s) => Cow::Owned(s),
                None => {
                    self.pos = open;
                    return Err(self.error("invalid string escape"));
                }
            }
        } else {
            Cow::Borrowed(raw)
        };
        Ok(JsonStr { text, quoted })
    }

    /// After an item of an array or object: a `,` (more follow, false) or `close` (true).
    fn list_closed(&mut self, close: u8, expected: &'static str) -> Result<bool, ViewError> {
        self.skip_ws();
        match self.bytes.get(self.pos) {
            Some(b',') => {
                self.pos += 1;
                Ok(false)
            }
            Some(&b) if b == close => {
                self.pos += 1;
                Ok(true)
            }
            _ => Err(self.error(expected)),
        }
    }

    fn array(&mut self, depth: usize) -> Result<BorrowedArray<'a>, ViewError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deep"));
        }
        let start = self.pos;
        self.pos += 1;
        let mut items = Vec::with_capacity(4);
        let mut clean = true;
        self.skip_ws();
        if self.bytes.get(self.pos) == Some(&b']') {
            self.pos += 1;
        } else {
            loop {
                self.skip_ws();
                let v = self.value(depth)?;
                clean &= v.is_clean();
                items.push(v);
                if self.list_closed(b']', "expected ',' or ']'")? {
                    break;
                }
            }
        }
        Ok(BorrowedArray {
            items,
            raw: &self.text[start..self.pos],
            clean,
        })
    }

    fn object(&mut self, depth: usize) -> Result<BorrowedObject<'a>, ViewError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deep"));
        }
        let start = self.pos;
        self.pos += 1;
        self.skip_ws();
        if self.bytes.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            return Ok(BorrowedObject {
                members: Vec::new(),
                raw: &self.text[start..self.pos],
                // An empty object is not clean: OCSF output drops it.
                clean: false,
            });
        }
        // Room for a typical record's object: growing 0 -> 4 -> 8 -> 16 costs more.
        let mut members = Vec::with_capacity(8);
        let mut clean = true;
        loop {
            self.skip_ws();
            if self.bytes.get(self.pos) != Some(&b'"') {
                return Err(self.error("expected a member name"));
            }
            let key = self.string()?;
            self.skip_ws();
            if self.bytes.get(self.pos) != Some(&b':') {
                return Err(self.error("expected ':'"));
            }
            self.pos += 1;
            self.skip_ws();
            let v = self.value(depth)?;
            clean &= v.is_clean();
            members.push((key, v));
            if self.list_closed(b'}', "expected ',' or '}'")? {
                break;
            }
        }
        Ok(BorrowedObject {
            members,
            raw: &self.text[start..self.pos],
            clean,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> BorrowedObject<'_> {
        BorrowedObject::parse(text).expect("valid")
    }

    #[test]
    fn reads_every_kind_of_value_and_keeps_the_text_as_written() {
        let text = r#" {"s":"a\"b\u00e9","n":-1.5e3,"i":42,"t":true,"f":false,"z":null,
            "a":[1, {"x":"y"}],"o":{"k":{"deep":"v"}},"e":{}} "#;
        let o = parse(text);
        assert_eq!(o.get("s").and_then(BorrowedValue::as_str), Some("a\"bé"));
        assert_eq!(o.get("s").map(BorrowedValue::raw), Some(r#""a\"b\u00e9""#));
        assert_eq!(o.get("n").map(BorrowedValue::raw), Some("-1.5e3"));
        assert_eq!(o.get("n").and_then(BorrowedValue::as_i64), None);
        assert_eq!(o.get("i").and_then(BorrowedValue::as_i64), Some(42));
        assert_eq!(o.get("t").and_then(BorrowedValue::as_bool), Some(true));
        assert!(o.get("z").is_some_and(BorrowedValue::is_null));
        assert_eq!(
            o.get("a").map(BorrowedValue::raw),
            Some(r#"[1, {"x":"y"}]"#)
        );
        assert_eq!(
            o.get_path("o.k.deep").and_then(BorrowedValue::as_str),
            Some("v")
        );
        assert!(o.get("o").is_some_and(BorrowedValue::is_clean));
        assert!(!o.get("e").is_some_and(BorrowedValue::is_clean));
        assert!(!o.is_clean(), "holds a null and an empty object");
        let as_value = Value::Object(o.to_object());
        let expected: Value = serde_json::from_str(text).expect("valid");
        assert_eq!(as_value, expected);
    }

    #[test]
    fn paths_descend_objects_and_index_arrays() {
        let o = parse(r#"{"a":{"b":[{"c":1},{"c":2}]},"a.b":0}"#);
        assert_eq!(
            o.get_path("a.b.1.c").and_then(BorrowedValue::as_i64),
            Some(2)
        );
        assert_eq!(o.get_path("a.b.x"), None);
        assert_eq!(o.get_path("a.b.1.c.d"), None);
    }

    #[test]
    fn escapes_decode_as_json_defines_them() {
        let o = parse(r#"{"s":"\"\\\/\b\f\n\r\t\u00e9\ud83e\udd80","\u006b":1}"#);
        assert_eq!(
            o.get("s").and_then(BorrowedValue::as_str),
            Some("\"\\/\u{8}\u{c}\n\r\té🦀")
        );
        assert!(o.get("k").is_some());
    }

    #[test]
    fn invalid_text_is_an_error_not_a_panic() {
        for bad in [
            "",
            "[]",
            "{",
            r#"{"a":}"#,
            r#"{"a":1,}"#,
            r#"{"a":"x"#,
            r#"{"a":"x\"}"#,
            r#"{"a":"\q"}"#,
            r#"{"a":01}"#,
            r#"{"a":tru}"#,
            r#"{"a":1} x"#,
            "{\"a\":\"\u{1}\"}",
            r#"{"a":"\"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\udc00"}"#,
            r#"{"a":"\ud800\u0041"}"#,
            r#"{"a":"\u12"}"#,
        ] {
            assert!(BorrowedObject::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(300), "]".repeat(300));
        assert!(BorrowedObject::parse(&deep).is_err());
    }
}
