//! Serialisable reports for the daemon's `GET /context`, `GET /skills`,
//! `GET /boot` and `GET /health` bodies (wire contracts: field names are exact).
//!
//! Plain data only; the workspace fills them in.

use serde::Serialize;

/// A problem found while loading the workspace (a file that could not be
/// read, a skill that could not be loaded or only partly understood).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The file concerned, relative to the workspace (for example `skills/foo/SKILL.md`).
    pub path: String,
    /// What is wrong, in lowercase prose.
    pub message: String,
}

/// One bootstrap file in [`ContextStats`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileStats {
    /// File name relative to the workspace (`AGENTS.md`, `souls/pm.md`, ...).
    pub name: String,
    /// Whether the file exists.
    pub exists: bool,
    /// Characters in the file (Unicode scalar values).
    pub raw_chars: usize,
    /// Characters of it injected into the prompt for this request (0 when not injected).
    pub injected_chars: usize,
    /// Whether the per-file limit or the total budget cut it.
    pub truncated: bool,
    /// `ceil(injectedChars / 4)`.
    pub estimated_tokens: usize,
}

/// The `GET /context` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextStats {
    /// The workspace folder.
    pub workspace_path: String,
    /// The per-file character limit.
    pub max_chars_per_file: usize,
    /// AGENTS.md, the soul (`souls/<role>.md` or `SOUL.md`), IDENTITY.md, TOOLS.md, HEARTBEAT.md, USER.md.
    pub files: Vec<FileStats>,
    /// Sum of `injectedChars` over `files`.
    pub total_bootstrap_chars: usize,
    /// Characters in the whole system prompt.
    pub system_prompt_chars: usize,
    /// `ceil(systemPromptChars / 4)`.
    pub estimated_system_prompt_tokens: usize,
}

/// One skill in [`SkillsReport`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SkillReportEntry {
    /// The skill name.
    pub name: String,
    /// The skill description.
    pub description: String,
    /// Whether gating enabled it.
    pub enabled: bool,
    /// Why it is disabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate_reason: Option<String>,
    /// Path of its `SKILL.md`.
    pub location: String,
    /// The parsed `metadata` (`null` when absent).
    pub metadata: serde_json::Value,
}

/// The `GET /skills` body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SkillsReport {
    /// How many skills are enabled.
    pub enabled: usize,
    /// How many skills loaded.
    pub total: usize,
    /// Every loaded skill, enabled or not, sorted by folder.
    pub skills: Vec<SkillReportEntry>,
    /// Problems met while loading `skills/` (additive field).
    pub diagnostics: Vec<Diagnostic>,
}

/// The `GET /boot` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BootStatus {
    /// Whether `BOOT.md` exists.
    pub has_boot: bool,
    /// Whether the `.boot-complete` marker exists.
    pub is_complete: bool,
    /// The `BOOT.md` text, `null` once complete or when absent.
    pub content: Option<String>,
}

/// The `workspace` part of the `GET /health` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceHealth {
    /// The workspace folder.
    pub path: String,
    /// `ok` or `missing`.
    pub status: &'static str,
    /// The per-file character limit.
    pub max_chars_per_file: usize,
    /// Whether the `.boot-complete` marker exists.
    pub boot_complete: bool,
}
