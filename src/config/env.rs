//! `${VAR}`, `${VAR:-default}` and `${VAR:?message}` expansion, done on the raw text before
//! YAML parsing so a variable may stand anywhere. `$$` is a literal `$`. Comment lines are
//! left alone. Values containing a newline are rejected: they would change the YAML structure
//! and the line numbers of every later error.

use super::yaml::Pos;

#[derive(Debug)]
pub struct EnvError {
    pub pos: Pos,
    pub message: String,
}

pub fn expand(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<EnvError>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (idx, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        let mut col = 1;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            col += rest[..i].chars().count();
            let after = &rest[i + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
                col += 2;
                continue;
            }
            let Some(body) = after.strip_prefix('{') else {
                out.push('$');
                rest = after;
                col += 1;
                continue;
            };
            let pos = Pos { line: idx + 1, col };
            let Some(end) = body.find('}') else {
                errors.push(EnvError {
                    pos,
                    message: "unclosed `${`: write `${NAME}`, or `$$` for a literal `$`".into(),
                });
                out.push_str(&rest[i..]);
                rest = "";
                break;
            };
            let expr = &body[..end];
            let (name, op, arg) = if let Some(k) = expr.find(":-") {
                (&expr[..k], ":-", &expr[k + 2..])
            } else if let Some(k) = expr.find(":?") {
                (&expr[..k], ":?", &expr[k + 2..])
            } else {
                (expr, "", "")
            };
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                errors.push(EnvError {
                    pos,
                    message: format!("invalid variable name {name:?} in `${{{expr}}}`"),
                });
            } else {
                let value = match (lookup(name), op) {
                    (Some(v), ":-") if v.is_empty() => Some(arg.to_string()),
                    (Some(v), _) => Some(v),
                    (None, ":-") => Some(arg.to_string()),
                    (None, ":?") => {
                        let why = if arg.is_empty() { "is required" } else { arg };
                        errors.push(EnvError {
                            pos,
                            message: format!("environment variable {name} is not set: {why}"),
                        });
                        None
                    }
                    (None, _) => {
                        errors.push(EnvError {
                            pos,
                            message: format!("environment variable {name} is not set; set it, or give a default with `${{{name}:-default}}`"),
                        });
                        None
                    }
                };
                if let Some(v) = value {
                    if v.contains('\n') || v.contains('\r') {
                        // Never echo the value: it may be a secret.
                        errors.push(EnvError { pos, message: format!("environment variable {name} contains a newline, which is not allowed in a config value") });
                    } else {
                        out.push_str(&v);
                    }
                }
            }
            col += 3 + expr.chars().count();
            rest = &body[end + 1..];
        }
        out.push_str(rest);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cr3t".into()),
            "EMPTY" => Some(String::new()),
            "MULTI" => Some("a\nb".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_defaults_and_escapes() {
        let out = expand(
            "a: ${TOKEN}\nb: ${NOPE:-x}\nc: ${EMPTY:-d}\nd: $$HOME\n# ${UNSET}\n",
            &env,
        )
        .unwrap();
        assert_eq!(out, "a: s3cr3t\nb: x\nc: d\nd: $HOME\n# ${UNSET}\n");
    }

    #[test]
    fn unset_and_required_variables_are_errors_with_positions() {
        let errs = expand(
            "x: 1\ny: ${NOPE}\nz: ${ALSO:?set ALSO to the bucket}\n",
            &env,
        )
        .unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!((errs[0].pos.line, errs[0].pos.col), (2, 4));
        assert!(errs[0].message.contains("NOPE is not set"));
        assert!(errs[1].message.contains("set ALSO to the bucket"));
    }

    #[test]
    fn newline_values_are_rejected_without_echoing_them() {
        let errs = expand("x: ${MULTI}\n", &env).unwrap_err();
        assert!(errs[0].message.contains("newline"));
        assert!(!errs[0].message.contains("a\nb"));
    }
}
