//! Small declarative conditions on field paths, used by `filter` and by `correlate`'s
//! `starts_when` / `ends_when`. No scripting language: a condition is data.
//!
//! ```yaml
//! condition:
//!   all:
//!     - equals: { field: event_type, value: session_notify }
//!     - exists: session_id
//!     - matches: { field: user_id, pattern: '^CORP\\' }
//!     - in: { field: channel_type, values: [RDP, Console] }
//!     - not: { equals: { field: reason, value: timeout } }
//! ```

use regex::Regex;
use serde::Deserialize;

use crate::event::{Event, Object, Value};
use crate::json::get_path;
use crate::json_paths::PathSet;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ConditionConfig {
    All(Vec<ConditionConfig>),
    Any(Vec<ConditionConfig>),
    Not(Box<ConditionConfig>),
    Equals { field: String, value: Value },
    Exists(String),
    Matches { field: String, pattern: String },
    In { field: String, values: Vec<Value> },
}

/// A condition ready to evaluate (regexes compiled).
#[derive(Debug, Clone)]
pub enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Equals(String, Value),
    Exists(String),
    Matches(String, Regex),
    In(String, Vec<Value>),
}

impl ConditionConfig {
    pub fn compile(&self) -> Result<Condition, String> {
        Ok(match self {
            ConditionConfig::All(c) => {
                Condition::All(c.iter().map(|c| c.compile()).collect::<Result<_, _>>()?)
            }
            ConditionConfig::Any(c) => {
                Condition::Any(c.iter().map(|c| c.compile()).collect::<Result<_, _>>()?)
            }
            ConditionConfig::Not(c) => Condition::Not(Box::new(c.compile()?)),
            ConditionConfig::Equals { field, value } => {
                Condition::Equals(field.clone(), value.clone())
            }
            ConditionConfig::Exists(field) => Condition::Exists(field.clone()),
            ConditionConfig::Matches { field, pattern } => Condition::Matches(
                field.clone(),
                Regex::new(pattern)
                    .map_err(|e| format!("invalid regex {pattern:?} for field `{field}`: {e}"))?,
            ),
            ConditionConfig::In { field, values } => Condition::In(field.clone(), values.clone()),
        })
    }
}

impl Condition {
    pub fn matches(&self, event: &Object) -> bool {
        self.eval(&|path| get_path(event, path))
    }

    /// Evaluates the condition with `get` answering its field paths (dotted, as written).
    pub fn eval<'v>(&self, get: &dyn Fn(&str) -> Option<&'v Value>) -> bool {
        match self {
            Condition::All(c) => c.iter().all(|c| c.eval(get)),
            Condition::Any(c) => c.iter().any(|c| c.eval(get)),
            Condition::Not(c) => !c.eval(get),
            Condition::Equals(f, v) => get(f) == Some(v),
            Condition::Exists(f) => get(f).is_some_and(|v| !v.is_null()),
            Condition::Matches(f, re) => match get(f) {
                Some(Value::String(s)) => re.is_match(s),
                Some(Value::Number(n)) => re.is_match(&n.to_string()),
                _ => false,
            },
            Condition::In(f, values) => get(f).is_some_and(|v| values.contains(v)),
        }
    }

    /// Every field path the condition reads.
    pub fn fields(&self, out: &mut Vec<String>) {
        match self {
            Condition::All(c) | Condition::Any(c) => c.iter().for_each(|c| c.fields(out)),
            Condition::Not(c) => c.fields(out),
            Condition::Equals(f, _)
            | Condition::Exists(f)
            | Condition::Matches(f, _)
            | Condition::In(f, _) => out.push(f.clone()),
        }
    }
}

/// A condition evaluated on whole events: on an event still held as JSON text, only the
/// fields the condition reads are extracted from the text (see [`crate::json_paths`]), so a
/// filter never parses, nor makes the sink re-serialize, the records it passes.
#[derive(Debug, Clone)]
pub struct EventCondition {
    condition: Condition,
    paths: PathSet,
}

