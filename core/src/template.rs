//! Templates for paths, S3 keys and log stream names:
//! `sessions/%Y/%m/%d/{{ user.name }}-{{ %file }}.ndjson`.
//!
//! `{{ a.b }}` is an event field, `{{ %label }}` a metadata label (file path, S3 key...), and
//! strftime specifiers in the literal text use the event time: the OCSF `time` field (epoch
//! ms) when present, else the time the event was received.

use chrono::{DateTime, TimeZone, Utc};

use crate::event::{Event, Value};
use crate::json::get_path;

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    Field(String),
    Label(String),
}

#[derive(Debug, Clone)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
    has_strftime: bool,
}

#[derive(Debug, PartialEq)]
pub enum TemplateError {
    MissingField(String),
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TemplateError::MissingField(p) => {
                write!(f, "template field `{p}` is missing from the event")
            }
        }
    }
}

impl Template {
    /// Parses a template; the error says what is wrong with it.
    pub fn parse(source: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("unclosed `{{{{` in template {source:?}"))?;
            let name = after[..end].trim();
            if name.is_empty() {
                return Err(format!("empty `{{{{ }}}}` in template {source:?}"));
            }
            parts.push(match name.strip_prefix('%') {
                Some(label) => Part::Label(label.to_string()),
                None => Part::Field(name.to_string()),
            });
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        let mut has_strftime = false;
        for p in &parts {
            if let Part::Literal(l) = p {
                if l.contains('%') {
                    has_strftime = true;
                    let bad = chrono::format::StrftimeItems::new(l)
                        .any(|i| matches!(i, chrono::format::Item::Error));
                    if bad {
                        return Err(format!("invalid strftime specifier in template {source:?}"));
                    }
                }
            }
        }
        Ok(Template {
            source: source.to_string(),
            parts,
            has_strftime,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// True when the template is the same for every event.
    pub fn is_static(&self) -> bool {
        !self.has_strftime && self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// Renders the template. With `path_safe`, field values cannot escape a directory:
    /// `/`, `\`, NUL and a leading `.` are replaced by `_`.
    pub fn render(&self, event: &Event, path_safe: bool) -> Result<String, TemplateError> {
        let time = if self.has_strftime {
            Some(event_time(event))
        } else {
            None
        };
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(l) => match &time {
                    Some(t) if l.contains('%') => out.push_str(&t.format(l).to_string()),
                    _ => out.push_str(l),
                },
                Part::Field(path) => {
                    let v = get_path(event.fields(), path)
                        .filter(|v| !v.is_null())
                        .ok_or_else(|| TemplateError::MissingField(path.clone()))?;
                    push_value(&mut out, v, path_safe);
                }
                Part::Label(name) => {
                    let v = event
                        .label(name)
                        .ok_or_else(|| TemplateError::MissingField(format!("%{name}")))?;
                    push_value(&mut out, v, path_safe);
                }
            }
        }
        Ok(out)
    }
}

fn push_value(out: &mut String, v: &Value, path_safe: bool) {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if !path_safe {
        out.push_str(&s);
        return;
    }
    for (i, c) in s.chars().enumerate() {
        match c {
            '/' | '\\' | '\0' => out.push('_'),
            '.' if i == 0 => out.push('_'),
            c => out.push(c),
        }
    }
}

/// The event's own time: OCSF `time` (epoch milliseconds) when present, else receive time.
pub fn event_time(event: &Event) -> DateTime<Utc> {
    event
        .fields()
        .get("time")
        .and_then(Value::as_i64)
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        .unwrap_or(event.meta.received_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(json: &str) -> Event {
        Event::new(serde_json::from_str(json).unwrap(), "t".into(), 0)
    }

    #[test]
    fn renders_fields_labels_and_time() {
        let t = Template::parse("s/%Y/%m/{{ user.name }}-{{ %file }}").unwrap();
        let mut e = ev(r#"{"time": 1741597200000, "user": {"name": "anna"}}"#);
        e.set_label("file", "x.log");
        assert_eq!(t.render(&e, false).unwrap(), "s/2025/03/anna-x.log");
    }

    #[test]
    fn path_safe_rendering_cannot_escape_the_directory() {
        let t = Template::parse("out/{{ host }}.ndjson").unwrap();
        let e = ev(r#"{"host": "../../etc/passwd"}"#);
        assert_eq!(t.render(&e, true).unwrap(), "out/_._.._etc_passwd.ndjson");
    }

    #[test]
    fn missing_field_is_an_error() {
        let t = Template::parse("{{ nope }}").unwrap();
        assert_eq!(
            t.render(&ev("{}"), false),
            Err(TemplateError::MissingField("nope".into()))
        );
    }

    #[test]
    fn bad_templates_are_rejected() {
        assert!(Template::parse("{{ open").is_err());
        assert!(Template::parse("{{ }}").is_err());
        assert!(Template::parse("a/%Q").is_err());
    }
}
