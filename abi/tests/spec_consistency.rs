//! Keeps the specification (`spec/*.md`) and the `pvabi` crate from drifting apart.
//!
//! The spec's machine-readable tables (format in `spec/README.md`) are parsed and compared with
//! the crate in both directions: every call, status, service, gate kind, feature bit, CPUID
//! constant, named constant and layout of the crate must have exactly one matching row, and every
//! row must match something in the crate. Clause ids must be well-formed and unique, every chapter
//! prefix must be present, and every clause id cited in the crate's documentation or in the spec
//! itself must exist.
//!
//! The parsing and checking functions are pure (they take `&str` and return values); the unit
//! tests at the end feed them deliberately altered spec text and assert that each alteration is
//! reported, which shows that the test fails when only one side changes.

// A test panics by design when a check fails.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::{Model, Value};

/// Least number of clauses the specification must have.
const MIN_CLAUSES: usize = 80;

/// Which clause prefixes each chapter file may define; files not listed define none.
const CHAPTER_PREFIXES: &[(&str, &[&str])] = &[
    ("00-versioning.md", &["VER"]),
    ("01-discovery.md", &["DISC"]),
    ("02-calling-convention.md", &["CONV"]),
    ("03-gates.md", &["GATE", "RING"]),
    ("04-base.md", &["BASE"]),
    ("05-console.md", &["CONS"]),
    ("06-clock.md", &["CLK"]),
    ("07-vcpu.md", &["VCPU"]),
    ("08-event.md", &["EVT"]),
    ("09-memory.md", &["MEM"]),
    ("10-grant.md", &["GNT"]),
    ("11-store.md", &["STORE"]),
    ("12-power.md", &["PWR"]),
    ("13-multicall.md", &["MC"]),
    ("14-security.md", &["SEC"]),
    ("appendix-a-harness.md", &["HAR"]),
    ("appendix-b-xen-transport.md", &["XEN"]),
];

/// Table kinds the spec may use after `#### Table: `.
const TABLE_KINDS: &[&str] = &[
    "calls",
    "statuses",
    "services",
    "gate kinds",
    "cpuid",
    "features",
    "constants",
];

/// Words that make a clause normative (RFC 2119).
const KEYWORDS: &[&str] = &["MUST", "SHALL", "SHOULD", "REQUIRED", "RECOMMENDED", "MAY"];

/// One clause: `- **ID**: text`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Clause {
    id: String,
    text: String,
    at: String,
}

/// One machine-readable table (`#### Table: kind`), data rows only.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Table {
    kind: String,
    rows: Vec<Vec<String>>,
    at: String,
}

/// One layout table (`#### Layout NAME (N bytes)`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct LayoutTable {
    name: String,
    size: usize,
    rows: Vec<Vec<String>>,
    at: String,
}

/// Everything parsed from the spec files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Spec {
    clauses: Vec<Clause>,
    tables: Vec<Table>,
    layouts: Vec<LayoutTable>,
    /// Level-3 headings (`### text`).
    headings: Vec<String>,
    /// Clause ids cited in backticks anywhere in the spec, with where.
    cited: Vec<(String, String)>,
    /// Syntax problems found while parsing.
    errors: Vec<String>,
}

/// Whether `s` is a well-formed clause id: `[A-Z]+-[1-9][0-9]*`.
fn is_clause_id(s: &str) -> bool {
    let Some((prefix, number)) = s.split_once('-') else {
        return false;
    };
    !prefix.is_empty()
        && prefix.bytes().all(|b| b.is_ascii_uppercase())
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
        && !number.starts_with('0')
}

/// The prefix of a clause id.
fn prefix_of(id: &str) -> &str {
    id.split_once('-').map_or(id, |(p, _)| p)
}

/// Parses one line as a clause. `Ok(None)`: not a clause line; `Err`: looks like a clause but
/// breaks the syntax `^- \*\*([A-Z]+-[0-9]+)\*\*: (.+)$`.
fn parse_clause_line(line: &str) -> Result<Option<(String, String)>, String> {
    let Some(rest) = line.strip_prefix("- **") else {
        return Ok(None);
    };
    let Some((id, after)) = rest.split_once("**") else {
        return Ok(None);
    };
    // Only lines whose bold text looks like an id are clause candidates.
    if !(id.contains('-') && id.bytes().next().is_some_and(|b| b.is_ascii_uppercase())) {
        return Ok(None);
    }
    if !is_clause_id(id) {
        return Err(format!("malformed clause id `{id}`"));
    }
    let Some(text) = after.strip_prefix(": ") else {
        return Err(format!("clause {id}: expected `**: ` after the id"));
    };
    if text.trim().is_empty() {
        return Err(format!("clause {id}: empty text"));
    }
    Ok(Some((id.to_string(), text.to_string())))
}

/// Splits a Markdown table row into trimmed cells, honouring `\|` and stripping backticks.
fn split_row(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|');
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut cells = Vec::new();
    let mut cur = String::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cur.push('|');
                chars.next();
            }
            '|' => cells.push(core::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    cells.push(cur);
    cells
        .into_iter()
        .map(|c| c.replace('`', "").trim().to_string())
        .collect()
}

