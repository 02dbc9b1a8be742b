//! The topology as a graph: resolving `inputs` to outputs, and the checks that
//! need the whole graph (dangling inputs, duplicate ids, cycles, event kinds).
//! Built on what `config` parsed; `crate::load` runs the two in turn.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use kwpipe_components::api::{ComponentClass, OutputDef};
use kwpipe_components::event::EventKind;

use crate::config::{Node, OutputRef, Topology};
use crate::suggest::suggest;

/// Checks the graph, appending errors; returns warnings. `broken` lists ids of
/// components that failed to parse: inputs naming them are not reported again.
pub fn check(nodes: &[Node], broken: &[String], errors: &mut Vec<String>) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut first_by_id: HashMap<&str, &Node> = HashMap::new();
    for node in nodes {
        match first_by_id.get(node.key.id.as_str()) {
            Some(other) => errors.push(format!(
                "{}: id \"{}\" is also used by {}; ids must be unique across sources, transforms and sinks",
                node.key, node.key.id, other.key
            )),
            None => {
                first_by_id.insert(&node.key.id, node);
            }
        }
    }
    let all_outputs: Vec<String> = nodes
        .iter()
        .flat_map(|n| {
            n.config.outputs().into_iter().map(move |o| match o.name {
                Some(name) => format!("{}.{name}", n.key.id),
                None => n.key.id.clone(),
            })
        })
        .collect();
    let output_names: Vec<&str> = all_outputs.iter().map(String::as_str).collect();

    let mut read: HashSet<OutputRef> = HashSet::new();
    for node in nodes {
        let accepts = node.config.input_kinds();
        for r in &node.inputs {
            // As written in the file: error messages quote it.
            let input = r.to_string();
            let Some(upstream) = first_by_id.get(r.id.as_str()) else {
                if broken.contains(&r.id) {
                    continue;
                }
                let hint = suggest(&input, &output_names)
                    .map(|s| format!("; did you mean \"{s}\"?"))
                    .unwrap_or_default();
                errors.push(format!(
                    "{}: input \"{input}\" does not exist{hint}",
                    node.key
                ));
                continue;
            };
            let upstream_outputs = upstream.config.outputs();
            let Some(def) = find_output(&upstream_outputs, r.output.as_deref()) else {
                let what = match (&r.output, upstream.key.class) {
                    (None, ComponentClass::Sink) => {
                        format!("input \"{input}\" is a sink; sinks have no default output")
                    }
                    (None, _) => format!("input \"{input}\" has no default output"),
                    (Some(o), _) => {
                        let names: Vec<String> = upstream
                            .config
                            .outputs()
                            .into_iter()
                            .filter_map(|d| d.name)
                            .collect();
                        format!(
                            "input \"{input}\": {} has no output \"{o}\"{}",
                            upstream.key,
                            if names.is_empty() {
                                String::new()
                            } else {
                                format!("; it has {}", names.join(", "))
                            }
                        )
                    }
                };
                errors.push(format!("{}: {what}", node.key));
                continue;
            };
            if upstream.key.id == node.key.id {
                errors.push(format!("{}: reads its own output \"{input}\"", node.key));
                continue;
            }
            if !accepts.contains(&def.kind) {
                errors.push(format!(
                    "{}: input \"{input}\" gives {} events, but a {} {} takes {}",
                    node.key,
                    def.kind,
                    node.type_name,
                    node.key.class.as_str(),
                    kinds(&accepts)
                ));
            }
            read.insert(r.clone());
        }
    }

    if let Some(cycle) = find_cycle(nodes) {
        errors.push(format!(
            "{}: cycle {}",
            first_by_id[cycle[0].as_str()].key,
            cycle.join(" -> ")
        ));
    }

    for node in nodes {
        for def in node.config.outputs() {
            let r = OutputRef {
                id: node.key.id.clone(),
                output: def.name.clone(),
            };
            if def.name.is_none() && !read.contains(&r) {
                warnings.push(format!("{}: nothing reads its output", node.key));
            }
        }
    }
    warnings.extend(discarded_rejects(nodes, &read));
    warnings
}

