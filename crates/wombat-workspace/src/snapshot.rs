//! Reading a workspace folder into an immutable [`Snapshot`], and the cheap
//! stat fingerprint that tells when to read it again.
//!
//! This is the only module that touches the disk (besides
//! `Workspace::complete_boot`). Unchanged files are reused from a cache keyed
//! by modification time and length, so a reload after one edit reads one file.
//!
//! Every `memory/YYYY-MM-DD.md` is held in the snapshot (which days are
//! "today" and "yesterday" depends on each request's zone and clock). Skill
//! gating runs at load time, so a change to `PATH` or the environment is seen
//! only at the next reload; file changes are what trigger reloads.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jiff::civil::Date;
use serde_json::Value;

use crate::dto::Diagnostic;
use crate::skills::{
    ParsedSkill, Skill, SkillEnv, gate, openclaw_folder_order, parse_skill, render_section,
};
use crate::text::{char_len, truncate_head_tail};

/// Root files the workspace knows about.
pub(crate) const AGENTS: &str = "AGENTS.md";
pub(crate) const SOUL: &str = "SOUL.md";
pub(crate) const IDENTITY: &str = "IDENTITY.md";
pub(crate) const USER: &str = "USER.md";
pub(crate) const TOOLS: &str = "TOOLS.md";
pub(crate) const HEARTBEAT: &str = "HEARTBEAT.md";
pub(crate) const BOOT: &str = "BOOT.md";
pub(crate) const MEMORY: &str = "MEMORY.md";
/// The boot marker's name in the workspace (without a state directory).
pub(crate) const BOOT_MARKER: &str = ".boot-complete";
const ROOT_FILES: [&str; 8] = [AGENTS, SOUL, IDENTITY, USER, TOOLS, HEARTBEAT, BOOT, MEMORY];

/// `SKILL.md` files larger than this are reported and skipped.
const MAX_SKILL_BYTES: u64 = 1024 * 1024;

/// A file younger than this at scan time is "racy": an edit in the same
/// mtime tick with the same length would be invisible to the stamp, so racy
/// files are re-read on every scan until they age out (git's racy-clean trick).
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// Modification time (ns since the epoch) and length of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Stamp {
    modified_ns: u128,
    len: u64,
    racy: bool,
}

fn stamp(path: &Path, scanned: SystemTime) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let modified = meta.modified().ok();
    let modified_ns = modified
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    // A clock-skewed future mtime also counts as racy.
    let racy = modified.is_none_or(|m| {
        scanned
            .duration_since(m)
            .map_or(true, |age| age < RACY_WINDOW)
    });
    Some(Stamp {
        modified_ns,
        len: meta.len(),
        racy,
    })
}

/// What a stat walk of the workspace found: every known file with its stamp.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    exists: bool,
    root: Vec<(&'static str, Option<Stamp>)>,
    souls: Vec<(String, Stamp)>,
    memory: Vec<(Date, String, Stamp)>,
    skills: Vec<(String, Option<Stamp>)>,
    /// The boot marker (in the workspace or the state directory).
    marker: Option<Stamp>,
    /// When the scan ran (ns since the epoch).
    scanned_ns: u128,
}

impl Listing {
    /// Stats the known files and the boot `marker`, and lists `souls/`,
    /// `memory/` and `skills/`.
    pub(crate) fn scan(root: &Path, marker: &Path) -> Self {
        if !root.is_dir() {
            return Self::default();
        }
        let scanned = SystemTime::now();
        let stamp = |path: &Path| stamp(path, scanned);
        let root_files = ROOT_FILES
            .iter()
            .map(|name| (*name, stamp(&root.join(name))))
            .collect();
        let mut souls: Vec<(String, Stamp)> = dir_names(&root.join("souls"))
            .into_iter()
            .filter_map(|name| {
                let role = name.strip_suffix(".md")?;
                wombat_core::is_valid_role(role).then_some(())?;
                let st = stamp(&root.join("souls").join(&name))?;
                Some((role.to_owned(), st))
            })
            .collect();
        souls.sort();
        let mut memory: Vec<(Date, String, Stamp)> = dir_names(&root.join("memory"))
            .into_iter()
            .filter_map(|name| {
                let stem = name.strip_suffix(".md")?;
                // Only canonical YYYY-MM-DD names: jiff would accept other spellings.
                if stem.len() != 10 {
                    return None;
                }
                let date: Date = stem.parse().ok()?;
                let st = stamp(&root.join("memory").join(&name))?;
                Some((date, name, st))
            })
            .collect();
        memory.sort();
        let skills_dir = root.join("skills");
        let mut skills: Vec<(String, Option<Stamp>)> = dir_names(&skills_dir)
            .into_iter()
            .filter(|name| !name.starts_with('.') && skills_dir.join(name).is_dir())
            .map(|name| {
                let st = stamp(&skills_dir.join(&name).join("SKILL.md"));
                (name, st)
            })
            .collect();
        skills.sort();
        Self {
            exists: true,
            root: root_files,
            souls,
            memory,
            skills,
            // A link in the marker's place does not count: it is never
            // followed, when reading or when writing (see `complete_boot`).
            marker: std::fs::symlink_metadata(marker)
                .is_ok_and(|m| m.is_file())
                .then(|| stamp(marker))
                .flatten(),
            scanned_ns: scanned
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        }
    }

