//! docs/components.md checked against the components' config structs: every option
//! a struct has is documented, every option documented exists, a documented default
//! is the real one, and an option documented as required is.
//!
//! How the page is read: under `## Sources`, `## Transforms` and `## Sinks`, each
//! `` ### `TYPE` `` heading is followed by a table whose first column names options
//! (`` `a` ``, several as `` `a`, `b` ``, an option of a nested table as
//! `` `tls.ca_file` ``, or all of them, documented elsewhere, as `` `tls.*` ``) and
//! whose second column gives the default. A default cell that starts with a
//! backquoted TOML value (`` `"5s"` ``, `` `1000` ``, `` `[]` ``) states a static
//! default; `(required)` a required option; anything else (`unset: ...`, `off`,
//! `from the URL`, `per format: ...`) an option without a static one. The top-level
//! options and `[api]` are the agent's, not a component's, and are not checked here.
//!
//! Defaults are compared by what the option makes: the component's minimal config
//! (its required options only, below) parsed with and without `option = default`
//! must print the same (`Debug`).

use std::collections::{BTreeMap, BTreeSet};

use kwpipe_components::api::ComponentClass;
use kwpipe_components::registry::{Registration, COMPONENTS};

/// Required options with a valid value for each component type.
fn minimal(class: ComponentClass, name: &str) -> toml::Table {
    let text = match (class, name) {
        (ComponentClass::Source, "file") | (ComponentClass::Sink, "file") => "path = \"x\"",
        (ComponentClass::Source, "kafka") => {
            "bootstrap_servers = \"127.0.0.1:9092\"\ngroup_id = \"g\"\ntopics = [\"t\"]"
        }
        (ComponentClass::Source, "kwdb-poll") => {
            "url = \"postgresql://127.0.0.1:5432\"\ndatabase = \"d\""
        }
        (ComponentClass::Transform, "decode") | (ComponentClass::Transform, "encode") => {
            "format = \"json_kaiwudb\""
        }
        (ComponentClass::Sink, "kafka") => "bootstrap_servers = \"127.0.0.1:9092\"\ntopic = \"t\"",
        (ComponentClass::Sink, "kwdb") => "url = \"postgresql://127.0.0.1:5432/d\"",
        _ => "",
    };
    toml::from_str(text).unwrap()
}

/// The required options of a nested option table, with valid values.
fn minimal_nested(option: &str) -> toml::Value {
    let text = match option {
        "sasl" => "mechanism = \"PLAIN\"",
        "relational" => "table = \"t\"\ntimestamp_column = \"ts\"",
        _ => "",
    };
    toml::Value::Table(toml::from_str(text).unwrap())
}

/// One row of an options table.
#[derive(Debug)]
struct Row {
    names: Vec<String>,
    default: Default,
}

#[derive(Debug, Clone)]
enum Default {
    Static(String),
    Required,
    None,
}

/// (class, type) -> its options table, from the page.
fn documented(page: &str) -> BTreeMap<(&'static str, String), Vec<Row>> {
    let mut out = BTreeMap::new();
    let mut class = None;
    let mut current: Option<(&'static str, String)> = None;
    for line in page.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            class = match h.trim() {
                "Sources" => Some("source"),
                "Transforms" => Some("transform"),
                "Sinks" => Some("sink"),
                _ => None,
            };
            current = None;
        } else if let Some(h) = line.strip_prefix("### ") {
            current = class.and_then(|c| {
                let name = h.strip_prefix('`')?.split('`').next()?;
                Some((c, name.to_string()))
            });
            if let Some(key) = &current {
                out.entry(key.clone()).or_insert_with(Vec::new);
            }
        } else if let (Some(key), Some(row)) = (&current, line.strip_prefix('|')) {
            let cells: Vec<&str> = row.split(" | ").map(str::trim).collect();
            if cells.len() < 2 || cells[0] == "option" || cells[0].starts_with("---") {
                continue;
            }
            let names = cells[0]
                .split(", ")
                .map(|n| n.trim_matches('`').to_string())
                .collect();
            let cell = cells[1];
            let default = if cell.starts_with("(required)") {
                Default::Required
            } else if let Some(rest) = cell.strip_prefix('`') {
                Default::Static(rest.split('`').next().unwrap().to_string())
            } else {
                Default::None
            };
            out.get_mut(key).unwrap().push(Row { names, default });
        }
    }
    out
}

