//! The built-in detectors and the scanner that runs them over one string.
//!
//! Each detector has a stable name (shown in replacements, metrics and `annotate`), the literal
//! anchors that must occur for it to possibly match, and regexes whose first capture group
//! (other than `key`) is the secret, so that the surrounding text (flag names, prompts, URLs)
//! stays. One Aho-Corasick pass over the string finds the anchors; only the detectors whose
//! anchors occur run their regexes, so a string with no candidate costs one scan.
//!
//! Each detector may also list `screens`: regexes without `^`, `$` or `\b` that match a part of
//! every match of its patterns. The record screen ([`super::screen`]) runs them on a whole
//! record's text to rule the detector out without parsing the record; a screen that misses a
//! match of its detector would let that secret through, so a pattern change must keep them in
//! step (the tests of this module check each detector's samples against its screens).
//!
//! The policy these implement is the table R1-R10 of `shared/corpus/README.md`; docs/redaction.md
//! describes each detector with examples and known limits.

use std::ops::Range;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::{Captures, Regex};

use super::pem::{PemCursor, PemMarkers, PEM_BEGIN};
use super::text::lines;

/// A secret found in a string: its byte range and the index of the detector that found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub range: Range<usize>,
    pub detector: usize,
}

/// How a detector's matches are checked before they count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Every match is a secret.
    None,
    /// The secret must not continue with `[A-Z0-9]` (a longer token is not an access key id).
    NotFollowedByUpperAlnum,
    /// An assigned value: placeholders (`<not set>`, `****`, `${VAR}`, `YES`, an earlier
    /// redaction...) and working directories after a `pwd` key are not secrets.
    AssignedValue,
}

struct BuiltIn {
    name: &'static str,
    /// Case-insensitive literals; the detector runs only when one occurs. Empty: always runs.
    anchors: &'static [&'static str],
    patterns: &'static [&'static str],
    /// Anchor-free parts of `patterns` for the record screen: any text holding a match of a
    /// pattern holds a match of one of these. Empty: an anchor alone makes the detector a
    /// candidate. A case-insensitive screen starts with `(?i)` and is otherwise lower-case.
    screens: &'static [&'static str],
    check: Check,
}

/// Unquoted values end at whitespace, a quote, `&`, `;`, `|` (R9) or a backslash (the start
/// of an escaped quote in a still-encoded JSON string).
const VALUE: &str = r#"(?:"([^"\r\n]*)"|'([^'\r\n]*)'|\\"([^"\\\r\n]*)\\"|([^\s"'&;|\\]+))"#;

pub const PEM_PRIVATE_KEY: &str = "pem_private_key";
pub const AWS_SECRET_ACCESS_KEY: &str = "aws_secret_access_key";
pub const CREDENTIAL_ASSIGNMENT: &str = "credential_assignment";

