//! One test (at least) per rule of WORKSPACE.md: files, layout, modes,
//! fallback, override, time, memory, size limits, boot, freshness.

use std::time::{Duration, Instant};

use wombat_workspace::{Error, PromptMode, PromptRequest, Workspace, WorkspaceOptions};

use crate::support::{TempWorkspace, now, options};

const TIME_UTC: &str = "## Current Time\n\n- **Date:** Monday, February 2, 2026\n- **Time:** 3:15 AM\n- **Timezone:** UTC";

fn prompt(ws: &Workspace, request: PromptRequest<'_>) -> String {
    ws.system_prompt(&request).expect("prompt")
}

fn full(ws: &Workspace, role: &str) -> String {
    prompt(ws, PromptRequest::new(role, now()))
}

#[test]
fn full_mode_layout_and_order() {
    let ws = TempWorkspace::with(&[
        ("SOUL.md", "  soul text \n"),
        ("IDENTITY.md", "identity text"),
        ("USER.md", "user text"),
        ("AGENTS.md", "\nagents text\n"),
        ("TOOLS.md", "tools text"),
        ("HEARTBEAT.md", "heartbeat text"),
        ("MEMORY.md", "long-term text"),
        ("memory/2026-02-01.md", "yesterday text"),
        ("memory/2026-02-02.md", "today text"),
        ("memory/2026-01-31.md", "older text"),
        ("memory/notes.md", "not a daily log"),
        ("skills/s/SKILL.md", "---\nname: s\ndescription: d\nmetadata: {\"openclaw\":{\"always\":true}}\n---\nskill text"),
    ])
    .open();
    assert_eq!(
        full(&ws, "agent"),
        format!(
            "soul text\n\n## Identity\n\nidentity text\n\n## User\n\nuser text\n\n## Operating Rules\n\nagents text\n\n\
             ## Skills\n\n### s\n\nskill text\n\n### Long-term Memory\n\nlong-term text\n\n\
             ### Yesterday (2026-02-01)\n\nyesterday text\n\n### Today (2026-02-02)\n\ntoday text\n\n{TIME_UTC}"
        )
    );
}

#[test]
fn minimal_mode_has_rules_tools_and_time_only() {
    let ws = TempWorkspace::with(&[
        ("SOUL.md", "soul"),
        ("AGENTS.md", "agents"),
        ("TOOLS.md", "tools"),
        ("MEMORY.md", "memory"),
    ])
    .open();
    let got = prompt(
        &ws,
        PromptRequest::new("agent", now()).mode(PromptMode::Minimal),
    );
    assert_eq!(
        got,
        format!("## Operating Rules\n\nagents\n\n## Tools\n\ntools\n\n{TIME_UTC}")
    );
}

#[test]
fn role_soul_falls_back_to_soul_md() {
    let ws = TempWorkspace::with(&[("SOUL.md", "default soul"), ("souls/pm.md", "pm soul")]).open();
    assert!(full(&ws, "pm").starts_with("pm soul\n\n"));
    assert!(full(&ws, "engineer").starts_with("default soul\n\n"));
    let stats = ws
        .context_stats(&PromptRequest::new("pm", now()))
        .expect("stats");
    assert_eq!(stats.files[1].name, "souls/pm.md");
    let stats = ws
        .context_stats(&PromptRequest::new("engineer", now()))
        .expect("stats");
    assert_eq!(stats.files[1].name, "SOUL.md");
}

#[test]
fn path_traversal_roles_are_rejected() {
    let ws = TempWorkspace::with(&[("SOUL.md", "soul")]).open();
    for role in ["../etc", "..", "a/b", "", ".hidden", "a b", &"x".repeat(65)] {
        let err = ws
            .system_prompt(&PromptRequest::new(role, now()))
            .expect_err(role);
        assert!(matches!(err, Error::InvalidRole { .. }), "{role}: {err}");
        let err = ws
            .context_stats(&PromptRequest::new(role, now()))
            .expect_err(role);
        assert!(matches!(err, Error::InvalidRole { .. }), "{role}: {err}");
    }
}