/// Whether a row is a header separator (`|---|:--:|`).
fn is_separator(cells: &[String]) -> bool {
    !cells.is_empty()
        && cells
            .iter()
            .all(|c| !c.is_empty() && c.chars().all(|ch| ch == '-' || ch == ':'))
}

/// Clause ids in backticks in a line of text, e.g. "(`BASE-1`)"; a range written
/// "`DISC-2`..`DISC-4`" yields every id in it.
fn backticked_ids(line: &str) -> Vec<String> {
    let parts: Vec<&str> = line.split('`').collect();
    let mut ids = Vec::new();
    // Odd indices are inside backticks.
    let mut i = 1;
    while i < parts.len() {
        let tok = parts[i];
        if is_clause_id(tok) {
            ids.push(tok.to_string());
            // A range: `A-n`..`A-m`.
            if parts.get(i + 1) == Some(&"..") {
                if let Some(end) = parts.get(i + 2).filter(|t| is_clause_id(t)) {
                    let (p1, n1) = tok.split_once('-').unwrap();
                    let (p2, n2) = end.split_once('-').unwrap();
                    if p1 == p2 {
                        let (a, b): (u32, u32) = (n1.parse().unwrap(), n2.parse().unwrap());
                        for n in a.saturating_add(1)..b {
                            ids.push(format!("{p1}-{n}"));
                        }
                    }
                }
            }
        }
        i += 2;
    }
    ids
}

/// Clause ids cited in the comments of a Rust source file.
fn cited_in_source(source: &str) -> Vec<String> {
    source
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("//"))
        .flat_map(backticked_ids)
        .collect()
}

/// Public constants of the crate that are checked through another table than `constants`
/// (or are not numbers), with where.
const COVERED_ELSEWHERE: &[(&str, &str)] = &[
    ("call::CALLS", "the call table"),
    ("call::ServiceId::V1", "the services table"),
    ("status::Status::ALL", "the status table"),
    ("layout::LAYOUTS", "the layout tables"),
    (
        "version::ABI_VERSION",
        "version::ABI_VERSION_MAJOR and _MINOR",
    ),
    (
        "gate::ARG_REGISTERS",
        "the register table of chapter 2 (names, not numbers)",
    ),
];

