//! The specification's clauses, parsed from the chapters embedded at build time.
//!
//! A clause is one Markdown list item of the form `- **BASE-1**: text` (see `spec/README.md`).

/// The spec's chapter files as (file name, text), embedded by the build script.
pub const SPEC_FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/spec_files.rs"));

/// One normative clause of the specification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clause {
    /// The stable id, e.g. `BASE-1`.
    pub id: String,
    /// The clause text (one line).
    pub text: String,
    /// The chapter file it stands in.
    pub chapter: String,
}

impl Clause {
    /// The id's prefix, e.g. `BASE` for `BASE-1`.
    pub fn prefix(&self) -> &str {
        self.id.split('-').next().unwrap_or(&self.id)
    }
}

/// Parses one clause line, or `None` when the line is not a clause.
pub fn parse_clause_line(line: &str) -> Option<(String, String)> {
    let rest = line.trim_end().strip_prefix("- **")?;
    let (id, rest) = rest.split_once("**: ")?;
    let (prefix, num) = id.split_once('-')?;
    let ok = !prefix.is_empty()
        && prefix.bytes().all(|b| b.is_ascii_uppercase())
        && !num.is_empty()
        && num.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| (id.to_string(), rest.to_string()))
}

/// Every clause of the given chapters, in file order.
pub fn parse_clauses(files: &[(&str, &str)]) -> Vec<Clause> {
    let mut out = Vec::new();
    for (chapter, text) in files {
        for line in text.lines() {
            if let Some((id, text)) = parse_clause_line(line) {
                out.push(Clause {
                    id,
                    text,
                    chapter: (*chapter).to_string(),
                });
            }
        }
    }
    out
}

/// Clause prefixes of transport bindings (spec appendix B): the backend that implements the
/// transport certifies them with its own tests, so the guest-side suite neither runs nor counts
/// them.
pub const TRANSPORT_PREFIXES: &[&str] = &["XEN"];

/// Every clause of the embedded specification that the suite certifies, in chapter order
/// (transport bindings, [`TRANSPORT_PREFIXES`], are left out).
pub fn clauses() -> Vec<Clause> {
    parse_clauses(SPEC_FILES)
        .into_iter()
        .filter(|c| !TRANSPORT_PREFIXES.contains(&c.prefix()))
        .collect()
}

/// Sort key that orders `BASE-2` before `BASE-10`.
pub fn clause_sort_key(id: &str) -> (String, u32) {
    match id.split_once('-') {
        Some((p, n)) => (p.to_string(), n.parse().unwrap_or(u32::MAX)),
        None => (id.to_string(), u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_well_formed_clause_lines() {
        assert_eq!(
            parse_clause_line("- **BASE-1**: A host MUST answer."),
            Some(("BASE-1".into(), "A host MUST answer.".into()))
        );
        for bad in [
            "- **base-1**: x",
            "- **BASE-**: x",
            "* **BASE-1**: x",
            "- **BASE-1** x",
            "text",
        ] {
            assert_eq!(parse_clause_line(bad), None, "{bad}");
        }
        let c = parse_clauses(&[("a.md", "# A\n- **X-2**: two\n- **X-10**: ten\n")]);
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].prefix(), "X");
        assert!(clause_sort_key("X-2") < clause_sort_key("X-10"));
    }

    #[test]
    fn the_embedded_spec_has_unique_clause_ids() {
        let all = clauses();
        let mut ids: Vec<&str> = all.iter().map(|c| c.id.as_str()).collect();
        ids.sort_unstable();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n, "duplicate clause ids in spec/");
    }
}
