//! The examples of `docs/WORKSPACE.md` are what the code produces: the time
//! context block, the truncation marker, and the sample `SKILL.md`.

use wombat_workspace::{PromptMode, PromptRequest, SkillEnv, WorkspaceOptions};

use crate::support::{TempWorkspace, now, options};

/// The fenced blocks of `docs/WORKSPACE.md` as `(language, body)`.
fn blocks() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/WORKSPACE.md");
    let text = std::fs::read_to_string(path).expect("docs/WORKSPACE.md");
    let mut out = Vec::new();
    // (language, body, the fence's indentation).
    let mut open: Option<(String, String, usize)> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(lang) = trimmed.strip_prefix("```") {
            match open.take() {
                Some((lang, body, _)) => out.push((lang, body)),
                None => {
                    let indent = line.len() - line.trim_start().len();
                    open = Some((lang.to_owned(), String::new(), indent));
                }
            }
            continue;
        }
        if let Some((_, body, indent)) = open.as_mut() {
            // A block under a list item is indented with its fence.
            body.push_str(line.get(*indent..).unwrap_or(""));
            body.push('\n');
        }
    }
    out
}

fn block_with(needle: &str) -> String {
    blocks()
        .into_iter()
        .find(|(_, body)| body.contains(needle))
        .unwrap_or_else(|| panic!("WORKSPACE.md has a block with {needle:?}"))
        .1
}

#[test]
fn time_context_example_is_what_the_prompt_ends_with() {
    let shown = block_with("## Current Time");
    let ws = TempWorkspace::with(&[("AGENTS.md", "rules")]).open();
    let prompt = ws
        .system_prompt(&PromptRequest::new("agent", now()).timezone("America/Los_Angeles"))
        .expect("prompt");
    assert!(
        prompt.ends_with(shown.trim_end()),
        "WORKSPACE.md shows\n{shown}\nthe prompt ends\n{prompt}"
    );
}

/// A number written with thousands separators, e.g. `14,000`.
fn number_before(text: &str, word: &str) -> usize {
    let end = text
        .find(word)
        .unwrap_or_else(|| panic!("{word:?} in {text}"));
    let digits: String = text[..end]
        .trim_end()
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().expect("a number")
}

#[test]
fn truncation_example_is_what_a_long_file_becomes() {
    let shown = block_with("truncated: kept");
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 3, "{shown}");
    let (head, marker, tail) = (lines[0], lines[1], lines[2]);
    let head_chars = number_before(head, "characters");
    let tail_chars = number_before(tail, "characters");
    let total = number_before(marker, "characters");
    // A file of the shown size, with the default limit.
    let text: String = (0..total)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let ws = TempWorkspace::with(&[("AGENTS.md", &text)]).open_with(WorkspaceOptions {
        include_time_context: false,
        ..options()
    });
    let prompt = ws
        .system_prompt(&PromptRequest::new("agent", now()).mode(PromptMode::Minimal))
        .expect("prompt");
    let body = prompt
        .strip_prefix("## Operating Rules\n\n")
        .expect("the rules heading");
    let got: Vec<&str> = body.lines().collect();
    assert_eq!(got.len(), 3, "head, marker, tail");
    assert_eq!(got[1], marker, "the marker line");
    assert_eq!(
        got[0],
        &text[..head_chars],
        "the first {head_chars} characters"
    );
    assert_eq!(
        got[2],
        &text[total - tail_chars..],
        "the last {tail_chars} characters"
    );
}

#[test]
fn sample_skill_loads_and_is_gated_on_its_env_var() {
    let sample = block_with("name: weather");
    let ws = TempWorkspace::with(&[("skills/weather/SKILL.md", &sample)]);
    let without = ws.open().skills_report();
    assert_eq!(without.total, 1, "{without:?}");
    let entry = &without.skills[0];
    assert_eq!(entry.name, "weather");
    assert_eq!(
        entry.description,
        "Current conditions and a three-day forecast for a city."
    );
    assert_eq!(entry.metadata["openclaw"]["emoji"], "🌦️");
    assert!(!entry.enabled);
    assert!(
        entry
            .gate_reason
            .as_deref()
            .is_some_and(|r| r.contains("WEATHER_API_KEY")),
        "{entry:?}"
    );

    let with = ws.open_with(WorkspaceOptions {
        skill_env: SkillEnv::new("linux").with_var("WEATHER_API_KEY", "k"),
        ..options()
    });
    assert_eq!(with.skills_report().enabled, 1);
    let prompt = with
        .system_prompt(&PromptRequest::new("agent", now()))
        .expect("prompt");
    assert!(
        prompt.contains(
            // `### <emoji> <name>`, as the skills-section rules say.
            "## Skills\n\n### 🌦️ weather\n\n# Weather\nUse this when a plan depends on the weather..."
        ),
        "{prompt}"
    );
}