/// Paths (`module::Type::NAME`, `module::NAME`, `module::submodule::NAME`) of the `pub const`
/// items declared in one source file of the crate, found by their layout in the file: items at
/// column 0, inside an `impl Type {` block, or inside a `pub mod name {` block.
fn declared_constants(module: &str, source: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut scope: Option<String> = None;
    for line in source.lines() {
        if let Some(rest) = line.strip_prefix("impl ") {
            if line.ends_with('{') {
                scope = rest.split_whitespace().next().map(str::to_string);
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("pub mod ") {
            if line.ends_with('{') {
                scope = rest.split_whitespace().next().map(str::to_string);
            }
            continue;
        }
        if line == "}" {
            scope = None;
            continue;
        }
        let t = line.trim_start();
        let Some(rest) = t.strip_prefix("pub const ") else {
            continue;
        };
        if rest.starts_with("fn ") || rest.starts_with('$') {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let indented = t.len() != line.len();
        let path = match (&scope, indented, module) {
            (Some(sc), true, "lib") => format!("{sc}::{name}"),
            (Some(sc), true, m) => format!("{m}::{sc}::{name}"),
            (_, _, "lib") => name,
            (_, _, m) => format!("{m}::{name}"),
        };
        out.push(path);
    }
    out
}

/// Declared constants that neither the `constants` model nor another table covers.
fn uncovered_constants(declared: &[String], model: &Model) -> Vec<String> {
    let mut out = Vec::new();
    for path in declared {
        // `discovery::backend_id` is re-exported and documented as `base::backend_id`.
        let alias = path.replacen("discovery::backend_id::", "base::backend_id::", 1);
        let last = path.rsplit("::").next().unwrap_or(path);
        let covered = model.constants.iter().any(|(n, _)| *n == alias)
            || COVERED_ELSEWHERE.iter().any(|(n, _)| n == path)
            || (path.starts_with("discovery::CPUID_")
                && model.cpuid.iter().any(|(n, _)| n == last))
            || (path.starts_with("status::Status::")
                && model.statuses.iter().any(|(_, n)| n == last))
            || (path.starts_with("call::ServiceId::")
                && model.services.iter().any(|(_, n)| n == last))
            || (path.starts_with("discovery::GateKind::")
                && model.gate_kinds.iter().any(|(_, n)| n == last));
        if !covered {
            out.push(format!(
                "abi/src declares `{path}`, which no spec table lists (add it to a `#### Table: constants` and to abi/tests/common/mod.rs)"
            ));
        }
    }
    out
}

fn crate_declared_constants() -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    read_dir_sorted(&src, "rs")
        .iter()
        .flat_map(|(name, text)| {
            let module = name.trim_end_matches(".rs").to_string();
            declared_constants(&module, text)
        })
        .collect()
}

/// What the parser is collecting.
enum Section {
    None,
    Table(usize),
    Layout(usize),
}

/// Parses one spec file into `spec`.
fn parse_file(file: &str, text: &str, spec: &mut Spec) {
    let mut section = Section::None;
    let mut table_lines = 0usize; // table lines seen in the current section
    let mut table_closed = false; // a table ended in the current section
    for (n, line) in text.lines().enumerate() {
        let at = format!("{file}:{}", n + 1);
        match parse_clause_line(line) {
            Ok(Some((id, text))) => spec.clauses.push(Clause {
                id,
                text,
                at: at.clone(),
            }),
            Ok(None) => {}
            Err(e) => spec.errors.push(format!("{at}: {e}")),
        }
        for id in backticked_ids(line) {
            spec.cited.push((id, at.clone()));
        }
        if line.starts_with('#') {
            table_lines = 0;
            table_closed = false;
            section = Section::None;
            if let Some(h) = line.strip_prefix("### ") {
                spec.headings.push(h.trim().to_string());
            } else if let Some(kind) = line.strip_prefix("#### Table: ") {
                let kind = kind.trim().to_string();
                if !TABLE_KINDS.contains(&kind.as_str()) {
                    spec.errors
                        .push(format!("{at}: unknown table kind `{kind}`"));
                }
                spec.tables.push(Table {
                    kind,
                    rows: Vec::new(),
                    at,
                });
                section = Section::Table(spec.tables.len() - 1);
            } else if let Some(rest) = line.strip_prefix("#### Layout ") {
                let parsed = rest.split_once(" (").and_then(|(name, size)| {
                    let size = size.strip_suffix(" bytes)")?.parse::<usize>().ok()?;
                    Some((name.trim().to_string(), size))
                });
                match parsed {
                    Some((name, size)) => {
                        spec.layouts.push(LayoutTable {
                            name,
                            size,
                            rows: Vec::new(),
                            at,
                        });
                        section = Section::Layout(spec.layouts.len() - 1);
                    }
                    None => spec.errors.push(format!(
                        "{at}: layout heading must read `#### Layout NAME (N bytes)`"
                    )),
                }
            }
            continue;
        }
        let rows = match section {
            Section::None => continue,
            Section::Table(i) => &mut spec.tables[i].rows,
            Section::Layout(i) => &mut spec.layouts[i].rows,
        };
        if line.trim_start().starts_with('|') {
            if table_closed {
                spec.errors.push(format!(
                    "{at}: a second table under one machine-readable heading"
                ));
                continue;
            }
            table_lines += 1;
            let cells = split_row(line);
            match table_lines {
                1 => {}
                2 if is_separator(&cells) => {}
                2 => spec
                    .errors
                    .push(format!("{at}: expected a header separator row")),
                _ => rows.push(cells),
            }
        } else if table_lines > 0 {
            // Any other line (blank or prose) ends the table.
            table_closed = true;
        }
    }
}

/// Parses a whole spec: `(file name, text)` pairs.
fn parse_spec(files: &[(String, String)]) -> Spec {
    let mut spec = Spec::default();
    for (name, text) in files {
        parse_file(name, text, &mut spec);
    }
    spec
}

/// Parses a value cell: `"text"`, `0x` hex, or signed decimal, `_` allowed.
fn parse_value(cell: &str) -> Option<Value> {
    let c = cell.trim();
    if let Some(s) = c.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        return Some(Value::Str(s.to_string()));
    }
    let c = c.replace('_', "");
    if let Some(h) = c.strip_prefix("0x") {
        return i128::from_str_radix(h, 16).ok().map(Value::Num);
    }
    c.parse::<i128>().ok().map(Value::Num)
}

/// Rows of every table of one kind, with where each row is.
fn rows_of<'a>(spec: &'a Spec, kind: &str) -> Vec<(&'a [String], &'a str)> {
    spec.tables
        .iter()
        .filter(|t| t.kind == kind)
        .flat_map(|t| t.rows.iter().map(move |r| (r.as_slice(), t.at.as_str())))
        .collect()
}

/// Compares `key -> value` rows of one table kind with the model, both directions.
fn check_keyed(
    spec: &Spec,
    kind: &str,
    key_col: usize,
    val_col: usize,
    model: &[(String, String)],
    errors: &mut Vec<String>,
) {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (row, at) in rows_of(spec, kind) {
        let (Some(k), Some(v)) = (row.get(key_col), row.get(val_col)) else {
            errors.push(format!("{at}: table `{kind}`: short row {row:?}"));
            continue;
        };
        if seen.insert(k.clone(), v.clone()).is_some() {
            errors.push(format!("{at}: table `{kind}`: duplicate row for `{k}`"));
        }
    }
    let model_map: BTreeMap<&String, &String> = model.iter().map(|(k, v)| (k, v)).collect();
    for (k, v) in model {
        match seen.get(k) {
            None => errors.push(format!("table `{kind}`: `{k}` is missing from the spec")),
            Some(sv) if sv != v => errors.push(format!(
                "table `{kind}`: `{k}` is {sv} in the spec but {v} in the crate"
            )),
            Some(_) => {}
        }
    }
    for k in seen.keys() {
        if !model_map.contains_key(k) {
            errors.push(format!(
                "table `{kind}`: the spec has `{k}`, which the crate does not define"
            ));
        }
    }
}

