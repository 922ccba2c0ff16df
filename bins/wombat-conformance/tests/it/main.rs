//! The `wombat-conformance` binary as a new user first runs it: `--help` and
//! `--version` answer and exit 0 without side effects.

use std::process::Command;

#[test]
fn help_and_version_answer_without_side_effects() {
    for arg in ["--help", "-h", "--version", "-V"] {
        let cwd = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("first-run{arg}"));
        let _ = std::fs::remove_dir_all(&cwd);
        std::fs::create_dir_all(&cwd).expect("mkdir");
        let out = Command::new(env!("CARGO_BIN_EXE_wombat-conformance"))
            .arg(arg)
            .current_dir(&cwd)
            .env_clear()
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(0), "{arg}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        if arg == "--version" || arg == "-V" {
            assert_eq!(
                stdout.trim(),
                concat!("wombat-conformance ", env!("CARGO_PKG_VERSION")),
                "{arg}"
            );
        } else {
            assert!(
                stdout.contains("Usage: wombat-conformance"),
                "{arg}: {stdout}"
            );
        }
        let created: Vec<_> = std::fs::read_dir(&cwd).expect("read_dir").collect();
        assert!(created.is_empty(), "{arg} created {created:?}");
    }
}
