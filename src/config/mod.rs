//! Loading pipeline files: environment expansion, YAML with positions, merging several `-c`
//! files, parsing each component's options, and checking the graph. Every problem found is
//! reported, each as `file:line:column: what is wrong; what was expected`.

pub mod env;
pub mod graph;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Map, Value};

use sessiontrail_core::component::OptionError;
use sessiontrail_core::{SinkConfig, SourceConfig, TransformConfig};

use yaml::{Pos, Positions};

/// One problem in the configuration, with where it is.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: String,
    pub pos: Pos,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.pos.line, self.pos.col, self.message
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Source,
    Transform,
    Sink,
}

impl Kind {
    pub fn word(self) -> &'static str {
        match self {
            Kind::Source => "source",
            Kind::Transform => "transform",
            Kind::Sink => "sink",
        }
    }
    fn kinds(self) -> &'static [&'static str] {
        match self {
            Kind::Source => sessiontrail_sources::KINDS,
            Kind::Transform => sessiontrail_transforms::KINDS,
            Kind::Sink => sessiontrail_sinks::KINDS,
        }
    }
}

/// A component as configured.
#[derive(Debug)]
pub struct ComponentDef<C: ?Sized> {
    pub name: String,
    /// The `type:` value.
    pub type_name: String,
    pub inputs: Vec<InputRef>,
    pub config: Box<C>,
    pub file: String,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub struct InputRef {
    pub name: String,
    pub pos: Pos,
}

#[derive(Debug)]
pub struct PipelineConfig {
    pub data_dir: PathBuf,
    pub api_address: Option<String>,
    pub sources: Vec<ComponentDef<dyn SourceConfig>>,
    pub transforms: Vec<ComponentDef<dyn TransformConfig>>,
    pub sinks: Vec<ComponentDef<dyn SinkConfig>>,
}

const TOP_LEVEL_KEYS: &[&str] = &["data_dir", "api", "sources", "transforms", "sinks"];
const API_KEYS: &[&str] = &["address"];

/// Loads and checks the given files as one pipeline.
pub fn load(paths: &[PathBuf]) -> Result<PipelineConfig, Vec<ConfigError>> {
    let lookup = |name: &str| std::env::var(name).ok();
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => files.push((file, text)),
            Err(e) => errors.push(ConfigError {
                file,
                pos: Pos { line: 1, col: 1 },
                message: format!("cannot read the file: {e}"),
            }),
        }
    }
    let result = load_texts(&files, &lookup);
    match result {
        Ok(cfg) if errors.is_empty() => Ok(cfg),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more);
            Err(errors)
        }
    }
}

