//! YAML to JSON values, remembering where every key and value stands in the file so that
//! every config error can name `file:line:column`. Duplicate keys are errors.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Number, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// Positions by dotted path (`sinks.archive.batch.max_bytes`, list items by index).
#[derive(Debug, Default, Clone)]
pub struct Positions {
    /// Where the key of a map entry is (for "unknown option" and "defined twice").
    pub keys: HashMap<String, Pos>,
    /// Where the value is (for "wrong type").
    pub values: HashMap<String, Pos>,
}

#[derive(Debug)]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

fn pos(span: &Span) -> Pos {
    // saphyr counts lines from 1 and columns from 0; editors count both from 1.
    Pos {
        line: span.start.line(),
        col: span.start.col() + 1,
    }
}

/// Parses one YAML document into a JSON value plus the position index.
pub fn parse(text: &str) -> Result<(Value, Positions), YamlError> {
    let mut events = Vec::new();
    for item in Parser::new_from_str(text) {
        match item {
            Ok(ev) => events.push(ev),
            Err(e) => {
                return Err(YamlError {
                    pos: Pos {
                        line: e.marker().line(),
                        col: e.marker().col() + 1,
                    },
                    message: format!("invalid YAML: {}", e.info()),
                })
            }
        }
    }
    let mut b = Builder {
        events,
        i: 0,
        anchors: HashMap::new(),
        positions: Positions::default(),
    };
    // Skip StreamStart / DocumentStart; an empty file is an empty map.
    while b.i < b.events.len()
        && matches!(
            b.events[b.i].0,
            Event::StreamStart | Event::DocumentStart(_) | Event::Nothing
        )
    {
        b.i += 1;
    }
    if b.i >= b.events.len() || matches!(b.events[b.i].0, Event::StreamEnd | Event::DocumentEnd) {
        return Ok((Value::Object(Map::new()), b.positions));
    }
    let v = b.node("")?;
    // A second document in the same file is not supported: say so.
    while b.i < b.events.len() {
        if let Event::DocumentStart(_) = b.events[b.i].0 {
            return Err(YamlError {
                pos: pos(&b.events[b.i].1),
                message:
                    "only one YAML document per file is supported; split it into several -c files"
                        .into(),
            });
        }
        b.i += 1;
    }
    Ok((v, b.positions))
}

struct Builder<'a> {
    events: Vec<(Event<'a>, Span)>,
    i: usize,
    anchors: HashMap<usize, Value>,
    positions: Positions,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Builder<'_> {
    fn node(&mut self, path: &str) -> Result<Value, YamlError> {
        let Some((ev, span)) = self.events.get(self.i).cloned() else {
            return Err(YamlError {
                pos: Pos::default(),
                message: "unexpected end of YAML".into(),
            });
        };
        self.i += 1;
        self.positions.values.insert(path.to_string(), pos(&span));
        match ev {
            Event::Scalar(s, style, anchor, _) => {
                let v = scalar(&s, style);
                if anchor > 0 {
                    self.anchors.insert(anchor, v.clone());
                }
                Ok(v)
            }
            Event::Alias(id) => self.anchors.get(&id).cloned().ok_or(YamlError {
                pos: pos(&span),
                message: "alias refers to an unknown anchor".into(),
            }),
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                while !matches!(
                    self.events.get(self.i).map(|e| &e.0),
                    Some(Event::SequenceEnd) | None
                ) {
                    let p = join(path, &items.len().to_string());
                    items.push(self.node(&p)?);
                }
                self.i += 1;
                let v = Value::Array(items);
                if anchor > 0 {
                    self.anchors.insert(anchor, v.clone());
                }
                Ok(v)
            }
            Event::MappingStart(anchor, _) => {
                let mut map = Map::new();
                while !matches!(
                    self.events.get(self.i).map(|e| &e.0),
                    Some(Event::MappingEnd) | None
                ) {
                    let key_span = self.events[self.i].1;
                    let key = match self.node(&format!("{path}\u{0}key"))? {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    let p = join(path, &key);
                    if map.contains_key(&key) {
                        let first = self.positions.keys.get(&p).copied().unwrap_or_default();
                        return Err(YamlError {
                            pos: pos(&key_span),
                            message: format!(
                                "key \"{key}\" is defined twice (first at line {})",
                                first.line
                            ),
                        });
                    }
                    self.positions.keys.insert(p.clone(), pos(&key_span));
                    let v = self.node(&p)?;
                    map.insert(key, v);
                }
                self.i += 1;
                let v = Value::Object(map);
                if anchor > 0 {
                    self.anchors.insert(anchor, v.clone());
                }
                Ok(v)
            }
            other => Err(YamlError {
                pos: pos(&span),
                message: format!("unexpected YAML event {other:?}"),
            }),
        }
    }
}

/// YAML 1.2 core schema for plain scalars; quoted scalars are always strings.
fn scalar(s: &str, style: ScalarStyle) -> Value {
    if style != ScalarStyle::Plain {
        return Value::String(s.to_string());
    }
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = s.parse::<i64>() {
        return Value::Number(i.into());
    }
    if let Ok(u) = s.parse::<u64>() {
        return Value::Number(u.into());
    }
    if let Some(hex) = s.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(hex, 16) {
            return Value::Number(i.into());
        }
    }
    let looks_numeric =
        s.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+' || c == '.');
    if looks_numeric {
        if let Some(n) = s
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .and_then(Number::from_f64)
        {
            return Value::Number(n);
        }
    }
    Value::String(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_positions() {
        let (v, p) = parse("a:\n  b: 1\n  c: [x, 'y']\nd: true\n").unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": {"b": 1, "c": ["x", "y"]}, "d": true})
        );
        assert_eq!(p.keys["a.b"], Pos { line: 2, col: 3 });
        assert_eq!(p.values["a.c.1"], Pos { line: 3, col: 10 });
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let e = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e.pos.line, 3);
        assert!(e.message.contains("defined twice"), "{}", e.message);
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.message.starts_with("invalid YAML"), "{}", e.message);
        assert!(e.pos.line >= 1);
    }
}
