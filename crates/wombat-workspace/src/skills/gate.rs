//! Skill gating: which skills are enabled on this host.
//!
//! [`gate`] is a pure function of the parsed [`Gating`], an injected
//! [`SkillEnv`] and the skills configuration. Only [`SkillEnv::from_process`]
//! reads the real environment, and only when the caller asks for it.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

/// The gating fields of a skill's namespace object (`metadata.openclaw` & co).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gating {
    /// `emoji`, shown before the skill name in the prompt.
    pub emoji: Option<String>,
    /// `os`: platforms the skill supports (`darwin`, `linux`, `win32`); empty = any.
    pub os: Vec<String>,
    /// `always`: a real `true` skips the `requires` checks (not the `os` check).
    pub always: bool,
    /// `requires.bins`: every one must be an executable on `PATH`.
    pub bins: Vec<String>,
    /// `requires.anyBins`: at least one must be an executable on `PATH`.
    pub any_bins: Vec<String>,
    /// `requires.env`: every variable must be set and non-empty.
    pub env: Vec<String>,
    /// `requires.config`: every dotted key must be truthy in the skills configuration.
    pub config: Vec<String>,
}

impl Gating {
    /// Reads the gating fields from a namespace object; malformed fields are
    /// ignored and reported.
    pub(crate) fn from_object(object: &Map<String, Value>) -> (Self, Vec<String>) {
        let mut problems = Vec::new();
        let requires = match object.get("requires") {
            None | Some(Value::Null) => None,
            Some(Value::Object(r)) => Some(r),
            Some(_) => {
                problems.push("requires is not an object; ignored".to_owned());
                None
            }
        };
        let mut list = |map: Option<&Map<String, Value>>, key: &str, label: &str| -> Vec<String> {
            match map.and_then(|m| m.get(key)) {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(|item| match item {
                        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
                        _ => {
                            problems
                                .push(format!("{label} has a non-string entry {item}; ignored"));
                            None
                        }
                    })
                    .collect(),
                Some(other) => {
                    problems.push(format!("{label} is not a list ({other}); ignored"));
                    Vec::new()
                }
            }
        };
        let os = list(Some(object), "os", "os");
        let bins = list(requires, "bins", "requires.bins");
        let any_bins = list(requires, "anyBins", "requires.anyBins");
        let env = list(requires, "env", "requires.env");
        let config = list(requires, "config", "requires.config");
        let gating = Self {
            emoji: object
                .get("emoji")
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_owned),
            os,
            always: object.get("always") == Some(&Value::Bool(true)),
            bins,
            any_bins,
            env,
            config,
        };
        (gating, problems)
    }
}

type ExecutableLookup = dyn Fn(&str) -> bool + Send + Sync;

/// The host as skill gating sees it: environment variables, executable lookup
/// and platform. Build one explicitly in tests; the daemon uses
/// [`SkillEnv::from_process`].
#[derive(Clone)]
pub struct SkillEnv {
    platform: String,
    vars: BTreeMap<String, String>,
    executable: Arc<ExecutableLookup>,
}

impl fmt::Debug for SkillEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Variable values may be secrets: show names only.
        f.debug_struct("SkillEnv")
            .field("platform", &self.platform)
            .field("vars", &self.vars.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Default for SkillEnv {
    /// The current platform, no variables, no executables.
    fn default() -> Self {
        Self::new(current_platform())
    }
}

impl SkillEnv {
    /// An environment for `platform` (`darwin`, `linux`, `win32`, ...) with no
    /// variables and no executables.
    pub fn new(platform: impl Into<String>) -> Self {
        Self {
            platform: platform.into(),
            vars: BTreeMap::new(),
            executable: Arc::new(|_| false),
        }
    }

    /// The real process: its environment variables, its `PATH` directories
    /// (looked up when gating runs, so a newly installed binary counts after the
    /// next reload) and the compile-time platform.
    pub fn from_process() -> Self {
        let dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        Self::new(current_platform())
            .with_vars(std::env::vars())
            .with_path_dirs(dirs)
    }

    /// Adds one environment variable.
    #[must_use]
    pub fn with_var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.vars.insert(name.into(), value.into());
        self
    }

    /// Adds environment variables.
    #[must_use]
    pub fn with_vars<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.vars
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Executables are exactly these names.
    #[must_use]
    pub fn with_executables<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        let set: HashSet<String> = names.into_iter().map(Into::into).collect();
        self.executable = Arc::new(move |name| set.contains(name));
        self
    }

    /// Executables are executable files in these directories (a `PATH`).
    #[must_use]
    pub fn with_path_dirs(mut self, dirs: Vec<PathBuf>) -> Self {
        self.executable = Arc::new(move |name| {
            // A name with a separator is not a PATH lookup; refuse it rather than probe paths.
            !name.is_empty()
                && !name.contains(['/', '\\'])
                && dirs.iter().any(|dir| is_executable_file(&dir.join(name)))
        });
        self
    }

    /// Executables are decided by `lookup`.
    #[must_use]
    pub fn with_executable_lookup(
        mut self,
        lookup: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.executable = Arc::new(lookup);
        self
    }

    /// The platform string.
    pub fn platform(&self) -> &str {
        &self.platform
    }

    fn var_set(&self, name: &str) -> bool {
        self.vars.get(name).is_some_and(|v| !v.is_empty())
    }

    fn has_executable(&self, name: &str) -> bool {
        (self.executable)(name)
    }
}