#[test]
fn fallback_prompt_in_both_modes() {
    let ws = TempWorkspace::with(&[("SOUL.md", "  \n"), ("HEARTBEAT.md", "only heartbeat")]).open();
    assert_eq!(
        full(&ws, "support"),
        format!(
            "You are a helpful AI assistant (role: support). Follow instructions carefully and provide accurate, helpful responses.\n\n{TIME_UTC}"
        )
    );
    assert_eq!(
        prompt(
            &ws,
            PromptRequest::new("support", now()).mode(PromptMode::Minimal)
        ),
        format!(
            "You are a helpful AI assistant (role: support) (minimal context). Follow instructions carefully and provide accurate, helpful responses.\n\n{TIME_UTC}"
        )
    );
}

#[test]
fn missing_workspace_is_not_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nope");
    let ws = Workspace::open(&path, options()).expect("open");
    assert!(!ws.exists());
    assert_eq!(ws.health().status, "missing");
    assert!(full(&ws, "agent").starts_with("You are a helpful AI assistant (role: agent)."));
    assert!(ws.complete_boot().is_err());
    // It is picked up once it appears.
    std::fs::create_dir(&path).expect("mkdir");
    std::fs::write(path.join("SOUL.md"), "now here").expect("write");
    assert!(ws.refresh_now());
    assert!(ws.exists());
    assert_eq!(ws.health().status, "ok");
    assert!(full(&ws, "agent").starts_with("now here"));
}

#[test]
fn system_prompt_override_keeps_time_context() {
    let ws = TempWorkspace::with(&[("SOUL.md", "soul"), ("AGENTS.md", "agents")]).open();
    let got = prompt(
        &ws,
        PromptRequest::new("agent", now()).system_prompt("Custom prompt."),
    );
    assert_eq!(got, format!("Custom prompt.\n\n{TIME_UTC}"));
    let got = prompt(
        &ws,
        PromptRequest::new("agent", now())
            .mode(PromptMode::Minimal)
            .system_prompt("Custom."),
    );
    assert_eq!(got, format!("Custom.\n\n{TIME_UTC}"));
    // A blank override counts as absent, as in 0.1.0.
    let got = prompt(&ws, PromptRequest::new("agent", now()).system_prompt("  "));
    assert!(got.starts_with("soul\n\n## Operating Rules"));
}

#[test]
fn time_context_can_be_turned_off() {
    let ws = TempWorkspace::with(&[("SOUL.md", "soul")]);
    let ws = ws.open_with(WorkspaceOptions {
        include_time_context: false,
        ..options()
    });
    assert_eq!(full(&ws, "agent"), "soul");
    assert_eq!(
        prompt(&ws, PromptRequest::new("agent", now()).system_prompt("X")),
        "X"
    );
}

#[test]
fn zone_precedence_request_then_default() {
    let ws = TempWorkspace::with(&[("SOUL.md", "soul")]);
    let ws = ws.open_with(WorkspaceOptions {
        default_timezone: Some("Asia/Tokyo".to_owned()),
        ..options()
    });
    assert!(full(&ws, "a").ends_with("- **Timezone:** Asia/Tokyo"));
    let got = prompt(
        &ws,
        PromptRequest::new("a", now()).timezone("America/Los_Angeles"),
    );
    assert!(got.ends_with(
        "- **Date:** Sunday, February 1, 2026\n- **Time:** 7:15 PM\n- **Timezone:** America/Los_Angeles"
    ));
    // Without a configured default the system zone (or UTC) is used; either way a valid block.
    let ws = TempWorkspace::with(&[("SOUL.md", "soul")]);
    let ws = ws.open_with(WorkspaceOptions {
        default_timezone: None,
        ..options()
    });
    assert!(full(&ws, "a").contains("## Current Time\n\n- **Date:** "));
}

#[test]
fn unknown_time_zones_are_typed_errors() {
    let ws = TempWorkspace::with(&[("SOUL.md", "soul")]).open();
    let err = ws
        .system_prompt(&PromptRequest::new("a", now()).timezone("Mars/Base"))
        .expect_err("bad zone");
    assert!(
        matches!(err, Error::UnknownTimeZone { ref name } if name == "Mars/Base"),
        "{err}"
    );
    let err = Workspace::open(
        TempWorkspace::new().path(),
        WorkspaceOptions {
            default_timezone: Some("Not/AZone".to_owned()),
            ..options()
        },
    )
    .expect_err("bad default zone");
    assert!(matches!(err, Error::UnknownTimeZone { .. }));
}