/// Where records would be rejected with nobody to take them and the source that
/// owns their position skips them (`on_reject = "skip"`): said at validate time,
/// so discarding is a choice made knowingly (issue 18).
fn discarded_rejects(nodes: &[Node], read: &HashSet<OutputRef>) -> Vec<String> {
    use kwpipe_components::ack::RejectPolicy;
    use kwpipe_components::api::DROPPED_OUTPUT;
    // Downstream edges: upstream id -> readers of its default output.
    let mut readers: HashMap<&str, Vec<&Node>> = HashMap::new();
    for node in nodes {
        for r in &node.inputs {
            if r.output.is_none() {
                if let Some(up) = nodes.iter().find(|n| n.key.id == r.id) {
                    readers.entry(up.key.id.as_str()).or_default().push(node);
                }
            }
        }
    }
    let mut warnings = Vec::new();
    for source in nodes {
        if source.config.reject_policy() != Some(RejectPolicy::Skip) {
            continue;
        }
        let mut seen: HashSet<&str> = HashSet::new();
        let mut stack = vec![source];
        let mut discarding = Vec::new();
        while let Some(n) = stack.pop() {
            if !seen.insert(n.key.id.as_str()) {
                continue;
            }
            let dropped = OutputRef {
                id: n.key.id.clone(),
                output: Some(DROPPED_OUTPUT.to_string()),
            };
            if n.config.may_reject() && !read.contains(&dropped) {
                discarding.push(n.key.to_string());
            }
            stack.extend(readers.get(n.key.id.as_str()).into_iter().flatten());
        }
        if !discarding.is_empty() {
            discarding.sort();
            warnings.push(format!(
                "{}: records rejected by {} with no `dropped` output reading them are logged, counted and skipped (on_reject = \"skip\", the default); wire their `dropped` output to keep them, or set on_reject = \"stop\" to hold the position",
                source.key,
                discarding.join(", ")
            ));
        }
    }
    warnings
}

fn find_output<'a>(outputs: &'a [OutputDef], name: Option<&str>) -> Option<&'a OutputDef> {
    outputs.iter().find(|o| o.name.as_deref() == name)
}

fn kinds(k: &[EventKind]) -> String {
    let names: Vec<&str> = k.iter().map(|k| k.as_str()).collect();
    names.join(" or ")
}

/// A cycle as a list of ids, first id repeated at the end.
fn find_cycle(nodes: &[Node]) -> Option<Vec<String>> {
    let edges: BTreeMap<&str, Vec<&str>> = nodes
        .iter()
        .map(|n| {
            (
                n.key.id.as_str(),
                n.inputs.iter().map(|r| r.id.as_str()).collect(),
            )
        })
        .collect();
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit<'a>(
        id: &'a str,
        edges: &BTreeMap<&'a str, Vec<&'a str>>,
        marks: &mut HashMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match marks.get(id) {
            Some(Mark::Done) => return None,
            Some(Mark::Visiting) => {
                let start = stack.iter().position(|s| *s == id).unwrap_or(0);
                let mut cycle: Vec<String> = stack[start..].iter().map(|s| s.to_string()).collect();
                // Edges point from reader to input; show the flow of data instead,
                // starting from the smallest id so the message is stable.
                cycle.reverse();
                let min = (0..cycle.len()).min_by_key(|i| &cycle[*i]).unwrap_or(0);
                cycle.rotate_left(min);
                cycle.push(cycle[0].clone());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(id, Mark::Visiting);
        stack.push(id);
        for next in edges.get(id).into_iter().flatten() {
            if edges.contains_key(next) {
                if let Some(c) = visit(next, edges, marks, stack) {
                    return Some(c);
                }
            }
        }
        stack.pop();
        marks.insert(id, Mark::Done);
        None
    }
    let mut marks = HashMap::new();
    for id in edges.keys() {
        let mut stack = Vec::new();
        if let Some(c) = visit(id, &edges, &mut marks, &mut stack) {
            return Some(c);
        }
    }
    None
}

/// Graphviz DOT of a topology: components as nodes, edges labelled with event kinds.
pub fn to_dot(topology: &Topology) -> String {
    let mut out = String::from("digraph kwpipe {\n  rankdir=LR;\n");
    let mut kinds_of: HashMap<OutputRef, EventKind> = HashMap::new();
    for node in &topology.nodes {
        let shape = match node.key.class {
            ComponentClass::Source => "invhouse",
            ComponentClass::Transform => "box",
            ComponentClass::Sink => "house",
        };
        let _ = writeln!(
            out,
            "  \"{}\" [shape={shape}, label=\"{}\\n({})\"];",
            node.key.id, node.key.id, node.type_name
        );
        for def in node.config.outputs() {
            kinds_of.insert(
                OutputRef {
                    id: node.key.id.clone(),
                    output: def.name,
                },
                def.kind,
            );
        }
    }
    for node in &topology.nodes {
        for r in &node.inputs {
            let kind = kinds_of.get(r).map_or("?", |k| k.as_str());
            let label = match &r.output {
                Some(o) => format!("{o}: {kind}"),
                None => kind.to_string(),
            };
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\" [label=\"{label}\"];",
                r.id, node.key.id
            );
        }
    }
    out.push_str("}\n");
    out
}