/// Compares named constants (`name | value`) of one table kind with the model.
fn check_values(spec: &Spec, kind: &str, model: &[(String, Value)], errors: &mut Vec<String>) {
    for (row, at) in rows_of(spec, kind) {
        if let Some(v) = row.get(1) {
            if parse_value(v).is_none() {
                errors.push(format!("{at}: table `{kind}`: unreadable value `{v}`"));
            }
        }
    }
    // Compare normalised values: parse the spec cell, render both the same way.
    let mut spec_rows = spec.clone();
    for t in spec_rows.tables.iter_mut().filter(|t| t.kind == kind) {
        for r in &mut t.rows {
            if let Some(v) = r.get_mut(1) {
                if let Some(pv) = parse_value(v) {
                    *v = pv.render();
                }
            }
        }
    }
    let norm: Vec<(String, String)> = model.iter().map(|(k, v)| (k.clone(), v.render())).collect();
    check_keyed(&spec_rows, kind, 0, 1, &norm, errors);
}

/// Checks every table, layout and clause of `spec` against `model`; returns the mismatches.
fn check(spec: &Spec, model: &Model, cited_by_crate: &[(String, String)]) -> Vec<String> {
    let mut errors = spec.errors.clone();

    // Required tables.
    for kind in [
        "calls",
        "statuses",
        "services",
        "gate kinds",
        "cpuid",
        "features",
    ] {
        match spec.tables.iter().filter(|t| t.kind == kind).count() {
            0 => errors.push(format!("the spec has no `#### Table: {kind}`")),
            1 => {}
            n => errors.push(format!("the spec has {n} `#### Table: {kind}` tables")),
        }
    }

    // Calls: id, name, args, returns; names are the key.
    let calls: Vec<(String, String)> = model
        .calls
        .iter()
        .map(|c| {
            let ret = if c.returns { "yes" } else { "no" };
            (c.name.clone(), format!("0x{:08X} {} {ret}", c.id, c.args))
        })
        .collect();
    let mut spec_calls = spec.clone();
    for t in spec_calls.tables.iter_mut().filter(|t| t.kind == "calls") {
        for r in &mut t.rows {
            let id = r.first().cloned().unwrap_or_default();
            let wf = id.len() == 10
                && id.starts_with("0x")
                && id[2..].bytes().all(|b| b.is_ascii_hexdigit());
            if !wf {
                errors.push(format!(
                    "{}: call id `{id}` must be 0x followed by 8 hex digits",
                    t.at
                ));
            }
            let joined = format!(
                "0x{} {} {}",
                id.get(2..).unwrap_or("").to_ascii_uppercase(),
                r.get(2).map_or("", String::as_str),
                r.get(3).map_or("", String::as_str)
            );
            let name = r.get(1).cloned().unwrap_or_default();
            *r = vec![name, joined];
        }
    }
    check_keyed(&spec_calls, "calls", 0, 1, &calls, &mut errors);
    for c in &model.calls {
        if !spec.headings.iter().any(|h| h == &c.name) {
            errors.push(format!(
                "call {} has no `### {}` section in its chapter",
                c.name, c.name
            ));
        }
    }

    // Statuses, services, gate kinds, features: key is the name, value the number.
    let statuses: Vec<(String, String)> = model
        .statuses
        .iter()
        .map(|(c, n)| (n.clone(), c.to_string()))
        .collect();
    let mut spec_status = spec.clone();
    normalise_numbers(&mut spec_status, "statuses", 0);
    check_keyed(&spec_status, "statuses", 1, 0, &statuses, &mut errors);

    let services: Vec<(String, String)> = model
        .services
        .iter()
        .map(|(id, n)| (n.clone(), id.to_string()))
        .collect();
    let mut spec_svc = spec.clone();
    normalise_numbers(&mut spec_svc, "services", 0);
    check_keyed(&spec_svc, "services", 1, 0, &services, &mut errors);

    let gates: Vec<(String, String)> = model
        .gate_kinds
        .iter()
        .map(|(v, n)| (n.clone(), v.to_string()))
        .collect();
    let mut spec_gate = spec.clone();
    normalise_numbers(&mut spec_gate, "gate kinds", 0);
    check_keyed(&spec_gate, "gate kinds", 1, 0, &gates, &mut errors);

    let feats: Vec<(String, String)> = model
        .features
        .iter()
        .map(|(b, n)| (n.clone(), b.to_string()))
        .collect();
    let mut spec_feat = spec.clone();
    normalise_numbers(&mut spec_feat, "features", 0);
    check_keyed(&spec_feat, "features", 1, 0, &feats, &mut errors);

    // CPUID and named constants.
    check_values(spec, "cpuid", &model.cpuid, &mut errors);
    check_values(spec, "constants", &model.constants, &mut errors);

    // Layouts.
    check_layouts(spec, model, &mut errors);

    // Clauses.
    check_clauses(spec, cited_by_crate, &mut errors);
    errors
}