/// Node-style platform name of this build: `darwin`, `linux`, `win32`, else `std::env::consts::OS`.
pub fn current_platform() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        "windows" => "win32",
        other => other,
    }
}

fn is_executable_file(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    if !meta.is_file() {
        return false;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        true
    }
}

/// JavaScript truthiness, as OpenClaw checks `requires.config`.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

fn config_truthy(config: &Value, dotted: &str) -> bool {
    dotted
        .split('.')
        .try_fold(config, |value, key| value.as_object()?.get(key))
        .is_some_and(truthy)
}

fn missing(prefix_one: &str, prefix_many: &str, names: &[&str]) -> Option<String> {
    match names {
        [] => None,
        [one] => Some(format!("{prefix_one}: {one}")),
        many => Some(format!("{prefix_many}: {}", many.join(", "))),
    }
}

/// Decides whether a skill is enabled; `Err` carries the `gateReason`.
///
/// Checks run in OpenClaw's order and the first failing one gives the reason:
/// 1. `os` — `OS not supported (requires: darwin, linux)`
/// 2. `always: true` — enabled, skipping 3–6
/// 3. `requires.bins` — `Missing binary: ffmpeg` / `Missing binaries: ffmpeg, jq` (every missing one named)
/// 4. `requires.anyBins` — `Missing any of binaries: chromium, google-chrome`
/// 5. `requires.env` — `Missing env: SEARCH_API_KEY` (every missing one named, comma-separated)
/// 6. `requires.config` — `Missing config: browser.enabled` (every falsy key named, comma-separated)
pub fn gate(gating: &Gating, env: &SkillEnv, config: &Value) -> Result<(), String> {
    if !gating.os.is_empty() && !gating.os.iter().any(|os| os == env.platform()) {
        return Err(format!(
            "OS not supported (requires: {})",
            gating.os.join(", ")
        ));
    }
    if gating.always {
        return Ok(());
    }
    let bins: Vec<&str> = gating
        .bins
        .iter()
        .map(String::as_str)
        .filter(|b| !env.has_executable(b))
        .collect();
    if let Some(reason) = missing("Missing binary", "Missing binaries", &bins) {
        return Err(reason);
    }
    if !gating.any_bins.is_empty() && !gating.any_bins.iter().any(|b| env.has_executable(b)) {
        return Err(format!(
            "Missing any of binaries: {}",
            gating.any_bins.join(", ")
        ));
    }
    let vars: Vec<&str> = gating
        .env
        .iter()
        .map(String::as_str)
        .filter(|v| !env.var_set(v))
        .collect();
    if let Some(reason) = missing("Missing env", "Missing env", &vars) {
        return Err(reason);
    }
    let keys: Vec<&str> = gating
        .config
        .iter()
        .map(String::as_str)
        .filter(|k| !config_truthy(config, k))
        .collect();
    if let Some(reason) = missing("Missing config", "Missing config", &keys) {
        return Err(reason);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gating(object: Value) -> Gating {
        let (gating, problems) = Gating::from_object(object.as_object().expect("object"));
        assert!(problems.is_empty(), "{problems:?}");
        gating
    }

    fn check(object: Value, env: &SkillEnv, expected: Result<(), &str>) {
        let got = gate(
            &gating(object),
            env,
            &json!({"browser": {"enabled": true, "off": false}}),
        );
        assert_eq!(got, expected.map_err(str::to_owned));
    }

    #[test]
    fn os_is_checked_first_even_with_always() {
        let env = SkillEnv::new("linux");
        check(
            json!({"os": ["darwin"], "always": true}),
            &env,
            Err("OS not supported (requires: darwin)"),
        );
        check(json!({"os": ["darwin", "linux"]}), &env, Ok(()));
        check(
            json!({"os": ["Linux"]}),
            &env,
            Err("OS not supported (requires: Linux)"),
        );
    }

    #[test]
    fn always_skips_requires() {
        let env = SkillEnv::new("linux");
        check(
            json!({"always": true, "requires": {"bins": ["ffmpeg"], "env": ["K"]}}),
            &env,
            Ok(()),
        );
        check(
            json!({"always": "true", "requires": {"bins": ["ffmpeg"]}}),
            &env,
            Err("Missing binary: ffmpeg"),
        );
    }

    #[test]
    fn bins_all_required() {
        let env = SkillEnv::new("linux").with_executables(["jq"]);
        check(json!({"requires": {"bins": ["jq"]}}), &env, Ok(()));
        check(
            json!({"requires": {"bins": ["jq", "ffmpeg"]}}),
            &env,
            Err("Missing binary: ffmpeg"),
        );
        check(
            json!({"requires": {"bins": ["yt", "ffmpeg"]}}),
            &env,
            Err("Missing binaries: yt, ffmpeg"),
        );
    }

    #[test]
    fn any_bins_needs_one() {
        let env = SkillEnv::new("linux").with_executables(["chromium"]);
        check(
            json!({"requires": {"anyBins": ["chrome", "chromium"]}}),
            &env,
            Ok(()),
        );
        check(
            json!({"requires": {"anyBins": ["chrome", "edge"]}}),
            &env,
            Err("Missing any of binaries: chrome, edge"),
        );
    }

    #[test]
    fn env_must_be_set_and_non_empty() {
        let env = SkillEnv::new("linux")
            .with_var("SET", "x")
            .with_var("EMPTY", "");
        check(json!({"requires": {"env": ["SET"]}}), &env, Ok(()));
        check(
            json!({"requires": {"env": ["EMPTY"]}}),
            &env,
            Err("Missing env: EMPTY"),
        );
        check(
            json!({"requires": {"env": ["SEARCH_API_KEY", "SET", "EMPTY"]}}),
            &env,
            Err("Missing env: SEARCH_API_KEY, EMPTY"),
        );
    }

    #[test]
    fn config_keys_must_be_truthy() {
        let env = SkillEnv::new("linux");
        check(
            json!({"requires": {"config": ["browser.enabled"]}}),
            &env,
            Ok(()),
        );
        check(
            json!({"requires": {"config": ["browser.off", "x.y"]}}),
            &env,
            Err("Missing config: browser.off, x.y"),
        );
    }

    #[test]
    fn checks_run_in_order() {
        let env = SkillEnv::new("linux");
        check(
            json!({"requires": {"env": ["K"], "bins": ["b"], "config": ["c"]}}),
            &env,
            Err("Missing binary: b"),
        );
    }

    #[test]
    fn path_dirs_need_an_executable_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tool = dir.path().join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").expect("write");
        std::fs::write(dir.path().join("plain"), "").expect("write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        std::fs::create_dir(dir.path().join("adir")).expect("mkdir");
        let env = SkillEnv::new("linux").with_path_dirs(vec![dir.path().to_path_buf()]);
        assert!(env.has_executable("tool"));
        #[cfg(unix)]
        assert!(!env.has_executable("plain"));
        assert!(!env.has_executable("adir"));
        assert!(!env.has_executable("../tool"));
        assert!(!env.has_executable("missing"));
    }

    #[test]
    fn malformed_fields_are_reported() {
        let (gating, problems) = Gating::from_object(
            json!({"requires": {"bins": "jq", "env": [1, "K"], "config": {"a": 1}}})
                .as_object()
                .expect("object"),
        );
        assert_eq!(gating.bins, ["jq"]);
        assert_eq!(gating.env, ["K"]);
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn from_process_reads_platform_and_path() {
        let env = SkillEnv::from_process();
        assert_eq!(env.platform(), current_platform());
        #[cfg(target_os = "linux")]
        assert!(
            env.has_executable("sh"),
            "sh is on PATH on every linux CI image"
        );
        assert!(!env.has_executable("wombat-no-such-binary-4f1c"));
    }

    #[test]
    fn debug_hides_values() {
        let env = SkillEnv::new("linux").with_var("API_KEY", "sk-secret");
        assert!(!format!("{env:?}").contains("sk-secret"));
    }
}
