//! Every kind of configuration error is reported by `sessiontrail validate` (and `run`) as
//! `file:line:column: message`, with what was expected; several errors are reported at once.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn validate(files: &[&Path], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(common::bin());
    cmd.arg("validate");
    for f in files {
        cmd.arg("-c").arg(f);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Validates one file and returns its error lines (`error: ` stripped), asserting exit 1.
fn errors_of(text: &str, env: &[(&str, &str)]) -> (PathBuf, Vec<String>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "pipeline.yaml", text);
    let out = validate(&[&file], env);
    (file, error_lines(&out), dir)
}

fn error_lines(out: &Output) -> Vec<String> {
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a config error; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix("error: ").map(str::to_string))
        .collect()
}

/// Asserts exactly one error, at `line:col`, starting with `message`.
fn assert_single(text: &str, env: &[(&str, &str)], line: usize, col: usize, message: &str) {
    let (file, errors, _dir) = errors_of(text, env);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let want = format!("{}:{line}:{col}: {message}", file.display());
    assert!(
        errors[0].starts_with(&want),
        "\n got: {}\nwant: {want}",
        errors[0]
    );
}

const SINK: &str = "sinks:\n  out:\n    type: stdout\n    inputs: [in]\n";

#[test]
fn yaml_syntax_error() {
    let (file, errors, _dir) = errors_of(
        "sources:\n  in:\n    type: stdin\n    decoding: [ndjson\nsinks: {}\n",
        &[],
    );
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let prefix = format!("{}:", file.display());
    let rest = errors[0].strip_prefix(&prefix).unwrap();
    let mut parts = rest.splitn(3, ':');
    let line: usize = parts.next().unwrap().parse().unwrap();
    let col: usize = parts.next().unwrap().parse().unwrap();
    // The flow sequence opened on line 4 is never closed; the parser notices at line 5.
    assert!((4..=5).contains(&line) && col >= 1, "{}", errors[0]);
    assert!(
        parts.next().unwrap().starts_with(" invalid YAML: "),
        "{}",
        errors[0]
    );
}

#[test]
fn unknown_option_suggests_the_closest_one() {
    assert_single(
        &format!("sources:\n  in:\n    type: stdin\n    decodng: lines\n{SINK}"),
        &[],
        4,
        5,
        "unknown option \"decodng\" in source \"in\" (stdin); did you mean \"decoding\"?",
    );
}

#[test]
fn unknown_top_level_key_suggests_the_closest_one() {
    assert_single(
        &format!("sources:\n  in:\n    type: stdin\n{SINK}trasforms: {{}}\n"),
        &[],
        8,
        1,
        "unknown option \"trasforms\" in the pipeline file; did you mean \"transforms\"?",
    );
}

#[test]
fn unknown_type_lists_the_known_ones() {
    assert_single(
        &format!("sources:\n  in:\n    type: stdn\n{SINK}"),
        &[],
        3,
        11,
        &format!(
            "unknown source type \"stdn\" for \"in\"; did you mean \"stdin\"? (known source types: {})",
            sessiontrail_sources::KINDS.join(", ")
        ),
    );
}

#[test]
fn missing_required_option() {
    assert_single(
        "sources:\n  in:\n    type: stdin\nsinks:\n  out:\n    type: file\n    inputs: [in]\n",
        &[],
        5,
        3,
        "missing required option \"path\" in sink \"out\" (file)",
    );
}

#[test]
fn unknown_input_name() {
    assert_single(
        "sources:\n  in:\n    type: stdin\nsinks:\n  out:\n    type: stdout\n    inputs: [in, inn_typo]\n",
        &[],
        7,
        18,
        "sink \"out\" reads from unknown input \"inn_typo\"",
    );
}

#[test]
fn cycle() {
    assert_single(
        "sources:\n  in:\n    type: stdin\ntransforms:\n  a:\n    type: filter\n    inputs: [in, b]\n    condition: { exists: x }\n  \
             b:\n    type: filter\n    inputs: [a]\n    condition: { exists: y }\nsinks:\n  out:\n    type: stdout\n    inputs: [a]\n",
        &[],
        5,
        3,
        "the pipeline has a cycle: a -> b -> a; events must flow from sources to sinks",
    );
}

#[test]
fn transform_output_that_goes_nowhere() {
    assert_single(
        &format!(
            "sources:\n  in:\n    type: stdin\ntransforms:\n  lost:\n    type: filter\n    inputs: [in]\n    condition: {{ exists: x }}\n{SINK}"
        ),
        &[],
        5,
        3,
        "the output of transform \"lost\" goes nowhere: list \"lost\" in the `inputs` of a transform or sink",
    );
}

#[test]
fn name_defined_twice_in_one_file() {
    let (file, errors, _dir) = errors_of(
        &format!("sources:\n  in:\n    type: stdin\ntransforms:\n  in:\n    type: filter\n    inputs: [in]\n    condition: {{ exists: x }}\n{SINK}"),
        &[],
    );
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let want = format!(
        "{f}:5:3: component name \"in\" is defined twice (also at {f}:2:3)",
        f = file.display()
    );
    assert!(
        errors[0].starts_with(&want),
        "\n got: {}\nwant: {want}",
        errors[0]
    );
}

