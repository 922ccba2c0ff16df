//! System-prompt assembly from a [`Snapshot`]: the 0.1.0 layout, the total
//! bootstrap budget, the fallback prompt and the time block.
//!
//! No I/O: everything comes from the snapshot and the request.

use std::borrow::Cow;

use crate::snapshot::{AGENTS, FileText, IDENTITY, MEMORY, SOUL, Snapshot, TOOLS, USER};
use crate::text::{char_len, truncate_head_tail};
use crate::time::Clock;

/// Which parts of the workspace go into the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PromptMode {
    /// Soul, identity, user, operating rules, skills, memory, time.
    #[default]
    Full,
    /// Operating rules and tools only, then time (for sub-agents and cheap calls).
    Minimal,
}

/// A file cut by the total budget gets at least this many characters; with
/// less room left it is dropped instead (a few hundred characters of a head
/// and tail would be noise).
pub const MIN_BUDGET_SLICE: usize = 256;

/// What one bootstrap file contributed to a prompt.
#[derive(Debug, Clone)]
pub(crate) struct Injected {
    pub(crate) name: Cow<'static, str>,
    pub(crate) chars: usize,
    pub(crate) truncated: bool,
}

/// Inputs of one assembly, already validated.
pub(crate) struct Assembly<'a> {
    pub(crate) role: &'a str,
    pub(crate) mode: PromptMode,
    /// The request's local date and time block.
    pub(crate) clock: &'a Clock,
    pub(crate) override_prompt: Option<&'a str>,
    pub(crate) include_time: bool,
    pub(crate) total_budget: usize,
}

/// The soul file for `role` and its display name.
pub(crate) fn soul_for<'s>(
    snapshot: &'s Snapshot,
    role: &str,
) -> (Cow<'static, str>, Option<&'s FileText>) {
    match snapshot.souls.get(role) {
        Some(file) => (Cow::Owned(format!("souls/{role}.md")), Some(file)),
        None => (Cow::Borrowed(SOUL), snapshot.soul.as_ref()),
    }
}

struct Builder {
    out: String,
    remaining: usize,
    injected: Vec<Injected>,
}

impl Builder {
    fn push_part(&mut self, part: &str) {
        if !self.out.is_empty() {
            self.out.push_str("\n\n");
        }
        self.out.push_str(part);
    }

    /// Adds a file (with an optional heading) under the total budget.
    fn push_file(
        &mut self,
        heading: Option<&str>,
        name: Cow<'static, str>,
        file: Option<&FileText>,
    ) {
        let Some(file) = file.filter(|f| f.chars > 0) else {
            return;
        };
        let (text, chars, truncated): (Cow<'_, str>, usize, bool) = if file.chars <= self.remaining
        {
            (Cow::Borrowed(&*file.text), file.chars, file.truncated)
        } else if self.remaining >= MIN_BUDGET_SLICE {
            let cut = truncate_head_tail(&name, &file.text, self.remaining)
                .unwrap_or_else(|| file.text.to_string());
            let chars = char_len(&cut);
            (Cow::Owned(cut), chars, true)
        } else {
            self.remaining = 0;
            self.injected.push(Injected {
                name,
                chars: 0,
                truncated: true,
            });
            return;
        };
        self.remaining = self.remaining.saturating_sub(chars);
        if !self.out.is_empty() {
            self.out.push_str("\n\n");
        }
        if let Some(heading) = heading {
            self.out.push_str(heading);
            self.out.push_str("\n\n");
        }
        self.out.push_str(&text);
        self.injected.push(Injected {
            name,
            chars,
            truncated,
        });
    }
}

/// Builds the system prompt; also returns what each bootstrap file contributed.
pub(crate) fn assemble(snapshot: &Snapshot, a: &Assembly<'_>) -> (String, Vec<Injected>) {
    let mut b = Builder {
        out: String::with_capacity(8 * 1024),
        remaining: a.total_budget,
        injected: Vec::new(),
    };
    match a.override_prompt {
        Some(text) => b.push_part(text),
        None => {
            match a.mode {
                PromptMode::Full => full(snapshot, a, &mut b),
                PromptMode::Minimal => {
                    b.push_file(
                        Some("## Operating Rules"),
                        Cow::Borrowed(AGENTS),
                        snapshot.agents.as_ref(),
                    );
                    b.push_file(
                        Some("## Tools"),
                        Cow::Borrowed(TOOLS),
                        snapshot.tools.as_ref(),
                    );
                }
            }
            if b.out.is_empty() {
                let minimal = if a.mode == PromptMode::Minimal {
                    " (minimal context)"
                } else {
                    ""
                };
                b.out = format!(
                    "You are a helpful AI assistant (role: {}){minimal}. Follow instructions carefully and provide accurate, helpful responses.",
                    a.role
                );
            }
        }
    }
    if a.include_time {
        b.push_part(&a.clock.block);
    }
    (b.out, b.injected)
}

fn full(snapshot: &Snapshot, a: &Assembly<'_>, b: &mut Builder) {
    let (soul_name, soul) = soul_for(snapshot, a.role);
    b.push_file(None, soul_name, soul);
    b.push_file(
        Some("## Identity"),
        Cow::Borrowed(IDENTITY),
        snapshot.identity.as_ref(),
    );
    b.push_file(Some("## User"), Cow::Borrowed(USER), snapshot.user.as_ref());
    b.push_file(
        Some("## Operating Rules"),
        Cow::Borrowed(AGENTS),
        snapshot.agents.as_ref(),
    );
    if let Some(section) = &snapshot.skills_section {
        b.push_part(section);
    }
    b.push_file(
        Some("### Long-term Memory"),
        Cow::Borrowed(MEMORY),
        snapshot.memory.as_ref(),
    );
    let today = a.clock.date;
    if let Ok(yesterday) = today.yesterday() {
        if let Some(file) = snapshot.daily.get(&yesterday) {
            b.push_file(
                Some(&format!("### Yesterday ({yesterday})")),
                Cow::Owned(format!("memory/{yesterday}.md")),
                Some(file),
            );
        }
    }
    if let Some(file) = snapshot.daily.get(&today) {
        b.push_file(
            Some(&format!("### Today ({today})")),
            Cow::Owned(format!("memory/{today}.md")),
            Some(file),
        );
    }
}
