//! OpenClaw `SKILL.md` skills: the parsed form, gating, and the prompt section.
//!
//! Parsing ([`parse_skill`]) and gating ([`gate`]) are pure; reading the
//! `skills/` folder from disk lives in the snapshot loader, not here.

mod gate;
mod parse;

pub use gate::{Gating, SkillEnv, current_platform, gate};
pub use parse::{ParsedSkill, parse_skill};

use crate::text::char_len;

/// Metadata namespaces holding the gating object, in priority order.
pub const NAMESPACES: [&str; 4] = ["openclaw", "clawdbot", "clawdis", "moltbot"];

/// The namespaces Wombat honours but OpenClaw (2026.9) ignores; a skill gated
/// from one of them carries a diagnostic saying so.
pub const OPENCLAW_IGNORED_NAMESPACES: [&str; 2] = ["clawdis", "moltbot"];

/// The order in which OpenClaw scans skill folders: its discovery sorts them
/// with JavaScript's `localeCompare` (ICU root collation) and, when two skills
/// share a name, keeps the one scanned last.
///
/// This approximates that collation for the names skill folders use: case is
/// ignored at first (`a` < `B` < `c`), punctuation sorts before digits and
/// digits before letters (`_` < `-` < `.` < `0` < `a`), and only an otherwise
/// equal pair is ordered by case (lower first) and then by bytes, so the order
/// is total.
pub fn openclaw_folder_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn primary(c: char) -> (u8, u32) {
        // CLDR root order of the ASCII punctuation and symbols.
        const PUNCTUATION: &str = "_-,;:!?.'\"()[]{}@*/\\&#%`^+<=>|~$";
        if c.is_whitespace() {
            (0, c as u32)
        } else if let Some(rank) = PUNCTUATION.find(c) {
            (1, rank as u32)
        } else if c.is_ascii_digit() {
            (2, c as u32)
        } else if c.is_alphabetic() {
            (3, c.to_lowercase().next().map_or(c as u32, |l| l as u32))
        } else {
            (4, c as u32)
        }
    }
    a.chars()
        .map(primary)
        .cmp(b.chars().map(primary))
        .then_with(|| {
            // Lowercase before uppercase at the first difference in case.
            a.chars()
                .map(char::is_uppercase)
                .cmp(b.chars().map(char::is_uppercase))
        })
        .then_with(|| a.cmp(b))
}

/// One loaded skill.
#[derive(Debug, Clone, PartialEq)]
pub struct Skill {
    /// `name` from the front matter, else the folder name.
    pub name: String,
    /// `description` from the front matter (required).
    pub description: String,
    /// `homepage`, if given.
    pub homepage: Option<String>,
    /// The folder name under `skills/`.
    pub folder: String,
    /// Where the file is (`skills/<folder>/SKILL.md` under the workspace); empty when parsed from text.
    pub location: String,
    /// The Markdown after the front matter, trimmed.
    pub instructions: String,
    /// The parsed `metadata` (JSON `null` when absent or unreadable).
    pub metadata: serde_json::Value,
    /// Which namespace the gating object came from, if any.
    pub namespace: Option<String>,
    /// The gating fields of that namespace object.
    pub gating: Gating,
}

impl Skill {
    fn heading(&self) -> String {
        match &self.gating.emoji {
            Some(emoji) => format!("### {emoji} {}", self.name),
            None => format!("### {}", self.name),
        }
    }
}

/// Longest description kept in the compact listing, in characters.
const COMPACT_DESCRIPTION_CHARS: usize = 200;
const SEPARATOR: &str = "\n\n---\n\n";
const HEADER: &str = "## Skills\n\n";

fn compact_line(skill: &Skill) -> String {
    let mut description: String = skill
        .description
        .chars()
        .take(COMPACT_DESCRIPTION_CHARS)
        .collect();
    if description.len() < skill.description.len() {
        description.push('…');
    }
    format!("- **{}**: {}", skill.name, description.replace('\n', " "))
}