/// Rewrites a numeric column of every table of `kind` in canonical decimal form.
fn normalise_numbers(spec: &mut Spec, kind: &str, col: usize) {
    for t in spec.tables.iter_mut().filter(|t| t.kind == kind) {
        for r in &mut t.rows {
            if let Some(c) = r.get_mut(col) {
                if let Some(Value::Num(n)) = parse_value(c) {
                    *c = n.to_string();
                }
            }
        }
    }
}

/// Compares the layout tables with the crate's `LAYOUTS`.
fn check_layouts(spec: &Spec, model: &Model, errors: &mut Vec<String>) {
    let mut seen = BTreeSet::new();
    for lt in &spec.layouts {
        if !seen.insert(lt.name.clone()) {
            errors.push(format!("{}: layout {} appears twice", lt.at, lt.name));
        }
        let Some(l) = model.layouts.iter().find(|l| l.name == lt.name) else {
            errors.push(format!(
                "{}: the spec has layout {}, which the crate does not define",
                lt.at, lt.name
            ));
            continue;
        };
        if lt.size != l.size {
            errors.push(format!(
                "{}: layout {} is {} bytes in the spec but {} in the crate",
                lt.at, lt.name, lt.size, l.size
            ));
        }
        let mut rows = Vec::new();
        for r in &lt.rows {
            let parsed = (
                r.first().and_then(|c| parse_value(c)),
                r.get(1).and_then(|c| parse_value(c)),
                r.get(2),
            );
            match parsed {
                (Some(Value::Num(o)), Some(Value::Num(s)), Some(name)) => {
                    rows.push((name.clone(), o, s));
                }
                _ => errors.push(format!(
                    "{}: layout {}: unreadable row {r:?} (want offset | size | field | ...)",
                    lt.at, lt.name
                )),
            }
        }
        for f in &l.fields {
            match rows.iter().find(|(n, _, _)| n == &f.name) {
                None => errors.push(format!(
                    "{}: layout {}: field {} is missing from the spec",
                    lt.at, lt.name, f.name
                )),
                Some((_, o, s)) => {
                    if *o != f.offset as i128 || *s != f.size as i128 {
                        errors.push(format!(
                            "{}: layout {}: field {} is at {o} size {s} in the spec but at {} size {} in the crate",
                            lt.at, lt.name, f.name, f.offset, f.size
                        ));
                    }
                }
            }
        }
        for (n, _, _) in &rows {
            if !l.fields.iter().any(|f| &f.name == n) {
                errors.push(format!(
                    "{}: layout {}: the spec has field {n}, which the crate does not define",
                    lt.at, lt.name
                ));
            }
        }
        let spec_order: Vec<&String> = rows.iter().map(|(n, _, _)| n).collect();
        let crate_order: Vec<&String> = l.fields.iter().map(|f| &f.name).collect();
        if spec_order != crate_order && spec_order.len() == crate_order.len() {
            errors.push(format!(
                "{}: layout {}: fields are in a different order than in the crate",
                lt.at, lt.name
            ));
        }
    }
    for l in &model.layouts {
        if !spec.layouts.iter().any(|lt| lt.name == l.name) {
            errors.push(format!(
                "layout {} has no `#### Layout {} ({} bytes)` table in the spec",
                l.name, l.name, l.size
            ));
        }
    }
}

/// Checks clause syntax, uniqueness, count, chapters, and that every cited id exists.
fn check_clauses(spec: &Spec, cited_by_crate: &[(String, String)], errors: &mut Vec<String>) {
    let mut ids: BTreeMap<&str, &str> = BTreeMap::new();
    for c in &spec.clauses {
        if let Some(first) = ids.insert(c.id.as_str(), c.at.as_str()) {
            errors.push(format!(
                "{}: clause id {} is already defined at {first}",
                c.at, c.id
            ));
        }
        let file = c.at.split(':').next().unwrap_or("");
        let allowed = CHAPTER_PREFIXES
            .iter()
            .find(|(f, _)| *f == file)
            .map_or(&[][..], |(_, p)| *p);
        if !allowed.contains(&prefix_of(&c.id)) {
            errors.push(format!(
                "{}: clause {} does not belong in {file} (allowed prefixes: {allowed:?})",
                c.at, c.id
            ));
        }
        if !KEYWORDS.iter().any(|k| c.text.contains(k)) {
            errors.push(format!(
                "{}: clause {} has no RFC 2119 keyword (MUST, SHOULD, MAY, ...)",
                c.at, c.id
            ));
        }
    }
    if spec.clauses.len() < MIN_CLAUSES {
        errors.push(format!(
            "the spec has {} clauses, fewer than {MIN_CLAUSES}",
            spec.clauses.len()
        ));
    }
    for (_, prefixes) in CHAPTER_PREFIXES {
        for p in *prefixes {
            if !spec.clauses.iter().any(|c| prefix_of(&c.id) == *p) {
                errors.push(format!("no clause has the chapter prefix {p}"));
            }
        }
    }
    for (id, at) in cited_by_crate.iter().chain(spec.cited.iter()) {
        if !ids.contains_key(id.as_str()) {
            errors.push(format!(
                "{at}: cites clause {id}, which the spec does not define"
            ));
        }
    }
}