#[test]
fn name_defined_twice_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "a.yaml",
        &format!("sources:\n  in:\n    type: stdin\n{SINK}"),
    );
    let b = write(
        dir.path(),
        "b.yaml",
        "sinks:\n  out:\n    type: stdout\n    inputs: [in]\n",
    );
    let errors = error_lines(&validate(&[&a, &b], &[]));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let want = format!(
        "{}:2:3: component name \"out\" is defined twice (also at {}:5:3)",
        b.display(),
        a.display()
    );
    assert!(
        errors[0].starts_with(&want),
        "\n got: {}\nwant: {want}",
        errors[0]
    );
}

#[test]
fn unset_variable() {
    assert_single(
        &format!("sources:\n  in:\n    type: stdin\n    decoding: ${{ST_TEST_UNSET_DECODING}}\n{SINK}"),
        &[],
        4,
        15,
        "environment variable ST_TEST_UNSET_DECODING is not set; set it, or give a default with `${ST_TEST_UNSET_DECODING:-default}`",
    );
}

#[test]
fn required_variable_with_a_message() {
    assert_single(
        "sources:\n  in:\n    type: stdin\nsinks:\n  out:\n    type: file\n    inputs: [in]\n    path: ${ST_TEST_OUT:?set ST_TEST_OUT to the output file}\n",
        &[],
        8,
        11,
        "environment variable ST_TEST_OUT is not set: set ST_TEST_OUT to the output file",
    );
}

#[test]
fn variable_with_a_newline_is_rejected_without_showing_its_value() {
    let (file, errors, _dir) = errors_of(
        &format!("sources:\n  in:\n    type: stdin\n    decoding: ${{ST_TEST_MULTILINE}}\n{SINK}"),
        &[("ST_TEST_MULTILINE", "lines\nsecret-part")],
    );
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let want = format!(
        "{}:4:15: environment variable ST_TEST_MULTILINE contains a newline",
        file.display()
    );
    assert!(
        errors[0].starts_with(&want),
        "\n got: {}\nwant: {want}",
        errors[0]
    );
    assert!(!errors[0].contains("secret-part"));
}

#[test]
fn variables_with_defaults_and_set_values_expand() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "p.yaml",
        "sources:\n  in:\n    type: ${ST_TEST_SOURCE_TYPE}\n    decoding: ${ST_TEST_UNSET:-lines}\nsinks:\n  out:\n    type: stdout\n    inputs: [in]\n",
    );
    let out = validate(&[&file], &[("ST_TEST_SOURCE_TYPE", "stdin")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn validate_reports_every_error_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "a.yaml",
        "sources:\n  in:\n    type: stdin\n    decodng: lines\ntransforms:\n  keep:\n    type: filtr\n    inputs: [in]\n",
    );
    let b = write(
        dir.path(),
        "b.yaml",
        "sinks:\n  out:\n    type: stdout\n    inputs: [keep, missing]\n  file:\n    type: file\n    inputs: [in]\n",
    );
    let out = validate(&[&a, &b], &[]);
    let errors = error_lines(&out);
    let expect = [
        format!("{}:4:5: unknown option \"decodng\"", a.display()),
        format!("{}:7:11: unknown transform type \"filtr\"", a.display()),
        format!("{}:5:3: missing required option \"path\"", b.display()),
        // Found although `keep` itself failed to load: its stand-in is still in the graph.
        format!(
            "{}:4:20: sink \"out\" reads from unknown input \"missing\"",
            b.display()
        ),
    ];
    for want in &expect {
        assert!(
            errors.iter().any(|e| e.starts_with(want.as_str())),
            "missing {want:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("4 error(s) found"));
}

#[test]
fn several_files_merge_into_one_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let sources = write(
        dir.path(),
        "sources.yaml",
        "sources:\n  in:\n    type: stdin\n",
    );
    let sinks = write(
        dir.path(),
        "sinks.yaml",
        &format!(
            "data_dir: {}\nsinks:\n  out:\n    type: stdout\n    inputs: [in]\n",
            dir.path().join("data").display()
        ),
    );
    let out = validate(&[&sources, &sinks], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let graph = String::from_utf8_lossy(&out.stdout);
    assert!(
        graph.contains("1 source(s), 0 transform(s), 1 sink(s)"),
        "{graph}"
    );
    assert!(
        graph
            .lines()
            .any(|l| l.contains("in") && l.contains("-> out")),
        "{graph}"
    );
    // And it runs: stdin of the first file into the sink of the second.
    let out = common::run_with_stdin(
        &[
            "run",
            "-c",
            sources.to_str().unwrap(),
            "-c",
            sinks.to_str().unwrap(),
        ],
        b"{\"a\":1}\n{\"a\":2}\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        common::ndjson(&String::from_utf8_lossy(&out.stdout)).len(),
        2
    );
}

#[test]
fn run_refuses_an_invalid_pipeline_with_the_same_errors() {
    let (file, _, _dir) = errors_of(&format!("sources:\n  in:\n    type: stdn\n{SINK}"), &[]);
    let out = Command::new(common::bin())
        .args(["run", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    let errors = error_lines(&out);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with(&format!("{}:3:11: unknown source type", file.display())));
}
