//! Properties of the borrowed JSON view (`json_borrowed`): it reads any JSON object text as
//! serde_json does, every member's text is that member, and no input makes it panic.

use proptest::prelude::*;
use serde_json::{json, Value};
use sessiontrail_core::json_borrowed::BorrowedObject;
use sessiontrail_core::Object;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Object> {
    prop::collection::vec((any::<String>(), json_value()), 0..12)
        .prop_map(|kv| kv.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_object_text_reads_as_serde_json_reads_it(obj in json_object(), pretty in any::<bool>()) {
        let text = if pretty {
            serde_json::to_string_pretty(&obj).expect("serializes")
        } else {
            serde_json::to_string(&obj).expect("serializes")
        };
        let view = BorrowedObject::parse(&text).expect("valid JSON is read");
        // Compared with serde_json's reading of the same text (its default float parsing may
        // round a long float's last digit differently from the value it was written from).
        let theirs: Object = serde_json::from_str(&text).expect("valid");
        prop_assert_eq!(view.to_object(), theirs.clone());
        prop_assert_eq!(view.len(), obj.len());
        for (key, value) in view.iter() {
            let from_text: Value = serde_json::from_str(value.raw()).expect("a member's text is JSON");
            prop_assert_eq!(Some(&from_text), theirs.get(key.as_str()));
            let quoted: String = serde_json::from_str(key.quoted()).expect("a key's text is JSON");
            prop_assert_eq!(quoted.as_str(), key.as_str());
        }
    }

    #[test]
    fn any_text_is_read_or_refused_as_serde_json_does_and_never_panics(text in any::<String>()) {
        let ours = BorrowedObject::parse(&text);
        let theirs = serde_json::from_str::<Object>(&text);
        prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "{:?}", text);
    }

    #[test]
    fn near_json_text_is_read_or_refused_as_serde_json_does(
        parts in prop::collection::vec(
            prop_oneof![
                Just("{"), Just("}"), Just("["), Just("]"), Just(","), Just(":"), Just("\"a\""),
                Just("\"\\u00e9\""), Just("\"\\ud83d\\ude00\""), Just("\"\\ud83d\""), Just("1"),
                Just("-0.5e3"), Just("01"), Just("1."), Just("true"), Just("nul"), Just(" "),
                Just("\"\\x\""), Just("\"\t\""),
            ],
            0..16,
        )
    ) {
        let text = parts.concat();
        let ours = BorrowedObject::parse(&text);
        let theirs = serde_json::from_str::<Object>(&text);
        prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "{:?}", text);
        if let (Ok(ours), Ok(theirs)) = (ours, theirs) {
            prop_assert_eq!(ours.to_object(), theirs);
        }
    }
}
