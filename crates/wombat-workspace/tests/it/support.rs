//! Shared helpers: temporary workspaces, a fixed clock, deterministic options.

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use wombat_workspace::{SkillEnv, Workspace, WorkspaceOptions};

/// 2026-02-02T03:15Z: Sunday evening in Los Angeles, Monday noon in Tokyo.
pub fn now() -> Timestamp {
    "2026-02-02T03:15:00Z".parse().expect("timestamp")
}

/// Options with no background thread, UTC default zone and a linux host
/// without binaries or variables.
pub fn options() -> WorkspaceOptions {
    WorkspaceOptions {
        default_timezone: Some("UTC".to_owned()),
        skill_env: SkillEnv::new("linux"),
        refresh_interval: Duration::ZERO,
        ..WorkspaceOptions::default()
    }
}

/// A temporary workspace folder.
pub struct TempWorkspace {
    dir: tempfile::TempDir,
}

impl TempWorkspace {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn with(files: &[(&str, &str)]) -> Self {
        let ws = Self::new();
        for (name, text) in files {
            ws.write(name, text);
        }
        ws
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, text: &str) {
        self.write_bytes(name, text.as_bytes());
    }

    pub fn write_bytes(&self, name: &str, bytes: &[u8]) {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, bytes).expect("write");
    }

    /// Sets every file's mtime an hour back, so no file is "racy" (re-read on
    /// every scan because it is younger than the stamp can vouch for).
    pub fn age_all(&self) {
        fn walk(dir: &Path) {
            for entry in std::fs::read_dir(dir).expect("read_dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    walk(&path);
                } else {
                    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
                    let file = std::fs::File::options()
                        .write(true)
                        .open(&path)
                        .expect("open");
                    file.set_modified(hour_ago).expect("set mtime");
                }
            }
        }
        walk(self.path());
    }

    pub fn open(&self) -> Workspace {
        self.open_with(options())
    }

    pub fn open_with(&self, options: WorkspaceOptions) -> Workspace {
        Workspace::open(self.path(), options).expect("open")
    }
}

/// A private copy of `workspace-examples/<name>` in a temporary folder, so
/// tests never depend on the repository's own (mutable) files: a user who
/// followed docs/API.md may have left a `.boot-complete` there.
pub fn example(name: &str) -> tempfile::TempDir {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../workspace-examples")
        .join(name);
    let copy = tempfile::tempdir().expect("tempdir");
    copy_tree(&source, copy.path());
    // A marker left in the example is not part of the example.
    let _ = std::fs::remove_file(copy.path().join(".boot-complete"));
    copy
}

/// Copies the folder `from` into `to` (files and folders only).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}
