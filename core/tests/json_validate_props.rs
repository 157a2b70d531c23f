//! The strict record check (`json::validate_strict`, `json::decode_record`) against the check it
//! replaced: serde_json's `Deserializer` driven by a visitor that counts nesting and remembers
//! keys. That visitor is kept here, unchanged, as the oracle: on every input both must accept
//! or reject alike and give the same dead-letter reason.

use std::borrow::Cow;
use std::fmt;

use proptest::prelude::*;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use sessiontrail_core::json::{decode_record, validate_strict, MAX_NESTING_DEPTH};

/// The former `validate_strict`: the reason it gave, or `None` if it accepted.
fn oracle(bytes: &[u8]) -> Option<&'static str> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let mut keys = Vec::new();
    Validate {
        depth: 0,
        keys: &mut keys,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end())
    .err()
    .map(|e| classify(&e))
}

/// The former `decode_record`'s reason for a line, built on the oracle.
fn oracle_decode(line: &[u8], max_bytes: usize) -> Option<&'static str> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    if line.len() > max_bytes {
        return Some("record_too_large");
    }
    if line.iter().all(|b| b.is_ascii_whitespace()) {
        return None;
    }
    if let Some(reason) = oracle(line) {
        return Some(match std::str::from_utf8(line) {
            Ok(_) => reason,
            Err(_) => "invalid_utf8",
        });
    }
    (!line.trim_ascii().starts_with(b"{")).then_some("not_an_object")
}

const DUPLICATE: &str = "duplicate key";
const TOO_DEEP: &str = "nesting deeper than";

fn classify(e: &serde_json::Error) -> &'static str {
    let msg = e.to_string();
    if msg.starts_with(DUPLICATE) {
        "duplicate_key"
    } else if msg.starts_with(TOO_DEEP) || msg.starts_with("recursion limit exceeded") {
        "nesting_too_deep"
    } else {
        "invalid_json"
    }
}

struct Validate<'k, 'de> {
    depth: usize,
    keys: &'k mut Vec<Cow<'de, str>>,
}

impl<'de> DeserializeSeed<'de> for Validate<'_, 'de> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Validate<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let depth = level_below(self.depth)?;
        while seq
            .next_element_seed(Validate {
                depth,
                keys: &mut *self.keys,
            })?
            .is_some()
        {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let depth = level_below(self.depth)?;
        let start = self.keys.len();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if self.keys[start..].contains(&key) {
                return Err(de::Error::custom(format!("{DUPLICATE} \"{key}\"")));
            }
            self.keys.push(key);
            map.next_value_seed(Validate {
                depth,
                keys: &mut *self.keys,
            })?;
        }
        self.keys.truncate(start);
        Ok(())
    }
}

fn level_below<E: de::Error>(depth: usize) -> Result<usize, E> {
    if depth >= MAX_NESTING_DEPTH {
        return Err(E::custom(format!("{TOO_DEEP} {MAX_NESTING_DEPTH} levels")));
    }
    Ok(depth + 1)
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// Asserts that the new check and the oracle agree on `doc`, as a document and as a line.
fn agree(doc: &[u8]) -> Result<(), TestCaseError> {
    let ours = validate_strict(doc).err().map(|e| e.reason);
    let theirs = oracle(doc);
    prop_assert_eq!(ours, theirs, "{:?}", String::from_utf8_lossy(doc));
    for max in [1 << 20, doc.len().saturating_sub(1)] {
        let ours = decode_record(doc, max).err().map(|e| e.reason);
        prop_assert_eq!(
            ours,
            oracle_decode(doc, max),
            "{:?}",
            String::from_utf8_lossy(doc)
        );
    }
    Ok(())
}

/// Optional whitespace, mostly none (as in NDJSON). `Dirty` adds what JSON does not count as
/// whitespace (form feed, vertical tab).
fn ws(kind: Kind) -> BoxedStrategy<String> {
    match kind {
        Kind::Clean => prop_oneof![4 => Just(String::new()), 1 => "[ \t\r\n]{1,3}"].boxed(),
        Kind::Dirty => prop_oneof![
            12 => Just(String::new()),
            3 => "[ \t\r\n]{1,3}",
            1 => "[\u{b}\u{c}]",
        ]
        .boxed(),
    }
}

/// Whether generated text is valid JSON piece by piece (duplicate keys and nesting aside) or
/// also has pieces that are not.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Clean,
    Dirty,
}

