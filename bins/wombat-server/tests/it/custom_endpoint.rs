//! A custom OpenAI-compatible endpoint declared in `WOMBAT_LLM_ENDPOINTS`,
//! end to end on the real binary: the default model `<name>/<model>` answers
//! a `/send` through a fake provider, which receives the endpoint's key and
//! headers and the model id without the prefix; `/health` lists the
//! endpoint without its secrets. The key comes from a file
//! (`CORP_LLM_KEY_FILE`), as a Kubernetes secret would give it.

use std::time::Duration;

use crate::traces::{openai_answer, send, serve, start, stop};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_endpoint_as_the_default_model_answers_send() {
    let (llm, llm_log) = serve(openai_answer).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("corp-key");
    std::fs::write(&key_file, "sk-corp-not-a-key\n").expect("key file");
    let endpoints = serde_json::json!({
        "corp": {
            "base_url": format!("http://{llm}/gateway/v1"),
            "api_key_env": "CORP_LLM_KEY",
            "headers": {"X-Team": "hdr-value-agents"}
        }
    });
    let (child, port) = start(
        dir.path(),
        &[
            ("WOMBAT_LLM_ENDPOINTS", endpoints.to_string()),
            ("CORP_LLM_KEY_FILE", key_file.display().to_string()),
            ("LLM_MODEL_DEFAULT", "corp/llama-3.3-70b".into()),
        ],
    )
    .await;
    let answer = send(
        port,
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )
    .await;
    assert_eq!(answer["status"], "ok", "{answer}");
    let health: serde_json::Value = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/health"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("health json");
    stop(child).await;

    let calls = llm_log.lock().expect("log").clone();
    assert_eq!(calls.len(), 1);
    let (path, headers, body) = &calls[0];
    assert_eq!(path, "/gateway/v1/chat/completions");
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    assert_eq!(header("authorization"), Some("Bearer sk-corp-not-a-key"));
    assert_eq!(header("x-team"), Some("hdr-value-agents"));
    let body: serde_json::Value = serde_json::from_slice(body).expect("json body");
    assert_eq!(body["model"], "llama-3.3-70b");

    let text = health.to_string();
    assert!(text.contains("corp/llama-3.3-70b"), "{text}");
    assert!(
        !text.contains("sk-corp") && !text.contains("hdr-value-agents"),
        "{text}"
    );
}
