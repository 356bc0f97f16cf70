//! docs/metrics.md read as the metric contract (tests/metrics_contract.rs keeps it identical to
//! what the code emits): every family's type, label names, its table row and the prose of the
//! section it is in (where the state words of a label are listed). Included with `#[path]`.
#![allow(dead_code)] // each test crate uses a different subset

use std::collections::{BTreeMap, BTreeSet};

/// name -> (type, label names), the shape metrics_contract.rs compares with the code.
pub type Families = BTreeMap<String, (String, BTreeSet<String>)>;

pub struct Family {
    pub kind: String,
    pub labels: BTreeSet<String>,
    /// The family's whole table row.
    pub row: String,
    /// The row's meaning cell (where the values of its state labels are listed).
    pub meaning: String,
    /// The text of the `##` section holding the row.
    pub section: String,
}

/// Every documented family, from the rows `| \`vmwarden_…\` | type | labels | meaning |`.
pub fn families() -> BTreeMap<String, Family> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = BTreeMap::new();
    let mut sections: Vec<(usize, usize)> = Vec::new();
    let lines: Vec<&str> = doc.lines().collect();
    let mut start = 0;
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with("## ") {
            sections.push((start, i));
            start = i;
        }
    }
    sections.push((start, lines.len()));
    for (from, to) in sections {
        let section = lines[from..to].join("\n");
        for line in &lines[from..to] {
            if !line.starts_with("| `vmwarden_") {
                continue;
            }
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells[1].trim_matches('`').to_string();
            let labels: BTreeSet<String> = if cells[3] == "-" || cells[3].is_empty() {
                BTreeSet::new()
            } else {
                cells[3].split(',').map(|l| l.trim().to_string()).collect()
            };
            // The meaning is everything after the fourth `|` (it may hold escaped `\|`).
            let meaning = line
                .splitn(5, '|')
                .nth(4)
                .unwrap_or("")
                .trim()
                .trim_end_matches('|')
                .trim()
                .to_string();
            let fam = Family {
                kind: cells[2].to_string(),
                labels,
                row: line.to_string(),
                meaning,
                section: section.clone(),
            };
            assert!(
                out.insert(name.clone(), fam).is_none(),
                "{name} is documented twice"
            );
        }
    }
    out
}

/// The parts of a family's meaning that describe `label`'s values: from each mention of the label
/// (`` `label` `` or `label = `) to the next `;`. A part that refers to a label of another family
/// ("`peer_disk_state` as `disk_state` of `vmwarden_drbd_state`") brings that label's parts along.
/// Empty when the meaning never names the label (its values are then only in the section's prose).
pub fn label_values_text(
    families: &BTreeMap<String, Family>,
    name: &str,
    label: &str,
) -> Vec<String> {
    fn parts(meaning: &str, label: &str) -> Vec<String> {
        let mut out = Vec::new();
        for pat in [format!("`{label}`"), format!("{label} = ")] {
            for (at, _) in meaning.match_indices(&pat) {
                let before = meaning[..at].chars().last();
                if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                    continue;
                }
                let rest = &meaning[at + pat.len()..];
                out.push(rest[..rest.find(';').unwrap_or(rest.len())].to_string());
            }
        }
        out
    }
    let Some(f) = families.get(name) else {
        return Vec::new();
    };
    let mut out = parts(&f.meaning, label);
    for part in out.clone() {
        for (other, of) in families.iter().filter(|(n, _)| *n != name) {
            if part.contains(&format!("`{other}`")) {
                for l in &of.labels {
                    if part.contains(&format!("`{l}`")) {
                        out.extend(parts(&of.meaning, l));
                    }
                }
            }
        }
    }
    out
}

/// name -> (type, label names) from the tables of docs/metrics.md.
pub fn documented() -> Families {
    families()
        .into_iter()
        .map(|(n, f)| (n, (f.kind, f.labels)))
        .collect()
}
