//! The record screen: decides from an event's JSON text alone that redaction cannot change the
//! event, so that it is passed on without being parsed and its text is written out unchanged.
//!
//! Most records hold no secret, and parsing one costs more than the rest of a
//! `stdin -> redact -> file` pipeline. The screen asks of the whole record text, at once, the
//! questions the walk asks of each string. It answers "maybe" whenever one of them could be
//! yes: it may send a clean record to the walk, never a record with a secret past it.
//!
//! **The view.** Every string of the record (keys too), as the detectors see it, occurs in the
//! view of the text, followed by a quote:
//! - a text without a backslash is its own view: JSON has no escape without one, so each
//!   string is the bytes between its quotes (and holds no ESC, line break or quote, which must
//!   be escaped);
//! - otherwise the view is a copy with each string decoded; a string holding ESC is written
//!   twice, first as the detectors scan it (escape sequences stripped, [`StrippedText`]), then
//!   as it is (field names are judged unstripped).
//!
//! So a literal, or a pattern without `^`, `$` or `\b`, that occurs in a string occurs in the
//! view. For the walk to change anything, one of these must hold, and the screen checks each:
//! - an anchored built-in detector fires only where one of its anchors occurs (ASCII
//!   case-insensitively): one Aho-Corasick pass over the lower-cased view finds the candidate
//!   detectors, and a candidate with `screens` must also match one of them. A `(?i)` screen is
//!   run without the flag on the lower-cased view, where the regex engine can look for its
//!   words quickly (with the flag it cannot, and those screens took most of the time). That
//!   folds ASCII case only, while `(?i)` in a detector also folds `ſ` and the Kelvin sign `K`
//!   onto `s` and `k`: a record holding either and some candidate is walked;
//! - a field named like a secret (`"db_password": "x"`): the view holds the name's last word
//!   ([`SECRET_FIELD_WORDS`], an anchor of `credential_assignment`) followed by a quote;
//! - a bare AWS secret key: a line of exactly 40 key characters between `"`, LF or CR (and
//!   spaces or tabs);
//! - `raw_base64` at the top level is decoded before it is scanned: a record naming it is
//!   walked;
//! - a PEM body needs a BEGIN line in the record (a screen of `pem_private_key`) or a block
//!   left open by an earlier record of the session, which the caller checks.
//!
//! Custom rules are arbitrary regexes that may match without any literal (and whose `^`, `$`,
//! `\b` mean the string's edges): with one configured, every record is walked.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, Input, MatchKind};
use memchr::{memchr, memchr2, memmem};
use regex::Regex;

use super::detectors::{is_bare_secret_key, Scanner, BARE_SECRET_KEY_LEN, SECRET_FIELD_WORDS};
use super::text::StrippedText;

const ESC: u8 = 0x1b;
/// A pseudo-anchor: the walk decodes a top-level `raw_base64` string before scanning it.
const RAW_BASE64: &str = "raw_base64";
/// The characters that Unicode case folding (`(?i)` in a detector) maps onto ASCII letters:
/// `ſ` onto `s`, the Kelvin sign onto `k`. ASCII lower-casing leaves them as they are.
const FOLDS_TO_ASCII: [&str; 2] = ["\u{17f}", "\u{212a}"];

pub struct RecordScreen {
    /// Lower-case anchors; `None` when every record must be walked (custom rules).
    anchors: Option<AhoCorasick>,
    /// For each anchor, the candidates it makes (bit `d` for detector `d`, bit `walk` for "walk
    /// the record"), including those of the left-out anchors that contain it.
    candidates: Vec<u64>,
    /// Per detector: the screens a candidate must match (none: the anchor decides).
    screens: Vec<Screens>,
    /// The bit of "walk whatever the screens say".
    walk: u32,
    bare_secret_keys: bool,
    /// Finders of [`FOLDS_TO_ASCII`].
    folds: Vec<memmem::Finder<'static>>,
    // Scratch buffers, kept across records.
    view: String,
    string: String,
    lower: String,
}

/// The screens of one detector: those that match case as written run on the view; those
/// written `(?i)...` run without the flag on the lower-cased view.
#[derive(Default, Clone)]
struct Screens {
    exact: Vec<Regex>,
    folded: Vec<Regex>,
}