impl EventCondition {
    pub fn new(condition: Condition) -> Self {
        let mut fields = Vec::new();
        condition.fields(&mut fields);
        EventCondition {
            paths: PathSet::new(fields),
            condition,
        }
    }

    pub fn matches(&self, event: &Event) -> bool {
        match event.unparsed_json_text() {
            Some(text) => {
                let found = self.paths.extract(text);
                self.condition.eval(&|path| found.get(path))
            }
            None => self.condition.matches(event.fields()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(json: &str) -> Condition {
        serde_json::from_str::<ConditionConfig>(json)
            .unwrap()
            .compile()
            .unwrap()
    }

    #[test]
    fn combinators_evaluate_as_named() {
        let ev: Object = serde_json::from_str(r#"{"t":"a","n":{"x":5},"u":"CORP\\anna"}"#).unwrap();
        assert!(cond(r#"{"equals":{"field":"t","value":"a"}}"#).matches(&ev));
        assert!(!cond(r#"{"equals":{"field":"t","value":"b"}}"#).matches(&ev));
        assert!(cond(r#"{"exists":"n.x"}"#).matches(&ev));
        assert!(!cond(r#"{"exists":"n.y"}"#).matches(&ev));
        assert!(cond(r#"{"matches":{"field":"u","pattern":"^CORP\\\\"}}"#).matches(&ev));
        assert!(cond(r#"{"in":{"field":"n.x","values":[4,5]}}"#).matches(&ev));
        assert!(cond(r#"{"all":[{"exists":"t"},{"not":{"exists":"zz"}}]}"#).matches(&ev));
        assert!(!cond(r#"{"any":[{"exists":"zz"},{"exists":"yy"}]}"#).matches(&ev));
    }

    #[test]
    fn json_text_and_parsed_events_agree() {
        use crate::json::{decode_record, Decoded};
        let docs = [
            r#"{"t":"a","n":{"x":5,"l":[1,{"k":"v"}]},"u":"CORP\\anna","z":null}"#,
            r#"{"t":"b","n":7,"u":"\u0043ORP\\bob"}"#,
            r#"{"n":{"l":[]}}"#,
        ];
        let conditions = [
            r#"{"equals":{"field":"t","value":"a"}}"#,
            r#"{"exists":"n.x"}"#,
            r#"{"exists":"z"}"#,
            r#"{"equals":{"field":"n.l.1.k","value":"v"}}"#,
            r#"{"matches":{"field":"u","pattern":"^CORP\\\\"}}"#,
            r#"{"in":{"field":"n.x","values":[4,5]}}"#,
            r#"{"all":[{"exists":"n"},{"not":{"exists":"n.l.0"}}]}"#,
            r#"{"any":[{"equals":{"field":"n","value":7}},{"exists":"n.l"}]}"#,
        ];
        for doc in docs {
            let Ok(Decoded::Record(text)) = decode_record(doc.as_bytes(), 1 << 20) else {
                panic!("{doc} is valid");
            };
            let from_text = Event::from_json(text.clone(), "t".into(), 0);
            let parsed = Event::new(text.into_object(), "t".into(), 0);
            for c in conditions {
                let c = EventCondition::new(cond(c));
                assert_eq!(c.matches(&from_text), c.matches(&parsed), "{c:?} on {doc}");
                assert!(from_text.json_text().is_some(), "evaluation kept the text");
            }
        }
        let matching = EventCondition::new(cond(r#"{"exists":"n.x"}"#));
        let Ok(Decoded::Record(text)) = decode_record(docs[0].as_bytes(), 1 << 20) else {
            panic!("valid");
        };
        assert!(matching.matches(&Event::from_json(text, "t".into(), 0)));
    }

    #[test]
    fn invalid_regex_is_reported() {
        let c: ConditionConfig =
            serde_json::from_str(r#"{"matches":{"field":"a","pattern":"("}}"#).unwrap();
        assert!(c.compile().unwrap_err().contains("invalid regex"));
    }
}