#[test]
fn memory_days_follow_the_request_zone_across_the_date_line() {
    let ws = TempWorkspace::with(&[
        ("memory/2026-01-31.md", "jan 31"),
        ("memory/2026-02-01.md", "feb 1"),
        ("memory/2026-02-02.md", "feb 2"),
    ])
    .open();
    let at = "2026-02-02T03:00:00Z".parse().expect("ts");
    let la = prompt(
        &ws,
        PromptRequest::new("a", at).timezone("America/Los_Angeles"),
    );
    assert!(
        la.starts_with(
            "### Yesterday (2026-01-31)\n\njan 31\n\n### Today (2026-02-01)\n\nfeb 1\n\n"
        ),
        "{la}"
    );
    let tokyo = prompt(&ws, PromptRequest::new("a", at).timezone("Asia/Tokyo"));
    assert!(
        tokyo.starts_with(
            "### Yesterday (2026-02-01)\n\nfeb 1\n\n### Today (2026-02-02)\n\nfeb 2\n\n"
        ),
        "{tokyo}"
    );
    // Only the days that exist are injected.
    let later = prompt(
        &ws,
        PromptRequest::new("a", "2026-02-03T12:00:00Z".parse().expect("ts")),
    );
    assert!(
        later.starts_with("### Yesterday (2026-02-02)\n\nfeb 2\n\n## Current Time"),
        "{later}"
    );
}

#[test]
fn bom_and_crlf_files_are_normalised() {
    let ws = TempWorkspace::new();
    ws.write_bytes("SOUL.md", b"\xEF\xBB\xBFline one\r\nline two\r\n");
    ws.write_bytes("AGENTS.md", b"rules\r\n");
    let ws = ws.open();
    assert!(full(&ws, "a").starts_with("line one\nline two\n\n## Operating Rules\n\nrules\n\n"));
    let stats = ws
        .context_stats(&PromptRequest::new("a", now()))
        .expect("stats");
    assert_eq!(
        stats.files[1].raw_chars,
        "line one\nline two\n".chars().count()
    );
}

#[test]
fn invalid_utf8_is_replaced_and_reported() {
    let ws = TempWorkspace::new();
    ws.write_bytes("SOUL.md", b"caf\xE9");
    let ws = ws.open();
    assert!(full(&ws, "a").starts_with("caf\u{FFFD}"));
    assert_eq!(ws.diagnostics()[0].path, "SOUL.md");
}

#[test]
fn per_file_truncation_keeps_head_and_tail_of_multibyte_text() {
    // 100 CJK characters then a closing rule made of emoji: 130 chars for a 120 limit.
    let text = format!("{}{}", "界".repeat(100), "🦘".repeat(30));
    let ws = TempWorkspace::with(&[("AGENTS.md", &text)]);
    let ws = ws.open_with(WorkspaceOptions {
        max_chars_per_file: 120,
        include_time_context: false,
        ..options()
    });
    let got = prompt(
        &ws,
        PromptRequest::new("a", now()).mode(PromptMode::Minimal),
    );
    let body = got.strip_prefix("## Operating Rules\n\n").expect("heading");
    let (head, rest) = body.split_once('\n').expect("marker");
    let (marker, tail) = rest.split_once('\n').expect("marker");
    assert!(head.chars().all(|c| c == '界') && !head.is_empty());
    assert!(tail.chars().all(|c| c == '🦘') && !tail.is_empty());
    assert!(
        marker.starts_with("[... AGENTS.md truncated: kept ")
            && marker.ends_with(" of 130 characters ...]")
    );
    assert!(body.chars().count() <= 120);

    let stats = ws
        .context_stats(&PromptRequest::new("a", now()).mode(PromptMode::Minimal))
        .expect("stats");
    let agents = &stats.files[0];
    assert_eq!((agents.raw_chars, agents.truncated), (130, true));
    assert_eq!(agents.injected_chars, body.chars().count());

    // Exactly at the limit: untouched.
    let ws = TempWorkspace::with(&[("AGENTS.md", &"界".repeat(120))]);
    let ws = ws.open_with(WorkspaceOptions {
        max_chars_per_file: 120,
        include_time_context: false,
        ..options()
    });
    let got = prompt(
        &ws,
        PromptRequest::new("a", now()).mode(PromptMode::Minimal),
    );
    assert_eq!(got, format!("## Operating Rules\n\n{}", "界".repeat(120)));
}