/// Number texts: the grammar's corners and magnitudes around f64's limit, where serde_json's
/// range check decides; `Dirty` adds malformed neighbours.
fn number(kind: Kind) -> BoxedStrategy<String> {
    let valid = prop_oneof![
        200 => "-?(0|[1-9][0-9]{0,22})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?",
        1 => "-?[1-9][0-9]{0,3}(\\.[0-9]{1,3})?[eE][+-]?3[0-2][0-9]",
        1 => "-?1\\.797693134862315[0-9]{0,6}[eE]308",
        1 => "-?[1-9][0-9]{300,330}(\\.[0-9]{1,5})?",
        1 => "-?(0|[1-9][0-9]{0,400})(\\.[0-9]{1,400})?[eE][+-]?[0-9]{1,25}",
        1 => "-?0\\.0{300,330}[1-9][eE]3[0-9]{2}",
    ];
    match kind {
        Kind::Clean => valid.boxed(),
        Kind::Dirty => prop_oneof![
            6 => valid,
            1 => "-?0[0-9]",
            1 => "-?[0-9]{1,3}\\.([eE][0-9])?",
            1 => "-?[0-9]{1,3}[eE][+-]?",
            1 => "[+.][0-9]",
            1 => "-?(0|[1-9][0-9]{0,400})(\\.[0-9]{0,400})?[eE][+-]?[0-9]{0,25}",
        ]
        .boxed(),
    }
}

/// A piece of a string body: plain text, multi-byte characters, every escape, surrogate pairs;
/// `Dirty` adds lone surrogates, unknown or short escapes and raw control bytes.
fn string_piece(kind: Kind) -> BoxedStrategy<String> {
    let valid = prop_oneof![
        8 => "[a-z0-9 ]{1,12}",
        2 => prop_oneof![Just("é"), Just("🦀"), Just("\u{7f}"), Just("ß€")].prop_map(String::from),
        3 => prop_oneof![
            Just("\\\""), Just("\\\\"), Just("\\/"), Just("\\b"), Just("\\f"), Just("\\n"),
            Just("\\r"), Just("\\t"),
        ]
        .prop_map(String::from),
        2 => "\\\\u00[0-9a-fA-F]{2}",
        1 => "\\\\u[0-9a-cA-CeEfF][0-9a-fA-F]{3}",
        2 => prop_oneof![
            Just("\\ud83e\\udd80"), Just("\\uD800\\uDC00"), Just("\\uDBFF\\uDFFF"),
        ]
        .prop_map(String::from),
    ];
    match kind {
        Kind::Clean => valid.boxed(),
        Kind::Dirty => prop_oneof![
            16 => valid,
            2 => "\\\\u[dD][0-9a-fA-F]{3}",
            2 => prop_oneof![
                Just("\\ud800"), Just("\\udc00"), Just("\\udfff"), Just("\\ud800\\ud800"),
                Just("\\ud800\\u0041"), Just("\\ud800\\n"), Just("\\ud800x"), Just("\\ud800\\"),
                Just("\\ud800\\u12"), Just("\\udc00\\ud800"),
            ]
            .prop_map(String::from),
            1 => "\\\\[a-zA-Z0-9 '\"]",
            1 => "\\\\u[0-9a-zA-Z\"]{0,4}",
            1 => "[\u{0}-\u{1f}]",
        ]
        .boxed(),
    }
}

fn string_body(kind: Kind) -> impl Strategy<Value = String> {
    prop::collection::vec(string_piece(kind), 0..6).prop_map(|p| p.concat())
}

/// Object keys drawn from a few spellings of a few names, so objects often repeat a key,
/// escaped or not.
fn key(kind: Kind) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop_oneof![
            Just("a"), Just("b"), Just("\\u0061"), Just("\\u0062"), Just("a\\u0062"), Just("ab"),
            Just("/"), Just("\\/"), Just("é"), Just("\\u00e9"), Just("\\u00E9"), Just("🦀"),
            Just("\\ud83e\\udd80"), Just("\\ud83E\\uDD80"), Just(""), Just("\\n"), Just("\\u000a"),
        ]
        .prop_map(String::from),
        3 => "[a-z][a-z0-9_]{0,12}",
        1 => string_body(kind),
    ]
}