/// Loads pipeline texts `(file name, contents)`; separated from [`load`] for tests.
pub fn load_texts(
    files: &[(String, String)],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<PipelineConfig, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut cfg = PipelineConfig {
        data_dir: PathBuf::from("./data"),
        api_address: None,
        sources: Vec::new(),
        transforms: Vec::new(),
        sinks: Vec::new(),
    };
    let mut data_dir_set: Option<(String, Pos)> = None;
    let mut names: BTreeMap<String, (String, Pos)> = BTreeMap::new();
    // Components whose options are wrong still take part in the graph checks, so one run of
    // `validate` also reports the unknown inputs and cycles around them.
    let mut stubs: Vec<Stub> = Vec::new();
    // A file that could not be read as YAML hides its components: graph checks would then
    // report errors that are not there.
    let mut every_file_parsed = true;

    for (file, text) in files {
        let err = |pos: Pos, message: String| ConfigError {
            file: file.clone(),
            pos,
            message,
        };
        let expanded = match env::expand(text, lookup) {
            Ok(t) => t,
            Err(errs) => {
                errors.extend(errs.into_iter().map(|e| err(e.pos, e.message)));
                every_file_parsed = false;
                continue;
            }
        };
        let (root, positions) = match yaml::parse(&expanded) {
            Ok(r) => r,
            Err(e) => {
                errors.push(err(e.pos, e.message));
                every_file_parsed = false;
                continue;
            }
        };
        let Value::Object(root) = root else {
            every_file_parsed = false;
            errors.push(err(
                Pos { line: 1, col: 1 },
                "a pipeline file must be a YAML mapping with `sources`, `transforms` and `sinks`"
                    .into(),
            ));
            continue;
        };
        let key_pos = |path: &str| {
            positions
                .keys
                .get(path)
                .copied()
                .unwrap_or(Pos { line: 1, col: 1 })
        };
        let value_pos = |path: &str| {
            positions
                .values
                .get(path)
                .copied()
                .unwrap_or_else(|| key_pos(path))
        };
        for (key, value) in &root {
            match key.as_str() {
                "data_dir" => {
                    match value.as_str() {
                        Some(d) => {
                            if let Some((f, p)) = &data_dir_set {
                                errors.push(err(key_pos(key), format!("data_dir is set twice (also at {f}:{}:{}); set it in one file", p.line, p.col)));
                            }
                            cfg.data_dir = PathBuf::from(d);
                            data_dir_set = Some((file.clone(), key_pos(key)));
                        }
                        None => errors.push(err(
                            value_pos(key),
                            "data_dir must be a path (a string)".into(),
                        )),
                    }
                }
                "api" => match value {
                    Value::Object(api) => {
                        for (k, v) in api {
                            let p = format!("api.{k}");
                            match (k.as_str(), v.as_str()) {
                                ("address", Some(a)) => cfg.api_address = Some(a.to_string()),
                                ("address", None) => errors.push(err(
                                    value_pos(&p),
                                    "api.address must be a string like \"127.0.0.1:8686\"".into(),
                                )),
                                _ => errors.push(err(
                                    key_pos(&p),
                                    unknown_option(k, "the api section", API_KEYS),
                                )),
                            }
                        }
                    }
                    Value::Null => {}
                    _ => errors.push(err(
                        value_pos(key),
                        "api must be a mapping, e.g. `api: { address: 127.0.0.1:8686 }`".into(),
                    )),
                },
                "sources" | "transforms" | "sinks" => {
                    let kind = match key.as_str() {
                        "sources" => Kind::Source,
                        "transforms" => Kind::Transform,
                        _ => Kind::Sink,
                    };
                    let Some(section) = value.as_object() else {
                        if !value.is_null() {
                            errors.push(err(
                                value_pos(key),
                                format!(
                                    "{key} must be a mapping of component names to their options"
                                ),
                            ));
                        }
                        continue;
                    };
                    for (name, body) in section {
                        let path = format!("{key}.{name}");
                        let pos = key_pos(&path);
                        if let Some((f, p)) = names.get(name) {
                            errors.push(err(pos, format!("component name \"{name}\" is defined twice (also at {f}:{}:{}); component names must be unique across all files", p.line, p.col)));
                            continue;
                        }
                        names.insert(name.clone(), (file.clone(), pos));
                        if let Err(e) = check_name(name) {
                            errors.push(err(pos, e));
                            continue;
                        }
                        let loader = ComponentLoader {
                            file,
                            positions: &positions,
                            path: &path,
                            name,
                            kind,
                        };
                        let loaded = match kind {
                            Kind::Source => loader
                                .load(body, sessiontrail_sources::parse)
                                .map(|c| cfg.sources.push(c)),
                            Kind::Transform => loader
                                .load(body, sessiontrail_transforms::parse)
                                .map(|c| cfg.transforms.push(c)),
                            Kind::Sink => loader
                                .load(body, sessiontrail_sinks::parse)
                                .map(|c| cfg.sinks.push(c)),
                        };
                        if let Err(e) = loaded {
                            errors.extend(e);
                            stubs.push(loader.stub(body));
                        }
                    }
                }
                other => errors.push(err(
                    key_pos(other),
                    unknown_option(other, "the pipeline file", TOP_LEVEL_KEYS),
                )),
            }
        }
    }
    if every_file_parsed {
        let mut nodes = graph::nodes(&cfg);
        nodes.extend(stubs.iter().map(Stub::node));
        errors.extend(graph::check_nodes(&nodes));
    }
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors)
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!("invalid component name \"{name}\": use letters, digits, `_` and `-` (`.` is reserved for outputs like `{name}.dropped`)"))
    }
}

/// What the graph checks need of a component whose options could not be parsed.
struct Stub {
    name: String,
    kind: Kind,
    type_name: String,
    inputs: Vec<InputRef>,
    file: String,
    pos: Pos,
}

impl Stub {
    fn node(&self) -> graph::Node<'_> {
        graph::Node {
            name: &self.name,
            kind: self.kind,
            type_name: &self.type_name,
            inputs: &self.inputs,
            file: &self.file,
            pos: self.pos,
        }
    }
}

struct ComponentLoader<'a> {
    file: &'a str,
    positions: &'a Positions,
    path: &'a str,
    name: &'a str,
    kind: Kind,
}