/// Built-in detectors in precedence order: when two find overlapping secrets the earlier
/// detector names the replacement.
const BUILT_INS: &[BuiltIn] = &[
    BuiltIn {
        name: "aws_access_key_id",
        anchors: &["akia", "asia"],
        // Not inside a longer upper-case run (base64 blobs), wherever else it stands: after
        // stripping escapes a key can be glued to the text before it.
        patterns: &[r"(?:^|[^A-Z0-9])((?:AKIA|ASIA)[A-Z0-9]{16})"],
        screens: &[r"(?:AKIA|ASIA)[A-Z0-9]{16}"],
        check: Check::NotFollowedByUpperAlnum,
    },
    BuiltIn {
        name: AWS_SECRET_ACCESS_KEY,
        anchors: &["secret_access", "secretaccess", "secret-access"],
        patterns: &[
            r#"(?i)secret[_-]?access[_-]?key\\?["']?[ \t]*(?:[:=]|[ \t])[ \t]*(?:\\?["'])?([A-Za-z0-9/+=]{16,})"#,
        ],
        screens: &[r#"(?i)secret[_-]?access[_-]?key"#],
        check: Check::AssignedValue,
    },
    BuiltIn {
        name: "github_token",
        anchors: &["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"],
        patterns: &[
            r"(gh[pousr]_[A-Za-z0-9]{36,251})",
            r"(github_pat_[A-Za-z0-9_]{22,244})",
        ],
        screens: &[],
        check: Check::None,
    },
    BuiltIn {
        name: "gitlab_token",
        anchors: &[
            "glpat-", "gldt-", "glrt-", "glptt-", "glft-", "glsoat-", "glcbt-", "glimt-",
            "glagent-", "gloas-",
        ],
        patterns: &[
            r"((?:glpat|gldt|glrt|glptt|glft|glsoat|glcbt|glimt|glagent|gloas)-[A-Za-z0-9_-]{20,})",
        ],
        screens: &[],
        check: Check::None,
    },
    BuiltIn {
        name: "slack_token",
        anchors: &["xox", "xapp-", "hooks.slack.com"],
        patterns: &[
            r"(xox[abposre]-[A-Za-z0-9-]{10,})",
            r"(xapp-[0-9]+-[A-Za-z0-9-]{10,})",
            r"hooks\.slack\.com/(?:services|workflows|triggers)/([A-Za-z0-9/_-]+)",
        ],
        screens: &[],
        check: Check::None,
    },
    BuiltIn {
        name: "jwt",
        anchors: &["eyj"],
        // Header and payload are base64url JSON objects, so both start with `eyJ` (`{"`); a
        // single segment that starts with `eyJ` is plain base64 JSON, not a token.
        patterns: &[r"(eyJ[A-Za-z0-9_-]{2,}\.eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*)"],
        screens: &[r"eyJ[A-Za-z0-9_-]{2,}\.eyJ"],
        check: Check::None,
    },
    BuiltIn {
        name: PEM_PRIVATE_KEY,
        anchors: &["-----begin"],
        patterns: &[],
        screens: &[PEM_BEGIN],
        check: Check::None,
    },
    BuiltIn {
        name: "http_auth",
        anchors: &["authorization", "bearer"],
        patterns: &[
            r#"(?i)authorization\\?["']?[ \t]*[:=][ \t]*(?:\\?["'])?[ \t]*(?:bearer|basic|token|negotiate|ntlm)[ \t]+([A-Za-z0-9._~+/=-]+)"#,
            r#"(?i)authorization\\?["']?[ \t]*[:=][ \t]*(?:\\?["'])?([A-Za-z0-9._~+/=-]{16,})"#,
            r"(?i)(?-u:\b)bearer[ \t]+([A-Za-z0-9._~+/-]{16,}=*)",
        ],
        screens: &[
            r#"(?i)authorization\\?["']?[ \t]*[:=]"#,
            r"(?i)bearer[ \t]+[a-z0-9._~+/-]{16}",
        ],
        check: Check::None,
    },
    BuiltIn {
        name: "url_credentials",
        anchors: &["://"],
        patterns: &[r#"(?i)[a-z][a-z0-9+.-]*://[^\s:/?#@"'<>]*:([^\s/?#@"'<>]+)@"#],
        screens: &[r#"(?i)://[^\s:/?#@"'<>]*:[^\s/?#@"'<>]+@"#],
        check: Check::AssignedValue,
    },
    BuiltIn {
        name: "db_connection_string",
        anchors: &["password", "pwd"],
        // ADO.NET / ODBC `Server=...;User Id=...;Password=x y;`: the value may hold spaces
        // and runs to the next `;`.
        patterns: &[
            r#"(?i);[ \t]*(?:password|pwd)[ \t]*=[ \t]*(?:"([^"\r\n]*)"|'([^'\r\n]*)'|([^;"'\r\n]*[^;"'\s]))"#,
            r#"(?i)(?:^|[\s"'])(?:password|pwd)[ \t]*=[ \t]*(?:"([^"\r\n]*)"|'([^'\r\n]*)'|([^;"'\r\n]*[^;"'\s]))[ \t]*;"#,
        ],
        screens: &[r"(?i)(?:password|pwd)[ \t]*="],
        check: Check::AssignedValue,
    },
    BuiltIn {
        name: "cli_password",
        anchors: &["mysql", "mariadb", "-pass", "-pwd", "sshpass"],
        patterns: &[
            // mysql-family clients take the password glued to `-p`; a bare `-p` prompts.
            r#"(?:^|[\s;&|(/"'])(?:mysql|mysqldump|mysqladmin|mysqlimport|mysqlshow|mysqlcheck|mysqlpump|mysqlslap|mariadb|mariadb-dump|mariadb-admin)(?:\.exe)?[ \t](?:[^\r\n|;&]*?[ \t])?-p(?:'([^'\r\n]*)'|"([^"\r\n]*)"|([^\s'"]+))"#,
            r#"(?i)(?:^|[\s"'(])--?(?:password|passwd|pwd|pass|passin|passout)=(?:'([^'\r\n]*)'|"([^"\r\n]*)"|([^\s'"]+))"#,
            r#"(?i)(?:^|[\s"'(])--?(?:password|passwd|pwd|pass|passin|passout)[ \t]+(?:'([^'\r\n]*)'|"([^"\r\n]*)"|([^\s'"-][^\s'"]*))"#,
            r#"(?:^|[\s;&|(/"'])sshpass[ \t](?:[^\r\n|;&]*?[ \t])?-p[ \t]*(?:'([^'\r\n]*)'|"([^"\r\n]*)"|([^\s'"]+))"#,
        ],
        screens: &[
            r"(?:mysql|mariadb)[^\r\n|;&]*-p",
            r"(?i)-(?:pass|pwd)",
            r"sshpass[ \t][^\r\n|;&]*-p",
        ],
        check: Check::AssignedValue,
    },
    BuiltIn {
        name: "sudo_password",
        anchors: &["sudo"],
        patterns: &[
            r#"(?:^|[\s;&|("'])(?:echo(?:[ \t]+-[neE]+)*|printf(?:[ \t]+(?:'[^'\r\n]*'|"[^"\r\n]*"))?)[ \t]+(?:'([^'\r\n]*)'|"([^"\r\n]*)"|([^\s|;&'"]+))[ \t]*\|[ \t]*sudo[ \t](?:[^\r\n|;&]*?[ \t])?(?:-[A-Za-z]*S[A-Za-z]*|--stdin)(?:\s|$)"#,
            r#"(?:^|[\s;&|("'])sudo[ \t](?:[^\r\n|;&]*?[ \t])?(?:-[A-Za-z]*S[A-Za-z]*|--stdin)[ \t][^\r\n|;&]*?<<<[ \t]*(?:'([^'\r\n]*)'|"([^"\r\n]*)"|([^\s|;&'"]+))"#,
        ],
        screens: &[
            r#"\|[ \t]*sudo[ \t][^\r\n|;&]*(?:-[A-Za-z]*S|--stdin)"#,
            r#"sudo[ \t][^\r\n|;&]*<<<"#,
        ],
        check: Check::AssignedValue,
    },
    BuiltIn {
        name: "env_secret",
        anchors: &[
            "token",
            "secret",
            "passw",
            "api_key",
            "access_key",
            "private_key",
        ],
        patterns: &[
            r#"(?:^|[^A-Za-z0-9_])[A-Za-z0-9_]*(?i:token|secret|password|passwd|api_key|access_key|private_key)=(?:'([^'\r\n]*)'|"([^"\r\n]*)"|([^\s"'&;|]+))"#,
        ],
        screens: &[r"(?i)(?:token|secret|password|passwd|api_key|access_key|private_key)="],
        check: Check::AssignedValue,
    },
    BuiltIn {
        name: CREDENTIAL_ASSIGNMENT,
        anchors: &[
            "passw",
            "passphrase",
            "pwd",
            "secret",
            "token",
            "api_key",
            "apikey",
            "api-key",
            "access_key",
            "access-key",
            "accesskey",
            "auth_key",
            "authkey",
            "private_key",
            "privatekey",
            "credential",
        ],
        patterns: &[
            // `key = value`, `key: value`, `"key": "value"`, `key='x y'`: the key ends in one
            // of the secret words (so `tokenValue` or `password_policy` do not count).
            r#"(?i)(?:^|[^A-Za-z0-9_.-])(?P<key>[A-Za-z0-9_.-]*(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|auth[_-]?key|private[_-]?key|secret[_-]?key|credentials?))\\?["']?[ \t]*[:=][ \t]*"#,
        ],
        screens: &[
            r#"(?i)(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|auth[_-]?key|private[_-]?key|secret[_-]?key|credentials?)\\?["']?[ \t]*[:=]"#,
        ],
        check: Check::AssignedValue,
    },
];

/// Names of the built-in detectors, in precedence order.
pub fn built_in_names() -> impl Iterator<Item = &'static str> {
    BUILT_INS.iter().map(|b| b.name)
}

/// A custom rule from the config: `{name, pattern, replace?}`.
#[derive(Debug, Clone)]
pub struct CustomRule {
    pub name: String,
    pub pattern: String,
    pub replace: Option<String>,
}

struct Detector {
    name: String,
    regexes: Vec<Regex>,
    /// The built-in's anchors and screens (empty for custom rules).
    anchors: &'static [&'static str],
    screens: &'static [&'static str],
    check: Check,
    /// Mask-mode replacement (custom rules); default `[REDACTED:<name>]`.
    replace: Option<String>,
}