impl Screens {
    fn add(&mut self, screen: &str) -> Result<(), String> {
        let compile = |s: &str| Regex::new(s).map_err(|e| format!("detector screen {s:?}: {e}"));
        match screen.strip_prefix("(?i)") {
            // Without the flag the pattern sees ASCII-lower-cased text: an upper-case letter in
            // it (`[A-Z]`, `\S`) would never match or would mean something else, and a
            // non-ASCII letter would not be folded.
            Some(rest)
                if !rest
                    .bytes()
                    .all(|c| c.is_ascii() && !c.is_ascii_uppercase()) =>
            {
                Err(format!(
                    "detector screen {screen:?}: a (?i) screen must be written in lower-case ASCII"
                ))
            }
            // Case folding only as the leading flag, which is what the split above relies on.
            _ if screen.match_indices("(?i").any(|(at, _)| at > 0) => Err(format!(
                "detector screen {screen:?}: (?i) only at the start"
            )),
            Some(rest) => {
                self.folded.push(compile(rest)?);
                Ok(())
            }
            None => {
                self.exact.push(compile(screen)?);
                Ok(())
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.folded.is_empty()
    }
}

impl RecordScreen {
    pub fn new(scanner: &Scanner) -> Result<RecordScreen, String> {
        let detectors = scanner.detector_count();
        // One bit per detector and one for `walk`; past that (not with the built-ins) the
        // screen is simply off.
        if scanner.has_custom_rules() || detectors >= 64 {
            return Ok(RecordScreen::off());
        }
        let walk = detectors as u32;
        let mut anchors: Vec<(String, u64)> = Vec::new();
        let mut add = |anchor: &str, bits: u64| {
            let anchor = anchor.to_ascii_lowercase();
            match anchors.iter_mut().find(|(a, _)| *a == anchor) {
                Some((_, b)) => *b |= bits,
                None => anchors.push((anchor, bits)),
            }
        };
        let mut screens = vec![Screens::default(); detectors];
        for (d, detector_anchors, detector_screens) in scanner.built_ins() {
            if detector_anchors.is_empty() {
                // Not a built-in as the screen knows them (each has anchors).
                return Ok(RecordScreen::off());
            }
            for a in detector_anchors {
                add(a, 1 << d);
            }
            for s in detector_screens {
                screens[d].add(s)?;
            }
        }
        if let Some(d) = scanner.secret_field_detector() {
            for w in SECRET_FIELD_WORDS {
                add(w, 1 << d);
            }
            // The name's last word, then the name's closing quote.
            let words: Vec<String> = SECRET_FIELD_WORDS
                .iter()
                .map(|w| regex::escape(&w.to_ascii_lowercase()))
                .collect();
            screens[d].add(&format!("(?i)(?:{})\"", words.join("|")))?;
        }
        add(RAW_BASE64, 1 << walk);
        // An anchor that contains another is left out, its candidates given to the one inside
        // (which occurs wherever it does): fewer patterns search faster, and with none inside
        // another, every occurrence of each is reported. Longest first, so that what a left-out
        // anchor gives is passed on if the one inside is left out in turn.
        anchors.sort_by_key(|(a, _)| std::cmp::Reverse(a.len()));
        let mut kept = Vec::new();
        for i in 0..anchors.len() {
            let (outer, bits) = anchors[i].clone();
            let mut contained = false;
            for (inner, inner_bits) in &mut anchors[i + 1..] {
                if outer.contains(inner.as_str()) {
                    *inner_bits |= bits;
                    contained = true;
                }
            }
            if !contained {
                kept.push((outer, bits));
            }
        }
        let ac = AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostLongest)
            .build(kept.iter().map(|(a, _)| a))
            .map_err(|e| format!("building the record screen: {e}"))?;
        Ok(RecordScreen {
            anchors: Some(ac),
            candidates: kept.into_iter().map(|(_, bits)| bits).collect(),
            screens,
            walk,
            bare_secret_keys: scanner.finds_bare_secret_keys(),
            folds: FOLDS_TO_ASCII.iter().map(memmem::Finder::new).collect(),
            view: String::new(),
            string: String::new(),
            lower: String::new(),
        })
    }

    fn off() -> RecordScreen {
        RecordScreen {
            anchors: None,
            candidates: Vec::new(),
            screens: Vec::new(),
            walk: 0,
            bare_secret_keys: true,
            folds: Vec::new(),
            view: String::new(),
            string: String::new(),
            lower: String::new(),
        }
    }

    /// Whether redacting the record with JSON text `text` could change it (or the PEM state):
    /// `false` only when no detector can fire on any of its strings.
    pub fn may_change(&mut self, text: &str) -> bool {
        let RecordScreen {
            anchors,
            candidates,
            screens,
            walk,
            bare_secret_keys,
            folds,
            view,
            string,
            lower,
        } = self;
        let Some(ac) = anchors else {
            return true;
        };
        let view: &str = if memchr(b'\\', text.as_bytes()).is_some() {
            if decode_view(text, view, string).is_none() {
                return true;
            }
            view.as_str()
        } else {
            text
        };
        lower.clear();
        lower.push_str(view);
        lower.make_ascii_lowercase();
        // A search from every start position that has a match: no anchor is inside another, so
        // each occurrence of each is reported.
        let mut found = 0u64;
        let mut at = 0;
        while let Some(m) = ac.find(Input::new(lower.as_bytes()).span(at..lower.len())) {
            found |= candidates[m.pattern().as_usize()];
            at = m.start() + 1;
        }
        if found & (1 << *walk) != 0 {
            return true;
        }
        let mut folds_checked = false;
        for (d, screens) in screens.iter().enumerate() {
            if found & (1 << d) == 0 {
                continue;
            }
            if screens.is_empty() || screens.exact.iter().any(|s| s.is_match(view)) {
                return true;
            }
            if screens.folded.is_empty() {
                continue;
            }
            if !folds_checked {
                if folds.iter().any(|f| f.find(view.as_bytes()).is_some()) {
                    return true;
                }
                folds_checked = true;
            }
            if screens.folded.iter().any(|s| s.is_match(lower)) {
                return true;
            }
        }
        *bare_secret_keys && has_bare_secret_key_line(view)
    }
}

/// Writes `text` to `view` with every string decoded (see the module doc). `None` for an
/// escape JSON does not have (never in a validated record): the caller walks the record then.
fn decode_view(text: &str, view: &mut String, string: &mut String) -> Option<()> {
    // In valid JSON every backslash starts an escape in a string: one pass decodes them all.
    view.clear();
    let b = text.as_bytes();
    let mut at = 0;
    while let Some(k) = memchr(b'\\', &b[at..]) {
        view.push_str(&text[at..at + k]);
        at = decode_escape(b, at + k, view)?;
    }
    view.push_str(&text[at..]);
    // ESC comes only from an escape (rare): a string holding one is also written as the
    // detectors see it, which takes the strings' bounds.
    if memchr(ESC, view.as_bytes()).is_some() {
        return decode_strings(text, view, string);
    }
    Some(())
}

/// [`decode_view`] string by string, writing a string that holds ESC twice.
fn decode_strings(text: &str, view: &mut String, string: &mut String) -> Option<()> {
    view.clear();
    let b = text.as_bytes();
    let mut at = 0;
    // Outside strings there is no backslash and no quote but the one opening the next string.
    while let Some(q) = memchr(b'"', &b[at..]) {
        let open = at + q;
        view.push_str(&text[at..=open]);
        string.clear();
        let mut i = open + 1;
        loop {
            let k = i + memchr2(b'"', b'\\', &b[i..])?;
            string.push_str(&text[i..k]);
            if b[k] == b'"' {
                at = k + 1;
                break;
            }
            i = decode_escape(b, k, string)?;
        }
        if memchr(ESC, string.as_bytes()).is_some() {
            if let Some(stripped) = StrippedText::new(string) {
                view.push_str(&stripped.text);
                view.push('"');
            }
        }
        view.push_str(string);
        view.push('"');
    }
    view.push_str(&text[at..]);
    Some(())
}

/// Decodes the escape at `b[at]` (a backslash) onto `out`; returns the index after it.
fn decode_escape(b: &[u8], at: usize, out: &mut String) -> Option<usize> {
    let c = match *b.get(at + 1)? {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let unit = hex4(b, at + 2)?;
            let (code, next) = match unit {
                0xd800..=0xdbff => {
                    // A surrogate pair: `\uD83D\uDE00`.
                    if b.get(at + 6) != Some(&b'\\') || b.get(at + 7) != Some(&b'u') {
                        return None;
                    }
                    let low = hex4(b, at + 8)?;
                    if !(0xdc00..=0xdfff).contains(&low) {
                        return None;
                    }
                    (0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00), at + 12)
                }
                _ => (unit, at + 6),
            };
            out.push(char::from_u32(code)?);
            return Some(next);
        }
        _ => return None,
    };
    out.push(c);
    Some(at + 2)
}