    fn any_racy(&self) -> bool {
        self.root.iter().any(|(_, st)| st.is_some_and(|s| s.racy))
            || self.souls.iter().any(|(_, st)| st.racy)
            || self.memory.iter().any(|(_, _, st)| st.racy)
            || self.skills.iter().any(|(_, st)| st.is_some_and(|s| s.racy))
    }

    /// A hash of everything the listing saw.
    pub(crate) fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.exists.hash(&mut h);
        self.root.hash(&mut h);
        self.souls.hash(&mut h);
        for (date, name, st) in &self.memory {
            date.to_string().hash(&mut h);
            name.hash(&mut h);
            st.hash(&mut h);
        }
        self.skills.hash(&mut h);
        self.marker.hash(&mut h);
        // While a file is racy, every scan looks new, so it is re-read.
        if self.any_racy() {
            self.scanned_ns.hash(&mut h);
        }
        h.finish()
    }

    fn root_stamp(&self, name: &str) -> Option<Stamp> {
        self.root
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, st)| *st)
    }
}

/// UTF-8 file names in `dir` (none when it does not exist).
fn dir_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect()
}

/// One bootstrap file, trimmed and cut to the per-file limit.
#[derive(Debug, Clone)]
pub(crate) struct FileText {
    /// Characters in the file as read (after BOM removal and CRLF folding).
    pub(crate) raw_chars: usize,
    /// The trimmed, per-file-truncated text.
    pub(crate) text: Arc<str>,
    /// `char_len(text)`.
    pub(crate) chars: usize,
    /// Whether the per-file limit cut it.
    pub(crate) truncated: bool,
}

impl FileText {
    fn new(name: &str, raw: &str, max_chars: usize) -> Self {
        let trimmed = raw.trim();
        let (text, truncated) = match truncate_head_tail(name, trimmed, max_chars) {
            Some(cut) => (cut, true),
            None => (trimmed.to_owned(), false),
        };
        Self {
            raw_chars: char_len(raw),
            chars: char_len(&text),
            text: text.into(),
            truncated,
        }
    }
}

/// A skill with its gating outcome.
#[derive(Debug, Clone)]
pub(crate) struct GatedSkill {
    pub(crate) skill: Skill,
    pub(crate) gate: Result<(), String>,
}

/// Everything read from the workspace at one moment. Immutable; the hot path
/// only ever reads one of these.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) exists: bool,
    pub(crate) fingerprint: u64,
    pub(crate) agents: Option<FileText>,
    pub(crate) soul: Option<FileText>,
    pub(crate) identity: Option<FileText>,
    pub(crate) user: Option<FileText>,
    pub(crate) tools: Option<FileText>,
    pub(crate) heartbeat: Option<FileText>,
    pub(crate) boot: Option<FileText>,
    pub(crate) boot_complete: bool,
    pub(crate) memory: Option<FileText>,
    pub(crate) souls: HashMap<String, FileText>,
    pub(crate) daily: BTreeMap<Date, FileText>,
    pub(crate) skills: Vec<GatedSkill>,
    /// The pre-rendered `## Skills` section (enabled skills, within the skills budget).
    pub(crate) skills_section: Option<Arc<str>>,
    pub(crate) diagnostics: Vec<Diagnostic>,
}

