//! A small client for mc-lite's own (non-contract) enqueue endpoint, used by
//! the binary's `notify` subcommand and by tests to create notifications.

use serde_json::{Value, json};

/// `POST <base_url>/api/mission-control/dispatch/notifications` with the
/// internal token; returns the queued notification (with its
/// `notification_id`).
pub async fn enqueue_notification(
    base_url: &str,
    internal_token: &str,
    user_id: &str,
    session_key: &str,
    content: &str,
) -> crate::Result<Value> {
    let body = json!({ "user_id": user_id, "session_key": session_key, "content": content });
    post_enqueue(base_url, internal_token, &body).await
}

/// Like [`enqueue_notification`], with the delivery's optional `task_id`
/// (the task the reply belongs on) and `metadata` (an object passed through
/// to the daemon).
pub async fn enqueue_notification_with(
    base_url: &str,
    internal_token: &str,
    user_id: &str,
    session_key: &str,
    content: &str,
    task_id: Option<&str>,
    metadata: Option<&Value>,
) -> crate::Result<Value> {
    let mut body = json!({ "user_id": user_id, "session_key": session_key, "content": content });
    if let Some(map) = body.as_object_mut() {
        if let Some(t) = task_id {
            map.insert("task_id".into(), Value::String(t.to_owned()));
        }
        if let Some(m) = metadata {
            map.insert("metadata".into(), m.clone());
        }
    }
    post_enqueue(base_url, internal_token, &body).await
}

async fn post_enqueue(base_url: &str, internal_token: &str, body: &Value) -> crate::Result<Value> {
    let url = format!(
        "{}/api/mission-control/dispatch/notifications",
        base_url.trim_end_matches('/')
    );
    let resp = reqwest::Client::new()
        .post(url)
        .header("X-Internal-Token", internal_token)
        .json(body)
        .send()
        .await
        .map_err(|e| crate::Error::Http(e.to_string()))?;
    let status = resp.status();
    let body: Value = resp
        .json()
        .await
        .map_err(|e| crate::Error::Http(format!("cannot decode reply: {e}")))?;
    if status.is_success() {
        Ok(body)
    } else {
        let error = body["error"].as_str().unwrap_or("unknown error");
        Err(crate::Error::Http(format!("{status}: {error}")))
    }
}
