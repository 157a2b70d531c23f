//! Reads a few field paths out of a JSON text in one pass, without parsing the rest.
//!
//! A `filter` looks at two or three fields of a record of forty; parsing the whole record into
//! a `Value` tree to read them costs more than the rest of a `stdin -> filter -> file`
//! pipeline. [`PathSet::extract`] walks the text once: it descends only into the objects and
//! arrays on a wanted path, builds a `Value` only for the wanted values, and skips everything
//! else with serde_json's non-allocating skipper.
//!
//! The text must already be valid (an [`crate::event::JsonObjectText`]): on malformed input
//! the result is unspecified but never a panic.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::event::Value;
use crate::json::get_path_value;

/// The set of dotted paths to extract (`a.b.0.c`: numeric segments index arrays).
#[derive(Debug, Clone, Default)]
pub struct PathSet {
    paths: Vec<String>,
    root: Node,
}

/// One level of the path trie.
#[derive(Debug, Clone, Default)]
struct Node {
    children: Vec<(String, Node)>,
    /// Paths that end here, or below here but are read from the value captured here: a node
    /// that ends a path captures its whole value, and deeper paths are looked up in it.
    captured: Vec<(usize, String)>,
    /// Whether a path ends at this node (so its value is captured).
    ends_path: bool,
}

/// The values found for a [`PathSet`], in the set's order (`None`: absent).
#[derive(Debug)]
pub struct ExtractedPaths<'s> {
    set: &'s PathSet,
    values: Vec<Option<Value>>,
}

impl ExtractedPaths<'_> {
    pub fn get(&self, path: &str) -> Option<&Value> {
        self.value(self.set.index_of(path)?)
    }

    /// The value of the set's path number `index` ([`PathSet::index_of`]): for readers that
    /// resolve their paths once, not on every event.
    pub fn value(&self, index: usize) -> Option<&Value> {
        self.values.get(index)?.as_ref()
    }
}

impl PathSet {
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(paths: I) -> PathSet {
        let mut set = PathSet::default();
        for p in paths {
            let p = p.into();
            if !set.paths.contains(&p) {
                set.paths.push(p);
            }
        }
        for (id, path) in set.paths.iter().enumerate() {
            set.root.insert(id, path);
        }
        set.root.settle_captures();
        set
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The path numbered `index`.
    pub fn path(&self, index: usize) -> Option<&str> {
        self.paths.get(index).map(String::as_str)
    }

    /// The number of `path` in the set (paths given twice share one number).
    pub fn index_of(&self, path: &str) -> Option<usize> {
        self.paths.iter().position(|p| p == path)
    }

    /// The values of every path in one pass over `text`.
    pub fn extract(&self, text: &str) -> ExtractedPaths<'_> {
        let mut values = vec![None; self.paths.len()];
        let mut de = serde_json::Deserializer::from_str(text);
        // Errors leave the values found so far; the text was validated, so there are none.
        let _ = Walk {
            node: &self.root,
            values: &mut values,
        }
        .deserialize(&mut de);
        ExtractedPaths { set: self, values }
    }
}

impl Node {
    fn insert(&mut self, id: usize, path: &str) {
        let mut node = self;
        for segment in path.split('.') {
            let i = match node.children.iter().position(|(k, _)| k == segment) {
                Some(i) => i,
                None => {
                    node.children.push((segment.to_string(), Node::default()));
                    node.children.len() - 1
                }
            };
            node = &mut node.children[i].1;
        }
        node.ends_path = true;
        node.captured.push((id, String::new()));
    }

    /// Moves every path below a capturing node into that node's `captured` list (with the rest
    /// of the path), since its value is captured whole.
    fn settle_captures(&mut self) {
        for (_, child) in &mut self.children {
            if child.ends_path {
                let mut below = Vec::new();
                child.collect_below("", &mut below);
                child.captured.extend(below);
                child.children.clear();
            } else {
                child.settle_captures();
            }
        }
    }

    fn collect_below(&self, prefix: &str, out: &mut Vec<(usize, String)>) {
        for (key, child) in &self.children {
            let rest = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            for (id, _) in child.captured.iter().filter(|(_, r)| r.is_empty()) {
                out.push((*id, rest.clone()));
            }
            child.collect_below(&rest, out);
        }
    }

    fn child(&self, key: &str) -> Option<&Node> {
        self.children
            .iter()
            .find_map(|(k, n)| (k == key).then_some(n))
    }

    fn store(&self, value: Value, values: &mut [Option<Value>]) {
        // The common case, one path ending here: the value moves, no copy.
        if let [(id, rest)] = self.captured.as_slice() {
            if rest.is_empty() {
                if let Some(slot) = values.get_mut(*id) {
                    *slot = Some(value);
                }
                return;
            }
        }
        for (id, rest) in &self.captured {
            let v = if rest.is_empty() {
                Some(value.clone())
            } else {
                get_path_value(&value, rest).cloned()
            };
            if let Some(slot) = values.get_mut(*id) {
                *slot = v;
            }
        }
    }
}

/// Visits one value positioned at `node` of the trie.
struct Walk<'n, 'v> {
    node: &'n Node,
    values: &'v mut [Option<Value>],
}

impl<'de> DeserializeSeed<'de> for Walk<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    // Scalars where a path wanted to go deeper: the path is absent.
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
        let mut index = 0usize;
        loop {
            let child = self.node.child(&index.to_string());
            let more = match child {
                Some(child) => next_element(&mut seq, child, self.values)?,
                None => seq.next_element::<IgnoredAny>()?.is_some(),
            };
            if !more {
                return Ok(());
            }
            index += 1;
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(crate::json::KeySeed)? {
            match self.node.child(&key) {
                Some(child) if child.ends_path => child.store(map.next_value()?, self.values),
                Some(child) => map.next_value_seed(Walk {
                    node: child,
                    values: &mut *self.values,
                })?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

fn next_element<'de, A: SeqAccess<'de>>(
    seq: &mut A,
    child: &Node,
    values: &mut [Option<Value>],
) -> Result<bool, A::Error> {
    if child.ends_path {
        match seq.next_element::<Value>()? {
            Some(v) => {
                child.store(v, values);
                Ok(true)
            }
            None => Ok(false),
        }
    } else {
        Ok(seq
            .next_element_seed(Walk {
                node: child,
                values: &mut *values,
            })?
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::get_path;

    const DOC: &str =
        r#"{"a":{"b":[{"c":1},{"c":"two","d":null}],"e":true},"f":"x","g\u0031":2,"h":[]}"#;

    #[test]
    fn extracted_values_equal_the_parsed_lookups() {
        let paths = [
            "a", "a.b.1.c", "a.b.0", "a.e", "f", "g1", "h.0", "a.b.1.d", "zz", "f.x", "a.b.5",
            "a.e.x",
        ];
        let set = PathSet::new(paths);
        let got = set.extract(DOC);
        let parsed: crate::event::Object = serde_json::from_str(DOC).unwrap();
        for p in paths {
            assert_eq!(got.get(p), get_path(&parsed, p), "path {p}");
        }
    }

    #[test]
    fn a_path_below_another_is_read_from_the_captured_value() {
        let set = PathSet::new(["a.b.1", "a.b.1.c", "a.b"]);
        let got = set.extract(DOC);
        assert_eq!(got.get("a.b.1.c"), Some(&Value::from("two")));
        assert_eq!(
            got.get("a.b.1").and_then(|v| v.get("c")),
            Some(&"two".into())
        );
        assert!(got.get("a.b").is_some_and(Value::is_array));
    }
}