type Parser<C> = fn(&str, Value) -> Option<Result<Box<C>, OptionError>>;

impl ComponentLoader<'_> {
    fn err(&self, pos: Pos, message: String) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            pos,
            message,
        }
    }
    fn key_pos(&self, path: &str) -> Pos {
        self.positions
            .keys
            .get(path)
            .copied()
            .unwrap_or(Pos { line: 1, col: 1 })
    }
    fn value_pos(&self, path: &str) -> Pos {
        self.positions
            .values
            .get(path)
            .copied()
            .unwrap_or_else(|| self.key_pos(path))
    }
    /// The name, kind and whatever inputs can be read from a component that failed to load.
    fn stub(&self, body: &Value) -> Stub {
        let inputs_path = format!("{}.inputs", self.path);
        let inputs = match body.get("inputs") {
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| {
                    Some(InputRef {
                        name: item.as_str()?.to_string(),
                        pos: self.value_pos(&format!("{inputs_path}.{i}")),
                    })
                })
                .collect(),
            Some(Value::String(s)) => vec![InputRef {
                name: s.clone(),
                pos: self.value_pos(&inputs_path),
            }],
            _ => Vec::new(),
        };
        Stub {
            name: self.name.to_string(),
            kind: self.kind,
            type_name: body
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string(),
            // A source never has inputs; keep the error about them, not a graph edge.
            inputs: if self.kind == Kind::Source {
                Vec::new()
            } else {
                inputs
            },
            file: self.file.to_string(),
            pos: self.key_pos(self.path),
        }
    }

    fn what(&self, type_name: &str) -> String {
        format!("{} \"{}\" ({type_name})", self.kind.word(), self.name)
    }

    fn load<C: ?Sized + ValidateDyn>(
        &self,
        body: &Value,
        parse: Parser<C>,
    ) -> Result<ComponentDef<C>, Vec<ConfigError>> {
        let here = self.key_pos(self.path);
        let Some(map) = body.as_object() else {
            return Err(vec![self.err(
                here,
                format!(
                    "{} \"{}\" must be a mapping with at least `type`",
                    self.kind.word(),
                    self.name
                ),
            )]);
        };
        let mut errors = Vec::new();
        let type_name = match map.get("type") {
            Some(Value::String(t)) => t.clone(),
            Some(_) => {
                return Err(vec![self.err(
                    self.value_pos(&format!("{}.type", self.path)),
                    "`type` must be a string".into(),
                )])
            }
            None => {
                return Err(vec![self.err(
                    here,
                    format!(
                        "missing required option \"type\" in {} \"{}\"; expected one of: {}",
                        self.kind.word(),
                        self.name,
                        self.kind.kinds().join(", ")
                    ),
                )])
            }
        };
        let mut inputs = Vec::new();
        match (self.kind, map.get("inputs")) {
            (Kind::Source, Some(_)) => errors.push(self.err(
                self.key_pos(&format!("{}.inputs", self.path)),
                format!("a source has no `inputs` ({})", self.what(&type_name)),
            )),
            (Kind::Source, None) => {}
            (_, None) => errors.push(self.err(
                here,
                format!(
                    "missing required option \"inputs\" in {}: list the components it reads from",
                    self.what(&type_name)
                ),
            )),
            (_, Some(Value::Array(items))) => {
                for (i, item) in items.iter().enumerate() {
                    let p = format!("{}.inputs.{i}", self.path);
                    match item.as_str() {
                        Some(s) => inputs.push(InputRef {
                            name: s.to_string(),
                            pos: self.value_pos(&p),
                        }),
                        None => errors.push(self.err(
                            self.value_pos(&p),
                            "each input must be a component name (a string)".into(),
                        )),
                    }
                }
                if items.is_empty() {
                    errors.push(self.err(
                        self.key_pos(&format!("{}.inputs", self.path)),
                        format!("`inputs` of {} is empty", self.what(&type_name)),
                    ));
                }
            }
            (_, Some(Value::String(s))) => inputs.push(InputRef {
                name: s.clone(),
                pos: self.value_pos(&format!("{}.inputs", self.path)),
            }),
            (_, Some(_)) => errors.push(self.err(
                self.value_pos(&format!("{}.inputs", self.path)),
                "`inputs` must be a list of component names".into(),
            )),
        }
        let options: Map<String, Value> = map
            .iter()
            .filter(|(k, _)| *k != "type" && *k != "inputs")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let config = match parse(&type_name, Value::Object(options)) {
            None => {
                let kinds = self.kind.kinds();
                let mut m = format!(
                    "unknown {} type \"{type_name}\" for \"{}\"",
                    self.kind.word(),
                    self.name
                );
                if let Some(s) = did_you_mean(&type_name, kinds.iter().copied()) {
                    m.push_str(&format!("; did you mean \"{s}\"?"));
                }
                m.push_str(&format!(
                    " (known {} types: {})",
                    self.kind.word(),
                    kinds.join(", ")
                ));
                errors.push(self.err(self.value_pos(&format!("{}.type", self.path)), m));
                None
            }
            Some(Err(e)) => {
                errors.push(self.option_error(&type_name, e));
                None
            }
            Some(Ok(c)) => {
                if let Err(m) = c.as_ref().validate_dyn() {
                    errors.push(self.err(here, format!("{}: {m}", self.what(&type_name))));
                }
                Some(c)
            }
        };
        match config {
            Some(config) if errors.is_empty() => Ok(ComponentDef {
                name: self.name.to_string(),
                type_name,
                inputs,
                config,
                file: self.file.to_string(),
                pos: here,
            }),
            _ => Err(errors),
        }
    }

    /// Turns serde's message into ours, positioned on the offending key or value.
    fn option_error(&self, type_name: &str, e: OptionError) -> ConfigError {
        let base = if e.path.is_empty() {
            self.path.to_string()
        } else {
            format!("{}.{}", self.path, e.path)
        };
        let what = self.what(type_name);
        let ticks: Vec<&str> = e.message.split('`').skip(1).step_by(2).collect();
        if e.message.starts_with("unknown field") {
            let field = ticks.first().copied().unwrap_or("?");
            let expected = &ticks[1.min(ticks.len())..];
            let mut pos = self.key_pos(&format!("{base}.{field}"));
            if pos == (Pos { line: 1, col: 1 }) {
                pos = self.key_pos(&base);
            }
            let mut m = format!("unknown option \"{field}\" in {what}");
            if let Some(s) = did_you_mean(field, expected.iter().copied()) {
                m.push_str(&format!("; did you mean \"{s}\"?"));
            } else if !expected.is_empty() {
                m.push_str(&format!("; expected one of: {}", expected.join(", ")));
            }
            return self.err(pos, m);
        }
        if e.message.starts_with("missing field") {
            let field = ticks.first().copied().unwrap_or("?");
            let opt = if e.path.is_empty() {
                field.to_string()
            } else {
                format!("{}.{field}", e.path)
            };
            return self.err(
                self.key_pos(&base),
                format!("missing required option \"{opt}\" in {what}"),
            );
        }
        if e.message.starts_with("unknown variant") {
            let got = ticks.first().copied().unwrap_or("?");
            let expected = &ticks[1.min(ticks.len())..];
            let mut m = format!(
                "invalid value \"{got}\" for option \"{}\" in {what}",
                e.path
            );
            if let Some(s) = did_you_mean(got, expected.iter().copied()) {
                m.push_str(&format!("; did you mean \"{s}\"?"));
            }
            m.push_str(&format!(" (expected one of: {})", expected.join(", ")));
            return self.err(self.value_pos(&base), m);
        }
        self.err(
            self.value_pos(&base),
            format!(
                "invalid value for option \"{}\" in {what}: {}",
                e.path, e.message
            ),
        )
    }
}

/// `validate()` through the three config traits.
trait ValidateDyn {
    fn validate_dyn(&self) -> Result<(), String>;
}
impl ValidateDyn for dyn SourceConfig {
    fn validate_dyn(&self) -> Result<(), String> {
        self.validate()
    }
}
impl ValidateDyn for dyn TransformConfig {
    fn validate_dyn(&self) -> Result<(), String> {
        self.validate()
    }
}
impl ValidateDyn for dyn SinkConfig {
    fn validate_dyn(&self) -> Result<(), String> {
        self.validate()
    }
}

fn unknown_option(key: &str, where_: &str, expected: &[&str]) -> String {
    let mut m = format!("unknown option \"{key}\" in {where_}");
    match did_you_mean(key, expected.iter().copied()) {
        Some(s) => m.push_str(&format!("; did you mean \"{s}\"?")),
        None => m.push_str(&format!("; expected one of: {}", expected.join(", "))),
    }
    m
}

/// The closest candidate, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(got: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (c, strsim::jaro_winkler(got, c)))
        .filter(|(_, score)| *score >= 0.8)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(c, _)| c)
}
