//! The real-world `SKILL.md` corpus (`WOMBAT_SKILLS_CORPUS`), checked against
//! `CLASSIFICATION.tsv`: OpenClaw's loaded set and names (100%), and its
//! metadata namespace (at least 99%).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use wombat_workspace::parse_skill;

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

    let (mut loaded_expected, mut loaded_ok, mut meta_expected, mut meta_ok) = (0, 0, 0, 0);
    let (mut extra_loaded, mut dropped_with_diagnostic) = (0, 0);
    let mut failures = Vec::new();
    for (row, result) in rows.iter().zip(&parsed) {
        let id = format!("{}/{}", row[source], row[dir]);
        if row[apr_loaded] == "1" {
            loaded_expected += 1;
            match &result.skill {
                Some(skill) if skill.name == row[apr_name] => loaded_ok += 1,
                Some(skill) => failures.push(format!(
                    "{id}: name {:?} != {:?}",
                    skill.name, row[apr_name]
                )),
                None => failures.push(format!("{id}: not loaded: {:?}", result.problems)),
            }
        } else if result.skill.is_some() {
            extra_loaded += 1;
        } else if !result.problems.is_empty() {
            dropped_with_diagnostic += 1;
        }
        if let Some(ns) = row[apr_metadata].strip_prefix("ok:") {
            meta_expected += 1;
            let got = result
                .skill
                .as_ref()
                .map(|s| (s.metadata.is_object(), s.namespace.as_deref()));
            let agrees = match got {
                Some((true, found)) if ns == "no-known-namespace" => found.is_none(),
                Some((_, found)) => found == Some(ns),
                None => false,
            };
            if agrees {
                meta_ok += 1;
            } else {
                failures.push(format!("{id}: metadata namespace {got:?}, expected {ns}"));
            }
        }
    }
    println!(
        "skills corpus: parsed {} files in {elapsed:?}",
        parsed.len()
    );
    println!("skills corpus: loaded with OpenClaw's name: {loaded_ok}/{loaded_expected}");
    println!("skills corpus: gating metadata namespace agrees: {meta_ok}/{meta_expected}");
    println!(
        "skills corpus: {extra_loaded} loaded that OpenClaw drops; {dropped_with_diagnostic} dropped, each with a diagnostic"
    );
    for f in &failures {
        println!("  mismatch: {f}");
    }
    assert_eq!(
        loaded_ok, loaded_expected,
        "every file OpenClaw loads must load with its name"
    );
    assert!(
        meta_ok * 100 >= meta_expected * 99,
        "metadata agreement {meta_ok}/{meta_expected} is under 99%"
    );
    let not_loaded = parsed.iter().filter(|p| p.skill.is_none()).count();
    assert_eq!(
        dropped_with_diagnostic
            + parsed
                .iter()
                .filter(|p| p.skill.is_none() && p.problems.is_empty())
                .count(),
        not_loaded
    );
    assert!(
        parsed
            .iter()
            .all(|p| p.skill.is_some() || !p.problems.is_empty()),
        "a dropped skill without a diagnostic"
    );
}
