//! The handshake of spec appendix B against the code: the table's nodes are the keys the
//! backend and the guest side use, in the directories they use, and the stated limits are the
//! backend's.

use std::collections::BTreeSet;
use std::path::Path;

use pvabi_xen::transport::{
    backend_dir, frontend_dir, BACKEND_KEYS, GUEST_KEYS, MAX_RING_ORDER, MAX_WINDOW_PAGES,
};

fn appendix() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../spec/appendix-b-xen-transport.md");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The handshake table's nodes as (directory pattern, key), from rows `| who | `path`, ... |`.
fn table_nodes(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let [_, who, node, _, _] = cells.as_slice() else {
            continue;
        };
        if *who != "guest" && *who != "backend" {
            continue;
        }
        let mut dir = String::new();
        for tok in node.split('`').skip(1).step_by(2) {
            match tok.rsplit_once('/') {
                Some((d, k)) => {
                    dir = d.to_string();
                    out.push((dir.clone(), k.to_string()));
                }
                // A further key in the same directory: `.../frontend`, `frontend-id`.
                None => out.push((dir.clone(), tok.to_string())),
            }
        }
    }
    out
}

#[test]
fn handshake_table_matches_the_keys_in_use() {
    let nodes = table_nodes(&appendix());
    let guest_dir = frontend_dir(7).replace("/7/", "/D/");
    let backend_dir = backend_dir(0, 7)
        .replace("/0/backend/", "/B/backend/")
        .replace("/7/", "/D/");
    let in_dir = |d: &str| -> BTreeSet<String> {
        nodes
            .iter()
            .filter(|(dir, _)| dir == d)
            .map(|(_, k)| k.clone())
            .collect()
    };
    assert_eq!(
        nodes.len(),
        in_dir(&guest_dir).len() + in_dir(&backend_dir).len(),
        "a node of the table is in neither directory ({guest_dir}, {backend_dir}): {nodes:?}"
    );
    let mut want_guest: BTreeSet<String> = GUEST_KEYS.iter().map(|k| k.to_string()).collect();
    want_guest.extend(["state", "backend", "backend-id"].map(String::from));
    assert_eq!(in_dir(&guest_dir), want_guest);
    let want_backend: BTreeSet<String> = BACKEND_KEYS.iter().map(|k| k.to_string()).collect();
    assert_eq!(in_dir(&backend_dir), want_backend);
}

#[test]
fn stated_limits_are_the_backends() {
    let text = appendix().split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        text.contains(&format!("windows of at most {MAX_WINDOW_PAGES} pages")),
        "window limit"
    );
    assert!(
        text.contains(&format!("rings up to order {MAX_RING_ORDER}")),
        "ring limit"
    );
}

#[test]
fn the_table_parser_reads_what_it_should() {
    let t = "| backend | `/a/b/frontend`, `frontend-id` | x |\n| guest | `/a/c/k` | y |\n| who | z | w |";
    assert_eq!(
        table_nodes(t),
        vec![
            ("/a/b".into(), "frontend".into()),
            ("/a/b".into(), "frontend-id".into()),
            ("/a/c".into(), "k".into())
        ]
    );
}