fn leaf(kind: Kind) -> BoxedStrategy<String> {
    let valid = prop_oneof![
        3 => number(kind),
        3 => string_body(kind).prop_map(|s| format!("\"{s}\"")),
        1 => prop_oneof![Just("true"), Just("false"), Just("null")].prop_map(String::from),
    ];
    match kind {
        Kind::Clean => valid.boxed(),
        Kind::Dirty => prop_oneof![
            12 => valid,
            1 => prop_oneof![Just("tru"), Just("nul"), Just("True"), Just("nan"), Just("fals")]
                .prop_map(String::from),
        ]
        .boxed(),
    }
}

fn value(kind: Kind) -> impl Strategy<Value = String> {
    leaf(kind).prop_recursive(5, 48, 8, move |inner| {
        prop_oneof![
            (
                prop::collection::vec((ws(kind), inner.clone(), ws(kind)), 0..6),
                separator_and_end(kind, "]"),
            )
                .prop_map(|(items, (sep, end))| {
                    let items: Vec<String> =
                        items.into_iter().map(|(a, v, b)| a + &v + &b).collect();
                    format!("[{}{end}", items.join(sep))
                }),
            (
                prop::collection::vec((ws(kind), key(kind), ws(kind), ws(kind), inner), 0..8),
                separator_and_end(kind, "}"),
            )
                .prop_map(|(members, (sep, end))| {
                    let members: Vec<String> = members
                        .into_iter()
                        .map(|(a, k, b, c, v)| format!("{a}\"{k}\"{b}:{c}{v}"))
                        .collect();
                    format!("{{{}{end}", members.join(sep))
                }),
        ]
    })
}

/// What goes between the members of a container and what closes it: `,` and `close`, and
/// when `Dirty`, sometimes a trailing comma, a doubled or missing comma or a missing close.
fn separator_and_end(kind: Kind, close: &'static str) -> BoxedStrategy<(&'static str, String)> {
    let clean = Just((",", close.to_string()));
    match kind {
        Kind::Clean => clean.boxed(),
        Kind::Dirty => prop_oneof![
            20 => clean,
            1 => Just((",", format!(",{close}"))),
            1 => Just((",", format!(", {close}"))),
            1 => Just((",,", close.to_string())),
            1 => Just((" ", close.to_string())),
            1 => Just((",", String::new())),
        ]
        .boxed(),
    }
}

/// Documents that are (mostly) objects, as records are, with whitespace around.
fn document(kind: Kind) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec((key(kind), value(kind)), 0..8).prop_map(|members| {
            let members: Vec<String> =
                members.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            format!("{{{}}}", members.join(","))
        }),
        1 => value(kind),
    ]
    .prop_flat_map(move |doc| (ws(kind), Just(doc), ws(kind)).prop_map(|(a, d, b)| a + &d + &b))
}

fn any_document() -> impl Strategy<Value = String> {
    prop_oneof![document(Kind::Clean), document(Kind::Dirty)]
}

/// How one level of [`deep`] wraps the levels inside it.
#[derive(Debug, Clone, Copy)]
enum Wrap {
    Array,
    ArrayWithSiblings,
    Object,
    ObjectWithSiblings,
    ObjectRepeatingAKey,
}

