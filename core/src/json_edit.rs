//! Changes a few top-level members of an object held as JSON text, copying the others as
//! they are.
//!
//! A transform that adds three fields to an event of thirty (correlate's session result)
//! would otherwise parse all thirty into a `Value` tree, and make the sink serialize them all
//! again. [`edit_object_text`] parses only the members the edit may touch, runs the edit on
//! them as an ordinary [`Object`], and writes the result next to the untouched members'
//! original text.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::event::{JsonObjectText, Object, Value};
use crate::json::KeySeed;
use crate::json_write::{write_object, JsonObjectWriter};

/// Runs `edit` on the members of `text` named in `touched` (those present, parsed) and
/// returns the object with the edit's result in place of them.
///
/// - A touched member the edit removed is left out; one it added is appended at the end.
/// - The edit should only change touched members. If it sets another member that the text
///   already has, the edited value replaces the original (no duplicate key is written).
///
/// `text` must be a validated object ([`JsonObjectText`]); anything else is parsed whole as a
/// fallback, never a panic.
pub fn edit_object_text(
    text: &str,
    touched: &[&str],
    edit: impl FnOnce(&mut Object),
) -> JsonObjectText {
    let Some(members) = object_members(text) else {
        let mut fields: Object = serde_json::from_str(text).unwrap_or_default();
        edit(&mut fields);
        let mut out = String::with_capacity(text.len() + 64);
        write_object(&mut out, &fields);
        return JsonObjectText(out.into_boxed_str());
    };
    let mut part = Object::new();
    for (key, raw) in &members {
        if touched.contains(&key.as_ref()) {
            if let Ok(value) = serde_json::from_str::<Value>(raw.get()) {
                part.insert(key.to_string(), value);
            }
        }
    }
    edit(&mut part);
    let mut out = JsonObjectWriter::with_capacity(text.len() + 128);
    for (key, raw) in &members {
        match part.remove(key.as_ref()) {
            Some(value) => out.value(key, &value),
            None if touched.contains(&key.as_ref()) => continue, // removed by the edit
            None => out.raw(key, raw.get()),
        };
    }
    for (key, value) in &part {
        out.value(key, value);
    }
    out.finish()
}

/// The top-level members of an object text, in order, each value as its unparsed text
/// (`None` if `text` is not a JSON object).
pub fn object_members(text: &str) -> Option<Vec<(Cow<'_, str>, &RawValue)>> {
    serde_json::from_str::<Members>(text).ok().map(|m| m.0)
}

/// The top-level members of an object, each value as its unparsed text.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(MembersVisitor)
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(16));
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let value: &'de RawValue = map.next_value()?;
            members.push((key, value));
        }
        Ok(Members(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::{decode_record, set_path, Decoded};

    fn edited(text: &str, touched: &[&str], edit: impl Fn(&mut Object)) -> (Object, Object) {
        let Ok(Decoded::Record(valid)) = decode_record(text.as_bytes(), 1 << 20) else {
            panic!("test document must be a valid object: {text}");
        };
        let got = edit_object_text(valid.as_str(), touched, &edit);
        let mut want: Object = serde_json::from_str(text).unwrap();
        edit(&mut want);
        (serde_json::from_str(got.as_str()).unwrap(), want)
    }

    const DOC: &str = r#"{"time":5,"session":{"uid":"s-1"},"user":{"name":"CORP\\anna","x":[1,{"y":null}]},"unmapped":"flat","d\u0075ration":7,"msg":"a\"b"}"#;

    #[test]
    fn an_edit_of_the_text_equals_the_same_edit_of_the_parsed_object() {
        type Edit = Box<dyn Fn(&mut Object)>;
        let cases: Vec<(&[&str], Edit)> = vec![
            // Set a top-level number, insert into a nested object, replace a non-object with
            // an object holding the new member, remove a member.
            (
                &["start_time", "session", "unmapped", "duration"],
                Box::new(|o: &mut Object| {
                    o.insert("start_time".into(), 1.into());
                    set_path(o, "session.created_time", 1.into());
                    set_path(o, "unmapped.correlation", "complete".into());
                    o.remove("duration");
                }),
            ),
            // Touched members absent from the text are simply not there for the edit.
            (
                &["actor", "end_time"],
                Box::new(|o: &mut Object| {
                    assert!(o.get("actor").is_none());
                    o.insert("end_time".into(), 9.into());
                }),
            ),
            // An edit that changes nothing.
            (&["session"], Box::new(|_: &mut Object| {})),
        ];
        for (touched, edit) in cases {
            let (got, want) = edited(DOC, touched, edit);
            assert_eq!(got, want, "touched {touched:?}");
        }
    }

    #[test]
    fn untouched_members_keep_their_original_text() {
        let Ok(Decoded::Record(valid)) = decode_record(DOC.as_bytes(), 1 << 20) else {
            panic!("valid");
        };
        let got = edit_object_text(valid.as_str(), &["end_time"], |o| {
            o.insert("end_time".into(), 9.into());
        });
        // The escaped key and the nested members come through byte for byte.
        assert!(got
            .as_str()
            .contains(r#""user":{"name":"CORP\\anna","x":[1,{"y":null}]}"#));
        assert!(
            got.as_str().ends_with(r#","end_time":9}"#),
            "{}",
            got.as_str()
        );
    }

    #[test]
    fn an_edit_setting_an_untouched_member_does_not_duplicate_it() {
        let (got, want) = edited(DOC, &[], |o| {
            o.insert("time".into(), 6.into());
        });
        assert_eq!(got, want);
        let Ok(Decoded::Record(valid)) = decode_record(DOC.as_bytes(), 1 << 20) else {
            panic!("valid");
        };
        let text = edit_object_text(valid.as_str(), &[], |o| {
            o.insert("time".into(), 6.into());
        });
        assert_eq!(text.as_str().matches("\"time\"").count(), 1);
    }
}
