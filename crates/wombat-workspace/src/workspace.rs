//! The [`Workspace`] handle: options, the freshness thread, and the public
//! queries (prompt, context stats, skills, boot, heartbeat, health).
//!
//! Queries read the current immutable snapshot and never touch the disk; a
//! background thread re-stats the folder every `refresh_interval` and swaps in
//! a new snapshot when something changed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use jiff::Timestamp;
use serde_json::Value;

use crate::dto::{
    BootStatus, ContextStats, Diagnostic, FileStats, SkillReportEntry, SkillsReport,
    WorkspaceHealth,
};
use crate::prompt::{Assembly, PromptMode, assemble, soul_for};
use crate::skills::SkillEnv;
use crate::snapshot::{
    AGENTS, BOOT_MARKER, FileText, HEARTBEAT, IDENTITY, Listing, LoadCache, LoadSettings, Snapshot,
    TOOLS, USER, load,
};
use crate::text::{char_len, estimate_tokens};
use crate::time::{Clock, Zone};
use crate::{Error, Result};

/// Default per-file limit, in characters.
pub const DEFAULT_MAX_CHARS_PER_FILE: usize = 20_000;
/// Default total budget across injected bootstrap files, in characters.
pub const DEFAULT_TOTAL_BUDGET_CHARS: usize = 150_000;
/// Default budget of the `## Skills` section, in characters.
pub const DEFAULT_SKILLS_BUDGET_CHARS: usize = 30_000;
/// Default interval between freshness checks.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// Distinct time-zone names remembered after a lookup.
const ZONE_CACHE_LIMIT: usize = 1024;

/// How to read and use a workspace.
#[derive(Debug, Clone)]
pub struct WorkspaceOptions {
    /// Per-file limit in characters (default 20,000); longer files keep their
    /// head and tail around a marker line, see [`crate::truncate_head_tail`].
    pub max_chars_per_file: usize,
    /// Total budget across injected bootstrap files (default 150,000), spent
    /// in prompt order (soul, identity, user, rules, memory; rules and tools in
    /// minimal mode). The file that exhausts it is cut to what is left (head
    /// and tail), or dropped when less than [`crate::MIN_BUDGET_SLICE`]
    /// characters remain; later files are dropped. `/context` shows both as
    /// `truncated` with the reduced `injectedChars`.
    pub total_budget_chars: usize,
    /// Budget of the skills section (default 30,000).
    pub skills_budget_chars: usize,
    /// Append the `## Current Time` block (`WOMBAT_INCLUDE_TIME_CONTEXT`, default true).
    pub include_time_context: bool,
    /// Zone used when a request names none (`WOMBAT_DEFAULT_TIMEZONE`); else the
    /// system zone, else UTC. Checked by [`Workspace::open`].
    pub default_timezone: Option<String>,
    /// The host as skill gating sees it (default: current platform, no env, no binaries;
    /// the daemon passes [`SkillEnv::from_process`]).
    pub skill_env: SkillEnv,
    /// Wombat's skills configuration, for `requires.config` (default `{}`).
    pub skills_config: Value,
    /// How often to re-stat the folder; [`Duration::ZERO`] disables the
    /// background thread (then only [`Workspace::refresh_now`] reloads).
    pub refresh_interval: Duration,
    /// Where the boot marker lives (`WOMBAT_STATE_DIR`). `None`: the
    /// `.boot-complete` file in the workspace, the only write Wombat makes
    /// there. `Some(dir)`: a file in `dir` named after the workspace's
    /// absolute path (see [`Workspace::boot_marker_path`]), so the workspace
    /// can be mounted read-only and several workspaces can share one state
    /// directory; a `.boot-complete` in the workspace is then ignored.
    pub state_dir: Option<PathBuf>,
}

impl Default for WorkspaceOptions {
    fn default() -> Self {
        Self {
            max_chars_per_file: DEFAULT_MAX_CHARS_PER_FILE,
            total_budget_chars: DEFAULT_TOTAL_BUDGET_CHARS,
            skills_budget_chars: DEFAULT_SKILLS_BUDGET_CHARS,
            include_time_context: true,
            default_timezone: None,
            skill_env: SkillEnv::default(),
            skills_config: Value::Object(serde_json::Map::new()),
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            state_dir: None,
        }
    }
}

