//! Wombat's workspace: reads a folder of Markdown files (souls, operating
//! rules, identity, memory, `BOOT.md`, OpenClaw `SKILL.md` skills) and builds
//! system prompts from it, plus the reports behind `GET /context`,
//! `GET /skills`, `GET /boot` and the workspace part of `GET /health`.
//!
//! All file I/O of Wombat lives here, and it is read-only except for the
//! `.boot-complete` marker. A [`Workspace`] keeps an immutable snapshot that
//! a background thread refreshes when files change (about once a second), so
//! [`Workspace::system_prompt`] never touches the disk. This crate does no
//! network I/O, runs no async runtime and reads no environment variables
//! (except in the explicit [`SkillEnv::from_process`]).
//!
//! ```no_run
//! use wombat_workspace::{PromptRequest, SkillEnv, Workspace, WorkspaceOptions};
//!
//! # fn main() -> wombat_workspace::Result<()> {
//! let options = WorkspaceOptions { skill_env: SkillEnv::from_process(), ..Default::default() };
//! let workspace = Workspace::open("./workspace", options)?;
//! let prompt = workspace.system_prompt(&PromptRequest::new("pm", jiff::Timestamp::now()).timezone("Europe/Paris"))?;
//! # let _ = prompt;
//! # Ok(())
//! # }
//! ```

mod dto;
mod error;
mod prompt;
pub mod skills;
mod snapshot;
mod text;
mod time;
mod workspace;

pub use dto::{
    BootStatus, ContextStats, Diagnostic, FileStats, SkillReportEntry, SkillsReport,
    WorkspaceHealth,
};
pub use error::{Error, Result};
pub use prompt::{MIN_BUDGET_SLICE, PromptMode};
pub use skills::{Skill, SkillEnv, parse_skill};
pub use text::{HEAD_PERCENT, TAIL_PERCENT, truncate_head_tail};
pub use workspace::{
    DEFAULT_MAX_CHARS_PER_FILE, DEFAULT_REFRESH_INTERVAL, DEFAULT_SKILLS_BUDGET_CHARS,
    DEFAULT_TOTAL_BUDGET_CHARS, PromptRequest, SkillCounts, Workspace, WorkspaceOptions,
};