#[test]
fn total_budget_cuts_then_drops_later_files() {
    let ws = TempWorkspace::with(&[
        ("SOUL.md", &"s".repeat(600)),
        ("IDENTITY.md", &"i".repeat(600)),
        ("USER.md", &"u".repeat(600)),
        ("AGENTS.md", &"a".repeat(600)),
    ]);
    let ws = ws.open_with(WorkspaceOptions {
        total_budget_chars: 1500,
        include_time_context: false,
        ..options()
    });
    let got = full(&ws, "a");
    assert!(got.starts_with(&format!(
        "{}\n\n## Identity\n\n{}\n\n## User\n\n",
        "s".repeat(600),
        "i".repeat(600)
    )));
    assert!(got.contains("[... USER.md truncated: kept "), "{got}");
    assert!(!got.contains("## Operating Rules"));
    let stats = ws
        .context_stats(&PromptRequest::new("a", now()))
        .expect("stats");
    let by_name = |n: &str| stats.files.iter().find(|f| f.name == n).expect(n).clone();
    assert_eq!(by_name("SOUL.md").injected_chars, 600);
    let user = by_name("USER.md");
    assert!(
        user.truncated && user.injected_chars <= 300 && user.injected_chars > 0,
        "{user:?}"
    );
    let agents = by_name("AGENTS.md");
    assert!(
        agents.exists && agents.truncated && agents.injected_chars == 0,
        "{agents:?}"
    );
    assert_eq!(stats.total_bootstrap_chars, 1200 + user.injected_chars);
}

#[test]
fn context_stats_figures() {
    let ws = TempWorkspace::with(&[
        ("AGENTS.md", "12345"),
        ("TOOLS.md", "tools"),
        ("HEARTBEAT.md", "hb"),
    ])
    .open();
    let stats = ws
        .context_stats(&PromptRequest::new("a", now()).mode(PromptMode::Minimal))
        .expect("stats");
    let names: Vec<&str> = stats.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "AGENTS.md",
            "SOUL.md",
            "IDENTITY.md",
            "TOOLS.md",
            "HEARTBEAT.md",
            "USER.md"
        ]
    );
    assert_eq!(
        (
            stats.files[0].injected_chars,
            stats.files[0].estimated_tokens
        ),
        (5, 2)
    );
    assert_eq!(stats.files[3].injected_chars, 5);
    assert_eq!(
        (stats.files[4].exists, stats.files[4].injected_chars),
        (true, 0)
    );
    assert!(!stats.files[1].exists);
    let prompt = ws
        .system_prompt(&PromptRequest::new("a", now()).mode(PromptMode::Minimal))
        .expect("prompt");
    assert_eq!(stats.system_prompt_chars, prompt.chars().count());
    assert_eq!(
        stats.estimated_system_prompt_tokens,
        prompt.chars().count().div_ceil(4)
    );
    assert_eq!(stats.total_bootstrap_chars, 10);
    assert_eq!(stats.max_chars_per_file, 20_000);
    let json = serde_json::to_value(&stats).expect("json");
    for key in [
        "workspacePath",
        "maxCharsPerFile",
        "files",
        "totalBootstrapChars",
        "systemPromptChars",
        "estimatedSystemPromptTokens",
    ] {
        assert!(json.get(key).is_some(), "{key}");
    }
}

#[test]
fn boot_marker_lifecycle() {
    let tmp = TempWorkspace::with(&[("BOOT.md", "do the setup")]);
    let ws = tmp.open();
    let boot = ws.boot_status();
    assert_eq!(
        (boot.has_boot, boot.is_complete, boot.content.as_deref()),
        (true, false, Some("do the setup"))
    );
    assert!(!ws.health().boot_complete);
    ws.complete_boot().expect("complete");
    assert!(tmp.path().join(".boot-complete").is_file());
    let boot = ws.boot_status();
    assert_eq!(
        (boot.has_boot, boot.is_complete, boot.content),
        (true, true, None)
    );
    assert!(ws.health().boot_complete);
    assert_eq!(
        serde_json::to_value(ws.boot_status()).expect("json"),
        serde_json::json!({"hasBoot": true, "isComplete": true, "content": null})
    );
    let empty = TempWorkspace::new().open();
    let boot = empty.boot_status();
    assert_eq!(
        (boot.has_boot, boot.is_complete, boot.content),
        (false, false, None)
    );
}