/// One request for a system prompt. The clock is injected (`now`).
#[derive(Debug, Clone, Copy)]
pub struct PromptRequest<'a> {
    /// The agent role; must pass [`wombat_core::is_valid_role`].
    pub role: &'a str,
    /// Full or minimal.
    pub mode: PromptMode,
    /// IANA zone from the request (`metadata.timezone`); overrides the default.
    /// A name not in the database (a blank one included) is [`Error::UnknownTimeZone`].
    pub timezone: Option<&'a str>,
    /// `metadata.system_prompt`: replaces everything but the time block. An
    /// empty or blank string counts as absent (as 0.1.0's truthiness check did).
    pub system_prompt: Option<&'a str>,
    /// The current time.
    pub now: Timestamp,
}

impl<'a> PromptRequest<'a> {
    /// A full-mode request with no zone and no override.
    pub fn new(role: &'a str, now: Timestamp) -> Self {
        Self {
            role,
            mode: PromptMode::Full,
            timezone: None,
            system_prompt: None,
            now,
        }
    }

    /// Sets the mode.
    #[must_use]
    pub fn mode(mut self, mode: PromptMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the request time zone.
    #[must_use]
    pub fn timezone(mut self, timezone: &'a str) -> Self {
        self.timezone = Some(timezone);
        self
    }

    /// Sets the system-prompt override.
    #[must_use]
    pub fn system_prompt(mut self, system_prompt: &'a str) -> Self {
        self.system_prompt = Some(system_prompt);
        self
    }
}

/// `{enabled, total}` skill counts (for `GET /health`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SkillCounts {
    /// Enabled skills.
    pub enabled: usize,
    /// Loaded skills.
    pub total: usize,
}

struct Inner {
    path: PathBuf,
    /// The boot marker file (in the workspace or the state directory).
    marker: PathBuf,
    options: WorkspaceOptions,
    default_zone: Zone,
    snapshot: ArcSwap<Snapshot>,
    cache: Mutex<LoadCache>,
    zones: RwLock<HashMap<String, Zone>>,
    prompts: Mutex<Prompts>,
    /// Dropping this (with the last handle) stops the refresh thread at once.
    _stop: Option<mpsc::Sender<()>>,
}

impl Inner {
    fn settings(&self) -> LoadSettings<'_> {
        LoadSettings {
            max_chars_per_file: self.options.max_chars_per_file,
            skills_budget_chars: self.options.skills_budget_chars,
            skill_env: &self.options.skill_env,
            skills_config: &self.options.skills_config,
        }
    }

    /// Re-stats the folder and reloads if anything changed; true if it did.
    fn refresh(&self) -> bool {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let listing = Listing::scan(&self.path, &self.marker);
        if listing.fingerprint() == self.snapshot.load().fingerprint {
            return false;
        }
        let snapshot = load(&self.path, &listing, &self.settings(), &mut cache);
        tracing::debug!(path = %self.path.display(), skills = snapshot.skills.len(), "workspace reloaded");
        let old = self.snapshot.swap(Arc::new(snapshot));
        log_new_diagnostics(&old.diagnostics, &self.snapshot.load().diagnostics);
        true
    }

    fn zone(&self, name: Option<&str>) -> Result<Zone> {
        let Some(name) = name else {
            return Ok(self.default_zone.clone());
        };
        if let Some(zone) = self
            .zones
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
        {
            return Ok(zone.clone());
        }
        let zone = Zone::lookup(name)?;
        let mut zones = self.zones.write().unwrap_or_else(PoisonError::into_inner);
        if zones.len() < ZONE_CACHE_LIMIT {
            zones.insert(name.to_owned(), zone.clone());
        }
        Ok(zone)
    }
}

/// The request's prompt override: an empty or blank one counts as absent.
fn overriding<'a>(request: &PromptRequest<'a>) -> Option<&'a str> {
    request.system_prompt.filter(|s| !s.trim().is_empty())
}

/// Most prompts [`Prompts`] remembers.
const PROMPT_MEMO_LIMIT: usize = 8;

/// The last few prompts built, so that the requests of a minute that get
/// the same prompt share one assembly. A prompt without an override is a
/// function of the snapshot, the role, the mode and the zone's clock of the
/// minute: the clock's block is one `Arc` per zone and local minute (see
/// `Zone::clock`), so pointer equality of snapshot and block, both held
/// here so that their addresses cannot be reused, is equality of the inputs.
#[derive(Default)]
struct Prompts {
    recent: Vec<Memo>,
    /// The slot the next new prompt replaces once `recent` is full.
    next: usize,
}

struct Memo {
    snapshot: Arc<Snapshot>,
    block: Arc<str>,
    role: String,
    mode: PromptMode,
    prompt: String,
}

