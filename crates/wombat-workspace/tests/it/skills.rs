//! Skills read from a workspace's `skills/` folder: gating through an injected
//! environment, diagnostics, the skills budget, and the report.

use serde_json::json;
use wombat_workspace::{PromptRequest, SkillEnv, WorkspaceOptions};

use crate::support::{TempWorkspace, now, options};

fn skill(name: &str, metadata: &str) -> String {
    format!(
        "---\nname: {name}\ndescription: The {name} skill.\nmetadata: {metadata}\n---\n\nUse {name} well.\n"
    )
}

fn gated_workspace() -> TempWorkspace {
    TempWorkspace::with(&[
        ("SOUL.md", "soul"),
        (
            "skills/a-os/SKILL.md",
            &skill(
                "mac-only",
                r#"{"openclaw":{"os":["darwin"],"always":true}}"#,
            ),
        ),
        (
            "skills/b-always/SKILL.md",
            &skill(
                "always-on",
                r#"{"openclaw":{"always":true,"requires":{"bins":["nope"]}}}"#,
            ),
        ),
        (
            "skills/c-bins/SKILL.md",
            &skill("video", r#"{"openclaw":{"requires":{"bins":["ffmpeg"]}}}"#),
        ),
        (
            "skills/d-any/SKILL.md",
            &skill(
                "browser",
                r#"{"openclaw":{"requires":{"anyBins":["chromium","chrome"]}}}"#,
            ),
        ),
        (
            "skills/e-env/SKILL.md",
            &skill(
                "search",
                r#"{"clawdbot":{"requires":{"env":["SEARCH_API_KEY"]}}}"#,
            ),
        ),
        (
            "skills/f-config/SKILL.md",
            &skill(
                "slack",
                r#"{"moltbot":{"requires":{"config":["channels.slack"]}}}"#,
            ),
        ),
        (
            "skills/g-plain/SKILL.md",
            "---\nname: plain\ndescription: No metadata at all.\n---\nplain body",
        ),
        (
            "skills/h-broken/SKILL.md",
            "---\nname: broken\n---\nno description",
        ),
        ("skills/i-empty/README.md", "no SKILL.md here"),
    ])
}

fn reasons(options: WorkspaceOptions) -> Vec<(String, Option<String>)> {
    let ws = gated_workspace().open_with(options);
    ws.skills_report()
        .skills
        .into_iter()
        .map(|s| (s.name, s.gate_reason))
        .collect()
}

#[test]
fn each_gating_rule_and_its_reason() {
    let got = reasons(options());
    let expected: Vec<(String, Option<String>)> = [
        ("mac-only", Some("OS not supported (requires: darwin)")),
        ("always-on", None),
        ("video", Some("Missing binary: ffmpeg")),
        ("browser", Some("Missing any of binaries: chromium, chrome")),
        ("search", Some("Missing env: SEARCH_API_KEY")),
        ("slack", Some("Missing config: channels.slack")),
        ("plain", None),
    ]
    .into_iter()
    .map(|(n, r)| (n.to_owned(), r.map(str::to_owned)))
    .collect();
    assert_eq!(got, expected);
}

#[test]
fn a_satisfied_environment_enables_everything() {
    let env = SkillEnv::new("darwin")
        .with_executables(["ffmpeg", "chrome"])
        .with_var("SEARCH_API_KEY", "k");
    let got = reasons(WorkspaceOptions {
        skill_env: env,
        skills_config: json!({"channels": {"slack": {"token": "x"}}}),
        ..options()
    });
    assert!(got.iter().all(|(_, r)| r.is_none()), "{got:?}");
}

#[test]
fn only_enabled_skills_reach_the_prompt() {
    let ws = gated_workspace().open();
    let prompt = ws
        .system_prompt(&PromptRequest::new("a", now()))
        .expect("prompt");
    assert!(prompt.contains("## Skills\n\n### always-on\n\nUse always-on well.\n\n---\n\n### plain\n\nplain body\n\n## Current Time"));
    assert!(!prompt.contains("video"));
    let counts = ws.skill_counts();
    assert_eq!((counts.enabled, counts.total), (2, 7));
}

#[test]
fn problems_become_diagnostics() {
    let ws = gated_workspace().open();
    let report = ws.skills_report();
    let paths: Vec<(&str, &str)> = report
        .diagnostics
        .iter()
        .map(|d| (d.path.as_str(), d.message.as_str()))
        .collect();
    assert_eq!(
        paths,
        [
            (
                "skills/f-config/SKILL.md",
                "gating read from metadata.moltbot, a namespace OpenClaw ignores (it reads only openclaw and clawdbot): Wombat honours it as the author's intent, OpenClaw would not gate this skill"
            ),
            (
                "skills/h-broken/SKILL.md",
                "front matter has no description; skill not loaded"
            ),
            ("skills/i-empty", "skill folder has no SKILL.md; ignored"),
        ]
    );
    assert_eq!(ws.diagnostics(), report.diagnostics);
}

#[test]
fn skills_budget_falls_back_to_a_compact_listing() {
    let long = "x".repeat(400);
    let tmp = TempWorkspace::with(&[
        (
            "skills/a/SKILL.md",
            &format!("---\nname: one\ndescription: First.\n---\n{long}"),
        ),
        (
            "skills/b/SKILL.md",
            &format!("---\nname: two\ndescription: Second.\n---\n{long}"),
        ),
        (
            "skills/c/SKILL.md",
            &format!("---\nname: three\ndescription: Third.\n---\n{long}"),
        ),
    ]);
    let ws = tmp.open_with(WorkspaceOptions {
        skills_budget_chars: 1000,
        include_time_context: false,
        ..options()
    });
    let prompt = ws
        .system_prompt(&PromptRequest::new("a", now()))
        .expect("prompt");
    assert!(prompt.starts_with("## Skills\n\n### one\n\nxxx"));
    assert!(prompt.contains("### two\n\nxxx"));
    assert!(!prompt.contains("### three"));
    assert!(
        prompt.contains("2 of 3 skills are included in full above"),
        "{prompt}"
    );
    assert!(prompt.ends_with("- **three**: Third."), "{prompt}");
    assert!(prompt.chars().count() <= 1000);
}

#[test]
fn messy_skill_files_load() {
    let tmp = TempWorkspace::new();
    tmp.write_bytes(
        "skills/crlf/SKILL.md",
        "\u{feff}---\r\nname: crlf\r\ndescription: Use when: the YAML is broken\r\nmetadata:\r\n  {\r\n    openclaw: { emoji: \"🧪\", requires: { env: [\"K\",], }, },\r\n  }\r\n---\r\nbody\r\n"
            .as_bytes(),
    );
    let ws = tmp.open_with(WorkspaceOptions {
        skill_env: SkillEnv::new("linux").with_var("K", "v"),
        ..options()
    });
    let report = ws.skills_report();
    assert_eq!(report.total, 1);
    let entry = &report.skills[0];
    assert_eq!(
        (entry.name.as_str(), entry.description.as_str()),
        ("crlf", "Use when: the YAML is broken")
    );
    assert!(entry.enabled);
    assert_eq!(
        entry.metadata,
        json!({"openclaw": {"emoji": "🧪", "requires": {"env": ["K"]}}})
    );
    assert!(entry.location.ends_with("skills/crlf/SKILL.md"));
    // The lenient fallback is visible, not silent.
    assert_eq!(report.diagnostics.len(), 1);
    assert!(report.diagnostics[0].message.contains("lenient"));
    let prompt = ws
        .system_prompt(&PromptRequest::new("a", now()))
        .expect("prompt");
    assert!(prompt.contains("### 🧪 crlf\n\nbody"));
}

#[cfg(unix)]
#[test]
fn skill_md_symlink_outside_the_workspace_is_refused() {
    let tmp = TempWorkspace::with(&[
        ("skills/inside/SKILL.md", &skill("inside", "{}")),
        ("shared/linked.md", &skill("linked-inside", "{}")),
    ]);
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("SKILL.md"), skill("escaped", "{}")).expect("write");
    std::fs::create_dir_all(tmp.path().join("skills/escape")).expect("mkdir");
    std::os::unix::fs::symlink(
        outside.path().join("SKILL.md"),
        tmp.path().join("skills/escape/SKILL.md"),
    )
    .expect("symlink");
    // A whole skill folder linked outside is the same escape.
    std::os::unix::fs::symlink(outside.path(), tmp.path().join("skills/folder-link"))
        .expect("symlink");
    // A link that stays inside the workspace is fine.
    std::fs::create_dir_all(tmp.path().join("skills/relinked")).expect("mkdir");
    std::os::unix::fs::symlink(
        tmp.path().join("shared/linked.md"),
        tmp.path().join("skills/relinked/SKILL.md"),
    )
    .expect("symlink");
    let ws = tmp.open();
    let report = ws.skills_report();
    let names: Vec<&str> = report.skills.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["inside", "linked-inside"]);
    for folder in ["escape", "folder-link"] {
        let d = report
            .diagnostics
            .iter()
            .find(|d| d.path == format!("skills/{folder}/SKILL.md"))
            .unwrap_or_else(|| panic!("no diagnostic for {folder}: {:?}", report.diagnostics));
        assert!(d.message.contains("outside the workspace"), "{}", d.message);
        assert!(
            !d.message.contains(&*outside.path().to_string_lossy()),
            "no target path"
        );
    }
    assert!(
        !ws.system_prompt(&PromptRequest::new("a", now()))
            .expect("prompt")
            .contains("escaped")
    );
}

