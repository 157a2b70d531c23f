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

use crate::event::{Object, Value};
use crate::json::get_path;

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
        match self {
            Condition::All(c) => c.iter().all(|c| c.matches(event)),
            Condition::Any(c) => c.iter().any(|c| c.matches(event)),
            Condition::Not(c) => !c.matches(event),
            Condition::Equals(f, v) => get_path(event, f) == Some(v),
            Condition::Exists(f) => get_path(event, f).is_some_and(|v| !v.is_null()),
            Condition::Matches(f, re) => match get_path(event, f) {
                Some(Value::String(s)) => re.is_match(s),
                Some(Value::Number(n)) => re.is_match(&n.to_string()),
                _ => false,
            },
            Condition::In(f, values) => get_path(event, f).is_some_and(|v| values.contains(v)),
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
    fn invalid_regex_is_reported() {
        let c: ConditionConfig =
            serde_json::from_str(r#"{"matches":{"field":"a","pattern":"("}}"#).unwrap();
        assert!(c.compile().unwrap_err().contains("invalid regex"));
    }
}