/// The real options of a component: top-level names, and `table.name` for the
/// options of nested option tables.
fn real_options(reg: &Registration) -> (BTreeSet<String>, BTreeMap<String, Vec<String>>) {
    let top = reg
        .option_names(&[])
        .unwrap_or_else(|| panic!("{}: its config is not a struct of options", reg.name));
    let mut nested = BTreeMap::new();
    for &name in &top {
        if let Some(inner) = reg.option_names(&[name]) {
            nested.insert(
                name.to_string(),
                inner.iter().map(|s| s.to_string()).collect(),
            );
        }
    }
    (top.iter().map(|s| s.to_string()).collect(), nested)
}

fn parse_debug(reg: &Registration, table: toml::Table) -> Result<String, String> {
    reg.parse(table).map(|c| format!("{c:?}"))
}

/// Where two Debug strings first differ, with a little context.
fn difference(a: &str, b: &str) -> String {
    let at = a
        .bytes()
        .zip(b.bytes())
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let from = a[..at].char_indices().rev().nth(40).map_or(0, |(i, _)| i);
    let clip = |s: &str| s[from..].chars().take(100).collect::<String>();
    format!(
        "the default gives ...{}..., the documented value ...{}...",
        clip(a),
        clip(b)
    )
}

#[test]
fn components_md_documents_every_option_with_its_real_default() {
    let page = std::fs::read_to_string(crate::support::repo_root().join("docs/components.md"))
        .expect("docs/components.md");
    let docs = documented(&page);
    let mut problems = Vec::new();
    for reg in COMPONENTS {
        let class = reg.class.as_str();
        let who = format!("{class} `{}`", reg.name);
        let Some(rows) = docs.get(&(class, reg.name.to_string())) else {
            problems.push(format!("{who}: no \"### `{}`\" section", reg.name));
            continue;
        };
        let (top, nested) = real_options(reg);
        let base = minimal(reg.class, reg.name);
        let base_debug = match parse_debug(reg, base.clone()) {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!(
                    "{who}: the test's minimal config does not parse: {e}"
                ));
                continue;
            }
        };

        // Every documented name exists.
        let mut seen: BTreeSet<String> = BTreeSet::new();
        for row in rows {
            for name in &row.names {
                let exists = match name.split_once('.') {
                    None => top.contains(name),
                    Some((table, "*")) => nested.contains_key(table),
                    Some((table, inner)) => nested
                        .get(table)
                        .is_some_and(|names| names.iter().any(|n| n == inner)),
                };
                if !exists {
                    problems.push(format!(
                        "{who}: option `{name}` is documented but the config has no such option"
                    ));
                }
                seen.insert(name.clone());
            }
        }
        // Every real option is documented.
        for name in &top {
            match nested.get(name) {
                Some(inner) if !seen.contains(&format!("{name}.*")) => {
                    for n in inner {
                        if !seen.contains(&format!("{name}.{n}")) {
                            problems.push(format!(
                                "{who}: option `{name}.{n}` is not documented (a row `{name}.{n}`, or `{name}.*` when documented elsewhere)"
                            ));
                        }
                    }
                }
                Some(_) => {}
                None if !seen.contains(name) => {
                    problems.push(format!("{who}: option `{name}` is not documented"));
                }
                None => {}
            }
        }
        // The test's minimal config holds the required options, no other.
        let required: BTreeSet<&String> = rows
            .iter()
            .filter(|r| matches!(r.default, Default::Required))
            .flat_map(|r| &r.names)
            .collect();
        for key in base.keys() {
            if !required.contains(key) {
                problems.push(format!(
                    "{who}: `{key}` is needed to parse the config but not documented as (required)"
                ));
            }
        }

        for row in rows {
            for name in &row.names {
                match &row.default {
                    Default::Required if name.contains('.') => {
                        // Required inside its table: the table without it is refused.
                        let (table, inner) = name.split_once('.').unwrap();
                        let mut nested = minimal_nested(table);
                        let held = nested.as_table_mut().unwrap().remove(inner).is_some();
                        let refused = [false, true].into_iter().all(|list| {
                            let mut t = base.clone();
                            let v = if list {
                                toml::Value::Array(vec![nested.clone()])
                            } else {
                                nested.clone()
                            };
                            t.insert(table.to_string(), v);
                            reg.parse(t).is_err()
                        });
                        if !held {
                            problems.push(format!(
                                "{who}: `{name}` is documented as (required); the test's minimal `{table}` lacks it"
                            ));
                        } else if !refused {
                            problems.push(format!(
                                "{who}: `{name}` is documented as (required) but `{table}` parses without it"
                            ));
                        }
                    }
                    Default::Required => {
                        let mut without = base.clone();
                        if without.remove(name).is_none() {
                            problems.push(format!(
                                "{who}: `{name}` is documented as (required); the test's minimal config lacks it"
                            ));
                        } else if parse_debug(reg, without).is_ok() {
                            problems.push(format!(
                                "{who}: `{name}` is documented as (required) but the config parses without it"
                            ));
                        }
                    }
                    Default::None => {}
                    Default::Static(literal) => {
                        let value: toml::Value = match toml::from_str::<toml::Table>(&format!(
                            "v = {literal}"
                        )) {
                            Ok(mut t) => t.remove("v").unwrap(),
                            Err(e) => {
                                problems.push(format!(
                                    "{who}: the documented default of `{name}`, `{literal}`, is not a TOML value: {}",
                                    e.message()
                                ));
                                continue;
                            }
                        };
                        let (without, with) = match name.split_once('.') {
                            None => {
                                let mut with = base.clone();
                                with.insert(name.clone(), value);
                                (base.clone(), with)
                            }
                            Some((table, inner)) => {
                                let nested = minimal_nested(table);
                                let mut inner_with = nested.clone();
                                inner_with
                                    .as_table_mut()
                                    .unwrap()
                                    .insert(inner.to_string(), value);
                                // A table, or a list of tables (`relational`) given one.
                                let wrap = |list: bool, v: toml::Value| {
                                    if list {
                                        toml::Value::Array(vec![v])
                                    } else {
                                        v
                                    }
                                };
                                let list = [false, true].into_iter().find(|&list| {
                                    let mut t = base.clone();
                                    t.insert(table.to_string(), wrap(list, nested.clone()));
                                    reg.parse(t).is_ok()
                                });
                                let list = list.unwrap_or(false);
                                let mut without = base.clone();
                                without.insert(table.to_string(), wrap(list, nested));
                                let mut with = base.clone();
                                with.insert(table.to_string(), wrap(list, inner_with));
                                (without, with)
                            }
                        };
                        let expected = if name.contains('.') {
                            parse_debug(reg, without)
                        } else {
                            Ok(base_debug.clone())
                        };
                        match (expected, parse_debug(reg, with)) {
                            (Ok(a), Ok(b)) if a == b => {}
                            (Ok(a), Ok(b)) => problems.push(format!(
                                "{who}: option `{name}`: documented default `{literal}` is not the real default: {}",
                                difference(&a, &b)
                            )),
                            (Err(e), _) => problems.push(format!(
                                "{who}: option `{name}`: the test's config without it does not parse: {e}"
                            )),
                            (_, Err(e)) => problems.push(format!(
                                "{who}: option `{name}`: documented default `{literal}` is refused: {e}"
                            )),
                        }
                    }
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "docs/components.md disagrees with the config structs:\n- {}",
        problems.join("\n- ")
    );
}