fn spec_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec")
}

fn read_dir_sorted(dir: &Path, ext: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(read_dir_sorted(&p, ext));
        } else if p.extension().is_some_and(|x| x == ext) {
            let text = std::fs::read_to_string(&p).unwrap();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            out.push((name, text));
        }
    }
    out.sort();
    out
}

fn real_spec() -> Spec {
    parse_spec(&read_dir_sorted(&spec_dir(), "md"))
}

fn crate_citations() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    read_dir_sorted(&src, "rs")
        .iter()
        .flat_map(|(name, text)| {
            cited_in_source(text)
                .into_iter()
                .map(move |id| (id, format!("abi/src/{name}")))
        })
        .collect()
}

fn report(errors: &[String]) -> String {
    format!(
        "{} mismatch(es) between spec/ and the pvabi crate:\n  {}",
        errors.len(),
        errors.join("\n  ")
    )
}

#[test]
fn spec_matches_crate() {
    let spec = real_spec();
    let cited = crate_citations();
    assert!(
        cited.len() > 50,
        "found only {} clause citations in abi/src; is the scan broken?",
        cited.len()
    );
    let model = common::model();
    let mut errors = check(&spec, &model, &cited);
    let declared = crate_declared_constants();
    assert!(
        declared.len() > 100,
        "found only {} constants in abi/src; is the scan broken?",
        declared.len()
    );
    errors.extend(uncovered_constants(&declared, &model));
    assert!(errors.is_empty(), "{}", report(&errors));
}

#[test]
fn spec_has_every_chapter_and_enough_clauses() {
    let spec = real_spec();
    let prefixes: BTreeSet<&str> = spec.clauses.iter().map(|c| prefix_of(&c.id)).collect();
    for (_, ps) in CHAPTER_PREFIXES {
        for p in *ps {
            assert!(prefixes.contains(p), "no {p}-* clause");
        }
    }
    assert!(spec.clauses.len() >= MIN_CLAUSES, "{}", spec.clauses.len());
    // Every chapter file listed exists.
    let files: BTreeSet<String> = read_dir_sorted(&spec_dir(), "md")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for (f, _) in CHAPTER_PREFIXES {
        assert!(files.contains(*f), "spec/{f} is missing");
    }
    assert!(files.contains("15-native-mapping.md"));
    assert!(files.contains("README.md"));
}

/// Unit tests of the parser and checker on altered spec text.
mod altered {
    use super::*;

    fn spec_files() -> Vec<(String, String)> {
        read_dir_sorted(&spec_dir(), "md")
    }

    /// Replaces the first occurrence of `from` in the file named `file`; panics if absent, so a
    /// test cannot pass because its alteration did not apply.
    fn alter(files: &mut [(String, String)], file: &str, from: &str, to: &str) {
        let (_, text) = files.iter_mut().find(|(n, _)| n == file).unwrap();
        assert!(text.contains(from), "{file} does not contain {from:?}");
        *text = text.replacen(from, to, 1);
    }

    fn errors_of(files: &[(String, String)]) -> Vec<String> {
        check(&parse_spec(files), &common::model(), &crate_citations())
    }

    fn assert_reported(errors: &[String], needle: &str) {
        assert!(
            errors.iter().any(|e| e.contains(needle)),
            "expected an error containing {needle:?}, got: {errors:#?}"
        );
    }

    #[test]
    fn unaltered_spec_is_clean() {
        assert!(errors_of(&spec_files()).is_empty());
    }

    #[test]
    fn changed_layout_offset_is_reported() {
        let mut f = spec_files();
        alter(
            &mut f,
            "06-clock.md",
            "| 16 | 8 | `system_time` |",
            "| 20 | 8 | `system_time` |",
        );
        assert_reported(
            &errors_of(&f),
            "layout ClockPage: field system_time is at 20",
        );
    }

    #[test]
    fn changed_layout_size_is_reported() {
        let mut f = spec_files();
        alter(
            &mut f,
            "13-multicall.md",
            "#### Layout MulticallEntry (72 bytes)",
            "#### Layout MulticallEntry (80 bytes)",
        );
        assert_reported(&errors_of(&f), "MulticallEntry is 80 bytes in the spec");
    }

    #[test]
    fn missing_field_is_reported() {
        let mut f = spec_files();
        alter(
            &mut f,
            "10-grant.md",
            "| 4 | 4 | `domid` | u32 | domain the grant is for |\n",
            "",
        );
        assert_reported(&errors_of(&f), "field domid is missing");
    }

