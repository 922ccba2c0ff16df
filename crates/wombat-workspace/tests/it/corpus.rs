//! The real-world `SKILL.md` corpus (`WOMBAT_SKILLS_CORPUS`), checked against
//! `CLASSIFICATION.tsv`, which comes from OpenClaw's real loader: every file
//! it loads loads here with its name and gating metadata; every deliberate
//! difference (namespaces OpenClaw ignores, files only the lenient fallback
//! reads, duplicate names) is counted and must carry its diagnostic. Any other
//! disagreement fails the test.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use wombat_workspace::parse_skill;
use wombat_workspace::skills::{OPENCLAW_IGNORED_NAMESPACES, openclaw_folder_order};

#[test]
fn corpus_agrees_with_openclaw() {
    let Some(given) = std::env::var_os("WOMBAT_SKILLS_CORPUS").map(PathBuf::from) else {
        println!("skills corpus test skipped: WOMBAT_SKILLS_CORPUS is not set");
        return;
    };
    // Tests run in the crate folder; CI gives the path relative to the repository root.
    let repo_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = [given.clone(), repo_root.join(&given)]
        .into_iter()
        .find(|p| p.join("CLASSIFICATION.tsv").is_file())
        .unwrap_or_else(|| {
            panic!(
                "WOMBAT_SKILLS_CORPUS={} has no CLASSIFICATION.tsv",
                given.display()
            )
        });
    let tsv = std::fs::read_to_string(root.join("CLASSIFICATION.tsv")).expect("CLASSIFICATION.tsv");
    let mut lines = tsv.lines();
    let header: Vec<&str> = lines.next().expect("header").split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).expect(name);
    let (source, dir, apr_name, apr_loaded, apr_metadata) = (
        col("source"),
        col("skill_dir"),
        col("apr_name"),
        col("apr_loaded"),
        col("apr_metadata"),
    );

    // The folder OpenClaw saw (the name fallback) is the parent of the file's
    // original path, from MANIFEST.tsv; the corpus renames some folders.
    let manifest = std::fs::read_to_string(root.join("MANIFEST.tsv")).expect("MANIFEST.tsv");
    let original_folder: HashMap<(&str, &str), &str> = manifest
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            let folder = cols.get(5)?.rsplit('/').nth(1)?;
            Some(((cols[0], cols[1]), folder))
        })
        .collect();

    let rows: Vec<Vec<&str>> = lines.map(|l| l.split('\t').collect()).collect();
    let texts: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            let path = root.join(r[source]).join(r[dir]).join("SKILL.md");
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let folder = original_folder
                .get(&(r[source], r[dir]))
                .copied()
                .unwrap_or(r[dir]);
            (
                folder.to_owned(),
                String::from_utf8_lossy(&bytes).into_owned(),
            )
        })
        .collect();
    assert_eq!(texts.len(), 1395, "corpus size");

    let started = Instant::now();
    let parsed: Vec<_> = texts
        .iter()
        .map(|(folder, text)| parse_skill(folder, text))
        .collect();
    let elapsed = started.elapsed();

    // Agreement with OpenClaw's real loader (the `apr_*` columns), and a count
    // of each deliberate difference, every one of which must carry its diagnostic.
    let (mut loaded_expected, mut loaded_ok) = (0, 0);
    let mut meta_expected: HashMap<&str, (usize, usize)> = HashMap::new();
    let (mut ignored_namespace, mut lenient_loaded, mut dropped_with_diagnostic) = (0, 0, 0);
    let mut failures = Vec::new();
    for (row, result) in rows.iter().zip(&parsed) {
        let id = format!("{}/{}", row[source], row[dir]);
        if row[apr_loaded] != "1" {
            match &result.skill {
                // Deliberate: Wombat's lenient fallback loads what OpenClaw drops.
                Some(_) if result.openclaw_would_drop => lenient_loaded += 1,
                Some(skill) => failures.push(format!(
                    "{id}: OpenClaw drops it, Wombat loads {:?} without saying OpenClaw would drop it: {:?}",
                    skill.name, result.problems
                )),
                None if !result.problems.is_empty() => dropped_with_diagnostic += 1,
                None => failures.push(format!("{id}: dropped without a diagnostic")),
            }
            continue;
        }
        loaded_expected += 1;
        let Some(skill) = &result.skill else {
            failures.push(format!("{id}: not loaded: {:?}", result.problems));
            continue;
        };
        if skill.name == row[apr_name] {
            loaded_ok += 1;
        } else {
            failures.push(format!(
                "{id}: name {:?} != {:?}",
                skill.name, row[apr_name]
            ));
        }
        if result.openclaw_would_drop {
            failures.push(format!(
                "{id}: OpenClaw loads it, but Wombat says it would drop it"
            ));
        }
        let expected = row[apr_metadata];
        let found = skill.namespace.as_deref();
        let agrees = match expected.strip_prefix("ok:") {
            Some(ns) => found == Some(ns),
            // Metadata present in none of OpenClaw's namespaces: no gating,
            // unless it is in one OpenClaw ignores and Wombat honours.
            None if expected == "no-namespace" => match found {
                None => skill.metadata.is_object(),
                Some(ns) if OPENCLAW_IGNORED_NAMESPACES.contains(&ns) => {
                    let said = result
                        .problems
                        .iter()
                        .any(|p| p.contains("OpenClaw ignores"));
                    if said {
                        ignored_namespace += 1;
                    } else {
                        failures.push(format!("{id}: gated from {ns} without a diagnostic"));
                    }
                    said
                }
                Some(_) => false,
            },
            None if expected == "absent" => skill.metadata.is_null(),
            // OpenClaw could not read the metadata; no gating on its side.
            None if expected == "json5-fail" => found.is_none(),
            None => false,
        };
        let kind = if expected.starts_with("ok:") {
            "ok:<namespace>"
        } else {
            expected
        };
        let counts = meta_expected.entry(kind).or_default();
        counts.0 += 1;
        if agrees {
            counts.1 += 1;
        } else {
            failures.push(format!(
                "{id}: gating metadata {expected}, Wombat found namespace {found:?} in {}",
                skill.metadata
            ));
        }
    }

    // One skill per name in a folder: within each source (one skills folder),
    // the names Wombat would report as duplicates, keeping OpenClaw's choice.
    let mut by_source: HashMap<(&str, &str), Vec<&str>> = HashMap::new();
    for (row, result) in rows.iter().zip(&parsed) {
        if let Some(skill) = &result.skill {
            by_source
                .entry((row[source], skill.name.as_str()))
                .or_default()
                .push(row[dir]);
        }
    }
    let mut duplicates: Vec<String> = by_source
        .iter()
        .filter(|(_, folders)| folders.len() > 1)
        .map(|((src, name), folders)| {
            let kept = folders
                .iter()
                .copied()
                .max_by(|a, b| openclaw_folder_order(a, b))
                .unwrap_or_default();
            format!("{src}: {name:?} in {} folders, keeps {kept}", folders.len())
        })
        .collect();
    duplicates.sort();
    let duplicate_diagnostics: usize = by_source.values().map(|f| f.len().saturating_sub(1)).sum();

    println!(
        "skills corpus: parsed {} files in {elapsed:?}",
        parsed.len()
    );
    println!(
        "skills corpus: OpenClaw loads {loaded_expected}; Wombat loads {loaded_ok} of them with OpenClaw's name"
    );
    let mut kinds: Vec<_> = meta_expected.iter().collect();
    kinds.sort();
    let (all, agreed) = kinds
        .iter()
        .fold((0, 0), |(a, g), (_, (n, ok))| (a + n, g + ok));
    println!("skills corpus: gating metadata agrees on {agreed}/{all} loaded files:");
    for (kind, (n, ok)) in &kinds {
        println!("  {kind}: {ok}/{n}");
    }
    println!("skills corpus: deliberate differences, each with its diagnostic:");
    println!("  gated from clawdis/moltbot (OpenClaw ignores them): {ignored_namespace}");
    println!("  loaded by the lenient fallback, OpenClaw drops them: {lenient_loaded}");
    println!(
        "  duplicate names within one folder (others reported, not loaded): {duplicate_diagnostics} in {} names",
        duplicates.len()
    );
    for d in &duplicates {
        println!("    {d}");
    }
    println!(
        "skills corpus: {dropped_with_diagnostic} files dropped (as OpenClaw does), each with a diagnostic"
    );
    for f in &failures {
        println!("  mismatch: {f}");
    }
    assert_eq!(
        loaded_ok, loaded_expected,
        "every file OpenClaw loads must load with its name"
    );
    assert!(
        failures.is_empty(),
        "{} disagreements with OpenClaw's loader, see the mismatch lines",
        failures.len()
    );
    assert!(
        parsed
            .iter()
            .all(|p| p.skill.is_some() || !p.problems.is_empty()),
        "a dropped skill without a diagnostic"
    );
}