/// Settings the loader needs.
pub(crate) struct LoadSettings<'a> {
    pub(crate) max_chars_per_file: usize,
    pub(crate) skills_budget_chars: usize,
    pub(crate) skill_env: &'a SkillEnv,
    pub(crate) skills_config: &'a Value,
}

/// Files kept between loads, keyed by path and reused while their stamp holds.
#[derive(Debug, Default)]
pub(crate) struct LoadCache {
    files: HashMap<PathBuf, (Stamp, FileText)>,
    skills: HashMap<PathBuf, (Stamp, ParsedSkill)>,
}

/// Reads the file as text: BOM dropped, CRLF folded; a diagnostic on trouble.
fn read_text(path: &Path, rel: &str, diagnostics: &mut Vec<Diagnostic>) -> Option<String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            diagnostics.push(Diagnostic {
                path: rel.to_owned(),
                message: format!("cannot read file: {e}"),
            });
            return None;
        }
    };
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            diagnostics.push(Diagnostic {
                path: rel.to_owned(),
                message: "file is not valid UTF-8; invalid bytes replaced".to_owned(),
            });
            String::from_utf8_lossy(e.as_bytes()).into_owned()
        }
    };
    let text = text
        .strip_prefix('\u{feff}')
        .map(str::to_owned)
        .unwrap_or(text);
    Some(if text.contains('\r') {
        text.replace("\r\n", "\n").replace('\r', "\n")
    } else {
        text
    })
}