#[cfg(unix)]
#[test]
fn boot_marker_symlink_is_refused_not_written_through() {
    let tmp = TempWorkspace::with(&[("BOOT.md", "do the setup")]);
    let outside = tempfile::tempdir().expect("tempdir");
    let victim = outside.path().join("victim.txt");
    std::fs::write(&victim, "precious").expect("write victim");
    std::os::unix::fs::symlink(&victim, tmp.path().join(".boot-complete")).expect("symlink");
    let ws = tmp.open();
    assert!(!ws.boot_status().is_complete, "a link is not the marker");
    let err = ws
        .complete_boot()
        .expect_err("a symlinked marker is refused");
    assert!(matches!(err, Error::BootMarker { .. }), "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "precious"
    );
    assert!(!ws.boot_status().is_complete);

    // A dangling link is refused too, and creates nothing at its target.
    let dangling = TempWorkspace::new();
    let target = outside.path().join("created-by-wombat");
    std::os::unix::fs::symlink(&target, dangling.path().join(".boot-complete")).expect("symlink");
    assert!(dangling.open().complete_boot().is_err());
    assert!(!target.exists());
}

#[test]
fn boot_marker_missing_workspace_is_its_own_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ws = Workspace::open(dir.path().join("gone"), options()).expect("open");
    let err = ws.complete_boot().expect_err("no workspace");
    assert!(matches!(err, Error::WorkspaceMissing { .. }), "{err}");
}

#[test]
fn boot_marker_completing_twice_is_fine() {
    let tmp = TempWorkspace::with(&[("BOOT.md", "setup")]);
    let ws = tmp.open();
    ws.complete_boot().expect("first");
    ws.complete_boot().expect("second");
    assert!(ws.boot_status().is_complete);
}

#[test]
fn boot_marker_in_a_state_dir_leaves_a_read_only_workspace_alone() {
    let a = TempWorkspace::with(&[("BOOT.md", "setup a")]);
    let b = TempWorkspace::with(&[("BOOT.md", "setup b")]);
    let state = tempfile::tempdir().expect("state dir");
    let state_dir = state.path().join("wombat");
    let with_state = || WorkspaceOptions {
        state_dir: Some(state_dir.clone()),
        ..options()
    };
    // A marker left in the workspace does not count once a state dir is set.
    a.write(".boot-complete", "old");
    let ws_a = a.open_with(with_state());
    let ws_b = b.open_with(with_state());
    assert!(!ws_a.boot_status().is_complete);
    assert_ne!(ws_a.boot_marker_path(), ws_b.boot_marker_path());
    assert!(ws_a.boot_marker_path().starts_with(&state_dir));

    // Nothing is written to the workspace (it may be a read-only mount;
    // permissions cannot show that here, tests may run as root).
    let listing = |p: &std::path::Path| {
        let mut names: Vec<_> = std::fs::read_dir(p)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        names
    };
    let before = listing(b.path());
    ws_b.complete_boot().expect("complete into the state dir");
    assert_eq!(listing(b.path()), before);
    assert!(ws_b.boot_status().is_complete);
    assert!(ws_b.health().boot_complete);
    assert!(!b.path().join(".boot-complete").exists());
    assert!(ws_b.boot_marker_path().is_file());
    // The other workspace sharing the state dir is not marked.
    assert!(!ws_a.boot_status().is_complete);
    ws_a.refresh_now();
    assert!(!ws_a.boot_status().is_complete);

    // A reopened handle finds the marker again (the name is stable).
    let again = b.open_with(with_state());
    assert_eq!(again.boot_marker_path(), ws_b.boot_marker_path());
    assert!(again.boot_status().is_complete);
}

#[test]
fn heartbeat_accessor() {
    let ws = TempWorkspace::with(&[("HEARTBEAT.md", "\n- check tasks\n")]).open();
    assert_eq!(ws.heartbeat().as_deref(), Some("- check tasks"));
    assert!(!full(&ws, "a").contains("check tasks"));
    assert_eq!(TempWorkspace::new().open().heartbeat(), None);
}