/// The compiled detectors for one `redact` transform.
pub struct Scanner {
    detectors: Vec<Detector>,
    prefilter: AhoCorasick,
    /// For each prefilter pattern, the detector it is an anchor of.
    anchor_owner: Vec<usize>,
    /// Detectors without anchors (custom rules): they always run.
    unanchored: Vec<usize>,
    pem: Option<(usize, PemMarkers)>,
    bare_secret_key: Option<usize>,
    /// `credential_assignment`, which also judges structured fields by their name.
    credential_assignment: Option<usize>,
}

impl Scanner {
    /// Built-ins minus `except`, then the custom rules. Errors name the offending option.
    pub fn new(except: &[String], rules: &[CustomRule]) -> Result<Scanner, String> {
        for name in except {
            if !BUILT_INS.iter().any(|b| b.name == name) {
                return Err(format!(
                    "detectors.except: unknown detector \"{name}\"; the built-in detectors are: {}",
                    built_in_names().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        let mut detectors = Vec::new();
        let mut anchors: Vec<&str> = Vec::new();
        let mut anchor_owner = Vec::new();
        let mut pem = None;
        let mut bare_secret_key = None;
        let mut credential_assignment = None;
        for b in BUILT_INS
            .iter()
            .filter(|b| !except.iter().any(|e| e == b.name))
        {
            let index = detectors.len();
            let mut regexes = Vec::with_capacity(b.patterns.len());
            for p in b.patterns {
                let p = if b.name == CREDENTIAL_ASSIGNMENT {
                    format!("{p}{VALUE}")
                } else {
                    (*p).to_string()
                };
                regexes.push(
                    Regex::new(&p).map_err(|e| {
                        format!("built-in detector {} does not compile: {e}", b.name)
                    })?,
                );
            }
            for a in b.anchors {
                anchors.push(a);
                anchor_owner.push(index);
            }
            if b.name == PEM_PRIVATE_KEY {
                pem = Some((index, PemMarkers::new()));
            }
            if b.name == AWS_SECRET_ACCESS_KEY {
                bare_secret_key = Some(index);
            }
            if b.name == CREDENTIAL_ASSIGNMENT {
                credential_assignment = Some(index);
            }
            detectors.push(Detector {
                name: b.name.to_string(),
                regexes,
                anchors: b.anchors,
                screens: b.screens,
                check: b.check,
                replace: None,
            });
        }
        let mut unanchored = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let valid_name = !r.name.is_empty()
                && r.name
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
            if !valid_name {
                return Err(format!(
                    "rules[{i}].name: \"{}\" must be lower-case letters, digits and _ (it is shown in replacements and metrics)",
                    r.name
                ));
            }
            if BUILT_INS.iter().any(|b| b.name == r.name)
                || rules[..i].iter().any(|o| o.name == r.name)
            {
                return Err(format!(
                    "rules[{i}].name: \"{}\" is already the name of another detector",
                    r.name
                ));
            }
            let regex = Regex::new(&r.pattern)
                .map_err(|e| format!("rules[{i}].pattern: not a valid regular expression: {e}"))?;
            unanchored.push(detectors.len());
            detectors.push(Detector {
                name: r.name.clone(),
                regexes: vec![regex],
                anchors: &[],
                screens: &[],
                check: Check::None,
                replace: r.replace.clone(),
            });
        }
        let prefilter = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(&anchors)
            .map_err(|e| format!("building the detector prefilter: {e}"))?;
        Ok(Scanner {
            detectors,
            prefilter,
            anchor_owner,
            unanchored,
            pem,
            bare_secret_key,
            credential_assignment,
        })
    }

    pub fn name(&self, detector: usize) -> &str {
        &self.detectors[detector].name
    }

    pub fn detector_count(&self) -> usize {
        self.detectors.len()
    }

    /// Whether custom rules are configured (they run on every string: nothing but the string
    /// itself tells whether they match).
    pub fn has_custom_rules(&self) -> bool {
        !self.unanchored.is_empty()
    }

    /// The built-in detectors that run: (index, anchors, screens).
    pub fn built_ins(
        &self,
    ) -> impl Iterator<Item = (usize, &'static [&'static str], &'static [&'static str])> + '_ {
        self.detectors
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.unanchored.contains(i))
            .map(|(i, d)| (i, d.anchors, d.screens))
    }

    /// The detector of whole fields named like secrets ([`Scanner::secret_field`]), if it runs.
    pub fn secret_field_detector(&self) -> Option<usize> {
        self.credential_assignment
    }

    /// Whether bare AWS secret access keys (a line of 40 key characters) are looked for.
    pub fn finds_bare_secret_keys(&self) -> bool {
        self.bare_secret_key.is_some()
    }

    /// The mask-mode replacement of a custom rule, if it set one.
    pub fn custom_replacement(&self, detector: usize) -> Option<&str> {
        self.detectors[detector].replace.as_deref()
    }

    /// For a string stored under the field `key` (`"password": "..."`, `"SecretAccessKey"`):
    /// the detector that makes the whole value a secret, if the name says it is one and the
    /// value is not a placeholder.
    pub fn secret_field(&self, key: &str, value: &str) -> Option<usize> {
        let index = self.credential_assignment?;
        if !is_secret_field_name(key) {
            return None;
        }
        let whole = 0..value.len();
        if !is_secret_value(Some(key), value, &whole) {
            return None;
        }
        let compact: String = key
            .bytes()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| char::from(c.to_ascii_lowercase()))
            .collect();
        if compact.ends_with("secretaccesskey") {
            if let Some(aws) = self.bare_secret_key {
                return Some(aws);
            }
        }
        Some(index)
    }

    /// Finds the secrets in `text` and appends them to `spans` (unsorted, may overlap).
    /// `pem` is the private-key cursor of the stream `text` belongs to.
    pub fn scan(&self, text: &str, pem: &mut PemCursor, spans: &mut Vec<Span>) {
        let mut candidates: u64 = 0;
        for m in self.prefilter.find_overlapping_iter(text) {
            candidates |= 1 << self.anchor_owner[m.pattern().as_usize()];
        }
        for (index, d) in self.detectors.iter().enumerate() {
            let anchored_hit = index < 64 && candidates & (1 << index) != 0;
            if !anchored_hit && !self.unanchored.contains(&index) {
                continue;
            }
            for re in &d.regexes {
                for caps in re.captures_iter(text) {
                    if let Some(range) = secret_range(re, &caps) {
                        let key = caps.name("key").map(|k| k.as_str());
                        let keep = match d.check {
                            Check::None => true,
                            Check::AssignedValue => is_secret_value(key, text, &range),
                            Check::NotFollowedByUpperAlnum => !text
                                .as_bytes()
                                .get(range.end)
                                .is_some_and(|c| c.is_ascii_uppercase() || c.is_ascii_digit()),
                        };
                        if !keep {
                            continue;
                        }
                        spans.push(Span {
                            range,
                            detector: index,
                        });
                    }
                }
            }
        }
        if let Some((index, markers)) = &self.pem {
            if pem.inside || candidates & (1 << index) != 0 {
                let mut bodies = Vec::new();
                markers.scan(text, pem, &mut bodies);
                spans.extend(bodies.into_iter().map(|range| Span {
                    range,
                    detector: *index,
                }));
            }
        }
        if let Some(index) = self.bare_secret_key {
            if text.len() >= BARE_SECRET_KEY_LEN {
                for line in lines(text) {
                    let s = &text[line.clone()];
                    let trimmed = s.trim_matches([' ', '\t']);
                    if is_bare_secret_key(trimmed) {
                        let start =
                            line.start + (s.len() - s.trim_start_matches([' ', '\t']).len());
                        spans.push(Span {
                            range: start..start + trimmed.len(),
                            detector: index,
                        });
                    }
                }
            }
        }
    }
}

