//! SSM Session Manager streaming records (the agent's CloudWatch Logs messages, one per pty
//! read) -> Process Activity (1007), one event per command typed.
//!
//! A record is `{eventTime, target.id, userIdentity.arn, runAsUser, sessionId, sessionData:
//! [lines]}`. The echoed command line is the first line of the read that follows a prompt
//! (the prompt ends the previous read), or a line that starts with a prompt (`$ `, `sh-5.2$ `,
//! `[user@host dir]$ `, `PS C:\...> `). Lines after a command are its output
//! (`unmapped.output`). A read with no command (the first prompt, plain output) is one event
//! with activity 99 "Output", so every record comes out. `process.cmd_line` is the command as
//! it arrived: the `redact` transform must run before this one.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;

use regex::Regex;
use sessiontrail_core::json_borrowed::{BorrowedObject, BorrowedValue};
use sessiontrail_core::{Object, Value};

use super::common::{
    put, put_opt, put_user_name, Activity, Class, Field, MapContext, MapError, OcsfEvent, Reader,
    ACTOR_USER,
};
use super::{InputSystem, Mapped};

const SYSTEM: InputSystem = InputSystem::SsmSessionStream;

/// Sessions whose last read is remembered. When full the memory is cleared: the next read of
/// each session then falls back to the stateless rule (see [`PromptTracker::ended_with_prompt`]).
const MAX_TRACKED_SESSIONS: usize = 65_536;

/// Remembers, per session, whether its last read ended with a bare prompt (so the next read
/// starts with the echo of a command).
#[derive(Default)]
pub struct PromptTracker {
    last_read_ended_with_prompt: HashMap<String, bool>,
}

impl PromptTracker {
    fn ended_with_prompt(&self, session: &str) -> Option<bool> {
        self.last_read_ended_with_prompt.get(session).copied()
    }

    fn record(&mut self, session: &str, ended_with_prompt: bool) {
        if let Some(v) = self.last_read_ended_with_prompt.get_mut(session) {
            *v = ended_with_prompt;
            return;
        }
        if self.last_read_ended_with_prompt.len() >= MAX_TRACKED_SESSIONS {
            self.last_read_ended_with_prompt.clear();
        }
        self.last_read_ended_with_prompt
            .insert(session.to_string(), ended_with_prompt);
    }
}

/// A shell prompt at the start of a line: `PS C:\dir>`, `[user@host dir]$`, `sh-5.2$`,
/// `user@host:~#`, or a bare `$`. A bare `#` is not a prompt (comment lines in output are far
/// more common than a root shell with an empty PS1). A prompt is followed by the end of the
/// line or by a space and what was typed ([`classify`] checks that).
///
/// No capture groups: a search for where the match ends runs on the regex crate's DFAs, while
/// one with groups ran its backtracker, which clears its memory on every search (a tenth of
/// the whole transform's work).
fn prompt_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"^(?:PS [A-Za-z]:[^>]{0,256}>|\[[^\]]{1,128}\][$#]|[A-Za-z0-9_.@:~/+-]{1,128}[$#]|\$)",
        )
        .expect("the prompt pattern is valid")
    })
}

/// How a line of terminal output reads.
#[derive(Debug, PartialEq)]
pub enum Line<'a> {
    /// A prompt with nothing typed after it.
    BarePrompt,
    /// A prompt followed by a command.
    Command(&'a str),
    Output(&'a str),
}

pub fn classify(line: &str) -> Line<'_> {
    // Cheap pre-check: a prompt line contains `$`, `#` or `>`.
    if !line.bytes().any(|b| matches!(b, b'$' | b'#' | b'>')) {
        return Line::Output(line);
    }
    // Each alternative of the pattern ends at the first of its closing characters, so the
    // shortest match is the only one.
    let Some(prompt) = prompt_regex().find(line) else {
        return Line::Output(line);
    };
    let rest = &line[prompt.end()..];
    if rest.contains('\n') {
        // What follows a prompt is one line of typing.
        return Line::Output(line);
    }
    match rest.strip_prefix(' ').map(str::trim) {
        _ if rest.is_empty() => Line::BarePrompt,
        Some("") => Line::BarePrompt,
        Some(cmd) => Line::Command(cmd),
        None => Line::Output(line),
    }
}

/// One command found in terminal text, with the output lines that followed it.
pub struct Command<'a> {
    pub cmd_line: Option<&'a str>,
    pub output: Vec<&'a str>,
}

impl Command<'_> {
    /// Launch (1) for a typed command; "Output" (99) for output read with no command.
    pub fn activity(&self) -> Activity<'static> {
        match self.cmd_line {
            Some(_) => Activity::Id(1),
            None => Activity::Other("Output"),
        }
    }
}

