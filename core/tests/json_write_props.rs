//! Properties of the JSON string writer (`json_write::push_json_string`): whatever the text,
//! it writes what serde_json writes, into a `String` and into a `Vec<u8>` alike.

use proptest::prelude::*;
use sessiontrail_core::json_write::push_json_string;

/// Strings rich in what must be escaped (quotes, backslashes, control bytes) at every offset
/// within and across the writer's 8-byte words, mixed with multi-byte characters.
fn escape_heavy() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("\"".to_string()),
        Just("\\".to_string()),
        (0u8..0x20).prop_map(|b| char::from(b).to_string()),
        Just("é".to_string()),
        Just("🦀".to_string()),
        "[a-z0-9 ]{1,9}",
    ];
    prop::collection::vec(piece, 0..24).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn any_string_is_written_as_serde_json_writes_it(s in prop_oneof![any::<String>(), escape_heavy()]) {
        let want = serde_json::to_string(&s).expect("serializes");
        let mut text = String::new();
        push_json_string(&mut text, &s);
        prop_assert_eq!(&text, &want);
        let mut bytes = Vec::new();
        push_json_string(&mut bytes, &s);
        prop_assert_eq!(bytes, want.into_bytes());
    }
}