/// The secret of a match: the first capture group that took part (other than `key`), or the
/// whole match for a pattern without groups.
fn secret_range(re: &Regex, caps: &Captures<'_>) -> Option<Range<usize>> {
    if caps.len() == 1 {
        return caps.get(0).map(|m| m.range()).filter(|r| !r.is_empty());
    }
    re.capture_names()
        .enumerate()
        .skip(1)
        .filter(|(_, name)| *name != Some("key"))
        .find_map(|(i, _)| caps.get(i))
        .map(|m| m.range())
        .filter(|r| !r.is_empty())
}

/// Sorts spans and merges overlapping ones; a merged span keeps the detector of the span that
/// starts first (on a tie, the earlier detector in precedence order).
pub fn merge(spans: &mut Vec<Span>) {
    spans.sort_by_key(|s| (s.range.start, s.detector));
    let mut merged: Vec<Span> = Vec::with_capacity(spans.len());
    for s in spans.drain(..) {
        match merged.last_mut() {
            Some(last) if s.range.start < last.range.end => {
                last.range.end = last.range.end.max(s.range.end);
            }
            _ => merged.push(s),
        }
    }
    *spans = merged;
}

/// Field names whose string value is a secret as a whole end in one of these words (ASCII
/// case-insensitively): the words of `credential_assignment`.
pub const SECRET_FIELD_WORDS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "api-key",
    "accesskey",
    "access_key",
    "access-key",
    "authkey",
    "auth_key",
    "privatekey",
    "private_key",
    "secretkey",
    "secret_key",
    "credential",
    "credentials",
];