#[test]
fn refresh_now_sees_edits_additions_and_deletions() {
    let tmp = TempWorkspace::with(&[("SOUL.md", "first"), ("memory/2026-02-02.md", "log")]);
    let ws = tmp.open();
    // Files written just now are re-read on each scan until they are 2 s old.
    assert!(ws.refresh_now(), "young files are racy");
    tmp.age_all();
    ws.refresh_now();
    assert!(!ws.refresh_now(), "nothing changed");
    // Same length, same (old) mtime would be invisible; a fresh mtime is not.
    tmp.write("SOUL.md", "FIRST");
    assert!(ws.refresh_now());
    assert!(full(&ws, "a").starts_with("FIRST"));
    tmp.write("SOUL.md", "second version");
    tmp.write("souls/pm.md", "pm");
    assert!(ws.refresh_now());
    assert!(full(&ws, "a").starts_with("second version"));
    assert!(full(&ws, "pm").starts_with("pm"));
    std::fs::remove_file(tmp.path().join("souls/pm.md")).expect("rm");
    std::fs::remove_file(tmp.path().join("memory/2026-02-02.md")).expect("rm");
    assert!(ws.refresh_now());
    assert!(full(&ws, "pm").starts_with("second version"));
    assert!(!full(&ws, "pm").contains("### Today"));
}

#[test]
fn remembered_prompts_follow_snapshot_role_mode_zone_and_minute() {
    // The workspace keeps its last few prompts: each input that changes a
    // prompt must give the new one, whatever was asked for before.
    let tmp = TempWorkspace::with(&[
        ("SOUL.md", "default soul"),
        ("souls/pm.md", "pm soul"),
        ("AGENTS.md", "rules"),
        ("memory/2026-02-02.md", "today text"),
    ]);
    let ws = tmp.open();
    tmp.age_all();
    ws.refresh_now();
    let agent = full(&ws, "agent");
    assert!(
        agent.starts_with("default soul") && agent.ends_with(TIME_UTC),
        "{agent}"
    );
    assert_eq!(full(&ws, "agent"), agent);
    assert!(full(&ws, "pm").starts_with("pm soul"));
    let minimal = prompt(
        &ws,
        PromptRequest::new("agent", now()).mode(PromptMode::Minimal),
    );
    assert_eq!(
        minimal,
        format!("## Operating Rules\n\nrules\n\n{TIME_UTC}")
    );
    let tokyo = prompt(
        &ws,
        PromptRequest::new("agent", now()).timezone("Asia/Tokyo"),
    );
    assert!(
        tokyo.ends_with("- **Time:** 12:15 PM\n- **Timezone:** Asia/Tokyo"),
        "{tokyo}"
    );
    let next_minute = now() + jiff::SignedDuration::from_secs(60);
    let later = prompt(&ws, PromptRequest::new("agent", next_minute));
    assert!(later.contains("- **Time:** 3:16 AM"), "{later}");
    // The next day's prompt has no "today" of the day before.
    let next_day = now() + jiff::SignedDuration::from_hours(24);
    let tomorrow = prompt(&ws, PromptRequest::new("agent", next_day));
    assert!(
        tomorrow.contains("### Yesterday (2026-02-02)\n\ntoday text"),
        "{tomorrow}"
    );
    // More prompts than are kept, then the first one again.
    for i in 0..20 {
        assert!(full(&ws, &format!("role{i}")).starts_with("default soul"));
    }
    assert_eq!(full(&ws, "agent"), agent);
    // An override is never remembered, nor served for a request without one.
    let custom = prompt(
        &ws,
        PromptRequest::new("agent", now()).system_prompt("Custom."),
    );
    assert_eq!(custom, format!("Custom.\n\n{TIME_UTC}"));
    assert_eq!(full(&ws, "agent"), agent);
    // A new snapshot.
    tmp.write("SOUL.md", "edited soul");
    assert!(ws.refresh_now());
    assert!(full(&ws, "agent").starts_with("edited soul"));
    assert!(full(&ws, "pm").starts_with("pm soul"));
}

#[test]
fn background_refresh_picks_up_edits() {
    let tmp = TempWorkspace::with(&[("SOUL.md", "before")]);
    let ws = tmp.open_with(WorkspaceOptions {
        refresh_interval: Duration::from_millis(50),
        ..options()
    });
    assert!(full(&ws, "a").starts_with("before"));
    tmp.write("SOUL.md", "after the edit");
    // Generous bound for a loaded CI machine; normally this takes ~50 ms.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !full(&ws, "a").starts_with("after the edit") {
        assert!(Instant::now() < deadline, "edit not seen within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Clones share the snapshot; dropping every handle stops the thread (no hang).
    let clone = ws.clone();
    drop(ws);
    assert!(full(&clone, "a").starts_with("after the edit"));
    drop(clone);
}

#[test]
fn workspace_handles_are_send_sync_and_cheap_to_clone() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Workspace>();
}
