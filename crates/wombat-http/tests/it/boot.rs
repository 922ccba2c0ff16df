//! `POST /boot/complete` against hostile and unusual workspaces: a symlinked
//! marker is never written through, a missing workspace is a 503 that names
//! no path, and with `WOMBAT_STATE_DIR` the marker lives outside the
//! workspace (which may then be read-only).

use serde_json::json;

use crate::support::setup;

fn workspace_with_boot() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("SOUL.md"), "# Soul\n\nYou are Tess.\n").expect("write");
    std::fs::write(dir.path().join("BOOT.md"), "# First run\n\nSay hello.\n").expect("write");
    dir
}

#[cfg(unix)]
#[tokio::test]
async fn symlinked_marker_is_refused_not_written_through() {
    let ws = workspace_with_boot();
    let outside = tempfile::tempdir().expect("tempdir");
    let victim = outside.path().join("victim.conf");
    std::fs::write(&victim, "keep me").expect("write");
    std::os::unix::fs::symlink(&victim, ws.path().join(".boot-complete")).expect("symlink");
    let h = setup().workspace(ws.path()).start().await;

    let resp = h.post("/boot/complete", &json!({})).await;
    resp.assert_error(503, "boot_marker_failed");
    for path in [ws.path(), outside.path()] {
        assert!(
            !resp.text.contains(&*path.to_string_lossy()),
            "no path in the body: {}",
            resp.text
        );
    }
    assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "keep me");
    assert_eq!(h.get("/boot").await.json()["isComplete"], false);
}

#[tokio::test]
async fn missing_workspace_is_503_without_the_path() {
    let parent = tempfile::tempdir().expect("tempdir");
    let missing = parent.path().join("not-there");
    let h = setup().workspace(&missing).start().await;
    let resp = h.post("/boot/complete", &json!({})).await;
    resp.assert_error(503, "workspace_unavailable");
    assert!(
        !resp.text.contains(&*parent.path().to_string_lossy()),
        "{}",
        resp.text
    );
    assert!(!missing.exists(), "nothing is created");
}

#[tokio::test]
async fn state_dir_holds_the_marker_and_leaves_the_workspace_untouched() {
    let ws = workspace_with_boot();
    let state = tempfile::tempdir().expect("state dir");
    let state_dir = state.path().join("state");
    let h = setup()
        .workspace(ws.path())
        .env("WOMBAT_STATE_DIR", &state_dir.to_string_lossy())
        .start()
        .await;
    assert_eq!(h.get("/boot").await.json()["isComplete"], false);
    let resp = h.post("/boot/complete", &json!({})).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json(), json!({"status": "ok"}));
    assert_eq!(
        h.get("/boot").await.json(),
        json!({"hasBoot": true, "isComplete": true, "content": null})
    );
    assert_eq!(
        h.get("/health").await.json()["workspace"]["bootComplete"],
        true
    );
    assert!(!ws.path().join(".boot-complete").exists());
    let markers: Vec<_> = std::fs::read_dir(&state_dir)
        .expect("state dir created")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(markers.len(), 1, "{markers:?}");
    assert!(markers[0].starts_with("boot-complete-"), "{markers:?}");
}
