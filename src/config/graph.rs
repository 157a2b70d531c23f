//! Checks of the component graph: every input exists, no cycles, no output that goes nowhere.

use std::collections::{BTreeMap, BTreeSet};

use super::yaml::Pos;
use super::{did_you_mean, ConfigError, InputRef, Kind, PipelineConfig};

/// A node of the graph as the checks see it.
pub struct Node<'a> {
    pub name: &'a str,
    pub kind: Kind,
    pub type_name: &'a str,
    pub inputs: &'a [InputRef],
    pub file: &'a str,
    pub pos: Pos,
}

pub fn nodes(cfg: &PipelineConfig) -> Vec<Node<'_>> {
    let mut out = Vec::new();
    for c in &cfg.sources {
        out.push(Node {
            name: &c.name,
            kind: Kind::Source,
            type_name: &c.type_name,
            inputs: &c.inputs,
            file: &c.file,
            pos: c.pos,
        });
    }
    for c in &cfg.transforms {
        out.push(Node {
            name: &c.name,
            kind: Kind::Transform,
            type_name: &c.type_name,
            inputs: &c.inputs,
            file: &c.file,
            pos: c.pos,
        });
    }
    for c in &cfg.sinks {
        out.push(Node {
            name: &c.name,
            kind: Kind::Sink,
            type_name: &c.type_name,
            inputs: &c.inputs,
            file: &c.file,
            pos: c.pos,
        });
    }
    out
}

/// Output names that can be used as inputs: `name` for sources and transforms, and
/// `name.dropped` for every component.
pub fn outputs(nodes: &[Node<'_>]) -> BTreeMap<String, &'static str> {
    let mut out = BTreeMap::new();
    for n in nodes {
        if n.kind != Kind::Sink {
            out.insert(n.name.to_string(), "main");
        }
        out.insert(format!("{}.dropped", n.name), "dropped");
    }
    out
}

/// Checks the graph of `nodes` (the configured components, plus stand-ins for components
/// whose options had errors so that their edges are still checked).
pub fn check_nodes(nodes: &[Node<'_>]) -> Vec<ConfigError> {
    let outputs = outputs(nodes);
    let mut errors = Vec::new();
    let err = |n: &Node<'_>, pos: Pos, message: String| ConfigError {
        file: n.file.to_string(),
        pos,
        message,
    };

    if !nodes.iter().any(|n| n.kind == Kind::Source) {
        errors.push(ConfigError {
            file: nodes.first().map_or("<config>", |n| n.file).to_string(),
            pos: Pos { line: 1, col: 1 },
            message: "the pipeline has no sources; add one under `sources:`".into(),
        });
    }
    if !nodes.iter().any(|n| n.kind == Kind::Sink) {
        errors.push(ConfigError {
            file: nodes.first().map_or("<config>", |n| n.file).to_string(),
            pos: Pos { line: 1, col: 1 },
            message: "the pipeline has no sinks; add one under `sinks:` (e.g. `type: stdout`)"
                .into(),
        });
    }

    // Inputs exist.
    for n in nodes {
        for input in n.inputs {
            if outputs.contains_key(&input.name) {
                continue;
            }
            let mut m = format!(
                "{} \"{}\" reads from unknown input \"{}\"",
                n.kind.word(),
                n.name,
                input.name
            );
            if nodes
                .iter()
                .any(|s| s.kind == Kind::Sink && s.name == input.name)
            {
                m = format!("{} \"{}\" reads from sink \"{}\", which has no output; use \"{}.dropped\" for its dead letters", n.kind.word(), n.name, input.name, input.name);
            } else if let Some(s) = did_you_mean(&input.name, outputs.keys().map(String::as_str)) {
                m.push_str(&format!("; did you mean \"{s}\"?"));
            } else {
                let known: Vec<&str> = outputs
                    .iter()
                    .filter(|(_, k)| **k == "main")
                    .map(|(n, _)| n.as_str())
                    .collect();
                m.push_str(&format!("; known outputs: {}", known.join(", ")));
            }
            errors.push(err(n, input.pos, m));
        }
    }

    // Every source and transform output is read by someone.
    let consumed: BTreeSet<&str> = nodes
        .iter()
        .flat_map(|n| n.inputs.iter().map(|i| i.name.as_str()))
        .collect();
    for n in nodes {
        if n.kind != Kind::Sink && !consumed.contains(n.name) {
            errors.push(err(n, n.pos, format!("the output of {} \"{}\" goes nowhere: list \"{}\" in the `inputs` of a transform or sink", n.kind.word(), n.name, n.name)));
        }
    }

    // No cycles (DFS over component -> consumer edges).
    let index: BTreeMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.name, i)).collect();
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        for input in n.inputs {
            let producer = input.name.strip_suffix(".dropped").unwrap_or(&input.name);
            if let Some(&p) = index.get(producer) {
                consumers[p].push(i);
            }
        }
    }
    let mut state = vec![0u8; nodes.len()]; // 0 new, 1 on stack, 2 done
    let mut reported = false;
    for start in 0..nodes.len() {
        if state[start] != 0 || reported {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        let mut path: Vec<usize> = vec![start];
        state[start] = 1;
        while let Some((node, next)) = stack.pop() {
            if next < consumers[node].len() {
                stack.push((node, next + 1));
                let c = consumers[node][next];
                if state[c] == 1 {
                    let from = path.iter().position(|&p| p == c).unwrap_or(0);
                    let mut cycle: Vec<&str> =
                        path[from..].iter().map(|&i| nodes[i].name).collect();
                    cycle.push(nodes[c].name);
                    let n = &nodes[c];
                    errors.push(err(
                        n,
                        n.pos,
                        format!(
                            "the pipeline has a cycle: {}; events must flow from sources to sinks",
                            cycle.join(" -> ")
                        ),
                    ));
                    reported = true;
                    break;
                }
                if state[c] == 0 {
                    state[c] = 1;
                    stack.push((c, 0));
                    path.push(c);
                }
            } else {
                state[node] = 2;
                path.pop();
            }
        }
    }
    errors
}

/// The graph as `validate` prints it.
pub fn describe(cfg: &PipelineConfig) -> String {
    let nodes = nodes(cfg);
    let mut out = format!(
        "pipeline is valid: {} source(s), {} transform(s), {} sink(s)\n",
        cfg.sources.len(),
        cfg.transforms.len(),
        cfg.sinks.len()
    );
    for n in &nodes {
        let readers: Vec<String> = nodes
            .iter()
            .filter(|r| {
                r.inputs
                    .iter()
                    .any(|i| i.name == n.name || i.name == format!("{}.dropped", n.name))
            })
            .map(|r| {
                let dropped = r
                    .inputs
                    .iter()
                    .any(|i| i.name == format!("{}.dropped", n.name));
                if dropped {
                    format!("{} (dead letters)", r.name)
                } else {
                    r.name.to_string()
                }
            })
            .collect();
        let arrow = if readers.is_empty() {
            String::new()
        } else {
            format!(" -> {}", readers.join(", "))
        };
        out.push_str(&format!(
            "  {:<9} {:<20} {:<22}{arrow}\n",
            n.kind.word(),
            n.name,
            format!("({})", n.type_name)
        ));
    }
    out
}