/// Renders the `## Skills` section for the enabled skills, or `None` when
/// there are none.
///
/// The 0.1.0 layout is `## Skills\n\n` then `### <emoji ><name>\n\n<instructions>`
/// per skill, separated by `\n\n---\n\n`. When that exceeds `budget`
/// characters, the first skills (in order) stay in full while a compact listing
/// (`- **name**: description`) covers the rest, under a `### More skills`
/// heading that says how many were included in full; if even the listing does
/// not fit, its tail is replaced by a count of the omitted skills.
pub(crate) fn render_section(skills: &[&Skill], budget: usize) -> Option<String> {
    if skills.is_empty() {
        return None;
    }
    let full: Vec<String> = skills
        .iter()
        .map(|s| {
            if s.instructions.is_empty() {
                s.heading()
            } else {
                format!("{}\n\n{}", s.heading(), s.instructions)
            }
        })
        .collect();
    let sep = char_len(SEPARATOR);
    let all_full =
        char_len(HEADER) + full.iter().map(|f| char_len(f)).sum::<usize>() + sep * (full.len() - 1);
    if all_full <= budget {
        return Some(format!("{HEADER}{}", full.join(SEPARATOR)));
    }

    let compact: Vec<String> = skills.iter().map(|s| compact_line(s)).collect();
    let total = skills.len();
    let more_heading = |included: usize| {
        format!(
            "### More skills\n\n{} of {total} skills are included in full above; to stay within the skills budget the other {} are only listed:",
            included,
            total - included
        )
    };
    // Largest k such that k skills in full plus the compact listing of the rest fit.
    let mut prefix = vec![0usize; total + 1];
    for (i, f) in full.iter().enumerate() {
        prefix[i + 1] = prefix[i] + char_len(f) + sep;
    }
    let mut suffix = vec![0usize; total + 1];
    for i in (0..total).rev() {
        suffix[i] = suffix[i + 1] + char_len(&compact[i]) + 1;
    }
    let fits = |k: usize| {
        char_len(HEADER) + prefix[k] + char_len(&more_heading(k)) + 1 + suffix[k] <= budget
    };
    let included = (0..total).rev().find(|&k| fits(k)).unwrap_or(0);

    let mut out = String::from(HEADER);
    for f in &full[..included] {
        out.push_str(f);
        out.push_str(SEPARATOR);
    }
    out.push_str(&more_heading(included));
    out.push('\n');
    let mut used = char_len(&out);
    for (i, line) in compact[included..].iter().enumerate() {
        let remaining = total - included - i;
        let tail = format!("- …and {remaining} more");
        let is_last = remaining == 1;
        let needed = char_len(line) + 1 + if is_last { 0 } else { char_len(&tail) + 1 };
        if used + needed > budget {
            out.push('\n');
            out.push_str(&tail);
            return Some(out);
        }
        out.push('\n');
        out.push_str(line);
        used += char_len(line) + 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skill(name: &str, emoji: Option<&str>, body: &str) -> Skill {
        Skill {
            name: name.to_owned(),
            description: format!("{name} description"),
            homepage: None,
            folder: name.to_owned(),
            location: String::new(),
            instructions: body.to_owned(),
            metadata: serde_json::Value::Null,
            namespace: None,
            gating: Gating {
                emoji: emoji.map(str::to_owned),
                ..Gating::default()
            },
        }
    }

    #[test]
    fn folder_order_follows_locale_compare() {
        use std::cmp::Ordering::Less;
        let sorted = [
            "a_b",
            "a-b",
            "a.b",
            "a0",
            "a9",
            "aa",
            "Ab",
            "ac",
            "doubleword",
            "doubleword-api",
            "Zeta",
        ];
        for pair in sorted.windows(2) {
            assert_eq!(
                openclaw_folder_order(pair[0], pair[1]),
                Less,
                "{} < {}",
                pair[0],
                pair[1]
            );
        }
        assert_eq!(openclaw_folder_order("ab", "Ab"), Less);
        assert_eq!(
            openclaw_folder_order("same", "same"),
            std::cmp::Ordering::Equal
        );
    }

    #[test]
    fn full_layout() {
        let a = skill("alpha", Some("🌤️"), "Use alpha.");
        let b = skill("beta", None, "Use beta.");
        assert_eq!(
            render_section(&[&a, &b], 30_000).as_deref(),
            Some("## Skills\n\n### 🌤️ alpha\n\nUse alpha.\n\n---\n\n### beta\n\nUse beta.")
        );
        assert_eq!(render_section(&[], 30_000), None);
    }

    #[test]
    fn over_budget_falls_back_to_compact_listing() {
        let a = skill("alpha", None, &"a".repeat(100));
        let b = skill("beta", None, &"b".repeat(100));
        let c = skill("gamma", None, &"c".repeat(100));
        let out = render_section(&[&a, &b, &c], 350).expect("section");
        println!("{out}");
        assert!(char_len(&out) <= 350, "{}", char_len(&out));
        assert!(out.contains("### alpha\n\naaaa"));
        assert!(!out.contains("bbbb"));
        assert!(out.contains("1 of 3 skills are included in full"));
        assert!(out.contains("- **beta**: beta description\n- **gamma**: gamma description"));

        let out = render_section(&[&a, &b, &c], 200).expect("section");
        assert!(out.contains("0 of 3 skills are included in full"), "{out}");
        assert!(char_len(&out) <= 200);

        let out = render_section(&[&a, &b, &c], 150).expect("section");
        assert!(out.contains("- …and"), "{out}");
    }
}