impl Prompts {
    fn get(
        &self,
        snapshot: &Arc<Snapshot>,
        block: &Arc<str>,
        role: &str,
        mode: PromptMode,
    ) -> Option<&str> {
        self.recent
            .iter()
            .find(|m| {
                Arc::ptr_eq(&m.snapshot, snapshot)
                    && Arc::ptr_eq(&m.block, block)
                    && m.mode == mode
                    && m.role == role
            })
            .map(|m| m.prompt.as_str())
    }

    fn put(&mut self, memo: Memo) {
        // Prompts of an older snapshot are never asked for again: dropped,
        // so that they do not keep it alive.
        self.recent
            .retain(|m| Arc::ptr_eq(&m.snapshot, &memo.snapshot));
        if self.recent.len() < PROMPT_MEMO_LIMIT {
            self.recent.push(memo);
        } else {
            self.recent[self.next] = memo;
            self.next = (self.next + 1) % PROMPT_MEMO_LIMIT;
        }
    }
}

/// The boot marker for the workspace at `path` (absolute), see
/// [`Workspace::boot_marker_path`].
fn marker_path(path: &Path, state_dir: Option<&Path>) -> PathBuf {
    let Some(dir) = state_dir else {
        return path.join(BOOT_MARKER);
    };
    // FNV-1a: stable across Rust releases and runs, unlike `DefaultHasher`.
    let hash = path
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    // The folder name only helps a human reading the directory; keep it tame.
    let name: String = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(64)
        .collect();
    dir.join(format!("boot-complete-{name}-{hash:016x}"))
}

/// Creates the marker file without following a symbolic link: `create_new`
/// is `O_CREAT | O_EXCL`, which fails on any existing path, a link included.
/// An existing regular file means boot was already completed.
fn write_marker(marker: &Path) -> std::io::Result<()> {
    use std::io::Write as _;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(marker)
    {
        Ok(mut file) => file.write_all(b"boot complete\n"),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = std::fs::symlink_metadata(marker)?;
            if meta.file_type().is_file() {
                Ok(())
            } else if meta.file_type().is_symlink() {
                Err(std::io::Error::other(
                    "the marker path is a symbolic link; refusing to follow it",
                ))
            } else {
                Err(std::io::Error::other(
                    "the marker path exists and is not a regular file",
                ))
            }
        }
        Err(e) => Err(e),
    }
}

/// Logs the diagnostics in `new` that were not already in `old` (reloads
/// repeat the same problems until the file is fixed).
fn log_new_diagnostics(old: &[Diagnostic], new: &[Diagnostic]) {
    for d in new.iter().filter(|d| !old.contains(d)) {
        tracing::warn!(path = %d.path, message = %d.message, "workspace diagnostic");
    }
}

/// A workspace folder, kept fresh in the background. Cheap to clone; all
/// clones share one snapshot and one refresh thread, which stops when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Workspace {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace")
            .field("path", &self.inner.path)
            .field("exists", &self.exists())
            .finish_non_exhaustive()
    }
}