impl LoadCache {
    fn file(
        &mut self,
        root: &Path,
        rel: &str,
        stamp: Stamp,
        max_chars: usize,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Option<FileText> {
        let path = root.join(rel);
        if let Some((cached, file)) = self.files.get(&path) {
            if *cached == stamp && !stamp.racy {
                return Some(file.clone());
            }
        }
        let text = read_text(&path, rel, diagnostics)?;
        let file = FileText::new(rel, &text, max_chars);
        self.files.insert(path, (stamp, file.clone()));
        Some(file)
    }

    fn skill(
        &mut self,
        root: &Path,
        folder: &str,
        stamp: Stamp,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Option<ParsedSkill> {
        let rel = format!("skills/{folder}/SKILL.md");
        let path = root.join(&rel);
        if let Some((cached, parsed)) = self.skills.get(&path) {
            if *cached == stamp && !stamp.racy {
                return Some(parsed.clone());
            }
        }
        if stamp.len > MAX_SKILL_BYTES {
            diagnostics.push(Diagnostic {
                path: rel,
                message: format!(
                    "file is {} bytes, over the {MAX_SKILL_BYTES}-byte limit; skill not loaded",
                    stamp.len
                ),
            });
            return None;
        }
        let text = read_text(&path, &rel, diagnostics)?;
        let mut parsed = parse_skill(folder, &text);
        if let Some(skill) = &mut parsed.skill {
            skill.location = path.display().to_string();
        }
        self.skills.insert(path, (stamp, parsed.clone()));
        Some(parsed)
    }
}

/// Reads the workspace described by `listing`.
pub(crate) fn load(
    root: &Path,
    listing: &Listing,
    settings: &LoadSettings<'_>,
    cache: &mut LoadCache,
) -> Snapshot {
    let mut diagnostics = Vec::new();
    let mut snapshot = Snapshot {
        exists: listing.exists,
        fingerprint: listing.fingerprint(),
        ..Snapshot::default()
    };
    if !listing.exists {
        *cache = LoadCache::default();
        return snapshot;
    }
    let max = settings.max_chars_per_file;
    let mut seen = LoadCache::default();
    let mut root_file = |name: &str, cache: &mut LoadCache, diagnostics: &mut Vec<Diagnostic>| {
        let st = listing.root_stamp(name)?;
        let file = cache.file(root, name, st, max, diagnostics)?;
        seen.files.insert(root.join(name), (st, file.clone()));
        Some(file)
    };
    snapshot.agents = root_file(AGENTS, cache, &mut diagnostics);
    snapshot.soul = root_file(SOUL, cache, &mut diagnostics);
    snapshot.identity = root_file(IDENTITY, cache, &mut diagnostics);
    snapshot.user = root_file(USER, cache, &mut diagnostics);
    snapshot.tools = root_file(TOOLS, cache, &mut diagnostics);
    snapshot.heartbeat = root_file(HEARTBEAT, cache, &mut diagnostics);
    snapshot.boot = root_file(BOOT, cache, &mut diagnostics);
    snapshot.memory = root_file(MEMORY, cache, &mut diagnostics);
    snapshot.boot_complete = listing.marker.is_some();

    for (role, st) in &listing.souls {
        let rel = format!("souls/{role}.md");
        if let Some(file) = cache.file(root, &rel, *st, max, &mut diagnostics) {
            seen.files.insert(root.join(&rel), (*st, file.clone()));
            snapshot.souls.insert(role.clone(), file);
        }
    }
    for (date, name, st) in &listing.memory {
        let rel = format!("memory/{name}");
        if let Some(file) = cache.file(root, &rel, *st, max, &mut diagnostics) {
            seen.files.insert(root.join(&rel), (*st, file.clone()));
            snapshot.daily.insert(*date, file);
        }
    }

    // A SKILL.md (or its folder) may be a symbolic link; one that resolves
    // outside the workspace is refused, as OpenClaw refuses it.
    let real_root = std::fs::canonicalize(root).ok();
    let mut loaded: Vec<(String, Skill)> = Vec::new();
    for (folder, st) in &listing.skills {
        let rel = format!("skills/{folder}/SKILL.md");
        let Some(st) = st else {
            diagnostics.push(Diagnostic {
                path: format!("skills/{folder}"),
                message: "skill folder has no SKILL.md; ignored".to_owned(),
            });
            continue;
        };
        if let Some(real_root) = &real_root {
            match std::fs::canonicalize(root.join(&rel)) {
                Ok(real) if real.starts_with(real_root) => {}
                Ok(_) => {
                    diagnostics.push(Diagnostic {
                        path: rel.clone(),
                        message: "SKILL.md is a symbolic link resolving outside the workspace; skill not loaded".to_owned(),
                    });
                    continue;
                }
                Err(e) => {
                    diagnostics.push(Diagnostic {
                        path: rel.clone(),
                        message: format!("cannot resolve SKILL.md: {e}; skill not loaded"),
                    });
                    continue;
                }
            }
        }
        let Some(parsed) = cache.skill(root, folder, *st, &mut diagnostics) else {
            continue;
        };
        seen.skills.insert(root.join(&rel), (*st, parsed.clone()));
        diagnostics.extend(parsed.problems.iter().map(|message| Diagnostic {
            path: rel.clone(),
            message: message.clone(),
        }));
        if let Some(skill) = parsed.skill {
            loaded.push((folder.clone(), skill));
        }
    }
    // One skill per name, the one OpenClaw keeps: the last of its scan order.
    let mut keeper: HashMap<&str, &str> = HashMap::new();
    for (folder, skill) in &loaded {
        let current = keeper.entry(skill.name.as_str()).or_insert(folder.as_str());
        if openclaw_folder_order(folder, current).is_gt() {
            *current = folder.as_str();
        }
    }
    let mut duplicates = Vec::new();
    for (folder, skill) in &loaded {
        let kept = keeper
            .get(skill.name.as_str())
            .copied()
            .unwrap_or(folder.as_str());
        if kept != folder.as_str() {
            duplicates.push(Diagnostic {
                path: format!("skills/{folder}/SKILL.md"),
                message: format!(
                    "skill name {:?} is also used by skills/{kept}, which is kept (as OpenClaw keeps the last folder in its sorted order); this one is not loaded",
                    skill.name
                ),
            });
        }
    }
    let keep: Vec<bool> = loaded
        .iter()
        .map(|(folder, skill)| keeper.get(skill.name.as_str()).copied() == Some(folder.as_str()))
        .collect();
    diagnostics.extend(duplicates);
    for ((_, skill), keep) in loaded.into_iter().zip(keep) {
        if keep {
            let gate = gate(&skill.gating, settings.skill_env, settings.skills_config);
            snapshot.skills.push(GatedSkill { skill, gate });
        }
    }
    let enabled: Vec<&Skill> = snapshot
        .skills
        .iter()
        .filter(|s| s.gate.is_ok())
        .map(|s| &s.skill)
        .collect();
    snapshot.skills_section = render_section(&enabled, settings.skills_budget_chars).map(Arc::from);
    snapshot.diagnostics = diagnostics;
    // Keep only what this load saw, so deleted files do not linger in memory.
    *cache = seen;
    snapshot
}