#[test]
fn duplicate_names_keep_the_skill_openclaw_keeps() {
    // OpenClaw scans folders in locale order and the last one of a name
    // wins: `doubleword-api` sorts after `doubleword`, `Beta` after `alpha`.
    let tmp = TempWorkspace::with(&[
        (
            "skills/doubleword/SKILL.md",
            &skill("batches", r#"{"openclaw":{"emoji":"1"}}"#),
        ),
        (
            "skills/doubleword-api/SKILL.md",
            &skill("batches", r#"{"openclaw":{"emoji":"2"}}"#),
        ),
        ("skills/alpha/SKILL.md", &skill("greek", "{}")),
        (
            "skills/Beta/SKILL.md",
            &skill("greek", r#"{"openclaw":{"emoji":"b"}}"#),
        ),
        ("skills/unique/SKILL.md", &skill("unique", "{}")),
    ]);
    let ws = tmp.open();
    let report = ws.skills_report();
    let kept: Vec<(&str, &str)> = report
        .skills
        .iter()
        .map(|s| {
            let folder = s.location.rsplit('/').nth(1).expect("folder");
            (s.name.as_str(), folder)
        })
        .collect();
    let mut kept = kept;
    kept.sort_unstable();
    assert_eq!(
        kept,
        [
            ("batches", "doubleword-api"),
            ("greek", "Beta"),
            ("unique", "unique")
        ]
    );
    assert_eq!(report.total, 3);
    let dropped: Vec<&str> = report
        .diagnostics
        .iter()
        .filter(|d| d.message.contains("is also used by"))
        .map(|d| d.path.as_str())
        .collect();
    assert_eq!(
        dropped,
        ["skills/alpha/SKILL.md", "skills/doubleword/SKILL.md"]
    );
    let prompt = ws
        .system_prompt(&PromptRequest::new("a", now()))
        .expect("prompt");
    assert_eq!(prompt.matches("### ").count(), 3, "{prompt}");
}

#[test]
fn skill_report_diagnoses_namespaces_openclaw_ignores() {
    let ws = TempWorkspace::with(&[(
        "skills/old/SKILL.md",
        &skill("old", r#"{"clawdis":{"requires":{"env":["OLD_KEY"]}}}"#),
    )])
    .open();
    let report = ws.skills_report();
    assert_eq!(
        report.skills[0].gate_reason.as_deref(),
        Some("Missing env: OLD_KEY")
    );
    assert!(
        report
            .diagnostics
            .iter()
            .any(|d| d.path == "skills/old/SKILL.md" && d.message.contains("OpenClaw ignores")),
        "{:?}",
        report.diagnostics
    );
}