    #[test]
    fn missing_call_is_reported() {
        let mut f = spec_files();
        alter(
            &mut f,
            "02-calling-convention.md",
            "| 0x00010002 | `CONSOLE.WRITE_BYTE` | 1 | yes |",
            "| 0x00010003 | `CONSOLE.WRITE_BYTES` | 1 | yes |",
        );
        let e = errors_of(&f);
        assert_reported(&e, "`CONSOLE.WRITE_BYTE` is missing");
        assert_reported(&e, "the spec has `CONSOLE.WRITE_BYTES`");
    }

    #[test]
    fn changed_call_id_and_args_are_reported() {
        let mut f = spec_files();
        alter(
            &mut f,
            "02-calling-convention.md",
            "| 0x00070000 | `STORE.READ` | 5 |",
            "| 0x00070010 | `STORE.READ` | 4 |",
        );
        assert_reported(
            &errors_of(&f),
            "`STORE.READ` is 0x00070010 4 yes in the spec",
        );
    }

    #[test]
    fn changed_status_code_is_reported() {
        let mut f = spec_files();
        alter(
            &mut f,
            "02-calling-convention.md",
            "| -7 | `ALREADY` |",
            "| -17 | `ALREADY` |",
        );
        assert_reported(&errors_of(&f), "`ALREADY` is -17 in the spec but -7");
    }

    #[test]
    fn changed_feature_bit_is_reported() {
        let mut f = spec_files();
        alter(
            &mut f,
            "01-discovery.md",
            "| 5 | `BALLOON` |",
            "| 11 | `BALLOON` |",
        );
        assert_reported(&errors_of(&f), "`BALLOON` is 11 in the spec but 5");
    }

    #[test]
    fn changed_cpuid_constant_is_reported() {
        let mut f = spec_files();
        alter(
            &mut f,
            "01-discovery.md",
            "| `CPUID_BASE_STEP` | 0x100 |",
            "| `CPUID_BASE_STEP` | 0x10 |",
        );
        assert_reported(&errors_of(&f), "`CPUID_BASE_STEP` is 16 in the spec");
    }

    #[test]
    fn changed_named_constant_is_reported() {
        let mut f = spec_files();
        alter(
            &mut f,
            "11-store.md",
            "| `store::MAX_PATH` | 256 |",
            "| `store::MAX_PATH` | 255 |",
        );
        assert_reported(
            &errors_of(&f),
            "`store::MAX_PATH` is 255 in the spec but 256",
        );
    }

    #[test]
    fn missing_gate_kind_and_service_are_reported() {
        let mut f = spec_files();
        alter(
            &mut f,
            "03-gates.md",
            "| 4 | `VMMCALL` |",
            "| 6 | `VMMCALL` |",
        );
        alter(
            &mut f,
            "02-calling-convention.md",
            "| 0x0008 | `POWER` |",
            "| 0x0018 | `POWER` |",
        );
        let e = errors_of(&f);
        assert_reported(&e, "`VMMCALL` is 6 in the spec but 4");
        assert_reported(&e, "`POWER` is 24 in the spec but 8");
    }

    #[test]
    fn duplicate_clause_id_is_reported() {
        let mut f = spec_files();
        alter(&mut f, "05-console.md", "- **CONS-8**:", "- **CONS-7**:");
        let e = errors_of(&f);
        assert_reported(&e, "clause id CONS-7 is already defined");
    }

    #[test]
    fn malformed_clause_is_reported() {
        let mut f = spec_files();
        alter(&mut f, "05-console.md", "- **CONS-8**: ", "- **CONS-08**: ");
        alter(&mut f, "05-console.md", "- **CONS-7**: ", "- **CONS-7**:");
        let e = errors_of(&f);
        assert_reported(&e, "malformed clause id `CONS-08`");
        assert_reported(&e, "clause CONS-7: expected `**: `");
    }

    #[test]
    fn clause_in_wrong_chapter_is_reported() {
        let mut f = spec_files();
        alter(&mut f, "05-console.md", "- **CONS-8**:", "- **CLK-99**:");
        assert_reported(
            &errors_of(&f),
            "clause CLK-99 does not belong in 05-console.md",
        );
    }

    #[test]
    fn clause_cited_by_crate_but_missing_is_reported() {
        // CLK-8 is cited by abi/src/call.rs and clock.rs.
        let mut f = spec_files();
        alter(&mut f, "06-clock.md", "- **CLK-8**:", "- **CLK-98**:");
        assert_reported(&errors_of(&f), "abi/src/call.rs: cites clause CLK-8");
    }