/// Nesting near the limit: containers around a leaf, some with members before or after the
/// deep one, a few with a duplicate key after it (too deep is found first, when it is).
fn deep() -> impl Strategy<Value = String> {
    let wrap = prop_oneof![
        80 => Just(Wrap::Array),
        20 => Just(Wrap::ArrayWithSiblings),
        80 => Just(Wrap::Object),
        20 => Just(Wrap::ObjectWithSiblings),
        1 => Just(Wrap::ObjectRepeatingAKey),
    ];
    let leaf = prop_oneof![
        "-?(0|[1-9][0-9]{0,2})",
        Just("\"x\"".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
    ];
    (prop::collection::vec(wrap, 58..70), leaf).prop_map(|(levels, inner)| {
        let mut doc = inner;
        for wrap in levels {
            doc = match wrap {
                Wrap::Array => format!("[{doc}]"),
                Wrap::ArrayWithSiblings => format!("[1,{doc},{{}}]"),
                Wrap::Object => format!("{{\"a\":{doc}}}"),
                Wrap::ObjectWithSiblings => format!("{{\"a\":[],\"b\":{doc},\"c\":1}}"),
                Wrap::ObjectRepeatingAKey => format!("{{\"a\":[],\"b\":{doc},\"a\":1}}"),
            };
        }
        doc
    })
}

/// Objects with more keys than are compared one by one (`LINEAR_KEYS` in `json_validate`),
/// spelled plainly or escaped, most with one key repeated.
fn wide() -> impl Strategy<Value = String> {
    // Few enough chance repeats that most objects get past the 33rd key without one.
    let key = prop_oneof!["k[0-9]{4}", "\\\\u006b[0-9]{4}"];
    // Which member's key a later member repeats: any, or one near the 33rd, where the check
    // switches from comparing to hashing.
    let repeated = prop_oneof![0..90usize, 29..37usize];
    (
        prop::collection::vec((key, leaf(Kind::Clean)), 20..90),
        prop::option::weighted(0.7, (repeated, any::<prop::sample::Index>())),
        any::<bool>(),
    )
        .prop_map(|(mut members, repeat, nest)| {
            if let Some((from, to)) = repeat {
                let later = from + 1..members.len();
                if !later.is_empty() {
                    let to = later.start + to.index(later.len());
                    members[to].0 = members[from].0.clone();
                }
            }
            let members: Vec<String> = members
                .into_iter()
                .map(|(k, v)| format!("\"{k}\":{v}"))
                .collect();
            let object = format!("{{{}}}", members.join(","));
            // Inside another object, whose own keys must not mix with the inner ones.
            if nest {
                format!("{{\"k1\":1,\"o\":{object},\"k2\":2}}")
            } else {
                object
            }
        })
}

/// Bytes to put where they hurt: structure, string and number syntax, control bytes and bytes
/// that are not UTF-8 on their own.
fn mutation_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        prop::sample::select(
            b"\"\\{}[],:0123456789-+.eEu tfn\t\r\n\x0c\x00\x1f\xff\xc3\xa9\xe2\xf0".to_vec()
        ),
        any::<u8>(),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(prop::sample::Index),
    Replace(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Remove(prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        3 => (any::<prop::sample::Index>(), mutation_byte()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        3 => (any::<prop::sample::Index>(), mutation_byte()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => any::<prop::sample::Index>().prop_map(Mutation::Remove),
    ]
}

fn mutate(mut doc: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if doc.is_empty() {
            break;
        }
        match m {
            Mutation::Truncate(i) => doc.truncate(i.index(doc.len())),
            Mutation::Replace(i, b) => {
                let at = i.index(doc.len());
                doc[at] = *b;
            }
            Mutation::Insert(i, b) => {
                let at = i.index(doc.len() + 1);
                doc.insert(at, *b);
            }
            Mutation::Remove(i) => {
                doc.remove(i.index(doc.len()));
            }
        }
    }
    doc
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn generated_documents_get_the_oracles_verdict(doc in any_document()) {
        agree(doc.as_bytes())?;
    }

    #[test]
    fn mutated_documents_get_the_oracles_verdict(
        doc in any_document(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        agree(&mutate(doc.into_bytes(), &mutations))?;
    }

    #[test]
    fn nesting_near_64_gets_the_oracles_verdict(
        doc in deep(),
        mutations in prop::collection::vec(mutation(), 0..3),
    ) {
        agree(&mutate(doc.into_bytes(), &mutations))?;
    }

    #[test]
    fn wide_objects_get_the_oracles_verdict(
        doc in wide(),
        mutations in prop::collection::vec(mutation(), 0..2),
    ) {
        agree(&mutate(doc.into_bytes(), &mutations))?;
    }

    #[test]
    fn arbitrary_bytes_get_the_oracles_verdict(bytes in prop::collection::vec(mutation_byte(), 0..48)) {
        agree(&bytes)?;
    }

    #[test]
    fn arbitrary_text_gets_the_oracles_verdict(text in any::<String>()) {
        agree(text.as_bytes())?;
    }
}

/// Corners named one by one, with the verdict the oracle gives them today, so a change in
/// serde_json's behaviour shows here by name.
#[test]
fn named_corners_get_the_oracles_verdict() {
    let many_keys: String = (0..40).map(|i| format!("\"k{i}\":{i},")).collect();
    let cases: Vec<(Vec<u8>, Option<&str>)> = vec![
        (b"1e400".to_vec(), Some("invalid_json")),
        (b"-1e400".to_vec(), Some("invalid_json")),
        (b"1e308".to_vec(), None),
        (b"1.7976931348623157e308".to_vec(), None),
        (b"1e-400".to_vec(), None),
        (b"0e99999999999999999999".to_vec(), None),
        (b"1e99999999999999999999".to_vec(), Some("invalid_json")),
        (format!("1{}", "0".repeat(308)).into_bytes(), None),
        (
            format!("1{}", "0".repeat(309)).into_bytes(),
            Some("invalid_json"),
        ),
        (br#""\ud800""#.to_vec(), Some("invalid_json")),
        (br#""\udc00""#.to_vec(), Some("invalid_json")),
        (br#""\ud800\u0041""#.to_vec(), Some("invalid_json")),
        (br#""\ud800\ud800""#.to_vec(), Some("invalid_json")),
        (br#""\ud800\udc00""#.to_vec(), None),
        (b"\"\xff\"".to_vec(), Some("invalid_json")),
        (b"\"\xc3\xa9\"".to_vec(), None),
        (b"\xff".to_vec(), Some("invalid_json")),
        (b"{\"a\":1,\"a\":\"\xff\"}".to_vec(), Some("duplicate_key")),
        (b"{\"a\":\"\xff\",\"a\":1}".to_vec(), Some("invalid_json")),
        (br#"{"a":1,"\u0061":2}"#.to_vec(), Some("duplicate_key")),
        (br#"{"a":1,"a""#.to_vec(), Some("duplicate_key")),
        (
            format!("{{{many_keys}\"k39\":0}}").into_bytes(),
            Some("duplicate_key"),
        ),
        (format!("{{{many_keys}\"k40\":0}}").into_bytes(), None),
        (
            format!("{}x", "[".repeat(65)).into_bytes(),
            Some("nesting_too_deep"),
        ),
        (
            format!("{}x", "[".repeat(64)).into_bytes(),
            Some("invalid_json"),
        ),
        (b"{}\x0c".to_vec(), Some("invalid_json")),
        (b"{} \r\n\t".to_vec(), None),
        (b"\"\x1f\"".to_vec(), Some("invalid_json")),
        (b"\"\x7f\"".to_vec(), None),
    ];
    for (doc, want) in cases {
        let text = String::from_utf8_lossy(&doc).into_owned();
        assert_eq!(oracle(&doc), want, "oracle on {text:?}");
        assert_eq!(
            validate_strict(&doc).err().map(|e| e.reason),
            want,
            "validate_strict on {text:?}"
        );
    }
}

/// Around f64::MAX serde_json's verdict depends on the build: without its `float_roundtrip`
/// feature (the release binary) it rounds approximately and rejects `1.7976931348623158e308`,
/// with it (turned on by a dev-dependency in workspace test builds) it accepts it. Whatever
/// the build, the new check must agree.
#[test]
fn numbers_at_the_edge_of_f64_get_the_oracles_verdict_in_this_build() {
    for doc in [
        "1.7976931348623157e308",
        "1.7976931348623158e308",
        "1.79769313486231575e308",
        "1.797693134862315799e308",
        "1.7976931348623159e308",
        "-1.7976931348623158e308",
        "179769313486231580000000000000000000000e270",
        "0.17976931348623158e309",
    ] {
        assert_eq!(
            validate_strict(doc.as_bytes()).err().map(|e| e.reason),
            oracle(doc.as_bytes()),
            "{doc}"
        );
    }
}
