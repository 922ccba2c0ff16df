//! Snapshots of the prompts and reports built from `workspace-examples/`.

use wombat_workspace::{PromptMode, PromptRequest, SkillEnv, Workspace, WorkspaceOptions};

use crate::support::{example, now, options};

/// The example, opened from a private copy (kept alive beside the handle).
fn open(name: &str, options: WorkspaceOptions) -> (Workspace, tempfile::TempDir) {
    let copy = example(name);
    let ws = Workspace::open(copy.path(), options).expect("open example");
    assert!(ws.exists());
    assert_eq!(ws.diagnostics(), [], "example {name} has diagnostics");
    (ws, copy)
}

fn prompt(ws: &Workspace, request: PromptRequest<'_>) -> String {
    ws.system_prompt(&request).expect("prompt")
}

#[test]
fn default_full() {
    let (ws, _copy) = open("default", options());
    let request = PromptRequest::new("assistant", now()).timezone("America/Los_Angeles");
    insta::assert_snapshot!(prompt(&ws, request));
}

#[test]
fn default_full_with_weather_key() {
    let env = SkillEnv::new("linux")
        .with_var("WEATHER_API_KEY", "test-key")
        .with_executables(["curl"]);
    let (ws, _copy) = open(
        "default",
        WorkspaceOptions {
            skill_env: env,
            ..options()
        },
    );
    let full = prompt(&ws, PromptRequest::new("assistant", now()));
    assert!(full.contains("### 🌦️ weather\n\n# Weather"));
    assert!(!full.contains("test-key"));
    insta::assert_snapshot!(full);
}

#[test]
fn default_minimal() {
    let (ws, _copy) = open("default", options());
    let request = PromptRequest::new("assistant", now())
        .mode(PromptMode::Minimal)
        .timezone("Asia/Tokyo");
    insta::assert_snapshot!(prompt(&ws, request));
}

#[test]
fn default_skills_report() {
    let (ws, _copy) = open("default", options());
    insta::assert_json_snapshot!(ws.skills_report(), {
        ".skills[].location" => "[location]",
    });
}

#[test]
fn default_context_stats() {
    let (ws, _copy) = open("default", options());
    let stats = ws
        .context_stats(&PromptRequest::new("assistant", now()))
        .expect("stats");
    insta::assert_json_snapshot!(stats, { ".workspacePath" => "[path]" });
}

#[test]
fn default_boot_and_heartbeat() {
    let (ws, _copy) = open("default", options());
    let boot = ws.boot_status();
    assert!(boot.has_boot && !boot.is_complete);
    assert!(
        boot.content
            .as_deref()
            .is_some_and(|c| c.starts_with("# First run"))
    );
    assert!(ws.heartbeat().is_some_and(|h| h.contains("HEARTBEAT_OK")));
}

#[test]
fn multi_agent_roles() {
    let (ws, _copy) = open("multi-agent", options());
    for role in ["pm", "engineer", "support"] {
        let full = prompt(
            &ws,
            PromptRequest::new(role, now()).timezone("Europe/Berlin"),
        );
        insta::assert_snapshot!(format!("multi_agent_full_{role}"), full);
    }
    let minimal = prompt(
        &ws,
        PromptRequest::new("pm", now()).mode(PromptMode::Minimal),
    );
    insta::assert_snapshot!("multi_agent_minimal_pm", minimal);
}

#[test]
fn multi_agent_unknown_role_uses_soul_md() {
    let (ws, _copy) = open("multi-agent", options());
    let full = prompt(&ws, PromptRequest::new("designer", now()));
    assert!(full.starts_with("# Soul\n\nYou are a member of the Harbor assistant team"));
    insta::assert_snapshot!(full);
}