impl Workspace {
    /// Opens the workspace at `path` and reads it once.
    ///
    /// A missing folder is not an error: the workspace reports status
    /// `missing`, builds the fallback prompt, and picks the folder up if it
    /// appears later. Fails on an unknown `default_timezone` or if the refresh
    /// thread cannot start.
    pub fn open(path: impl AsRef<Path>, options: WorkspaceOptions) -> Result<Self> {
        let path = path.as_ref();
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let default_zone = match options.default_timezone.as_deref() {
            Some(name) => Zone::lookup(name)?,
            None => Zone::system_or_utc(),
        };
        let interval = options.refresh_interval;
        let (stop, stopped) = mpsc::channel::<()>();
        let marker = marker_path(&path, options.state_dir.as_deref());
        let mut inner = Inner {
            path,
            marker,
            options,
            default_zone,
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            cache: Mutex::new(LoadCache::default()),
            zones: RwLock::new(HashMap::new()),
            prompts: Mutex::new(Prompts::default()),
            _stop: None,
        };
        let listing = Listing::scan(&inner.path, &inner.marker);
        let mut cache = LoadCache::default();
        let first = load(&inner.path, &listing, &inner.settings(), &mut cache);
        if first.exists {
            log_new_diagnostics(&[], &first.diagnostics);
        } else {
            tracing::warn!(path = %inner.path.display(), "workspace folder missing; using the fallback prompt");
        }
        inner.snapshot = ArcSwap::from_pointee(first);
        inner.cache = Mutex::new(cache);
        if interval.is_zero() {
            return Ok(Self {
                inner: Arc::new(inner),
            });
        }
        inner._stop = Some(stop);
        let inner = Arc::new(inner);
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("wombat-workspace-refresh".to_owned())
            .spawn(move || {
                // Nothing is ever sent: the channel only disconnects, when the
                // last handle drops `Inner` (and with it the sender).
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    let Some(inner) = weak.upgrade() else { break };
                    inner.refresh();
                }
            })
            .map_err(Error::RefreshThread)?;
        Ok(Self { inner })
    }

    /// Re-stats the folder now and reloads if anything changed (returns whether it did).
    /// This does disk I/O; the daemon never needs it on a request path.
    pub fn refresh_now(&self) -> bool {
        self.inner.refresh()
    }

    /// The workspace folder (absolute).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether the folder existed at the last refresh.
    pub fn exists(&self) -> bool {
        self.inner.snapshot.load().exists
    }

    /// The options in use.
    pub fn options(&self) -> &WorkspaceOptions {
        &self.inner.options
    }

    /// Problems found by the last load (unreadable files, skills not loaded or partly understood).
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        self.inner.snapshot.load().diagnostics.clone()
    }

    fn check_role(role: &str) -> Result<()> {
        if wombat_core::is_valid_role(role) {
            Ok(())
        } else {
            Err(Error::InvalidRole {
                role: role.to_owned(),
            })
        }
    }

    fn build(
        &self,
        snapshot: &Snapshot,
        request: &PromptRequest<'_>,
    ) -> Result<(String, Vec<crate::prompt::Injected>)> {
        Self::check_role(request.role)?;
        let clock = self.inner.zone(request.timezone)?.clock(request.now);
        Ok(self.assemble(snapshot, request, &clock))
    }

    /// The prompt for a checked `request` at `clock`.
    fn assemble(
        &self,
        snapshot: &Snapshot,
        request: &PromptRequest<'_>,
        clock: &Clock,
    ) -> (String, Vec<crate::prompt::Injected>) {
        let assembly = Assembly {
            role: request.role,
            mode: request.mode,
            clock,
            override_prompt: overriding(request),
            include_time: self.inner.options.include_time_context,
            total_budget: self.inner.options.total_budget_chars,
        };
        assemble(snapshot, &assembly)
    }

    /// Builds the system prompt for `request` from the current snapshot (no disk I/O).
    ///
    /// Errors: [`Error::InvalidRole`], [`Error::UnknownTimeZone`].
    pub fn system_prompt(&self, request: &PromptRequest<'_>) -> Result<String> {
        let snapshot = self.inner.snapshot.load();
        Self::check_role(request.role)?;
        let clock = self.inner.zone(request.timezone)?.clock(request.now);
        if overriding(request).is_some() {
            return Ok(self.assemble(&snapshot, request, &clock).0);
        }
        let lock = || {
            self.inner
                .prompts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        if let Some(prompt) = lock().get(&snapshot, &clock.block, request.role, request.mode) {
            return Ok(prompt.to_owned());
        }
        let (prompt, _) = self.assemble(&snapshot, request, &clock);
        lock().put(Memo {
            snapshot: Arc::clone(&snapshot),
            block: clock.block,
            role: request.role.to_owned(),
            mode: request.mode,
            prompt: prompt.clone(),
        });
        Ok(prompt)
    }

    /// Prompt-size figures for `GET /context`, for the prompt `request` would get.
    ///
    /// `injectedChars` is what that prompt actually contains of each file (0 for
    /// a file the mode does not use, such as TOOLS.md in full mode, and for
    /// HEARTBEAT.md, which only heartbeat runs read); `truncated` is set when the
    /// per-file limit or the total budget cut or dropped the file. With a
    /// `system_prompt` override no file is injected, so every `injectedChars` is 0.
    pub fn context_stats(&self, request: &PromptRequest<'_>) -> Result<ContextStats> {
        let snapshot = self.inner.snapshot.load();
        let (prompt, injected) = self.build(&snapshot, request)?;
        let (soul_name, soul) = soul_for(&snapshot, request.role);
        let listed: [(std::borrow::Cow<'static, str>, Option<&FileText>); 6] = [
            (AGENTS.into(), snapshot.agents.as_ref()),
            (soul_name, soul),
            (IDENTITY.into(), snapshot.identity.as_ref()),
            (TOOLS.into(), snapshot.tools.as_ref()),
            (HEARTBEAT.into(), snapshot.heartbeat.as_ref()),
            (USER.into(), snapshot.user.as_ref()),
        ];
        let files: Vec<FileStats> = listed
            .into_iter()
            .map(|(name, file)| {
                let used = injected.iter().find(|i| i.name == name);
                let injected_chars = used.map_or(0, |i| i.chars);
                FileStats {
                    exists: file.is_some(),
                    raw_chars: file.map_or(0, |f| f.raw_chars),
                    injected_chars,
                    truncated: used.is_some_and(|i| i.truncated),
                    estimated_tokens: estimate_tokens(injected_chars),
                    name: name.into_owned(),
                }
            })
            .collect();
        let system_prompt_chars = char_len(&prompt);
        Ok(ContextStats {
            workspace_path: self.inner.path.display().to_string(),
            max_chars_per_file: self.inner.options.max_chars_per_file,
            total_bootstrap_chars: files.iter().map(|f| f.injected_chars).sum(),
            files,
            system_prompt_chars,
            estimated_system_prompt_tokens: estimate_tokens(system_prompt_chars),
        })
    }

    /// Every loaded skill with its gating outcome, for `GET /skills`.
    pub fn skills_report(&self) -> SkillsReport {
        let snapshot = self.inner.snapshot.load();
        let skills: Vec<SkillReportEntry> = snapshot
            .skills
            .iter()
            .map(|s| SkillReportEntry {
                name: s.skill.name.clone(),
                description: s.skill.description.clone(),
                enabled: s.gate.is_ok(),
                gate_reason: s.gate.clone().err(),
                location: s.skill.location.clone(),
                metadata: s.skill.metadata.clone(),
            })
            .collect();
        SkillsReport {
            enabled: skills.iter().filter(|s| s.enabled).count(),
            total: skills.len(),
            skills,
            diagnostics: snapshot
                .diagnostics
                .iter()
                .filter(|d| d.path.starts_with("skills/"))
                .cloned()
                .collect(),
        }
    }

    /// Enabled and total skill counts.
    pub fn skill_counts(&self) -> SkillCounts {
        let snapshot = self.inner.snapshot.load();
        SkillCounts {
            enabled: snapshot.skills.iter().filter(|s| s.gate.is_ok()).count(),
            total: snapshot.skills.len(),
        }
    }

    /// `BOOT.md` status for `GET /boot`.
    pub fn boot_status(&self) -> BootStatus {
        let snapshot = self.inner.snapshot.load();
        BootStatus {
            has_boot: snapshot.boot.is_some(),
            is_complete: snapshot.boot_complete,
            content: (!snapshot.boot_complete)
                .then(|| snapshot.boot.as_ref().map(|b| b.text.to_string()))
                .flatten(),
        }
    }

    /// Where the boot marker is read and written: `.boot-complete` in the
    /// workspace, or with a state directory
    /// `<state_dir>/boot-complete-<folder name>-<16 hex digits>`, the digits a
    /// stable (FNV-1a) hash of the workspace's absolute path, so two
    /// workspaces never share a marker.
    pub fn boot_marker_path(&self) -> &Path {
        &self.inner.marker
    }

    /// Writes the boot marker and reloads, so [`Workspace::boot_status`]
    /// reflects it at once. Completing twice is fine.
    ///
    /// The marker is created, never opened: a symbolic link in its place
    /// (even a dangling one) is refused rather than written through. A
    /// missing state directory is created.
    ///
    /// Errors: [`Error::WorkspaceMissing`], [`Error::BootMarker`].
    pub fn complete_boot(&self) -> Result<()> {
        if !self.inner.path.is_dir() {
            return Err(Error::WorkspaceMissing {
                path: self.inner.path.clone(),
            });
        }
        let marker = &self.inner.marker;
        let failed = |source| Error::BootMarker {
            path: marker.clone(),
            source,
        };
        if let Some(dir) = &self.inner.options.state_dir {
            std::fs::create_dir_all(dir).map_err(failed)?;
        }
        write_marker(marker).map_err(failed)?;
        self.inner.refresh();
        Ok(())
    }

    /// The `HEARTBEAT.md` checklist (trimmed, per-file limit applied), if present and non-empty.
    pub fn heartbeat(&self) -> Option<String> {
        let snapshot = self.inner.snapshot.load();
        snapshot
            .heartbeat
            .as_ref()
            .filter(|h| h.chars > 0)
            .map(|h| h.text.to_string())
    }

    /// The `workspace` part of `GET /health`.
    pub fn health(&self) -> WorkspaceHealth {
        let snapshot = self.inner.snapshot.load();
        WorkspaceHealth {
            path: self.inner.path.display().to_string(),
            status: if snapshot.exists { "ok" } else { "missing" },
            max_chars_per_file: self.inner.options.max_chars_per_file,
            boot_complete: snapshot.boot_complete,
        }
    }
}