/// Splits lines into commands. `first_is_command`: the first line is the echo of a command
/// typed after a prompt the previous read ended with.
pub fn split_commands<'a>(
    lines: impl Iterator<Item = &'a str>,
    mut first_is_command: bool,
) -> Vec<Command<'a>> {
    let mut commands: Vec<Command<'a>> = Vec::new();
    // Output seen before any command.
    let mut loose: Vec<&'a str> = Vec::new();
    let mut in_command = false;
    for line in lines {
        let kind = if first_is_command {
            first_is_command = false;
            match classify(line) {
                Line::BarePrompt => Line::BarePrompt,
                Line::Command(c) => Line::Command(c),
                Line::Output(o) if o.trim().is_empty() => Line::Output(o),
                Line::Output(o) => Line::Command(o.trim()),
            }
        } else {
            classify(line)
        };
        match kind {
            Line::Command(c) => {
                commands.push(Command {
                    cmd_line: Some(c),
                    output: Vec::new(),
                });
                in_command = true;
            }
            Line::BarePrompt => in_command = false,
            Line::Output(o) if o.trim().is_empty() => {}
            Line::Output(o) => match commands.last_mut() {
                Some(c) if in_command => c.output.push(o),
                _ => loose.push(o),
            },
        }
    }
    if commands.is_empty() || !loose.is_empty() {
        commands.insert(
            0,
            Command {
                cmd_line: None,
                output: loose,
            },
        );
    }
    commands
}

pub fn map<'a>(
    src: &'a BorrowedObject<'a>,
    cx: &'a MapContext,
    prompts: &mut PromptTracker,
) -> Result<Mapped<'a>, MapError> {
    let mut r = Reader::new(src);
    let session_id = r.req_str("sessionId")?;
    let (time_ms, original_time) = r.req_time("eventTime", false)?;
    let lines: &[BorrowedValue<'a>] = match r.peek("sessionData") {
        None => return Err(MapError::missing("sessionData")),
        Some(BorrowedValue::Array(a)) => a,
        Some(other) => {
            return Err(MapError::wrong_type(
                "sessionData",
                "an array of strings",
                other,
            ))
        }
    };
    let mut text: Vec<&str> = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        match l {
            BorrowedValue::String(s) => text.push(s.as_str()),
            other => {
                return Err(MapError::wrong_type(
                    &format!("sessionData.{i}"),
                    "a string",
                    other,
                ))
            }
        }
    }
    r.mark("sessionData");
    let instance = r.req_str("target.id")?;

    let ended_with_prompt = text.last().is_some_and(|l| classify(l) == Line::BarePrompt);
    let first_is_command = match prompts.ended_with_prompt(session_id) {
        Some(prev) => prev,
        // First read seen of this session: a read that echoes a command usually ends with
        // the next prompt.
        None => text.len() > 1 && ended_with_prompt,
    };
    prompts.record(session_id, ended_with_prompt);

    let run_as = r.str("runAsUser");
    let arn = r.str("userIdentity.arn");
    let region = r.str("awsRegion");
    let log_version = r.str("eventVersion");
    let commands = split_commands(text.iter().copied(), first_is_command);

    let mut events = Vec::with_capacity(commands.len());
    for (n, c) in commands.iter().enumerate() {
        let mut e = cx.event(SYSTEM, Class::ProcessActivity, c.activity(), time_ms);
        put(&mut e, "metadata.original_time", original_time);
        put(&mut e, "metadata.log_provider", "AWS CloudWatch Logs");
        put_opt(&mut e, "metadata.log_version", log_version);
        if let Some(reg) = region {
            super::common::add_profile(&mut e, "cloud");
            put(&mut e, "cloud.provider", "AWS");
            put(&mut e, "cloud.region", reg);
        }
        common_process_fields(&mut e, session_id, Some(instance.into()), arn, run_as);
        // Synthetic: the read's time and position, stable when the record is read again.
        let extra = command_fields(&mut e, session_id, time_ms, n, c);
        events.push((e, extra));
    }
    Ok(Mapped {
        events,
        taken: r.taken(),
    })
}

/// The command-specific part of a Process Activity (shared with the transcript mapping):
/// a synthetic `process.uid` (session, read time and position: stable when the record is
/// read again), the command line and message; the output lines are returned for `unmapped`.
pub fn command_fields<'a>(
    e: &mut OcsfEvent<'a>,
    session_id: &str,
    time_ms: i64,
    n: usize,
    c: &Command<'_>,
) -> Object {
    // (`concat` rather than `format!`: this runs for every command of every session.)
    let (mut t, mut i) = (itoa::Buffer::new(), itoa::Buffer::new());
    put(
        e,
        "process.uid",
        [session_id, ":", t.format(time_ms), ":", i.format(n)].concat(),
    );
    match c.cmd_line {
        Some(cmd) => {
            // Copied: a transcript's commands are cut from text cleaned of escape sequences.
            put(e, "process.cmd_line", cmd.to_string());
            put(
                e,
                "message",
                ["Command run in session ", session_id].concat(),
            );
        }
        None => put(
            e,
            "message",
            ["Terminal output of session ", session_id].concat(),
        ),
    }
    let mut extra = Object::new();
    if !c.output.is_empty() {
        extra.insert(
            "output".into(),
            Value::Array(c.output.iter().map(|&l| Value::from(l)).collect()),
        );
    }
    extra
}