fn hex4(b: &[u8], at: usize) -> Option<u32> {
    let digits = std::str::from_utf8(b.get(at..at + 4)?).ok()?;
    if !digits.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

/// The characters of a bare secret key, as a table: the run search below tests most bytes of
/// every record, and a lookup is cheaper than three comparisons.
const KEY_CHARS: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        table[c] = b.is_ascii_alphanumeric() || b == b'/' || b == b'+';
        c += 1;
    }
    table
};

fn is_key_char(c: u8) -> bool {
    KEY_CHARS[usize::from(c)]
}

/// Whether some line of `view` (ended by `"`, LF or CR) is a bare secret key, spaces and tabs
/// around it allowed. Such a key is a maximal run of exactly 40 key characters; probing every
/// 40th byte finds every run that long without looking at most bytes.
fn has_bare_secret_key_line(view: &str) -> bool {
    const LEN: usize = BARE_SECRET_KEY_LEN;
    let b = view.as_bytes();
    // Every run of LEN or more key characters starting before `probe - LEN + 1` was examined.
    let mut probe = LEN - 1;
    while probe < b.len() {
        if !is_key_char(b[probe]) {
            probe += LEN;
            continue;
        }
        let mut start = probe;
        while start > 0 && is_key_char(b[start - 1]) {
            start -= 1;
        }
        let mut end = probe + 1;
        while end < b.len() && is_key_char(b[end]) {
            end += 1;
        }
        if end - start == LEN
            && is_line_edge(b[..start].iter().rev())
            && is_line_edge(b[end..].iter())
            && is_bare_secret_key(&view[start..end])
        {
            return true;
        }
        probe = end + LEN;
    }
    false
}