/// Whether a field's string value is a secret as a whole by its name: it ends in one of
/// [`SECRET_FIELD_WORDS`] (`password`, `client_secret`, `sessionToken`, `x-api-key`...).
fn is_secret_field_name(key: &str) -> bool {
    // Cheap reject first: every word ends in one of these letters.
    match key.as_bytes().last().map(u8::to_ascii_lowercase) {
        Some(b'd' | b'e' | b't' | b'n' | b'y' | b'l' | b's') => {}
        _ => return false,
    }
    let k = key.as_bytes();
    SECRET_FIELD_WORDS
        .iter()
        .any(|w| k.len() >= w.len() && k[k.len() - w.len()..].eq_ignore_ascii_case(w.as_bytes()))
}

/// A 40-character AWS secret access key alone on a line (R2): base64 characters with at least
/// one upper-case letter, one lower-case letter and one digit, so a git SHA-1 (lower-case hex)
/// or a word is not one.
pub const BARE_SECRET_KEY_LEN: usize = 40;

pub fn is_bare_secret_key(s: &str) -> bool {
    s.len() == BARE_SECRET_KEY_LEN
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'/' || c == b'+')
        && s.bytes().any(|c| c.is_ascii_uppercase())
        && s.bytes().any(|c| c.is_ascii_lowercase())
        && s.bytes().any(|c| c.is_ascii_digit())
}