/// Who ran it, where, in which session (shared with the transcript mapping).
pub fn common_process_fields<'a>(
    e: &mut OcsfEvent<'a>,
    session_id: &'a str,
    instance: Option<Cow<'a, str>>,
    owner_arn: Option<&'a str>,
    run_as: Option<&'a str>,
) {
    put(e, "actor.session.uid", session_id);
    put(e, "process.session.uid", session_id);
    if let Some(arn) = owner_arn {
        if let Some(n) = super::ssm_cloudtrail::principal_name(arn) {
            put_user_name(e, ACTOR_USER, n);
        }
        put(e, ACTOR_USER.uid, arn);
    }
    put_opt(e, "process.user.name", run_as);
    put(e, "device.type_id", 0);
    put(e, "device.type", "Unknown");
    match instance {
        Some(i) => e.put("device.instance_uid", Field::Str(i)),
        // The schema requires an identifier; the transcript did not say which node.
        None => put(e, "device.name", "unknown"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole-line pattern `classify` replaced (prompt, then optionally a space and the
    /// typed text, then the end): both must read every line alike.
    #[test]
    fn classify_reads_lines_as_the_whole_line_pattern_does() {
        let whole = Regex::new(
            r"^(?:PS [A-Za-z]:[^>]{0,256}>|\[[^\]]{1,128}\][$#]|[A-Za-z0-9_.@:~/+-]{1,128}[$#]|\$)(?: (.*))?$",
        )
        .expect("valid");
        let lines = [
            "$",
            "$ ",
            "$  ",
            "$ ls",
            "$ls",
            "$$ ls",
            "a$b",
            "a$ b$ c",
            "x$y$ ls",
            "ab$ c$ d",
            "[u@h ~]$ sudo -i",
            "[u@h ~]$",
            "[u@h ~]#x",
            "[]$ x",
            "PS C:\\> dir",
            "PS C:\\>dir",
            "PS C:\\x> ",
            "PS c:> a > b",
            "user@host:~# rm -rf /tmp/x",
            "# comment",
            "#",
            "> quoted",
            "total 0",
            "sh-5.2$ echo $HOME",
            "$ a\nb",
            "$ tab\there",
            "é$ x",
            "a.b/c~d+e-f@g:h$ x",
            "a b$ c",
        ];
        for line in lines {
            let expected = match whole.captures(line) {
                Some(c) => match c.get(1).map(|m| m.as_str().trim()) {
                    Some(cmd) if !cmd.is_empty() => Line::Command(cmd),
                    _ => Line::BarePrompt,
                },
                None => Line::Output(line),
            };
            assert_eq!(classify(line), expected, "{line:?}");
        }
    }

    #[test]
    fn prompts_are_told_from_output() {
        assert_eq!(classify("sh-5.2$ "), Line::BarePrompt);
        assert_eq!(classify("$ "), Line::BarePrompt);
        assert_eq!(classify("PS C:\\Windows\\system32> "), Line::BarePrompt);
        assert_eq!(classify("$ uptime"), Line::Command("uptime"));
        assert_eq!(
            classify("[ec2-user@ip-10-0-0-1 ~]$ ls -la"),
            Line::Command("ls -la")
        );
        assert_eq!(
            classify("# a comment in a config file"),
            Line::Output("# a comment in a config file")
        );
        assert_eq!(
            classify("Filesystem Size Use% Mounted on"),
            Line::Output("Filesystem Size Use% Mounted on")
        );
        assert_eq!(
            classify("2025/03/10 07:58:12 [error] 2232#2232: upstream"),
            Line::Output("2025/03/10 07:58:12 [error] 2232#2232: upstream")
        );
    }

    #[test]
    fn a_read_after_a_prompt_starts_with_a_command() {
        let cmds = split_commands(
            ["df -h /", "Filesystem ...", "/dev/x 30G", "sh-5.2$ "].into_iter(),
            true,
        );
        assert_eq!(cmds.len(), 1);
        assert_eq!(cmds[0].cmd_line, Some("df -h /"));
        assert_eq!(cmds[0].output, vec!["Filesystem ...", "/dev/x 30G"]);
    }

    #[test]
    fn several_prompted_commands_in_one_read_are_separate() {
        let cmds = split_commands(["$ ls", "a b", "$ echo hi", "hi", "$ "].into_iter(), false);
        let lines: Vec<_> = cmds.iter().map(|c| c.cmd_line).collect();
        assert_eq!(lines, vec![Some("ls"), Some("echo hi")]);
    }

    #[test]
    fn output_without_a_command_is_one_output_entry() {
        let cmds = split_commands(["Deploying build 2025.03.10-4 ..."].into_iter(), false);
        assert_eq!(cmds.len(), 1);
        assert_eq!(cmds[0].cmd_line, None);
        let cmds = split_commands(["sh-5.2$ "].into_iter(), false);
        assert_eq!(cmds.len(), 1);
        assert!(cmds[0].output.is_empty());
    }
}