/// Whether `side` (the bytes beside a run, going away from it) is spaces or tabs up to a line
/// end, a quote or the edge of the view.
fn is_line_edge<'a>(mut side: impl Iterator<Item = &'a u8>) -> bool {
    match side.find(|c| !matches!(c, b' ' | b'\t')) {
        None => true,
        Some(c) => matches!(c, b'"' | b'\n' | b'\r'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn screen() -> RecordScreen {
        RecordScreen::new(&Scanner::new(&[], &[]).unwrap()).unwrap()
    }

    fn view(text: &str) -> String {
        let (mut v, mut s) = (String::new(), String::new());
        decode_view(text, &mut v, &mut s).unwrap();
        v
    }

    #[test]
    fn strings_are_decoded_and_escape_sequences_stripped() {
        assert_eq!(
            view(r#"{"a\"b":"x\\y\/z\u0041\n","k":"\ud83d\ude00"}"#),
            "{\"a\"b\":\"x\\y/zA\n\",\"k\":\"\u{1f600}\"}"
        );
        assert_eq!(
            view(r#"{"m":"pass\u001b[1mword"}"#),
            "{\"m\":\"password\"pass\x1b[1mword\"}"
        );
        let (mut v, mut s) = (String::new(), String::new());
        assert!(decode_view(r#"{"m":"\ud800x"}"#, &mut v, &mut s).is_none());
        assert!(decode_view(r#"{"m":"\q"}"#, &mut v, &mut s).is_none());
        assert!(decode_view(r#"{"m":"\u001b\ud800"}"#, &mut v, &mut s).is_none());
    }

    #[test]
    fn plain_records_pass_and_anchor_words_alone_do_not_stop_them() {
        let mut s = screen();
        for text in [
            r#"{"a":1,"b":"hello world","c":["x","y"]}"#,
            r#"{"tokenValue":"Value hidden due to security reasons.","streamUrl":"wss://ssm.example/x?role=publish"}"#,
            r#"{"cmd":"sudo systemctl restart nginx","user":"CORP\\alice"}"#,
            r#"{"password_policy":"strict","note":"the secret garden"}"#,
            r#"{"sha":"451450e688efe0986ea56ec065015ac241b29c5d"}"#,
        ] {
            assert!(!s.may_change(text), "{text}");
        }
    }

    #[test]
    fn possible_secrets_stop_the_record() {
        let mut s = screen();
        for text in [
            r#"{"m":"id AKIAIOSFODNN7EXAMPL3"}"#,
            r#"{"m":"id \u0041KIAIOSFODNN7EXAMPL3"}"#,
            r#"{"m":"psql postgresql:\/\/app:Pg_Pa55@db\/x"}"#,
            r#"{"db_password":"x"}"#,
            r#"{"db_pass\u0077ord":"x"}"#,
            r#"{"Password" : "x"}"#,
            r#"{"m":"pass\u001b[1mword=hunter2"}"#,
            r#"{"m":"ls\nwJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\r\n$ "}"#,
            r#"{"m":"  wJalrXUtnFEMI\/K7MDENG\/bPxRfiCYEXAMPLEKEY"}"#,
            r#"{"m":"-----BEGIN RSA PRIVATE KEY-----\nMIIE"}"#,
            r#"{"raw_base64":"aGVsbG8="}"#,
            r#"{"m":"echo 'pw' | sudo -S ls"}"#,
        ] {
            assert!(s.may_change(text), "{text}");
        }
    }

    #[test]
    fn bare_key_runs_must_be_whole_lines_of_exactly_forty() {
        let key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        assert!(has_bare_secret_key_line(&format!("\"{key}\"")));
        assert!(has_bare_secret_key_line(&format!("x\n\t{key} \r")));
        assert!(has_bare_secret_key_line(key));
        assert!(!has_bare_secret_key_line(&format!("\"a {key}\"")));
        assert!(!has_bare_secret_key_line(&format!("\"{key}A\"")));
        assert!(!has_bare_secret_key_line(&format!("\"{key}-x\"")));
        // Runs longer than 40 around a probe, then a key further on.
        let long = "A".repeat(97);
        assert!(has_bare_secret_key_line(&format!("\"{long}\",\"{key}\"")));
        assert!(!has_bare_secret_key_line(&format!("\"{long}\"")));
    }

    #[test]
    fn only_two_characters_fold_onto_ascii_letters() {
        // `(?i)` folds these onto ASCII letters and lower-casing the view does not, so
        // FOLDS_TO_ASCII must list every one (checked against the regex crate in use).
        let letter = Regex::new("(?i)^[a-z]$").unwrap();
        let found: Vec<String> = (0x80..=0x10ffff_u32)
            .filter_map(char::from_u32)
            .map(String::from)
            .filter(|c| letter.is_match(c))
            .collect();
        assert_eq!(found, FOLDS_TO_ASCII);
    }

    #[test]
    fn a_folding_character_beside_a_candidate_stops_the_record() {
        let mut s = screen();
        // `(?i:token)=` of env_secret matches `TO\u{212a}EN=` once the string holds one of
        // its anchors (`secret` here).
        assert!(s.may_change("{\"m\":\"the secret: TO\u{212a}EN=abc\"}"));
        assert!(
            !s.may_change("{\"m\":\"TO\u{212a}EN=abc\"}"),
            "no anchor: no detector runs"
        );
        assert!(!s.may_change("{\"m\":\"the secret garden\"}"));
    }

    #[test]
    fn case_insensitive_screens_are_written_in_lower_case() {
        let mut screens = Screens::default();
        assert!(screens.add("(?i)bearer [a-z]{4}").is_ok());
        assert!(screens.add("(?i)Bearer").is_err());
        assert!(screens.add(r"(?i)x\S").is_err());
        assert!(screens.add("(?i)caf\u{e9}").is_err());
        assert!(screens.add("x(?i:y)").is_err());
        assert!(screens.add("AKIA[A-Z]").is_ok());
        assert_eq!((screens.exact.len(), screens.folded.len()), (1, 1));
    }

    #[test]
    fn custom_rules_turn_the_screen_off() {
        let rules = [super::super::detectors::CustomRule {
            name: "ticket".into(),
            pattern: r"\d{6}".into(),
            replace: None,
        }];
        let mut s = RecordScreen::new(&Scanner::new(&[], &rules).unwrap()).unwrap();
        assert!(s.may_change(r#"{"a":"b"}"#));
    }

    #[test]
    fn disabled_detectors_are_not_candidates() {
        let except = ["aws_access_key_id".to_string()];
        let mut s = RecordScreen::new(&Scanner::new(&except, &[]).unwrap()).unwrap();
        assert!(!s.may_change(r#"{"m":"id AKIAIOSFODNN7EXAMPL3"}"#));
    }
}