/// Whether an assigned value is a secret rather than a placeholder, a variable reference, an
/// earlier redaction or a yes/no answer (`(using password: YES)`).
fn is_secret_value(key: Option<&str>, text: &str, range: &Range<usize>) -> bool {
    let value = text[range.clone()].trim_end_matches([')', ',', '.', ']', '}']);
    if value.is_empty() {
        return false;
    }
    if let Some(key) = key {
        // `PWD=/home/ssm-user` (printed by `env`) is the working directory.
        let k = key.to_ascii_lowercase();
        if k.ends_with("pwd") && (value.starts_with('/') || value.starts_with('~')) {
            return false;
        }
    }
    let lower = value.to_ascii_lowercase();
    const PLACEHOLDERS: &[&str] = &[
        "yes",
        "no",
        "true",
        "false",
        "null",
        "none",
        "nil",
        "undefined",
        "redacted",
        "hidden",
        "xxx",
        "xxxx",
        "changeme",
        "...",
    ];
    if PLACEHOLDERS.contains(&lower.as_str()) {
        return false;
    }
    let b = value.as_bytes();
    // Already masked (`****72G6`), an earlier redaction, `<not set>`, `${VAR}`, `$VAR`, `%VAR%`.
    if b.starts_with(b"***")
        || b.starts_with(b"[REDACTED")
        || (b[0] == b'<' && b[b.len() - 1] == b'>')
        || b[0] == b'$'
        || (b.len() > 2 && b[0] == b'%' && b[b.len() - 1] == b'%')
    {
        return false;
    }
    // A hash-mode replacement `<detector>:<hex>` from an earlier pass.
    if let Some((name, digest)) = value.split_once(':') {
        if digest.len() == super::HASH_HEX_LEN
            && digest.bytes().all(|c| c.is_ascii_hexdigit())
            && BUILT_INS.iter().any(|d| d.name == name)
        {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Vec<(String, &'static str)> {
        let scanner = Scanner::new(&[], &[]).unwrap();
        let mut spans = Vec::new();
        scanner.scan(text, &mut PemCursor::default(), &mut spans);
        for s in &spans {
            assert_screens_match(s.detector, text);
        }
        merge(&mut spans);
        spans
            .into_iter()
            .map(|s| (text[s.range].to_string(), BUILT_INS[s.detector].name))
            .collect()
    }

    /// The record screen relies on this: wherever a detector finds a secret through its
    /// anchors, one of its screens matches too.
    fn assert_screens_match(detector: usize, text: &str) {
        let b = &BUILT_INS[detector];
        let lower = text.to_ascii_lowercase();
        if b.screens.is_empty() || !b.anchors.iter().any(|a| lower.contains(a)) {
            // No screen, or the bare secret key (not found through an anchor).
            return;
        }
        assert!(
            b.screens
                .iter()
                .any(|s| Regex::new(s).unwrap().is_match(text)),
            "{}: no screen matches {text:?}",
            b.name
        );
    }

    #[test]
    fn screens_compile_without_edge_anchors() {
        for b in BUILT_INS {
            for s in b.screens {
                Regex::new(s).unwrap();
                // `^`, `$` and `\b` mean the edges of a string, not of a record's text.
                let unescaped = s.replace("\\\\", "").replace("[^", "[");
                assert!(!unescaped.contains('^'), "{}: {s}", b.name);
                assert!(!unescaped.contains('$'), "{}: {s}", b.name);
                assert!(!unescaped.contains("\\b"), "{}: {s}", b.name);
            }
        }
    }

    #[test]
    fn screens_match_every_detector_sample() {
        // The samples of the tests above, plus a few per screened detector.
        for text in [
            "xAKIAIOSFODNN7EXAMPL3 ASIA0000000000000000",
            "AWS_SECRET_ACCESS_KEY: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "x eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln",
            "Authorization:\\\"Basic dXNlcjpwYXNzd29yZA==",
            "curl -H 'authorization = abcdefghijklmnopqrstuvwxyz'",
            "BEARER abcdefghijklmnopqrstuvwxyz",
            "redis://:p4ss@cache:6379 and HTTPS://u:p@h",
            "Data Source=x;PWD = a b;",
            "password=x y;",
            "echo pw|sudo\t-kS ls",
            "sudo --stdin cmd <<< 'pw'",
            "printf '%s' x | sudo -u root -S true",
            "MY_TOKEN=abc SECRET=x api_key=y",
            "client_secret: x",
            "\"apiKey\" = 'x'",
            "x-api-key: k",
            "credentials=abc",
            "PRIVATE-KEY:x",
        ] {
            found(text);
        }
    }

    fn secrets(text: &str) -> Vec<String> {
        found(text).into_iter().map(|(s, _)| s).collect()
    }

    #[test]
    fn aws_access_key_ids_need_the_full_length() {
        assert_eq!(
            found("export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPL3"),
            [("AKIAIOSFODNN7EXAMPL3".to_string(), "aws_access_key_id")]
        );
        assert!(secrets("id AKIAEXAMPLE in a shorter token").is_empty());
        assert!(secrets("XAKIAIOSFODNN7EXAMPL3Y").is_empty());
    }

    #[test]
    fn aws_secret_access_key_forms() {
        let key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        for text in [
            format!("aws_secret_access_key = {key}"),
            format!("export AWS_SECRET_ACCESS_KEY={key}"),
            format!("{{\"SecretAccessKey\": \"{key}\"}}"),
            format!("aws configure set --secret-access-key {key}"),
            key.to_string(),
            format!("  {key}\r\n"),
        ] {
            assert_eq!(secrets(&text), [key], "{text}");
        }
        assert!(secrets("451450e688efe0986ea56ec065015ac241b29c5d").is_empty());
        assert!(
            secrets(&format!("prefix {key}")).is_empty(),
            "not alone on its line"
        );
    }

    #[test]
    fn tokens_by_prefix() {
        let gh = "ghp_tteI0k0bnIlwvrMlJSiVd867PszvpbjSgPmw";
        assert_eq!(
            found(&format!("x {gh} y")),
            [(gh.to_string(), "github_token")]
        );
        let gl = "glpat-AbCdEfGhIjKlMnOpQrSt";
        assert_eq!(
            found(&format!("PRIVATE-TOKEN: {gl}"))[0],
            (gl.to_string(), "gitlab_token")
        );
        let sl = "xoxb-1234567890-abcdefghijkl";
        assert_eq!(
            found(&format!("slack {sl}")),
            [(sl.to_string(), "slack_token")]
        );
        assert_eq!(
            secrets("https://hooks.slack.com/services/T000/B000/XXXXXXXX"),
            ["T000/B000/XXXXXXXX"]
        );
    }

    #[test]
    fn jwt_needs_three_segments() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln";
        assert_eq!(
            found(&format!("?id_token={jwt}&x=1")),
            [(jwt.to_string(), "jwt")]
        );
        assert!(secrets("echo eyJsb2dMZXZlbCI6ImRlYnVnIn0= | base64 -d").is_empty());
    }

    #[test]
    fn http_authorization_keeps_the_scheme() {
        assert_eq!(
            secrets("curl -H 'Authorization: Basic dXNlcjpwYXNzd29yZA==' x"),
            ["dXNlcjpwYXNzd29yZA=="]
        );
        assert_eq!(
            secrets(r#"{"authorization":"Bearer abcdefghijklmnopqrstuvwxyz"}"#),
            ["abcdefghijklmnopqrstuvwxyz"]
        );
        assert!(secrets("the bearer of bad news").is_empty());
    }

    #[test]
    fn url_and_connection_string_passwords() {
        assert_eq!(
            found("psql postgresql://app:Pg_Pa55@db:5432/x"),
            [("Pg_Pa55".to_string(), "url_credentials")]
        );
        assert!(secrets("see https://user@example.com/path").is_empty());
        assert_eq!(
            secrets("Server=db;Database=app;User Id=sa;Password=my pass word;Encrypt=true"),
            ["my pass word"]
        );
    }

    #[test]
    fn cli_password_flags() {
        assert_eq!(
            found("mysql -h db -u root -pS3cr3t! -e 'select 1'"),
            [("S3cr3t!".to_string(), "cli_password")]
        );
        assert!(secrets("mysql -h db -u root -p").is_empty());
        assert!(secrets("ps -p 2231 -o pid,cmd").is_empty());
        assert_eq!(secrets("tool --password 'x y' --user a"), ["x y"]);
        assert_eq!(secrets("tool --password=\"x y\""), ["x y"]);
        assert_eq!(
            secrets("backup.exe --password=W1nB4ckup#2025 --t"),
            ["W1nB4ckup#2025"]
        );
        assert_eq!(secrets("sshpass -p hunter2 ssh host"), ["hunter2"]);
    }

    #[test]
    fn sudo_stdin_passwords() {
        assert_eq!(
            found("echo 'Adm1n-Pw' | sudo -S yum update"),
            [("Adm1n-Pw".to_string(), "sudo_password")]
        );
        assert_eq!(secrets("printf '%s\\n' pw123 | sudo -S ls"), ["pw123"]);
        assert!(secrets("[sudo] password for ssm-user: ").is_empty());
        assert!(secrets("echo hello | sudo tee /etc/motd").is_empty());
    }

    #[test]
    fn assignments_and_env_exports() {
        assert_eq!(
            found("export DB_PASSWORD=hunter2 && run"),
            [("hunter2".to_string(), "env_secret")]
        );
        assert_eq!(
            secrets("grant_type=password&password=x1y2&grant_type=password"),
            ["x1y2"]
        );
        assert_eq!(secrets(r#"{"client_secret": "a b c"}"#), ["a b c"]);
        assert_eq!(secrets("API_KEY: 12345abc"), ["12345abc"]);
        assert_eq!(secrets(r#"{\"password\":\"p@ss\"}"#), ["p@ss"]);
        assert!(secrets("Enter password: ").is_empty());
        assert!(secrets("(using password: YES)").is_empty());
        assert!(
            secrets("Using a password on the command line interface can be insecure.").is_empty()
        );
        assert!(secrets("access_key     ****************72G6 shared-credentials-file").is_empty());
        assert!(secrets(r#""tokenValue":"Value hidden due to security reasons.""#).is_empty());
        assert!(secrets("PWD=/home/ssm-user").is_empty());
        assert!(secrets("password=${DB_PASSWORD}").is_empty());
        assert!(secrets("mysql -u root -p[REDACTED:cli_password]").is_empty());
    }

    #[test]
    fn custom_rules_and_bad_config() {
        let rules = [CustomRule {
            name: "ticket".into(),
            pattern: r"TCK-(\d{6})".into(),
            replace: None,
        }];
        let s = Scanner::new(&["jwt".into()], &rules).unwrap();
        let mut spans = Vec::new();
        let text = "see TCK-123456 and eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln";
        s.scan(text, &mut PemCursor::default(), &mut spans);
        assert_eq!(spans.len(), 1);
        assert_eq!(&text[spans[0].range.clone()], "123456");
        assert_eq!(s.name(spans[0].detector), "ticket");

        assert!(Scanner::new(&["nope".into()], &[])
            .err()
            .unwrap_or_default()
            .contains("jwt"));
        let bad = [CustomRule {
            name: "x".into(),
            pattern: "(".into(),
            replace: None,
        }];
        assert!(Scanner::new(&[], &bad)
            .err()
            .unwrap_or_default()
            .starts_with("rules[0].pattern"));
        let clash = [CustomRule {
            name: "jwt".into(),
            pattern: "a".into(),
            replace: None,
        }];
        assert!(Scanner::new(&[], &clash).is_err());
    }
}