    #[test]
    fn too_few_clauses_and_missing_prefix_are_reported() {
        let mut f = spec_files();
        let (_, text) = f.iter_mut().find(|(n, _)| n == "12-power.md").unwrap();
        *text = text
            .lines()
            .filter(|l| !l.starts_with("- **PWR-"))
            .collect::<Vec<_>>()
            .join("\n");
        let e = errors_of(&f);
        assert_reported(&e, "no clause has the chapter prefix PWR");
        let spec = parse_spec(&f[..3]);
        let mut few = Vec::new();
        check_clauses(&spec, &[], &mut few);
        assert_reported(&few, "fewer than 80");
    }

    #[test]
    fn missing_layout_and_unknown_table_are_reported() {
        let mut f = spec_files();
        alter(
            &mut f,
            "11-store.md",
            "#### Layout WatchEvent (16 bytes)",
            "#### Layout WatchEvnt (16 bytes)",
        );
        alter(
            &mut f,
            "11-store.md",
            "#### Table: constants",
            "#### Table: konstants",
        );
        let e = errors_of(&f);
        assert_reported(&e, "layout WatchEvent has no");
        assert_reported(&e, "the spec has layout WatchEvnt");
        assert_reported(&e, "unknown table kind `konstants`");
    }

    #[test]
    fn missing_function_section_is_reported() {
        let mut f = spec_files();
        alter(
            &mut f,
            "09-memory.md",
            "### MEMORY.BALLOON_QUERY",
            "### Balloon query",
        );
        assert_reported(
            &errors_of(&f),
            "MEMORY.BALLOON_QUERY has no `### MEMORY.BALLOON_QUERY`",
        );
    }

    #[test]
    fn model_change_is_reported_against_unchanged_spec() {
        // The other side: the crate changes, the spec does not.
        let spec = parse_spec(&spec_files());
        let mut m = common::model();
        if let Some(c) = m.calls.iter_mut().find(|c| c.name == "EVENT.SEND") {
            c.args = 2;
        }
        if let Some(l) = m.layouts.iter_mut().find(|l| l.name == "RingRequest") {
            if let Some(fld) = l.fields.iter_mut().find(|f| f.name == "args") {
                fld.offset = 16;
            }
        }
        m.statuses.push((-14, "GONE".to_string()));
        m.constants
            .push(("store::MAX_DEPTH".to_string(), Value::Num(8)));
        let e = check(&spec, &m, &[]);
        assert_reported(
            &e,
            "`EVENT.SEND` is 0x00040005 1 yes in the spec but 0x00040005 2 yes",
        );
        assert_reported(&e, "field args is at 8 size 48 in the spec but at 16");
        assert_reported(&e, "`GONE` is missing");
        assert_reported(&e, "`store::MAX_DEPTH` is missing");
    }

    #[test]
    fn new_crate_constant_without_spec_row_is_reported() {
        let src = "pub const A: u32 = 1;\nimpl Foo {\n    pub const B: u8 = 2;\n    pub const fn f() {}\n}\npub mod m {\n    pub const C: u8 = 3;\n}\n";
        let declared = declared_constants("store", src);
        assert_eq!(declared, vec!["store::A", "store::Foo::B", "store::m::C"]);
        let mut m = common::model();
        m.constants.push(("store::A".to_string(), Value::Num(1)));
        let e = uncovered_constants(&declared, &m);
        assert_eq!(e.len(), 2, "{e:#?}");
        assert_reported(&e, "`store::Foo::B`");
        assert_reported(&e, "`store::m::C`");
        // The real crate: every constant is covered.
        assert!(uncovered_constants(&crate_declared_constants(), &common::model()).is_empty());
    }

    #[test]
    fn clause_line_parser() {
        assert_eq!(
            parse_clause_line("- **BASE-1**: A host MUST x."),
            Ok(Some(("BASE-1".to_string(), "A host MUST x.".to_string())))
        );
        assert_eq!(parse_clause_line("- **Note**: text"), Ok(None));
        assert_eq!(parse_clause_line("* **BASE-1**: text"), Ok(None));
        assert!(parse_clause_line("- **BASE-x**: text").is_err());
        assert!(parse_clause_line("- **BASE-1** : text").is_err());
        assert!(parse_clause_line("- **BASE-1**: ").is_err());
    }

    #[test]
    fn citation_scanner_expands_ranges() {
        let src = "/// See `DISC-2`..`DISC-4` and `CONV-9`.\nlet x = \"`NOT-1`\";\n";
        assert_eq!(
            cited_in_source(src),
            vec!["DISC-2", "DISC-3", "DISC-4", "CONV-9"]
        );
    }

    #[test]
    fn row_splitter_handles_escapes_and_backticks() {
        assert_eq!(
            split_row("| 4 | 4 | `abi_version` | u32 | `a \\| b` |"),
            vec!["4", "4", "abi_version", "u32", "a | b"]
        );
        assert!(is_separator(&split_row("|---|:--:|")));
        assert_eq!(parse_value("0xFFFF_FFFF"), Some(Value::Num(0xFFFF_FFFF)));
        assert_eq!(parse_value("-12"), Some(Value::Num(-12)));
        assert_eq!(parse_value("\"ab\""), Some(Value::Str("ab".to_string())));
        assert_eq!(parse_value("abc"), None);
    }
}
